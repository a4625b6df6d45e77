/* Writes the seed corpora of the fuzz targets: a few small valid inputs each, made with
 * the library's own encoders where it has them (see CONTRIBUTING.md, Fuzzing).
 *
 * Usage: fuzz_gen_corpus DIR   (DIR/<target>/<seed>; `make fuzz-corpus` runs it on
 * fuzz/corpus). Each file starts with the target's config byte (see each target). */
#define _GNU_SOURCE
#include "multiproc.h"

#include "manager/mgr.h"
#include "process/proc.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *root;

/* A growing seed: config byte, then appended pieces. */
typedef struct seed {
    unsigned char b[8192];
    size_t n;
} seed;

static void add(seed *s, const void *p, size_t n)
{
    if (s->n + n > sizeof s->b)
        abort();
    memcpy(s->b + s->n, p, n);
    s->n += n;
}

static void start(seed *s, unsigned cfg)
{
    s->n = 0;
    unsigned char c = (unsigned char)cfg;
    add(s, &c, 1);
}

/* A connection frame: 4-byte big-endian length, then the bytes. */
static void add_frame(seed *s, const void *p, size_t n)
{
    uint32_t len = htonl((uint32_t)n);
    add(s, &len, 4);
    add(s, p, n);
}

static void add_frame_str(seed *s, const char *a, const char *b, size_t blen)
{
    unsigned char m[256];
    size_t alen = strlen(a);
    memcpy(m, a, alen);
    memcpy(m + alen, b, blen);
    add_frame(s, m, alen + blen);
}

static void write_seed(const char *target, const char *name, const seed *s)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, target);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", root, target, name);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(s->b, 1, s->n, f) != s->n || fclose(f) != 0) {
        perror(path);
        exit(1);
    }
}

/* The encoding of v (its fds, if any, are dropped: the targets send their own). */
static void add_value(seed *s, mp_value *v, bool framed)
{
    char *buf;
    size_t len, nfds;
    int fds[8];
    if (!v || mp_value_encode(v, &buf, &len, fds, 8, &nfds) < 0) {
        fprintf(stderr, "encoding a seed: %s\n", mp_last_error());
        exit(1);
    }
    if (framed)
        add_frame(s, buf, len);
    else
        add(s, buf, len);
    mp_free(buf);
    mp_value_free(v);
}

static mp_value *sample_list(void)
{
    return mp_value_pack("[i i I f b n s y# [i s] {s: i, i: f}]", 1, -1, (int64_t)1 << 40, 1.5,
                         1, "h\xc3\xa9llo \xe2\x82\xac", "\x00\x01\xff", (size_t)3, 7, "x", "a",
                         2, 3, 2.5);
}

static mp_value *sample_handle(const mp_kind *kind, void *obj)
{
    return mp_value_pack("[s h]", "handle", kind, obj);
}

static void value_seeds(void)
{
    seed s;
    start(&s, 0), add_value(&s, mp_value_nil(), false), write_seed("value", "nil", &s);
    start(&s, 0), add_value(&s, sample_list(), false), write_seed("value", "list", &s);
    char big[300];
    memset(big, 'z', sizeof big);
    start(&s, 0);
    add_value(&s, mp_value_pack("{s: s#, s: [[[[n]]]]}", "long", big, sizeof big, "deep"), false);
    write_seed("value", "map", &s);

    mp_connection *a, *b;
    mp_lock *lock = mp_lock_new();
    if (mp_pipe(true, &a, &b) < 0 || !lock)
        exit(1);
    start(&s, 1), add_value(&s, sample_handle(&mp_kind_connection, a), false);
    write_seed("value", "connection", &s);
    start(&s, 1), add_value(&s, sample_handle(&mp_kind_lock, lock), false);
    write_seed("value", "lock", &s);
    mp_connection_free(a);
    mp_connection_free(b);
    mp_lock_free(lock);
}

static void framing_seeds(void)
{
    seed s;
    start(&s, 0);
    add_value(&s, sample_list(), true);
    add_value(&s, mp_value_str("hi"), true);
    write_seed("framing", "values", &s);

    start(&s, 1);
    add_frame(&s, "hello", 5);
    add_frame(&s, "", 0);
    add(&s, "\xff\xff\xff\xff\0\0\0\0\0\0\0\x05hello", 17); /* the 8-byte length form */
    write_seed("framing", "bytes", &s);

    char body[300];
    memset(body, 'b', sizeof body);
    start(&s, 2), add_frame(&s, body, 40), add_frame(&s, body, 100);
    write_seed("framing", "maxlength", &s);
    start(&s, 3), add_frame(&s, body, 8), add_frame(&s, body, 40);
    write_seed("framing", "into", &s);
    start(&s, 3 | 16), add_frame(&s, body, 40), add_frame(&s, body, 100);
    write_seed("framing", "into_then_recv", &s);
    start(&s, 4 | 1), add_frame(&s, body, 200), add_frame(&s, body, 300);
    write_seed("framing", "max_size", &s);

    mp_connection *a, *b;
    if (mp_pipe(true, &a, &b) < 0)
        exit(1);
    start(&s, 8), add_value(&s, sample_handle(&mp_kind_connection, a), true);
    write_seed("framing", "fds", &s);
    mp_connection_free(a);
    mp_connection_free(b);
}

/* The client's bytes for the server target, and the server's for the client target. */
static void handshake_seeds(void)
{
    char r40[40], r32[32];
    memset(r40, 0x5a, sizeof r40);
    memset(r32, 0xa5, sizeof r32);
    seed s;
    start(&s, 8 | MP_AUTH_SHA256); /* an honest client, then its own challenge */
    add_frame_str(&s, "#CHALLENGE#{sha256}", r40, 40);
    add_frame_str(&s, "#WELCOME#", "", 0);
    write_seed("handshake_server", "honest_sha256", &s);
    start(&s, 8 | MP_AUTH_LEGACY_MD5);
    add_frame_str(&s, "#CHALLENGE#", r40, 20);
    add_frame_str(&s, "#WELCOME#", "", 0);
    write_seed("handshake_server", "honest_legacy", &s);
    start(&s, MP_AUTH_SHA256), add_frame_str(&s, "{sha256}", r32, 32);
    write_seed("handshake_server", "wrong_reply", &s);
    start(&s, MP_AUTH_LEGACY_MD5), add_frame(&s, r32, 16);
    write_seed("handshake_server", "wrong_reply_legacy", &s);

    start(&s, MP_AUTH_SHA256);
    add_frame_str(&s, "#CHALLENGE#{sha256}", r40, 40);
    add_frame_str(&s, "#WELCOME#", "", 0);
    add_frame_str(&s, "{sha256}", r32, 32);
    write_seed("handshake_client", "sha256", &s);
    start(&s, MP_AUTH_LEGACY_MD5);
    add_frame_str(&s, "#CHALLENGE#", r40, 20);
    add_frame_str(&s, "#WELCOME#", "", 0);
    add_frame(&s, r32, 16);
    write_seed("handshake_client", "legacy", &s);
    start(&s, MP_AUTH_SHA3_384);
    add_frame_str(&s, "#CHALLENGE#{sha3_256}", r40, 40);
    add_frame_str(&s, "#FAILURE#", "", 0);
    write_seed("handshake_client", "rejected", &s);
}

/* Python's own pickles (protocols 2 to 5), and ours. */
static void pickle_seeds(void)
{
    /* pickle.dumps(..., protocol=3, 4, 5) of what Python has and we map (tuples, sets,
     * bytearray, big ints) with memo references: what Python writes beyond what
     * mp_value_pickle does */
    static const char *const py[][2] = {
        {"python_protocol3", "80037d71002858010000006171015d7102284b014740040000000000004e884301787103"
                             "4b015801000000627104867105654b034af9ffffff580300000062696771068a08000000"
                             "000000004058010000007371075d7108284b015806000000736861726564710965580100"
                             "000074710a6808752e"},
        {"python_protocol4", "80049538000000000000005d94288f94284b014b0290288c017a949194294b0185944b01"
                             "4b0286944b014b024b0387945d94284b018c0673686172656494656807652e"},
        {"python_protocol5", "80059519000000000000005d94289602000000000000006162948c05636166c3a994652e"}};
    seed s;
    for (size_t k = 0; k < 3; k++) {
        s.n = 0;
        for (const char *h = py[k][1]; h[0] && h[1]; h += 2) {
            unsigned x;
            sscanf(h, "%2x", &x);
            unsigned char c = (unsigned char)x;
            add(&s, &c, 1);
        }
        write_seed("pickle", py[k][0], &s);
    }
    for (int proto = 4; proto <= 5; proto++) {
        char *buf;
        size_t len;
        mp_value *v = sample_list();
        if (mp_value_pickle(v, proto, &buf, &len) < 0)
            exit(1);
        s.n = 0, add(&s, buf, len);
        write_seed("pickle", proto == 4 ? "protocol4" : "protocol5", &s);
        mp_free(buf);
        mp_value_free(v);
    }
    /* the same over a connection with the pickle codec */
    char *buf;
    size_t len;
    mp_value *v = sample_list();
    if (mp_value_pickle(v, 0, &buf, &len) < 0)
        exit(1);
    start(&s, 32), add_frame(&s, buf, len), add_frame(&s, buf, len);
    write_seed("framing", "pickles", &s);
    mp_free(buf);
    mp_value_free(v);
}

static void launch_seeds(void)
{
    mp__launch l = {.method = 1, .daemon = 1, .log_level = 2, .parent_pid = 4242, .nfds = 1,
                    .loc = {.path = "/usr/lib/libexample.so", .sym = "work", .offset = 4096},
                    .name = "Process-1", .identity = "1", .args = "\x91\x01", .args_len = 2,
                    .parent_name = "MainProcess", .authkey = "0123456789abcdef", .authkey_len = 16};
    char *buf;
    size_t len;
    if (mp__launch_pack(&l, &buf, &len) < 0)
        exit(1);
    seed s;
    s.n = 0, add(&s, buf, len);
    write_seed("launch", "record", &s);
    free(buf);
}

static void manager_seeds(void)
{
    seed s;
    char *buf;
    size_t len;
    mp_value *args = mp_value_pack("[s {s: i}]", "dict", "a", 1);
    if (mp__mgr_encode_request("create", 0, args, &buf, &len) < 0)
        exit(1);
    start(&s, 0), add(&s, buf, len), write_seed("manager", "request", &s);
    mp_free(buf);
    mp_value_free(args);

    mgr_ref ref = {.address = "/tmp/mp-manager", .key = "k", .keylen = 1, .id = 7,
                   .token = 1, .type = "dict"};
    mp_proxy *p = mp__mgr_proxy_adopt(NULL, &ref, 0);
    args = mp_value_pack("[s h]", "k", &mp_kind_proxy, p);
    if (!p || mp__mgr_encode_request("__setitem__", 3, args, &buf, &len) < 0)
        exit(1);
    start(&s, 0), add(&s, buf, len), write_seed("manager", "request_proxy", &s);
    mp_free(buf);
    mp_value_free(args);
    mp_proxy_free(p);

    mp_lock *lock = mp_lock_new(); /* refused: only proxies travel to a manager */
    start(&s, 0), add_value(&s, mp_value_pack("[s i [h]]", "append", 3, &mp_kind_lock, lock), false);
    write_seed("manager", "request_lock", &s);
    mp_lock_free(lock);

    mp_value *result = sample_list();
    if (mp__mgr_encode_reply(0, NULL, result, &buf, &len) < 0)
        exit(1);
    start(&s, 1), add(&s, buf, len), write_seed("manager", "reply", &s);
    mp_free(buf);
    mp_value_free(result);
    if (mp__mgr_encode_reply(MP_ENOTFOUND, "no such object", NULL, &buf, &len) < 0)
        exit(1);
    start(&s, 1), add(&s, buf, len), write_seed("manager", "reply_error", &s);
    mp_free(buf);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    root = argv[1];
    mkdir(root, 0755);
    value_seeds();
    framing_seeds();
    handshake_seeds();
    manager_seeds();
    pickle_seeds();
    launch_seeds();
    return 0;
}
