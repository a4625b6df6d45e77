/* The fork start method: the child is a copy of this process that decodes its
 * arguments (with the inherited fds) and runs the target.
 *
 * DESIGN
 * - The child runs nothing before the parent holds its pidfd (the start pipe, see
 *   await_go): a pid is never looked up or signalled after the child could have been
 *   reaped. In the child, mp__proc_become_child re-initialises the registry lock and
 *   forgets the parent's children (their fds are closed), like Python's
 *   `_children = set()`.
 */
#define _GNU_SOURCE
#include "process/core.h"
#include "internal/common.h"
#include "multiproc/log.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

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
    const char *parent_name = mp_current_process_name();
    mp__proc_become_child(p->name, p->identity, parent, p->daemon, MP_START_FORK);
    mp__proc_become_child_of(parent_name, p->authkey, p->authkey_len);
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

int mp__proc_start_fork(mp_process *p, const char *buf, size_t len, const int *fds, size_t nfds)
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
