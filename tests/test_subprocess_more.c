/* The rest of Python's subprocess surface: getoutput/getstatusoutput, preexec_fn (and
 * its failure reported in the parent), user/group/extra_groups by name and id,
 * pipesize, and process_group=N joining an existing group. */
#include "test_util.h"
#include "multiproc/subprocess.h"

#include <fcntl.h>
#include <sys/resource.h>

#define ARGV(...) ((const char *const[]){__VA_ARGS__, NULL})

static void test_getstatusoutput(void)
{
    char *out = NULL;
    size_t len = 0;
    int status = -100;
    CHECK_OK(mp_getstatusoutput("echo hello; echo oops >&2; exit 3", &status, &out, &len));
    CHECK_INT(status, 3);
    CHECK_STR(out, "hello\noops"); /* stderr merged, the trailing newline stripped */
    CHECK_INT(len, 10);
    mp_free(out);
    CHECK_OK(mp_getoutput("printf 'a\\n\\n'", &out, &len)); /* only one newline goes */
    CHECK_STR(out, "a\n");
    mp_free(out);
    CHECK_OK(mp_getstatusoutput("kill -9 $$", &status, &out, NULL));
    CHECK_INT(status, -9); /* Python: (-9, '') */
    CHECK_STR(out, "");
    mp_free(out);
    CHECK_OK(mp_getstatusoutput("nosuchcommand-xyz", &status, &out, NULL));
    CHECK_INT(status, 127);
    CHECK_CONTAINS(out, "not found");
    mp_free(out);
    CHECK_ERR(mp_getoutput(NULL, &out, NULL), MP_EINVAL);
}

/* preexec_fn runs in the child before exec: it lowers the child's fd limit and
 * writes to a global of its own copy of memory (the parent's stays 0). */
static int preexec_touched;

static int lower_nofile(void *arg)
{
    preexec_touched = 1;
    struct rlimit rl = {.rlim_cur = (rlim_t)(long)arg, .rlim_max = (rlim_t)(long)arg};
    return setrlimit(RLIMIT_NOFILE, &rl) == 0 ? 0 : -errno;
}

static int refuse(void *arg) { return (int)(long)arg; }

static void test_preexec_fn(void)
{
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE, .preexec_fn = lower_nofile,
                            .preexec_arg = (void *)123L};
    mp_run_result r;
    CHECK_OK(mp_run_sh("ulimit -n", &o, &r));
    CHECK_STR(r.out, "123\n");
    mp_run_result_free(&r);
    CHECK_INT(preexec_touched, 0);
    /* A failure is the start's error, in the parent; no child is left behind. */
    o.preexec_fn = refuse;
    o.preexec_arg = (void *)(long)-EACCES;
    CHECK_ERR(mp_run_sh("echo never", &o, &r), -EACCES);
    CHECK_CONTAINS(mp_last_error(), "preexec_fn failed in the child (returned -13)");
    mp_run_result_free(&r);
    o.preexec_arg = (void *)5L;
    mp_popen *p = NULL;
    CHECK_NULL_ERR(p = mp_popen_start(ARGV("true"), &o), MP_EPROCESS);
    CHECK_CONTAINS(mp_last_error(), "returned 5");
    CHECK(p == NULL);
    CHECK(!mpt_has_zombie());
}

static void test_user_group_extra_groups(void)
{
    if (geteuid() != 0) {
        printf("     skipped: changing users needs root\n");
        return;
    }
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE, .user = "nobody", .group = "nogroup",
                            .extra_groups = (const char *const[]){"12345", "daemon", NULL}};
    mp_run_result r;
    CHECK_OK(mp_run_sh("id -u; id -g; id -G", &o, &r));
    CHECK_STR(r.out, "65534\n65534\n65534 1 12345\n");
    mp_run_result_free(&r);
    /* By id; an empty extra_groups list drops every supplementary group. */
    mp_subprocess_opts n = {.out = MP_STDIO_PIPE, .user = "4321", .group = "4322",
                            .extra_groups = (const char *const[]){NULL}};
    CHECK_OK(mp_run_sh("id -u; id -g; id -G", &n, &r));
    CHECK_STR(r.out, "4321\n4322\n4322\n");
    mp_run_result_free(&r);
    /* Unknown names fail in the parent, naming what was wrong. */
    mp_subprocess_opts bad = {.user = "no-such-user-xyz"};
    CHECK_ERR(mp_run(ARGV("true"), &bad, &r), MP_ENOTFOUND);
    CHECK_CONTAINS(mp_last_error(), "no user named 'no-such-user-xyz'");
    mp_run_result_free(&r);
    mp_subprocess_opts badg = {.extra_groups = (const char *const[]){"daemon", "no-such-grp", NULL}};
    CHECK_ERR(mp_run(ARGV("true"), &badg, &r), MP_ENOTFOUND);
    CHECK_CONTAINS(mp_last_error(), "extra_groups: no group named 'no-such-grp'");
    mp_run_result_free(&r);
}

/* Without the privilege, the change fails in the child and is reported by the parent:
 * a forked copy of the test drops to nobody, then asks for root. */
static void test_user_refused_reported(void)
{
    if (geteuid() != 0) {
        printf("     skipped: needs root to drop privileges first\n");
        return;
    }
    pid_t pid = fork();
    if (pid == 0) {
        if (setresuid(65534, 65534, 65534) < 0)
            _exit(2);
        mp_subprocess_opts o = {.user = "0"};
        mp_run_result r;
        int rc = mp_run(ARGV("true"), &o, &r);
        _exit(rc == -EPERM && strstr(mp_last_error(), "user: setreuid(0) in the child") ? 0 : 3);
    }
    int st = 0;
    CHECK_INT(waitpid(pid, &st, 0), pid);
    CHECK(WIFEXITED(st));
    CHECK_INT(WEXITSTATUS(st), 0);
}

static void test_pipesize(void)
{
    mp_subprocess_opts o = {.in = MP_STDIO_PIPE, .out = MP_STDIO_PIPE, .pipesize = 256 * 1024};
    mp_popen *p = NULL;
    CHECK_NEW(p, mp_popen_start(ARGV("cat"), &o));
    CHECK_INT(fcntl(mp_popen_fd(p, 0), F_GETPIPE_SZ), 256 * 1024);
    CHECK_INT(fcntl(mp_popen_fd(p, 1), F_GETPIPE_SZ), 256 * 1024);
    mp_run_result r;
    CHECK_OK(mp_popen_communicate(p, "x", 1, 10, &r));
    CHECK_STR(r.out, "x");
    mp_run_result_free(&r);
    mp_popen_free(p);
    o.pipesize = 4096;
    CHECK_NEW(p, mp_popen_start(ARGV("cat"), &o));
    CHECK_INT(fcntl(mp_popen_fd(p, 1), F_GETPIPE_SZ), 4096);
    mp_popen_free(p);
}

static void test_process_group_join(void)
{
    mp_subprocess_opts lead = {.new_pgroup = true};
    mp_popen *a = NULL, *b = NULL;
    CHECK_NEW(a, mp_popen_start(ARGV("sleep", "30"), &lead));
    pid_t pa = mp_popen_pid(a);
    mp_subprocess_opts join = {.process_group = pa};
    CHECK_NEW(b, mp_popen_start(ARGV("sleep", "30"), &join));
    CHECK_INT(getpgid(mp_popen_pid(b)), pa);
    CHECK(getpgid(mp_popen_pid(b)) != getpgrp());
    CHECK_OK(kill(-pa, SIGTERM)); /* one signal reaches both */
    int rc = 0;
    CHECK_OK(mp_popen_wait(a, 10, &rc));
    CHECK_INT(rc, -SIGTERM);
    CHECK_OK(mp_popen_wait(b, 10, &rc));
    CHECK_INT(rc, -SIGTERM);
    mp_popen_free(a);
    mp_popen_free(b);
    /* A group that does not exist (pa is gone): the child's setpgid fails, reported. */
    mp_run_result r;
    CHECK_ERR(mp_run(ARGV("true"), &join, &r), -EPERM);
    CHECK_CONTAINS(mp_last_error(), "process_group: joining group");
    mp_run_result_free(&r);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_getstatusoutput);
    RUN_IF(argc, argv, test_preexec_fn);
    RUN_IF(argc, argv, test_user_group_extra_groups);
    RUN_IF(argc, argv, test_user_refused_reported);
    RUN_IF(argc, argv, test_pipesize);
    RUN_IF(argc, argv, test_process_group_join);
    return mpt_done();
}
