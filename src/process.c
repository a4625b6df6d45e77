/* Process objects, this process's identity, contexts, at-exit handling and the fork
 * start method. The spawn and forkserver methods live in src/process/.
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
#include "multiproc/process.h"
#include "multiproc/log.h"
#include "multiproc/value.h"
#include "internal/common.h"
#include "process/proc.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { ST_NEW, ST_STARTED, ST_DONE, ST_CLOSED };

struct mp_context {
    mp_start_method method;
    const char *name;
};

static mp_context ctx_default = {MP_START_DEFAULT, NULL};
static mp_context ctx_fork = {MP_START_FORK, "fork"};
static mp_context ctx_spawn = {MP_START_SPAWN, "spawn"};
static mp_context ctx_forkserver = {MP_START_FORKSERVER, "forkserver"};

struct mp_process {
    mp_process *next, *prev; /* registry links while started and unreaped */
    bool in_reg;
    bool detached;           /* freed by the user while running: the registry owns it */
    mp_target_fn target;
    mp_value *args;
    char *name;
    char *identity;
    bool daemon;
    mp_context *ctx;
    mp_start_method method;  /* resolved at start */
    _Atomic int state;       /* ST_DONE is stored after exitcode, under wait_lock */
    pid_t pid;
    pid_t owner;             /* the process that started it */
    int pidfd;               /* fork/spawn: waitable; forkserver: for signals only */
    int statfd;              /* forkserver: the status connection; else -1 */
    int exitcode;
    pthread_mutex_t wait_lock; /* held while a thread collects the end (see DESIGN) */
};

/* This process, as Python's current_process(). */
static struct {
    char *name;      /* NULL: "MainProcess" */
    char *identity;  /* NULL in the main process, "1", "1:2" in children */
    pid_t parent_pid;
    bool is_child;
    bool daemon;
    unsigned counter;
    bool exiting;
    mp_target_fn target;
    mp_start_method default_method; /* MP_START_DEFAULT: not chosen yet */
    bool method_fixed;
} cur;

static pthread_mutex_t reg_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
static mp_process *reg_head;

/* ---- small helpers ------------------------------------------------------------- */

static void reg_add(mp_process *p)
{
    pthread_mutex_lock(&reg_lock);
    p->prev = NULL;
    p->next = reg_head;
    if (reg_head)
        reg_head->prev = p;
    reg_head = p;
    p->in_reg = true;
    pthread_mutex_unlock(&reg_lock);
}

static void reg_remove(mp_process *p)
{
    pthread_mutex_lock(&reg_lock);
    if (p->in_reg) {
        if (p->prev)
            p->prev->next = p->next;
        else
            reg_head = p->next;
        if (p->next)
            p->next->prev = p->prev;
        p->in_reg = false;
    }
    pthread_mutex_unlock(&reg_lock);
}

static void close_fds_of(mp_process *p)
{
    mp__close(p->pidfd);
    mp__close(p->statfd);
    p->pidfd = p->statfd = -1;
}

static void destroy(mp_process *p)
{
    pthread_mutex_destroy(&p->wait_lock);
    close_fds_of(p);
    mp_value_free(p->args);
    free(p->name);
    free(p->identity);
    free(p);
}

/* ---- contexts ------------------------------------------------------------------ */

static mp_context *context_by_name(const char *name)
{
    if (!name)
        return &ctx_default;
    if (strcmp(name, "fork") == 0)
        return &ctx_fork;
    if (strcmp(name, "spawn") == 0)
        return &ctx_spawn;
    if (strcmp(name, "forkserver") == 0)
        return &ctx_forkserver;
    return NULL;
}

static const char *method_name(mp_start_method m)
{
    switch (m) {
    case MP_START_SPAWN:
        return "spawn";
    case MP_START_FORKSERVER:
        return "forkserver";
    default:
        return "fork";
    }
}

/* The default method, fixed on first use as Python's DefaultContext does. */
static mp_start_method default_method(void)
{
    pthread_mutex_lock(&reg_lock);
    if (cur.default_method == MP_START_DEFAULT)
        cur.default_method = MP_START_FORK;
    cur.method_fixed = true;
    mp_start_method m = cur.default_method;
    pthread_mutex_unlock(&reg_lock);
    return m;
}

static mp_start_method resolve(const mp_context *ctx)
{
    if (!ctx || ctx->method == MP_START_DEFAULT)
        return default_method();
    return ctx->method;
}

mp_context *mp_get_context(const char *method)
{
    mp_context *c = context_by_name(method);
    if (!c)
        mp__error(MP_EINVAL, "cannot find context for '%s'", method);
    return c;
}

int mp_set_start_method(const char *method, bool force)
{
    mp_context *c = method ? context_by_name(method) : NULL;
    if (method && !c)
        return mp__error(MP_EINVAL, "cannot find context for '%s'", method);
    pthread_mutex_lock(&reg_lock);
    int code = 0;
    if (cur.method_fixed && !force) {
        code = mp__error(MP_ESTATE, "context has already been set");
    } else {
        cur.default_method = c ? c->method : MP_START_DEFAULT;
        cur.method_fixed = c != NULL;
    }
    pthread_mutex_unlock(&reg_lock);
    return code;
}

const char *mp_get_start_method(void) { return method_name(default_method()); }

const char *mp_context_method(const mp_context *ctx) { return method_name(resolve(ctx)); }

/* ---- this process -------------------------------------------------------------- */

const char *mp_current_process_name(void) { return cur.name ? cur.name : "MainProcess"; }

pid_t mp_parent_process_pid(void) { return cur.is_child ? cur.parent_pid : 0; }

bool mp_current_process_daemon(void) { return cur.daemon; }

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
static bool log_enabled(void) { return mp_log_get_fd() >= 0; }

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
    pthread_mutex_init(&reg_lock, &a);
    pthread_mutexattr_destroy(&a);
    /* Under fork the parent's objects are in our memory; their fds are not ours to
     * watch. The objects stay (the user may still free them). */
    for (mp_process *p = reg_head, *next; p; p = next) {
        next = p->next;
        pthread_mutex_init(&p->wait_lock, NULL); /* a parent thread may have held it */
        close_fds_of(p);
        p->in_reg = false;
        p->next = p->prev = NULL;
    }
    reg_head = NULL;
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
    cur.name = strdup(name ? name : "Process");
    cur.identity = strdup(identity ? identity : "1");
    cur.parent_pid = parent_pid;
    cur.is_child = true;
    cur.daemon = daemon;
    cur.counter = 0;
    cur.exiting = false;
    cur.default_method = method;
    cur.method_fixed = true;
    /* A forkserver child already has the server's stdin, which is /dev/null. */
    if (method != MP_START_FORKSERVER)
        stdin_to_devnull();
}

int mp__proc_decode_args(const char *buf, size_t len, int *fds, size_t nfds, mp_value **out)
{
    int r = mp_value_decode(buf, len, fds, nfds, out);
    if (r < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mp_last_error());
        return mp__error(r, "decoding the process arguments: %s", msg);
    }
    return 0;
}

_Noreturn void mp__proc_run(mp_target_fn fn, mp_value *args)
{
    cur.target = fn;
    mp_log(MP_LOG_INFO, "child process calling self.run()");
    int code = fn(args);
    mp_value_free(args);
    mp_process_exit(code);
}

/* ---- at exit ------------------------------------------------------------------- */

static int proc_wait(mp_process *p, double deadline);

/* Python's util._exit_function: terminate the daemons, join the others. */
static void shutdown_children(void)
{
    mp_log(MP_LOG_INFO, "process shutting down");
    mp_log(MP_LOG_DEBUG, "running all \"atexit\" finalizers with priority >= 0");
    pthread_mutex_lock(&reg_lock);
    for (mp_process *p = reg_head, *next; p; p = next) {
        next = p->next;
        if (p->daemon && proc_wait(p, 0) == MP_ETIMEOUT) {
            mp_log(MP_LOG_INFO, "calling terminate() for daemon %s", p->name);
            mp__pidfd_send_signal(p->pidfd, SIGTERM);
        }
    }
    while (reg_head) {
        mp_process *p = reg_head;
        mp_log(MP_LOG_INFO, "calling join() for process %s", p->name);
        /* Cannot wait (it was reaped elsewhere), or another thread collected it and
         * waits for reg_lock to unlink it: drop it (the pointer is only compared). */
        if (proc_wait(p, -1) < 0 || reg_head == p)
            reg_remove(p);
    }
    pthread_mutex_unlock(&reg_lock);
    mp_log(MP_LOG_DEBUG, "running the remaining \"atexit\" finalizers");
}

_Noreturn void mp_process_exit(int code)
{
    if (!cur.is_child)
        exit(code);
    if (!cur.exiting) {
        cur.exiting = true;
        shutdown_children();
        mp__fs_shutdown();
    }
    mp_log(MP_LOG_INFO, "process exiting with exitcode %d", code);
    fflush(NULL);
    _exit(code & 0xff);
}

_Noreturn void mp_process_fail(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt ? fmt : "error", ap);
    va_end(ap);
    fflush(stdout);
    char fn[256] = "main", path[4096] = "?";
    if (cur.target)
        mp__target_describe(cur.target, fn, sizeof fn, path, sizeof path);
    else
        mp__target_describe(NULL, fn, 0, path, sizeof path);
    /* Python prints "Process NAME:" and the traceback of the exception; C has no
     * stack to show, so the frame is the target function. */
    if (cur.is_child)
        fprintf(stderr, "Process %s:\n", mp_current_process_name());
    fprintf(stderr, "Traceback (most recent call last):\n  File \"%s\", in %s\n%s\n", path, fn,
            msg);
    fflush(stderr);
    mp_process_exit(1);
}

static void proc_atexit(void)
{
    if (cur.exiting)
        return;
    cur.exiting = true;
    shutdown_children();
    mp__fs_shutdown();
}

__attribute__((constructor(500))) static void proc_init(void) { atexit(proc_atexit); }

/* ---- waiting ------------------------------------------------------------------- */

/* Under wait_lock: the end is known. The pidfd stays until close/free: the owner may be
 * signalling through it from another thread at this very moment. */
static void mark_done(mp_process *p, int rc)
{
    p->exitcode = rc;
    p->state = ST_DONE;
}

/* Take p's wait_lock: at once when polling, else until the deadline. */
static int lock_wait(mp_process *p, double deadline)
{
    double left = mp__left(deadline);
    int r;
    if (left == 0)
        r = pthread_mutex_trylock(&p->wait_lock);
    else if (left < 0)
        r = pthread_mutex_lock(&p->wait_lock);
    else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9 + left;
        ts.tv_sec = (time_t)t;
        ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
        r = pthread_mutex_timedlock(&p->wait_lock, &ts);
    }
    return r == 0 ? 0 : MP_ETIMEOUT; /* EBUSY, ETIMEDOUT: another thread is waiting */
}

static int proc_wait_locked(mp_process *p, double deadline, int *out);

/* Collect p's end if it comes before the deadline (0 polls, -1 forever). 0 when it
 * has ended (p may be freed if detached), MP_ETIMEOUT, or an error. */
static int proc_wait(mp_process *p, double deadline)
{
    if (p->state != ST_STARTED)
        return 0;
    int r = lock_wait(p, deadline), rc = 0;
    if (r < 0)
        return r;
    if (p->state != ST_STARTED) { /* another thread collected it meanwhile */
        pthread_mutex_unlock(&p->wait_lock);
        return 0;
    }
    r = proc_wait_locked(p, deadline, &rc);
    if (r == 0)
        mark_done(p, rc);
    pthread_mutex_unlock(&p->wait_lock);
    if (r == 0) {
        reg_remove(p);
        if (p->detached)
            destroy(p);
    }
    return r;
}

/* The wait itself: 0 with *out, MP_ETIMEOUT, or an error. */
static int proc_wait_locked(mp_process *p, double deadline, int *out)
{
    int rc = 0, r;
    if (p->method == MP_START_FORKSERVER) {
        r = mp__poll1(p->statfd, POLLIN, deadline);
        if (r < 0)
            return r;
        if (r == 0)
            return MP_ETIMEOUT;
        r = mp__fs_read_status(p->statfd, &rc);
        if (r == MP_EEOF) {
            /* The server died: the status is lost. The pidfd still tells the end. */
            int w = p->pidfd >= 0 ? mp__poll1(p->pidfd, POLLIN, deadline) : 1;
            if (w == 0)
                return MP_ETIMEOUT;
            rc = 255;
        } else if (r < 0) {
            return r;
        }
    } else {
        r = mp__pidfd_wait(p->pidfd, deadline, &rc);
        if (r == MP_ETIMEOUT || r == MP_EINTERRUPTED)
            return r;
        if (r == -ECHILD) /* reaped behind our back (waitpid(-1)?): status lost */
            rc = 255;
        else if (r < 0)
            return mp__error(r, "waiting for process %s (pid %d)", p->name, (int)p->pid);
    }
    *out = rc;
    return 0;
}

static double poll_now(void) { return mp__deadline(0); }

/* Python's _cleanup(): reap finished children so no zombies accumulate. */
static void reap_finished(void)
{
    pthread_mutex_lock(&reg_lock);
    for (mp_process *p = reg_head, *next; p; p = next) {
        next = p->next;
        proc_wait(p, poll_now());
    }
    pthread_mutex_unlock(&reg_lock);
}

int mp_active_children(mp_process **out, size_t max)
{
    int n = 0;
    pthread_mutex_lock(&reg_lock);
    for (mp_process *p = reg_head, *next; p; p = next) {
        next = p->next;
        bool detached = p->detached;
        if (proc_wait(p, poll_now()) != MP_ETIMEOUT || detached)
            continue;
        if (out && (size_t)n < max)
            out[n] = p;
        n++;
    }
    pthread_mutex_unlock(&reg_lock);
    return n;
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
    pthread_mutex_lock(&reg_lock);
    unsigned n = ++cur.counter;
    pthread_mutex_unlock(&reg_lock);
    p->identity = cur.identity ? mp__strdup_printf("%s:%u", cur.identity, n) : mp__strdup_printf("%u", n);
    if (p->identity)
        p->name = opts->name ? mp__strdup(opts->name) : mp__strdup_printf("Process-%s", p->identity);
    if (opts->args && p->name)
        p->args = mp_value_copy(opts->args);
    if (!p->name || (opts->args && !p->args)) {
        destroy(p);
        return NULL;
    }
    p->target = opts->target;
    p->daemon = opts->daemon;
    p->ctx = opts->ctx;
    return p;
}

static int thread_count(void)
{
    FILE *f = mp__fopen_read("/proc/self/stat");
    if (!f)
        return 1;
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = strrchr(buf, ')');
    int field = 2, threads = 1;
    /* num_threads is field 20; fields after the command name are space-separated. */
    for (; s && *s; s++)
        if (*s == ' ' && ++field == 20) {
            threads = atoi(s + 1);
            break;
        }
    return threads;
}

static _Noreturn void fork_child(mp_process *p, pid_t parent, const char *buf, size_t len,
                                 const int *fds, size_t nfds)
{
    mp__proc_become_child(p->name, p->identity, parent, p->daemon, MP_START_FORK);
    /* Our copy of p describes ourselves: joining it is joining self. */
    p->state = ST_STARTED;
    p->pid = getpid();
    p->owner = parent;
    /* Imported objects own their fds. Hand over the inherited fds themselves, as
     * Python's fork children use them: a child that closes a connection end then
     * really closes it, so the peer sees EOF (the seeds' pipe chain). Only a fd that
     * appears again (the same object passed twice) gets a copy, so that each
     * imported object owns a distinct fd. */
    int mine[MP__PROC_MAX_FDS];
    for (size_t i = 0; i < nfds; i++) {
        bool repeated = false;
        for (size_t j = 0; j < i; j++)
            repeated = repeated || fds[j] == fds[i];
        mine[i] = repeated ? mp__dup_cloexec(fds[i], 3) : fds[i];
    }
    mp_value *args = NULL;
    if (mp__proc_decode_args(buf, len, mine, nfds, &args) < 0) {
        fprintf(stderr, "Process %s: %s\n", p->name, mp_last_error());
        mp_process_exit(1);
    }
    mp__proc_run(p->target, args);
}

/* The fork race: with SIGCHLD ignored (or a SIGCHLD handler calling waitpid(-1)) a
 * child that ends at once is reaped before the parent's pidfd_open, which then fails
 * or, worse, names a recycled pid. So the child first waits for one byte on the start
 * pipe, which the parent writes once it holds the pidfd: until then the child cannot
 * have exited (only a signal from outside can end it early; pidfd_open then reports
 * ESRCH). EOF instead of the byte: the parent gave up; leave without running anything
 * (no atexit handlers: they are the parent's). */
static void await_go(int go[2])
{
    mp__close(go[1]);
    char c;
    ssize_t n = mp__read(go[0], &c, 1);
    if (n != 1)
        _exit(1);
    mp__close(go[0]);
}

static void reap_pidfd(int pidfd)
{
    siginfo_t si;
    while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
        ;
}

static int start_fork(mp_process *p, const char *buf, size_t len, const int *fds, size_t nfds)
{
    int threads = thread_count();
    if (threads > 1)
        mp_log(MP_LOG_WARNING,
               "This process (pid=%d) is multi-threaded (%d threads), use of fork() may "
               "lead to deadlocks in the child; the spawn and forkserver start methods are "
               "safe",
               (int)getpid(), threads);
    /* Buffered output would otherwise be written twice, by us and by the child. */
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    int go[2];
    if (mp__pipe(go) < 0)
        return mp__errno("fork: the start pipe");
    pid_t pid = fork();
    if (pid < 0) {
        int code = mp__errno("fork");
        mp__close(go[0]);
        mp__close(go[1]);
        return code;
    }
    if (pid == 0) {
        await_go(go);
        fork_child(p, parent, buf, len, fds, nfds);
    }
    mp__close(go[0]);
    int pidfd = mp__pidfd_open(pid);
    if (pidfd >= 0 && mp__write(go[1], "g", 1) != 1) {
        int code = mp__errno("fork: starting child %d", (int)pid);
        mp__close(go[1]);
        mp__pidfd_send_signal(pidfd, SIGKILL);
        reap_pidfd(pidfd);
        mp__close(pidfd);
        return code;
    }
    mp__close(go[1]);
    if (pidfd < 0) {
        /* The child exits by itself at EOF without running anything; it is ours and
         * unreaped (or already reaped by the kernel: then ECHILD), so waiting for this
         * pid cannot touch another process. No signal to a pid that may be stale. */
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        return mp__error(pidfd, "pidfd_open for child %d", (int)pid);
    }
    p->pid = pid;
    p->pidfd = pidfd;
    return 0;
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
    l.log_on = log_enabled();
    l.parent_pid = getpid();
    l.nfds = (uint32_t)nfds;
    l.name = p->name;
    l.identity = p->identity;
    l.args = buf;
    l.args_len = len;
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
        snprintf(msg, sizeof msg, "%s", mp_last_error());
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
    if (cur.daemon)
        return mp__error(MP_EPROCESS, "daemonic processes are not allowed to have children");
    reap_finished();
    mp_start_method m = resolve(p->ctx);
    char *buf = NULL;
    size_t len = 0, nfds = 0;
    int fds[MP__PROC_MAX_FDS];
    int r = encode_args(p, &buf, &len, fds, &nfds);
    if (r < 0)
        return r;
    p->method = m;
    if (m == MP_START_FORK)
        r = start_fork(p, buf, len, fds, nfds);
    else
        r = start_other(p, m, buf, len, fds, nfds);
    mp_free(buf);
    if (r < 0) {
        p->pid = 0;
        close_fds_of(p);
        return r;
    }
    p->owner = getpid();
    p->state = ST_STARTED;
    reg_add(p);
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
    r = proc_wait(p, mp__deadline(timeout));
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
    if (p->owner != getpid())
        return false;
    return proc_wait(p, poll_now()) == MP_ETIMEOUT;
}

static int send_signal(mp_process *p, int sig, const char *what)
{
    int r = check_child(p, what);
    if (r < 0 || p->state == ST_DONE)
        return r;
    if (proc_wait(p, poll_now()) != MP_ETIMEOUT)
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
        proc_wait(p, poll_now());
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
        status = proc_wait(p, poll_now()) == MP_ETIMEOUT ? "started" : "stopped";
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
    if (p->state == ST_STARTED && p->owner == getpid() && proc_wait(p, poll_now()) != 0)
        return mp__error(MP_ESTATE,
                         "cannot close a process while it is still running; join() or "
                         "terminate() it first");
    close_fds_of(p);
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
        pthread_mutex_lock(&reg_lock);
        if (proc_wait(p, poll_now()) == MP_ETIMEOUT) {
            /* Still running: the registry keeps watching it so it never becomes a
             * zombie, and the at-exit handler still joins (or terminates) it. */
            mp_value_free(p->args);
            p->args = NULL;
            p->detached = true;
            pthread_mutex_unlock(&reg_lock);
            return;
        }
        pthread_mutex_unlock(&reg_lock);
    }
    reg_remove(p);
    destroy(p);
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
