/* The internal spawning protocol (src/spawn.c): exec errors in the parent, fd
 * mapping, close_fds/pass_fds, PATH from the child's env, cwd, umask, sessions,
 * signal dispositions, and spawning from several threads. */
#include "test_util.h"
#include "internal/common.h"
#include "internal/spawn.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>

static mp__spawn_req req_for(char *const *argv)
{
    mp__spawn_req r;
    memset(&r, 0, sizeof r);
    r.argv = argv;
    r.umask = -1;
    r.close_fds = true;
    r.nmap = 3;
    r.fd_map[0] = 0;
    r.fd_map[1] = 1;
    r.fd_map[2] = 2;
    return r;
}

/* Spawn, wait, return the returncode (or the spawn error). */
static int spawn_wait(const mp__spawn_req *r)
{
    pid_t pid;
    int pfd, rc;
    int e = mp__spawn(r, &pid, &pfd);
    if (e < 0)
        return e;
    e = mp__pidfd_wait(pfd, mp__deadline(30), &rc);
    close(pfd);
    return e < 0 ? e : rc;
}

/* Run argv with stdout into a pipe and return what it printed (static buffer). */
static const char *spawn_output(mp__spawn_req *r, int *rc)
{
    static char buf[16384];
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return "pipe failed";
    r->fd_map[1] = p[1];
    pid_t pid;
    int pfd;
    int e = mp__spawn(r, &pid, &pfd);
    close(p[1]);
    size_t len = 0;
    if (e == 0) {
        ssize_t n;
        while ((n = read(p[0], buf + len, sizeof buf - 1 - len)) > 0)
            len += (size_t)n;
        mp__pidfd_wait(pfd, mp__deadline(30), rc);
        close(pfd);
    } else {
        *rc = e;
    }
    close(p[0]);
    buf[len] = 0;
    return buf;
}

static void test_true_and_exit_status(void)
{
    char *t[] = {"true", NULL};
    mp__spawn_req r = req_for(t);
    CHECK_INT(spawn_wait(&r), 0);
    char *f[] = {"sh", "-c", "exit 7", NULL};
    r = req_for(f);
    CHECK_INT(spawn_wait(&r), 7);
    char *k[] = {"sh", "-c", "kill -9 $$", NULL};
    r = req_for(k);
    CHECK_INT(spawn_wait(&r), -9);
}

static void test_missing_program(void)
{
    char *argv[] = {"nosuchprog-mpt", "x", NULL};
    mp__spawn_req r = req_for(argv);
    pid_t pid = 0;
    int pfd = -1;
    CHECK_ERR(mp__spawn(&r, &pid, &pfd), -ENOENT);
    CHECK_STR(mp_last_error(), "ENOENT: No such file or directory: exec 'nosuchprog-mpt'");
    CHECK_INT(pfd, -1);
    char *abs[] = {"/nonexistent/prog", NULL};
    r = req_for(abs);
    CHECK_ERR(mp__spawn(&r, &pid, &pfd), -ENOENT);
    CHECK_CONTAINS(mp_last_error(), "exec '/nonexistent/prog'");
}

static void test_not_executable(void)
{
    char path[] = "/tmp/mpt-noexec-XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    CHECK(write(fd, "#!/bin/sh\n", 10) == 10);
    close(fd);
    chmod(path, 0644);
    char *argv[] = {path, NULL};
    mp__spawn_req r = req_for(argv);
    pid_t pid;
    int pfd;
    CHECK_ERR(mp__spawn(&r, &pid, &pfd), -EACCES);
    CHECK_CONTAINS(mp_last_error(), "EACCES");
    CHECK_CONTAINS(mp_last_error(), path);
    unlink(path);
}

static void test_bad_cwd(void)
{
    char *argv[] = {"true", NULL};
    mp__spawn_req r = req_for(argv);
    r.cwd = "/nope-mpt";
    pid_t pid;
    int pfd;
    CHECK_ERR(mp__spawn(&r, &pid, &pfd), -ENOENT);
    CHECK_STR(mp_last_error(), "ENOENT: No such file or directory: chdir '/nope-mpt'");
}

static void test_bad_arguments(void)
{
    pid_t pid;
    int pfd;
    CHECK_ERR(mp__spawn(NULL, &pid, &pfd), MP_EINVAL);
    char *empty[] = {NULL};
    mp__spawn_req r = req_for(empty);
    CHECK_ERR(mp__spawn(&r, &pid, &pfd), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "argv");
    char *argv[] = {"true", NULL};
    r = req_for(argv);
    r.nmap = MP__SPAWN_MAX_MAP + 1;
    CHECK_ERR(mp__spawn(&r, &pid, &pfd), MP_EINVAL);
}

static void test_cwd_and_umask(void)
{
    char *argv[] = {"sh", "-c", "pwd; umask", NULL};
    mp__spawn_req r = req_for(argv);
    r.cwd = "/tmp";
    r.umask = 027;
    int rc;
    CHECK_STR(spawn_output(&r, &rc), "/tmp\n0027\n");
    CHECK_INT(rc, 0);
}

/* The PATH search uses the child's environment, not ours. */
static void test_path_from_child_env(void)
{
    char dir[] = "/tmp/mpt-path-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char prog[256];
    snprintf(prog, sizeof prog, "%s/mpt-hello", dir);
    FILE *f = fopen(prog, "w");
    CHECK(f != NULL);
    fputs("#!/bin/sh\necho hello from $0\n", f);
    fclose(f);
    chmod(prog, 0755);

    char pathvar[300];
    snprintf(pathvar, sizeof pathvar, "PATH=/nonexistent:%s", dir);
    char *env[] = {pathvar, NULL};
    char *argv[] = {"mpt-hello", NULL};
    mp__spawn_req r = req_for(argv);
    r.envp = env;
    int rc;
    char expect[300];
    snprintf(expect, sizeof expect, "hello from %s\n", prog);
    CHECK_STR(spawn_output(&r, &rc), expect);
    CHECK_INT(rc, 0);

    /* Our own PATH has `true`; the child's does not. */
    char *env2[] = {"PATH=/nonexistent", NULL};
    char *argv2[] = {"true", NULL};
    r = req_for(argv2);
    r.envp = env2;
    pid_t pid;
    int pfd;
    CHECK_ERR(mp__spawn(&r, &pid, &pfd), -ENOENT);
    unlink(prog);
    rmdir(dir);
}

/* fd_map where a source is also a destination (stdout and stderr swapped). Done in
 * a forked process so our own fds 1 and 2 stay intact. */
static void test_fd_map_swap(void)
{
    int a[2], b[2];
    CHECK(pipe2(a, O_CLOEXEC) == 0 && pipe2(b, O_CLOEXEC) == 0);
    pid_t p = fork();
    if (p == 0) {
        dup2(a[1], 1);
        dup2(b[1], 2);
        char *argv[] = {"sh", "-c", "echo out; echo err >&2", NULL};
        mp__spawn_req r = req_for(argv);
        r.fd_map[1] = 2;
        r.fd_map[2] = 1;
        _exit(spawn_wait(&r) == 0 ? 0 : 1);
    }
    close(a[1]);
    close(b[1]);
    int st;
    waitpid(p, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    char buf[64];
    ssize_t n = read(a[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    CHECK_STR(buf, "err\n");
    n = read(b[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = 0;
    CHECK_STR(buf, "out\n");
    close(a[0]);
    close(b[0]);
}

/* fd_map -1 closes the fd in the child. */
static void test_fd_map_close(void)
{
    char *argv[] = {"sh", "-c", "echo x 2>/dev/null >&0 || echo closed", NULL};
    mp__spawn_req r = req_for(argv);
    r.fd_map[0] = -1;
    int rc;
    CHECK_STR(spawn_output(&r, &rc), "closed\n");
}

/* close_fds closes an inheritable fd unless it is in pass_fds. */
static void test_close_fds_and_pass_fds(void)
{
    int p[2];
    CHECK(pipe(p) == 0); /* not close-on-exec on purpose */
    char cmd[128];
    snprintf(cmd, sizeof cmd, "{ echo hi >&%d; } 2>/dev/null && echo passed || echo closed", p[1]);
    char *argv[] = {"bash", "-c", cmd, NULL}; /* dash takes single-digit fds only */
    mp__spawn_req r = req_for(argv);
    int rc;
    CHECK_STR(spawn_output(&r, &rc), "closed\n");

    r = req_for(argv);
    r.close_fds = false;
    CHECK_STR(spawn_output(&r, &rc), "passed\n");

    int cloexec_copy = fcntl(p[1], F_DUPFD_CLOEXEC, 10);
    snprintf(cmd, sizeof cmd, "{ echo hi >&%d; } 2>/dev/null && echo passed || echo closed", cloexec_copy);
    r = req_for(argv);
    r.pass_fds = &cloexec_copy;
    r.npass = 1;
    CHECK_STR(spawn_output(&r, &rc), "passed\n");
    CHECK(fcntl(cloexec_copy, F_GETFD) & FD_CLOEXEC); /* ours is untouched */
    char buf[16] = {0};
    CHECK(read(p[0], buf, sizeof buf - 1) > 0);
    CHECK_STR(buf, "hi\nhi\n");
    close(cloexec_copy);
    close(p[0]);
    close(p[1]);
}

static void test_session_and_group(void)
{
    char *argv[] = {"python3", "-c",
                    "import os; p=os.getpid(); print(os.getsid(0)==p, os.getpgid(0)==p)", NULL};
    mp__spawn_req r = req_for(argv);
    int rc;
    CHECK_STR(spawn_output(&r, &rc), "False False\n");
    r = req_for(argv);
    r.new_session = true;
    CHECK_STR(spawn_output(&r, &rc), "True True\n");
    r = req_for(argv);
    r.new_pgroup = true;
    CHECK_STR(spawn_output(&r, &rc), "False True\n");
}

static void on_usr1(int sig) { (void)sig; }

/* Handled signals are always reset; ignored ones and the mask only with
 * restore_signals. Read from the child's /proc/self/status (grep is the child). */
static void test_signal_dispositions(void)
{
    struct sigaction sa = {.sa_handler = on_usr1}, old_usr1, old_pipe;
    sigaction(SIGUSR1, &sa, &old_usr1);
    signal(SIGPIPE, SIG_IGN);
    sigaction(SIGPIPE, NULL, &old_pipe);
    sigset_t block, oldmask;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &block, &oldmask);

    char *argv[] = {"cat", "/proc/self/status", NULL};
    mp__spawn_req r = req_for(argv);
    int rc;
    /* SIGUSR2 = bit 11 (0x800); cat installs no handler. The child keeps the ignored
     * set of the parent (SIGPIPE, bit 12, and whatever the suite's runner ignores). */
    unsigned long long ign = mpt_sigign();
    CHECK((ign & 0x1000) != 0);
    const char *st = spawn_output(&r, &rc);
    CHECK_CONTAINS(st, "SigBlk:\t0000000000000800\n");
    CHECK_CONTAINS(st, "SigCgt:\t0000000000000000\n");
    CHECK_INT(mpt_sigign_in(st), ign);
    r = req_for(argv);
    r.restore_signals = true;
    st = spawn_output(&r, &rc);
    CHECK_CONTAINS(st, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n"
                       "SigCgt:\t0000000000000000\n");

    pthread_sigmask(SIG_SETMASK, &oldmask, NULL);
    signal(SIGPIPE, SIG_DFL);
    sigaction(SIGUSR1, &old_usr1, NULL);
    /* Our own dispositions are untouched by the child's resets. */
    struct sigaction now;
    sigaction(SIGUSR1, NULL, &now);
    CHECK(now.sa_handler == old_usr1.sa_handler);
}

static void *spawner(void *arg)
{
    int *fails = arg;
    char *argv[] = {"true", NULL};
    for (int i = 0; i < 50; i++) {
        mp__spawn_req r = req_for(argv);
        if (spawn_wait(&r) != 0)
            (*fails)++;
    }
    char *bad[] = {"nosuchprog-thread", NULL};
    mp__spawn_req r = req_for(bad);
    pid_t pid;
    int pfd;
    if (mp__spawn(&r, &pid, &pfd) != -ENOENT ||
        !strstr(mp_last_error(), "exec 'nosuchprog-thread'"))
        (*fails)++;
    return NULL;
}

static void test_four_threads(void)
{
    pthread_t t[4];
    int fails[4] = {0};
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, spawner, &fails[i]);
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_INT(fails[i], 0);
    }
}

/* The returned pidfd is close-on-exec and is not inherited by later children. */
static void test_pidfd_cloexec(void)
{
    char *argv[] = {"sleep", "0.2", NULL};
    mp__spawn_req r = req_for(argv);
    pid_t pid;
    int pfd;
    CHECK_OK(mp__spawn(&r, &pid, &pfd));
    CHECK(pid > 0);
    CHECK(fcntl(pfd, F_GETFD) & FD_CLOEXEC);
    int rc = -1;
    CHECK_ERR(mp__pidfd_wait(pfd, 0, &rc), MP_ETIMEOUT);
    CHECK_OK(mp__pidfd_wait(pfd, mp__deadline(10), &rc));
    CHECK_INT(rc, 0);
    close(pfd);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_true_and_exit_status);
    RUN_IF(argc, argv, test_missing_program);
    RUN_IF(argc, argv, test_not_executable);
    RUN_IF(argc, argv, test_bad_cwd);
    RUN_IF(argc, argv, test_bad_arguments);
    RUN_IF(argc, argv, test_cwd_and_umask);
    RUN_IF(argc, argv, test_path_from_child_env);
    RUN_IF(argc, argv, test_fd_map_swap);
    RUN_IF(argc, argv, test_fd_map_close);
    RUN_IF(argc, argv, test_close_fds_and_pass_fds);
    RUN_IF(argc, argv, test_session_and_group);
    RUN_IF(argc, argv, test_signal_dispositions);
    RUN_IF(argc, argv, test_four_threads);
    RUN_IF(argc, argv, test_pidfd_cloexec);
    return mpt_done();
}
