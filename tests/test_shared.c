/* Value, Array, raw variants, structs, SharedMemory and ShareableList; passing all of
 * them (and the sync objects) to children under fork, spawn and forkserver. */
#include "test_util.h"
#include "internal/tracker.h"
#include "multiproc/process.h"
#include "multiproc/shared.h"
#include "multiproc/sync.h"

#include <stdatomic.h>
#include <sys/mman.h>

static const char *const methods[] = {"fork", "spawn", "forkserver"};
#define FOR_EACH_METHOD(m) for (const char *const *m = methods; m < methods + 3; m++)

/* Run target(args) in a child with the given start method; its exit code. */
static int run_child(const char *method, mp_target_fn target, mp_value *args)
{
    mp_process_opts o = {.target = target, .args = args, .ctx = mp_get_context(method)};
    mp_process *p = mp_process_new(&o);
    int code = -1000;
    if (p && mp_process_start(p) == 0 && mp_process_join(p, 30) == 0)
        mp_process_exitcode(p, &code);
    else
        fprintf(stderr, "  run_child(%s): %s\n", method, mp_last_error());
    mp_process_free(p);
    mp_value_free(args);
    return code;
}

/* ---- Value / Array ---------------------------------------------------------------- */

static void test_typecodes(void)
{
    const char *codes = "bBhHiIlLqQfdc";
    size_t sizes[] = {1, 1, 2, 2, 4, 4, 8, 8, 8, 8, 4, 8, 1};
    for (size_t i = 0; codes[i]; i++)
        CHECK_INT(mp_typecode_size(codes[i]), sizes[i]);
    CHECK_INT(mp_typecode_size('x'), 0);
    CHECK(mp_shared_value_new('x', NULL, NULL) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "unknown typecode 'x'");
    CHECK(mp_shared_array_new('i', 0, NULL, NULL) == NULL);
}

static void test_value_basic(void)
{
    double d = 0.0;
    mp_shared *v = mp_shared_value_new('d', &d, NULL);
    CHECK(v != NULL);
    CHECK_INT(mp_shared_typecode(v), 'd');
    CHECK_INT(mp_shared_len(v), 1);
    CHECK_INT(mp_shared_itemsize(v), 8);
    CHECK(mp_shared_get_lock(v) != NULL);
    CHECK(mp_lock_is_recursive(mp_shared_get_lock(v))); /* Python's default: RLock */
    CHECK_OK(mp_shared_set_float(v, 0, 3.1415927));
    CHECK(mp_shared_get_float(v, 0) == 3.1415927);
    CHECK(*(double *)mp_shared_ptr(v) == 3.1415927);
    CHECK_OK(mp_shared_set_int(v, 0, 7));
    CHECK_INT(mp_shared_get_int(v, 0), 7);
    CHECK_ERR(mp_shared_set_float(v, 1, 1.0), MP_ERANGE);
    CHECK_INT(mp_shared_get_int(v, 5), 0);
    CHECK_INT(mp_last_error_code(), MP_ERANGE);
    /* the helpers work while the caller holds the lock */
    CHECK_OK(mp_shared_acquire(v, -1));
    CHECK_OK(mp_shared_set_float(v, 0, 2.5));
    CHECK_OK(mp_shared_release(v));
    CHECK(!mp_lock_is_locked(mp_shared_get_lock(v)));
    mp_shared_free(v);

    int8_t b = -5;
    mp_shared *vb = mp_shared_value_new('b', &b, NULL);
    CHECK_INT(mp_shared_get_int(vb, 0), -5);
    CHECK_ERR(mp_shared_set_int(vb, 0, 300), MP_ERANGE);
    CHECK_CONTAINS(mp_last_error(), "does not fit typecode 'b'");
    CHECK_ERR(mp_shared_set_float(vb, 0, 1.5), MP_ETYPE);
    CHECK_OK(mp_shared_set_int(vb, 0, -128));
    CHECK_INT(mp_shared_get_int(vb, 0), -128);
    mp_shared_free(vb);

    mp_shared *c = mp_shared_value_new('c', "x", NULL);
    CHECK_INT(mp_shared_get_int(c, 0), 'x');
    mp_shared_free(c);

    mp_shared *raw = mp_raw_value_new('Q', NULL);
    CHECK(mp_shared_get_lock(raw) == NULL);
    CHECK_OK(mp_shared_acquire(raw, -1)); /* no lock: nothing to do */
    CHECK_ERR(mp_shared_set_int(raw, 0, -1), MP_ERANGE);
    CHECK_OK(mp_shared_set_int(raw, 0, INT64_MAX));
    CHECK(mp_shared_get_float(raw, 0) > 9e18);
    mp_shared_free(raw);
    mp_shared_free(NULL);
}

static void test_array_basic(void)
{
    int init[10];
    for (int i = 0; i < 10; i++)
        init[i] = i;
    mp_shared *a = mp_shared_array_new('i', 10, init, NULL);
    CHECK_INT(mp_shared_len(a), 10);
    int *p = mp_shared_ptr(a);
    CHECK_INT(p[9], 9);
    int out[3];
    CHECK_OK(mp_shared_read(a, 7, 3, out));
    CHECK_INT(out[0], 7);
    CHECK_INT(out[2], 9);
    CHECK_ERR(mp_shared_read(a, 8, 3, out), MP_ERANGE);
    int in[2] = {-1, -2};
    CHECK_OK(mp_shared_write(a, 0, 2, in));
    CHECK_INT(mp_shared_get_int(a, 1), -2);
    CHECK_ERR(mp_shared_write(a, 9, 2, in), MP_ERANGE);
    mp_shared_free(a);

    mp_shared *z = mp_raw_array_new('f', 4, NULL);
    CHECK(mp_shared_get_float(z, 3) == 0.0f);
    CHECK_OK(mp_shared_set_float(z, 3, 0.5));
    CHECK(((float *)mp_shared_ptr(z))[3] == 0.5f);
    mp_shared_free(z);
}

struct point {
    int x, y;
    double w;
};

static void test_struct_and_external_lock(void)
{
    struct point pt = {1, 2, 0.5};
    mp_shared *s = mp_shared_struct_new(sizeof pt, &pt, NULL);
    struct point *q = mp_shared_ptr(s);
    CHECK_INT(q->y, 2);
    CHECK_INT(mp_shared_typecode(s), 0);
    CHECK_INT(mp_shared_itemsize(s), sizeof pt);
    CHECK_ERR(mp_shared_set_int(s, 0, 1), MP_ETYPE);
    CHECK_INT((uintptr_t)q % 64, 0);
    mp_shared_free(s);

    mp_lock *l = mp_lock_new();
    mp_shared_opts o = {.lock = l};
    mp_shared *v = mp_shared_value_new('i', NULL, &o);
    CHECK(mp_shared_get_lock(v) == l);
    CHECK_OK(mp_lock_acquire(l, -1));
    CHECK_OK(mp_shared_set_int(v, 0, 5)); /* held by us: a plain Lock does not deadlock */
    CHECK_OK(mp_lock_release(l));
    mp_lock_free(l); /* v keeps its reference */
    CHECK_OK(mp_shared_acquire(v, 0));
    CHECK_OK(mp_shared_release(v));
    mp_shared_free(v);
}

/* ---- the seed's example under every start method -------------------------------------- */

static int negate_target(mp_value *args)
{
    mp_shared *num = NULL, *arr = NULL;
    if (mp_value_unpack(args, "[h h]", &mp_kind_shared, &num, &mp_kind_shared, &arr) < 0)
        return 2;
    mp_shared_set_float(num, 0, 3.1415927);
    int *a = mp_shared_ptr(arr);
    mp_shared_acquire(arr, -1);
    for (size_t i = 0; i < mp_shared_len(arr); i++)
        a[i] = -a[i];
    mp_shared_release(arr);
    return 0;
}

static void test_value_array_in_children(void)
{
    FOR_EACH_METHOD(m)
    {
        double zero = 0;
        int init[10];
        for (int i = 0; i < 10; i++)
            init[i] = i;
        mp_shared *num = mp_shared_value_new('d', &zero, NULL);
        mp_shared *arr = mp_shared_array_new('i', 10, init, NULL);
        CHECK_INT(run_child(*m, negate_target,
                            mp_value_pack("[h h]", &mp_kind_shared, num, &mp_kind_shared, arr)),
                  0);
        CHECK(mp_shared_get_float(num, 0) == 3.1415927);
        int out[10];
        mp_shared_read(arr, 0, 10, out);
        for (int i = 0; i < 10; i++)
            CHECK_INT(out[i], -i);
        mp_shared_free(num);
        mp_shared_free(arr);
    }
}

static int count_target(mp_value *args)
{
    mp_shared *v = NULL;
    int64_t n = 0;
    if (mp_value_unpack(args, "[h I]", &mp_kind_shared, &v, &n) < 0)
        return 2;
    long *p = mp_shared_ptr(v);
    for (int64_t i = 0; i < n; i++) {
        if (mp_shared_acquire(v, -1) < 0)
            return 3;
        ++*(volatile long *)p;
        mp_shared_release(v);
    }
    return 0;
}

static void test_counter_under_lock(void)
{
    mp_shared *v = mp_shared_value_new('l', NULL, NULL);
    mp_process *ps[3];
    for (int i = 0; i < 3; i++) {
        mp_value *args = mp_value_pack("[h I]", &mp_kind_shared, v, (int64_t)20000);
        mp_process_opts o = {.target = count_target, .args = args,
                             .ctx = mp_get_context(methods[i])};
        ps[i] = mp_process_new(&o);
        mp_value_free(args);
        CHECK_OK(mp_process_start(ps[i]));
    }
    for (int i = 0; i < 3; i++) {
        int code = -1;
        CHECK_OK(mp_process_join(ps[i], 30));
        CHECK_OK(mp_process_exitcode(ps[i], &code));
        CHECK_INT(code, 0);
        mp_process_free(ps[i]);
    }
    CHECK_INT(mp_shared_get_int(v, 0), 60000);
    mp_shared_free(v);
}

static int hold_value_lock_and_die(mp_value *args)
{
    mp_shared *v = NULL;
    mp_value_unpack(args, "[h]", &mp_kind_shared, &v);
    mp_shared_acquire(v, -1);
    mp_shared_set_int(v, 0, 1);
    raise(SIGKILL);
    return 0;
}

static void test_value_lock_holder_killed(void)
{
    FOR_EACH_METHOD(m)
    {
        mp_shared *v = mp_shared_value_new('i', NULL, NULL);
        CHECK_INT(run_child(*m, hold_value_lock_and_die, mp_value_pack("[h]", &mp_kind_shared, v)),
                  -SIGKILL);
        CHECK_INT(mp_shared_get_int(v, 0), 1); /* the helper recovers the lock */
        CHECK_OK(mp_shared_set_int(v, 0, 2));
        CHECK_OK(mp_shared_acquire(v, 1));
        CHECK_OK(mp_shared_release(v));
        mp_shared_free(v);
    }
}

/* ---- sync objects in children under spawn/forkserver ------------------------------------ */

static int sync_target(mp_value *args)
{
    mp_lock *l = NULL;
    mp_semaphore *s = NULL;
    mp_event *e = NULL;
    mp_condition *c = NULL;
    mp_barrier *b = NULL;
    if (mp_value_unpack(args, "[h h h h h]", &mp_kind_lock, &l, &mp_kind_semaphore, &s,
                        &mp_kind_event, &e, &mp_kind_condition, &c, &mp_kind_barrier, &b) < 0)
        return 2;
    if (mp_lock_acquire(l, 10) != 0)
        return 3;
    mp_lock_release(l);
    if (mp_semaphore_release(s) != 0)
        return 4;
    if (mp_event_wait(e, 10) != 0)
        return 5;
    mp_condition_acquire(c, -1);
    mp_condition_notify_all(c);
    mp_condition_release(c);
    int idx = mp_barrier_wait(b, 10);
    return idx >= 0 ? 0 : 6;
}

static void test_sync_objects_in_children(void)
{
    FOR_EACH_METHOD(m)
    {
        mp_lock *l = mp_lock_new();
        mp_semaphore *s = mp_semaphore_new(0);
        mp_event *e = mp_event_new();
        mp_condition *c = mp_condition_new(NULL);
        mp_barrier_opts bo = {.parties = 2};
        mp_barrier *b = mp_barrier_new(&bo);
        mp_value *args = mp_value_pack("[h h h h h]", &mp_kind_lock, l, &mp_kind_semaphore, s,
                                       &mp_kind_event, e, &mp_kind_condition, c,
                                       &mp_kind_barrier, b);
        mp_process_opts o = {.target = sync_target, .args = args, .ctx = mp_get_context(*m)};
        mp_process *p = mp_process_new(&o);
        mp_value_free(args);
        CHECK_OK(mp_lock_acquire(l, -1));
        CHECK_OK(mp_process_start(p));
        /* the child is asleep waiting for the lock we hold */
        CHECK_OK(mpt_wait_blocked(mp_process_pid(p), 0, "futex", 30));
        CHECK_OK(mp_lock_release(l));
        CHECK_OK(mp_semaphore_acquire(s, 10));
        CHECK_OK(mp_condition_acquire(c, -1));
        CHECK_OK(mp_event_set(e));
        CHECK_OK(mp_condition_wait(c, 10));
        CHECK_OK(mp_condition_release(c));
        CHECK(mp_barrier_wait(b, 10) >= 0);
        int code = -1;
        CHECK_OK(mp_process_join(p, 30));
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 0);
        mp_process_free(p);
        mp_lock_free(l);
        mp_semaphore_free(s);
        mp_event_free(e);
        mp_condition_free(c);
        mp_barrier_free(b);
    }
}

/* A barrier party started with spawn is killed while waiting: we get MP_EBROKEN. */

static int barrier_die_early(mp_value *args)
{
    mp_barrier *b = NULL;
    mp_value_unpack(args, "[h]", &mp_kind_barrier, &b);
    raise(SIGKILL); /* imported the barrier, never arrives */
    return 0;
}

static void test_barrier_party_killed_in_child(void)
{

    FOR_EACH_METHOD(m)
    {
        mp_barrier_opts bo = {.parties = 2};
        mp_barrier *b = mp_barrier_new(&bo);
        mp_value *args = mp_value_pack("[h]", &mp_kind_barrier, b);
        mp_process_opts o = {.target = barrier_die_early, .args = args, .ctx = mp_get_context(*m)};
        mp_process *p = mp_process_new(&o);
        mp_value_free(args);
        CHECK_OK(mp_process_start(p));
        double t0 = mpt_now();
        CHECK_ERR(mp_barrier_wait(b, 20), MP_EBROKEN);
        CHECK(mpt_now() - t0 < 10);
        CHECK_OK(mp_process_join(p, 30));
        mp_process_free(p);
        mp_barrier_free(b);
    }
}

/* ---- SharedMemory ------------------------------------------------------------------ */

static void test_shm_create_attach_unlink(void)
{
    mp_shm *a = mp_shm_create(NULL, 100, NULL);
    CHECK(a != NULL);
    /* generated names start with the run's MULTIPROC_SHM_PREFIX (test_util.h) */
    CHECK(strncmp(mp_shm_name(a), mpt_shm_prefix(), strlen(mpt_shm_prefix())) == 0);
    CHECK_INT(mp_shm_name(a)[strlen(mpt_shm_prefix())], '-');
    CHECK_INT(mp_shm_size(a), 100);
    memcpy(mp_shm_buf(a), "hello", 6);
    mp_shm *b = mp_shm_attach(mp_shm_name(a));
    CHECK(b != NULL);
    CHECK_STR(mp_shm_buf(b), "hello");
    CHECK_STR(mp_shm_name(b), mp_shm_name(a));
    CHECK(mp_shm_size(b) >= 100);
    mp_shm_close(b);

    char name[64];
    snprintf(name, sizeof name, "/%s-test-%d", mpt_shm_prefix(), (int)getpid());
    mp_shm *n = mp_shm_create(name, 10, NULL);
    CHECK(n != NULL);
    CHECK_STR(mp_shm_name(n), name + 1);
    CHECK(mp_shm_create(name + 1, 10, NULL) == NULL);
    CHECK_INT(mp_last_error_code(), -EEXIST);
    CHECK_OK(mp_shm_unlink(n));
    CHECK_ERR(mp_shm_unlink(n), -ENOENT);
    mp_shm_close(n);
    CHECK(mp_shm_attach(name) == NULL);
    CHECK_INT(mp_last_error_code(), -ENOENT);
    CHECK(mp_shm_create("a/b", 10, NULL) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    CHECK(mp_shm_create("", 10, NULL) == NULL);
    CHECK(mp_shm_create(NULL, 0, NULL) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    CHECK(mp_shm_attach(NULL) == NULL);

    CHECK_OK(mp_shm_unlink(a));
    CHECK_STR(mp_shm_buf(a), "hello"); /* still mapped */
    mp_shm_close(a);
    mp_shm_close(NULL);
}

static int shm_child(mp_value *args)
{
    mp_shm *m = NULL;
    const char *name = NULL;
    if (mp_value_unpack(args, "[h s]", &mp_kind_shm, &m, &name) < 0)
        return 2;
    if (strcmp(mp_shm_name(m), name) != 0)
        return 3;
    strcpy(mp_shm_buf(m), "from child");
    mp_shm *by_name = mp_shm_attach(name);
    if (!by_name)
        return 4;
    int ok = strcmp(mp_shm_buf(by_name), "from child") == 0;
    mp_shm_close(by_name);
    return ok ? 0 : 5;
}

static void test_shm_in_children(void)
{
    FOR_EACH_METHOD(m)
    {
        mp_shm *s = mp_shm_create(NULL, 4096, NULL);
        CHECK_INT(run_child(*m, shm_child,
                            mp_value_pack("[h s]", &mp_kind_shm, s, mp_shm_name(s))), 0);
        CHECK_STR(mp_shm_buf(s), "from child");
        CHECK_OK(mp_shm_unlink(s));
        mp_shm_close(s);
    }
}

/* ---- ShareableList ----------------------------------------------------------------- */

static void test_sl_basic(void)
{
    mp_sl_item items[] = {mp_sl_str("howdy"), mp_sl_bytes("HoWdY", 5), mp_sl_float(-273.154),
                          mp_sl_int(100), mp_sl_none(), mp_sl_bool(true), mp_sl_int(42)};
    mp_sl *l = mp_sl_create(items, 7, NULL, NULL);
    CHECK(l != NULL);
    CHECK_INT(mp_sl_len(l), 7);
    mp_sl_item it;
    CHECK_OK(mp_sl_get(l, 0, &it));
    CHECK_INT(it.type, MP_SL_STR);
    CHECK_STR(it.data, "howdy");
    CHECK_OK(mp_sl_get(l, 2, &it));
    CHECK(it.type == MP_SL_FLOAT && it.f == -273.154);
    CHECK_OK(mp_sl_get(l, -1, &it));
    CHECK(it.type == MP_SL_INT && it.i == 42);
    CHECK_OK(mp_sl_get(l, 4, &it));
    CHECK_INT(it.type, MP_SL_NONE);
    CHECK_OK(mp_sl_get(l, 5, &it));
    CHECK(it.type == MP_SL_BOOL && it.b);
    CHECK_ERR(mp_sl_get(l, 7, &it), MP_ERANGE);
    CHECK_ERR(mp_sl_get(l, -8, &it), MP_ERANGE);

    /* change types within a slot; too long a string does not fit */
    CHECK_OK(mp_sl_set(l, 3, &(mp_sl_item){.type = MP_SL_FLOAT, .f = 1.5}));
    CHECK_OK(mp_sl_get(l, 3, &it));
    CHECK(it.type == MP_SL_FLOAT && it.f == 1.5);
    CHECK_OK(mp_sl_set(l, 0, &(mp_sl_item){.type = MP_SL_STR, .data = "hi!", .len = 3}));
    CHECK_OK(mp_sl_set(l, 0, &(mp_sl_item){.type = MP_SL_STR, .data = "8 bytes!", .len = 8}));
    CHECK_ERR(mp_sl_set(l, 0, &(mp_sl_item){.type = MP_SL_STR, .data = "nine byte", .len = 9}),
              MP_ERANGE);
    CHECK_CONTAINS(mp_last_error(), "exceeds available storage");
    CHECK_OK(mp_sl_set(l, 4, &(mp_sl_item){.type = MP_SL_INT, .i = 7}));

    /* Python's layout keeps no length: trailing NULs are lost, in both languages */
    CHECK_OK(mp_sl_set(l, 1, &(mp_sl_item){.type = MP_SL_BYTES, .data = "ab\0\0", .len = 4}));
    CHECK_OK(mp_sl_get(l, 1, &it));
    CHECK(it.type == MP_SL_BYTES && it.len == 2 && memcmp(it.data, "ab", 2) == 0);
    CHECK_OK(mp_sl_set(l, 0, &(mp_sl_item){.type = MP_SL_STR, .data = "h\xc3\xa9llo", .len = 6}));
    CHECK_OK(mp_sl_get(l, 0, &it));
    CHECK_INT(it.len, 6);
    CHECK_STR(it.data, "h\xc3\xa9llo");

    mp_sl_item seven = mp_sl_int(7), fortytwo = mp_sl_float(42.0), missing = mp_sl_str("x");
    CHECK_INT(mp_sl_index(l, &seven), 4);
    CHECK_INT(mp_sl_index(l, &fortytwo), 6); /* 42.0 == 42 */
    CHECK_ERR(mp_sl_index(l, &missing), MP_ENOTFOUND);
    CHECK_INT(mp_sl_count(l, &seven), 1);

    mp_sl *b = mp_sl_attach(mp_shm_name(mp_sl_shm(l)));
    CHECK(b != NULL);
    CHECK_INT(mp_sl_len(b), 7);
    CHECK_OK(mp_sl_get(b, 4, &it));
    CHECK(it.type == MP_SL_INT && it.i == 7);
    mp_sl_close(b);

    mp_shm *other = mp_shm_create(NULL, 64, NULL);
    memset(mp_shm_buf(other), 0xff, 64); /* a length of -1 */
    CHECK(mp_sl_attach(mp_shm_name(other)) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EPROTO);
    mp_shm_unlink(other);
    mp_shm_close(other);

    CHECK_OK(mp_shm_unlink(mp_sl_shm(l)));
    mp_sl_close(l);

    mp_sl *empty = mp_sl_create(NULL, 0, NULL, NULL);
    CHECK(empty != NULL);
    CHECK_INT(mp_sl_len(empty), 0);
    mp_shm_unlink(mp_sl_shm(empty));
    mp_sl_close(empty);
}

static int sl_child(mp_value *args)
{
    mp_sl *l = NULL;
    if (mp_value_unpack(args, "[h]", &mp_kind_sl, &l) < 0)
        return 2;
    mp_sl_item it;
    if (mp_sl_get(l, 0, &it) < 0 || it.type != MP_SL_INT)
        return 3;
    mp_sl_item s = mp_sl_str("done");
    return mp_sl_set(l, 1, &s) == 0 ? (int)it.i : 4;
}

static void test_sl_in_children(void)
{
    FOR_EACH_METHOD(m)
    {
        mp_sl_item items[] = {mp_sl_int(17), mp_sl_str("pending")};
        mp_sl *l = mp_sl_create(items, 2, NULL, NULL);
        CHECK_INT(run_child(*m, sl_child, mp_value_pack("[h]", &mp_kind_sl, l)), 17);
        mp_sl_item it;
        CHECK_OK(mp_sl_get(l, 1, &it));
        CHECK_STR(it.data, "done");
        mp_shm_unlink(mp_sl_shm(l));
        mp_sl_close(l);
    }
}

/* ---- ShareableList with Python (tests/py_sl.py holds the other side's lists) --------- */

static int py_sl(const char *mode, const char *name, char *out, size_t cap)
{
    char cmd[1024];
    const char *src = getenv("MP_SOURCE_DIR");
    snprintf(cmd, sizeof cmd, "timeout 60 python3 %s/tests/py_sl.py %s %s 2>&1", src ? src : "..", mode,
             name);
    FILE *f = popen(cmd, "r");
    if (!f)
        return -1;
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = 0;
    int st = pclose(f);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "  py_sl.py %s: %s\n", mode, out);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void check_item(const mp_sl *l, long i, mp_sl_type type, const void *data, size_t len)
{
    mp_sl_item it;
    CHECK_OK(mp_sl_get(l, i, &it));
    CHECK_INT(it.type, type);
    if (it.type == type && (type == MP_SL_STR || type == MP_SL_BYTES)) {
        CHECK_INT(it.len, len);
        CHECK(it.len == len && memcmp(it.data, data, len) == 0);
    }
}

static void test_sl_python(void)
{
    char out[4096];
    /* C makes it, Python reads every item and writes its own */
    mp_sl_item items[] = {mp_sl_int(42), mp_sl_int(INT64_MIN), mp_sl_int(INT64_MAX),
                          mp_sl_float(1.5), mp_sl_bool(true), mp_sl_bool(false), mp_sl_none(),
                          mp_sl_str(""), mp_sl_str("h\xc3\xa9llo \xf0\x9f\x98\x80"),
                          mp_sl_str("xxxxxxxx"), mp_sl_bytes("", 0), mp_sl_bytes("\0\xff", 2),
                          mp_sl_bytes("yyyyyyyyy", 9), mp_sl_bytes(NULL, 0)};
    static char zs[1000];
    memset(zs, 'z', sizeof zs);
    items[13] = mp_sl_bytes(zs, sizeof zs);
    mp_sl *l = mp_sl_create(items, 14, NULL, NULL);
    CHECK(l != NULL);
    if (!l)
        return;
    CHECK_INT(py_sl("read-c", mp_shm_name(mp_sl_shm(l)), out, sizeof out), 0);
    check_item(l, 0, MP_SL_STR, "py", 2);
    mp_sl_item it;
    CHECK_OK(mp_sl_get(l, 1, &it));
    CHECK(it.type == MP_SL_FLOAT && it.f == 2.25);
    check_item(l, 3, MP_SL_NONE, NULL, 0);
    CHECK_OK(mp_sl_get(l, 4, &it));
    CHECK(it.type == MP_SL_INT && it.i == 7);
    check_item(l, 7, MP_SL_BYTES, "1234567", 7);
    CHECK_OK(mp_sl_get(l, 8, &it));
    CHECK(it.type == MP_SL_BOOL && !it.b);
    memset(zs, 'w', sizeof zs);
    check_item(l, 13, MP_SL_STR, zs, sizeof zs);
    CHECK_OK(mp_sl_get(l, 2, &it));
    CHECK(it.type == MP_SL_INT && it.i == INT64_MAX); /* untouched */
    mp_shm_unlink(mp_sl_shm(l));
    mp_sl_close(l);

    /* Python makes it, C reads every item and writes, Python checks and unlinks */
    char name[64];
    snprintf(name, sizeof name, "mpt_pysl_%d", (int)getpid());
    CHECK_INT(py_sl("create", name, out, sizeof out), 0);
    l = mp_sl_attach(name);
    CHECK(l != NULL);
    if (!l)
        return;
    CHECK_INT(mp_sl_len(l), 10);
    CHECK_OK(mp_sl_get(l, 0, &it));
    CHECK(it.type == MP_SL_INT && it.i == 1);
    CHECK_OK(mp_sl_get(l, 1, &it));
    CHECK(it.type == MP_SL_FLOAT && it.f == 2.5);
    CHECK_OK(mp_sl_get(l, 2, &it));
    CHECK(it.type == MP_SL_BOOL && it.b);
    check_item(l, 3, MP_SL_NONE, NULL, 0);
    check_item(l, 4, MP_SL_STR, "str", 3);
    check_item(l, 5, MP_SL_BYTES, "bytes", 5);
    check_item(l, 6, MP_SL_STR, "xxxxxxxxxxxxxxx", 15);
    check_item(l, 7, MP_SL_BYTES, "\0\0\0a", 4);
    CHECK_OK(mp_sl_get(l, 8, &it));
    CHECK(it.type == MP_SL_INT && it.i == -7);
    CHECK_OK(mp_sl_get(l, 9, &it));
    CHECK(it.type == MP_SL_BYTES && it.len == 9999991);
    mp_sl_item w[] = {mp_sl_str("c!"), mp_sl_none(), mp_sl_int(3), mp_sl_float(0.5),
                      mp_sl_bytes("c-bytes", 7), mp_sl_bool(true), mp_sl_str("yyyyyyyyyyyyyyyy"),
                      mp_sl_none(), mp_sl_str("from C")};
    long at[] = {0, 1, 2, 3, 4, 5, 6, -1, 8};
    for (size_t i = 0; i < 9; i++)
        if (at[i] >= 0)
            CHECK_OK(mp_sl_set(l, at[i], &w[i]));
    /* a 3-char str slot holds 8 bytes, as in Python */
    mp_sl_item nine = mp_sl_str("123456789");
    CHECK_ERR(mp_sl_set(l, 4, &nine), MP_ERANGE);
    mp_sl_close(l);
    CHECK_INT(py_sl("verify", name, out, sizeof out), 0);
    CHECK(mp_sl_attach(name) == NULL); /* Python unlinked it */

    /* the largest item Python's format allows, and one more */
    static char big[9999992];
    memset(big, 'b', sizeof big);
    mp_sl_item bi = mp_sl_bytes(big, 9999991);
    l = mp_sl_create(&bi, 1, NULL, NULL);
    CHECK(l != NULL);
    mp_shm_unlink(mp_sl_shm(l));
    mp_sl_close(l);
    bi.len = 9999992;
    CHECK_NULL_ERR(mp_sl_create(&bi, 1, NULL, NULL), MP_ERANGE);
}

/* A handle whose segment header lies about its size is refused (MP_EPROTO), never
 * trusted: a length whose product with itemsize wraps around to a small number passed
 * the old check, and every later access read past the segment. */
static void corrupt_and_import(mp_shared *a, size_t field_off, uint64_t bad, const char *what)
{
    void *data = NULL;
    size_t len = 0, nfds = 0;
    int fds[MP_KIND_MAX_FDS];
    CHECK_OK(mp_kind_shared.export_obj(a, &data, &len, fds, &nfds));
    int fd = dup(fds[0]);
    char *hdr = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    CHECK(hdr != MAP_FAILED);
    uint64_t saved;
    memcpy(&saved, hdr + field_off, 8);
    memcpy(hdr + field_off, &bad, 8);
    void *obj = NULL;
    int r = mp_kind_shared.import_obj(data, len, &fd, 1, &obj);
    if (r != MP_EPROTO)
        fprintf(stderr, "  corrupt %s: import gave %d\n", what, r);
    CHECK_ERR(r, MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "not a shared object segment");
    CHECK(obj == NULL);
    if (obj)
        mp_shared_free(obj);
    memcpy(hdr + field_off, &saved, 8);
    munmap(hdr, 4096);
    free(data);
}

static void test_import_checks_header(void)
{
    mp_shared *a;
    CHECK_NEW(a, mp_shared_array_new('q', 4, NULL, NULL));
    if (!a)
        return;
    /* the header (src/shared/shared.c): the 64-byte lock line, then magic and typecode
     * (u32 each), itemsize, length and data_off (u64 each) */
    size_t itemoff = 72, lenoff = 80, offoff = 88;
    {
        void *data = NULL;
        size_t len = 0, nfds = 0;
        int fds[MP_KIND_MAX_FDS];
        CHECK_OK(mp_kind_shared.export_obj(a, &data, &len, fds, &nfds));
        uint64_t *h = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fds[0], 0);
        CHECK(h != MAP_FAILED);
        CHECK_INT(h[itemoff / 8], 8); /* the layout this test assumes */
        CHECK_INT(h[lenoff / 8], 4);
        munmap(h, 4096);
        free(data);
    }
    corrupt_and_import(a, lenoff, (UINT64_MAX / 8) + 2, "length (wraps)");
    corrupt_and_import(a, lenoff, 1u << 20, "length (too long)");
    corrupt_and_import(a, itemoff, 0, "itemsize 0");
    corrupt_and_import(a, offoff, 1u << 30, "data offset past the end");
    corrupt_and_import(a, offoff, 8, "data offset inside the header");
    /* the untouched handle still imports, and reads what was written */
    CHECK_OK(mp_shared_set_int(a, 3, 77));
    void *data = NULL;
    size_t len = 0, nfds = 0;
    int fds[MP_KIND_MAX_FDS];
    CHECK_OK(mp_kind_shared.export_obj(a, &data, &len, fds, &nfds));
    int fd = dup(fds[0]);
    void *obj = NULL;
    CHECK_OK(mp_kind_shared.import_obj(data, len, &fd, 1, &obj));
    if (obj) {
        CHECK_INT(mp_shared_get_int(obj, 3), 77);
        mp_shared_free(obj);
    }
    free(data);
    mp_shared_free(a);
}

int main(int argc, char **argv)
{
    /* The tracker pipe stays open for the whole run: open it before the leak checks. */
    mp__tracker_ensure_running();
    mp_forkserver_ensure_running();
    RUN_IF(argc, argv, test_typecodes);
    RUN_IF(argc, argv, test_value_basic);
    RUN_IF(argc, argv, test_array_basic);
    RUN_IF(argc, argv, test_struct_and_external_lock);
    RUN_IF(argc, argv, test_value_array_in_children);
    RUN_IF(argc, argv, test_counter_under_lock);
    RUN_IF(argc, argv, test_value_lock_holder_killed);
    RUN_IF(argc, argv, test_sync_objects_in_children);
    RUN_IF(argc, argv, test_barrier_party_killed_in_child);
    RUN_IF(argc, argv, test_shm_create_attach_unlink);
    RUN_IF(argc, argv, test_shm_in_children);
    RUN_IF(argc, argv, test_sl_basic);
    RUN_IF(argc, argv, test_sl_in_children);
    RUN_IF(argc, argv, test_sl_python);
    RUN_IF(argc, argv, test_import_checks_header);
    return mpt_done();
}
