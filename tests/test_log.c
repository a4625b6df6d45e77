/* The logger: line format, level filtering, fd redirection, whole lines from many
 * processes writing to one pipe. */
#include "test_util.h"
#include "multiproc/log.h"
#include "internal/tracker.h"

#include <fcntl.h>

/* Read everything available on a non-blocking pipe into buf. */
static size_t drain(int fd, char *buf, size_t size)
{
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, size - 1 - n);
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    buf[n] = '\0';
    return n;
}

static int p[2];
static char out[65536];

static void open_sink(void)
{
    if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
        perror("pipe2");
    mp_log_set_fd(p[1]);
}

static void close_sink(void)
{
    mp_log_set_fd(-1);
    close(p[0]);
    close(p[1]);
}

static void test_defaults_print_nothing(void)
{
    CHECK_INT(mp_log_get_fd(), -1);
    CHECK_INT(mp_log_get_level(), MP_LOG_WARNING);
    CHECK(!mp_log_enabled(MP_LOG_CRITICAL)); /* no destination yet */
    mp_log(MP_LOG_CRITICAL, "nobody sees this");
}

static void test_line_format_and_levels(void)
{
    open_sink();
    mp_log_set_level(MP_LOG_INFO);
    CHECK(mp_log_enabled(MP_LOG_INFO));
    CHECK(!mp_log_enabled(MP_LOG_DEBUG));
    mp_log(MP_LOG_INFO, "child process calling self.run()");
    mp_log(MP_LOG_DEBUG, "dropped");
    mp_log(MP_LOG_SUBDEBUG, "dropped too");
    mp_log(MP_LOG_WARNING, "doomed");
    mp_log(MP_LOG_SUBWARNING, "sub %d", 25);
    mp_log(MP_LOG_INFO, "process exiting with exitcode %d", 0);
    mp_log(33, "odd level");
    drain(p[0], out, sizeof out);
    CHECK_STR(out, "[INFO/MainProcess] child process calling self.run()\n"
                   "[WARNING/MainProcess] doomed\n"
                   "[SUBWARNING/MainProcess] sub 25\n"
                   "[INFO/MainProcess] process exiting with exitcode 0\n"
                   "[Level 33/MainProcess] odd level\n");

    mp_log_set_level(MP_LOG_SUBDEBUG);
    mp_log(MP_LOG_SUBDEBUG, "now shown");
    mp_log_set_level(MP_LOG_ERROR);
    mp_log(MP_LOG_WARNING, "hidden");
    mp_log(MP_LOG_CRITICAL, "shown");
    drain(p[0], out, sizeof out);
    CHECK_STR(out, "[SUBDEBUG/MainProcess] now shown\n[CRITICAL/MainProcess] shown\n");
    CHECK_STR(mp_log_level_name(MP_LOG_DEBUG), "DEBUG");
    CHECK(mp_log_level_name(7) == NULL);
    mp_log_set_level(MP_LOG_WARNING);
    close_sink();
}

static void test_keeps_errno_and_long_lines(void)
{
    open_sink();
    static char big[3001];
    memset(big, 'x', 3000);
    big[3000] = '\0';
    errno = EBADF;
    mp_log(MP_LOG_ERROR, "%s", big);
    CHECK_INT(errno, EBADF);
    size_t n = drain(p[0], out, sizeof out);
    CHECK_INT(n, strlen("[ERROR/MainProcess] ") + 3000 + 1);
    CHECK(strncmp(out, "[ERROR/MainProcess] xxx", 23) == 0 && out[n - 1] == '\n' &&
          out[n - 2] == 'x');
    close_sink();
}

static void test_log_to_stderr(void)
{
    int q[2];
    CHECK_OK(pipe2(q, O_CLOEXEC | O_NONBLOCK));
    int saved = dup(2);
    dup2(q[1], 2);
    mp_log_to_stderr(MP_LOG_DEBUG);
    CHECK_INT(mp_log_get_fd(), 2);
    CHECK_INT(mp_log_get_level(), MP_LOG_DEBUG);
    mp_log(MP_LOG_DEBUG, "running the remaining \"atexit\" finalizers");
    mp_log_to_stderr(MP_LOG_NOTSET); /* Python's log_to_stderr(): level unchanged */
    CHECK_INT(mp_log_get_level(), MP_LOG_DEBUG);
    mp_log(MP_LOG_INFO, "process shutting down");
    mp_log_set_fd(-1);
    mp_log(MP_LOG_INFO, "off again");
    dup2(saved, 2);
    close(saved);
    drain(q[0], out, sizeof out);
    CHECK_STR(out, "[DEBUG/MainProcess] running the remaining \"atexit\" finalizers\n"
                   "[INFO/MainProcess] process shutting down\n");
    mp_log_set_level(MP_LOG_WARNING);
    close(q[0]);
    close(q[1]);
}

/* Several processes log long lines to one pipe at once; every line arrives whole. */
static void test_lines_from_processes_do_not_mix(void)
{
    enum { NPROC = 4, NLINES = 400 };
    int q[2];
    CHECK_OK(pipe2(q, O_CLOEXEC));
    mp_log_set_fd(q[1]);
    mp_log_set_level(MP_LOG_INFO);
    pid_t pids[NPROC];
    for (int c = 0; c < NPROC; c++) {
        pids[c] = fork();
        if (pids[c] == 0) {
            char pad[600];
            memset(pad, 'a' + c, sizeof pad - 1);
            pad[sizeof pad - 1] = '\0';
            for (int i = 0; i < NLINES; i++)
                mp_log(MP_LOG_INFO, "child %d line %d %s end", c, i, pad);
            _exit(0);
        }
    }
    close(q[1]);
    mp_log_set_fd(-1);
    mp_log_set_level(MP_LOG_WARNING);
    FILE *f = fdopen(q[0], "r");
    char line[2048];
    int good = 0, bad = 0, count[NPROC] = {0};
    while (f && fgets(line, sizeof line, f)) {
        int c = -1, i = -1, end = 0;
        char pad[700];
        if (sscanf(line, "[INFO/MainProcess] child %d line %d %699s end\n%n", &c, &i, pad,
                   &end) == 3 && c >= 0 && c < NPROC && strlen(pad) == 599 &&
            strspn(pad, (char[]){(char)('a' + c), 0}) == 599 && i == count[c]) {
            good++;
            count[c]++;
        } else {
            bad++;
        }
    }
    if (f)
        fclose(f);
    for (int c = 0; c < NPROC; c++) {
        int st;
        waitpid(pids[c], &st, 0);
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    CHECK_INT(bad, 0);
    CHECK_INT(good, NPROC * NLINES);
}

static int log_target(mp_value *args)
{
    mp_log(MP_LOG_INFO, "working on %lld", (long long)mp_value_get_int(args));
    return 0;
}

/* A child started through mp_process logs under its Process name, with the lines
 * of the seed, under fork and spawn (spawn inherits the logger through the process
 * module: log_to_stderr goes to the child's stderr, here a pipe). */
static void test_process_lines(void)
{
    static const char *methods[] = {"fork", "spawn"};
    int q[2];
    CHECK_OK(pipe2(q, O_CLOEXEC | O_NONBLOCK));
    int saved = dup(2);
    for (size_t m = 0; m < 2; m++) {
        dup2(q[1], 2);
        mp_log_to_stderr(MP_LOG_INFO);
        mp_value *args = mp_value_int(7);
        mp_process_opts o = {.target = log_target, .args = args, .ctx = mp_get_context(methods[m])};
        mp_process *p = mp_process_new(&o);
        CHECK(p != NULL);
        CHECK_OK(mp_process_start(p));
        CHECK_OK(mp_process_join(p, 30));
        dup2(saved, 2);
        mp_log_set_fd(-1);
        mp_log_set_level(MP_LOG_WARNING);
        char want[512];
        const char *name = mp_process_name(p);
        snprintf(want, sizeof want,
                 "[INFO/%s] child process calling self.run()\n"
                 "[INFO/%s] working on 7\n"
                 "[INFO/%s] process shutting down\n",
                 name, name, name);
        drain(q[0], out, sizeof out);
        CHECK(strncmp(out, want, strlen(want)) == 0);
        char last[128];
        snprintf(last, sizeof last, "[INFO/%s] process exiting with exitcode 0\n", name);
        CHECK_CONTAINS(out, last);
        if (strncmp(out, want, strlen(want)) != 0)
            fprintf(stderr, "%s got:\n%s", methods[m], out);
        mp_process_free(p);
        mp_value_free(args);
    }
    close(saved);
    close(q[0]);
    close(q[1]);
}

int main(int argc, char **argv)
{
    /* A spawn start opens the resource tracker's pipe for the rest of the program
     * (as Python's does): open it before the fd leak checks start counting. */
    mp__tracker_ensure_running();
    RUN_IF(argc, argv, test_defaults_print_nothing);
    RUN_IF(argc, argv, test_line_format_and_levels);
    RUN_IF(argc, argv, test_keeps_errno_and_long_lines);
    RUN_IF(argc, argv, test_log_to_stderr);
    RUN_IF(argc, argv, test_lines_from_processes_do_not_mix);
    RUN_IF(argc, argv, test_process_lines);
    return mpt_done();
}
