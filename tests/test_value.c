/* Values: construction, containers, Python-identical repr, comparison, copy, kinds,
 * MessagePack encode/decode with handles and fds, format strings, and a fuzz test. */
#include "test_util.h"
#include "internal/value.h"

#include <fcntl.h>
#include <pthread.h>
#include <math.h>

/* ---- a tiny kind for the tests: one end of a pipe plus a tag ---------------------- */

typedef struct pipe_end {
    int fd;
    int tag;
} pipe_end;

static int pe_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    pipe_end *p = obj;
    int *tag = malloc(sizeof *tag);
    if (!tag)
        return -ENOMEM;
    *tag = p->tag;
    *data = tag;
    *len = sizeof *tag;
    fds[0] = p->fd;
    *nfds = 1;
    return 0;
}

static int pe_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    if (len != sizeof(int) || nfds != 1) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return MP_EPROTO;
    }
    pipe_end *p = malloc(sizeof *p);
    if (!p) {
        close(fds[0]);
        return -ENOMEM;
    }
    memcpy(&p->tag, data, sizeof p->tag);
    p->fd = fds[0];
    *obj = p;
    return 0;
}

static void pe_release(void *obj)
{
    pipe_end *p = obj;
    close(p->fd);
    free(p);
}

static const mp_kind pipe_kind = {"test-pipe", pe_export, pe_import, pe_release};

/* A kind whose objects carry no fds at all. */
static int nofd_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    (void)fds;
    *data = strdup((const char *)obj);
    *len = strlen(obj);
    *nfds = 0;
    return *data ? 0 : -ENOMEM;
}

static int nofd_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    (void)fds;
    (void)nfds;
    *obj = strndup(data, len);
    return *obj ? 0 : -ENOMEM;
}

static const mp_kind name_kind = {"test-name", nofd_export, nofd_import, free};

__attribute__((constructor(200))) static void register_kinds(void)
{
    mp_kind_register(&pipe_kind);
    mp_kind_register(&name_kind);
}

/* repr of v, freed by the caller-side macro below */
static char repr_buf[4096];
static const char *R(mp_value *v)
{
    char *s = mp_value_repr(v);
    snprintf(repr_buf, sizeof repr_buf, "%s", s ? s : "(null)");
    mp_free(s);
    mp_value_free(v);
    return repr_buf;
}

/* ---- tests ---------------------------------------------------------------------- */

static void test_scalars(void)
{
    mp_value *v = mp_value_int(-7);
    CHECK_INT(mp_value_type(v), MP_INT);
    CHECK_INT(mp_value_get_int(v), -7);
    CHECK(mp_value_get_float(v) == -7.0);
    CHECK(mp_value_get_str(v, NULL) == NULL);
    mp_value_free(v);

    v = mp_value_strn("a\0b", 3);
    size_t n = 0;
    const char *s = mp_value_get_str(v, &n);
    CHECK_INT(n, 3);
    CHECK(s && memcmp(s, "a\0b", 4) == 0);
    CHECK_INT(mp_value_len(v), 3);
    CHECK_STR(R(v), "'a\\x00b'");

    v = mp_value_bytes("\x01\x02", 2);
    const unsigned char *b = mp_value_get_bytes(v, &n);
    CHECK(b && n == 2 && b[1] == 2);
    CHECK(mp_value_get_str(v, NULL) == NULL);
    mp_value_free(v);

    v = mp_value_bool(true);
    CHECK(mp_value_get_bool(v));
    CHECK_INT(mp_value_get_int(v), 0); /* not an int */
    mp_value_free(v);

    CHECK_STR(mp_type_name(MP_MAP), "map");
    CHECK_STR(mp_type_name(MP_HANDLE), "handle");
    CHECK(mp_value_str(NULL) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    mp_value_free(NULL);
}

static void test_lists_and_maps(void)
{
    mp_value *l = mp_value_list();
    CHECK_OK(mp_value_list_append(l, mp_value_int(42)));
    CHECK_OK(mp_value_list_append(l, mp_value_nil()));
    CHECK_OK(mp_value_list_append(l, mp_value_str("hello")));
    CHECK_INT(mp_value_len(l), 3);
    CHECK_STR(mp_value_get_str(mp_value_list_get(l, 2), NULL), "hello");
    CHECK(mp_value_list_get(l, 3) == NULL);
    mp_value *notlist = mp_value_int(1);
    CHECK_ERR(mp_value_list_append(notlist, mp_value_int(2)), MP_ETYPE); /* item adopted */
    CHECK_CONTAINS(mp_last_error(), "not a list");
    mp_value_free(notlist);
    CHECK_STR(R(l), "[42, None, 'hello']");

    mp_value *m = mp_value_map();
    CHECK_OK(mp_value_map_set(m, mp_value_float(0.25), mp_value_nil()));
    CHECK_OK(mp_value_map_set(m, mp_value_int(1), mp_value_str("x")));
    CHECK_OK(mp_value_map_set_str(m, "2", mp_value_int(2)));
    /* 1.0 == 1: replaces the value, keeps the first key (as Python does) */
    CHECK_OK(mp_value_map_set(m, mp_value_float(1.0), mp_value_str("1")));
    CHECK_INT(mp_value_len(m), 3);
    CHECK_INT(mp_value_get_int(mp_value_map_get_str(m, "2")), 2);
    mp_value *k = mp_value_int(1);
    CHECK_STR(mp_value_get_str(mp_value_map_get(m, k), NULL), "1");
    mp_value_free(k);
    CHECK(mp_value_map_get_str(m, "nope") == NULL);
    CHECK_INT(mp_value_type(mp_value_map_key(m, 1)), MP_INT);
    CHECK_STR(R(m), "{0.25: None, 1: '1', '2': 2}");
}

static void test_big_map(void)
{
    /* past the index threshold: lookups and replacement still exact */
    mp_value *m = mp_value_map();
    for (int i = 0; i < 5000; i++)
        CHECK_OK(mp_value_map_set(m, mp_value_int(i), mp_value_int(i * 2)));
    for (int i = 0; i < 5000; i += 2)
        CHECK_OK(mp_value_map_set(m, mp_value_float(i), mp_value_int(-i)));
    CHECK_INT(mp_value_len(m), 5000);
    int bad = 0;
    for (int i = 0; i < 5000; i++) {
        mp_value *k = mp_value_int(i);
        mp_value *v = mp_value_map_get(m, k);
        if (!v || mp_value_get_int(v) != (i % 2 ? i * 2 : -i))
            bad++;
        mp_value_free(k);
    }
    CHECK_INT(bad, 0);
    CHECK_INT(mp_value_get_int(mp_value_map_key(m, 4999)), 4999); /* insertion order */
    mp_value *c = mp_value_copy(m);
    CHECK(mp_value_equal(c, m));
    mp_value_free(c);
    mp_value_free(m);
}

/* Containers of every size across the storage classes (small lists and maps keep their
 * items in the block cache, larger ones in malloc'd arrays): built, copied, round-tripped
 * through both codecs, grown after decoding and freed (valgrind/ASan see the moves). */
static void test_container_sizes(void)
{
    for (int n = 0; n <= 40; n++) {
        mp_value *l = mp_value_list(), *m = mp_value_map();
        for (int i = 0; i < n; i++) {
            char key[32];
            snprintf(key, sizeof key, "key %d with some length", i);
            CHECK_OK(mp_value_list_append(l, i % 3 ? mp_value_int(i) : mp_value_str(key)));
            CHECK_OK(mp_value_map_set_str(m, key, mp_value_int(i)));
        }
        if (n > 0) /* a key already there: the value is replaced */
            CHECK_OK(mp_value_map_set_str(m, "key 0 with some length", mp_value_int(-1)));
        CHECK_INT(mp_value_len(l), n);
        CHECK_INT(mp_value_len(m), n);
        mp_value *pair = mp_value_list();
        CHECK_OK(mp_value_list_append(pair, mp_value_copy(l)));
        CHECK_OK(mp_value_list_append(pair, mp_value_copy(m)));
        char *buf = NULL;
        size_t len = 0;
        mp_value *back = NULL;
        CHECK_OK(mp_value_pickle(pair, 0, &buf, &len));
        CHECK_OK(mp_value_unpickle(buf, len, &back));
        CHECK(mp_value_equal(back, pair));
        mp_free(buf);
        /* grow the decoded containers past their decoded size */
        CHECK_OK(mp_value_list_append(mp_value_list_get(back, 0), mp_value_int(n)));
        CHECK_OK(mp_value_map_set_str(mp_value_list_get(back, 1), "extra", mp_value_nil()));
        CHECK_INT(mp_value_len(mp_value_list_get(back, 0)), n + 1);
        CHECK_INT(mp_value_len(mp_value_list_get(back, 1)), n + 1);
        if (n > 0) {
            mp_value *v = mp_value_map_get_str(mp_value_list_get(back, 1), "key 0 with some length");
            CHECK_INT(mp_value_get_int(v), -1);
        }
        mp_value_free(back);
        CHECK_OK(mp_value_encode(pair, &buf, &len, NULL, 0, NULL));
        CHECK_OK(mp_value_decode(buf, len, NULL, 0, &back));
        CHECK(mp_value_equal(back, pair));
        mp_free(buf);
        mp_value_free(back);
        mp_value_free(pair);
        mp_value_free(l);
        mp_value_free(m);
    }
}

static void test_repr_like_python(void)
{
    /* expected strings printed by python3 -c 'print(repr(x))' */
    static const struct { double d; const char *py; } floats[] = {
        {0.1, "0.1"}, {1e16, "1e+16"}, {1e15, "1000000000000000.0"}, {0.0001, "0.0001"},
        {0.00001, "1e-05"}, {1.5e-5, "1.5e-05"}, {-0.0, "-0.0"}, {0.0, "0.0"},
        {1e22, "1e+22"}, {123456789012345678.0, "1.2345678901234568e+17"}, {2.5, "2.5"},
        {1.0 / 3, "0.3333333333333333"}, {1e-300, "1e-300"}, {5e-324, "5e-324"},
        {1.7976931348623157e308, "1.7976931348623157e+308"}, {100.0, "100.0"},
        {12345.678, "12345.678"}, {9007199254740993.0, "9007199254740992.0"},
    };
    for (size_t i = 0; i < sizeof floats / sizeof floats[0]; i++)
        CHECK_STR(R(mp_value_float(floats[i].d)), floats[i].py);
    CHECK_STR(R(mp_value_float(INFINITY)), "inf");
    CHECK_STR(R(mp_value_float(-INFINITY)), "-inf");
    CHECK_STR(R(mp_value_float(NAN)), "nan");
    CHECK_STR(R(mp_value_int(INT64_MIN)), "-9223372036854775808");

    CHECK_STR(R(mp_value_str("it's")), "\"it's\"");
    CHECK_STR(R(mp_value_str("say \"hi\"")), "'say \"hi\"'");
    CHECK_STR(R(mp_value_str("both ' and \"")), "'both \\' and \"'");
    CHECK_STR(R(mp_value_str("tab\tnl\ncr\r\x01\x7f\\")), "'tab\\tnl\\ncr\\r\\x01\\x7f\\\\'");
    CHECK_STR(R(mp_value_str("h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \xc2\xa0 \xe2\x80\x8b "
                             "\xf0\x9f\x98\x80 \xc2\x85")),
              "'h\xc3\xa9llo \xe4\xb8\x96\xe7\x95\x8c \\xa0 \\u200b \xf0\x9f\x98\x80 \\x85'");
    /* unassigned U+0378, tag U+E0001, line separator U+2028: escaped like Python */
    CHECK_STR(R(mp_value_str("\xcd\xb8\xf3\xa0\x80\x81\xc3\xa9\xe2\x80\xa8")),
              "'\\u0378\\U000e0001\xc3\xa9\\u2028'");
    CHECK_STR(R(mp_value_bytes("\x00" "ab\xff'", 5)), "b\"\\x00ab\\xff'\"");
    CHECK_STR(R(mp_value_bytes("it's \"x\"", 8)), "b'it\\'s \"x\"'");
    CHECK_STR(R(mp_value_pack("[b b [] {} y#]", 1, 0, "", (size_t)0)),
              "[True, False, [], {}, b'']");
    char *s = mp_value_repr(NULL);
    CHECK_STR(s, "NULL");
    mp_free(s);
}

static void test_compare_equal_copy(void)
{
    mp_value *a = mp_value_int(3), *b = mp_value_float(3.0), *c = mp_value_float(3.5);
    CHECK(mp_value_equal(a, b));
    CHECK_INT(mp_value_compare(a, c), -1);
    CHECK_INT(mp_value_compare(c, a), 1);
    mp_value_free(a);
    mp_value_free(b);
    mp_value_free(c);

    /* an int64 that a double cannot hold exactly still compares exactly */
    a = mp_value_int(INT64_MAX);
    b = mp_value_float(9223372036854775807.0); /* rounds to 2^63 */
    CHECK_INT(mp_value_compare(a, b), -1);
    mp_value_free(a);
    mp_value_free(b);

    /* by type first: nil < bool < numbers < str < bytes < list < map */
    a = mp_value_pack("[n b i s y# [] {}]", 1, 1, "s", "y", (size_t)1);
    for (size_t i = 0; i + 1 < mp_value_len(a); i++)
        CHECK_INT(mp_value_compare(mp_value_list_get(a, i), mp_value_list_get(a, i + 1)), -1);
    mp_value_free(a);

    /* maps are equal whatever the insertion order; lists are not */
    a = mp_value_pack("{s i s i}", "x", 1, "y", 2);
    b = mp_value_pack("{s i s i}", "y", 2, "x", 1);
    CHECK(mp_value_equal(a, b));
    CHECK_INT(mp_value_compare(a, b), 0);
    mp_value_free(b);
    b = mp_value_pack("{s i s i}", "y", 3, "x", 1);
    CHECK(!mp_value_equal(a, b));
    CHECK(mp_value_compare(a, b) != 0);
    mp_value_free(a);
    mp_value_free(b);

    a = mp_value_pack("[i [f s#] {s y#}]", 1, 2.5, "a\0b", (size_t)3, "k", "\0", (size_t)1);
    b = mp_value_copy(a);
    CHECK(a != b && mp_value_equal(a, b));
    CHECK(mp_value_list_get(a, 1) != mp_value_list_get(b, 1));
    mp_value_free(a);
    CHECK_STR(R(b), "[1, [2.5, 'a\\x00b'], {'k': b'\\x00'}]");
}

static void test_kind_registry(void)
{
    CHECK(mp_kind_find("test-pipe") == &pipe_kind);
    CHECK(mp_kind_find("no-such-kind") == NULL);
    static const mp_kind dup = {"test-pipe", pe_export, pe_import, pe_release};
    CHECK_ERR(mp_kind_register(&dup), -EEXIST);
    CHECK_CONTAINS(mp_last_error(), "test-pipe");
    static const mp_kind noname = {NULL, pe_export, pe_import, pe_release};
    CHECK_ERR(mp_kind_register(&noname), MP_EINVAL);
}

static void test_encode_matches_msgpack(void)
{
    /* what Python's msgpack.packb([42, None, 'hello']) gives */
    mp_value *v = mp_value_pack("[i n s]", 42, "hello");
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(mp_value_encode(v, &buf, &len, NULL, 0, NULL));
    CHECK_INT(len, 9);
    CHECK(buf && memcmp(buf, "\x93\x2a\xc0\xa5hello", 9) == 0);
    mp_value *back = NULL;
    CHECK_OK(mp_value_decode(buf, len, NULL, 0, &back));
    CHECK(mp_value_equal(v, back));
    mp_free(buf);
    mp_value_free(back);
    mp_value_free(v);
}

static void test_roundtrip_all_types(void)
{
    mp_value *v = mp_value_pack(
        "{s [n b b i I I I f f s# y#] f n i [] s {}}", "k", 1, 0, -1, (int64_t)INT64_MIN,
        (int64_t)INT64_MAX, (int64_t)-129, 1.5, -0.0, "x\0y", (size_t)3, "\xff\x00", (size_t)2,
        0.25, 7, "z");
    CHECK(v != NULL);
    for (int64_t x = 1; x > 0 && x < INT64_MAX / 3; x *= 3) /* every int width */
        CHECK_OK(mp_value_map_set(v, mp_value_int(-x), mp_value_int(x)));
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(mp_value_encode(v, &buf, &len, NULL, 0, NULL));
    mp_value *back = NULL;
    CHECK_OK(mp_value_decode(buf, len, NULL, 0, &back));
    CHECK(mp_value_equal(v, back));
    char *r1 = mp_value_repr(v), *r2 = mp_value_repr(back);
    CHECK_STR(r1, r2);
    mp_free(r1);
    mp_free(r2);
    mp_free(buf);
    mp_value_free(back);
    mp_value_free(v);
}

/* Encode a value with two pipe handles, "send" the fds (dup), decode and use them. */
static void test_handles_roundtrip(void)
{
    int p1[2], p2[2];
    CHECK_OK(pipe2(p1, O_CLOEXEC));
    CHECK_OK(pipe2(p2, O_CLOEXEC));
    pipe_end w1 = {p1[1], 11}, w2 = {p2[1], 22};
    mp_value *v = mp_value_pack("[s h {s h}]", "ends", &pipe_kind, (void *)&w1, "second",
                                &pipe_kind, (void *)&w2);
    CHECK_STR(mp_value_get_str(mp_value_list_get(v, 0), NULL), "ends");
    const mp_kind *k = NULL;
    CHECK(mp_value_get_handle(mp_value_list_get(v, 1), &k) == &w1 && k == &pipe_kind);

    char *buf = NULL;
    size_t len = 0, nfds = 0;
    int fds[4];
    CHECK_ERR(mp_value_encode(v, &buf, &len, NULL, 0, NULL), MP_EUNSUPPORTED);
    CHECK_ERR(mp_value_encode(v, &buf, &len, fds, 1, &nfds), -E2BIG);
    CHECK_OK(mp_value_encode(v, &buf, &len, fds, 4, &nfds));
    CHECK_INT(nfds, 2);
    CHECK_INT(fds[0], p1[1]);
    CHECK_INT(fds[1], p2[1]);
    /* the receiving process gets its own copies of the fds */
    int recv_fds[2] = {dup(fds[0]), dup(fds[1])};
    mp_value *back = NULL;
    CHECK_OK(mp_value_decode(buf, len, recv_fds, 2, &back));
    mp_free(buf);
    mp_value_free(v); /* borrowed handles: w1, w2 untouched */

    pipe_end *e1 = NULL, *e2 = NULL;
    CHECK_OK(mp_value_unpack(back, "[s h {s h}]", &(const char *){0}, &pipe_kind, (void **)&e1,
                             "second", &pipe_kind, (void **)&e2));
    CHECK(e1 && e1->tag == 11 && e2 && e2->tag == 22);
    if (e1 && e2) {
        CHECK_INT(write(e1->fd, "a", 1), 1);
        CHECK_INT(write(e2->fd, "b", 1), 1);
        char c[2];
        CHECK_INT(read(p1[0], c, 1), 1);
        CHECK_INT(read(p2[0], c + 1, 1), 1);
        CHECK(c[0] == 'a' && c[1] == 'b');
    }
    /* take one object out: freeing the value no longer releases it */
    pipe_end *taken = mp_value_take_handle(mp_value_list_get(back, 1), &k);
    CHECK(taken == e1);
    mp_value_free(back); /* releases e2 (closes its fd) */
    pe_release(taken);
    close(p1[0]);
    close(p1[1]);
    close(p2[0]);
    close(p2[1]);
}

/* Every fd given to decode is adopted or closed, on every error path. RUN's fd leak
 * check is what fails if one is left open. */
static void test_decode_closes_fds(void)
{
    int p[2];
    CHECK_OK(pipe2(p, O_CLOEXEC));
    pipe_end w = {p[1], 5};
    mp_value *v = mp_value_pack("[h i]", &pipe_kind, (void *)&w, 1);
    char *buf = NULL;
    size_t len = 0, nfds = 0;
    int fds[2];
    CHECK_OK(mp_value_encode(v, &buf, &len, fds, 2, &nfds));
    mp_value_free(v);

    mp_value *out = NULL;
    /* truncated after the handle was imported: the imported object is released */
    int two[2] = {dup(p[1]), dup(p[1])};
    CHECK_ERR(mp_value_decode(buf, len - 1, two, 2, &out), MP_EPROTO);
    CHECK(out == NULL);
    /* an extra fd nobody claims is closed on success */
    two[0] = dup(p[1]);
    two[1] = dup(p[1]);
    CHECK_OK(mp_value_decode(buf, len, two, 2, &out));
    mp_value_free(out);
    /* too few fds: the handle's index is out of range */
    CHECK_ERR(mp_value_decode(buf, len, NULL, 0, &out), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "fd 0 of 0");
    mp_free(buf);

    /* an unknown kind */
    static const mp_kind ghost = {"ghost-kind", pe_export, pe_import, pe_release};
    v = mp_value_handle(&ghost, &w);
    CHECK_OK(mp_value_encode(v, &buf, &len, fds, 2, &nfds));
    mp_value_free(v);
    int one = dup(p[1]);
    CHECK_ERR(mp_value_decode(buf, len, &one, 1, &out), MP_ENOTFOUND);
    CHECK_CONTAINS(mp_last_error(), "unknown object kind 'ghost-kind'");
    mp_free(buf);

    /* fd-less kind */
    v = mp_value_pack("h", &name_kind, (void *)"worker-7");
    CHECK_OK(mp_value_encode(v, &buf, &len, fds, 2, &nfds));
    CHECK_INT(nfds, 0);
    mp_value_free(v);
    CHECK_OK(mp_value_decode(buf, len, NULL, 0, &out));
    CHECK_STR(mp_value_get_handle(out, NULL), "worker-7");
    mp_value_free(out);
    mp_free(buf);
    close(p[0]);
    close(p[1]);
}

static void test_hostile_input(void)
{
    mp_value *out = NULL;
    /* array32 claiming 4 billion items, map32 likewise, str32 of 4 GB */
    CHECK_ERR(mp_value_decode("\xdd\xff\xff\xff\xff\x01", 6, NULL, 0, &out), MP_EPROTO);
    CHECK_ERR(mp_value_decode("\xdf\xff\xff\xff\xff\x01\x01", 7, NULL, 0, &out), MP_EPROTO);
    CHECK_ERR(mp_value_decode("\xdb\xff\xff\xff\xff" "abc", 8, NULL, 0, &out), MP_EPROTO);
    CHECK_ERR(mp_value_decode("\xc1", 1, NULL, 0, &out), MP_EPROTO);
    CHECK_ERR(mp_value_decode("", 0, NULL, 0, &out), MP_EPROTO);
    CHECK_ERR(mp_value_decode("\x01\x02", 2, NULL, 0, &out), MP_EPROTO); /* trailing */
    CHECK_ERR(mp_value_decode("\xd4\x05\x00", 3, NULL, 0, &out), MP_EPROTO); /* ext 5 */
    CHECK_ERR(mp_value_decode("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9, NULL, 0, &out),
              MP_ERANGE);
    CHECK(out == NULL);
    /* nesting: 512 levels are fine, 2000 are refused without blowing the stack */
    char deep[2001];
    memset(deep, 0x91, 2000);
    deep[2000] = 0xc0;
    CHECK_ERR(mp_value_decode(deep, sizeof deep, NULL, 0, &out), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "nested deeper");
    CHECK_OK(mp_value_decode(deep + 2000 - 512, 513, NULL, 0, &out));
    mp_value_free(out);
    /* float32 and all int widths from other encoders */
    CHECK_OK(mp_value_decode("\xca\x3f\xc0\x00\x00", 5, NULL, 0, &out));
    CHECK(mp_value_get_float(out) == 1.5);
    mp_value_free(out);
    CHECK_OK(mp_value_decode("\xd1\xff\x7f", 3, NULL, 0, &out));
    CHECK_INT(mp_value_get_int(out), -129);
    mp_value_free(out);
}

static uint64_t rng_state = 0x9e3779b97f4a7c15ULL;
static uint32_t rnd(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (uint32_t)rng_state;
}

/* Random buffers, every truncation and every single-bit flip of valid encodings:
 * each decodes to an error or a value, never a crash (ASan watches the rest). */
static void test_fuzz(void)
{
    int p[2];
    CHECK_OK(pipe2(p, O_CLOEXEC));
    pipe_end w = {p[1], 9};
    mp_value *samples[] = {
        mp_value_pack("[i n s]", 42, "hello"),
        mp_value_pack("{f n i s s i}", 0.25, 1, "1", "2", 2),
        mp_value_pack("[I f y# {s [b b]} [[[]]] h]", (int64_t)1 << 40, 2.5, "\0\1\2", (size_t)3,
                      "deep", 1, 0, &pipe_kind, (void *)&w),
    };
    int fds[4];
    size_t nfds;
    long ok = 0, err = 0;
    for (size_t s = 0; s < sizeof samples / sizeof samples[0]; s++) {
        char *buf = NULL;
        size_t len = 0;
        CHECK_OK(mp_value_encode(samples[s], &buf, &len, fds, 4, &nfds));
        for (size_t cut = 0; cut <= len; cut++) {
            mp_value *out = NULL;
            int dfd = nfds ? dup(fds[0]) : -1;
            int r = mp_value_decode(buf, cut, &dfd, nfds, &out);
            *(r == 0 ? &ok : &err) += 1;
            CHECK(cut < len ? r < 0 : r == 0);
            mp_value_free(out);
        }
        for (size_t bit = 0; bit < len * 8; bit++) {
            buf[bit / 8] ^= (char)(1 << (bit % 8));
            mp_value *out = NULL;
            int dfd = nfds ? dup(fds[0]) : -1;
            *(mp_value_decode(buf, len, &dfd, nfds, &out) == 0 ? &ok : &err) += 1;
            char *r = mp_value_repr(out); /* a decoded value is a sound value */
            mp_free(r);
            mp_value_free(out);
            buf[bit / 8] ^= (char)(1 << (bit % 8));
        }
        mp_free(buf);
        mp_value_free(samples[s]);
    }
    unsigned char rb[64];
    for (int i = 0; i < 20000; i++) {
        size_t n = rnd() % sizeof rb;
        for (size_t j = 0; j < n; j++)
            rb[j] = (unsigned char)rnd();
        if (n && i % 3 == 0) /* favour containers so decoding goes deeper */
            rb[0] = (unsigned char)(0x90 | (rnd() & 0x0f));
        mp_value *out = NULL;
        *(mp_value_decode(rb, n, NULL, 0, &out) == 0 ? &ok : &err) += 1;
        mp_value_free(out);
    }
    CHECK(ok > 0 && err > 0);
    close(p[0]);
    close(p[1]);
}

static void test_pack(void)
{
    CHECK_STR(R(mp_value_pack("[i n s]", 42, "hello")), "[42, None, 'hello']");
    CHECK_STR(R(mp_value_pack("{f n i s s i}", 0.25, 1, "1", "2", 2)),
              "{0.25: None, 1: '1', '2': 2}");
    CHECK_STR(R(mp_value_pack("{s: i, s: [s, s#]}", "a", 1, "b", NULL, "xyz", (size_t)2)),
              "{'a': 1, 'b': [None, 'xy']}");
    mp_value *inner = mp_value_pack("[i]", 1);
    CHECK_STR(R(mp_value_pack("[o O]", mp_value_int(5), inner)), "[5, [1]]");
    CHECK_STR(R(inner), "[1]"); /* 'O' copied: still ours */
    CHECK_STR(R(mp_value_pack("I", (int64_t)-5000000000LL)), "-5000000000");

    CHECK(mp_value_pack("[i", 1) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "missing ']'");
    CHECK(mp_value_pack("[q]") == NULL);
    CHECK_CONTAINS(mp_last_error(), "unknown code");
    CHECK(mp_value_pack("i i", 1, 2) == NULL);
    CHECK(mp_value_pack("{i}", 1) == NULL);
    CHECK_CONTAINS(mp_last_error(), "without a value");
    CHECK(mp_value_pack("y", "x") == NULL);
}

static void test_unpack(void)
{
    mp_value *v = mp_value_pack("[i n s {s f s b s y#} I]", 42, "hello", "pi", 3.25, "ok", 1,
                                "raw", "\0z", (size_t)2, (int64_t)1 << 40);
    int i = 0;
    const char *s = NULL;
    double d = 0;
    bool b = false;
    const void *raw = NULL;
    size_t rawlen = 0;
    int64_t big = 0;
    CHECK_OK(mp_value_unpack(v, "[i n s {s:f s:b s:y#} I]", &i, &s, "pi", &d, "ok", &b, "raw",
                             &raw, &rawlen, &big));
    CHECK_INT(i, 42);
    CHECK_STR(s, "hello");
    CHECK(d == 3.25 && b);
    CHECK(rawlen == 2 && raw && memcmp(raw, "\0z", 2) == 0);
    CHECK_INT(big, (int64_t)1 << 40);

    /* optional keys: missing leaves the output untouched */
    int missing = -1;
    CHECK_OK(mp_value_unpack(mp_value_list_get(v, 3), "{s?i s:f}", "nope", &missing, "pi", &d));
    CHECK_INT(missing, -1);

    /* errors name the path */
    CHECK_ERR(mp_value_unpack(v, "[i n i {} I]", &i, &i, &big), MP_ETYPE);
    CHECK_STR(mp_last_error(), "MP_ETYPE: value has the wrong type: item 2: expected int, got str");
    CHECK_ERR(mp_value_unpack(v, "[i n s {s:s} I]", &i, &s, "pi", &s, &big), MP_ETYPE);
    CHECK_CONTAINS(mp_last_error(), "item 3 / key 'pi': expected str, got float");
    CHECK_ERR(mp_value_unpack(v, "[i n s {s:i} I]", &i, &s, "absent", &i, &big), MP_ENOTFOUND);
    CHECK_CONTAINS(mp_last_error(), "item 3: key 'absent' not found");
    CHECK_ERR(mp_value_unpack(v, "[i n]", &i), MP_ETYPE);
    CHECK_CONTAINS(mp_last_error(), "expected a list of 2 items, got 5");
    CHECK_ERR(mp_value_unpack(v, "{s:i}", "x", &i), MP_ETYPE);
    CHECK_CONTAINS(mp_last_error(), "value: expected map, got list");
    CHECK_ERR(mp_value_unpack(v, "[i n s {} I", &i, &s, &big), MP_EINVAL);
    mp_value_free(v);

    v = mp_value_int(1LL << 40);
    CHECK_ERR(mp_value_unpack(v, "i", &i), MP_ERANGE);
    const mp_value *o = NULL;
    CHECK_OK(mp_value_unpack(v, "o", &o));
    CHECK(o == v);
    CHECK_OK(mp_value_unpack(v, "f", &d)); /* ints read as floats */
    CHECK(d == (double)(1LL << 40));
    mp_value_free(v);

    pipe_end w = {-1, 0};
    v = mp_value_pack("h", &pipe_kind, (void *)&w);
    void *obj = NULL;
    CHECK_ERR(mp_value_unpack(v, "h", &name_kind, &obj), MP_ETYPE);
    CHECK_CONTAINS(mp_last_error(), "expected a 'test-name' handle, got 'test-pipe'");
    CHECK_OK(mp_value_unpack(v, "h", NULL, &obj)); /* any kind */
    CHECK(obj == &w);
    mp_value_free(v);
}

/* Ints are encoded and decoded on a fast path of their own: at every width boundary the
 * bytes must be MessagePack's shortest form (as msgpack-c writes it: non-negative values
 * in the uint formats) and decode back to the same int, alone and inside a list. */
static void test_int_widths_encode_shortest(void)
{
    static const struct {
        int64_t v;
        unsigned char tag;
        size_t len;
    } cases[] = {{0, 0x00, 1}, {127, 0x7f, 1}, {128, 0xcc, 2}, {255, 0xcc, 2},
                 {256, 0xcd, 3}, {65535, 0xcd, 3}, {65536, 0xce, 5},
                 {4294967295LL, 0xce, 5}, {4294967296LL, 0xcf, 9}, {INT64_MAX, 0xcf, 9},
                 {-1, 0xff, 1}, {-32, 0xe0, 1}, {-33, 0xd0, 2}, {-128, 0xd0, 2},
                 {-129, 0xd1, 3}, {-32768, 0xd1, 3}, {-32769, 0xd2, 5},
                 {-2147483647LL - 1, 0xd2, 5}, {-2147483649LL, 0xd3, 9}, {INT64_MIN, 0xd3, 9}};
    mp_value *list = mp_value_list();
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        mp_value *v = mp_value_int(cases[i].v), *back = NULL;
        char *b = NULL;
        size_t len = 0, nfds = 0;
        CHECK_OK(mp_value_encode(v, &b, &len, NULL, 0, &nfds));
        bad += len != cases[i].len || (unsigned char)b[0] != cases[i].tag;
        CHECK_OK(mp_value_decode(b, len, NULL, 0, &back));
        bad += mp_value_get_int(back) != cases[i].v;
        mp_value_free(back);
        mp_free(b);
        CHECK_OK(mp_value_list_append(list, v));
    }
    CHECK_INT(bad, 0);
    char *b = NULL;
    size_t len = 0, nfds = 0;
    mp_value *back = NULL;
    CHECK_OK(mp_value_encode(list, &b, &len, NULL, 0, &nfds));
    CHECK_OK(mp_value_decode(b, len, NULL, 0, &back));
    CHECK(mp_value_equal(back, list));
    mp_free(b);
    mp_value_free(back);
    mp_value_free(list);
}

/* Values from a block (mp__vblock, how the pool decodes a chunk's results): each is
 * freed on its own, in any order and thread; the block goes with the last one (ASan
 * runs of this test catch a leak or a double free). */
static void *free_odd(void *arg)
{
    mp_value **vs = arg;
    for (int i = 1; i < 1000; i += 2)
        mp_value_free(vs[i]);
    return NULL;
}

static void test_value_blocks(void)
{
    /* [0, -1, 2, -3, ...] as 1000 ints, then a nested list, a string and a float. */
    mp_value *list = mp_value_list();
    for (int i = 0; i < 1000; i++)
        mp_value_list_append(list, mp_value_int(i % 2 ? -i : i * 100000));
    mp_value_list_append(list, mp_value_pack("[i [n b] s f]", 7, true, "seven", 7.5));
    char *enc = NULL;
    size_t len = 0;
    CHECK_OK(mp_value_encode(list, &enc, &len, NULL, 0, NULL));
    /* A block with room for 1000: the last item's scalars come singly. */
    mp__vblock *b = mp__vblock_new(1000);
    CHECK(b != NULL);
    mp_value *vs[1001];
    const char *p = enc + 3, *end = enc + len; /* past the array 16 header */
    for (int i = 0; i < 1001; i++) {
        size_t used = 0;
        CHECK_OK(mp__value_decode_next_in(p, (size_t)(end - p), b, &used, &vs[i]));
        p += used;
    }
    CHECK(p == end);
    mp__vblock_done(b);
    for (int i = 0; i < 1000; i++)
        CHECK_INT(mp_value_get_int(vs[i]), i % 2 ? -i : i * 100000);
    CHECK_STR(mpt_repr(vs[1000]), "[7, [None, True], 'seven', 7.5]");
    mp_value *copy = mp_value_copy(vs[10]);
    pthread_t t;
    CHECK_INT(pthread_create(&t, NULL, free_odd, vs), 0);
    for (int i = 998; i >= 0; i -= 2)
        mp_value_free(vs[i]);
    pthread_join(t, NULL);
    CHECK_INT(mp_value_get_int(copy), 1000000);
    mp_value_free(copy);
    mp_value_free(vs[1000]);
    /* A block whose creator is done before any value is freed, and one never used. */
    b = mp__vblock_new(4);
    mp_value *a = mp__vblock_take(b, MP_INT), *z = mp__vblock_take(b, MP_FLOAT);
    CHECK(a && z && mp_value_type(a) == MP_INT && mp_value_type(z) == MP_FLOAT);
    mp__vblock_done(b);
    mp_value_free(z);
    mp_value_free(a);
    mp__vblock_done(mp__vblock_new(8));
    mp__vblock_done(NULL);
    CHECK(mp__vblock_take(NULL, MP_INT) == NULL);
    free(enc);
    mp_value_free(list);
}

/* Setting values in place (mp_value_set_*): the pointer stays (bytes move to a new value
 * only when they outgrow the old one's memory), what the value held is released (a
 * list's items; an owned handle's object, whose fd closes), NULL is MP_EINVAL. */
static void test_set_in_place(void)
{
    mp_value *v = mp_value_pack("[i s [f]]", 1, "two", 3.0), *same = v;
    CHECK_OK(mp_value_set_int(v, -5)); /* the list's items are freed (ASan: no leak) */
    CHECK(v == same && mp_value_type(v) == MP_INT && mp_value_get_int(v) == -5);
    CHECK_OK(mp_value_set_int(v, 1LL << 40));
    CHECK_STR(mpt_repr(v), "1099511627776");
    CHECK_OK(mp_value_set_float(v, 0.5));
    CHECK_STR(mpt_repr(v), "0.5");
    CHECK_OK(mp_value_set_bool(v, true));
    CHECK_STR(mpt_repr(v), "True");
    CHECK_OK(mp_value_set_nil(v));
    CHECK_STR(mpt_repr(v), "None");
    CHECK(v == same);
    mp_value *m = mp_value_pack("{s i}", "k", 1);
    CHECK_OK(mp_value_set_float(m, -2.25));
    CHECK_STR(mpt_repr(m), "-2.25");
    mp_value_free(m);

    /* bytes and str: in place while they fit the value's block, else a new value */
    CHECK_OK(mp_value_set_bytes(&v, "\0ab", 3));
    CHECK(v == same);
    CHECK_STR(mpt_repr(v), "b'\\x00ab'");
    CHECK_OK(mp_value_set_strn(&v, "hello", 5));
    CHECK(v == same);
    CHECK_STR(mpt_repr(v), "'hello'");
    size_t len = 0;
    CHECK_OK(mp_value_set_strn(&v, mp_value_get_str(v, NULL) + 1, 3)); /* its own bytes */
    CHECK_STR(mp_value_get_str(v, &len), "ell");
    CHECK_INT(len, 3);
    char big[300];
    memset(big, 'x', sizeof big);
    CHECK_OK(mp_value_set_bytes(&v, big, sizeof big)); /* outgrows it: a new value */
    CHECK(mp_value_type(v) == MP_BYTES && mp_value_len(v) == 300);
    const char *b = mp_value_get_bytes(v, &len);
    CHECK(len == 300 && b && b[0] == 'x' && b[299] == 'x');
    same = v;
    CHECK_OK(mp_value_set_bytes(&v, big, 40)); /* shorter bytes: in its 300-byte block */
    CHECK(v == same && mp_value_len(v) == 40);
    CHECK_OK(mp_value_set_int(v, 7)); /* any value has room for 15 bytes */
    CHECK_OK(mp_value_set_bytes(&v, big, 15));
    CHECK(v == same && mp_value_len(v) == 15);
    CHECK_OK(mp_value_set_bytes(&v, NULL, 0));
    CHECK(mp_value_type(v) == MP_BYTES && mp_value_len(v) == 0);
    mp_value_free(v);
    mp_value *fresh = NULL;
    CHECK_OK(mp_value_set_strn(&fresh, "new", 3)); /* NULL: a new value */
    CHECK_STR(mpt_repr(fresh), "'new'");
    mp_value_free(fresh);

    /* a value in a block of scalars has no room for bytes: replaced */
    mp__vblock *blk = mp__vblock_new(2);
    mp_value *s = mp__vblock_take(blk, MP_INT), *s0 = s;
    mp__vblock_done(blk);
    CHECK_OK(mp_value_set_int(s, 3));
    CHECK(s == s0 && mp_value_get_int(s) == 3);
    CHECK_OK(mp_value_set_bytes(&s, "abc", 3));
    CHECK(s != s0);
    CHECK_STR(mpt_repr(s), "b'abc'");
    mp_value_free(s);

    /* an owned handle's object is released */
    int p[2];
    CHECK_OK(pipe2(p, O_CLOEXEC));
    pipe_end w = {p[1], 5};
    mp_value *h = mp_value_handle(&pipe_kind, &w), *back = NULL;
    char *enc = NULL;
    size_t elen = 0, nfds = 0;
    int fds[1];
    CHECK_OK(mp_value_encode(h, &enc, &elen, fds, 1, &nfds));
    int mine = dup(fds[0]);
    CHECK_OK(mp_value_decode(enc, elen, &mine, 1, &back));
    CHECK(fcntl(mine, F_GETFD) >= 0);
    CHECK_OK(mp_value_set_int(back, 1));
    CHECK(fcntl(mine, F_GETFD) < 0 && errno == EBADF);
    mp_value_free(back);
    mp_value_free(h);
    mp_free(enc);
    close(p[0]);
    close(p[1]);

    CHECK_ERR(mp_value_set_int(NULL, 1), MP_EINVAL);
    CHECK_STR(mp_last_error(), "MP_EINVAL: invalid argument: mp_value_set_int: NULL value");
    CHECK_ERR(mp_value_set_nil(NULL), MP_EINVAL);
    CHECK_ERR(mp_value_set_bool(NULL, true), MP_EINVAL);
    CHECK_ERR(mp_value_set_float(NULL, 1.0), MP_EINVAL);
    CHECK_ERR(mp_value_set_bytes(NULL, "a", 1), MP_EINVAL);
    CHECK_ERR(mp_value_set_strn(NULL, "a", 1), MP_EINVAL);
    mp_value *keep = mp_value_int(9);
    CHECK_ERR(mp_value_set_bytes(&keep, NULL, 2), MP_EINVAL);
    CHECK_STR(mp_last_error(), "MP_EINVAL: invalid argument: NULL data with length 2");
    CHECK(mp_value_get_int(keep) == 9); /* unchanged on failure */
    mp_value_free(keep);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_int_widths_encode_shortest);
    RUN_IF(argc, argv, test_scalars);
    RUN_IF(argc, argv, test_lists_and_maps);
    RUN_IF(argc, argv, test_big_map);
    RUN_IF(argc, argv, test_container_sizes);
    RUN_IF(argc, argv, test_repr_like_python);
    RUN_IF(argc, argv, test_compare_equal_copy);
    RUN_IF(argc, argv, test_kind_registry);
    RUN_IF(argc, argv, test_encode_matches_msgpack);
    RUN_IF(argc, argv, test_roundtrip_all_types);
    RUN_IF(argc, argv, test_handles_roundtrip);
    RUN_IF(argc, argv, test_decode_closes_fds);
    RUN_IF(argc, argv, test_hostile_input);
    RUN_IF(argc, argv, test_fuzz);
    RUN_IF(argc, argv, test_pack);
    RUN_IF(argc, argv, test_unpack);
    RUN_IF(argc, argv, test_value_blocks);
    RUN_IF(argc, argv, test_set_in_place);
    return mpt_done();
}
