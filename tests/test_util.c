/* multiprocessing.util: Finalize (order, once, by object, at exit), register_after_fork,
 * get_temp_dir, is_exiting. */
#include "test_util.h"
#include "multiproc/process.h"
#include "multiproc/subprocess.h"
#include "multiproc/util.h"

#include <fcntl.h>
#include <sys/stat.h>

static const char *const methods[] = {"fork", "spawn", "forkserver"};
#define FOR_EACH_METHOD(m) for (const char *const *m = methods; m < methods + 3; m++)

static char order[256]; /* what the finalizers ran, in order */

static void note(void *arg)
{
    strncat(order, arg, sizeof order - strlen(order) - 1);
    strncat(order, mp_is_exiting() ? "! " : " ", sizeof order - strlen(order) - 1);
}

static void test_finalize_order_and_once(void)
{
    order[0] = '\0';
    int obj;
    mp_finalizer lo = mp_finalize(NULL, note, "lo", -5);
    mp_finalizer a = mp_finalize(NULL, note, "0a", 0);
    mp_finalizer b = mp_finalize(NULL, note, "0b", 0);
    mp_finalizer hi = mp_finalize(NULL, note, "hi", 10);
    mp_finalizer gc = mp_finalize(&obj, note, "gc", MP_FINALIZE_NO_EXIT);
    mp_finalizer gone = mp_finalize(NULL, note, "cancelled", 3);
    CHECK(lo && a && b && hi && gc && gone);
    CHECK(mp_finalizer_active(hi));
    mp_finalizer_cancel(gone);
    CHECK(!mp_finalizer_active(gone));
    CHECK_INT(mp_run_finalizers(0), 3); /* >= 0: highest first, newest among equals */
    CHECK_STR(order, "hi 0b 0a ");
    CHECK(!mp_finalizer_active(hi) && mp_finalizer_active(lo));
    CHECK_INT(mp_finalize_object(&obj), 1); /* its object is freed */
    CHECK_STR(order, "hi 0b 0a gc ");
    CHECK_INT(mp_finalize_object(&obj), 0); /* once */
    CHECK_INT(mp_finalizer_run(lo), 1);     /* f() */
    CHECK_INT(mp_finalizer_run(lo), 0);
    CHECK_STR(order, "hi 0b 0a gc lo ");
    CHECK_INT(mp_run_finalizers(MP_FINALIZE_ALL), 0);
    CHECK_INT(mp_finalize(NULL, note, "x", MP_FINALIZE_NO_EXIT), 0);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    CHECK(strstr(mp_last_error(), "exitpriority cannot be None") != NULL);
    CHECK_INT(mp_finalize(&obj, NULL, NULL, 0), 0);
}

/* In a child: register finalizers, write what ran at exit to the fd in args. */
static int t_exit_finalizers(mp_value *args)
{
    int64_t fd = mp_value_get_int(mp_value_list_get(args, 0));
    order[0] = '\0';
    mp_finalize(NULL, note, "lo", -5);
    mp_finalize(NULL, note, "hi", 10);
    mp_finalize(&fd, note, "gc", MP_FINALIZE_NO_EXIT); /* never at exit */
    mp_finalize(NULL, note, "zero", 0);
    static int64_t wfd;
    wfd = fd;
    mp_finalize(&wfd, NULL, NULL, 0); /* refused: no function */
    return 0;
}

static void report(void *arg)
{
    int fd = (int)*(int64_t *)arg;
    if (write(fd, order, strlen(order)) < 0)
        _exit(3);
}

static int t_exit_finalizers_report(mp_value *args)
{
    static int64_t fd;
    fd = mp_value_get_int(mp_value_list_get(args, 0));
    t_exit_finalizers(args);
    mp_finalize(NULL, report, &fd, MP_FINALIZE_ALL); /* the lowest: runs last */
    return 0;
}

static void test_finalizers_at_exit_in_child(void)
{
    /* A parent's finalizer is not run by its children (they forget it). */
    mp_finalizer mine = mp_finalize(NULL, note, "parent", 1);
    int p[2];
    CHECK_OK(pipe(p)); /* inherited by the fork child */
    mp_value *a = mp_value_pack("[I]", (int64_t)p[1]);
    mp_process_opts o = {.target = t_exit_finalizers_report, .args = a,
                         .ctx = mp_get_context("fork")};
    mp_process *c = mp_process_new(&o);
    int code = -1;
    CHECK_OK(mp_process_start(c));
    CHECK_OK(mp_process_join(c, 30));
    CHECK_OK(mp_process_exitcode(c, &code));
    CHECK_INT(code, 0);
    close(p[1]);
    char buf[256] = "";
    ssize_t n = read(p[0], buf, sizeof buf - 1);
    buf[n > 0 ? n : 0] = '\0';
    close(p[0]);
    /* >= 0 first (before children are joined), then the rest; is_exiting is true */
    CHECK_STR(buf, "hi! zero! lo! ");
    mp_process_free(c);
    mp_value_free(a);
    CHECK(mp_finalizer_active(mine));
    mp_finalizer_cancel(mine);
}

static int after_fork_calls;
static void after_fork(void *obj) { after_fork_calls += *(int *)obj; }

static int t_after_fork(mp_value *a)
{
    (void)a;
    return after_fork_calls; /* 5 when both hooks ran in this child */
}

static void test_register_after_fork(void)
{
    static int two = 2, three = 3;
    CHECK_OK(mp_register_after_fork(&two, after_fork));
    CHECK_OK(mp_register_after_fork(&three, after_fork));
    CHECK_ERR(mp_register_after_fork(&two, NULL), MP_EINVAL);
    FOR_EACH_METHOD(m)
    {
        mp_process_opts o = {.target = t_after_fork, .ctx = mp_get_context(*m)};
        mp_process *c = mp_process_new(&o);
        int code = -1;
        CHECK_OK(mp_process_start(c));
        CHECK_OK(mp_process_join(c, 30));
        CHECK_OK(mp_process_exitcode(c, &code));
        /* fork: the parent's registrations; spawn/forkserver: a fresh program */
        CHECK_INT(code, strcmp(*m, "fork") == 0 ? 5 : 0);
        mp_process_free(c);
    }
    CHECK_INT(after_fork_calls, 0); /* never in the parent */
}

/* args: [fd]; writes the temp dir's path, creates a file in it, exits. */
static int t_temp_dir(mp_value *args)
{
    int fd = (int)mp_value_get_int(mp_value_list_get(args, 0));
    const char *d = mp_get_temp_dir();
    if (!d || write(fd, d, strlen(d)) < 0)
        return 2;
    char f[4200];
    snprintf(f, sizeof f, "%s/file", d);
    int w = open(f, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    if (w < 0)
        return 3;
    close(w);
    return strcmp(mp_get_temp_dir(), d) == 0 ? 0 : 4; /* the same one each time */
}

static void test_get_temp_dir(void)
{
    CHECK(!mp_is_exiting());
    { /* a fork child: it inherits the plain pipe fd */
        int p[2];
        CHECK_OK(pipe(p));
        mp_value *a = mp_value_pack("[I]", (int64_t)p[1]);
        mp_process_opts o = {.target = t_temp_dir, .args = a, .ctx = mp_get_context("fork")};
        mp_process *c = mp_process_new(&o);
        int code = -1;
        CHECK_OK(mp_process_start(c));
        CHECK_OK(mp_process_join(c, 30));
        CHECK_OK(mp_process_exitcode(c, &code));
        CHECK_INT(code, 0);
        close(p[1]);
        char path[4096] = "";
        ssize_t n = read(p[0], path, sizeof path - 1);
        path[n > 0 ? n : 0] = '\0';
        close(p[0]);
        CHECK(strstr(path, "/mp-") != NULL);
        struct stat st;
        CHECK(stat(path, &st) < 0 && errno == ENOENT); /* removed at the child's exit */
        mp_process_free(c);
        mp_value_free(a);
    }
}

/* The main program's exit: finalizers in order with is_exiting true, the temp dir gone. */
static void test_main_program_exit(void)
{
    const char *bindir = getenv("MP_TEST_BINDIR");
    char prog[4096];
    snprintf(prog, sizeof prog, "%s/helper_util_tempdir", bindir ? bindir : ".");
    const char *argv[] = {prog, NULL};
    char *out = NULL;
    CHECK_OK(mp_check_output(argv, NULL, &out, NULL));
    char dir[4096] = "";
    CHECK(out && sscanf(out, "%4095s exiting=0\n", dir) == 1);
    CHECK(strstr(dir, "/mp-") != NULL);
    const char *rest = out ? strchr(out, '\n') : NULL;
    CHECK_STR(rest ? rest + 1 : "", "high exiting=1\nlow exiting=1\n");
    struct stat st;
    CHECK(stat(dir, &st) < 0 && errno == ENOENT);
    mp_free(out);
}

int main(int argc, char **argv)
{
    CHECK_OK(mp_forkserver_ensure_running());
    RUN_IF(argc, argv, test_finalize_order_and_once);
    RUN_IF(argc, argv, test_finalizers_at_exit_in_child);
    RUN_IF(argc, argv, test_register_after_fork);
    RUN_IF(argc, argv, test_get_temp_dir);
    RUN_IF(argc, argv, test_main_program_exit);
    return mpt_done();
}
