/* The rest of multiprocessing's process surface: authkey (inherited under every start
 * method, settable), parent_process() as a process object, get_all_start_methods,
 * set_executable and set_forkserver_preload. */
#include "test_util.h"
#include "multiproc/manager.h"
#include "multiproc/process.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

static const char *const methods[] = {"fork", "spawn", "forkserver"};
#define FOR_EACH_METHOD(m) for (const char *const *m = methods; m < methods + 3; m++)

/* The preloaded library (set by main before the forkserver starts). */
static char preload_path[PATH_MAX];

static int run_code(const char *method, mp_target_fn fn, const mp_value *args,
                    const void *key, size_t keylen)
{
    mp_process_opts o = {.target = fn, .args = args, .ctx = mp_get_context(method)};
    mp_process *p = mp_process_new(&o);
    CHECK(p != NULL);
    if (!p)
        return -1000;
    if (key)
        CHECK_OK(mp_process_set_authkey(p, key, keylen));
    int code = -1000;
    CHECK_OK(mp_process_start(p));
    CHECK_OK(mp_process_join(p, 30));
    CHECK_OK(mp_process_exitcode(p, &code));
    if (key) /* too late once started */
        CHECK_ERR(mp_process_set_authkey(p, "x", 1), MP_ESTATE);
    mp_process_free(p);
    return code;
}

/* args: [expected key bytes]; 0 when this process's authkey is exactly that. */
static int t_check_key(mp_value *args)
{
    size_t n = 0, want = 0;
    const void *k = mp_current_process_authkey(&n);
    const void *w = mp_value_get_bytes(mp_value_list_get(args, 0), &want);
    return w && n == want && memcmp(k, w, n) == 0 ? 0 : 1;
}

static void test_authkey(void)
{
    size_t n = 0, n2 = 0;
    const void *k = mp_current_process_authkey(&n);
    CHECK_INT(n, 32);
    CHECK(mp_current_process_authkey(&n2) == k && n2 == 32); /* made once */
    unsigned char mine[32];
    memcpy(mine, k, 32);
    mp_value *a = mp_value_pack("[y#]", mine, (size_t)32);
    FOR_EACH_METHOD(m) /* inherited under every start method */
        CHECK_INT(run_code(*m, t_check_key, a, NULL, 0), 0);
    mp_value_free(a);
    a = mp_value_pack("[y#]", "per-child", (size_t)9);
    FOR_EACH_METHOD(m) /* p.authkey = b'per-child' */
        CHECK_INT(run_code(*m, t_check_key, a, "per-child", 9), 0);
    mp_value_free(a);
    /* current_process().authkey = b'tree': children made afterwards have it */
    CHECK_OK(mp_set_current_process_authkey("tree", 4));
    a = mp_value_pack("[y#]", "tree", (size_t)4);
    FOR_EACH_METHOD(m)
        CHECK_INT(run_code(*m, t_check_key, a, NULL, 0), 0);
    mp_value_free(a);
    CHECK_ERR(mp_set_current_process_authkey(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_set_current_process_authkey("x", MP_AUTHKEY_MAX + 1), MP_EINVAL);
    CHECK_OK(mp_set_current_process_authkey(mine, 32));
}

/* args: [parent name, parent pid]; 0 when parent_process() says so and is alive. */
static int t_check_parent(mp_value *args)
{
    const char *name = NULL;
    int64_t pid = 0;
    if (mp_value_unpack(args, "[s I]", &name, &pid) < 0)
        return 10;
    mp_process *pp = mp_parent_process();
    if (!pp)
        return 11;
    if (strcmp(mp_process_name(pp), name) != 0)
        return 12;
    if (mp_process_pid(pp) != (pid_t)pid)
        return 13;
    if (!mp_process_is_alive(pp))
        return 14;
    if (mp_process_join(pp, 0) != MP_EPROCESS || mp_process_close(pp) != MP_EPROCESS ||
        mp_process_terminate(pp) != MP_EPROCESS) /* not our child */
        return 15;
    return mp_parent_process() == pp ? 0 : 16;
}

static int t_grandchild(mp_value *args)
{
    /* A child's parent_process() is the child: named as its Process object. */
    (void)args;
    mp_value *a = mp_value_pack("[s I]", mp_current_process_name(), (int64_t)getpid());
    mp_process_opts o = {.target = t_check_parent, .args = a, .ctx = mp_get_context("spawn")};
    mp_process *p = mp_process_new(&o);
    int code = 20;
    if (p && mp_process_start(p) == 0 && mp_process_join(p, 30) == 0)
        mp_process_exitcode(p, &code);
    mp_process_free(p);
    mp_value_free(a);
    return code;
}

static void test_parent_process(void)
{
    CHECK(mp_parent_process() == NULL); /* MainProcess has none */
    mp_value *a = mp_value_pack("[s I]", "MainProcess", (int64_t)getpid());
    FOR_EACH_METHOD(m)
        CHECK_INT(run_code(*m, t_check_parent, a, NULL, 0), 0);
    mp_value_free(a);
    FOR_EACH_METHOD(m)
        CHECK_INT(run_code(*m, t_grandchild, NULL, NULL, 0), 0);
}

static void test_all_start_methods(void)
{
    const char *names[3] = {0};
    CHECK_INT(mp_get_all_start_methods(names, 3), 3);
    CHECK(strcmp(names[0], mp_get_start_method()) == 0); /* the default first */
    CHECK_OK(mp_set_start_method("spawn", true));
    CHECK_INT(mp_get_all_start_methods(names, 3), 3);
    CHECK(strcmp(names[0], "spawn") == 0 && strcmp(names[1], "fork") == 0 &&
          strcmp(names[2], "forkserver") == 0);
    CHECK_INT(mp_get_all_start_methods(NULL, 0), 3);
    CHECK_OK(mp_set_start_method("fork", true));
}

/* args: [path]; 0 when this process runs that file. */
static int t_check_exe(mp_value *args)
{
    const char *want = mp_value_get_str(mp_value_list_get(args, 0), NULL);
    char buf[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
    if (n < 0 || !want)
        return 2;
    buf[n] = '\0';
    return strcmp(buf, want) == 0 ? 0 : 1;
}

static void test_set_executable(void)
{
    CHECK(strcmp(mp_get_executable(), "/proc/self/exe") == 0);
    char path[] = "/tmp/mp-exe-XXXXXX";
    int out = mkostemp(path, O_CLOEXEC);
    int in = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    struct stat st;
    CHECK(out >= 0 && in >= 0 && fstat(in, &st) == 0);
    for (off_t off = 0; off < st.st_size;)
        if (sendfile(out, in, &off, (size_t)(st.st_size - off)) <= 0)
            break;
    fchmod(out, 0700);
    close(in);
    close(out);
    CHECK_OK(mp_set_executable(path));
    CHECK(strcmp(mp_get_executable(), path) == 0);
    mp_value *a = mp_value_pack("[s]", path);
    CHECK_INT(run_code("spawn", t_check_exe, a, NULL, 0), 0); /* the copy ran */
    mp_value_free(a);
    CHECK_OK(mp_set_executable("/nonexistent/multiproc-exe"));
    mp_process_opts o = {.target = t_check_exe, .ctx = mp_get_context("spawn")};
    mp_process *p = mp_process_new(&o);
    CHECK_ERR(mp_process_start(p), -ENOENT);
    CHECK(strstr(mp_last_error(), "/nonexistent/multiproc-exe") != NULL);
    mp_process_free(p);
    CHECK_ERR(mp_set_executable("relative/exe"), MP_EINVAL);
    CHECK_OK(mp_set_executable(NULL));
    CHECK(strcmp(mp_get_executable(), "/proc/self/exe") == 0);
    unlink(path);
}

/* 0 when the preloaded library is already in this (forkserver) child. */
static int t_check_preloaded(mp_value *args)
{
    (void)args;
    void *h = dlopen(preload_path, RTLD_NOW | RTLD_NOLOAD);
    if (!h)
        return 1;
    dlclose(h);
    return 0;
}

static void test_forkserver_preload(void)
{
    CHECK_INT(run_code("forkserver", t_check_preloaded, NULL, NULL, 0), 0);
    CHECK_INT(run_code("fork", t_check_preloaded, NULL, NULL, 0), 1); /* not here */
    const char *bad[] = {"a:b"};
    CHECK_ERR(mp_set_forkserver_preload(bad, 1), MP_EINVAL);
    CHECK_ERR(mp_set_forkserver_preload(NULL, 1), MP_EINVAL);
}

/* args: [address]; 0 when a manager there accepts this process's authkey. */
static int t_connect_default_key(mp_value *args)
{
    const char *addr = mp_value_get_str(mp_value_list_get(args, 0), NULL);
    mp_manager *m = addr ? mp_manager_connect(addr, NULL, 0, 10) : NULL;
    int code = m ? 0 : mp_last_error_code() == MP_EAUTH ? 1 : 2;
    mp_manager_free(m);
    return code;
}

/* Managers default to the process authkey (Python's BaseManager), so children that
 * inherit it connect without being given one; another key is refused. */
static void test_manager_uses_authkey(void)
{
    mp_manager *m = mp_manager_new(NULL);
    CHECK(m != NULL);
    if (!m)
        return;
    size_t n = 0, kn = 0;
    const void *mk = mp_manager_authkey(m, &n);
    const void *k = mp_current_process_authkey(&kn);
    CHECK(n == kn && memcmp(mk, k, n) == 0);
    mp_manager *c = mp_manager_connect(mp_manager_address(m), NULL, 0, 10);
    CHECK(c != NULL);
    mp_manager_free(c);
    mp_value *a = mp_value_pack("[s]", mp_manager_address(m));
    FOR_EACH_METHOD(meth)
        CHECK_INT(run_code(*meth, t_connect_default_key, a, NULL, 0), 0);
    CHECK_INT(run_code("spawn", t_connect_default_key, a, "other", 5), 1);
    mp_value_free(a);
    mp_manager_free(m);
}

int main(int argc, char **argv)
{
    const char *bindir = getenv("MP_TEST_BINDIR");
    snprintf(preload_path, sizeof preload_path, "%s/libmptest_targets.so",
             bindir ? bindir : ".");
    const char *libs[] = {"libno-such-library.so.9", preload_path}; /* a miss is skipped */
    CHECK_OK(mp_set_forkserver_preload(libs, 2));
    /* The forkserver holds one fd for the program's life: start it before the leak
     * checks record the fds. */
    CHECK_OK(mp_forkserver_ensure_running());
    RUN_IF(argc, argv, test_forkserver_preload);
    RUN_IF(argc, argv, test_authkey);
    RUN_IF(argc, argv, test_parent_process);
    RUN_IF(argc, argv, test_all_start_methods);
    RUN_IF(argc, argv, test_set_executable);
    RUN_IF(argc, argv, test_manager_uses_authkey);
    return mpt_done();
}
