/* mp_queue_get_bytes_into: the item lands in the caller's buffer; one that does not fit
 * is MP_ETOOSHORT with its size and stays in the queue; value items give their MessagePack
 * bytes; streamed items (larger than the ring) too; bad arguments are MP_EINVAL.
 * mp_queue_get_into: the item is decoded into the caller's value (in place for an int into
 * a scalar, bytes into bytes with room; else replaced), or a new one for a NULL slot;
 * errors (empty, closed, bad arguments) leave the slot as it was. */
#include "test_util.h"

#include "multiproc/queue.h"

#include <sys/wait.h>

static void test_into_fits_and_too_short(void)
{
    mp_queue *q = mp_queue_new(NULL);
    char buf[16];
    size_t len = 99;
    CHECK_ERR(mp_queue_get_bytes_into(q, buf, sizeof buf, &len, 0), MP_EEMPTY);
    CHECK_OK(mp_queue_put_bytes(q, "hello", 5, 0));
    CHECK_OK(mp_queue_put_bytes(q, "a longer item than 16", 21, 0));
    CHECK_OK(mp_queue_get_bytes_into(q, buf, sizeof buf, &len, 0));
    CHECK_INT(len, 5);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK_ERR(mp_queue_get_bytes_into(q, buf, sizeof buf, &len, 0), MP_ETOOSHORT);
    CHECK_INT(len, 21);
    CHECK_INT(mp_queue_qsize(q), 1); /* it stays */
    char big[32];
    CHECK_OK(mp_queue_get_bytes_into(q, big, sizeof big, &len, 0));
    CHECK_INT(len, 21);
    CHECK(memcmp(big, "a longer item than 16", 21) == 0);
    mp_value *v = mp_value_int(1234567);
    CHECK_OK(mp_queue_put(q, v, 0));
    mp_value_free(v);
    CHECK_OK(mp_queue_get_bytes_into(q, buf, sizeof buf, &len, 0));
    mp_value *back = NULL;
    CHECK_OK(mp_value_decode(buf, len, NULL, 0, &back));
    CHECK_STR(mpt_repr(back), "1234567");
    mp_value_free(back);
    CHECK_OK(mp_queue_put_bytes(q, "", 0, 0));
    CHECK_OK(mp_queue_get_bytes_into(q, NULL, 0, &len, 0));
    CHECK_INT(len, 0);
    mp_queue_free(q);
}

/* A child putting an item of N bytes (i * 7 at byte i), larger than a 4 KiB ring, then the
 * int 99. */
enum { N = 20000 };
static pid_t put_streamed(mp_queue *q)
{
    pid_t pid = fork();
    if (pid == 0) {
        char *it = malloc(N);
        for (int i = 0; i < N; i++)
            it[i] = (char)(i * 7);
        mp_value *v = mp_value_int(99);
        _exit(mp_queue_put_bytes(q, it, N, 10) == 0 && mp_queue_put(q, v, 10) == 0 ? 0 : 1);
    }
    return pid;
}

/* Whether the child exited with status 0. */
static bool exited_ok(pid_t pid)
{
    int st;
    return waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* How many bytes of put_streamed's item are wrong. */
static int streamed_bad(const char *b, size_t len)
{
    int bad = len != N;
    for (size_t i = 0; i < len; i++)
        bad += b[i] != (char)(i * 7);
    return bad;
}

/* An item larger than the ring is streamed: into a buffer that fits, or MP_ETOOSHORT and
 * the stream waits for a get that can take it. */
static void test_into_streamed(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    pid_t pid = put_streamed(q);
    char small[100];
    size_t len = 0;
    CHECK_ERR(mp_queue_get_bytes_into(q, small, sizeof small, &len, 10), MP_ETOOSHORT);
    CHECK_INT(len, N);
    char *buf = malloc(N);
    CHECK_OK(mp_queue_get_bytes_into(q, buf, N, &len, 10));
    CHECK_INT(len, N);
    CHECK_INT(streamed_bad(buf, len), 0);
    free(buf);
    void *rest = NULL;
    CHECK_OK(mp_queue_get_bytes(q, &rest, &len, 10)); /* the int put after it */
    mp_free(rest);
    CHECK(exited_ok(pid));
    mp_queue_free(q);
}

static void test_into_bad_arguments(void)
{
    mp_queue *q = mp_queue_new(NULL);
    char buf[8];
    size_t len;
    CHECK_ERR(mp_queue_get_bytes_into(q, buf, sizeof buf, NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_get_bytes_into(q, NULL, 8, &len, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_get_bytes_into(NULL, buf, sizeof buf, &len, 0), MP_EINVAL);
    mp_queue_close(q);
    CHECK_ERR(mp_queue_get_bytes_into(q, buf, sizeof buf, &len, 0), MP_ECLOSED);
    mp_queue_free(q);
}

/* Ints of every width, put one at a time (records) and by put_many (word records up to 32
 * bits), come back through get_into: in place into a reused scalar, as new values into a
 * NULL slot, and into a str or list slot. */
static void test_get_into_ints(void)
{
    static const int64_t vals[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295LL,
                                   4294967296LL, INT64_MAX, -1, -32, -33, -128, -129, -32768,
                                   -32769, -2147483647LL - 1, -2147483649LL, INT64_MIN};
    enum { N = sizeof vals / sizeof *vals };
    for (int joinable = 0; joinable < 2; joinable++) {
        mp_queue *q = joinable ? mp_joinable_queue_new(NULL) : mp_queue_new(NULL);
        mp_value *slot = mp_value_float(0.5), *was = slot, *fresh = NULL;
        int bad = 0;
        for (size_t i = 0; i < N; i++) {
            mp_value *v = mp_value_int(vals[i]);
            CHECK_OK(mp_queue_put(q, v, 0));
            CHECK_OK(mp_queue_put_many(q, (const mp_value *const *)&v, 1, 0));
            CHECK_OK(mp_queue_put(q, v, 0));
            mp_value_free(v);
            CHECK_OK(mp_queue_get_into(q, &slot, 0)); /* a record */
            bad += slot != was || mp_value_type(slot) != MP_INT ||
                   mp_value_get_int(slot) != vals[i];
            CHECK_OK(mp_queue_get_into(q, &slot, 0)); /* put_many's (a word record if short) */
            bad += slot != was || mp_value_get_int(slot) != vals[i];
            CHECK_OK(mp_queue_get_into(q, &fresh, 0)); /* a NULL slot: a new value */
            bad += !fresh || mp_value_get_int(fresh) != vals[i];
            mp_value_free(fresh);
            fresh = NULL;
        }
        CHECK_INT(bad, 0);
        mp_value *others[2] = {mp_value_str("a string"), mp_value_pack("[i s]", 1, "x")};
        for (int k = 0; k < 2; k++) {
            mp_value *v = mp_value_int(-70000 - k);
            CHECK_OK(mp_queue_put(q, v, 0));
            mp_value_free(v);
            CHECK_OK(mp_queue_get_into(q, &others[k], 0));
            CHECK_STR(mpt_repr(others[k]), k ? "-70001" : "-70000");
            mp_value_free(others[k]);
        }
        if (joinable) { /* each item taken counts once for task_done */
            for (size_t i = 0; i < 3 * N + 2; i++)
                CHECK_OK(mp_queue_task_done(q));
            CHECK_ERR(mp_queue_task_done(q), MP_ESTATE);
            CHECK_OK(mp_queue_join(q, 0));
        }
        CHECK(mp_queue_empty(q));
        mp_value_free(slot);
        mp_queue_free(q);
    }
}

/* Other items into slots of other types: bytes into bytes with room (in place), strings,
 * lists, nil and raw bytes replace what the slot held; put_many's short items too. */
static void test_get_into_other_types(void)
{
    mp_queue *q = mp_queue_new(NULL);
    char big[300] = {0};
    mp_value *slot = mp_value_bytes(big, sizeof big), *was = slot;
    CHECK_OK(mp_queue_put_bytes(q, "raw", 3, 0));
    CHECK_OK(mp_queue_get_into(q, &slot, 0));
    CHECK(slot == was); /* its memory held the 3 bytes */
    CHECK_STR(mpt_repr(slot), "b'raw'");
    mp_value *items = mp_value_pack("[s s [i s] n b f]", "hé", "a string longer than 16 bytes",
                                    1, "two", true, 2.5);
    static const char *const reprs[] = {"'hé'", "'a string longer than 16 bytes'",
                                        "[1, 'two']", "None", "True", "2.5"};
    for (size_t i = 0; i < 6; i++) {
        mp_value *v = mp_value_list_get(items, i);
        CHECK_OK(mp_queue_put(q, v, 0));
        CHECK_OK(mp_queue_put_many(q, (const mp_value *const *)&v, 1, 0));
    }
    mp_value *slots[3] = {mp_value_int(5), mp_value_str("old"), NULL};
    for (size_t i = 0; i < 12; i++) {
        mp_value **s = &slots[i % 3];
        CHECK_OK(mp_queue_get_into(q, s, 0));
        CHECK_STR(mpt_repr(*s), reprs[i / 2]);
    }
    CHECK_OK(mp_queue_put_bytes(q, "", 0, 0)); /* raw bytes into a list slot */
    CHECK_OK(mp_queue_get_into(q, &slots[0], 0));
    CHECK_STR(mpt_repr(slots[0]), "b''");
    for (int i = 0; i < 3; i++)
        mp_value_free(slots[i]);
    mp_value_free(items);
    mp_value_free(slot);
    mp_queue_free(q);
}

/* Errors leave the slot as it was: empty (no wait and after a timeout), closed, a NULL
 * slot or queue. */
static void test_get_into_errors(void)
{
    for (int joinable = 0; joinable < 2; joinable++) {
        mp_queue *q = joinable ? mp_joinable_queue_new(NULL) : mp_queue_new(NULL);
        mp_value *slot = mp_value_int(41), *was = slot, *none = NULL;
        CHECK_ERR(mp_queue_get_into(q, &slot, 0), MP_EEMPTY);
        CHECK_STR(mp_last_error(), "MP_EEMPTY: queue is empty: no item to take without waiting"); /* as get */
        CHECK(slot == was && mp_value_get_int(slot) == 41);
        CHECK_ERR(mp_queue_get_into(q, &slot, 0.01), MP_EEMPTY);
        CHECK_STR(mp_last_error(), "MP_EEMPTY: queue is empty: queue still empty after 0.01 s");
        CHECK(slot == was && mp_value_get_int(slot) == 41);
        CHECK_ERR(mp_queue_get_into(q, &none, 0), MP_EEMPTY);
        CHECK(none == NULL);
        CHECK_ERR(mp_queue_get_into(q, NULL, 0), MP_EINVAL);
        CHECK_STR(mp_last_error(), "MP_EINVAL: invalid argument: mp_queue_get_into: NULL slot");
        CHECK_ERR(mp_queue_get_into(NULL, &slot, 0), MP_EINVAL);
        CHECK(slot == was && mp_value_get_int(slot) == 41);
        mp_value *v = mp_value_int(7);
        CHECK_OK(mp_queue_put(q, v, 0));
        mp_value_free(v);
        mp_queue_close(q);
        CHECK_ERR(mp_queue_get_into(q, &slot, 0), MP_ECLOSED);
        CHECK(slot == was && mp_value_get_int(slot) == 41);
        mp_value_free(slot);
        mp_queue_free(q);
    }
}

/* An item larger than the ring is streamed to get_into, into a reused bytes value. */
static void test_get_into_streamed(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    pid_t pid = put_streamed(q);
    mp_value *slot = mp_value_int(1);
    CHECK_OK(mp_queue_get_into(q, &slot, 10));
    size_t len = 0;
    const char *b = mp_value_get_bytes(slot, &len);
    CHECK_INT(len, N);
    CHECK_INT(b ? streamed_bad(b, len) : -1, 0);
    CHECK_OK(mp_queue_get_into(q, &slot, 10)); /* then an int into the bytes value */
    CHECK_STR(mpt_repr(slot), "99");
    mp_value_free(slot);
    CHECK(exited_ok(pid));
    mp_queue_free(q);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_into_fits_and_too_short);
    RUN_IF(argc, argv, test_into_streamed);
    RUN_IF(argc, argv, test_into_bad_arguments);
    RUN_IF(argc, argv, test_get_into_ints);
    RUN_IF(argc, argv, test_get_into_other_types);
    RUN_IF(argc, argv, test_get_into_errors);
    RUN_IF(argc, argv, test_get_into_streamed);
    return mpt_done();
}
