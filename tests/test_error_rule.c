/* "Only failures set the last error" (error.h, DESIGN.md): a broad set of public calls
 * that succeed, across modules, each with the error cleared before it and checked
 * after it. An internal attempt that fails on the way to a success (the encoder's
 * stack probe, a first try with a fallback, a symbol lookup a barrier import may miss)
 * must not leave its message behind. */
#include "test_util.h"

#include "internal/tracker.h"

#include <fcntl.h>
#include <stdatomic.h>

/* A call returning an int that must succeed and leave no error behind. */
#define OK_CLEAN(expr)                                                                   \
    do {                                                                                 \
        mp_clear_error();                                                                \
        long long mpt_r = (long long)(expr);                                             \
        mpt_checks++;                                                                    \
        if (mpt_r < 0 || mp_last_error_code() != 0) {                                    \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] %s returned %lld, last error %s: %s\n",           \
                    __FILE__, __LINE__, mpt_current, #expr, mpt_r,                       \
                    mp_errname(mp_last_error_code()), mp_last_error());                  \
        }                                                                                \
    } while (0)

/* A call returning a pointer that must be non-NULL and leave no error behind. */
#define PTR_CLEAN(var, expr)                                                             \
    do {                                                                                 \
        mp_clear_error();                                                                \
        var = (expr);                                                                    \
        mpt_checks++;                                                                    \
        if (!(var) || mp_last_error_code() != 0) {                                       \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] %s gave %p, last error %s: %s\n", __FILE__,       \
                    __LINE__, mpt_current, #expr, (void *)(var),                         \
                    mp_errname(mp_last_error_code()), mp_last_error());                  \
        }                                                                                \
    } while (0)

static int action_runs;
static int count_action(void *arg)
{
    (void)arg;
    action_runs++;
    return 0;
}

/* The child uses every handle it got, then exits 0. */
static int use_handles(mp_value *args)
{
    void *lock = NULL, *q = NULL, *b = NULL, *ev = NULL;
    if (mp_value_unpack(args, "[h h h h]", &mp_kind_lock, &lock, &mp_kind_queue, &q,
                        &mp_kind_barrier, &b, &mp_kind_event, &ev) < 0)
        return 2;
    if (mp_lock_acquire(lock, 10) < 0 || mp_lock_release(lock) < 0)
        return 3;
    mp_value *v = mp_value_pack("[i s]", 7, "from child");
    int r = mp_queue_put(q, v, 10);
    mp_value_free(v);
    if (r < 0 || mp_event_set(ev) < 0)
        return 4;
    return 0;
}

static void process_case(const char *method)
{
    mp_lock *lock;
    mp_queue *q;
    mp_barrier *b;
    mp_event *ev;
    mp_process *p;
    mp_value *args, *got = NULL;
    PTR_CLEAN(lock, mp_lock_new());
    PTR_CLEAN(q, mp_queue_new(NULL));
    mp_barrier_opts bo = {.parties = 1, .action = count_action};
    PTR_CLEAN(b, mp_barrier_new(&bo));
    PTR_CLEAN(ev, mp_event_new());
    PTR_CLEAN(args, mp_value_pack("[h h h h]", &mp_kind_lock, lock, &mp_kind_queue, q,
                                  &mp_kind_barrier, b, &mp_kind_event, ev));
    mp_process_opts o = {.target = use_handles, .args = args, .ctx = mp_get_context(method)};
    PTR_CLEAN(p, mp_process_new(&o));
    OK_CLEAN(mp_process_start(p));
    OK_CLEAN(mp_event_wait(ev, 30));
    OK_CLEAN(mp_queue_get(q, &got, 30));
    CHECK_STR(mpt_repr(got), "[7, 'from child']");
    OK_CLEAN(mp_process_join(p, 30));
    int code = -1;
    OK_CLEAN(mp_process_exitcode(p, &code));
    CHECK_INT(code, 0);
    OK_CLEAN(mp_barrier_wait(b, 1));
    mp_value_free(got);
    mp_value_free(args);
    mp_process_free(p);
    mp_event_free(ev);
    mp_barrier_free(b);
    mp_queue_free(q);
    mp_lock_free(lock);
}

static void test_process_fork(void) { process_case("fork"); }
static void test_process_spawn(void) { process_case("spawn"); }
static void test_process_forkserver(void) { process_case("forkserver"); }

static void test_values(void)
{
    mp_value *v, *back;
    char big[4000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    /* a value larger than the encoder's stack buffer: the probe overflows first */
    PTR_CLEAN(v, mp_value_pack("[i f s b n {s:i}]", 1, 2.5, big, true, "k", 3));
    char *buf = NULL;
    size_t len = 0, nfds = 0;
    OK_CLEAN(mp_value_encode(v, &buf, &len, NULL, 0, &nfds));
    OK_CLEAN(mp_value_decode(buf, len, NULL, 0, &back));
    CHECK(mp_value_equal(v, back));
    char *r;
    PTR_CLEAN(r, mp_value_repr(back));
    mp_free(r);
    mp_free(buf);
    mp_value_free(back);
    mp_value_free(v);

    /* a list holding a handle: the probe meets the handle first */
    mp_lock *l = mp_lock_new();
    PTR_CLEAN(v, mp_value_pack("[i h]", 1, &mp_kind_lock, l));
    int fds[8];
    OK_CLEAN(mp_value_encode(v, &buf, &len, fds, 8, &nfds));
    CHECK_INT(nfds, 1);
    int dupfd = dup(fds[0]);
    OK_CLEAN(mp_value_decode(buf, len, &dupfd, 1, &back));
    mp_free(buf);
    mp_value_free(back);
    mp_value_free(v);
    mp_lock_free(l);
}

static void test_queue(void)
{
    mp_queue *q;
    mp_queue_opts o = {.maxsize = 4};
    PTR_CLEAN(q, mp_joinable_queue_new(&o));
    char big[100000];
    memset(big, 'y', sizeof big);
    mp_value *small = mp_value_int(5), *large = mp_value_bytes(big, sizeof big), *got = NULL;
    OK_CLEAN(mp_queue_put(q, small, 1));
    OK_CLEAN(mp_queue_put(q, large, 1));
    OK_CLEAN(mp_queue_put_bytes(q, "raw", 3, 1));
    OK_CLEAN(mp_queue_get(q, &got, 1));
    CHECK(mp_value_equal(got, small));
    mp_value_free(got);
    OK_CLEAN(mp_queue_get(q, &got, 1));
    CHECK(mp_value_equal(got, large));
    mp_value_free(got);
    void *buf = NULL;
    size_t len = 0;
    OK_CLEAN(mp_queue_get_bytes(q, &buf, &len, 1));
    mp_free(buf);
    for (int i = 0; i < 3; i++)
        OK_CLEAN(mp_queue_task_done(q));
    OK_CLEAN(mp_queue_join(q, 1));
    OK_CLEAN((int)mp_queue_qsize(q));
    mp_value_free(small);
    mp_value_free(large);
    mp_queue_free(q);
}

static void test_connection_and_listener(void)
{
    mp_connection *a, *b;
    OK_CLEAN(mp_pipe(true, &a, &b));
    char big[300000];
    memset(big, 'z', sizeof big);
    mp_value *v = mp_value_pack("[s i]", "hi", 3), *got = NULL;
    OK_CLEAN(mp_connection_send(a, v));
    OK_CLEAN(mp_connection_poll(b, 1) == 1 ? 0 : -1);
    OK_CLEAN(mp_connection_recv(b, &got));
    CHECK(mp_value_equal(v, got));
    mp_value_free(got);
    mp_value_free(v);
    OK_CLEAN(mp_connection_send_bytes(b, "0123456789", 2, 5));
    void *buf = NULL;
    size_t len = 0;
    OK_CLEAN(mp_connection_recv_bytes(a, 0, &buf, &len));
    CHECK_INT(len, 5);
    mp_free(buf);
    mp_connection_free(a);
    mp_connection_free(b);

    mp_listener *l;
    mp_listener_opts lo = {.address = "127.0.0.1:0", .authkey = "key", .authkey_len = 3};
    PTR_CLEAN(l, mp_listener_new(&lo));
    if (!l)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        mp_client_opts co = {.authkey = "key", .authkey_len = 3};
        mp_connection *c = mp_client(mp_listener_address(l), &co);
        _exit(!c || mp_connection_send_bytes(c, "x", 0, 1) < 0);
    }
    mp_connection *c = NULL;
    OK_CLEAN(mp_listener_accept(l, 30, &c));
    OK_CLEAN(mp_connection_recv_bytes(c, 0, &buf, &len));
    mp_free(buf);
    int st = -1;
    waitpid(pid, &st, 0);
    CHECK_INT(st, 0);
    mp_connection_free(c);
    mp_listener_free(l);
}

static void test_shared_memory(void)
{
    mp_shm *m, *m2;
    PTR_CLEAN(m, mp_shm_create(NULL, 4096, NULL));
    PTR_CLEAN(m2, mp_shm_attach(mp_shm_name(m)));
    mp_shm_close(m2);
    OK_CLEAN(mp_shm_unlink(m));
    mp_shm_close(m);
    mp_shared *s;
    int64_t init = 4;
    PTR_CLEAN(s, mp_shared_value_new('q', &init, NULL));
    OK_CLEAN(mp_shared_set_int(s, 0, 9));
    mp_shared_free(s);
    mp_sl_item items[2] = {mp_sl_int(1), mp_sl_float(2.0)};
    mp_sl *sl;
    PTR_CLEAN(sl, mp_sl_create(items, 2, NULL, NULL));
    if (sl) {
        OK_CLEAN(mp_shm_unlink(mp_sl_shm(sl)));
        mp_sl_close(sl);
    }
}

static void test_subprocess(void)
{
    mp_run_result res = {0};
    mp_subprocess_opts o = {.capture_output = true};
    const char *argv[] = {"sh", "-c", "echo out; echo err >&2", NULL};
    OK_CLEAN(mp_run(argv, &o, &res));
    CHECK_STR(res.out, "out\n");
    mp_run_result_free(&res);
    const char *missing_path_first[] = {"true", NULL};
    OK_CLEAN(mp_run(missing_path_first, NULL, &res)); /* PATH search tries directories */
    mp_run_result_free(&res);
    char *out = NULL;
    size_t len = 0;
    OK_CLEAN(mp_check_output_sh("printf abc", NULL, &out, &len));
    mp_free(out);
    mp_popen *p;
    mp_subprocess_opts po = {.in = MP_STDIO_PIPE, .out = MP_STDIO_PIPE};
    PTR_CLEAN(p, mp_popen_start((const char *const[]){"cat", NULL}, &po));
    OK_CLEAN(mp_popen_communicate(p, "hello", 5, 10, &res));
    CHECK_STR(res.out, "hello");
    mp_run_result_free(&res);
    mp_popen_free(p);
}

static void test_sync_objects(void)
{
    mp_semaphore *s;
    mp_condition *c;
    mp_lock *r;
    PTR_CLEAN(s, mp_bounded_semaphore_new(2));
    OK_CLEAN(mp_semaphore_acquire(s, 1));
    OK_CLEAN(mp_semaphore_release(s));
    PTR_CLEAN(r, mp_rlock_new());
    OK_CLEAN(mp_lock_acquire(r, 1));
    OK_CLEAN(mp_lock_acquire(r, 1));
    OK_CLEAN(mp_lock_release(r));
    OK_CLEAN(mp_lock_release(r));
    PTR_CLEAN(c, mp_condition_new(r));
    OK_CLEAN(mp_condition_acquire(c, 1));
    OK_CLEAN(mp_condition_notify_all(c));
    OK_CLEAN(mp_condition_release(c));
    mp_condition_free(c);
    mp_lock_free(r);
    mp_semaphore_free(s);
}

static void test_info_and_signals(void)
{
    mp_proc_info in;
    OK_CLEAN(mp_proc_info_get(getpid(), &in));
    mp_proc_info_free(&in);
    OK_CLEAN(mp_signal_set_default(SIGUSR2));
    OK_CLEAN(mp_signal_from_name("SIGTERM"));
}

int main(int argc, char **argv)
{
    CHECK_OK(mp_forkserver_ensure_running());
    CHECK_OK(mp__tracker_ensure_running());
    RUN_IF(argc, argv, test_values);
    RUN_IF(argc, argv, test_queue);
    RUN_IF(argc, argv, test_connection_and_listener);
    RUN_IF(argc, argv, test_shared_memory);
    RUN_IF(argc, argv, test_subprocess);
    RUN_IF(argc, argv, test_sync_objects);
    RUN_IF(argc, argv, test_info_and_signals);
    RUN_IF(argc, argv, test_process_fork);
    RUN_IF(argc, argv, test_process_spawn);
    RUN_IF(argc, argv, test_process_forkserver);
    return mpt_done();
}
