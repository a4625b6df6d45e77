/* Process information: this process, a child we start (ppid, state, cmdline, cwd,
 * environ, zombie), a name with parentheses, a gone pid, another user's process. */
#include "test_util.h"
#include "multiproc/info.h"

#include <sys/prctl.h>

static char *self_argv0;

static void test_self(void)
{
    mp_proc_info in;
    CHECK_OK(mp_proc_info_get(0, &in));
    CHECK_INT(in.pid, getpid());
    CHECK_INT(in.ppid, getppid());
    CHECK_INT(in.pgid, getpgrp());
    CHECK_INT(in.uid, getuid());
    CHECK_INT(in.state, 'R');
    CHECK_STR(in.state_name, "running");
    CHECK_STR(in.name, "test_info");
    CHECK_INT(in.num_threads, 1);
    double now = (double)time(NULL);
    CHECK(in.start_time > now - 3600 && in.start_time <= now + 2);
    CHECK(in.user_time >= 0 && in.system_time >= 0 && in.user_time < 3600);
    CHECK(in.rss > 100 * 1024 && in.vms >= in.rss);
    char cwd[4096];
    CHECK(getcwd(cwd, sizeof cwd) != NULL);
    CHECK_STR(in.cwd, cwd);
    CHECK_INT(in.cwd_error, 0);
    CHECK(in.exe && strstr(in.exe, "test_info") != NULL);
    CHECK(in.cmdline_len >= 1 && in.cmdline[in.cmdline_len] == NULL);
    if (in.cmdline_len >= 1)
        CHECK_STR(in.cmdline[0], self_argv0);
    CHECK_INT(in.environ_error, 0);
    if (getenv("PATH"))
        CHECK_STR(mp_proc_env_get(in.environ, "PATH"), getenv("PATH"));
    CHECK(mp_proc_env_get(in.environ, "MP_NO_SUCH_VARIABLE") == NULL);
    mp_proc_info_free(&in);
    CHECK(in.name == NULL);
    mp_proc_info_free(NULL);
}

/* Wait until pid's state letter is `want` (up to ~5 s). */
static char wait_state(pid_t pid, char want)
{
    char st = '?';
    for (int i = 0; i < 500; i++) {
        mp_proc_info in;
        if (mp_proc_info_get(pid, &in) == 0) {
            st = in.state;
            bool execd = in.cmdline_len > 0 && strcmp(in.cmdline[0], "sleep") == 0;
            mp_proc_info_free(&in);
            if (st == want && (want == 'Z' || execd))
                return st;
        }
        usleep(10000);
    }
    return st;
}

static void test_child(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        char *argv[] = {"sleep", "30", NULL};
        char *envp[] = {"MP_INFO_TEST=42", "OTHER=a b c", NULL};
        if (chdir("/tmp") == 0)
            execve("/bin/sleep", argv, envp);
        _exit(127);
    }
    CHECK_INT(wait_state(pid, 'S'), 'S');
    mp_proc_info in;
    CHECK_OK(mp_proc_info_get(pid, &in));
    CHECK_INT(in.pid, pid);
    CHECK_INT(in.ppid, getpid());
    CHECK_STR(in.state_name, "sleeping");
    CHECK_STR(in.name, "sleep");
    CHECK_INT(in.cmdline_len, 2);
    if (in.cmdline_len == 2) {
        CHECK_STR(in.cmdline[0], "sleep");
        CHECK_STR(in.cmdline[1], "30");
    }
    CHECK_STR(in.cwd, "/tmp");
    CHECK(in.exe && strstr(in.exe, "sleep"));
    CHECK_INT(in.environ_len, 2);
    CHECK_STR(mp_proc_env_get(in.environ, "MP_INFO_TEST"), "42");
    CHECK_STR(mp_proc_env_get(in.environ, "OTHER"), "a b c");
    CHECK(in.start_time > (double)time(NULL) - 60);
    mp_proc_info_free(&in);

    char *cwd = NULL;
    CHECK_OK(mp_proc_cwd(pid, &cwd));
    CHECK_STR(cwd, "/tmp");
    mp_free(cwd);

    /* killed but not reaped: a zombie keeps its stat but loses cwd/exe/environ */
    kill(pid, SIGKILL);
    CHECK_INT(wait_state(pid, 'Z'), 'Z');
    CHECK_OK(mp_proc_info_get(pid, &in));
    CHECK_STR(in.state_name, "zombie");
    CHECK_INT(in.cwd_error, -ESRCH);
    CHECK(in.cwd == NULL);
    CHECK_INT(in.cmdline_len, 0);
    mp_proc_info_free(&in);
    CHECK(mp_pid_exists(pid));

    waitpid(pid, NULL, 0);
    CHECK(!mp_pid_exists(pid));
    CHECK_ERR(mp_proc_info_get(pid, &in), -ESRCH);
    char want[64];
    snprintf(want, sizeof want, "pid %d: no such process", (int)pid);
    CHECK_CONTAINS(mp_last_error(), want);
    CHECK(in.name == NULL && in.cmdline == NULL); /* nothing to free on failure */
    char **env = NULL;
    CHECK_ERR(mp_proc_environ(pid, &env, NULL), -ESRCH);
    CHECK_ERR(mp_proc_cwd(pid, &cwd), -ESRCH);
    CHECK_ERR(mp_proc_info_get(-5, &in), -ESRCH);
}

/* The command name may hold spaces and parentheses; fields after it still parse. */
static void test_name_with_parentheses(void)
{
    int p[2];
    CHECK_OK(pipe(p));
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_NAME, "a) (b c) 9");
        if (write(p[1], "x", 1) != 1)
            _exit(1);
        pause();
        _exit(0);
    }
    char c;
    CHECK_INT(read(p[0], &c, 1), 1);
    mp_proc_info in;
    CHECK_OK(mp_proc_info_get(pid, &in));
    CHECK_STR(in.name, "a) (b c) 9");
    CHECK_INT(in.ppid, getpid());
    CHECK(in.num_threads >= 1); /* sanitizers may add a thread in a forked child */
    CHECK(in.state == 'S' || in.state == 'R');
    mp_proc_info_free(&in);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    close(p[0]);
    close(p[1]);
}

/* As user nobody, pid 1 (root's) hides its cwd and environment. */
static void test_other_users_process(void)
{
    mp_proc_info one;
    if (getuid() != 0 || mp_proc_info_get(1, &one) < 0 || one.uid != 0) {
        if (getuid() == 0)
            mp_proc_info_free(&one);
        printf("skip: needs root and a root-owned pid 1\n");
        return;
    }
    mp_proc_info_free(&one);
    pid_t pid = fork();
    if (pid == 0) {
        if (setgid(65534) < 0 || setuid(65534) < 0)
            _exit(77);
        char **env = NULL;
        char *cwd = NULL;
        if (mp_proc_environ(1, &env, NULL) != -EACCES)
            _exit(1);
        if (!strstr(mp_last_error(), "pid 1: environ: permission denied"))
            _exit(2);
        if (mp_proc_cwd(1, &cwd) != -EACCES)
            _exit(3);
        mp_proc_info in;
        if (mp_proc_info_get(1, &in) != 0)
            _exit(4);
        int bad = in.environ_error != -EACCES || in.cwd_error != -EACCES || in.cwd ||
                  in.environ || in.ppid != 0 || !in.name;
        mp_proc_info_free(&in);
        _exit(bad ? 5 : 0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st));
    if (WEXITSTATUS(st) == 77)
        printf("skip: cannot become nobody\n");
    else
        CHECK_INT(WEXITSTATUS(st), 0);
}

int main(int argc, char **argv)
{
    self_argv0 = argv[0];
    RUN_IF(argc, argv, test_self);
    RUN_IF(argc, argv, test_child);
    RUN_IF(argc, argv, test_name_with_parentheses);
    RUN_IF(argc, argv, test_other_users_process);
    return mpt_done();
}
