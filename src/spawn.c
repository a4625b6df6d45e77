/* The one spawning protocol (see src/internal/spawn.h).
 *
 * DESIGN
 * - Who runs where: the calling thread blocks every signal, then clone()s a child
 *   with CLONE_VM|CLONE_VFORK|CLONE_PIDFD on a small stack carved out of its own
 *   frame. The child shares our memory, so until it execs it may only touch its
 *   stack and the read-only request; it makes raw syscalls only (no malloc, no
 *   stdio, no libc wrappers that a sanitizer intercepts). The parent thread is
 *   suspended by the kernel until the child execs or exits, so the borrowed stack
 *   and the request stay valid; other threads keep running (and may spawn too:
 *   nothing here is global).
 * - What is shared: nothing mutable. Everything the child needs (the PATH
 *   candidates, the environment, the old signal mask) is prepared by the parent
 *   before clone.
 * - Failures before exec are written as {step, errno, detail} into a close-on-exec
 *   pipe; EOF on the pipe means exec succeeded. A failed child is reaped here, so
 *   the caller never sees a child that exits 127.
 * - Cost does not depend on the parent's size: no page tables are copied.
 * - Except with a preexec function (the caller's code, Python's preexec_fn): that
 *   child is fork()ed, so it runs on its own copy of memory; the same child_main and
 *   error pipe are used, and the function is limited to async-signal-safe calls.
 */
#define _GNU_SOURCE
#include "internal/spawn.h"
#include "internal/common.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

extern char **environ;

/* Where the child failed; the parent turns it into the message. */
enum spawn_step {
    STEP_SIGNALS = 1,
    STEP_DUP,
    STEP_CLOSE_FDS,
    STEP_PASS_FD,
    STEP_CHDIR,
    STEP_SETSID,
    STEP_SETPGID,
    STEP_EXEC,
    STEP_JOIN_PGROUP,
    STEP_SETGROUPS,
    STEP_SETGID,
    STEP_SETUID,
    STEP_PREEXEC,
};

struct spawn_report {
    int step;
    int err;
    int detail; /* the fd for the fd steps */
};

/* What the child reads. All of it lives in the parent's frame. */
struct child_ctx {
    const mp__spawn_req *req;
    char *const *cands; /* full paths to try, in PATH order */
    size_t ncand;
    char *const *envp;
    int errfd;
    sigset_t oldmask;
};

/* Kernel layout of struct sigaction for rt_sigaction (x86_64 and most others). */
struct kernel_sigaction {
    void *handler;
    unsigned long flags;
    void *restorer;
    uint64_t mask;
};

/* 32 KiB is plenty for the raw syscalls the child makes; sanitizer builds inflate
 * frames, so they get more. The parent thread needs this much free stack. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CHILD_STACK_SIZE (128 * 1024)
#else
#define CHILD_STACK_SIZE (32 * 1024)
#endif

#define CHILD_FN __attribute__((noinline, no_sanitize("address", "undefined", "thread")))

/* ---- the child (async-signal-safe, raw syscalls only) ------------------------------ */

CHILD_FN static long child_sys_err(long r)
{
    return r < 0 ? errno : 0;
}

CHILD_FN __attribute__((noreturn)) static void child_fail(const struct child_ctx *c, int step,
                                                          int err, int detail)
{
    struct spawn_report rep = {step, err, detail};
    syscall(SYS_write, c->errfd, &rep, sizeof rep);
    syscall(SYS_exit_group, 127);
    __builtin_unreachable();
}

/* Handlers point into our (shared) memory: a signal arriving between unblocking and
 * exec must not run them in the child, so they go back to SIG_DFL first. Ignored
 * signals survive exec; restore_signals resets them as well. */
CHILD_FN static void child_signals(const struct child_ctx *c)
{
    for (int sig = 1; sig < 65; sig++) {
        if (sig == SIGKILL || sig == SIGSTOP)
            continue;
        struct kernel_sigaction old, dfl;
        if (syscall(SYS_rt_sigaction, sig, NULL, &old, 8) < 0)
            continue;
        if (old.handler == (void *)SIG_DFL)
            continue;
        if (old.handler == (void *)SIG_IGN && !c->req->restore_signals)
            continue;
        __builtin_memset(&dfl, 0, sizeof dfl);
        dfl.handler = (void *)SIG_DFL;
        syscall(SYS_rt_sigaction, sig, &dfl, NULL, 8);
    }
    sigset_t none;
    __builtin_memset(&none, 0, sizeof none);
    const sigset_t *mask = c->req->restore_signals ? &none : &c->oldmask;
    if (syscall(SYS_rt_sigprocmask, SIG_SETMASK, mask, NULL, 8) < 0)
        child_fail(c, STEP_SIGNALS, errno, 0);
}

/* fd i of the child becomes fd_map[i]. A source that is itself a destination
 * (< nmap) could be overwritten by an earlier dup2, so every such source is first
 * moved above nmap (close-on-exec, so the copies vanish at exec). */
CHILD_FN static void child_fds(const struct child_ctx *c)
{
    const mp__spawn_req *r = c->req;
    int src[MP__SPAWN_MAX_MAP];
    for (int i = 0; i < r->nmap; i++) {
        src[i] = r->fd_map[i];
        if (src[i] >= 0 && src[i] < r->nmap && src[i] != i) {
            long t = syscall(SYS_fcntl, src[i], F_DUPFD_CLOEXEC, r->nmap);
            if (t < 0)
                child_fail(c, STEP_DUP, errno, i);
            src[i] = (int)t;
        }
    }
    for (int i = 0; i < r->nmap; i++) {
        long e;
        if (src[i] == i) { /* keep it across exec; a closed fd just stays closed */
            e = child_sys_err(syscall(SYS_fcntl, i, F_SETFD, 0));
            if (e == EBADF)
                e = 0;
        }
        else if (src[i] >= 0)
            e = child_sys_err(syscall(SYS_dup2, src[i], i));
        else
            e = 0, syscall(SYS_close, i);
        if (e)
            child_fail(c, STEP_DUP, (int)e, i);
    }
}

/* Fallback for kernels without close_range: mark every possible fd close-on-exec. */
CHILD_FN static void child_cloexec_all(int from)
{
    struct rlimit rl;
    long maxfd = 65536;
    if (syscall(SYS_prlimit64, 0, RLIMIT_NOFILE, NULL, &rl) == 0 && rl.rlim_cur < 65536)
        maxfd = (long)rl.rlim_cur;
    for (long fd = from; fd < maxfd; fd++)
        syscall(SYS_fcntl, fd, F_SETFD, FD_CLOEXEC);
}

/* close_fds: everything >= nmap is marked close-on-exec (our error pipe included,
 * which must stay open until exec), then pass_fds are unmarked. */
CHILD_FN static void child_close_and_pass(const struct child_ctx *c)
{
    const mp__spawn_req *r = c->req;
    if (r->close_fds) {
        if (syscall(SYS_close_range, r->nmap, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
            if (errno != ENOSYS && errno != EINVAL)
                child_fail(c, STEP_CLOSE_FDS, errno, r->nmap);
            child_cloexec_all(r->nmap);
        }
    }
    for (size_t i = 0; i < r->npass; i++) {
        int fd = r->pass_fds[i];
        if (fd < r->nmap)
            continue; /* already placed by fd_map */
        if (syscall(SYS_fcntl, fd, F_SETFD, 0) < 0)
            child_fail(c, STEP_PASS_FD, errno, fd);
    }
}

CHILD_FN static void child_exec(const struct child_ctx *c)
{
    int saved = 0, last = ENOENT;
    for (size_t i = 0; i < c->ncand; i++) {
        syscall(SYS_execve, c->cands[i], c->req->argv, c->envp);
        last = errno;
        /* Like execvp: a miss moves on; the first real failure (EACCES, ENOEXEC)
         * is what we report if nothing else runs. */
        if (last != ENOENT && last != ENOTDIR && saved == 0)
            saved = last;
    }
    child_fail(c, STEP_EXEC, saved ? saved : last, 0);
}

/* Python's order: join a group, then groups, gid, uid (after setuid the rest may be
 * forbidden), then preexec_fn. */
CHILD_FN static void child_identity(const struct child_ctx *c)
{
    const mp__spawn_req *r = c->req;
    if (r->join_pgroup > 0 && syscall(SYS_setpgid, 0, r->join_pgroup) < 0)
        child_fail(c, STEP_JOIN_PGROUP, errno, r->join_pgroup);
    if (r->set_groups && syscall(SYS_setgroups, r->ngroups, r->groups) < 0)
        child_fail(c, STEP_SETGROUPS, errno, 0);
    if (r->set_gid && syscall(SYS_setregid, r->gid, r->gid) < 0)
        child_fail(c, STEP_SETGID, errno, (int)r->gid);
    if (r->set_uid && syscall(SYS_setreuid, r->uid, r->uid) < 0)
        child_fail(c, STEP_SETUID, errno, (int)r->uid);
    if (r->preexec) {
        int rc = r->preexec(r->preexec_arg);
        if (rc != 0) /* a negative code is reported as is, a positive one as MP_EPROCESS */
            child_fail(c, STEP_PREEXEC, rc < 0 ? -rc : -MP_EPROCESS, rc);
    }
}

CHILD_FN static int child_main(void *arg)
{
    const struct child_ctx *c = arg;
    const mp__spawn_req *r = c->req;
    child_signals(c);
    child_fds(c);
    child_close_and_pass(c);
    if (r->cwd && syscall(SYS_chdir, r->cwd) < 0)
        child_fail(c, STEP_CHDIR, errno, 0);
    if (r->umask >= 0)
        syscall(SYS_umask, r->umask & 0777);
    if (r->new_session && syscall(SYS_setsid) < 0)
        child_fail(c, STEP_SETSID, errno, 0);
    if (r->new_pgroup && !r->new_session && syscall(SYS_setpgid, 0, 0) < 0)
        child_fail(c, STEP_SETPGID, errno, 0);
    child_identity(c);
    child_exec(c);
    return 127;
}

/* ---- the parent --------------------------------------------------------------------- */

/* The PATH the child's exec search uses: the child's environment decides. */
static const char *child_path(char *const *envp)
{
    if (!envp) {
        const char *p = getenv("PATH");
        return p ? p : "/bin:/usr/bin";
    }
    for (char *const *e = envp; *e; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            return *e + 5;
    return "/bin:/usr/bin"; /* Python's os.defpath */
}

/* Every full path the child will try, in one allocation (pointers, then strings).
 * A name with a '/' is tried as is. *out is freed by the caller with free(). */
static int build_candidates(const char *file, char *const *envp, char ***out, size_t *n)
{
    if (strchr(file, '/')) {
        char **v = malloc(sizeof(char *));
        if (!v)
            return mp__error(-ENOMEM, "spawn '%s'", file);
        v[0] = (char *)file;
        *out = v;
        *n = 1;
        return 0;
    }
    const char *path = child_path(envp);
    size_t ndirs = 1, flen = strlen(file);
    for (const char *p = path; *p; p++)
        ndirs += *p == ':';
    size_t bytes = ndirs * sizeof(char *) + strlen(path) + ndirs * (flen + 2);
    char **v = malloc(bytes);
    if (!v)
        return mp__error(-ENOMEM, "spawn '%s'", file);
    char *s = (char *)(v + ndirs);
    size_t k = 0;
    for (const char *p = path;; p++) {
        const char *end = strchrnul(p, ':');
        size_t dlen = (size_t)(end - p);
        v[k++] = s;
        if (dlen) { /* an empty entry means the current directory, as in execvp */
            memcpy(s, p, dlen);
            s += dlen;
            *s++ = '/';
        }
        memcpy(s, file, flen + 1);
        s += flen + 1;
        p = end;
        if (!*end)
            break;
    }
    *out = v;
    *n = k;
    return 0;
}

static int report_failure(const mp__spawn_req *req, const char *file,
                          const struct spawn_report *rep)
{
    int code = -rep->err;
    switch (rep->step) {
    case STEP_EXEC:
        return mp__error(code, "exec '%s'", file);
    case STEP_CHDIR:
        return mp__error(code, "chdir '%s'", req->cwd);
    case STEP_DUP:
        return mp__error(code, "dup2 fd %d -> %d in the child", req->fd_map[rep->detail],
                         rep->detail);
    case STEP_PASS_FD:
        return mp__error(code, "pass_fds: fd %d", rep->detail);
    case STEP_CLOSE_FDS:
        return mp__error(code, "close_fds in the child");
    case STEP_SETSID:
        return mp__error(code, "setsid in the child");
    case STEP_SETPGID:
        return mp__error(code, "setpgid in the child");
    case STEP_JOIN_PGROUP:
        return mp__error(code, "process_group: joining group %d in the child", rep->detail);
    case STEP_SETGROUPS:
        return mp__error(code, "extra_groups: setgroups in the child");
    case STEP_SETGID:
        return mp__error(code, "group: setregid(%d) in the child", rep->detail);
    case STEP_SETUID:
        return mp__error(code, "user: setreuid(%d) in the child", rep->detail);
    case STEP_PREEXEC:
        return mp__error(code, "preexec_fn failed in the child (returned %d)", rep->detail);
    default:
        return mp__error(code, "restoring signals in the child");
    }
}

static int check_request(const mp__spawn_req *req)
{
    if (!req || !req->argv || !req->argv[0])
        return mp__error(MP_EINVAL, "spawn: argv is NULL or empty");
    if (req->nmap < 0 || req->nmap > MP__SPAWN_MAX_MAP)
        return mp__error(MP_EINVAL, "spawn: nmap %d out of range 0..%d", req->nmap,
                         MP__SPAWN_MAX_MAP);
    if (req->npass && !req->pass_fds)
        return mp__error(MP_EINVAL, "spawn: pass_fds is NULL");
    return 0;
}

/* The error pipe's write end must survive the child's fd shuffling: keep it above
 * every fd_map destination. */
static int error_pipe(int nmap, int fds[2])
{
    if (mp__pipe(fds) < 0)
        return mp__errno("spawn: pipe");
    int low = nmap > 3 ? nmap : 3;
    if (fds[1] < low) {
        int moved = mp__dup_cloexec(fds[1], low);
        if (moved < 0) {
            mp__close(fds[0]);
            mp__close(fds[1]);
            return mp__error(moved, "spawn: moving the error pipe");
        }
        mp__close(fds[1]);
        fds[1] = moved;
    }
    return 0;
}

/* A forked child may end (and, with SIGCHLD ignored, be reaped) before pidfd_open:
 * it waits for one byte that is written once we hold the pidfd, as the fork start
 * method does (src/process/fork.c). Returns the pid (errno set on failure). */
static pid_t fork_child(struct child_ctx *ctx, int *pidfd)
{
    int go[2];
    if (mp__pipe(go) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        char c;
        close(go[1]);
        if (mp__read(go[0], &c, 1) != 1)
            _exit(127); /* never seen: the parent reaps it below */
        close(go[0]);
        child_main(ctx);
    }
    int err = errno;
    close(go[0]);
    if (pid > 0 && (*pidfd = mp__pidfd_open(pid)) >= 0 && mp__write(go[1], "g", 1) == 1) {
        close(go[1]);
        return pid;
    }
    if (pid > 0) {
        err = *pidfd < 0 ? -*pidfd : errno;
        close(go[1]); /* EOF: the child leaves without running anything */
        mp__close(*pidfd);
        *pidfd = -1;
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        pid = -1;
    } else {
        close(go[1]);
    }
    errno = err;
    return pid;
}

/* clone with every signal blocked, so no handler of ours runs in the child before
 * it has reset the dispositions. Returns the pid or -errno. */
static pid_t clone_child(struct child_ctx *ctx, int *pidfd)
{
    char stack[CHILD_STACK_SIZE] __attribute__((aligned(64)));
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &ctx->oldmask);
    int saved_cancel;
    pthread_setcancelstate(PTHREAD_CANCEL_DISABLE, &saved_cancel);
    pid_t pid;
    int err;
#ifdef __SANITIZE_THREAD__
    /* ThreadSanitizer treats clone() as a fork and runs its fork bookkeeping in the
     * child, which with CLONE_VM would corrupt the parent's state; its builds fork. */
    bool use_fork = true;
#else
    /* preexec_fn is the caller's code: it gets a memory of its own (Python forks too). */
    bool use_fork = ctx->req->preexec != NULL;
#endif
    if (use_fork) {
        (void)stack;
        pid = fork_child(ctx, pidfd);
        err = errno;
    } else {
        pid = clone(child_main, stack + sizeof stack,
                    CLONE_VM | CLONE_VFORK | CLONE_PIDFD | SIGCHLD, ctx, pidfd);
        err = errno;
    }
    pthread_setcancelstate(saved_cancel, NULL);
    pthread_sigmask(SIG_SETMASK, &ctx->oldmask, NULL);
    return pid < 0 ? -err : pid;
}

/* After clone: EOF on the pipe means exec succeeded; a report means the child
 * failed and has exited (CLONE_VFORK: it is already gone or exec'd; forked: it is
 * exiting, and the waitid below waits for it). */
static int collect(const mp__spawn_req *req, const char *file, int rfd, pid_t pid, int pidfd)
{
    struct spawn_report rep;
    ssize_t n = mp__read(rfd, &rep, sizeof rep);
    if (n == 0)
        return 0;
    int code;
    if (n == (ssize_t)sizeof rep)
        code = report_failure(req, file, &rep);
    else
        code = mp__error(n < 0 ? -errno : MP_EPROTO, "spawn '%s': reading the child's report",
                         file);
    siginfo_t si;
    while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
        ;
    (void)pid;
    return code;
}

/* CLONE_PIDFD takes the lowest free number, which may be 0..2 (see mp__fd_high). If
 * it cannot be moved the child is killed and reaped through it: no child remains. */
static int pidfd_high(const char *file, int *pidfd)
{
    if (*pidfd > 2)
        return 0;
    int moved = mp__dup_cloexec(*pidfd, 3);
    if (moved >= 0) {
        mp__close(*pidfd);
        *pidfd = moved;
        return 0;
    }
    mp__pidfd_send_signal(*pidfd, SIGKILL);
    siginfo_t si;
    while (waitid(P_PIDFD, (id_t)*pidfd, &si, WEXITED) < 0 && errno == EINTR)
        ;
    return mp__error(moved, "spawn '%s': moving the pidfd above fd 2", file);
}

int mp__spawn(const mp__spawn_req *req, pid_t *pid, int *pidfd)
{
    int rc = check_request(req);
    if (rc < 0)
        return rc;
    const char *file = req->file ? req->file : req->argv[0];
    if (!*file)
        return mp__error(-ENOENT, "exec ''");
    char *const *envp = req->envp ? req->envp : environ;
    struct child_ctx ctx = {.req = req, .envp = envp};
    char **cands = NULL;
    if ((rc = build_candidates(file, req->envp, &cands, &ctx.ncand)) < 0)
        return rc;
    ctx.cands = cands;
    int efd[2];
    if ((rc = error_pipe(req->nmap, efd)) < 0) {
        free(cands);
        return rc;
    }
    ctx.errfd = efd[1];
    int pfd = -1;
    pid_t child = clone_child(&ctx, &pfd);
    mp__close(efd[1]);
    free(cands);
    if (child < 0) {
        mp__close(efd[0]);
        return mp__error(child, "spawn '%s': clone", file);
    }
    rc = collect(req, file, efd[0], child, pfd);
    mp__close(efd[0]);
    if (rc == 0)
        rc = pidfd_high(file, &pfd);
    if (rc < 0) {
        mp__close(pfd);
        return rc;
    }
    *pid = child;
    *pidfd = pfd;
    return 0;
}
