/* Process objects: new, start, join, is_alive, terminate, kill, close, free. The
 * process module's files: see core.h (and proc.h for the spawn and forkserver methods).
 *
 * DESIGN
 * - Who runs where: the creating process (the "owner") starts, polls, signals and
 *   joins its children; the child runs mp__proc_run() and leaves through
 *   mp_process_exit(), which never returns to the caller's main.
 * - Shared state: the registry of started, not yet reaped children (a list under
 *   reg_lock, recursive because reaping from inside an iteration unlinks entries) and
 *   the default start method (under reg_lock too). A process object itself is used
 *   by one thread at a time, as in Python.
 * - Child death is observed through pidfds (fork/spawn) or the forkserver's status
 *   connection, never through a SIGCHLD handler.
 * - Waiting: a child's end is collected once (a status read, a waitid), so one thread
 *   at a time waits for a given process, under its wait_lock. A poll from another
 *   thread (start() reaping finished children, is_alive, active_children) that finds
 *   it taken reports the process as still running; a second joiner waits for the
 *   first and then sees the result.
 * - Lock order: a process's wait_lock before reg_lock (finishing a wait unlinks the
 *   process), never the reverse: under reg_lock only trylock, or a blocking wait at
 *   exit that releases wait_lock before it needs reg_lock. The forkserver client's
 *   start-up lock (forkserver.c) is never taken while holding either.
 * - Fork: the child re-initialises reg_lock and forgets the parent's children (their
 *   fds are closed in the child), like Python's `_children = set()`. It runs nothing
 *   before the parent holds its pidfd (the start pipe, see await_go): a pid is never
 *   looked up or signalled after the child could have been reaped. */
#define _GNU_SOURCE
#include "process/core.h"
#include "internal/common.h"
#include "multiproc/log.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- small helpers ------------------------------------------------------------- */

void mp__proc_close_fds(mp_process *p)
{
    mp__close(p->pidfd);
    mp__close(p->statfd);
    p->pidfd = p->statfd = -1;
}

void mp__proc_destroy(mp_process *p)
{
    pthread_mutex_destroy(&p->wait_lock);
    mp__proc_close_fds(p);
    mp_value_free(p->args);
    free(p->name);
    free(p->identity);
    free(p);
}

/* ---- the process object -------------------------------------------------------- */

mp_process *mp_process_new(const mp_process_opts *opts)
{
    if (!opts || !opts->target) {
        mp__error(MP_EINVAL, "a process needs a target function");
        return NULL;
    }
    mp_process *p = mp__calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->pidfd = p->statfd = -1;
    pthread_mutex_init(&p->wait_lock, NULL);
    pthread_mutex_lock(&mp__proc_reg_lock);
    unsigned n = ++mp__proc_self.counter;
    pthread_mutex_unlock(&mp__proc_reg_lock);
    p->identity = mp__proc_self.identity ? mp__strdup_printf("%s:%u", mp__proc_self.identity, n) : mp__strdup_printf("%u", n);
    if (p->identity)
        p->name = opts->name ? mp__strdup(opts->name) : mp__strdup_printf("Process-%s", p->identity);
    if (opts->args && p->name)
        p->args = mp_value_copy(opts->args);
    if (!p->name || (opts->args && !p->args)) {
        mp__proc_destroy(p);
        return NULL;
    }
    p->target = opts->target;
    mp__proc_authkey_inherit(p);
    p->daemon = opts->daemon;
    p->ctx = opts->ctx;
    return p;
}

static int start_other(mp_process *p, mp_start_method m, char *buf, size_t len,
                       const int *fds, size_t nfds)
{
    mp__launch l;
    memset(&l, 0, sizeof l);
    int r = mp__target_locate(p->target, &l.loc);
    if (r < 0)
        return r;
    l.method = (uint32_t)m;
    l.daemon = p->daemon;
    l.log_level = mp_log_get_level();
    l.log_on = mp__proc_log_enabled();
    l.parent_pid = getpid();
    l.nfds = (uint32_t)nfds;
    l.name = p->name;
    l.identity = p->identity;
    l.args = buf;
    l.args_len = len;
    l.parent_name = mp_current_process_name();
    l.authkey = p->authkey;
    l.authkey_len = p->authkey_len;
    fflush(stdout);
    fflush(stderr);
    if (m == MP_START_SPAWN)
        return mp__spawn_child(&l, fds, nfds, &p->pid, &p->pidfd);
    return mp__fs_start_child(&l, fds, nfds, &p->pid, &p->pidfd, &p->statfd);
}

static int encode_args(const mp_process *p, char **buf, size_t *len, int *fds, size_t *nfds)
{
    mp_value *nil = p->args ? NULL : mp_value_nil();
    const mp_value *v = p->args ? p->args : nil;
    if (!v)
        return mp__error(-ENOMEM, "allocating the arguments");
    int r = mp_value_encode(v, buf, len, fds, MP__PROC_MAX_FDS, nfds);
    mp_value_free(nil);
    if (r < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mp__last_error_detail());
        return mp__error(r, "encoding the arguments of %s: %s", p->name, msg);
    }
    return 0;
}

int mp_process_start(mp_process *p)
{
    if (!p)
        return mp__error(MP_EINVAL, "no process");
    if (p->state == ST_CLOSED)
        return mp__error(MP_ECLOSED, "process object is closed");
    if (p->state != ST_NEW)
        return mp__error(MP_EPROCESS, "cannot start a process twice");
    if (mp__proc_self.daemon)
        return mp__error(MP_EPROCESS, "daemonic processes are not allowed to have children");
    mp__proc_reap_finished();
    mp_start_method m = mp__proc_resolve_method(p->ctx);
    char *buf = NULL;
    size_t len = 0, nfds = 0;
    int fds[MP__PROC_MAX_FDS];
    int r = encode_args(p, &buf, &len, fds, &nfds);
    if (r < 0)
        return r;
    p->method = m;
    if (m == MP_START_FORK)
        r = mp__proc_start_fork(p, buf, len, fds, nfds);
    else
        r = start_other(p, m, buf, len, fds, nfds);
    mp_free(buf);
    if (r < 0) {
        p->pid = 0;
        mp__proc_close_fds(p);
        return r;
    }
    p->owner = getpid();
    p->state = ST_STARTED;
    mp__proc_reg_add(p);
    return 0;
}

/* Checks shared by join/terminate/kill: 0 if p is a started child of ours. */
static int check_child(const mp_process *p, const char *what)
{
    if (!p)
        return mp__error(MP_EINVAL, "no process");
    if (p->state == ST_CLOSED)
        return mp__error(MP_ECLOSED, "process object is closed");
    if (p->state == ST_NEW)
        return mp__error(MP_EPROCESS, "can only %s a started process", what);
    if (p->pid == getpid())
        return mp__error(MP_EPROCESS, "cannot %s current process", what);
    if (p->owner != getpid())
        return mp__error(MP_EPROCESS, "can only %s a child process", what);
    return 0;
}

int mp_process_join(mp_process *p, double timeout)
{
    int r = check_child(p, "join");
    if (r < 0)
        return r;
    r = mp__proc_wait(p, mp__deadline(timeout));
    if (r == MP_ETIMEOUT)
        return mp__error(MP_ETIMEOUT, "process %s (pid %d) still running after %gs", p->name,
                         (int)p->pid, timeout);
    return r;
}

bool mp_process_is_alive(mp_process *p)
{
    if (!p || p->state != ST_STARTED)
        return false;
    if (p->pid == getpid())
        return true;
    if (p->is_parent)
        return kill(p->pid, 0) == 0 || errno == EPERM;
    if (p->owner != getpid())
        return false;
    return mp__proc_wait(p, mp__proc_poll_now()) == MP_ETIMEOUT;
}

static int send_signal(mp_process *p, int sig, const char *what)
{
    int r = check_child(p, what);
    if (r < 0 || p->state == ST_DONE)
        return r;
    if (mp__proc_wait(p, mp__proc_poll_now()) != MP_ETIMEOUT)
        return 0; /* already ended: nothing to signal, as Python */
    r = mp__pidfd_send_signal(p->pidfd, sig);
    if (r == -ESRCH)
        return 0;
    if (r < 0)
        return mp__error(r, "%s process %s (pid %d)", what, p->name, (int)p->pid);
    return 0;
}

int mp_process_terminate(mp_process *p) { return send_signal(p, SIGTERM, "terminate"); }

int mp_process_kill(mp_process *p) { return send_signal(p, SIGKILL, "kill"); }

int mp_process_exitcode(const mp_process *cp, int *code)
{
    mp_process *p = (mp_process *)cp; /* polling updates the cached state */
    if (!p)
        return mp__error(MP_EINVAL, "no process");
    if (p->state == ST_CLOSED)
        return mp__error(MP_ECLOSED, "process object is closed");
    if (p->state == ST_STARTED && p->owner == getpid() && p->pid != getpid())
        mp__proc_wait(p, mp__proc_poll_now());
    if (p->state != ST_DONE)
        return mp__error(MP_ESTATE, "process %s has no exit code yet", p->name);
    if (code)
        *code = p->exitcode;
    return 0;
}

pid_t mp_process_pid(const mp_process *p) { return p ? p->pid : 0; }

const char *mp_process_name(const mp_process *p) { return p ? p->name : NULL; }

bool mp_process_daemon(const mp_process *p) { return p && p->daemon; }

int mp_process_sentinel(const mp_process *p)
{
    if (!p || (p->state != ST_STARTED && p->state != ST_DONE))
        return -1;
    return p->method == MP_START_FORKSERVER ? p->statfd : p->pidfd;
}

char *mp_process_repr(const mp_process *cp)
{
    mp_process *p = (mp_process *)cp; /* polling updates the cached state */
    if (!p)
        return mp__strdup("<Process None>");
    const char *status = "initial";
    bool mine = p->owner == getpid() || p->state == ST_NEW;
    if (p->state == ST_STARTED && p->pid == getpid())
        status = "started";
    else if (p->state == ST_CLOSED)
        status = "closed";
    else if (!mine)
        status = "unknown";
    else if (p->state != ST_NEW)
        status = mp__proc_wait(p, mp__proc_poll_now()) == MP_ETIMEOUT ? "started" : "stopped";
    char pid[32] = "", code[48] = "";
    if (p->state != ST_NEW && p->state != ST_CLOSED)
        snprintf(pid, sizeof pid, " pid=%d", (int)p->pid);
    if (strcmp(status, "stopped") == 0) {
        const char *sig = p->exitcode < 0 ? sigabbrev_np(-p->exitcode) : NULL;
        if (sig)
            snprintf(code, sizeof code, " exitcode=-SIG%s", sig);
        else
            snprintf(code, sizeof code, " exitcode=%d", p->exitcode);
    }
    pid_t parent = p->state == ST_NEW ? getpid() : p->owner;
    return mp__strdup_printf("<Process name='%s'%s parent=%d %s%s%s>", p->name, pid, (int)parent, status,
                      code, p->daemon ? " daemon" : "");
}

int mp_process_close(mp_process *p)
{
    if (!p)
        return mp__error(MP_EINVAL, "no process");
    if (p->is_parent)
        return mp__error(MP_EPROCESS, "can only close a child process");
    if (p->state == ST_STARTED && p->owner == getpid() && mp__proc_wait(p, mp__proc_poll_now()) != 0)
        return mp__error(MP_ESTATE,
                         "cannot close a process while it is still running; join() or "
                         "terminate() it first");
    mp__proc_close_fds(p);
    mp_value_free(p->args);
    p->args = NULL;
    p->state = ST_CLOSED;
    return 0;
}

void mp_process_free(mp_process *p)
{
    if (!p)
        return;
    if (p->state == ST_STARTED && p->owner == getpid() && p->pid != getpid()) {
        pthread_mutex_lock(&mp__proc_reg_lock);
        if (mp__proc_wait(p, mp__proc_poll_now()) == MP_ETIMEOUT) {
            /* Still running: the registry keeps watching it so it never becomes a
             * zombie, and the at-exit handler still joins (or terminates) it. */
            mp_value_free(p->args);
            p->args = NULL;
            p->detached = true;
            pthread_mutex_unlock(&mp__proc_reg_lock);
            return;
        }
        pthread_mutex_unlock(&mp__proc_reg_lock);
    }
    mp__proc_reg_remove(p);
    mp__proc_destroy(p);
}

/* For the pool module: name an unstarted process "<prefix>-<identity>", as Python's
 * Pool renames its workers (ForkPoolWorker-N keeps the Process-N number). */
int mp__process_rename(mp_process *p, const char *prefix)
{
    char *name = mp__strdup_printf("%s-%s", prefix, p->identity);
    if (!name)
        return mp__error(-ENOMEM, "naming a process");
    free(p->name);
    p->name = name;
    return 0;
}
