/* Queue batches (mp_queue_put_many / mp_queue_get_many): values round-trip in order and
 * interleave with single puts and gets, across ring wrap-around; get_many returns what is
 * there up to max and waits like mp_queue_get; a batch is put all or nothing (a full queue
 * takes none of it); big items and streamed items come alone; JoinableQueue counts each
 * item; bad arguments are MP_EINVAL. The kill storm is in test_fault_batch.c. */
#include "test_util.h"

#include "multiproc/queue.h"

#include <sys/wait.h>

static void free_all(mp_value **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mp_value_free(v[i]);
}

/* Put ints from..from+n-1 in one batch. */
static int put_ints(mp_queue *q, long from, size_t n, double timeout)
{
    mp_value *v[1024];
    for (size_t i = 0; i < n && i < 1024; i++)
        v[i] = mp_value_int(from + (long)i);
    int r = mp_queue_put_many(q, (const mp_value *const *)v, n, timeout);
    free_all(v, n);
    return r;
}

static void test_roundtrip_in_order(void)
{
    mp_queue *q = mp_queue_new(NULL);
    mp_value *in[4] = {mp_value_int(-7), mp_value_str("héllo"), mp_value_nil(),
                       mp_value_bytes("\0ab", 3)};
    mp_value *single = mp_value_int(42);
    CHECK_OK(mp_queue_put(q, single, 0));
    CHECK_OK(mp_queue_put_many(q, (const mp_value *const *)in, 4, 0));
    CHECK_OK(mp_queue_put_bytes(q, "raw", 3, 0));
    CHECK_INT(mp_queue_qsize(q), 6);
    mp_value *out[10] = {0};
    size_t got = 99;
    CHECK_OK(mp_queue_get_many(q, out, 10, &got, 0));
    CHECK_INT(got, 6);
    if (got == 6) {
        CHECK_STR(mpt_repr(out[0]), "42");
        CHECK_STR(mpt_repr(out[1]), "-7");
        CHECK_STR(mpt_repr(out[2]), "'héllo'");
        CHECK_STR(mpt_repr(out[3]), "None");
        CHECK_STR(mpt_repr(out[4]), "b'\\x00ab'");
        CHECK_STR(mpt_repr(out[5]), "b'raw'");
    }
    free_all(out, got);
    free_all(in, 4);
    mp_value_free(single);
    CHECK(mp_queue_empty(q));
    mp_queue_free(q);
}

/* A 4 KiB ring and batches of 50 ints (24-byte records): the batches wrap the ring; single
 * gets and get_many of odd sizes see every int once, in order. */
static void test_wraparound(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    long next_put = 0, next_get = 0, bad = 0;
    for (int round = 0; round < 200; round++) {
        CHECK_OK(put_ints(q, next_put, 50, 0));
        next_put += 50;
        mp_value *one;
        CHECK_OK(mp_queue_get(q, &one, 0));
        bad += mp_value_get_int(one) != next_get++;
        mp_value_free(one);
        while (next_get < next_put) {
            mp_value *out[13];
            size_t got = 0;
            CHECK_OK(mp_queue_get_many(q, out, 13, &got, 0));
            for (size_t i = 0; i < got; i++)
                bad += mp_value_get_int(out[i]) != next_get++;
            free_all(out, got);
            if (got == 0)
                break;
        }
    }
    CHECK_INT(bad, 0);
    CHECK_INT(next_get, next_put);
    CHECK(mp_queue_empty(q));
    mp_queue_free(q);
}

static void test_partial_and_timeouts(void)
{
    mp_queue *q = mp_queue_new(NULL);
    mp_value *out[10];
    size_t got = 5;
    CHECK_ERR(mp_queue_get_many(q, out, 10, &got, 0), MP_EEMPTY);
    CHECK_INT(got, 0);
    double t0 = mpt_now();
    CHECK_ERR(mp_queue_get_many(q, out, 10, &got, 0.05), MP_EEMPTY);
    CHECK(mpt_now() - t0 >= 0.05);
    CHECK_OK(put_ints(q, 0, 3, 0));
    CHECK_OK(mp_queue_get_many(q, out, 10, &got, 0)); /* what is there, up to max */
    CHECK_INT(got, 3);
    free_all(out, got);
    CHECK_OK(put_ints(q, 0, 30, 0));
    CHECK_OK(mp_queue_get_many(q, out, 10, &got, -1)); /* at most max */
    CHECK_INT(got, 10);
    free_all(out, got);
    CHECK_INT(mp_queue_qsize(q), 20);
    mp_queue_free(q);
}

/* get_many blocks until a batch arrives, like mp_queue_get. */
static void test_blocking_wakeup(void)
{
    mp_queue *q = mp_queue_new(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        if (mpt_wait_blocked(getppid(), 0, "futex", 10) < 0)
            _exit(1);
        _exit(put_ints(q, 100, 5, 10) == 0 ? 0 : 2);
    }
    mp_value *out[8];
    size_t got = 0;
    CHECK_OK(mp_queue_get_many(q, out, 8, &got, 20));
    CHECK(got >= 1 && got <= 5);
    CHECK_INT(got ? mp_value_get_int(out[0]) : -1, 100);
    free_all(out, got);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    mp_queue_free(q);
}

/* A batch is all or nothing: with room for 1 more item a batch of 2 puts none. */
static void test_all_or_nothing(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.maxsize = 4});
    CHECK_OK(put_ints(q, 0, 3, 0));
    CHECK_ERR(put_ints(q, 3, 2, 0), MP_EFULL);
    CHECK_INT(mp_queue_qsize(q), 3);
    CHECK_ERR(put_ints(q, 3, 2, 0.02), MP_EFULL);
    CHECK_INT(mp_queue_qsize(q), 3);
    CHECK_OK(put_ints(q, 3, 1, 0));
    CHECK(mp_queue_full(q));
    CHECK_ERR(put_ints(q, 0, 5, 0), MP_EINVAL); /* more than maxsize: never fits */
    mp_queue_free(q);

    q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    CHECK_ERR(put_ints(q, 0, 600, -1), MP_EINVAL); /* 600 * 8 bytes (word records) > the ring */
    CHECK_INT(mp_queue_qsize(q), 0);
    mp_queue_free(q);
}

/* An item bigger than get_many's buffer comes alone; so does a streamed one. */
static void test_big_items_come_alone(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 1 << 16});
    char *big = malloc(20000);
    memset(big, 'b', 20000);
    mp_value *in[3] = {mp_value_bytes(big, 20000), mp_value_int(1), mp_value_int(2)};
    CHECK_OK(mp_queue_put_many(q, (const mp_value *const *)in, 3, 0));
    mp_value *out[8];
    size_t got = 0;
    CHECK_OK(mp_queue_get_many(q, out, 8, &got, 0));
    CHECK_INT(got, 1);
    size_t len = 0;
    CHECK(got == 1 && mp_value_get_bytes(out[0], &len) && len == 20000);
    free_all(out, got);
    CHECK_OK(mp_queue_get_many(q, out, 8, &got, 0));
    CHECK_INT(got, 2);
    free_all(out, got);
    free_all(in, 3);
    mp_queue_free(q);

    q = mp_queue_new(&(mp_queue_opts){.capacity = 4096}); /* 20000 bytes are streamed */
    pid_t pid = fork();
    if (pid == 0)
        _exit(mp_queue_put_bytes(q, big, 20000, 10) == 0 ? 0 : 1);
    CHECK_OK(mp_queue_get_many(q, out, 8, &got, 10));
    CHECK_INT(got, 1);
    len = 0;
    CHECK(got == 1 && mp_value_get_bytes(out[0], &len) && len == 20000);
    free_all(out, got);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    free(big);
    mp_queue_free(q);
}

static void test_joinable_counts_items(void)
{
    mp_queue *q = mp_joinable_queue_new(NULL);
    CHECK_OK(put_ints(q, 0, 5, 0));
    mp_value *out[5];
    size_t got = 0;
    CHECK_OK(mp_queue_get_many(q, out, 5, &got, 0));
    CHECK_INT(got, 5);
    free_all(out, got);
    for (int i = 0; i < 4; i++)
        CHECK_OK(mp_queue_task_done(q));
    CHECK_ERR(mp_queue_join(q, 0.01), MP_ETIMEOUT);
    CHECK_OK(mp_queue_task_done(q));
    CHECK_OK(mp_queue_join(q, 0));
    CHECK_ERR(mp_queue_task_done(q), MP_ESTATE);
    mp_queue_free(q);
}

static void test_bad_arguments(void)
{
    mp_queue *q = mp_queue_new(NULL);
    mp_value *v[2] = {mp_value_int(1), NULL};
    mp_value *out[2];
    size_t got = 7;
    CHECK_ERR(mp_queue_put_many(q, NULL, 1, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_put_many(q, (const mp_value *const *)v, 2, 0), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "values[1] is NULL");
    CHECK_OK(mp_queue_put_many(q, NULL, 0, 0)); /* nothing to put */
    CHECK_INT(mp_queue_qsize(q), 0);
    CHECK_ERR(mp_queue_get_many(q, NULL, 2, &got, 0), MP_EINVAL);
    CHECK_INT(got, 0);
    CHECK_ERR(mp_queue_get_many(q, out, 2, NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_get_many(q, out, 0, &got, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_put_many(NULL, (const mp_value *const *)v, 1, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_get_many(NULL, out, 2, &got, 0), MP_EINVAL);
    mp_value *h = mp_value_handle(&mp_kind_queue, q);
    if (h) {
        CHECK_ERR(mp_queue_put_many(q, (const mp_value *const *)&h, 1, 0), MP_EUNSUPPORTED);
        mp_value_free(h);
    }
    CHECK_OK(mp_queue_close(q));
    CHECK_ERR(mp_queue_put_many(q, (const mp_value *const *)v, 1, 0), MP_ECLOSED);
    CHECK_ERR(mp_queue_get_many(q, out, 2, &got, 0), MP_ECLOSED);
    mp_value_free(v[0]);
    mp_queue_free(q);
}

/* put and put_many encode ints on a fast path of their own: the bytes must be exactly
 * mp_value_encode's (the shortest MessagePack form) at every width boundary. */
static void test_int_encoding_matches_codec(void)
{
    static const int64_t vals[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295LL,
                                   4294967296LL, INT64_MAX, -1, -32, -33, -128, -129, -32768,
                                   -32769, -2147483647LL - 1, -2147483649LL, INT64_MIN};
    mp_queue *q = mp_queue_new(NULL);
    int bad = 0;
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++) {
        mp_value *v = mp_value_int(vals[i]);
        char *ref = NULL;
        size_t rlen = 0, nfds = 0;
        CHECK_OK(mp_value_encode(v, &ref, &rlen, NULL, 0, &nfds));
        CHECK_OK(mp_queue_put(q, v, 0));
        CHECK_OK(mp_queue_put_many(q, (const mp_value *const *)&v, 1, 0));
        for (int k = 0; k < 2; k++) {
            void *b = NULL;
            size_t len = 0;
            CHECK_OK(mp_queue_get_bytes(q, &b, &len, 0));
            bad += len != rlen || memcmp(b, ref, len) != 0;
            mp_free(b);
        }
        mp_free(ref);
        mp_value_free(v);
    }
    CHECK_INT(bad, 0);
    /* and get_many decodes each width back, into new values and into reused ones */
    enum { N = sizeof vals / sizeof *vals };
    mp_value *in[N], *out[N], *reused[N];
    for (size_t i = 0; i < N; i++) {
        in[i] = mp_value_int(vals[i]);
        reused[i] = mp_value_float(0.5);
    }
    for (int round = 0; round < 3; round++) {
        size_t got = 0;
        CHECK_OK(mp_queue_put_many(q, (const mp_value *const *)in, N, 0));
        if (round == 0)
            CHECK_OK(mp_queue_get_many(q, out, N, &got, 0));
        else
            CHECK_OK(mp_queue_get_many_into(q, reused, N, &got, 0));
        CHECK_INT(got, N);
        for (size_t i = 0; i < got; i++)
            bad += mp_value_get_int(round == 0 ? out[i] : reused[i]) != vals[i];
        if (round == 0)
            free_all(out, got);
    }
    CHECK_INT(bad, 0);
    free_all(in, N);
    free_all(reused, N);
    mp_queue_free(q);
}

/* get_many_into decodes into the caller's values: an int into any scalar (or a str, or a
 * list, whose items go) in place, bytes into bytes with room; other items replace the
 * value. Slots past *got are left alone, and so are all of them on an error. */
static void test_get_many_into(void)
{
    mp_queue *q = mp_queue_new(NULL);
    mp_value *out[6] = {0}, *was[6];
    size_t got = 9;
    CHECK_OK(put_ints(q, 100, 4, 0));
    CHECK_OK(mp_queue_get_many_into(q, out, 6, &got, 0)); /* NULL slots: new values */
    CHECK_INT(got, 4);
    for (int i = 0; i < 4; i++)
        CHECK_INT(mp_value_get_int(out[i]), 100 + i);
    CHECK(out[4] == NULL && out[5] == NULL);
    memcpy(was, out, sizeof was);
    CHECK_OK(put_ints(q, -70000, 4, 0));
    CHECK_OK(mp_queue_get_many_into(q, out, 6, &got, 0));
    CHECK_INT(got, 4);
    for (int i = 0; i < 4; i++) {
        CHECK(out[i] == was[i]); /* the same values, set anew */
        CHECK_INT(mp_value_get_int(out[i]), -70000 + i);
    }
    free_all(out, 4);

    /* slots of other types */
    char big[300] = {0};
    mp_value *slots[6] = {mp_value_str("hello"), mp_value_pack("[i i]", 1, 2),
                          mp_value_float(1.5), mp_value_bytes(big, sizeof big),
                          mp_value_int(5), mp_value_int(6)};
    memcpy(was, slots, sizeof was);
    mp_value *in[3] = {mp_value_int(7), mp_value_int(1LL << 40), mp_value_str("s")};
    CHECK_OK(mp_queue_put_many(q, (const mp_value *const *)in, 3, 0));
    CHECK_OK(mp_queue_put_bytes(q, "raw", 3, 0));
    CHECK_OK(mp_queue_get_many_into(q, slots, 6, &got, 0));
    CHECK_INT(got, 4);
    CHECK(slots[0] == was[0] && slots[1] == was[1] && slots[3] == was[3]);
    CHECK_STR(mpt_repr(slots[0]), "7");
    CHECK_STR(mpt_repr(slots[1]), "1099511627776");
    CHECK_STR(mpt_repr(slots[2]), "'s'"); /* a str item: a new value in the float's place */
    CHECK_STR(mpt_repr(slots[3]), "b'raw'");
    CHECK(slots[4] == was[4] && mp_value_get_int(slots[4]) == 5); /* past *got: untouched */
    CHECK(slots[5] == was[5] && mp_value_get_int(slots[5]) == 6);

    /* errors leave every slot as it was */
    CHECK_ERR(mp_queue_get_many_into(q, slots, 6, &got, 0), MP_EEMPTY);
    CHECK_INT(got, 0);
    CHECK(memcmp(slots, (mp_value *[6]){slots[0], slots[1], slots[2], slots[3], was[4], was[5]},
                 sizeof slots) == 0);
    CHECK_ERR(mp_queue_get_many_into(q, NULL, 6, &got, 0), MP_EINVAL);
    CHECK_STR(mp_last_error(), "MP_EINVAL: invalid argument: mp_queue_get_many_into: NULL "
                               "output pointer");
    CHECK_ERR(mp_queue_get_many_into(q, slots, 0, &got, 0), MP_EINVAL);
    CHECK_STR(mp_last_error(), "MP_EINVAL: invalid argument: mp_queue_get_many_into: max is 0");
    CHECK_ERR(mp_queue_get_many_into(q, slots, 6, NULL, 0), MP_EINVAL);
    free_all(slots, 6);
    free_all(in, 3);
    mp_queue_close(q);
    CHECK_ERR(mp_queue_get_many_into(q, out, 6, &got, 0), MP_ECLOSED);
    mp_queue_free(q);
}

/* put_many writes an item of up to 7 bytes as one 8-byte word: single gets, get_bytes_into
 * (too short, then fitting) and get_many take such items one at a time or together,
 * between ordinary records, in a plain queue and in a JoinableQueue. */
static void test_word_records_mixed(void)
{
    static const char *const reprs[] = {"1", "-1", "300", "70000", "8589934592", "None",
                                        "True", "'ab'", "'longer than seven'", "2.5"};
    for (int joinable = 0; joinable < 2; joinable++) {
        mp_queue *q = joinable ? mp_joinable_queue_new(NULL) : mp_queue_new(NULL);
        mp_value *in = mp_value_pack("[i i i i I n b s s f]", 1, -1, 300, 70000,
                                     (int64_t)1 << 33, true, "ab", "longer than seven", 2.5);
        mp_value *items[10];
        for (int i = 0; i < 10; i++)
            items[i] = mp_value_list_get(in, (size_t)i);
        for (int round = 0; round < 2; round++)
            CHECK_OK(mp_queue_put_many(q, (const mp_value *const *)items, 10, 0));
        for (int i = 0; i < 10; i++) { /* one at a time */
            mp_value *v = NULL;
            CHECK_OK(mp_queue_get(q, &v, 0));
            CHECK_STR(mpt_repr(v), reprs[i]);
            mp_value_free(v);
        }
        mp_value *v = NULL, *out[4] = {0};
        size_t got = 0, len = 0;
        CHECK_OK(mp_queue_get(q, &v, 0));
        CHECK_STR(mpt_repr(v), "1");
        CHECK_OK(mp_queue_get_many(q, out, 1, &got, 0));
        CHECK(got == 1 && mp_value_get_int(out[0]) == -1);
        free_all(out, got);
        unsigned char b[8];
        CHECK_ERR(mp_queue_get_bytes_into(q, b, 2, &len, 0), MP_ETOOSHORT); /* 300: 3 bytes */
        CHECK_INT(len, 3);
        CHECK_OK(mp_queue_get_bytes_into(q, b, sizeof b, &len, 0));
        CHECK(len == 3 && b[0] == 0xcd && b[1] == 0x01 && b[2] == 0x2c);
        CHECK_OK(mp_queue_get_many(q, out, 4, &got, 0));
        CHECK_INT(got, 4);
        for (size_t i = 0; i < got; i++)
            CHECK_STR(mpt_repr(out[i]), reprs[3 + i]); /* out[] keeps them for reuse */
        CHECK_OK(mp_queue_get_many_into(q, out, 4, &got, 0));
        CHECK_INT(got, 3);
        for (size_t i = 0; i < got; i++)
            CHECK_STR(mpt_repr(out[i]), reprs[7 + i]);
        free_all(out, 4);
        CHECK(mp_queue_empty(q));
        if (joinable) {
            for (int i = 0; i < 20; i++)
                CHECK_OK(mp_queue_task_done(q));
            CHECK_OK(mp_queue_join(q, 0));
        }
        mp_value_free(v);
        mp_value_free(in);
        mp_queue_free(q);
    }
}

/* Single puts write an int of up to 32 bits, or bytes of up to 7, as one 8-byte word
 * record and a wider int or longer bytes as a [len][tag] record: both kinds, interleaved, lap a 4 KiB ring hundreds of
 * times (word records land on its last word, headers and payloads wrap), and every get
 * (get_into into a reused value, get, get_many, get_bytes) sees each item once, in order. */
static int64_t mixed_int(long i)
{
    static const int64_t base[] = {5, -3, 200, 40000, -100, -40000, 3000000000LL,
                                   (int64_t)1 << 33, -((int64_t)1 << 35)};
    return base[i % 9] + (i % 9 == 0 ? 0 : i % 50);
}

static void test_single_word_puts_wrap(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    mp_value *v = mp_value_int(0), *got = NULL, *out[8] = {0};
    long next_put = 0, next_get = 0, bad = 0;
    char bytes[16];
    /* item i: bytes of i % 11 letters every 5th, else mixed_int(i) */
    for (int round = 0; round < 3000; round++) {
        for (int k = 0; k < 1 + round % 37 && mp_queue_qsize(q) < 150; k++, next_put++) {
            if (next_put % 5 == 4) {
                memset(bytes, 'a' + (int)(next_put % 26), sizeof bytes);
                CHECK_OK(mp_queue_put_bytes(q, bytes, (size_t)(next_put % 11), 0));
            } else {
                CHECK_OK(mp_value_set_int(v, mixed_int(next_put)));
                CHECK_OK(mp_queue_put(q, v, 0));
            }
        }
        for (int k = 0; k < 1 + round % 29 && next_get < next_put; k++) {
            size_t n = 1;
            int how = (int)(next_get % 4);
            if (how != 2) { /* out[0] may hold a value get_many_into left for reuse */
                mp_value_free(out[0]);
                out[0] = NULL;
            }
            if (how == 0) {
                CHECK_OK(mp_queue_get_into(q, &got, 0));
                out[0] = got;
            } else if (how == 1) {
                CHECK_OK(mp_queue_get(q, &out[0], 0));
            } else if (how == 2) {
                CHECK_OK(mp_queue_get_many_into(q, out, 1 + (size_t)(next_get % 8), &n, 0));
            } else {
                void *b = NULL;
                size_t len = 0;
                CHECK_OK(mp_queue_get_bytes(q, &b, &len, 0));
                if (next_get % 5 == 4) /* put_bytes items come back as they went */
                    out[0] = mp_value_bytes(b, len);
                else /* values come back as their MessagePack */
                    CHECK_OK(mp_value_decode(b, len, NULL, 0, &out[0]));
                mp_free(b);
            }
            for (size_t j = 0; j < n; j++, next_get++) {
                size_t len = 0;
                const char *b = next_get % 5 == 4 ? mp_value_get_bytes(out[j], &len) : NULL;
                if (next_get % 5 == 4)
                    bad += !b || len != (size_t)(next_get % 11) ||
                           (len && b[len - 1] != 'a' + (int)(next_get % 26));
                else
                    bad += mp_value_type(out[j]) != MP_INT ||
                           mp_value_get_int(out[j]) != mixed_int(next_get);
            }
            if (how == 1 || how == 3) {
                mp_value_free(out[0]);
                out[0] = NULL;
            } else if (how == 0) {
                out[0] = NULL; /* got keeps it for the next get_into */
            }
        }
    }
    CHECK_INT(bad, 0);
    CHECK(next_put > 20000);
    CHECK_INT(mp_queue_qsize(q), (size_t)(next_put - next_get));
    mp_value_free(v);
    mp_value_free(got);
    free_all(out, 8);
    mp_queue_free(q);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_roundtrip_in_order);
    RUN_IF(argc, argv, test_wraparound);
    RUN_IF(argc, argv, test_partial_and_timeouts);
    RUN_IF(argc, argv, test_blocking_wakeup);
    RUN_IF(argc, argv, test_all_or_nothing);
    RUN_IF(argc, argv, test_big_items_come_alone);
    RUN_IF(argc, argv, test_joinable_counts_items);
    RUN_IF(argc, argv, test_bad_arguments);
    RUN_IF(argc, argv, test_int_encoding_matches_codec);
    RUN_IF(argc, argv, test_get_many_into);
    RUN_IF(argc, argv, test_word_records_mixed);
    RUN_IF(argc, argv, test_single_word_puts_wrap);
    return mpt_done();
}
