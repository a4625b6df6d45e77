/* The pickle codec (mp_value_pickle / mp_value_unpickle) and the pickle codec of
 * connections, against the python3 here: Python's pickles decode to the values they hold,
 * ours load in Python to equal objects, code-naming pickles are refused (nothing runs),
 * hostile input is an error (never a crash), and Python's multiprocessing.connection
 * send()/recv() talk to ours in both directions (tests/py_peer.py). */
#include "multiproc/connection.h"
#include "multiproc/error.h"
#include "multiproc/value.h"
#include "test_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static const char *peer_script(void)
{
    static char path[512];
    const char *src = getenv("MP_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/py_peer.py", src ? src : "..");
    return path;
}

/* Python's pickle.dumps(expr, proto) (expr is Python source). */
static size_t py_dumps(const char *expr, int proto, char *out, size_t cap)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import pickle,sys; sys.stdout.buffer.write(pickle.dumps(%s, %d))'",
             expr, proto);
    FILE *f = popen(cmd, "r");
    size_t n = f ? fread(out, 1, cap, f) : 0;
    if (f)
        CHECK_INT(pclose(f), 0);
    return n;
}

/* Whether Python's pickle.loads of buf equals the Python expression. */
static bool py_loads_equals(const char *buf, size_t len, const char *expr)
{
    char cmd[4096];
    snprintf(cmd, sizeof cmd,
             "python3 -c 'import pickle,sys; o = pickle.loads(sys.stdin.buffer.read()); "
             "e = %s; sys.exit(0 if o == e and type(o) == type(e) else print(repr(o)) or 1)'",
             expr);
    FILE *f = popen(cmd, "w");
    if (!f)
        return false;
    fwrite(buf, 1, len, f);
    int st = pclose(f);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* ---- decoding Python's pickles ------------------------------------------------------------ */

static void decode_case(const char *expr, int proto, const char *want_repr)
{
    static char buf[1 << 20];
    size_t n = py_dumps(expr, proto, buf, sizeof buf);
    CHECK(n > 0);
    mp_value *v = NULL;
    int r = mp_value_unpickle(buf, n, &v);
    if (r < 0)
        fprintf(stderr, "  %s (protocol %d): %s\n", expr, proto, mp_last_error());
    CHECK_INT(r, 0);
    if (v && want_repr)
        CHECK_STR(mpt_repr(v), want_repr);
    mp_value_free(v);
}

static void test_decode_python(void)
{
    for (int p = 2; p <= 5; p++) {
        decode_case("[42, None, \"hello\"]", p, "[42, None, 'hello']");
        decode_case("(True, False, 0, -1, 255, 256, 65535, 65536, -2**31, 2**31)", p,
                    "[True, False, 0, -1, 255, 256, 65535, 65536, -2147483648, 2147483648]");
        decode_case("[2**63 - 1, -2**63, 1.5, -0.0, float(\"inf\")]", p,
                    "[9223372036854775807, -9223372036854775808, 1.5, -0.0, inf]");
        decode_case("{0.25: None, 1: \"1\", \"2\": 2, (1, 2): [()]}", p,
                    "{0.25: None, 1: '1', '2': 2, [1, 2]: [[]]}");
        decode_case("\"h\\u00e9llo \\U0001f600\"", p, "'h\u00e9llo \U0001f600'");
        decode_case("[\"x\" * 300, (1,), (1, 2, 3), (1, 2, 3, 4)]", p, NULL);
    }
    /* repr of the long one checked apart */
    decode_case("[(1,), (1, 2, 3), (1, 2, 3, 4)]", 4, "[[1], [1, 2, 3], [1, 2, 3, 4]]");
    for (int p = 3; p <= 5; p++)
        decode_case("[b\"\", b\"\\x00\\xff\", b\"y\" * 3]", p, "[b'', b'\\x00\\xff', b'yyy']");
    for (int p = 4; p <= 5; p++) {
        decode_case("[{3}, frozenset(), set()]", p, "[[3], [], []]");
        decode_case("b\"z\" * 70000", p, NULL);
    }
    decode_case("bytearray(b\"ba\")", 5, "b'ba'");
    /* shared references become equal copies */
    decode_case("(lambda s, l: [l, l, s, {s: l}])(\"shared\", [1, 2])", 4,
                "[[1, 2], [1, 2], 'shared', {'shared': [1, 2]}]");
    /* an int beyond 64 bits is MP_ERANGE, named */
    static char buf[256];
    size_t n = py_dumps("[2**64]", 4, buf, sizeof buf);
    mp_value *v = NULL;
    CHECK_ERR(mp_value_unpickle(buf, n, &v), MP_ERANGE);
    CHECK_CONTAINS(mp_last_error(), "64 bits");
    CHECK(v == NULL);
    /* Python's default protocol for bytearray (4) is a call: refused, named */
    n = py_dumps("bytearray(b\"x\")", 4, buf, sizeof buf);
    CHECK_ERR(mp_value_unpickle(buf, n, &v), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "STACK_GLOBAL");
}

/* ---- encoding for Python -------------------------------------------------------------------- */

static void encode_case(mp_value *v, int proto, const char *expr)
{
    char *buf = NULL;
    size_t len = 0;
    CHECK_OK(mp_value_pickle(v, proto, &buf, &len));
    if (!py_loads_equals(buf, len, expr)) {
        fprintf(stderr, "  python did not load %s\n", expr);
        CHECK(false);
    }
    /* and back through our decoder */
    mp_value *back = NULL;
    CHECK_OK(mp_value_unpickle(buf, len, &back));
    CHECK(mp_value_equal(v, back));
    mp_value_free(back);
    mp_free(buf);
    mp_value_free(v);
}

static void test_encode_python(void)
{
    encode_case(mp_value_pack("[i n s]", 42, "hello"), 0, "[42, None, \"hello\"]");
    encode_case(mp_value_pack("[b b I I I I I I I I I]", 1, 0, (int64_t)0, (int64_t)255,
                              (int64_t)256, (int64_t)65536, (int64_t)-1, (int64_t)-2147483648LL,
                              (int64_t)2147483648LL, (int64_t)INT64_MAX, (int64_t)INT64_MIN),
                5, "[True, False, 0, 255, 256, 65536, -1, -2**31, 2**31, 2**63-1, -2**63]");
    encode_case(mp_value_pack("[f f f]", 0.1, -0.0, 1e300), 4, "[0.1, -0.0, 1e300]");
    encode_case(mp_value_pack("{f n i s s i}", 0.25, 1, "1", "2", 2), 4,
                "{0.25: None, 1: \"1\", \"2\": 2}");
    encode_case(mp_value_pack("{[i i] [s]}", 1, 2, "list key"), 4, "{(1, 2): [\"list key\"]}");
    encode_case(mp_value_pack("{[[i] i i i] n}", 1, 2, 3, 4), 4, "{((1,), 2, 3, 4): None}");
    encode_case(mp_value_pack("{[] n}"), 4, "{(): None}");
    encode_case(mp_value_pack("[y# s#]", "\0\xff", (size_t)2, "a\0b", (size_t)3), 4,
                "[b\"\\x00\\xff\", \"a\\x00b\"]");
    encode_case(mp_value_str("h\xc3\xa9llo \xf0\x9f\x98\x80"), 4, "\"h\\u00e9llo \\U0001f600\"");
    encode_case(mp_value_str("\xed\xa0\x80"), 4, "\"\\ud800\"");
    char *big = malloc(70000);
    memset(big, 'q', 70000);
    encode_case(mp_value_strn(big, 70000), 4, "\"q\" * 70000");
    encode_case(mp_value_bytes(big, 300), 5, "b\"q\" * 300");
    free(big);

    /* what Python has no form for */
    char *buf = NULL;
    size_t len = 0;
    int dummy;
    mp_value *h = mp_value_pack("[h]", &mp_kind_connection, &dummy);
    CHECK_ERR(mp_value_pickle(h, 4, &buf, &len), MP_EUNSUPPORTED);
    CHECK_CONTAINS(mp_last_error(), "handle (connection)");
    mp_value_free(h);
    mp_value *mk = mp_value_pack("{{s i} n}", "a", 1);
    CHECK_ERR(mp_value_pickle(mk, 4, &buf, &len), MP_EUNSUPPORTED);
    CHECK_CONTAINS(mp_last_error(), "map used as a map key");
    mp_value_free(mk);
    mp_value *bad = mp_value_strn("\xff", 1);
    CHECK_ERR(mp_value_pickle(bad, 4, &buf, &len), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "not UTF-8");
    CHECK_ERR(mp_value_pickle(bad, 3, &buf, &len), MP_EINVAL);
    mp_value_free(bad);
    CHECK(buf == NULL);
}

/* ---- code is refused, hostile input is an error ----------------------------------------------- */

static int unpickle_code(const void *p, size_t n)
{
    mp_value *v = (mp_value *)1;
    int r = mp_value_unpickle(p, n, &v);
    CHECK(r == 0 || v == NULL);
    mp_value_free(v);
    return r;
}

static void test_refuses_code(void)
{
    char path[128], cmd[256], evil[512];
    snprintf(path, sizeof path, "/tmp/mp-pickle-pwned-%d", (int)getpid());
    unlink(path);
    snprintf(cmd, sizeof cmd, "touch %s", path);
    /* GLOBAL posix.system, the command, TUPLE1, REDUCE: what a hostile peer sends. */
    size_t cl = strlen(cmd), n = 0;
    memcpy(evil, "\x80\x02" "cposix\nsystem\nq\x00X", 19); /* ... BINPUT 0, BINUNICODE */
    n = 19;
    for (int i = 0; i < 4; i++)
        evil[n++] = (char)(cl >> (8 * i));
    memcpy(evil + n, cmd, cl);
    n += cl;
    memcpy(evil + n, "\x85R.", 3);
    n += 3;
    CHECK_ERR(unpickle_code(evil, n), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "GLOBAL");
    CHECK_CONTAINS(mp_last_error(), "refused");
    CHECK(access(path, F_OK) != 0);
    /* the payload is real: Python's own loads runs it */
    py_loads_equals(evil, n, "0");
    CHECK(access(path, F_OK) == 0);
    unlink(path);

    /* every code opcode by itself, named */
#define OP(lit, name) {lit, sizeof(lit) - 1, name}
    static const struct { const char *bytes; size_t n; const char *name; } ops[] = {
        OP("\x80\x04\x8c\x02" "os\x8c\x06" "system\x93.", "STACK_GLOBAL"),
        OP("\x80\x02NNR.", "REDUCE"),
        OP("\x80\x02NNb.", "BUILD"),
        OP("\x80\x02(ios\nsystem\n.", "INST"),
        OP("\x80\x02(No.", "OBJ"),
        OP("\x80\x02N)\x81.", "NEWOBJ"),
        OP("\x80\x04N)}\x92.", "NEWOBJ_EX"),
        OP("\x80\x02\x82\x01.", "EXT1"),
        OP("\x80\x02\x83\x01\x00.", "EXT2"),
        OP("\x80\x02\x84\x01\x00\x00\x00.", "EXT4"),
        OP("\x80\x02P1\n.", "PERSID"),
        OP("\x80\x02NQ.", "BINPERSID"),
        OP("\x80\x05\x97.", "NEXT_BUFFER"),
        OP("\x80\x05N\x98.", "READONLY_BUFFER"),
    };
#undef OP
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        CHECK_ERR(unpickle_code(ops[i].bytes, ops[i].n), MP_EPROTO);
        CHECK_CONTAINS(mp_last_error(), ops[i].name);
    }
}

#define L(lit) lit, sizeof(lit) - 1

static void test_hostile(void)
{
    /* every truncation and every single-bit flip of a valid pickle: an error or a value,
     * never a crash (ASan builds check the memory) */
    static char buf[4096];
    size_t n = py_dumps("[1, [2, (3, {\"k\": b\"v\"})], \"s\" * 20, {1, 2}, 2**40, 1.5, None, True]",
                        4, buf, sizeof buf);
    CHECK(n > 20);
    for (size_t k = 0; k < n; k++)
        CHECK(unpickle_code(buf, k) < 0);
    for (size_t k = 0; k < n; k++)
        for (int bit = 0; bit < 8; bit++) {
            buf[k] ^= (char)(1 << bit);
            unpickle_code(buf, n);
            buf[k] ^= (char)(1 << bit);
        }
    CHECK_OK(unpickle_code(buf, n));

    /* a length far beyond the input allocates nothing */
    CHECK_ERR(unpickle_code(L("\x80\x04\x8d\xff\xff\xff\xff\xff\xff\xff\x3f.")), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "beyond");
    CHECK_ERR(unpickle_code(L("\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\x7fN.")), MP_EPROTO);
    CHECK_ERR(unpickle_code(L("\x80\x05\x96\x00\x00\x00\x00\x01\x00\x00\x00.")), MP_EPROTO);
    /* deep nesting: 100000 empty lists appended into each other */
    size_t deep = 100000;
    char *d = malloc(2 * deep + 4);
    size_t m = 0;
    d[m++] = '\x80';
    d[m++] = 2;
    for (size_t i = 0; i < deep; i++)
        d[m++] = ']';
    for (size_t i = 1; i < deep; i++)
        d[m++] = 'a';
    d[m++] = '.';
    CHECK_ERR(unpickle_code(d, m), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "nesting deeper than 512");
    /* 512 levels are fine, as in MessagePack */
    m = 2;
    for (size_t i = 0; i < 512; i++)
        d[m++] = ']';
    for (size_t i = 1; i < 512; i++)
        d[m++] = 'a';
    d[m++] = '.';
    CHECK_OK(unpickle_code(d, m));
    /* shared references doubling 64 times: refused by the budget, not 2^64 copies */
    m = 0;
    d[m++] = '\x80';
    d[m++] = 2;
    d[m++] = 'N';
    for (int i = 0; i < 64; i++) {
        memcpy(d + m, "q\x00h\x00\x86", 5); /* PUT 0, GET 0, TUPLE2: (x, x) */
        m += 5;
    }
    d[m++] = '.';
    CHECK_ERR(unpickle_code(d, m), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "shared references");
    free(d);
    /* a list that contains itself (a = []; a.append(a)) */
    CHECK_ERR(unpickle_code(L("\x80\x02]q\x00h\x00" "a.")), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "recursive");
    /* Python's own pickle of a recursive structure */
    n = py_dumps("(lambda a: (a.append(a), a)[1])([1])", 4, buf, sizeof buf);
    CHECK_ERR(unpickle_code(buf, n), MP_EPROTO);
    n = py_dumps("(lambda d: (d.update(me=d), d)[1])({})", 4, buf, sizeof buf);
    CHECK_ERR(unpickle_code(buf, n), MP_EPROTO);
    /* memo misuse, stack misuse, framing */
    CHECK_ERR(unpickle_code(L("\x80\x02h\x05.")), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "never stored");
    CHECK_ERR(unpickle_code(L("\x80\x02Nr\xff\xff\xff\x7f.")), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "memo index");
    CHECK_ERR(unpickle_code(L("\x80\x02" "a.")), MP_EPROTO);
    CHECK_ERR(unpickle_code(L("\x80\x02Ne.")), MP_EPROTO);
    CHECK_ERR(unpickle_code(L("\x80\x02(Nu.")), MP_EPROTO);
    CHECK_ERR(unpickle_code(L("\x80\x02}N.")), MP_EPROTO);
    CHECK_ERR(unpickle_code(L("\x80\x02N.junk")), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "after STOP");
    CHECK_ERR(unpickle_code(L("\x80\x02N")), MP_EPROTO);
    CHECK_ERR(unpickle_code("", 0), MP_EPROTO);
    CHECK_ERR(unpickle_code(L("\x80\x06N.")), MP_EPROTO);
    CHECK_ERR(unpickle_code(L("\x80\x02\x8c\x01\xff.")), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "UTF-8");
    CHECK_ERR(unpickle_code(L("\x80\x02\x8b\x00\x00\x00\x80.")), MP_EPROTO);
    CHECK_ERR(unpickle_code(L("\x80\x02I1\n.")), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "protocol 0/1");
    CHECK_ERR(unpickle_code(L("\x80\x02\xff.")), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "unknown opcode 0xff");
    /* POP, POP_MARK, DUP, MARK/LIST/DICT, text PUT/GET: what the machine allows */
    mp_value *v = NULL;
    CHECK_OK(mp_value_unpickle(L("\x80\x02K\x01K\x02" "0(K\x03K\x04" "1K\x05\x86."), &v));
    CHECK_STR(mpt_repr(v), "[1, 5]");
    mp_value_free(v);
    CHECK_OK(mp_value_unpickle(L("\x80\x02(K\x01K\x02l2\x86."), &v));
    CHECK_STR(mpt_repr(v), "[[1, 2], [1, 2]]");
    mp_value_free(v);
    CHECK_OK(mp_value_unpickle(L("\x80\x02(K\x01K\x02" "dp7\n0g7\n."), &v));
    CHECK_STR(mpt_repr(v), "{1: 2}");
    mp_value_free(v);
    /* a duplicate key whose first value was memoized: no dangling memo entry */
    CHECK_OK(mp_value_unpickle(L("\x80\x02}(K\x01]q\x00K\x01K\x02u0h\x00."), &v));
    CHECK_STR(mpt_repr(v), "[]");
    mp_value_free(v);
    CHECK_ERR(mp_value_unpickle(NULL, 1, &v), MP_EINVAL);
    CHECK_ERR(mp_value_unpickle("N.", 2, NULL), MP_EINVAL);
}

#undef L

/* ---- Python's multiprocessing.connection on the other side ------------------------------------ */

#define KEY "pickle-key"

/* Serve one Python client: echo every value until EOF; count refused messages. */
static int echo_until_eof(mp_connection *c, int *refused, char *last_err, size_t errcap)
{
    int echoed = 0;
    for (;;) {
        mp_value *v = NULL;
        int r = mp_connection_recv(c, &v);
        if (r == MP_EEOF)
            return echoed;
        if (r == MP_EPROTO) {
            (*refused)++;
            snprintf(last_err, errcap, "%s", mp_last_error());
            continue;
        }
        CHECK_OK(r);
        if (r < 0)
            return echoed;
        r = mp_connection_send(c, v);
        if (r < 0)
            fprintf(stderr, "  send back %s: %s\n", mpt_repr(v), mp_last_error());
        CHECK_OK(r);
        mp_value_free(v);
        echoed++;
    }
}

static void py_client(const char *mode, const char *arg, int *echoed, int *refused,
                      char *err, size_t errcap, char *out, size_t outcap)
{
    mp_listener_opts o = {.address = "127.0.0.1:0", .authkey = KEY, .authkey_len = strlen(KEY),
                          .codec = MP_CODEC_PICKLE};
    mp_listener *l = mp_listener_new(&o);
    CHECK(l != NULL);
    if (!l)
        return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s %s '%s' %s %s", peer_script(), mode,
             mp_listener_address(l), KEY, arg ? arg : "");
    FILE *py = popen(cmd, "r");
    mp_connection *c = NULL;
    CHECK_OK(mp_listener_accept(l, 30, &c));
    *refused = 0;
    *echoed = c ? echo_until_eof(c, refused, err, errcap) : 0;
    mp_connection_free(c);
    size_t n = fread(out, 1, outcap - 1, py);
    out[n] = 0;
    int st = pclose(py);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fprintf(stderr, "  python %s: %s\n", mode, out);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    mp_listener_free(l);
}

static void test_python_client_objects(void)
{
    int echoed = 0, refused = 0;
    char err[512] = "", out[4096];
    py_client("objects", NULL, &echoed, &refused, err, sizeof err, out, sizeof out);
    CHECK(echoed >= 40);
    CHECK_INT(refused, 0);
    CHECK_CONTAINS(out, "ok");
}

static void test_python_roundtrip_random(void)
{
    int echoed = 0, refused = 0;
    char err[512] = "", out[4096];
    char seed[32];
    snprintf(seed, sizeof seed, "%d", (int)getpid());
    py_client("roundtrip", seed, &echoed, &refused, err, sizeof err, out, sizeof out);
    CHECK_INT(echoed, 400);
    CHECK_INT(refused, 0);
    CHECK_CONTAINS(out, "roundtrip 400");
}

static void test_python_client_hostile(void)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/mp-pickle-pwned-conn-%d", (int)getpid());
    unlink(path);
    int echoed = 0, refused = 0;
    char err[512] = "", out[4096];
    py_client("hostile", path, &echoed, &refused, err, sizeof err, out, sizeof out);
    CHECK_INT(refused, 1);
    CHECK_CONTAINS(err, "GLOBAL");
    CHECK_INT(echoed, 1); /* the connection stayed usable */
    CHECK(access(path, F_OK) != 0);
}

static void test_python_listener(void)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/mp-test-pkl-%d.sock", (int)getpid());
    unlink(path);
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s objlistener '%s' %s", peer_script(), path, KEY);
    FILE *py = popen(cmd, "r");
    char line[512] = "";
    CHECK(fgets(line, sizeof line, py) != NULL);
    CHECK(strncmp(line, "ready ", 6) == 0);
    mp_client_opts o = {.authkey = KEY, .authkey_len = strlen(KEY), .time_limit = 30,
                        .codec = MP_CODEC_PICKLE};
    mp_connection *c = mp_client(path, &o);
    CHECK(c != NULL);
    if (c) {
        CHECK_INT(mp_connection_codec(c), MP_CODEC_PICKLE);
        mp_value *v = mp_value_pack("{s [i f s n] s y#}", "nums", 1, 2.5, "three", "raw",
                                    "\x01\x02", (size_t)2);
        CHECK_OK(mp_connection_send(c, v));
        mp_value *back = NULL;
        CHECK_OK(mp_connection_recv(c, &back));
        CHECK_STR(mpt_repr(back), "[{'nums': [1, 2.5, 'three', None], 'raw': b'\\x01\\x02'}, "
                                  "'from python']");
        CHECK_OK(mp_connection_send(c, back));
        mp_value_free(back);
        mp_value_free(v);
        mp_connection_free(c);
    }
    if (!fgets(line, sizeof line, py))
        line[0] = 0;
    CHECK_CONTAINS(line, "got {'nums'");
    int st = pclose(py);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_codec_option(void)
{
    mp_connection *a = NULL, *b = NULL;
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK_INT(mp_connection_codec(a), MP_CODEC_MSGPACK);
    CHECK_ERR(mp_connection_set_codec(a, (mp_codec)7), MP_EINVAL);
    CHECK_ERR(mp_connection_set_codec(NULL, MP_CODEC_PICKLE), MP_EINVAL);
    CHECK_OK(mp_connection_set_codec(a, MP_CODEC_PICKLE));
    CHECK_OK(mp_connection_set_codec(b, MP_CODEC_PICKLE));
    /* the bytes on the wire are a pickle */
    mp_value *v = mp_value_pack("[i s]", 1, "x");
    CHECK_OK(mp_connection_send(a, v));
    CHECK_OK(mp_connection_set_codec(b, MP_CODEC_MSGPACK));
    void *raw = NULL;
    size_t len = 0;
    CHECK_OK(mp_connection_recv_bytes(b, 0, &raw, &len));
    CHECK(len > 2 && ((unsigned char *)raw)[0] == 0x80 && ((unsigned char *)raw)[1] == 4);
    mp_free(raw);
    CHECK_OK(mp_connection_set_codec(b, MP_CODEC_PICKLE));
    CHECK_OK(mp_connection_send(a, v));
    mp_value *back = NULL;
    CHECK_OK(mp_connection_recv(b, &back));
    CHECK(mp_value_equal(v, back));
    mp_value_free(back);
    /* handles do not travel in a pickle */
    mp_value *h = mp_value_pack("[h]", &mp_kind_connection, a);
    CHECK_ERR(mp_connection_send(a, h), MP_EUNSUPPORTED);
    mp_value_free(h);
    /* the codec travels with the connection */
    mp_value *hv = mp_value_pack("[h]", &mp_kind_connection, a);
    char *buf = NULL;
    int fds[4];
    size_t nfds = 0;
    CHECK_OK(mp_value_encode(hv, &buf, &len, fds, 4, &nfds));
    CHECK_INT((int)nfds, 1);
    int dupfd = dup(fds[0]);
    mp_value *imp = NULL;
    CHECK_OK(mp_value_decode(buf, len, &dupfd, 1, &imp));
    mp_connection *a2 = NULL;
    CHECK_OK(mp_value_unpack(imp, "[h]", &mp_kind_connection, (void **)&a2));
    CHECK_INT(mp_connection_codec(a2), MP_CODEC_PICKLE);
    mp_value_free(imp);
    mp_free(buf);
    mp_value_free(hv);
    /* bad options */
    mp_listener_opts lo = {.codec = (mp_codec)9};
    CHECK_NULL_ERR(mp_listener_new(&lo), MP_EINVAL);
    mp_client_opts co = {.codec = (mp_codec)9};
    CHECK_NULL_ERR(mp_client("127.0.0.1:1", &co), MP_EINVAL);
    mp_value_free(v);
    mp_connection_free(a);
    mp_connection_free(b);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_decode_python);
    RUN_IF(argc, argv, test_encode_python);
    RUN_IF(argc, argv, test_refuses_code);
    RUN_IF(argc, argv, test_hostile);
    RUN_IF(argc, argv, test_codec_option);
    RUN_IF(argc, argv, test_python_client_objects);
    RUN_IF(argc, argv, test_python_roundtrip_random);
    RUN_IF(argc, argv, test_python_client_hostile);
    RUN_IF(argc, argv, test_python_listener);
    return mpt_done();
}
