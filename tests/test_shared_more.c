/* sharedctypes.copy and synchronized, and Array('c') with Python's .value / .raw. */
#include "test_util.h"
#include "multiproc/process.h"
#include "multiproc/shared.h"

static const char *const methods[] = {"fork", "spawn", "forkserver"};
#define FOR_EACH_METHOD(m) for (const char *const *m = methods; m < methods + 3; m++)

/* The call first, then its length (C leaves argument order open). */
#define CHECK_BYTES(call, want, wlen)                                                    \
    do {                                                                                 \
        size_t mpt_n = 99;                                                               \
        char *mpt_got = call(a, &mpt_n);                                                 \
        check_bytes(mpt_got, mpt_n, want, wlen);                                         \
    } while (0)

static void check_bytes(char *got, size_t len, const char *want, size_t wlen)
{
    CHECK(got != NULL);
    CHECK_INT(len, wlen);
    if (got && len == wlen)
        CHECK(memcmp(got, want, wlen) == 0 && got[len] == '\0');
    mp_free(got);
}

static void test_chars_value_and_raw(void)
{
    mp_shared *a = mp_shared_array_new('c', 8, "ab\0cd\0\0\0", NULL);
    size_t n = 99;
    CHECK_BYTES(mp_shared_chars_value, "ab", 2);       /* stops at the NUL */
    CHECK_BYTES(mp_shared_chars_raw, "ab\0cd\0\0\0", 8); /* every byte */
    CHECK_OK(mp_shared_chars_set_value(a, "xyz", 3));            /* "xyz" + NUL */
    CHECK_BYTES(mp_shared_chars_value, "xyz", 3);
    CHECK_BYTES(mp_shared_chars_raw, "xyz\0d\0\0\0", 8);
    CHECK_OK(mp_shared_chars_set_raw(a, "12", 2));               /* no NUL added */
    CHECK_BYTES(mp_shared_chars_value, "12z", 3);
    CHECK_OK(mp_shared_chars_set_value(a, "abcdefgh", 8));       /* full: no NUL */
    CHECK_BYTES(mp_shared_chars_value, "abcdefgh", 8);
    CHECK_ERR(mp_shared_chars_set_value(a, "abcdefghi", 9), MP_ERANGE);
    CHECK(strstr(mp_last_error(), "byte string too long") != NULL);
    CHECK_ERR(mp_shared_chars_set_raw(a, "abcdefghi", 9), MP_ERANGE);
    CHECK_OK(mp_shared_chars_set_value(a, "", 0));
    CHECK_BYTES(mp_shared_chars_value, "", 0);
    mp_shared *i = mp_shared_array_new('i', 2, NULL, NULL);
    CHECK(mp_shared_chars_value(i, &n) == NULL && n == 0);
    CHECK_INT(mp_last_error_code(), MP_ETYPE);
    CHECK_ERR(mp_shared_chars_set_raw(i, "x", 1), MP_ETYPE);
    mp_shared_free(i);
    mp_shared_free(a);
}

static void test_copy(void)
{
    int init[3] = {1, 2, 3};
    mp_shared *a = mp_shared_array_new('i', 3, init, NULL);
    mp_shared *c = mp_shared_copy(a);
    CHECK(c != NULL);
    CHECK(mp_shared_get_lock(a) != NULL && mp_shared_get_lock(c) == NULL); /* raw */
    CHECK_INT(mp_shared_typecode(c), 'i');
    CHECK_INT(mp_shared_len(c), 3);
    CHECK_OK(mp_shared_set_int(c, 0, 100));
    CHECK_INT(mp_shared_get_int(c, 0), 100);
    CHECK_INT(mp_shared_get_int(a, 0), 1); /* a copy, not a view */
    CHECK_INT(mp_shared_get_int(c, 2), 3);
    mp_shared_free(c);
    mp_shared_free(a);
    CHECK(mp_shared_copy(NULL) == NULL);
}

static int add_target(mp_value *args)
{
    mp_shared *v = NULL;
    if (mp_value_unpack(args, "[h]", &mp_kind_shared, &v) < 0)
        return 2;
    if (!mp_shared_get_lock(v))
        return 3; /* the synchronized handle's lock travelled */
    if (mp_shared_acquire(v, -1) < 0)
        return 4;
    ((long *)mp_shared_ptr(v))[0] += 5;
    mp_shared_release(v);
    return 0;
}

static void test_synchronized(void)
{
    long zero = 0;
    mp_shared *raw = mp_raw_value_new('l', &zero);
    mp_shared *s = mp_shared_synchronized(raw, NULL);
    CHECK(s != NULL && mp_shared_get_lock(s) != NULL);
    CHECK(mp_shared_get_lock(raw) == NULL); /* the raw handle stays lock-free */
    CHECK_OK(mp_shared_set_int(s, 0, 7));
    CHECK_INT(mp_shared_get_int(raw, 0), 7); /* one memory */
    CHECK(mp_shared_synchronized(s, NULL) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    CHECK(strstr(mp_last_error(), "already synchronized") != NULL);
    FOR_EACH_METHOD(m)
    {
        mp_value *a = mp_value_pack("[h]", &mp_kind_shared, s);
        mp_process_opts o = {.target = add_target, .args = a, .ctx = mp_get_context(*m)};
        mp_process *p = mp_process_new(&o);
        int code = -1;
        CHECK_OK(mp_process_start(p));
        CHECK_OK(mp_process_join(p, 30));
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 0);
        mp_process_free(p);
        mp_value_free(a);
    }
    CHECK_INT(mp_shared_get_int(raw, 0), 22);
    mp_lock *l = mp_lock_new(); /* synchronized(obj, lock) */
    mp_shared *s2 = mp_shared_synchronized(raw, l);
    CHECK_OK(mp_lock_acquire(l, -1));
    CHECK(mp_lock_is_mine(mp_shared_get_lock(s2)));
    CHECK_OK(mp_lock_release(l));
    mp_shared_free(s2);
    mp_lock_free(l);
    mp_shared_free(s);
    mp_shared_free(raw);
}

int main(int argc, char **argv)
{
    CHECK_OK(mp_forkserver_ensure_running());
    RUN_IF(argc, argv, test_chars_value_and_raw);
    RUN_IF(argc, argv, test_copy);
    RUN_IF(argc, argv, test_synchronized);
    return mpt_done();
}
