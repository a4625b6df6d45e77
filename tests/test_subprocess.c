/* The subprocess module as a user sees it: run with every stream setting and option,
 * errors, timeouts, check, Popen (poll/wait/communicate/signals/line talk),
 * pipelines, leaks, threads, a big parent, and a program's own SIGCHLD handler. */
#include "test_util.h"
#include "multiproc/subprocess.h"

#include <fcntl.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/stat.h>

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

static mp_subprocess_opts capture(void)
{
    return (mp_subprocess_opts){.capture_output = true};
}

/* Run a shell line with output captured; returns the output (static) or "". */
static const char *sh_out(const char *cmd, const mp_subprocess_opts *base)
{
    static char buf[8192];
    mp_subprocess_opts o = base ? *base : (mp_subprocess_opts){0};
    o.out = MP_STDIO_PIPE;
    mp_run_result r;
    int rc = mp_run_sh(cmd, &o, &r);
    snprintf(buf, sizeof buf, "%s", rc == 0 && r.out ? r.out : "<failed>");
    mp_run_result_free(&r);
    return buf;
}

static char *read_file(const char *path)
{
    static char buf[4096];
    int fd = open(path, O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    buf[n > 0 ? n : 0] = 0;
    if (fd >= 0)
        close(fd);
    return buf;
}

static char *read_fd(int fd)
{
    static char buf[4096];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = read(fd, buf + len, sizeof buf - 1 - len)) > 0)
        len += (size_t)n;
    buf[len] = 0;
    return buf;
}

/* ---- run: output ----------------------------------------------------------------- */

static void test_run_capture(void)
{
    mp_subprocess_opts o = capture();
    mp_run_result r;
    CHECK_OK(mp_run(ARGV("echo", "hello"), &o, &r));
    CHECK_INT(r.returncode, 0);
    CHECK_STR(r.out, "hello\n");
    CHECK_INT(r.out_len, 6);
    CHECK_STR(r.err, "");
    CHECK(r.pid > 0);
    mp_run_result_free(&r);
    CHECK(r.out == NULL);

    CHECK_OK(mp_run_sh("echo $((1+2)); echo oops >&2; exit 4", &o, &r));
    CHECK_INT(r.returncode, 4);
    CHECK_STR(r.out, "3\n");
    CHECK_STR(r.err, "oops\n");
    mp_run_result_free(&r);

    /* Not captured: NULL buffers. */
    mp_subprocess_opts quiet = {.out = MP_STDIO_DEVNULL};
    CHECK_OK(mp_run(ARGV("echo", "x"), &quiet, &r));
    CHECK(r.out == NULL && r.err == NULL);
    mp_run_result_free(&r);
}

static void test_stderr_merged(void)
{
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE, .err = MP_STDIO_STDOUT};
    mp_run_result r;
    CHECK_OK(mp_run_sh("echo a; echo b >&2; echo c", &o, &r));
    CHECK_STR(r.out, "a\nb\nc\n");
    CHECK(r.err == NULL);
    mp_run_result_free(&r);
    /* MP_IO_STDOUT is for stderr only. */
    mp_subprocess_opts bad = {.out = MP_STDIO_STDOUT};
    CHECK_ERR(mp_run(ARGV("true"), &bad, &r), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "stderr only");
}

static void test_output_to_file_fd_devnull(void)
{
    char path[] = "/tmp/mpt-out-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    mp_subprocess_opts o = {.out = MP_STDIO_FILE(path), .err = MP_STDIO_FILE(path)};
    o.err.append = true;
    CHECK_OK(mp_run_sh("echo one", &o, NULL));
    CHECK_STR(read_file(path), "one\n");
    o.out.append = true;
    CHECK_OK(mp_run_sh("echo two; echo three >&2", &o, NULL));
    CHECK_STR(read_file(path), "one\ntwo\nthree\n");
    mp_subprocess_opts t = {.out = MP_STDIO_FILE(path)};
    CHECK_OK(mp_run_sh("echo truncated", &t, NULL));
    CHECK_STR(read_file(path), "truncated\n");
    unlink(path);

    int p[2];
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    mp_subprocess_opts f = {.out = MP_STDIO_FD(p[1]), .err = MP_STDIO_DEVNULL};
    CHECK_OK(mp_run_sh("echo to-fd; echo hidden >&2", &f, NULL));
    close(p[1]);
    CHECK_STR(read_fd(p[0]), "to-fd\n");
    close(p[0]);

    mp_subprocess_opts missing = {.out = MP_STDIO_FILE("/nonexistent-dir/x")};
    CHECK_ERR(mp_run(ARGV("true"), &missing, NULL), -ENOENT);
    CHECK_CONTAINS(mp_last_error(), "open '/nonexistent-dir/x'");
}

/* Inherited stdout/stdin: done in a forked process whose fds 0/1 are pipes. */
static void test_inherit_streams(void)
{
    int in[2], out[2];
    CHECK(pipe(in) == 0 && pipe(out) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        int rc = mp_run(ARGV("sh", "-c", "read x; echo got $x"), NULL, NULL);
        _exit(rc == 0 ? 0 : 1);
    }
    close(in[0]);
    close(out[1]);
    CHECK(write(in[1], "hello\n", 6) == 6);
    close(in[1]);
    CHECK_STR(read_fd(out[0]), "got hello\n");
    close(out[0]);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* ---- run: input ------------------------------------------------------------------ */

static void test_stdin_sources(void)
{
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE, .input = "bytes in\n", .input_len = 9};
    mp_run_result r;
    CHECK_OK(mp_run(ARGV("cat"), &o, &r));
    CHECK_STR(r.out, "bytes in\n");
    mp_run_result_free(&r);

    mp_subprocess_opts empty = {.out = MP_STDIO_PIPE, .input = "", .input_len = 0};
    CHECK_OK(mp_run(ARGV("cat"), &empty, &r));
    CHECK_STR(r.out, "");
    mp_run_result_free(&r);

    mp_subprocess_opts dn = {.in = MP_STDIO_DEVNULL};
    CHECK_STR(sh_out("cat; echo end", &dn), "end\n");

    char path[] = "/tmp/mpt-in-XXXXXX";
    int fd = mkstemp(path);
    CHECK(write(fd, "from file\n", 10) == 10);
    close(fd);
    mp_subprocess_opts f = {.in = MP_STDIO_FILE(path)};
    CHECK_STR(sh_out("cat", &f), "from file\n");
    unlink(path);
    mp_subprocess_opts nofile = {.in = MP_STDIO_FILE("/nonexistent-mpt")};
    CHECK_ERR(mp_run(ARGV("cat"), &nofile, NULL), -ENOENT);
    CHECK_CONTAINS(mp_last_error(), "stdin: open '/nonexistent-mpt'");

    int p[2];
    CHECK(pipe2(p, O_CLOEXEC) == 0);
    CHECK(write(p[1], "from fd\n", 8) == 8);
    close(p[1]);
    mp_subprocess_opts pf = {.in = MP_STDIO_FD(p[0])};
    CHECK_STR(sh_out("cat", &pf), "from fd\n");
    close(p[0]);

    mp_subprocess_opts both = {.in = MP_STDIO_DEVNULL, .input = "x", .input_len = 1};
    CHECK_ERR(mp_run(ARGV("cat"), &both, NULL), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "input");
}

/* A child that stops reading: no SIGPIPE kills us, the run succeeds. */
static void test_input_child_stops_reading(void)
{
    size_t n = 4 << 20;
    char *big = malloc(n);
    memset(big, 'x', n);
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE, .input = big, .input_len = n};
    mp_run_result r;
    CHECK_OK(mp_run(ARGV("head", "-c", "3"), &o, &r));
    CHECK_STR(r.out, "xxx");
    CHECK_INT(r.returncode, 0);
    mp_run_result_free(&r);
    free(big);
}

/* ---- run: timeout, check, signals ----------------------------------------------- */

static void test_timeout_keeps_partial_output(void)
{
    mp_subprocess_opts o = capture();
    o.time_limit = 0.5;
    mp_run_result r;
    double t0 = mpt_now();
    CHECK_ERR(mp_run_sh("echo partial; echo e >&2; sleep 10", &o, &r), MP_ETIMEOUT);
    double took = mpt_now() - t0;
    CHECK(took < 5.0);
    CHECK(took >= 0.45);
    CHECK_STR(r.out, "partial\n");
    CHECK_STR(r.err, "e\n");
    CHECK_INT(r.returncode, -9);
    CHECK_CONTAINS(mp_last_error(), "timed out after 0.5 seconds");
    mp_run_result_free(&r);
}

static void test_check_failure_carries_output(void)
{
    mp_subprocess_opts o = capture();
    o.check = true;
    mp_run_result r;
    CHECK_ERR(mp_run_sh("echo out; echo err >&2; exit 3", &o, &r), MP_ECHILDFAIL);
    CHECK_INT(r.returncode, 3);
    CHECK_STR(r.out, "out\n");
    CHECK_STR(r.err, "err\n");
    CHECK_CONTAINS(mp_last_error(), "returned non-zero exit status 3");
    mp_run_result_free(&r);
    CHECK_OK(mp_run_sh("exit 0", &o, &r));
    mp_run_result_free(&r);
}

static void test_killed_by_signal(void)
{
    mp_run_result r;
    CHECK_OK(mp_run_sh("kill -9 $$", NULL, &r));
    CHECK_INT(r.returncode, -9);
    mp_run_result_free(&r);
    mp_subprocess_opts o = {.check = true};
    CHECK_ERR(mp_run_sh("kill -TERM $$", &o, &r), MP_ECHILDFAIL);
    CHECK_INT(r.returncode, -15);
    CHECK_CONTAINS(mp_last_error(), "died with signal 15 (SIGTERM)");
    mp_run_result_free(&r);
}

/* ---- run: errors ------------------------------------------------------------------ */

static void test_missing_and_not_executable(void)
{
    mp_run_result r;
    CHECK_ERR(mp_run(ARGV("nosuchprog"), NULL, &r), -ENOENT);
    CHECK_STR(mp_last_error(), "ENOENT: No such file or directory: exec 'nosuchprog'");
    CHECK_INT(r.returncode, 0);
    CHECK(r.out == NULL);

    char path[] = "/tmp/mpt-noexec-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    CHECK_ERR(mp_run(ARGV(path), NULL, NULL), -EACCES);
    CHECK_CONTAINS(mp_last_error(), path);
    unlink(path);

    mp_subprocess_opts o = {.cwd = "/nope"};
    CHECK_ERR(mp_run(ARGV("true"), &o, NULL), -ENOENT);
    CHECK_STR(mp_last_error(), "ENOENT: No such file or directory: chdir '/nope'");

    int rc = 0;
    CHECK_ERR(mp_call(ARGV("nosuchprog"), NULL, &rc), -ENOENT);
}

static void test_bad_arguments(void)
{
    CHECK_ERR(mp_run(NULL, NULL, NULL), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "argv is NULL or empty");
    const char *empty[] = {NULL};
    CHECK_ERR(mp_run(empty, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_run_sh(NULL, NULL, NULL), MP_EINVAL);
    mp_popen *p = (mp_popen *)1;
    CHECK_NULL_ERR(p = mp_popen_start(empty, NULL), MP_EINVAL);
    CHECK(p == NULL);
    mp_subprocess_opts o = {.npass = 2};
    CHECK_ERR(mp_run(ARGV("true"), &o, NULL), MP_EINVAL);
    CHECK_ERR(mp_run(ARGV("true"), &(mp_subprocess_opts){.time_limit = NAN}, NULL), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "time_limit");
    CHECK_OK(mp_run(ARGV("true"), &(mp_subprocess_opts){.time_limit = MP_NO_LIMIT}, NULL));
    mp_subprocess_opts f = {.out = {.kind = MP_IO_FILE}};
    CHECK_ERR(mp_run(ARGV("true"), &f, NULL), MP_EINVAL);
    CHECK_ERR(mp_pipeline(NULL, 0, NULL, NULL, NULL), MP_EINVAL);
}

/* ---- run: child settings ------------------------------------------------------ */

static void test_cwd_umask_executable(void)
{
    mp_subprocess_opts o = {.cwd = "/tmp", .set_umask = true, .umask = 027};
    CHECK_STR(sh_out("pwd; umask", &o), "/tmp\n0027\n");
    mp_subprocess_opts e = {.executable = "/bin/sh", .out = MP_STDIO_PIPE};
    mp_run_result r;
    CHECK_OK(mp_run(ARGV("my-name", "-c", "echo $0"), &e, &r));
    CHECK_STR(r.out, "my-name\n");
    mp_run_result_free(&r);
}

static void test_env_replace_extend_remove(void)
{
    char *env[] = {"ONLY=1", NULL};
    mp_subprocess_opts d = {.env = env, .out = MP_STDIO_PIPE};
    mp_run_result r;
    CHECK_OK(mp_run(ARGV("env"), &d, &r)); /* found through the default PATH */
    CHECK_STR(r.out, "ONLY=1\n");
    mp_run_result_free(&r);

    setenv("MPT_GONE", "here", 1);
    setenv("MPT_KEEP", "kept", 1);
    char *add[] = {"MPT_NEW=42", "MPT_KEEP=over", NULL};
    char *rm[] = {"MPT_GONE", NULL};
    mp_subprocess_opts x = {.env_add = add, .env_remove = rm};
    CHECK_STR(sh_out("echo $MPT_NEW ${MPT_GONE-unset} $MPT_KEEP", &x), "42 unset over\n");
    CHECK_STR(getenv("MPT_GONE"), "here"); /* ours is untouched */
    unsetenv("MPT_GONE");
    unsetenv("MPT_KEEP");

    /* The PATH search uses the child's PATH. */
    char *nopath[] = {"PATH=/nonexistent", NULL};
    mp_subprocess_opts np = {.env_add = nopath};
    CHECK_ERR(mp_run(ARGV("true"), &np, NULL), -ENOENT);
}

static void test_close_fds_pass_fds(void)
{
    int p[2];
    CHECK(pipe(p) == 0); /* inheritable on purpose */
    char cmd[160];
    snprintf(cmd, sizeof cmd, "{ echo hi >&%d; } 2>/dev/null && echo open || echo closed", p[1]);
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE};
    mp_run_result r;
    CHECK_OK(mp_run(ARGV("bash", "-c", cmd), &o, &r));
    CHECK_STR(r.out, "closed\n");
    mp_run_result_free(&r);
    o.inherit_fds = true;
    CHECK_OK(mp_run(ARGV("bash", "-c", cmd), &o, &r));
    CHECK_STR(r.out, "open\n");
    mp_run_result_free(&r);
    int keep = fcntl(p[1], F_DUPFD_CLOEXEC, 20);
    snprintf(cmd, sizeof cmd, "{ echo hi >&%d; } 2>/dev/null && echo open || echo closed", keep);
    mp_subprocess_opts pf = {.out = MP_STDIO_PIPE, .pass_fds = &keep, .npass = 1};
    CHECK_OK(mp_run(ARGV("bash", "-c", cmd), &pf, &r));
    CHECK_STR(r.out, "open\n");
    mp_run_result_free(&r);
    close(keep);
    close(p[1]);
    CHECK_STR(read_fd(p[0]), "hi\nhi\n");
    close(p[0]);
}

static void test_session_and_group(void)
{
    const char *py = "import os; p=os.getpid(); print(os.getsid(0)==p, os.getpgid(0)==p)";
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE};
    mp_run_result r;
    CHECK_OK(mp_run(ARGV("python3", "-c", py), &o, &r));
    CHECK_STR(r.out, "False False\n");
    mp_run_result_free(&r);
    o.new_session = true;
    CHECK_OK(mp_run(ARGV("python3", "-c", py), &o, &r));
    CHECK_STR(r.out, "True True\n");
    mp_run_result_free(&r);
    o.new_session = false;
    o.new_pgroup = true;
    CHECK_OK(mp_run(ARGV("python3", "-c", py), &o, &r));
    CHECK_STR(r.out, "False True\n");
    mp_run_result_free(&r);
    mp_subprocess_opts g = {.out = MP_STDIO_PIPE, .kill_group = true};
    CHECK_OK(mp_run(ARGV("python3", "-c", py), &g, &r));
    CHECK_STR(r.out, "False True\n");
    mp_run_result_free(&r);
}

/* Ignored signals and the mask are restored by default; keep_signals keeps them. */
static void test_restore_signals(void)
{
    signal(SIGPIPE, SIG_IGN);
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE};
    mp_run_result r;
    CHECK_OK(mp_run(ARGV("cat", "/proc/self/status"), &o, &r));
    CHECK_CONTAINS(r.out, "SigIgn:\t0000000000000000\n");
    mp_run_result_free(&r);
    o.keep_signals = true;
    CHECK_OK(mp_run(ARGV("cat", "/proc/self/status"), &o, &r));
    unsigned long long ign = mpt_sigign(); /* SIGPIPE (bit 12) and what the runner ignores */
    CHECK((ign & 0x1000) != 0);
    CHECK_INT(mpt_sigign_in(r.out), ign);
    mp_run_result_free(&r);
    signal(SIGPIPE, SIG_DFL);
}

/* ---- conveniences ------------------------------------------------------------- */

static void test_call_check_call_check_output(void)
{
    int rc = -1;
    CHECK_OK(mp_call(ARGV("false"), NULL, &rc));
    CHECK_INT(rc, 1);
    CHECK_OK(mp_check_call(ARGV("true"), NULL));
    CHECK_ERR(mp_check_call(ARGV("false"), NULL), MP_ECHILDFAIL);
    CHECK_CONTAINS(mp_last_error(), "command 'false' returned non-zero exit status 1");

    char *out = NULL;
    size_t len = 0;
    CHECK_OK(mp_check_output(ARGV("echo", "hi"), NULL, &out, &len));
    CHECK_STR(out, "hi\n");
    CHECK_INT(len, 3);
    mp_free(out);

    /* The seed's example: stderr merged, `exit 0` so no error. */
    mp_subprocess_opts m = {.err = MP_STDIO_STDOUT};
    CHECK_OK(mp_check_output_sh("ls non_existent_file; exit 0", &m, &out, NULL));
    CHECK_CONTAINS(out, "non_existent_file");
    CHECK_CONTAINS(out, "No such file or directory");
    mp_free(out);

    CHECK_ERR(mp_check_output_sh("echo before; exit 2", NULL, &out, &len), MP_ECHILDFAIL);
    CHECK_STR(out, "before\n");
    mp_free(out);
    CHECK_ERR(mp_check_output(ARGV("nosuchprog"), NULL, &out, NULL), -ENOENT);
    CHECK(out == NULL);
}

/* ---- Popen ------------------------------------------------------------------------ */

static void test_popen_poll_wait_signals(void)
{
    mp_popen *p;
    CHECK_NEW(p, mp_popen_start(ARGV("sleep", "10"), NULL));
    CHECK(mp_popen_pid(p) > 0);
    CHECK(mp_popen_pidfd(p) >= 0);
    CHECK_INT(mp_popen_fd(p, 1), -1);
    int rc = 12345;
    CHECK_INT(mp_popen_poll(p, &rc), 0);
    CHECK_INT(rc, 12345);
    CHECK_ERR(mp_popen_wait(p, 0.1, &rc), MP_ETIMEOUT);
    CHECK_OK(mp_popen_terminate(p));
    CHECK_OK(mp_popen_wait(p, 10, &rc));
    CHECK_INT(rc, -15);
    CHECK_INT(mp_popen_poll(p, &rc), 1);
    CHECK_OK(mp_popen_kill(p)); /* reaped: a no-op, never a recycled pid */
    mp_popen_free(p);

    CHECK_NEW(p, mp_popen_start(ARGV("sleep", "10"), NULL));
    CHECK_OK(mp_popen_kill(p));
    CHECK_OK(mp_popen_wait(p, -1, &rc));
    CHECK_INT(rc, -9);
    mp_popen_free(p);

    CHECK_NEW(p, mp_popen_start_sh("exit 5", NULL));
    CHECK_OK(mp_popen_wait(p, 10, &rc));
    CHECK_INT(rc, 5);
    mp_popen_free(p);

    /* Freeing a running child kills and reaps it (the leak check sees no zombie). */
    CHECK_NEW(p, mp_popen_start(ARGV("sleep", "10"), NULL));
    mp_popen_free(p);
    mp_popen_free(NULL);
}

static void test_popen_communicate_100mib(void)
{
    size_t n = 100u << 20;
    char *in = malloc(n);
    CHECK(in != NULL);
    for (size_t i = 0; i < n; i++)
        in[i] = (char)(i * 7 + (i >> 13));
    mp_subprocess_opts o = {.in = MP_STDIO_PIPE, .out = MP_STDIO_PIPE};
    mp_popen *p;
    CHECK_NEW(p, mp_popen_start(ARGV("cat"), &o));
    mp_run_result r;
    double t0 = mpt_now();
    CHECK_OK(mp_popen_communicate(p, in, n, 60, &r));
    CHECK(mpt_now() - t0 < 30);
    CHECK_INT(r.returncode, 0);
    CHECK_INT(r.out_len, n);
    CHECK(r.out && memcmp(r.out, in, n) == 0);
    mp_run_result_free(&r);
    mp_popen_free(p);
    free(in);
}

/* After MP_ETIMEOUT nothing is lost: output read so far and the input offset. */
static void test_popen_communicate_again_after_timeout(void)
{
    mp_subprocess_opts o = capture();
    mp_popen *p;
    CHECK_NEW(p, mp_popen_start_sh("echo first; sleep 0.6; echo second", &o));
    CHECK_ERR(mp_popen_communicate(p, NULL, 0, 0.2, NULL), MP_ETIMEOUT);
    mp_run_result r;
    CHECK_OK(mp_popen_communicate(p, NULL, 0, 10, &r));
    CHECK_STR(r.out, "first\nsecond\n");
    CHECK_INT(r.returncode, 0);
    mp_run_result_free(&r);
    mp_popen_free(p);

    size_t n = 3u << 20;
    char *in = malloc(n);
    for (size_t i = 0; i < n; i++)
        in[i] = (char)('a' + i % 26);
    mp_subprocess_opts c = {.in = MP_STDIO_PIPE, .out = MP_STDIO_PIPE};
    CHECK_NEW(p, mp_popen_start_sh("head -c 1000; sleep 0.5; cat", &c));
    CHECK_ERR(mp_popen_communicate(p, in, n, 0.2, NULL), MP_ETIMEOUT);
    CHECK_OK(mp_popen_communicate(p, NULL, 0, 20, &r));
    CHECK_INT(r.out_len, n);
    CHECK(r.out && memcmp(r.out, in, n) == 0);
    mp_run_result_free(&r);
    mp_popen_free(p);
    free(in);

    CHECK_NEW(p, mp_popen_start(ARGV("true"), NULL));
    CHECK_ERR(mp_popen_communicate(p, "x", 1, 1, NULL), MP_EINVAL);
    mp_popen_free(p);
}

static bool pid_gone(pid_t pid, int tries)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    for (int i = 0; i < tries; i++) {
        int fd = open(path, O_RDONLY);
        if (fd < 0)
            return true;
        ssize_t n = read(fd, buf, sizeof buf - 1);
        close(fd);
        buf[n > 0 ? n : 0] = 0;
        char *rp = strrchr(buf, ')');
        if (rp && (rp[2] == 'Z' || rp[2] == 'X'))
            return true; /* a zombie of init: dead */
        usleep(10000);
    }
    return false;
}

/* bpo-37424: a grandchild keeps the pipes open. The timeout still returns on time;
 * with kill_group the grandchild dies with its parent. */
static void test_grandchild_holds_pipe(void)
{
    mp_subprocess_opts o = capture();
    o.time_limit = 0.5;
    mp_run_result r;
    double t0 = mpt_now();
    CHECK_ERR(mp_run_sh("sleep 30 & echo $!; sleep 30", &o, &r), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 < 5);
    pid_t grandchild = r.out ? (pid_t)atoi(r.out) : 0;
    CHECK(grandchild > 0);
    CHECK(grandchild > 0 && !pid_gone(grandchild, 1)); /* still alive: we did not wait for it */
    if (grandchild > 0)
        kill(grandchild, SIGKILL);
    mp_run_result_free(&r);

    o.kill_group = true;
    t0 = mpt_now();
    CHECK_ERR(mp_run_sh("sleep 30 & echo $!; sleep 30", &o, &r), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 < 5);
    grandchild = r.out ? (pid_t)atoi(r.out) : 0;
    CHECK(grandchild > 0);
    CHECK(grandchild > 0 && pid_gone(grandchild, 300));
    mp_run_result_free(&r);

    /* Popen: communicate times out, kill the group, communicate again finishes. */
    mp_popen *p;
    mp_subprocess_opts g = capture();
    g.kill_group = true;
    CHECK_NEW(p, mp_popen_start_sh("sleep 30 & echo started; sleep 30", &g));
    CHECK_ERR(mp_popen_communicate(p, NULL, 0, 0.3, NULL), MP_ETIMEOUT);
    CHECK_OK(mp_popen_kill(p));
    t0 = mpt_now();
    CHECK_OK(mp_popen_communicate(p, NULL, 0, 10, &r));
    CHECK(mpt_now() - t0 < 5);
    CHECK_STR(r.out, "started\n");
    CHECK_INT(r.returncode, -9);
    mp_run_result_free(&r);
    mp_popen_free(p);
}

static const char *echo_helper(void)
{
    static char path[512];
    const char *dir = getenv("MP_TEST_BINDIR");
    snprintf(path, sizeof path, "%s/helper_sub_echo", dir ? dir : ".");
    return path;
}

static void test_interactive_lines(void)
{
    mp_subprocess_opts o = {.in = MP_STDIO_PIPE, .out = MP_STDIO_PIPE, .err = MP_STDIO_PIPE};
    mp_popen *p;
    CHECK_NEW(p, mp_popen_start(ARGV(echo_helper()), &o));
    if (!p)
        return;
    const char *line;
    size_t len;
    char want[64];
    for (int i = 0; i < 200; i++) {
        char q[32];
        snprintf(q, sizeof q, "question %d", i);
        CHECK_OK(mp_popen_writeline(p, q));
        CHECK_OK(mp_popen_readline(p, &line, &len, 10));
        snprintf(want, sizeof want, "ok: question %d\n", i);
        CHECK_STR(line, want);
        CHECK_INT(len, strlen(want));
    }
    CHECK_ERR(mp_popen_readline(p, &line, &len, 0.1), MP_ETIMEOUT);
    CHECK_OK(mp_popen_writeline(p, "stderr to the side\n"));
    CHECK_OK(mp_popen_write(p, "a\nb\nquit\n", 9));
    CHECK_OK(mp_popen_readline(p, &line, NULL, 10));
    CHECK_STR(line, "ok: a\n");
    CHECK_OK(mp_popen_readline(p, &line, NULL, 10));
    CHECK_STR(line, "ok: b\n");
    CHECK_ERR(mp_popen_readline(p, &line, NULL, 10), MP_EEOF);
    int rc = -1;
    CHECK_OK(mp_popen_wait(p, 10, &rc));
    CHECK_INT(rc, 0);
    /* The child is gone: writing is -EPIPE, not a SIGPIPE that kills us. */
    CHECK_ERR(mp_popen_write(p, "late\n", 5), -EPIPE);
    mp_run_result r;
    CHECK_OK(mp_popen_communicate(p, NULL, 0, 10, &r));
    CHECK_STR(r.err, "to the side\n");
    CHECK_STR(r.out, "");
    mp_run_result_free(&r);
    mp_popen_free(p);

    /* A last line without a newline; readline on a non-pipe stdout. */
    CHECK_NEW(p, mp_popen_start_sh("printf 'x\\ny'", &o));
    CHECK_OK(mp_popen_readline(p, &line, &len, 10));
    CHECK_STR(line, "x\n");
    CHECK_OK(mp_popen_readline(p, &line, &len, 10));
    CHECK_STR(line, "y");
    CHECK_ERR(mp_popen_readline(p, &line, &len, 10), MP_EEOF);
    CHECK_OK(mp_popen_close_fd(p, 0));
    CHECK_ERR(mp_popen_write(p, "x", 1), MP_ECLOSED);
    mp_popen_free(p);
    CHECK_NEW(p, mp_popen_start(ARGV("true"), NULL));
    CHECK_ERR(mp_popen_readline(p, &line, &len, 1), MP_EINVAL);
    CHECK_ERR(mp_popen_write(p, "x", 1), MP_EINVAL);
    mp_popen_free(p);
}

/* The pipe fds themselves, Python style: p1.stdout feeds p2. */
static void test_popen_fds_chain(void)
{
    mp_subprocess_opts o1 = {.out = MP_STDIO_PIPE};
    mp_popen *p1, *p2;
    CHECK_NEW(p1, mp_popen_start(ARGV("printf", "b\\na\\nc\\n"), &o1));
    mp_subprocess_opts o2 = {.in = MP_STDIO_FD(mp_popen_fd(p1, 1)), .out = MP_STDIO_PIPE};
    CHECK_NEW(p2, mp_popen_start(ARGV("sort"), &o2));
    CHECK_OK(mp_popen_close_fd(p1, 1));
    mp_run_result r;
    CHECK_OK(mp_popen_communicate(p2, NULL, 0, 10, &r));
    CHECK_STR(r.out, "a\nb\nc\n");
    mp_run_result_free(&r);
    int rc;
    CHECK_OK(mp_popen_wait(p1, 10, &rc));
    CHECK_INT(rc, 0);
    mp_popen_free(p1);
    mp_popen_free(p2);
}

/* ---- pipelines ------------------------------------------------------------------ */

static void test_pipeline(void)
{
    const char *const *cmds[] = {ARGV("printf", "a\\nb\\n"), ARGV("sort", "-r"), ARGV("wc", "-l")};
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE};
    mp_run_result r;
    int rcs[3] = {-1, -1, -1};
    CHECK_OK(mp_pipeline(cmds, 3, &o, &r, rcs));
    CHECK_STR(r.out, "2\n");
    CHECK_INT(r.returncode, 0);
    CHECK(rcs[0] == 0 && rcs[1] == 0 && rcs[2] == 0);
    mp_run_result_free(&r);

    const char *const *sorted[] = {ARGV("sort", "-r"), ARGV("head", "-n", "1")};
    mp_subprocess_opts in = {.out = MP_STDIO_PIPE, .input = "x\nz\ny\n", .input_len = 6};
    CHECK_OK(mp_pipeline(sorted, 2, &in, &r, NULL));
    CHECK_STR(r.out, "z\n");
    mp_run_result_free(&r);

    /* Every status is reported; check fails like pipefail; stderr of all captured. */
    const char *const *failing[] = {ARGV("sh", "-c", "echo one >&2; echo data"),
                                    ARGV("sh", "-c", "cat >/dev/null; echo two >&2; exit 3"),
                                    ARGV("echo", "end")};
    mp_subprocess_opts c = capture();
    c.check = true;
    CHECK_ERR(mp_pipeline(failing, 3, &c, &r, rcs), MP_ECHILDFAIL);
    CHECK(rcs[0] == 0 && rcs[1] == 3 && rcs[2] == 0);
    CHECK_STR(r.out, "end\n");
    CHECK(r.err && strstr(r.err, "one\n") && strstr(r.err, "two\n"));
    CHECK_CONTAINS(mp_last_error(), "exit status 3");
    mp_run_result_free(&r);

    const char *const *slow[] = {ARGV("sh", "-c", "echo tick; sleep 10"), ARGV("cat")};
    mp_subprocess_opts t = {.out = MP_STDIO_PIPE, .time_limit = 0.4};
    double t0 = mpt_now();
    CHECK_ERR(mp_pipeline(slow, 2, &t, &r, rcs), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 < 5);
    CHECK_STR(r.out, "tick\n");
    CHECK_INT(rcs[0], -9);
    mp_run_result_free(&r);

    const char *const *missing[] = {ARGV("echo", "x"), ARGV("nosuchprog-pipe")};
    CHECK_ERR(mp_pipeline(missing, 2, &o, &r, NULL), -ENOENT);
    CHECK_CONTAINS(mp_last_error(), "nosuchprog-pipe");
    mp_run_result_free(&r);
}

/* ---- robustness ------------------------------------------------------------------ */

static void test_thousand_spawns_leave_nothing(void)
{
    int fds = mpt_count_fds();
    mp_subprocess_opts o = capture();
    int bad = 0;
    for (int i = 0; i < 1000; i++) {
        mp_run_result r;
        int rc = (i % 2) ? mp_run(ARGV("/bin/true"), NULL, &r) : mp_run(ARGV("echo", "x"), &o, &r);
        if (rc != 0 || r.returncode != 0 || (i % 2 == 0 && strcmp(r.out, "x\n") != 0))
            bad++;
        mp_run_result_free(&r);
        if (i % 100 == 0 && mp_run(ARGV("nosuchprog"), NULL, NULL) != -ENOENT)
            bad++;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(mpt_count_fds(), fds);
    CHECK(!mpt_has_zombie());
}

static void *thread_runner(void *arg)
{
    int id = (int)(intptr_t)arg, bad = 0;
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE, .input = "abc", .input_len = 3};
    for (int i = 0; i < 60; i++) {
        char want[64];
        snprintf(want, sizeof want, "abc %d %d\n", id, i);
        char cmd[64];
        snprintf(cmd, sizeof cmd, "cat; echo ' %d %d'", id, i);
        mp_run_result r;
        if (mp_run_sh(cmd, &o, &r) != 0 || !r.out || strcmp(r.out, want) != 0)
            bad++;
        mp_run_result_free(&r);
    }
    return (void *)(intptr_t)bad;
}

static void test_four_threads(void)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&t[i], NULL, thread_runner, (void *)(intptr_t)i);
    for (int i = 0; i < 4; i++) {
        void *bad;
        pthread_join(t[i], &bad);
        CHECK_INT((intptr_t)bad, 0);
    }
}

/* Spawning does not copy the parent: a 1 GiB parent spawns as fast as a small one. */
static void test_big_parent(void)
{
#ifdef __SANITIZE_THREAD__
    printf("     skip: ThreadSanitizer builds spawn with fork (see src/spawn.c)\n");
    return;
#endif
    size_t n = 1u << 30;
    char *big = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (big == MAP_FAILED) {
        printf("skip: cannot map 1 GiB\n");
        return;
    }
    memset(big, 1, n);
    double t0 = mpt_now();
    int bad = 0;
    for (int i = 0; i < 20; i++)
        if (mp_run(ARGV("/bin/true"), NULL, NULL) != 0)
            bad++;
    double per = (mpt_now() - t0) / 20;
    CHECK_INT(bad, 0);
    CHECK(per < 0.1);
    printf("     1 GiB parent: %.2f ms per spawn\n", per * 1e3);
    munmap(big, n);
}

static volatile sig_atomic_t sigchld_seen;
static void on_sigchld(int sig)
{
    (void)sig;
    sigchld_seen++;
}

/* SIGCHLD ignored: the kernel reaps our children itself, so the status is lost.
 * Like Python, the call still completes, output intact, and reports returncode 0. */
static void test_sigchld_ignored_status_lost(void)
{
    struct sigaction ign = {.sa_handler = SIG_IGN}, old;
    sigemptyset(&ign.sa_mask);
    sigaction(SIGCHLD, &ign, &old);
    mp_run_result r;
    mp_subprocess_opts o = capture();
    double t0 = mpt_now();
    CHECK_OK(mp_run_sh("echo x; exit 3", &o, &r));
    CHECK(mpt_now() - t0 < 10);
    CHECK_INT(r.returncode, 0);
    CHECK_STR(r.out, "x\n");
    mp_run_result_free(&r);
    sigaction(SIGCHLD, &old, NULL);
}

/* No SIGCHLD handler of ours: the program's own keeps being called, ours still works. */
static void test_user_sigchld_handler(void)
{
    struct sigaction sa = {.sa_handler = on_sigchld}, old, now;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGCHLD, &sa, &old);
    sigchld_seen = 0;
    mp_run_result r;
    mp_subprocess_opts o = capture();
    CHECK_OK(mp_run_sh("echo x; exit 3", &o, &r));
    CHECK_INT(r.returncode, 3);
    CHECK_STR(r.out, "x\n");
    mp_run_result_free(&r);
    mp_popen *p;
    CHECK_NEW(p, mp_popen_start(ARGV("sleep", "0.2"), NULL));
    int rc = -1;
    CHECK_OK(mp_popen_wait(p, 10, &rc));
    CHECK_INT(rc, 0);
    mp_popen_free(p);
    for (int i = 0; i < 100 && sigchld_seen < 2; i++)
        usleep(10000);
    CHECK(sigchld_seen >= 2);
    sigaction(SIGCHLD, NULL, &now);
    CHECK(now.sa_handler == on_sigchld);
    sigaction(SIGCHLD, &old, NULL);
}

/* ---- the caller's closed fd 0, 1 or 2 ---------------------------------------------- */

/* One line of the report: the call's name, its return code (an error name when the
 * call itself failed) and what was captured, newlines shown as \n. */
static void closed_report(int fd, const char *name, int call_rc, int rc, const char *out,
                          const char *err)
{
    char o[128] = "", e[128] = "";
    for (size_t i = 0, k = 0; out && out[i] && k + 3 < sizeof o; i++)
        k += (size_t)snprintf(o + k, sizeof o - k, out[i] == '\n' ? "\\n" : "%c", out[i]);
    for (size_t i = 0, k = 0; err && err[i] && k + 3 < sizeof e; i++)
        k += (size_t)snprintf(e + k, sizeof e - k, err[i] == '\n' ? "\\n" : "%c", err[i]);
    if (err && strstr(err, "Bad file descriptor"))
        snprintf(e, sizeof e, "EBADF");
    if (call_rc < 0)
        dprintf(fd, "%s %s\n", name, mp_errname(call_rc));
    else
        dprintf(fd, "%s %d '%s' '%s'\n", name, rc, o, e);
}

#define FD_STATES                                                                        \
    "r=''; for i in 0 1 2; do if [ -e /proc/self/fd/$i ]; then r=\"$r$i:open \"; "      \
    "else r=\"$r$i:closed \"; fi; done; "

/* Runs in a child whose fd `which` is closed: run, Popen and a pipeline, as the
 * Python reference script did (see test_closed_std_fds). Every call has a timeout: a
 * library pipe handed to the child as its stdin used to hang `cat` forever. */
static void closed_fd_calls(int rep)
{
    mp_subprocess_opts o = capture();
    o.time_limit = 10;
    mp_run_result r;
    int c = mp_run(ARGV("cat"), &o, &r);
    closed_report(rep, "cat", c, r.returncode, r.out, r.err);
    mp_run_result_free(&r);
    o.input = "in\n";
    o.input_len = 3;
    c = mp_run(ARGV("cat"), &o, &r);
    closed_report(rep, "cat-input", c, r.returncode, r.out, r.err);
    mp_run_result_free(&r);
    o.input = NULL;
    o.input_len = 0;
    c = mp_run_sh("echo out; echo err >&2", &o, &r);
    closed_report(rep, "both", c, r.returncode, r.out, r.err);
    mp_run_result_free(&r);
    mp_subprocess_opts out_only = {.out = MP_STDIO_PIPE, .time_limit = 10};
    c = mp_run_sh(FD_STATES "echo \"$r\"", &out_only, &r);
    closed_report(rep, "fds-out", c, r.returncode, r.out, NULL);
    mp_run_result_free(&r);
    mp_subprocess_opts err_only = {.err = MP_STDIO_PIPE, .time_limit = 10};
    c = mp_run_sh(FD_STATES "echo \"$r\" >&2", &err_only, &r);
    closed_report(rep, "fds-err", c, r.returncode, NULL, r.err);
    mp_run_result_free(&r);
    mp_subprocess_opts po = {.out = MP_STDIO_PIPE, .err = MP_STDIO_DEVNULL};
    mp_popen *p = NULL;
    int rc = -100;
    p = mp_popen_start(ARGV("cat"), &po);
    c = p ? 0 : mp_last_error_code();
    if (c == 0)
        c = mp_popen_communicate(p, NULL, 0, 10, &r);
    if (c == 0)
        c = mp_popen_wait(p, 10, &rc);
    closed_report(rep, "popen-cat", c, rc, r.out, NULL);
    mp_run_result_free(&r);
    mp_popen_free(p);
    const char *const *cmds[] = {ARGV("cat"), ARGV("tr", "a", "b")};
    int rcs[2] = {-100, -100};
    c = mp_pipeline(cmds, 2, &o, &r, rcs);
    dprintf(rep, "pipeline %d %d\n", rcs[0], rcs[1]);
    closed_report(rep, "pipeline-out", c, r.returncode, r.out, NULL);
    mp_run_result_free(&r);
}

/* The report of closed_fd_calls() in a forked child with fd `which` closed (stdin
 * /dev/null otherwise, so `cat` ends). */
static const char *closed_fd_run(int which)
{
    static char buf[4096];
    int p[2];
    if (pipe(p) < 0)
        return "pipe failed";
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        int devnull = open("/dev/null", O_RDONLY);
        dup2(devnull, 0);
        close(devnull);
        close(which);
        closed_fd_calls(p[1]);
        _exit(0);
    }
    close(p[1]);
    snprintf(buf, sizeof buf, "%s", read_fd(p[0]));
    close(p[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK_INT(st, 0);
    return buf;
}

/* A closed fd 0, 1 or 2 in the caller: the library's own pipes used to take those
 * numbers, so the child got them as its standard streams. Expected: what Python 3.11
 * gives for the same calls (subprocess.run, Popen, a Popen chain) - the child sees
 * the caller's closed fd closed, plus exactly what was asked for. */
static void test_closed_std_fds(void)
{
    CHECK_STR(closed_fd_run(0), "cat 1 '' 'EBADF'\n"
                                "cat-input 0 'in\\n' ''\n"
                                "both 0 'out\\n' 'err\\n'\n"
                                "fds-out 0 '0:closed 1:open 2:open \\n' ''\n"
                                "fds-err 0 '' '0:closed 1:open 2:open \\n'\n"
                                "popen-cat 1 '' ''\n"
                                "pipeline 1 0\n"
                                "pipeline-out 0 '' ''\n");
    CHECK_STR(closed_fd_run(1), "cat 0 '' ''\n"
                                "cat-input 0 'in\\n' ''\n"
                                "both 0 'out\\n' 'err\\n'\n"
                                "fds-out 0 '0:open 1:open 2:open \\n' ''\n"
                                "fds-err 0 '' '0:open 1:closed 2:open \\n'\n"
                                "popen-cat 0 '' ''\n"
                                "pipeline 0 0\n"
                                "pipeline-out 0 '' ''\n");
    CHECK_STR(closed_fd_run(2), "cat 0 '' ''\n"
                                "cat-input 0 'in\\n' ''\n"
                                "both 0 'out\\n' 'err\\n'\n"
                                "fds-out 0 '0:open 1:open 2:closed \\n' ''\n"
                                "fds-err 0 '' '0:open 1:open 2:open \\n'\n"
                                "popen-cat 0 '' ''\n"
                                "pipeline 0 0\n"
                                "pipeline-out 0 '' ''\n");
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_run_capture);
    RUN_IF(argc, argv, test_stderr_merged);
    RUN_IF(argc, argv, test_output_to_file_fd_devnull);
    RUN_IF(argc, argv, test_inherit_streams);
    RUN_IF(argc, argv, test_stdin_sources);
    RUN_IF(argc, argv, test_input_child_stops_reading);
    RUN_IF(argc, argv, test_timeout_keeps_partial_output);
    RUN_IF(argc, argv, test_check_failure_carries_output);
    RUN_IF(argc, argv, test_killed_by_signal);
    RUN_IF(argc, argv, test_missing_and_not_executable);
    RUN_IF(argc, argv, test_bad_arguments);
    RUN_IF(argc, argv, test_cwd_umask_executable);
    RUN_IF(argc, argv, test_env_replace_extend_remove);
    RUN_IF(argc, argv, test_close_fds_pass_fds);
    RUN_IF(argc, argv, test_session_and_group);
    RUN_IF(argc, argv, test_restore_signals);
    RUN_IF(argc, argv, test_call_check_call_check_output);
    RUN_IF(argc, argv, test_popen_poll_wait_signals);
    RUN_IF(argc, argv, test_popen_communicate_100mib);
    RUN_IF(argc, argv, test_popen_communicate_again_after_timeout);
    RUN_IF(argc, argv, test_grandchild_holds_pipe);
    RUN_IF(argc, argv, test_interactive_lines);
    RUN_IF(argc, argv, test_popen_fds_chain);
    RUN_IF(argc, argv, test_pipeline);
    RUN_IF(argc, argv, test_thousand_spawns_leave_nothing);
    RUN_IF(argc, argv, test_four_threads);
    RUN_IF(argc, argv, test_big_parent);
    RUN_IF(argc, argv, test_user_sigchld_handler);
    RUN_IF(argc, argv, test_sigchld_ignored_status_lost);
    RUN_IF(argc, argv, test_closed_std_fds);
    return mpt_done();
}
