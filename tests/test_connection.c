/* Pipe and Connection: bytes and values, one-way ends, maxlength, recv_bytes_into with
 * MP_ETOOSHORT, poll, EOF, EPIPE without SIGPIPE, Python's wire format, passing ends to
 * children under every start method, a > 2 GiB message, and mp_wait. */
#include "test_util.h"

#include "multiproc/connection.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>

static const char *const methods[] = {"fork", "spawn", "forkserver"};

static void test_duplex_bytes(void)
{
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK(mp_connection_readable(a) && mp_connection_writable(a));
    CHECK(mp_connection_readable(b) && mp_connection_writable(b));
    CHECK_OK(mp_connection_send_bytes(a, "xxhello worldyy", 2, 11));
    CHECK_OK(mp_connection_send_bytes(b, "", 0, 0)); /* an empty message is a message */
    void *buf;
    size_t len;
    CHECK_OK(mp_connection_recv_bytes(b, 0, &buf, &len));
    CHECK_INT(len, 11);
    CHECK(buf && memcmp(buf, "hello world", 11) == 0);
    mp_free(buf);
    CHECK_OK(mp_connection_recv_bytes(a, 100, &buf, &len));
    CHECK_INT(len, 0);
    CHECK(buf != NULL);
    mp_free(buf);
    CHECK_ERR(mp_connection_send_bytes(a, NULL, 0, 5), MP_EINVAL);
    mp_connection_free(a);
    mp_connection_free(b);
}

static void test_oneway(void)
{
    mp_connection *r, *w;
    CHECK_OK(mp_pipe(false, &r, &w));
    CHECK(mp_connection_readable(r) && !mp_connection_writable(r));
    CHECK(!mp_connection_readable(w) && mp_connection_writable(w));
    CHECK_ERR(mp_connection_send_bytes(r, "x", 0, 1), MP_ESTATE);
    CHECK_CONTAINS(mp_last_error(), "only receives");
    void *buf;
    size_t len;
    CHECK_ERR(mp_connection_recv_bytes(w, 0, &buf, &len), MP_ESTATE);
    CHECK_CONTAINS(mp_last_error(), "only sends");
    CHECK_ERR(mp_connection_poll(w, 0), MP_ESTATE);
    CHECK_OK(mp_connection_send_bytes(w, "abc", 0, 3));
    CHECK_OK(mp_connection_recv_bytes(r, 0, &buf, &len));
    CHECK_INT(len, 3);
    mp_free(buf);
    mp_connection_free(r);
    mp_connection_free(w);
}

static void test_values(void)
{
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    mp_value *v = mp_value_pack("[i n s]", 42, "hello");
    CHECK_OK(mp_connection_send(a, v));
    mp_value_free(v);
    mp_value *got = NULL;
    CHECK_OK(mp_connection_recv(b, &got));
    CHECK_STR(mpt_repr(got), "[42, None, 'hello']");
    mp_value_free(got);
    /* Garbage is MP_EPROTO and the connection stays usable. */
    CHECK_OK(mp_connection_send_bytes(a, "\xc1", 0, 1));
    CHECK_ERR(mp_connection_recv(b, &got), MP_EPROTO);
    CHECK(got == NULL);
    v = mp_value_int(7);
    CHECK_OK(mp_connection_send(a, v));
    mp_value_free(v);
    CHECK_OK(mp_connection_recv(b, &got));
    CHECK_INT(mp_value_get_int(got), 7);
    mp_value_free(got);
    /* A value holding a handle crosses a Unix socket: the end arrives as a new object. */
    v = mp_value_pack("[h]", &mp_kind_connection, a);
    CHECK_OK(mp_connection_send(a, v));
    mp_value_free(v);
    CHECK_OK(mp_connection_recv(b, &got));
    mp_connection *a2 = NULL;
    mp_value_unpack(mp_value_list_get(got, 0), "h", &mp_kind_connection, &a2);
    CHECK(a2 != NULL && a2 != a);
    CHECK_OK(mp_connection_send_bytes(a2, "from a copy", 0, 11));
    void *buf = NULL;
    size_t len = 0;
    CHECK_OK(mp_connection_recv_bytes(b, 0, &buf, &len));
    CHECK(len == 11 && memcmp(buf, "from a copy", 11) == 0);
    mp_free(buf);
    mp_value_free(got);
    mp_connection_free(a);
    mp_connection_free(b);
}

static void test_maxlength(void)
{
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK_OK(mp_connection_send_bytes(a, "0123456789", 0, 10));
    void *buf = (void *)1;
    size_t len;
    CHECK_ERR(mp_connection_recv_bytes(b, 9, &buf, &len), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "bad message length");
    CHECK(buf == NULL);
    CHECK(mp_connection_closed(b)); /* as Python: the connection is closed */
    CHECK_INT(mp_connection_fileno(b), -1);
    CHECK_ERR(mp_connection_recv_bytes(b, 0, &buf, &len), MP_ECLOSED);
    /* Exactly maxlength is fine. */
    mp_connection_free(a);
    mp_connection_free(b);
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK_OK(mp_connection_send_bytes(a, "0123456789", 0, 10));
    CHECK_OK(mp_connection_recv_bytes(b, 10, &buf, &len));
    mp_free(buf);
    mp_connection_free(a);
    mp_connection_free(b);
}

static void test_recv_into(void)
{
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    char buf[16];
    size_t len = 0;
    memset(buf, '.', sizeof buf);
    CHECK_OK(mp_connection_send_bytes(a, "hello", 0, 5));
    CHECK_OK(mp_connection_recv_bytes_into(b, buf, sizeof buf, 3, &len));
    CHECK_INT(len, 5);
    CHECK(memcmp(buf, "...hello...", 11) == 0);
    /* Too short: the error carries the size and the message is kept. */
    CHECK_OK(mp_connection_send_bytes(a, "a longer message", 0, 16));
    CHECK_ERR(mp_connection_recv_bytes_into(b, buf, sizeof buf, 4, &len), MP_ETOOSHORT);
    CHECK_INT(len, 16);
    CHECK_CONTAINS(mp_last_error(), "16 bytes");
    CHECK_INT(mp_connection_poll(b, 0), 1); /* the kept message counts as ready */
    mp_waitable w = mp_wait_conn(b);
    CHECK_INT(mp_wait(&w, 1, 0), 1);
    void *msg;
    size_t mlen;
    CHECK_OK(mp_connection_take_pending(b, &msg, &mlen));
    CHECK_INT(mlen, 16);
    CHECK(memcmp(msg, "a longer message", 16) == 0);
    mp_free(msg);
    CHECK_ERR(mp_connection_take_pending(b, &msg, &mlen), MP_ESTATE);
    /* ... or the next receive with room gets it. */
    CHECK_OK(mp_connection_send_bytes(a, "0123456789abcdefXYZ", 0, 19));
    CHECK_ERR(mp_connection_recv_bytes_into(b, buf, sizeof buf, 0, &len), MP_ETOOSHORT);
    char big[32];
    CHECK_OK(mp_connection_recv_bytes_into(b, big, sizeof big, 0, &len));
    CHECK_INT(len, 19);
    CHECK(memcmp(big, "0123456789abcdefXYZ", 19) == 0);
    CHECK_OK(mp_connection_send_bytes(a, "0123456789abcdefXYZ", 0, 19));
    CHECK_ERR(mp_connection_recv_bytes_into(b, buf, sizeof buf, 0, &len), MP_ETOOSHORT);
    CHECK_OK(mp_connection_recv_bytes(b, 0, &msg, &mlen));
    CHECK_INT(mlen, 19);
    mp_free(msg);
    CHECK_ERR(mp_connection_recv_bytes_into(b, buf, sizeof buf, 17, &len), MP_EINVAL);
    /* An empty message fits an empty buffer. */
    CHECK_OK(mp_connection_send_bytes(a, "", 0, 0));
    CHECK_OK(mp_connection_recv_bytes_into(b, buf, 0, 0, &len));
    CHECK_INT(len, 0);
    mp_connection_free(a);
    mp_connection_free(b);
}

static void test_poll_eof_close(void)
{
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK_INT(mp_connection_poll(b, 0), 0);
    double t0 = mpt_now();
    CHECK_INT(mp_connection_poll(b, 0.1), 0);
    double dt = mpt_now() - t0;
    CHECK(dt >= 0.09 && dt < 5);
    CHECK_OK(mp_connection_send_bytes(a, "x", 0, 1));
    CHECK_INT(mp_connection_poll(b, -1), 1);
    CHECK_OK(mp_connection_close(a));
    CHECK_OK(mp_connection_close(a)); /* idempotent */
    CHECK(mp_connection_closed(a));
    CHECK_INT(mp_connection_fileno(a), -1);
    CHECK_ERR(mp_connection_send_bytes(a, "x", 0, 1), MP_ECLOSED);
    CHECK_ERR(mp_connection_poll(a, 0), MP_ECLOSED);
    /* Buffered data is still delivered, then EOF. */
    void *buf;
    size_t len;
    CHECK_OK(mp_connection_recv_bytes(b, 0, &buf, &len));
    mp_free(buf);
    CHECK_INT(mp_connection_poll(b, 1), 1); /* EOF is "ready", as in Python */
    CHECK_ERR(mp_connection_recv_bytes(b, 0, &buf, &len), MP_EEOF);
    mp_value *v;
    CHECK_ERR(mp_connection_recv(b, &v), MP_EEOF);
    mp_connection_free(a);
    mp_connection_free(b);
    mp_connection_free(NULL);
}

static void test_epipe_no_sigpipe(void)
{
    for (int duplex = 0; duplex < 2; duplex++) {
        mp_connection *r, *w;
        CHECK_OK(mp_pipe(duplex, &r, &w));
        mp_connection_free(r);
        /* SIGPIPE's default action would kill us here. */
        CHECK_ERR(mp_connection_send_bytes(w, "x", 0, 1), -EPIPE);
        mp_connection_free(w);
    }
    sigset_t pending;
    sigpending(&pending);
    CHECK(!sigismember(&pending, SIGPIPE));
}

static void test_wire_format(void)
{
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK_OK(mp_connection_send_bytes(a, "abc", 0, 3));
    unsigned char raw[7];
    CHECK_INT(read(mp_connection_fileno(b), raw, 7), 7);
    CHECK(memcmp(raw, "\0\0\0\3abc", 7) == 0);
    /* The long form (-1 then an 8-byte length) is understood for any size. */
    unsigned char longhdr[15] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 3, 'x', 'y', 'z'};
    CHECK_INT(write(mp_connection_fileno(a), longhdr, sizeof longhdr), sizeof longhdr);
    void *buf;
    size_t len;
    CHECK_OK(mp_connection_recv_bytes(b, 0, &buf, &len));
    CHECK_INT(len, 3);
    CHECK(memcmp(buf, "xyz", 3) == 0);
    mp_free(buf);
    /* A negative length other than -1 is malformed. */
    unsigned char bad[4] = {0xff, 0xff, 0xff, 0xfe};
    CHECK_INT(write(mp_connection_fileno(a), bad, 4), 4);
    CHECK_ERR(mp_connection_recv_bytes(b, 0, &buf, &len), MP_EPROTO);
    /* EOF in the middle of a message is a protocol error, not a clean EOF. */
    mp_connection_free(a);
    mp_connection_free(b);
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK_INT(write(mp_connection_fileno(a), "\0\0\0\x09" "abc", 7), 7);
    mp_connection_close(a);
    CHECK_ERR(mp_connection_recv_bytes(b, 0, &buf, &len), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "middle of a message");
    mp_connection_free(a);
    mp_connection_free(b);
}

/* ---- children -------------------------------------------------------------------------- */

static int child_send_hello(mp_value *args)
{
    mp_connection *c = NULL;
    mp_value_unpack(mp_value_list_get(args, 0), "h", &mp_kind_connection, &c);
    if (!c)
        return 10;
    mp_value *v = mp_value_pack("[i n s]", 42, "hello");
    int r = mp_connection_send(c, v);
    mp_value_free(v);
    /* and answer one request: echo it reversed */
    void *buf;
    size_t len;
    if (r == 0 && mp_connection_recv_bytes(c, 0, &buf, &len) == 0) {
        char *p = buf;
        for (size_t i = 0; i < len / 2; i++) {
            char t = p[i];
            p[i] = p[len - 1 - i];
            p[len - 1 - i] = t;
        }
        r = mp_connection_send_bytes(c, buf, 0, len);
        mp_free(buf);
    }
    return r == 0 ? 0 : 11;
}

static void test_pass_to_children(void)
{
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        mpt_current = methods[m];
        mp_connection *parent, *child;
        CHECK_OK(mp_pipe(true, &parent, &child));
        mp_value *args = mp_value_pack("[h]", &mp_kind_connection, child);
        mp_process_opts o = {.target = child_send_hello, .args = args,
                             .ctx = mp_get_context(methods[m])};
        mp_process *p = mp_process_new(&o);
        CHECK(p != NULL);
        CHECK_OK(mp_process_start(p));
        mp_value_free(args);
        mp_connection_free(child); /* the child has its own */
        mp_value *got = NULL;
        CHECK_OK(mp_connection_recv(parent, &got));
        CHECK_STR(mpt_repr(got), "[42, None, 'hello']");
        mp_value_free(got);
        CHECK_OK(mp_connection_send_bytes(parent, "stressed", 0, 8));
        void *buf = NULL;
        size_t len = 0;
        CHECK_OK(mp_connection_recv_bytes(parent, 0, &buf, &len));
        CHECK(len == 8 && memcmp(buf, "desserts", 8) == 0);
        mp_free(buf);
        CHECK_OK(mp_process_join(p, 30));
        int code = -1;
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 0);
        /* the child's end is gone everywhere: EOF */
        CHECK_ERR(mp_connection_recv_bytes(parent, 0, &buf, &len), MP_EEOF);
        mp_process_free(p);
        mp_connection_free(parent);
    }
    mpt_current = "test_pass_to_children";
}

/* Closes the end it was given, then stays alive a while: the parent must see EOF as
 * soon as the end is closed, not when the child exits. */
static int child_close_then_linger(mp_value *args)
{
    mp_connection *c = NULL;
    mp_value_unpack(args, "[h]", &mp_kind_connection, &c);
    mp_connection_close(c);
    sleep(5); /* the behaviour under test: alive long after closing */
    return 0;
}

/* The seeds' pipe chain relies on this under every start method, fork included: the
 * end a child received is the only copy it holds, so closing it is final. */
static void test_child_close_is_eof(void)
{
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        mpt_current = methods[m];
        mp_connection *r, *w;
        CHECK_OK(mp_pipe(false, &r, &w));
        mp_value *args = mp_value_pack("[h]", &mp_kind_connection, w);
        mp_process_opts o = {.target = child_close_then_linger, .args = args,
                             .ctx = mp_get_context(methods[m])};
        mp_process *p = mp_process_new(&o);
        CHECK_OK(mp_process_start(p));
        mp_value_free(args);
        mp_connection_free(w);
        CHECK_INT(mp_connection_poll(r, 3), 1); /* EOF well before the child exits */
        void *buf = NULL;
        size_t len = 0;
        CHECK_ERR(mp_connection_recv_bytes(r, 0, &buf, &len), MP_EEOF);
        CHECK(mp_process_is_alive(p));
        CHECK_OK(mp_process_kill(p));
        CHECK_OK(mp_process_join(p, 30));
        mp_process_free(p);
        mp_connection_free(r);
    }
    mpt_current = "test_child_close_is_eof";
}

/* 2.1 GiB in one message between two processes (Python's 8-byte length form). */
static void test_huge_message(void)
{
#ifdef __SANITIZE_THREAD__
    printf("     skipped under ThreadSanitizer (its shadow memory makes 2 GiB copies take minutes)\n");
    return;
#endif
    const size_t size = (size_t)2150 << 20;
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK_OK(mp_connection_set_max_message_size(b, MP_CONNECTION_UNLIMITED));
    pid_t pid = fork();
    if (pid == 0) {
        mp_connection_close(b);
        unsigned char *p = mmap(NULL, size, PROT_READ | PROT_WRITE,
                                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED)
            _exit(2);
        for (size_t i = 0; i < size; i += 4096)
            p[i] = (unsigned char)(i >> 12);
        p[size - 1] = 0x5a;
        _exit(mp_connection_send_bytes(a, p, 0, size) == 0 ? 0 : 3);
    }
    mp_connection_close(a);
    void *buf = NULL;
    size_t len = 0;
    double t0 = mpt_now();
    CHECK_OK(mp_connection_recv_bytes(b, 0, &buf, &len));
    CHECK_INT(len, size);
    if (buf && len == size) {
        unsigned char *p = buf;
        size_t bad = 0;
        for (size_t i = 0; i < size; i += 4096)
            bad += p[i] != (unsigned char)(i >> 12);
        CHECK_INT(bad, 0);
        CHECK_INT(p[size - 1], 0x5a);
    }
    mp_free(buf);
    int st;
    CHECK_INT(waitpid(pid, &st, 0), pid);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(mpt_now() - t0 < 60);
    mp_connection_free(a);
    mp_connection_free(b);
}

/* ---- wait ------------------------------------------------------------------------------ */

static int child_sleep_exit(mp_value *args)
{
    usleep((useconds_t)mp_value_get_int(args) * 1000); /* behaviour: a child ending later */
    return 3;
}

static void test_wait(void)
{
    mp_connection *a1, *b1, *a2, *b2;
    CHECK_OK(mp_pipe(true, &a1, &b1));
    CHECK_OK(mp_pipe(false, &a2, &b2));
    int fds[2];
    CHECK_OK(pipe(fds));
    mp_waitable w[3] = {mp_wait_conn(a1), mp_wait_conn(a2), mp_wait_fd(fds[0])};
    CHECK_INT(mp_wait(w, 3, 0), 0); /* nothing ready: like Python's [] */
    double t0 = mpt_now();
    CHECK_INT(mp_wait(w, 3, 0.1), 0);
    CHECK(mpt_now() - t0 >= 0.09);
    CHECK_OK(mp_connection_send_bytes(b2, "x", 0, 1));
    CHECK_INT(write(fds[1], "y", 1), 1);
    CHECK_INT(mp_wait(w, 3, -1), 2);
    CHECK(!w[0].ready && w[1].ready && w[2].ready);
    /* A process sentinel becomes ready when the process ends. */
    mp_value *args = mp_value_int(100);
    mp_process_opts o = {.target = child_sleep_exit, .args = args, .ctx = mp_get_context("fork")};
    mp_process *p = mp_process_new(&o);
    CHECK_OK(mp_process_start(p));
    mp_waitable pw[2] = {mp_wait_proc(p), mp_wait_conn(a1)};
    CHECK_INT(mp_wait(pw, 2, 0), 0);
    CHECK_INT(mp_wait(pw, 2, 20), 1);
    CHECK(pw[0].ready && !pw[1].ready);
    CHECK_OK(mp_process_join(p, 10));
    mp_process_free(p);
    mp_value_free(args);
    /* Errors: a closed connection, a bad fd. */
    mp_connection_close(a1);
    CHECK_ERR(mp_wait(w, 1, 0), MP_EINVAL);
    mp_waitable bad = mp_wait_fd(1000);
    CHECK_ERR(mp_wait(&bad, 1, 0), MP_EINVAL);
    CHECK_INT(mp_wait(NULL, 0, 0), 0);
    close(fds[0]);
    close(fds[1]);
    mp_connection_free(a1);
    mp_connection_free(b1);
    mp_connection_free(a2);
    mp_connection_free(b2);
}

/* The kind round trip without a process: export, import through value encode/decode. */
static void test_kind_roundtrip(void)
{
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK(mp_kind_find("connection") == &mp_kind_connection);
    mp_value *v = mp_value_pack("[h i]", &mp_kind_connection, b, 5);
    char *buf = NULL;
    size_t len = 0, nfds = 0;
    int fds[MP_KIND_MAX_FDS];
    CHECK_OK(mp_value_encode(v, &buf, &len, fds, MP_KIND_MAX_FDS, &nfds));
    CHECK_INT(nfds, 1);
    int dupfd = dup(fds[0]);
    mp_value *out = NULL;
    CHECK_OK(mp_value_decode(buf, len, &dupfd, 1, &out));
    /* The decoded handle carries the exported kind pointer: one matching rule. */
    const mp_kind *k = NULL;
    mp_value_get_handle(mp_value_list_get(out, 0), &k);
    CHECK(k == &mp_kind_connection);
    void *wrong = NULL;
    int five = 0;
    CHECK_ERR(mp_value_unpack(out, "[h i]", &mp_kind_queue, &wrong, &five), MP_ETYPE);
    CHECK_CONTAINS(mp_last_error(), "expected a 'queue' handle, got 'connection'");
    CHECK(wrong == NULL);
    mp_connection *b2 = NULL;
    CHECK_OK(mp_value_unpack(out, "[h i]", &mp_kind_connection, &b2, &five));
    CHECK_INT(five, 5);
    CHECK(b2 != NULL && b2 != b);
    CHECK_OK(mp_connection_send_bytes(a, "ping", 0, 4));
    void *m;
    size_t mlen;
    CHECK_OK(mp_connection_recv_bytes(b2, 0, &m, &mlen));
    CHECK(mlen == 4 && memcmp(m, "ping", 4) == 0);
    mp_free(m);
    mp_value_free(out); /* releases b2 */
    mp_value_free(v);
    mp_free(buf);
    mp_connection_free(a);
    mp_connection_free(b);
}

/* A raw peer announces `size` bytes (8-byte form beyond 2^31-1) and sends nothing more. */
static int announce(int fd, uint64_t size)
{
    unsigned char h[12];
    size_t n = 4;
    if (size > 0x7fffffff) {
        uint32_t m1 = htonl(0xffffffffu), hi = htonl((uint32_t)(size >> 32)),
                 lo = htonl((uint32_t)size);
        memcpy(h, &m1, 4);
        memcpy(h + 4, &hi, 4);
        memcpy(h + 8, &lo, 4);
        n = 12;
    } else {
        uint32_t v = htonl((uint32_t)size);
        memcpy(h, &v, 4);
    }
    return write(fd, h, n) == (ssize_t)n ? 0 : -1;
}

/* A peer announcing 8 GB gets -EMSGSIZE at once with both sizes in the message: the body
 * is never waited for (the peer sends none and stays connected), nothing is allocated, and
 * the connection is closed as documented. Per-connection limits, unlimited, and the
 * receive calls that apply them. */
static void test_max_message_size(void)
{
    int sv[2];
    const uint64_t eight_gb = (uint64_t)8 << 30;
    for (int call = 0; call < 3; call++) {
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        mp_connection *c = mp_connection_from_fd(sv[0], true, true);
        CHECK_INT(mp_connection_max_message_size(c), MP_CONNECTION_DEFAULT_MAX_MESSAGE);
        CHECK_OK(announce(sv[1], eight_gb));
        void *buf = NULL;
        size_t len = 0;
        mp_value *v = NULL;
        char small[64];
        double t0 = mpt_now();
        if (call == 0)
            CHECK_ERR(mp_connection_recv(c, &v), -EMSGSIZE);
        else if (call == 1)
            CHECK_ERR(mp_connection_recv_bytes(c, 0, &buf, &len), -EMSGSIZE);
        else
            CHECK_ERR(mp_connection_recv_bytes_into(c, small, sizeof small, 0, &len), -EMSGSIZE);
        CHECK(mpt_now() - t0 < 5); /* did not wait for a body that never comes */
        CHECK_CONTAINS(mp_last_error(), "8589934592 bytes");
        CHECK_CONTAINS(mp_last_error(), "67108864");
        CHECK(v == NULL && buf == NULL);
        CHECK(mp_connection_closed(c));
        CHECK_ERR(mp_connection_recv_bytes(c, 0, &buf, &len), MP_ECLOSED);
        mp_connection_free(c);
        close(sv[1]);
    }
    /* A small limit of our own: 100 bytes pass, 101 do not. */
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK_OK(mp_connection_set_max_message_size(b, 100));
    CHECK_INT(mp_connection_max_message_size(b), 100);
    char data[200] = {0};
    void *buf = NULL;
    size_t len = 0;
    CHECK_OK(mp_connection_send_bytes(a, data, 0, 100));
    CHECK_OK(mp_connection_recv_bytes(b, 0, &buf, &len));
    CHECK_INT(len, 100);
    mp_free(buf);
    /* An explicit maxlength is the bound instead (Python's recv_bytes(maxlength)). */
    CHECK_OK(mp_connection_send_bytes(a, data, 0, 150));
    CHECK_OK(mp_connection_recv_bytes(b, 150, &buf, &len));
    CHECK_INT(len, 150);
    mp_free(buf);
    /* recv_bytes_into a buffer the message fits: no allocation, no limit. */
    char into[200];
    CHECK_OK(mp_connection_send_bytes(a, data, 0, 180));
    CHECK_OK(mp_connection_recv_bytes_into(b, into, sizeof into, 0, &len));
    CHECK_INT(len, 180);
    CHECK_OK(mp_connection_send_bytes(a, data, 0, 101));
    CHECK_ERR(mp_connection_recv_bytes(b, 0, &buf, &len), -EMSGSIZE);
    CHECK_CONTAINS(mp_last_error(), "101 bytes");
    CHECK(mp_connection_closed(b));
    mp_connection_free(a);
    mp_connection_free(b);
    /* Unlimited on request: the 8 GB announcement is accepted (then EOF mid-message). */
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
    mp_connection *c = mp_connection_from_fd(sv[0], true, true);
    CHECK_OK(mp_connection_set_max_message_size(c, MP_CONNECTION_UNLIMITED));
    CHECK_INT(mp_connection_max_message_size(c), MP_CONNECTION_UNLIMITED);
    CHECK_OK(announce(sv[1], 1000));
    CHECK_OK(write(sv[1], "abc", 3) == 3 ? 0 : -1);
    close(sv[1]);
    CHECK_ERR(mp_connection_recv_bytes(c, 0, &buf, &len), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "end of file in the middle");
    mp_connection_free(c);
    CHECK_ERR(mp_connection_set_max_message_size(NULL, 1), MP_EINVAL);
}

/* ---- handles over connections ------------------------------------------------------------
 * A queue, a lock, a shared value and a connection end sent in one value, after the child
 * started; the child uses each at once. The lock shows it is the same lock: the child holds
 * it while the parent's try fails. */

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/uio.h>

static int use_received_handles(mp_connection *c)
{
    mp_value *v = NULL;
    if (mp_connection_recv(c, &v) < 0)
        return 20;
    mp_queue *q = NULL;
    mp_lock *l = NULL;
    mp_shared *sv = NULL;
    void *end = NULL;
    int r = mp_value_unpack(v, "[h h h h]", &mp_kind_queue, &q, &mp_kind_lock, &l,
                            &mp_kind_shared, &sv, &mp_kind_connection, &end);
    mp_value *item = mp_value_str("from the receiver");
    if (r < 0 || mp_queue_put(q, item, 10) < 0)
        r = 21;
    else if (mp_lock_acquire(l, 10) < 0 || mp_shared_set_int(sv, 0, 42) < 0)
        r = 22;
    else if (mp_connection_send_bytes(end, "via the end", 0, 11) < 0 ||
             mp_connection_send_bytes(c, "locked", 0, 6) < 0)
        r = 23;
    else {
        void *buf = NULL;
        size_t len;
        r = mp_connection_recv_bytes(c, 0, &buf, &len) == 0 && mp_lock_release(l) == 0 ? 0 : 24;
        mp_free(buf);
    }
    mp_value_free(item);
    mp_value_free(v); /* releases this process's objects */
    return r;
}

static int child_handles_over_pipe(mp_value *args)
{
    mp_connection *c = NULL;
    mp_value_unpack(args, "[h]", &mp_kind_connection, &c);
    return use_received_handles(c);
}

static int child_handles_over_client(mp_value *args)
{
    mp_connection *c = mp_client(mp_value_get_str(args, NULL), NULL);
    if (!c)
        return 30;
    int r = use_received_handles(c);
    mp_connection_free(c);
    return r;
}

/* The sender's half: send the four objects on c, watch the receiver use them. */
static void send_and_check_handles(mp_connection *c)
{
    mp_queue *q = mp_queue_new(NULL);
    mp_lock *l = mp_lock_new();
    mp_shared *sv = mp_shared_value_new('i', NULL, NULL);
    mp_connection *near, *far;
    CHECK_OK(mp_pipe(true, &near, &far));
    mp_value *v = mp_value_pack("[h h h h]", &mp_kind_queue, q, &mp_kind_lock, l,
                                &mp_kind_shared, sv, &mp_kind_connection, far);
    CHECK_OK(mp_connection_send(c, v));
    mp_value_free(v);
    mp_connection_free(far); /* the receiver has its own copy */
    void *buf = NULL;
    size_t len = 0;
    CHECK_OK(mp_connection_recv_bytes(c, 0, &buf, &len));
    CHECK(len == 6 && memcmp(buf, "locked", 6) == 0);
    mp_free(buf);
    CHECK_ERR(mp_lock_acquire(l, 0), MP_ETIMEOUT); /* the receiver holds our lock */
    CHECK_INT(mp_shared_get_int(sv, 0), 42);
    mp_value *got = NULL;
    CHECK_OK(mp_queue_get(q, &got, 10));
    CHECK_STR(mpt_repr(got), "'from the receiver'");
    mp_value_free(got);
    CHECK_OK(mp_connection_recv_bytes(near, 0, &buf, &len));
    CHECK(len == 11 && memcmp(buf, "via the end", 11) == 0);
    mp_free(buf);
    CHECK_OK(mp_connection_send_bytes(c, "release", 0, 7));
    CHECK_OK(mp_lock_acquire(l, 10)); /* released by the receiver */
    CHECK_OK(mp_lock_release(l));
    mp_connection_free(near);
    mp_shared_free(sv);
    mp_lock_free(l);
    mp_queue_free(q);
}

static void join_ok(mp_process *p)
{
    CHECK_OK(mp_process_join(p, 30));
    int code = -1;
    CHECK_OK(mp_process_exitcode(p, &code));
    CHECK_INT(code, 0);
    mp_process_free(p);
}

static void test_handles_over_pipe(void)
{
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        mpt_current = methods[m];
        mp_connection *parent, *child;
        CHECK_OK(mp_pipe(true, &parent, &child));
        mp_value *args = mp_value_pack("[h]", &mp_kind_connection, child);
        mp_process_opts o = {.target = child_handles_over_pipe, .args = args,
                             .ctx = mp_get_context(methods[m])};
        mp_process *p = mp_process_new(&o);
        CHECK_OK(mp_process_start(p));
        mp_value_free(args);
        mp_connection_free(child);
        send_and_check_handles(parent);
        join_ok(p);
        mp_connection_free(parent);
    }
    mpt_current = "test_handles_over_pipe";
}

static void test_handles_over_listener(void)
{
    char abstract[64];
    snprintf(abstract, sizeof abstract, "@mp-test-handles-%d", (int)getpid());
    const char *addresses[] = {NULL, abstract};
    for (size_t a = 0; a < 2; a++) {
        mp_listener_opts lo = {.address = addresses[a]};
        mp_listener *l = mp_listener_new(&lo);
        CHECK(l != NULL);
        if (!l)
            continue;
        mpt_current = mp_listener_address(l);
        mp_value *args = mp_value_str(mp_listener_address(l));
        mp_process_opts o = {.target = child_handles_over_client, .args = args,
                             .ctx = mp_get_context(a ? "fork" : "spawn")};
        mp_process *p = mp_process_new(&o);
        CHECK_OK(mp_process_start(p));
        mp_connection *c = NULL;
        CHECK_OK(mp_listener_accept(l, 30, &c));
        if (c)
            send_and_check_handles(c);
        join_ok(p);
        mp_value_free(args);
        mp_connection_free(c);
        mp_listener_free(l);
    }
    mpt_current = "test_handles_over_listener";
}

/* TCP and one-way pipes cannot carry fds: a clear MP_EUNSUPPORTED, nothing sent. */
static void test_handles_need_unix_socket(void)
{
    mp_lock *lock = mp_lock_new();
    mp_value *v = mp_value_pack("[h]", &mp_kind_lock, lock);
    mp_listener_opts lo = {.address = "127.0.0.1:0"};
    mp_listener *l = mp_listener_new(&lo);
    mp_connection *c = NULL, *s = NULL;
    CHECK_NEW(c, mp_client(mp_listener_address(l), NULL));
    CHECK_OK(mp_listener_accept(l, 10, &s));
    CHECK_ERR(mp_connection_send(c, v), MP_EUNSUPPORTED);
    CHECK_CONTAINS(mp_last_error(), "needs a Unix-socket connection");
    CHECK_CONTAINS(mp_last_error(), "TCP");
    CHECK_INT(mp_connection_poll(s, 0), 0); /* nothing went out */
    mp_value *plain = mp_value_pack("[i s]", 1, "plain values still go");
    CHECK_OK(mp_connection_send(c, plain));
    mp_value *got = NULL;
    CHECK_OK(mp_connection_recv(s, &got));
    CHECK_STR(mpt_repr(got), "[1, 'plain values still go']");
    mp_value_free(got);
    mp_connection *r, *w;
    CHECK_OK(mp_pipe(false, &r, &w));
    CHECK_ERR(mp_connection_send(w, v), MP_EUNSUPPORTED);
    CHECK_CONTAINS(mp_last_error(), "one-way pipe");
    /* Too many fds for one message. */
    mp_value *many = mp_value_list();
    for (int i = 0; i <= MP_CONNECTION_MAX_FDS; i++)
        mp_value_list_append(many, mp_value_handle(&mp_kind_lock, lock));
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    CHECK_ERR(mp_connection_send(a, many), -E2BIG);
    CHECK_CONTAINS(mp_last_error(), "at most 64 fds");
    CHECK_INT(mp_connection_poll(b, 0), 0);
    mp_value_free(many);
    mp_connection_free(a);
    mp_connection_free(b);
    mp_connection_free(r);
    mp_connection_free(w);
    mp_value_free(plain);
    mp_connection_free(c);
    mp_connection_free(s);
    mp_listener_free(l);
    mp_value_free(v);
    mp_lock_free(lock);
}

/* A hostile peer: raw messages with fds attached (SCM_RIGHTS on the first byte, as we send
 * them) and a payload that is garbage, names fds that did not come, describes a lock with
 * /dev/null, or brings more fds than a message may. Each is MP_EPROTO, every fd that came
 * is closed, and the connection goes on with the next message. */
static void raw_send(int sock, const void *payload, uint32_t len, int nfds)
{
    int fds[80];
    for (int i = 0; i < nfds; i++)
        fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
    uint32_t hdr = htonl(len);
    struct iovec iov[2] = {{&hdr, 4}, {(void *)payload, len}};
    union {
        char b[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
    if (nfds) {
        mh.msg_control = u.b;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(cm), fds, sizeof(int) * (size_t)nfds);
    }
    CHECK_INT(sendmsg(sock, &mh, 0), 4 + len);
    for (int i = 0; i < nfds; i++)
        close(fds[i]);
}

static void expect_refused(mp_connection *b, const char *why)
{
    int before = mpt_count_fds();
    mp_value *got = NULL;
    CHECK_ERR(mp_connection_recv(b, &got), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), why);
    CHECK(got == NULL);
    CHECK_INT(mpt_count_fds(), before); /* the fds that came were closed */
}

static void test_handles_hostile_peer(void)
{
    mp_connection *a, *b;
    CHECK_OK(mp_pipe(true, &a, &b));
    int sock = mp_connection_fileno(a);
    mp_lock *lock = mp_lock_new();
    int before = mpt_count_fds();
    raw_send(sock, "\xc1\xc1\xc1", 3, 3); /* 0xc1: never used in MessagePack */
    expect_refused(b, "decoding");
    /* A real lock's description, but the fds it names did not come. */
    mp_value *v = mp_value_pack("[h]", &mp_kind_lock, lock);
    char *enc = NULL;
    size_t len = 0, nfds = 0;
    int fds[MP_KIND_MAX_FDS];
    CHECK_OK(mp_value_encode(v, &enc, &len, fds, MP_KIND_MAX_FDS, &nfds));
    raw_send(sock, enc, (uint32_t)len, 0);
    expect_refused(b, "fd");
    /* The same description with /dev/null as the lock's memory. */
    raw_send(sock, enc, (uint32_t)len, 2);
    expect_refused(b, "shared segment");
    /* More fds than a message may bring (the kernel drops what does not fit). */
    raw_send(sock, "\xc0", 1, MP_CONNECTION_MAX_FDS + 10);
    expect_refused(b, "more than 64 fds");
    /* Stray fds with a plain value: the value arrives, the fds are closed. */
    raw_send(sock, "\x2a", 1, 4);
    mp_value *got = NULL;
    CHECK_OK(mp_connection_recv(b, &got));
    CHECK_STR(mpt_repr(got), "42");
    mp_value_free(got);
    CHECK_INT(mpt_count_fds(), before);
    /* fds with a message read as bytes: dropped. */
    raw_send(sock, "raw", 3, 2);
    void *buf = NULL;
    CHECK_OK(mp_connection_recv_bytes(b, 0, &buf, &len));
    CHECK(len == 3 && memcmp(buf, "raw", 3) == 0);
    mp_free(buf);
    CHECK_INT(mpt_count_fds(), before);
    mp_free(enc);
    mp_value_free(v);
    mp_lock_free(lock);
    mp_connection_free(a);
    mp_connection_free(b);
}

int main(int argc, char **argv)
{
    /* The forkserver (and the resource tracker it starts) keep a socket and a pipe
     * open for the program's lifetime: start them before the fd leak checks. */
    mp_forkserver_ensure_running();
    RUN_IF(argc, argv, test_duplex_bytes);
    RUN_IF(argc, argv, test_oneway);
    RUN_IF(argc, argv, test_values);
    RUN_IF(argc, argv, test_maxlength);
    RUN_IF(argc, argv, test_recv_into);
    RUN_IF(argc, argv, test_poll_eof_close);
    RUN_IF(argc, argv, test_epipe_no_sigpipe);
    RUN_IF(argc, argv, test_wire_format);
    RUN_IF(argc, argv, test_kind_roundtrip);
    RUN_IF(argc, argv, test_pass_to_children);
    RUN_IF(argc, argv, test_child_close_is_eof);
    RUN_IF(argc, argv, test_wait);
    RUN_IF(argc, argv, test_handles_over_pipe);
    RUN_IF(argc, argv, test_handles_over_listener);
    RUN_IF(argc, argv, test_handles_need_unix_socket);
    RUN_IF(argc, argv, test_handles_hostile_peer);
    RUN_IF(argc, argv, test_huge_message);
    RUN_IF(argc, argv, test_max_message_size);
    return mpt_done();
}
