/* Process objects under the three start methods: exit codes, the rules from Python,
 * names, arguments carrying library objects, targets in libraries, contexts, logging,
 * at-exit handling, and nothing left behind (fds, zombies). */
#include "test_util.h"
#include "internal/tracker.h"
#include "multiproc/log.h"
#include "multiproc/process.h"
#include "process/proc.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>

int mptest_lib_target(mp_value *args); /* tests/lib_targets.c */

static const char *const methods[] = {"fork", "spawn", "forkserver"};
#define FOR_EACH_METHOD(m) for (const char *const *m = methods; m < methods + 3; m++)

/* Set by main at run time: a spawn child must not see it. */
static int runtime_global;

/* ---- a test object kind: the write end of a pipe ------------------------------------ */

typedef struct tpipe {
    int fd;
} tpipe;

static int tp_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    *data = NULL;
    *len = 0;
    fds[0] = ((tpipe *)obj)->fd;
    *nfds = 1;
    return 0;
}

static int tp_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    (void)data;
    (void)len;
    tpipe *t = malloc(sizeof *t);
    if (!t || nfds != 1) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        free(t);
        return -EINVAL;
    }
    t->fd = fds[0];
    *obj = t;
    return 0;
}

static void tp_release(void *obj)
{
    close(((tpipe *)obj)->fd);
    free(obj);
}

static const mp_kind tpipe_kind = {"test-process-pipe", tp_export, tp_import, tp_release};

/* A plain constructor of the program (not the library): spawn and forkserver children
 * must run it before they decode arguments holding this kind. */
__attribute__((constructor)) static void register_test_kind(void) { mp_kind_register(&tpipe_kind); }

/* Write a line through the tpipe found at args[i]. */
static void say(mp_value *args, size_t i, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(mp_value *args, size_t i, const char *fmt, ...)
{
    const mp_kind *k = NULL;
    tpipe *t = mp_value_get_handle(mp_value_list_get(args, i), &k);
    if (!t || k != &tpipe_kind)
        mp_process_exit(99);
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (write(t->fd, buf, (size_t)n) != n)
        mp_process_exit(98);
}

/* A pipe whose read end the test keeps; the write end travels as [tpipe, ...]. */
struct chan {
    int rd;
    tpipe w;
};

static void chan_open(struct chan *c)
{
    int p[2];
    CHECK_OK(pipe2(p, O_CLOEXEC));
    c->rd = p[0];
    c->w.fd = p[1];
}

static void chan_close(struct chan *c)
{
    close(c->rd);
    if (c->w.fd >= 0)
        close(c->w.fd);
}

/* Everything written until every write end is closed (close ours first). */
static char *chan_read_all(struct chan *c)
{
    if (c->w.fd >= 0)
        close(c->w.fd);
    c->w.fd = -1;
    static char buf[8192];
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(c->rd, buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    return buf;
}

/* ---- targets ----------------------------------------------------------------------- */

static int t_return0(mp_value *a) { (void)a; return 0; }
static int t_return7(mp_value *a) { (void)a; return 7; }
static int t_exit5(mp_value *a) { (void)a; mp_process_exit(5); }
/* Not static: an exported symbol lets the traceback-like message name it. */
int t_fail(mp_value *a);
int t_fail(mp_value *a) { (void)a; mp_process_fail("RuntimeError: %s", "boom"); }
static int t_sleep(mp_value *a)
{
    (void)a;
    for (int i = 0; i < 300; i++) /* behaviour: a child that runs until stopped */
        usleep(100000);
    return 0;
}
static int t_runtime_global(mp_value *a) { (void)a; return runtime_global == 4242 ? 1 : 2; }

static mp_process *start(const char *method, mp_target_fn fn, const mp_value *args,
                         const char *name, bool daemon)
{
    mp_process_opts o = {.target = fn, .args = args, .name = name, .daemon = daemon,
                         .ctx = mp_get_context(method)};
    mp_process *p = mp_process_new(&o);
    CHECK(p != NULL);
    if (p)
        CHECK_OK(mp_process_start(p));
    return p;
}

static int run_code(const char *method, mp_target_fn fn, const mp_value *args)
{
    mp_process *p = start(method, fn, args, NULL, false);
    int code = -1000;
    CHECK_OK(mp_process_join(p, 30));
    CHECK_OK(mp_process_exitcode(p, &code));
    mp_process_free(p);
    return code;
}

/* Run with fd 2 captured into a memfd; returns the text (static buffer). */
static const char *stderr_text(int memfd)
{
    static char buf[8192];
    ssize_t n = pread(memfd, buf, sizeof buf - 1, 0);
    buf[n > 0 ? n : 0] = '\0';
    return buf;
}

static int capture_stderr_begin(int *saved)
{
    fflush(stderr);
    int m = memfd_create("stderr", MFD_CLOEXEC);
    *saved = dup(2);
    dup2(m, 2);
    return m;
}

static void capture_stderr_end(int saved)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
}

/* ---- tests --------------------------------------------------------------------------- */

static void test_exit_codes(void)
{
    FOR_EACH_METHOD(m)
    {
        CHECK_INT(run_code(*m, t_return0, NULL), 0);
        CHECK_INT(run_code(*m, t_return7, NULL), 7);
        CHECK_INT(run_code(*m, t_exit5, NULL), 5);
        CHECK_INT(run_code(*m, mptest_lib_target, NULL), 42);

        int saved, memfd = capture_stderr_begin(&saved);
        mp_process *p = start(*m, t_fail, NULL, "failing", false);
        CHECK_OK(mp_process_join(p, 30));
        capture_stderr_end(saved);
        int code = -1000;
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 1);
        const char *err = stderr_text(memfd);
        CHECK_CONTAINS(err, "Process failing:\nTraceback (most recent call last):\n");
        CHECK_CONTAINS(err, "in t_fail\nRuntimeError: boom\n");
        close(memfd);
        mp_process_free(p);

        p = start(*m, t_sleep, NULL, NULL, false);
        CHECK(mp_process_is_alive(p));
        CHECK_ERR(mp_process_exitcode(p, &code), MP_ESTATE);
        CHECK_OK(mp_process_terminate(p));
        CHECK_OK(mp_process_join(p, 30));
        CHECK(!mp_process_is_alive(p));
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, -SIGTERM);
        CHECK_OK(mp_process_terminate(p)); /* ended: a no-op, as Python */
        mp_process_free(p);

        p = start(*m, t_sleep, NULL, NULL, false);
        CHECK_OK(mp_process_kill(p));
        CHECK_OK(mp_process_join(p, 30));
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, -SIGKILL);
        mp_process_free(p);
    }
}

static void test_join_timeout(void)
{
    FOR_EACH_METHOD(m)
    {
        mp_process *p = start(*m, t_sleep, NULL, NULL, false);
        double t0 = mpt_now();
        CHECK_ERR(mp_process_join(p, 0.2), MP_ETIMEOUT);
        double took = mpt_now() - t0;
        CHECK(took >= 0.15 && took < 5);
        CHECK_ERR(mp_process_join(p, 0), MP_ETIMEOUT);
        CHECK(mp_process_sentinel(p) >= 0);
        CHECK_INT(poll(&(struct pollfd){.fd = mp_process_sentinel(p), .events = POLLIN}, 1, 0), 0);
        CHECK_ERR(mp_process_close(p), MP_ESTATE);
        CHECK_OK(mp_process_kill(p));
        CHECK_OK(mp_process_join(p, -1));
        CHECK_INT(poll(&(struct pollfd){.fd = mp_process_sentinel(p), .events = POLLIN}, 1, 0), 1);
        CHECK_OK(mp_process_close(p));
        CHECK_ERR(mp_process_join(p, 0), MP_ECLOSED);
        CHECK_ERR(mp_process_start(p), MP_ECLOSED);
        mp_process_free(p);
    }
}

static void test_errors(void)
{
    CHECK(mp_process_new(NULL) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    mp_process_opts none = {0};
    CHECK(mp_process_new(&none) == NULL);
    FOR_EACH_METHOD(m)
    {
        mp_process_opts o = {.target = t_return0, .ctx = mp_get_context(*m)};
        mp_process *p = mp_process_new(&o);
        CHECK_ERR(mp_process_join(p, 0), MP_EPROCESS);
        CHECK_CONTAINS(mp_last_error(), "can only join a started process");
        CHECK_ERR(mp_process_terminate(p), MP_EPROCESS);
        CHECK(!mp_process_is_alive(p));
        CHECK_INT(mp_process_pid(p), 0);
        CHECK_INT(mp_process_sentinel(p), -1);
        int code;
        CHECK_ERR(mp_process_exitcode(p, &code), MP_ESTATE);
        CHECK_OK(mp_process_start(p));
        CHECK(mp_process_pid(p) > 0);
        CHECK_ERR(mp_process_start(p), MP_EPROCESS);
        CHECK_STR(mp_last_error(), "MP_EPROCESS: invalid operation on a process: cannot start a process twice");
        CHECK_OK(mp_process_join(p, 30));
        CHECK_OK(mp_process_join(p, 30)); /* joining again is fine */
        CHECK_ERR(mp_process_start(p), MP_EPROCESS);
        mp_process_free(p);
    }
    mp_process_free(NULL);
}

/* In a daemon child: starting a child must fail with the Python message. */
static int t_daemon_starts_child(mp_value *a)
{
    (void)a;
    mp_process_opts o = {.target = t_return0};
    mp_process *p = mp_process_new(&o);
    int r = mp_process_start(p);
    int ok = r == MP_EPROCESS && strstr(mp_last_error(), "daemonic processes are not allowed to have children") &&
             mp_current_process_daemon();
    mp_process_free(p);
    return ok ? 0 : 1;
}

static void test_daemon_no_children(void)
{
    FOR_EACH_METHOD(m)
    {
        mp_process *p = start(*m, t_daemon_starts_child, NULL, NULL, true);
        CHECK(mp_process_daemon(p));
        CHECK_OK(mp_process_join(p, 30));
        int code = -1;
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 0);
        mp_process_free(p);
    }
}

/* Reports its name and parent as the child sees them ([tpipe, expected parent pid]). */
static int t_grandchild(mp_value *a)
{
    say(a, 0, "grandchild=%s parent_ok=%d\n", mp_current_process_name(),
        mp_parent_process_pid() == (pid_t)mp_value_get_int(mp_value_list_get(a, 1)));
    return 0;
}

/* Reports name, parent, the parent's runtime global and its default start method,
 * then starts a grandchild (with its own default method, the one it was started by). */
static int t_report_identity(mp_value *a)
{
    say(a, 0, "name=%s parent=%d global=%d method=%s\n", mp_current_process_name(),
        (int)mp_parent_process_pid(), runtime_global, mp_get_start_method());
    mp_value *args = mp_value_pack("[O i]", mp_value_list_get(a, 0), (int)getpid());
    mp_process_opts o = {.target = t_grandchild, .args = args};
    mp_process *p = mp_process_new(&o);
    mp_value_free(args);
    if (!p || mp_process_start(p) < 0 || mp_process_join(p, 30) < 0)
        return 3;
    mp_process_free(p);
    return 0;
}

static void test_names_and_identity(void)
{
    CHECK_STR(mp_current_process_name(), "MainProcess");
    CHECK_INT(mp_parent_process_pid(), 0);
    CHECK(!mp_current_process_daemon());
    FOR_EACH_METHOD(m)
    {
        mp_process_opts o = {.target = t_return0};
        mp_process *a = mp_process_new(&o), *b = mp_process_new(&o);
        o.name = "worker";
        mp_process *named = mp_process_new(&o);
        int na = 0, nb = 0;
        CHECK_INT(sscanf(mp_process_name(a), "Process-%d", &na), 1);
        CHECK_INT(sscanf(mp_process_name(b), "Process-%d", &nb), 1);
        CHECK_INT(nb, na + 1);
        CHECK_STR(mp_process_name(named), "worker");
        mp_process_free(a);
        mp_process_free(b);
        mp_process_free(named);

        struct chan c;
        chan_open(&c);
        mp_value *args = mp_value_pack("[h]", &tpipe_kind, &c.w);
        mp_process *p = start(*m, t_report_identity, args, NULL, false);
        mp_value_free(args);
        int n = 0;
        sscanf(mp_process_name(p), "Process-%d", &n);
        CHECK_OK(mp_process_join(p, 30));
        const char *text = chan_read_all(&c);
        char want[256];
        snprintf(want, sizeof want, "name=Process-%d parent=%d global=%d method=%s\n", n,
                 (int)getpid(), strcmp(*m, "fork") == 0 ? 4242 : 0, *m);
        CHECK_CONTAINS(text, want);
        snprintf(want, sizeof want, "grandchild=Process-%d:1 parent_ok=1\n", n);
        CHECK_CONTAINS(text, want);
        int code = -1;
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 0);
        chan_close(&c);
        mp_process_free(p);
    }
}

/* Library objects in the arguments: [int, str, handle, [handle]]. */
static int t_handles(mp_value *a)
{
    int64_t i = 0;
    const char *s = NULL;
    if (mp_value_unpack(a, "[I s o o]", &i, &s, &(mp_value *){0}, &(mp_value *){0}) < 0)
        return 10;
    say(a, 2, "hello %lld %s\n", (long long)i, s);
    mp_value *inner = mp_value_list_get(a, 3);
    say(inner, 0, "inner\n");
    return 0;
}

static void test_handles_in_args(void)
{
    FOR_EACH_METHOD(m)
    {
        struct chan c;
        chan_open(&c);
        mp_value *args = mp_value_pack("[i s h [h]]", 7, "seven", &tpipe_kind, &c.w, &tpipe_kind, &c.w);
        CHECK(args != NULL);
        mp_process *p = start(*m, t_handles, args, NULL, false);
        mp_value_free(args);
        CHECK_OK(mp_process_join(p, 30));
        CHECK_STR(chan_read_all(&c), "hello 7 seven\ninner\n");
        int code = -1;
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 0);
        chan_close(&c);
        mp_process_free(p);
    }
}

/* Lists its fds (except the directory's own and the resource tracker's pipe, which
 * it reports apart) through the tpipe. */
static int t_list_fds(mp_value *a)
{
    char line[1024] = "";
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && atoi(e->d_name) != dirfd(d) &&
            atoi(e->d_name) != mp__tracker_fd())
            snprintf(line + strlen(line), sizeof line - strlen(line), "%s ", e->d_name);
    if (d)
        closedir(d);
    const mp_kind *k;
    tpipe *t = mp_value_get_handle(mp_value_list_get(a, 0), &k);
    say(a, 0, "fds=%spipe=%d tracker=%d\n", line, t->fd, mp__tracker_fd());
    return 0;
}

static void test_spawn_inherits_only_what_it_needs(void)
{
    int stray = open("/dev/null", O_RDONLY); /* not close-on-exec, on purpose */
    for (int i = 1; i < 3; i++) {
        struct chan c;
        chan_open(&c);
        mp_value *args = mp_value_pack("[h]", &tpipe_kind, &c.w);
        mp_process *p = start(methods[i], t_list_fds, args, NULL, false);
        mp_value_free(args);
        CHECK_OK(mp_process_join(p, 30));
        const char *text = chan_read_all(&c);
        int pipefd = -1;
        const char *at = strstr(text, "pipe=");
        if (at)
            pipefd = atoi(at + 5);
        char want[64];
        /* The program's resource-tracker pipe always travels at fd 4. */
        snprintf(want, sizeof want, "fds=0 1 2 %d pipe=%d tracker=4\n", pipefd, pipefd);
        CHECK_STR(text, want);
        CHECK(pipefd >= 3);
        chan_close(&c);
        mp_process_free(p);
        /* A global the parent set at run time is not in a fresh exec. */
        CHECK_INT(run_code(methods[i], t_runtime_global, NULL), 2);
    }
    CHECK_INT(run_code("fork", t_runtime_global, NULL), 1);
    close(stray);
}

static void test_target_location_errors(void)
{
    /* Not inside any loaded object: the parent refuses it. */
    void *code = mmap(NULL, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    mp_process_opts o = {.target = (mp_target_fn)code, .ctx = mp_get_context("spawn")};
    mp_process *p = mp_process_new(&o);
    CHECK_ERR(mp_process_start(p), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "is not inside the program or a library");
    mp_process_free(p);
    munmap(code, 4096);

    /* In a library the child has not loaded (a copy dlopen()ed at run time). */
    Dl_info info;
    CHECK(dladdr((void *)mptest_lib_target, &info) && info.dli_fname);
    char copy[] = "/tmp/mptest_copy_XXXXXX";
    int fd = mkstemp(copy);
    int src = open(info.dli_fname, O_RDONLY);
    char buf[65536];
    ssize_t n;
    while ((n = read(src, buf, sizeof buf)) > 0)
        CHECK(write(fd, buf, (size_t)n) == n);
    close(src);
    close(fd);
    void *h = dlopen(copy, RTLD_NOW | RTLD_LOCAL);
    CHECK(h != NULL);
    mp_target_fn fn = h ? (mp_target_fn)dlsym(h, "mptest_lib_target") : NULL;
    CHECK(fn != NULL && fn != mptest_lib_target);
    for (int i = 1; fn && i < 3; i++) {
        o.target = fn;
        o.ctx = mp_get_context(methods[i]);
        p = mp_process_new(&o);
        CHECK_ERR(mp_process_start(p), MP_ENOTFOUND);
        CHECK_CONTAINS(mp_last_error(), copy);
        CHECK_CONTAINS(mp_last_error(), "which the child has not loaded");
        CHECK_PREFIX_ONCE(mp_last_error(), MP_ENOTFOUND); /* the child's, re-reported */
        CHECK_INT(mp_process_pid(p), 0);
        mp_process_free(p);
    }
    if (fn) /* fork copies the whole address space: the copy is there */
        CHECK_INT(run_code("fork", fn, NULL), 42);
    if (h)
        dlclose(h);
    unlink(copy);
}

static const mp_kind late_kind = {"test-process-late", tp_export, tp_import, tp_release};

static int t_has_handle(mp_value *a) { return mp_value_get_handle(mp_value_list_get(a, 0), NULL) ? 0 : 1; }

/* A kind registered in main (not in a constructor) does not exist in a fresh exec:
 * the child reports the decoding failure and start() returns it. */
static void test_unknown_kind_in_child(void)
{
    static bool registered;
    if (!registered)
        CHECK_OK(mp_kind_register(&late_kind));
    registered = true;
    struct chan c;
    chan_open(&c);
    mp_value *args = mp_value_pack("[h]", &late_kind, &c.w);
    for (int i = 1; i < 3; i++) {
        mp_process_opts o = {.target = t_has_handle, .args = args, .ctx = mp_get_context(methods[i])};
        mp_process *p = mp_process_new(&o);
        int r = mp_process_start(p);
        CHECK(r < 0);
        CHECK_CONTAINS(mp_last_error(), "decoding the process arguments");
        CHECK_CONTAINS(mp_last_error(), "test-process-late");
        CHECK_PREFIX_ONCE(mp_last_error(), r);
        CHECK_INT(mp_process_pid(p), 0);
        mp_process_free(p);
    }
    CHECK_INT(run_code("fork", t_has_handle, args), 0);
    mp_value_free(args);
    chan_close(&c);
}

static void test_active_children(void)
{
    mp_process *ps[6];
    int i = 0;
    FOR_EACH_METHOD(m)
    {
        ps[i++] = start(*m, t_sleep, NULL, NULL, false);
        ps[i++] = start(*m, t_return0, NULL, NULL, false);
    }
    /* Let the quick ones end; they are reaped by active_children. */
    for (int k = 1; k < 6; k += 2)
        CHECK_OK(mp_process_join(ps[k], 30));
    mp_process *live[8];
    CHECK_INT(mp_active_children(live, 8), 3);
    for (int k = 0; k < 3; k++)
        CHECK(live[k] == ps[0] || live[k] == ps[2] || live[k] == ps[4]);
    for (int k = 0; k < 6; k += 2)
        CHECK_OK(mp_process_terminate(ps[k]));
    double t0 = mpt_now();
    while (mp_active_children(NULL, 0) > 0 && mpt_now() - t0 < 10)
        usleep(5000);
    CHECK_INT(mp_active_children(NULL, 0), 0);
    CHECK(!mpt_has_zombie());
    for (int k = 0; k < 6; k++) {
        int code = 1;
        CHECK_OK(mp_process_exitcode(ps[k], &code));
        CHECK_INT(code, k % 2 ? 0 : -SIGTERM);
        mp_process_free(ps[k]);
    }
}

static int t_sleep_short(mp_value *a)
{
    (void)a;
    usleep(200000); /* behaviour: still running when its object is freed */
    return 0;
}

static void test_free_while_running(void)
{
    int fds = mpt_count_fds();
    FOR_EACH_METHOD(m)
    {
        mp_process *p = start(*m, t_sleep_short, NULL, NULL, false);
        mp_process_free(p); /* the library keeps watching it */
    }
    /* mp_active_children reaps the detached ones once they end (their fds go then). */
    double t0 = mpt_now();
    do {
        usleep(20000);
        CHECK(mp_active_children(NULL, 0) == 0); /* detached ones are not listed */
    } while (mpt_count_fds() != fds && mpt_now() - t0 < 20);
    CHECK_INT(mpt_count_fds(), fds);
    CHECK(!mpt_has_zombie());
}

static void test_many_starts(void)
{
    FOR_EACH_METHOD(m)
    {
        int bad = 0;
        for (int i = 0; i < 100; i++) {
            mp_process_opts o = {.target = t_return0, .ctx = mp_get_context(*m)};
            mp_process *p = mp_process_new(&o);
            int code = -1;
            if (mp_process_start(p) < 0 || mp_process_join(p, 30) < 0 ||
                mp_process_exitcode(p, &code) < 0 || code != 0)
                bad++;
            mp_process_free(p);
        }
        CHECK_INT(bad, 0);
    }
}

static mp_process *self_proc;

static int t_join_self(mp_value *a)
{
    (void)a;
    int r = mp_process_join(self_proc, 0);
    bool ok = r == MP_EPROCESS && strstr(mp_last_error(), "cannot join current process") &&
              mp_process_is_alive(self_proc);
    return ok ? 0 : 1;
}

static void test_join_self(void)
{
    mp_process_opts o = {.target = t_join_self, .ctx = mp_get_context("fork")};
    self_proc = mp_process_new(&o);
    CHECK_OK(mp_process_start(self_proc));
    CHECK_OK(mp_process_join(self_proc, 30));
    int code = -1;
    CHECK_OK(mp_process_exitcode(self_proc, &code));
    CHECK_INT(code, 0);
    mp_process_free(self_proc);
}

static int t_method(mp_value *a)
{
    say(a, 0, "%s\n", mp_get_start_method());
    usleep(100000); /* not synchronisation: the three children overlap in time */
    return 0;
}

static void test_contexts_side_by_side(void)
{
    CHECK(mp_get_context("nope") == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    CHECK_STR(mp_context_method(mp_get_context("spawn")), "spawn");
    CHECK_STR(mp_context_method(mp_get_context("forkserver")), "forkserver");
    mp_process *ps[3];
    struct chan c[3];
    for (int i = 0; i < 3; i++) {
        chan_open(&c[i]);
        mp_value *args = mp_value_pack("[h]", &tpipe_kind, &c[i].w);
        ps[i] = start(methods[i], t_method, args, NULL, false);
        mp_value_free(args);
    }
    for (int i = 0; i < 3; i++) {
        CHECK_OK(mp_process_join(ps[i], 30));
        char want[32];
        snprintf(want, sizeof want, "%s\n", methods[i]);
        CHECK_STR(chan_read_all(&c[i]), want);
        chan_close(&c[i]);
        mp_process_free(ps[i]);
    }
}

/* set_start_method's once-only rule, in a forked copy so this program's default
 * stays untouched. */
static void test_set_start_method(void)
{
    pid_t pid = fork();
    if (pid == 0) {
        int bad = 0;
        bad |= mp_set_start_method("nope", false) != MP_EINVAL;
        bad |= mp_set_start_method("spawn", false) != 0;
        bad |= (mp_set_start_method("fork", false) != MP_ESTATE) << 1;
        bad |= (strstr(mp_last_error(), "context has already been set") == NULL) << 2;
        bad |= (strcmp(mp_get_start_method(), "spawn") != 0) << 3;
        bad |= (strcmp(mp_context_method(NULL), "spawn") != 0) << 3;
        bad |= (mp_set_start_method("forkserver", true) != 0) << 4;
        bad |= (strcmp(mp_get_start_method(), "forkserver") != 0) << 5;
        /* The default context now starts forkserver children. */
        mp_process_opts o = {.target = t_return7};
        mp_process *p = mp_process_new(&o);
        int code = 0;
        bad |= (mp_process_start(p) != 0 || mp_process_join(p, 30) != 0 ||
                mp_process_exitcode(p, &code) != 0 || code != 7) << 6;
        mp_process_free(p);
        fflush(NULL);
        _exit(bad);
    }
    int status = 0;
    CHECK_INT(waitpid(pid, &status, 0), pid);
    CHECK(WIFEXITED(status));
    CHECK_INT(WEXITSTATUS(status), 0);
}

static void test_child_logging(void)
{
    FOR_EACH_METHOD(m)
    {
        int saved, memfd = capture_stderr_begin(&saved);
        mp_log_to_stderr(MP_LOG_INFO);
        mp_process *p = start(*m, t_return0, NULL, NULL, false);
        CHECK_OK(mp_process_join(p, 30));
        mp_log_set_fd(-1);
        mp_log_set_level(MP_LOG_WARNING);
        capture_stderr_end(saved);
        char want[128];
        const char *text = stderr_text(memfd);
        snprintf(want, sizeof want, "[INFO/%s] child process calling self.run()\n", mp_process_name(p));
        CHECK_CONTAINS(text, want);
        snprintf(want, sizeof want, "[INFO/%s] process shutting down\n", mp_process_name(p));
        CHECK_CONTAINS(text, want);
        snprintf(want, sizeof want, "[INFO/%s] process exiting with exitcode 0\n", mp_process_name(p));
        CHECK_CONTAINS(text, want);
        close(memfd);
        mp_process_free(p);
    }
}

static void *idle_thread(void *arg)
{
    char c;
    (void)!read(*(int *)arg, &c, 1);
    return NULL;
}

static void test_fork_from_threads_warns(void)
{
    int p[2];
    CHECK_OK(pipe2(p, O_CLOEXEC));
    pthread_t t;
    pthread_create(&t, NULL, idle_thread, &p[0]);
    int saved, memfd = capture_stderr_begin(&saved);
    mp_log_to_stderr(MP_LOG_WARNING);
    CHECK_INT(run_code("fork", t_return0, NULL), 0);
    CHECK_INT(run_code("spawn", t_return0, NULL), 0);
    mp_log_set_fd(-1);
    capture_stderr_end(saved);
    const char *text = stderr_text(memfd);
    CHECK_CONTAINS(text, "[WARNING/MainProcess] This process (pid=");
    CHECK_CONTAINS(text, "is multi-threaded");
    int warnings = 0;
    for (const char *at = text; (at = strstr(at, "is multi-threaded")) != NULL; at++)
        warnings++;
    CHECK_INT(warnings, 1); /* fork warns; spawn is safe */
    close(memfd);
    CHECK(write(p[1], "x", 1) == 1);
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
}

/* Run tests/helper_proc_main MODE METHOD; returns its stdout+stderr and exit status. */
static int run_helper(const char *mode, const char *method, char *out, size_t cap)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/helper_proc_main", getenv("MP_TEST_BINDIR") ? getenv("MP_TEST_BINDIR") : ".");
    int pp[2];
    if (pipe2(pp, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        dup2(pp[1], 1);
        dup2(pp[1], 2);
        execl(path, path, mode, method, (char *)NULL);
        _exit(127);
    }
    close(pp[1]);
    size_t n = 0;
    ssize_t r;
    while (n < cap - 1 && (r = read(pp[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(pp[0]);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void test_atexit_joins_and_terminates(void)
{
    FOR_EACH_METHOD(m)
    {
        char out[8192];
        double t0 = mpt_now();
        CHECK_INT(run_helper("atexit", *m, out, sizeof out), 0);
        CHECK(mpt_now() - t0 < 20);
        CHECK_CONTAINS(out, "[INFO/MainProcess] process shutting down\n");
        CHECK_CONTAINS(out, "[INFO/MainProcess] calling terminate() for daemon sleeper\n");
        CHECK_CONTAINS(out, "[INFO/MainProcess] calling join() for process finisher\n");
        CHECK_CONTAINS(out, "finisher done\n");
        CHECK(strstr(out, "sleeper done") == NULL);
    }
}

/* A program that ignores SIGCHLD: the kernel reaps its own children by itself, so a
 * fork or spawn child's status is lost (documented: exitcode 255), but nothing may
 * hang; a forkserver child's status comes from the server, which must not inherit
 * the ignored SIGCHLD (it did, and every join hung). */
static void test_sigchld_ignored_does_not_hang(void)
{
    FOR_EACH_METHOD(m)
    {
        char out[4096];
        double t0 = mpt_now();
        CHECK_INT(run_helper("sigchld-ign", *m, out, sizeof out), 0);
        CHECK(mpt_now() - t0 < 8);
        if (strcmp(*m, "forkserver") == 0)
            CHECK_STR(out, "exitcode=7\n");
        else
            CHECK(strcmp(out, "exitcode=7\n") == 0 || strcmp(out, "exitcode=255\n") == 0);
        /* Many in a row: a fork start once lost the race with the kernel's reaping
         * (pidfd_open after fork: ESRCH, about one start in ten). */
        CHECK_INT(run_helper("sigchld-ign-loop", *m, out, sizeof out), 0);
        CHECK_STR(out, "started=200 errors=0\n");
    }
    /* The same with the race window held open: fails every time on a fork start that
     * takes the pidfd after fork() while the child may already run. */
    char out[4096];
    CHECK_INT(run_helper("fork-race", "fork", out, sizeof out), 0);
    CHECK_STR(out, "started=50 errors=0\n");
}

/* Several threads starting and joining their own children at once: each join must
 * get its own child's status (one thread's start once took another's). */
struct mt_job {
    const char *method;
    int base, wrong, errors;
};

static int t_exit_with_arg(mp_value *a) { return (int)mp_value_get_int(a); }

static void *mt_starter(void *arg)
{
    struct mt_job *j = arg;
    for (int i = 0; i < 25; i++) {
        int want = j->base + i, code = -1;
        mp_value *v = mp_value_int(want);
        mp_process_opts o = {.target = t_exit_with_arg, .args = v,
                             .ctx = mp_get_context(j->method)};
        mp_process *p = mp_process_new(&o);
        mp_value_free(v);
        if (!p || mp_process_start(p) < 0 || mp_process_join(p, 30) < 0 ||
            mp_process_exitcode(p, &code) < 0)
            j->errors++;
        else if (code != want)
            j->wrong++;
        mp_process_free(p);
    }
    return NULL;
}

static void test_threads_start_and_join(void)
{
    FOR_EACH_METHOD(m)
    {
        struct mt_job jobs[4];
        pthread_t t[4];
        for (int k = 0; k < 4; k++) {
            jobs[k] = (struct mt_job){.method = *m, .base = 1 + 50 * k};
            pthread_create(&t[k], NULL, mt_starter, &jobs[k]);
        }
        int wrong = 0, errors = 0;
        for (int k = 0; k < 4; k++) {
            pthread_join(t[k], NULL);
            wrong += jobs[k].wrong;
            errors += jobs[k].errors;
        }
        CHECK_INT(wrong, 0);
        CHECK_INT(errors, 0);
    }
}

static void test_forkserver_goes_away(void)
{
    char out[4096];
    CHECK_INT(run_helper("fsclient", "forkserver", out, sizeof out), 0);
    int server = 0;
    const char *at = strstr(out, "server=");
    if (at)
        server = atoi(at + 7);
    CHECK(server > 0);
    int pidfd = server > 0 ? (int)syscall(SYS_pidfd_open, server, 0) : -1;
    if (pidfd >= 0) { /* still there: it must go within seconds */
        struct pollfd p = {.fd = pidfd, .events = POLLIN};
        CHECK_INT(poll(&p, 1, 10000), 1);
        close(pidfd);
    } else {
        CHECK_INT(errno, ESRCH);
    }
}

static void test_repr(void)
{
    mp_process_opts o = {.target = t_sleep, .name = "r", .daemon = true, .ctx = mp_get_context("spawn")};
    mp_process *p = mp_process_new(&o);
    char want[160];
    char *r = mp_process_repr(p);
    snprintf(want, sizeof want, "<Process name='r' parent=%d initial daemon>", (int)getpid());
    CHECK_STR(r, want);
    mp_free(r);
    CHECK_OK(mp_process_start(p));
    r = mp_process_repr(p);
    snprintf(want, sizeof want, "<Process name='r' pid=%d parent=%d started daemon>", (int)mp_process_pid(p), (int)getpid());
    CHECK_STR(r, want);
    mp_free(r);
    CHECK_OK(mp_process_kill(p));
    CHECK_OK(mp_process_join(p, 30));
    r = mp_process_repr(p);
    snprintf(want, sizeof want, "<Process name='r' pid=%d parent=%d stopped exitcode=-SIGKILL daemon>", (int)mp_process_pid(p), (int)getpid());
    CHECK_STR(r, want);
    mp_free(r);
    CHECK_OK(mp_process_close(p));
    r = mp_process_repr(p);
    CHECK_CONTAINS(r, " closed daemon>");
    mp_free(r);
    mp_process_free(p);
}

static void test_cpu_count(void)
{
    cpu_set_t set;
    CHECK_OK(sched_getaffinity(0, sizeof set, &set));
    CHECK_INT(mp_cpu_count(), CPU_COUNT(&set));
    pid_t pid = fork();
    if (pid == 0) {
        CPU_ZERO(&set);
        CPU_SET(0, &set);
        sched_setaffinity(0, sizeof set, &set);
        _exit(mp_cpu_count());
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK_INT(WEXITSTATUS(status), 1);
}

/* Reports which of its fds 0, 1, 2 are open, through the tpipe. */
static int t_std_states(mp_value *a)
{
    char s[64] = "";
    for (int i = 0; i < 3; i++)
        snprintf(s + strlen(s), sizeof s - strlen(s), "%s%d:%s", i ? " " : "", i,
                 fcntl(i, F_GETFD) < 0 ? "closed" : "open");
    say(a, 0, "%s", s);
    return 0;
}

/* In a forked test child with fd `which` closed: "method=states exitcode" per method. */
static const char *std_states_with_closed(int which)
{
    static char buf[1024];
    int rep[2];
    if (pipe(rep) < 0)
        return "pipe failed";
    pid_t pid = fork();
    if (pid == 0) {
        close(rep[0]);
        struct chan c[3];
        for (int i = 0; i < 3; i++)
            chan_open(&c[i]); /* before the close: the test's own fds stay above 2 */
        close(which);
        FOR_EACH_METHOD(m)
        {
            int i = (int)(m - methods), code = -1000;
            mp_value *args = mp_value_pack("[h]", &tpipe_kind, &c[i].w);
            mp_process_opts o = {.target = t_std_states, .args = args, .ctx = mp_get_context(*m)};
            mp_process *p = mp_process_new(&o);
            int r = mp_process_start(p);
            if (r == 0)
                r = mp_process_join(p, 30);
            if (r == 0)
                r = mp_process_exitcode(p, &code);
            mp_process_free(p);
            mp_value_free(args);
            dprintf(rep[1], "%s=%s %d\n", *m, r < 0 ? mp_errname(r) : chan_read_all(&c[i]), code);
        }
        _exit(0);
    }
    close(rep[1]);
    size_t n = 0;
    ssize_t r;
    while (n < sizeof buf - 1 && (r = read(rep[0], buf + n, sizeof buf - 1 - n)) > 0)
        n += (size_t)r;
    buf[n] = '\0';
    close(rep[0]);
    int st = -1;
    waitpid(pid, &st, 0);
    CHECK_INT(st, 0);
    return buf;
}

/* A closed fd 0, 1 or 2 in the parent: the library's own fds (the spawn bootstrap
 * socket) used to take its number and reach the child as a standard stream. A child
 * sees what its parent has: closed stays closed, except that stdin is always
 * /dev/null (as in Python) and a forkserver child gets /dev/null for a closed stdout
 * or stderr (documented in forkserver.c). */
static void test_parent_closed_std_fds(void)
{
    CHECK_STR(std_states_with_closed(0), "fork=0:open 1:open 2:open 0\n"
                                         "spawn=0:open 1:open 2:open 0\n"
                                         "forkserver=0:open 1:open 2:open 0\n");
    CHECK_STR(std_states_with_closed(1), "fork=0:open 1:closed 2:open 0\n"
                                         "spawn=0:open 1:closed 2:open 0\n"
                                         "forkserver=0:open 1:open 2:open 0\n");
    CHECK_STR(std_states_with_closed(2), "fork=0:open 1:open 2:closed 0\n"
                                         "spawn=0:open 1:open 2:closed 0\n"
                                         "forkserver=0:open 1:open 2:open 0\n");
}

int main(int argc, char **argv)
{
    runtime_global = 4242;
    /* The forkserver holds one fd for the program's life: start it before the leak
     * checks record the fds. */
    CHECK_OK(mp_forkserver_ensure_running());
    RUN_IF(argc, argv, test_exit_codes);
    RUN_IF(argc, argv, test_join_timeout);
    RUN_IF(argc, argv, test_errors);
    RUN_IF(argc, argv, test_daemon_no_children);
    RUN_IF(argc, argv, test_names_and_identity);
    RUN_IF(argc, argv, test_handles_in_args);
    RUN_IF(argc, argv, test_spawn_inherits_only_what_it_needs);
    RUN_IF(argc, argv, test_target_location_errors);
    RUN_IF(argc, argv, test_unknown_kind_in_child);
    RUN_IF(argc, argv, test_active_children);
    RUN_IF(argc, argv, test_free_while_running);
    RUN_IF(argc, argv, test_many_starts);
    RUN_IF(argc, argv, test_join_self);
    RUN_IF(argc, argv, test_contexts_side_by_side);
    RUN_IF(argc, argv, test_set_start_method);
    RUN_IF(argc, argv, test_child_logging);
    RUN_IF(argc, argv, test_fork_from_threads_warns);
    RUN_IF(argc, argv, test_atexit_joins_and_terminates);
    RUN_IF(argc, argv, test_forkserver_goes_away);
    RUN_IF(argc, argv, test_sigchld_ignored_does_not_hang);
    RUN_IF(argc, argv, test_threads_start_and_join);
    RUN_IF(argc, argv, test_repr);
    RUN_IF(argc, argv, test_cpu_count);
    RUN_IF(argc, argv, test_parent_closed_std_fds);
    return mpt_done();
}
