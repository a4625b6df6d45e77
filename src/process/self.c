/* This process: its identity (current_process, parent_process, cpu_count), the logger
 * settings children inherit, and the child side shared by every start method: becoming
 * Process-N, decoding the arguments, running the target. */
#define _GNU_SOURCE
#include "process/core.h"
#include "internal/common.h"
#include "multiproc/log.h"
#include "util/util_internal.h"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* This process, as Python's current_process(). */
struct mp__proc_self mp__proc_self;

/* ---- this process -------------------------------------------------------------- */

const char *mp_current_process_name(void)
{
    return mp__proc_self.name ? mp__proc_self.name : "MainProcess";
}

pid_t mp_parent_process_pid(void) { return mp__proc_self.is_child ? mp__proc_self.parent_pid : 0; }

bool mp_current_process_daemon(void) { return mp__proc_self.daemon; }

int mp_cpu_count(void)
{
    /* The affinity mask, growing the set for machines with many CPUs. */
    for (int n = 1024; n <= (1 << 16); n *= 2) {
        cpu_set_t *set = CPU_ALLOC(n);
        if (!set)
            break;
        size_t size = CPU_ALLOC_SIZE(n);
        if (sched_getaffinity(0, size, set) == 0) {
            int count = CPU_COUNT_S(size, set);
            CPU_FREE(set);
            return count > 0 ? count : 1;
        }
        CPU_FREE(set);
        if (errno != EINVAL)
            break;
    }
    long c = sysconf(_SC_NPROCESSORS_ONLN);
    return c > 0 ? (int)c : 1;
}

/* ---- logging inheritance --------------------------------------------------------- */

/* Spawn and forkserver children log to their stderr (the parent's) when the parent
 * logs anywhere, at the parent's level (Python passes log_to_stderr's state too). */
bool mp__proc_log_enabled(void) { return mp_log_get_fd() >= 0; }

void mp__proc_log_inherit(int level, bool on)
{
    if (on)
        mp_log_to_stderr(level);
    else
        mp_log_set_level(level);
}

/* ---- the child side, shared by every start method -------------------------------- */

static void forget_parents_children(void)
{
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_settype(&a, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&mp__proc_reg_lock, &a);
    pthread_mutexattr_destroy(&a);
    /* Under fork the parent's objects are in our memory; their fds are not ours to
     * watch. The objects stay (the user may still free them). */
    for (mp_process *p = mp__proc_reg_head, *next; p; p = next) {
        next = p->next;
        pthread_mutex_init(&p->wait_lock, NULL); /* a parent thread may have held it */
        mp__proc_close_fds(p);
        p->in_reg = false;
        p->next = p->prev = NULL;
    }
    mp__proc_reg_head = NULL;
}

static void stdin_to_devnull(void)
{
    /* As Python's _close_stdin: children must not compete for the parent's input. */
    int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    if (fd != 0) {
        dup2(fd, 0);
        close(fd);
    } else {
        mp__set_cloexec(0, false);
    }
}

void mp__proc_become_child(const char *name, const char *identity, pid_t parent_pid,
                           bool daemon, mp_start_method method)
{
    forget_parents_children();
    mp__proc_self.name = strdup(name ? name : "Process");
    mp__proc_self.identity = strdup(identity ? identity : "1");
    mp__proc_self.parent_pid = parent_pid;
    mp__proc_self.is_child = true;
    mp__proc_self.daemon = daemon;
    mp__proc_self.counter = 0;
    mp__proc_self.exiting = false;
    mp__proc_self.default_method = method;
    mp__proc_self.method_fixed = true;
    /* A forkserver child already has the server's stdin, which is /dev/null. */
    if (method != MP_START_FORKSERVER)
        stdin_to_devnull();
}

int mp__proc_decode_args(const char *buf, size_t len, int *fds, size_t nfds, mp_value **out)
{
    int r = mp_value_decode(buf, len, fds, nfds, out);
    if (r < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mp__last_error_detail());
        return mp__error(r, "decoding the process arguments: %s", msg);
    }
    return 0;
}

_Noreturn void mp__proc_run(mp_target_fn fn, mp_value *args)
{
    mp__proc_self.target = fn;
    mp__util_child_start(); /* as Python's _bootstrap: forget finalizers, after-forkers */
    mp_log(MP_LOG_INFO, "child process calling self.run()");
    int code = fn(args);
    mp_value_free(args);
    mp_process_exit(code);
}


void mp__proc_become_child_of(const char *parent_name, const void *key, size_t keylen)
{
    char *old = mp__proc_self.parent_name;
    mp__proc_self.parent_name = strdup(parent_name ? parent_name : "MainProcess");
    free(old);
    if (key && keylen > 0 && keylen <= MP_AUTHKEY_MAX) {
        memcpy(mp__proc_self.authkey, key, keylen);
        mp__proc_self.authkey_len = keylen;
    }
}

/* ---- parent_process() ------------------------------------------------------------ */

/* Python's _ParentProcess: a process object that is not our child. Made once. */
mp_process *mp_parent_process(void)
{
    static mp_process *parent;
    static pid_t made_in;
    if (!mp__proc_self.is_child)
        return NULL;
    if (parent && made_in == getpid())
        return parent;
    mp_process *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->name = strdup(mp__proc_self.parent_name ? mp__proc_self.parent_name : "MainProcess");
    p->identity = strdup("");
    p->pid = mp__proc_self.parent_pid;
    p->owner = 0; /* nobody's child: join, terminate and close refuse */
    p->state = ST_STARTED;
    p->is_parent = true;
    p->pidfd = p->statfd = -1;
    pthread_mutex_init(&p->wait_lock, NULL);
    parent = p; /* a fork child's copy (made_in another pid) is simply replaced */
    made_in = getpid();
    return p;
}
