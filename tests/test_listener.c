/* Listener and Client: Unix paths, abstract names, TCP loopback; the HMAC handshake in both
 * forms and every digest; wrong keys; bounded and timed handshakes; errors; and Python's
 * multiprocessing.connection on the other side (tests/py_peer.py). */
#include "test_util.h"
#include <arpa/inet.h>
#include <netinet/in.h>

#include "multiproc/connection.h"
#include "internal/tracker.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#define KEY "secret key"

typedef struct client_job {
    char address[128];
    const char *key;
    mp_auth_digest digest;
    double timeout;
    int result;      /* mp_client's return */
    int exchange;    /* 0 when the echo exchange worked */
    char error[512];
    pthread_t thread;
} client_job;

/* The client side of every in-process test: receive one message, send it back reversed. */
static void *client_main(void *arg)
{
    client_job *j = arg;
    mp_client_opts o = {.authkey = j->key, .authkey_len = j->key ? strlen(j->key) : 0,
                        .digest = j->digest, .time_limit = j->timeout};
    mp_connection *c = mp_client(j->address, &o);
    j->result = c ? 0 : mp_last_error_code();
    snprintf(j->error, sizeof j->error, "%s", mp_last_error());
    j->exchange = -1;
    if (j->result == 0) {
        void *buf;
        size_t len;
        if (mp_connection_recv_bytes(c, 0, &buf, &len) == 0) {
            char *p = buf;
            for (size_t i = 0; i < len / 2; i++) {
                char t = p[i];
                p[i] = p[len - 1 - i];
                p[len - 1 - i] = t;
            }
            j->exchange = mp_connection_send_bytes(c, buf, 0, len);
            mp_free(buf);
        }
        mp_connection_free(c);
    }
    return NULL;
}

static void client_start(client_job *j, const char *address, const char *key, mp_auth_digest d)
{
    memset(j, 0, sizeof *j);
    snprintf(j->address, sizeof j->address, "%s", address);
    j->key = key;
    j->digest = d;
    j->timeout = 10;
    pthread_create(&j->thread, NULL, client_main, j);
}

/* Accept one client and run the echo exchange; returns accept's code. */
static int serve_one(mp_listener *l, double timeout)
{
    mp_connection *c = NULL;
    int code = mp_listener_accept(l, timeout, &c);
    if (code < 0)
        return code;
    CHECK_OK(mp_connection_send_bytes(c, "stressed", 0, 8));
    void *buf = NULL;
    size_t len = 0;
    CHECK_OK(mp_connection_recv_bytes(c, 0, &buf, &len));
    CHECK(len == 8 && buf && memcmp(buf, "desserts", 8) == 0);
    mp_free(buf);
    mp_connection_free(c);
    return 0;
}

static void test_unix_default_address(void)
{
    mp_listener_opts o = {.authkey = KEY, .authkey_len = strlen(KEY)};
    mp_listener *l = mp_listener_new(&o);
    CHECK(l != NULL);
    char path[128];
    snprintf(path, sizeof path, "%s", mp_listener_address(l));
    CHECK_CONTAINS(path, "mp-listener-");
    struct stat st;
    CHECK(stat(path, &st) == 0 && S_ISSOCK(st.st_mode));
    client_job j;
    client_start(&j, path, KEY, MP_AUTH_DEFAULT);
    CHECK_OK(serve_one(l, 10));
    pthread_join(j.thread, NULL);
    CHECK_INT(j.result, 0);
    CHECK_INT(j.exchange, 0);
    mp_listener_free(l);
    CHECK(stat(path, &st) < 0 && errno == ENOENT); /* the path is removed */
}

static void test_abstract_and_tcp(void)
{
    char abstract[64];
    snprintf(abstract, sizeof abstract, "@mp-test-%d", (int)getpid());
    const char *addrs[] = {abstract, "127.0.0.1:0", "tcp:localhost:0", "[::1]:0"};
    for (size_t i = 0; i < 4; i++) {
        mpt_current = addrs[i];
        mp_listener_opts o = {.address = addrs[i], .authkey = KEY, .authkey_len = strlen(KEY)};
        mp_listener *l = mp_listener_new(&o);
        if (!l && i == 3) /* no IPv6 on this machine */
            continue;
        CHECK(l != NULL);
        if (!l)
            continue;
        const char *bound = mp_listener_address(l);
        if (i == 0)
            CHECK_STR(bound, abstract);
        else
            CHECK(strstr(bound, ":0") == NULL || strlen(strstr(bound, ":0")) > 2);
        client_job j;
        client_start(&j, bound, KEY, MP_AUTH_DEFAULT);
        CHECK_OK(serve_one(l, 10));
        pthread_join(j.thread, NULL);
        CHECK_INT(j.result, 0);
        CHECK_INT(j.exchange, 0);
        mp_listener_free(l);
    }
    mpt_current = "test_abstract_and_tcp";
}

static void test_every_digest_pair(void)
{
    mp_auth_digest ds[] = {MP_AUTH_DEFAULT, MP_AUTH_LEGACY_MD5, MP_AUTH_SHA256, MP_AUTH_SHA384,
                           MP_AUTH_SHA3_256, MP_AUTH_SHA3_384, MP_AUTH_MD5};
    for (size_t a = 0; a < sizeof ds / sizeof ds[0]; a++) {
        for (size_t b = 0; b < sizeof ds / sizeof ds[0]; b += 2) {
            mp_listener_opts o = {.authkey = KEY, .authkey_len = strlen(KEY), .digest = ds[a]};
            mp_listener *l = mp_listener_new(&o);
            client_job j;
            client_start(&j, mp_listener_address(l), KEY, ds[b]);
            CHECK_OK(serve_one(l, 10));
            pthread_join(j.thread, NULL);
            CHECK_INT(j.result, 0);
            mp_listener_free(l);
        }
    }
}

static void test_wrong_key(void)
{
    mp_auth_digest ds[] = {MP_AUTH_DEFAULT, MP_AUTH_SHA256};
    for (int i = 0; i < 2; i++) {
        mp_listener_opts o = {.authkey = KEY, .authkey_len = strlen(KEY), .digest = ds[i]};
        mp_listener *l = mp_listener_new(&o);
        client_job j;
        client_start(&j, mp_listener_address(l), "wrong key", ds[1 - i]);
        mp_connection *c = NULL;
        CHECK_ERR(mp_listener_accept(l, 10, &c), MP_EAUTH);
        CHECK_CONTAINS(mp_last_error(), "digest received was wrong");
        CHECK_PREFIX_ONCE(mp_last_error(), MP_EAUTH); /* re-reported, not repeated */
        CHECK(c == NULL);
        pthread_join(j.thread, NULL);
        CHECK_INT(j.result, MP_EAUTH);
        CHECK_CONTAINS(j.error, "rejected");
        CHECK_PREFIX_ONCE(j.error, MP_EAUTH);
        /* The listener is still usable. */
        client_start(&j, mp_listener_address(l), KEY, MP_AUTH_DEFAULT);
        CHECK_OK(serve_one(l, 10));
        pthread_join(j.thread, NULL);
        CHECK_INT(j.result, 0);
        mp_listener_free(l);
    }
    /* The client challenges too: a listener with the wrong key is caught by the client. */
    mp_listener_opts o = {.authkey = "other", .authkey_len = 5};
    mp_listener *l = mp_listener_new(&o);
    client_job j;
    client_start(&j, mp_listener_address(l), KEY, MP_AUTH_SHA256);
    mp_connection *c = NULL;
    CHECK_ERR(mp_listener_accept(l, 10, &c), MP_EAUTH);
    CHECK_PREFIX_ONCE(mp_last_error(), MP_EAUTH);
    pthread_join(j.thread, NULL);
    CHECK_INT(j.result, MP_EAUTH);
    CHECK_PREFIX_ONCE(j.error, MP_EAUTH);
    mp_listener_free(l);
}

/* A raw socket peer for protocol abuse. */
static int raw_connect(const char *path)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%.100s", path);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

typedef struct raw_job {
    char path[128];
    int mode; /* 0: send a 2 GB length, 1: the 8-byte form with 2^62, 2: say nothing */
    pthread_t thread;
} raw_job;

static void *raw_main(void *arg)
{
    raw_job *r = arg;
    int fd = raw_connect(r->path);
    if (fd < 0)
        return NULL;
    char buf[256];
    if (r->mode < 2 && read(fd, buf, sizeof buf) > 0) { /* the challenge */
        unsigned char big[4] = {0x7f, 0xff, 0xff, 0xff};
        unsigned char huge[12] = {0xff, 0xff, 0xff, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0};
        if (r->mode == 0 && write(fd, big, 4) < 0)
            perror("write");
        if (r->mode == 1 && write(fd, huge, 12) < 0)
            perror("write");
    }
    /* Wait for the listener to drop us. */
    while (read(fd, buf, sizeof buf) > 0)
        ;
    close(fd);
    return NULL;
}

static void test_bounded_handshake(void)
{
    mp_listener_opts o = {.authkey = KEY, .authkey_len = strlen(KEY), .handshake_limit = 0.3};
    mp_listener *l = mp_listener_new(&o);
    for (int mode = 0; mode < 3; mode++) {
        raw_job r = {.mode = mode};
        snprintf(r.path, sizeof r.path, "%s", mp_listener_address(l));
        pthread_create(&r.thread, NULL, raw_main, &r);
        mp_connection *c = NULL;
        double t0 = mpt_now();
        int code = mp_listener_accept(l, 10, &c);
        if (mode < 2) {
            CHECK_INT(code, MP_EAUTH);
            CHECK_CONTAINS(mp_last_error(), "oversized");
            CHECK(mpt_now() - t0 < 2);
        } else {
            CHECK_INT(code, MP_ETIMEOUT);
            CHECK(mpt_now() - t0 >= 0.25 && mpt_now() - t0 < 5);
        }
        pthread_join(r.thread, NULL);
    }
    client_job j;
    client_start(&j, mp_listener_address(l), KEY, MP_AUTH_DEFAULT);
    CHECK_OK(serve_one(l, 10));
    pthread_join(j.thread, NULL);
    mp_listener_free(l);
}

static void test_errors(void)
{
    mp_connection *c = NULL;
    mp_listener *l = mp_listener_new(NULL);
    CHECK(l != NULL);
    double t0 = mpt_now();
    CHECK_ERR(mp_listener_accept(l, 0.1, &c), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 >= 0.09);
    /* The same path twice: EADDRINUSE, and the first listener's path survives. */
    mp_listener_opts o = {.address = mp_listener_address(l)};
    CHECK(mp_listener_new(&o) == NULL);
    CHECK_INT(mp_last_error_code(), -EADDRINUSE);
    CHECK_CONTAINS(mp_last_error(), mp_listener_address(l));
    CHECK_PREFIX_ONCE(mp_last_error(), -EADDRINUSE);
    char path[128];
    snprintf(path, sizeof path, "%s", mp_listener_address(l));
    CHECK(access(path, F_OK) == 0);
    CHECK_OK(mp_listener_close(l));
    CHECK_OK(mp_listener_close(l));
    CHECK_ERR(mp_listener_accept(l, 0, &c), MP_ECLOSED);
    mp_listener_free(l);
    mp_listener_free(NULL);
    CHECK_NULL_ERR(c = mp_client(path, NULL), -ENOENT);
    CHECK_CONTAINS(mp_last_error(), path);
    CHECK_PREFIX_ONCE(mp_last_error(), -ENOENT);
    /* A TCP port nobody listens on: bound (port 0, read back) but not listening, and
     * held while we connect, so no other program can start listening there. */
    int hold = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t slen = sizeof sin;
    CHECK_OK(bind(hold, (struct sockaddr *)&sin, sizeof sin));
    CHECK_OK(getsockname(hold, (struct sockaddr *)&sin, &slen));
    char tcp[64];
    snprintf(tcp, sizeof tcp, "127.0.0.1:%d", (int)ntohs(sin.sin_port));
    CHECK_NULL_ERR(c = mp_client(tcp, NULL), -ECONNREFUSED);
    close(hold);
    CHECK_NULL_ERR(c = mp_client("nonsense", NULL), MP_EINVAL);
    CHECK_NULL_ERR(c = mp_client("", NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_client("/nonexistent/socket", &(mp_client_opts){.time_limit = NAN}),
                   MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "time_limit");
    /* A negative limit is MP_NO_LIMIT: valid, the connect fails for its own reason. */
    CHECK_NULL_ERR(mp_client("/nonexistent/socket", &(mp_client_opts){.time_limit = MP_NO_LIMIT}),
                   -ENOENT);
    CHECK_NULL_ERR(mp_listener_new(&(mp_listener_opts){.handshake_limit = NAN}), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "handshake_limit");
    mp_listener_opts bad = {.address = "no.such.host.invalid:80"};
    CHECK(mp_listener_new(&bad) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    /* A client with a key against a listener without one waits for a challenge in vain. */
    l = mp_listener_new(NULL);
    mp_client_opts co = {.authkey = KEY, .authkey_len = strlen(KEY), .time_limit = 0.3};
    t0 = mpt_now();
    CHECK_NULL_ERR(c = mp_client(mp_listener_address(l), &co), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 < 5);
    mp_connection *s = NULL;
    CHECK_OK(mp_listener_accept(l, 1, &s));
    mp_connection_free(s);
    mp_listener_free(l);
}

static void test_wait_listener(void)
{
    mp_listener *l = mp_listener_new(NULL);
    mp_waitable w = mp_wait_listener(l);
    CHECK_INT(mp_wait(&w, 1, 0), 0);
    mp_connection *c = NULL;
    CHECK_NEW(c, mp_client(mp_listener_address(l), NULL));
    CHECK_INT(mp_wait(&w, 1, 5), 1);
    mp_connection *s = NULL;
    CHECK_OK(mp_listener_accept(l, 0, &s));
    mp_connection_free(s);
    mp_connection_free(c);
    mp_listener_free(l);
}

/* ---- Python on the other side ------------------------------------------------------------ */

static const char *peer_script(void)
{
    static char path[512];
    const char *src = getenv("MP_SOURCE_DIR");
    snprintf(path, sizeof path, "%s/tests/py_peer.py", src ? src : "..");
    return path;
}

/* Python as the client: run it in the background, accept it here. */
static void py_client_case(const char *address, const char *pykey, bool modern,
                           mp_auth_digest ours, int expect_accept, int expect_exit)
{
    mp_listener_opts o = {.address = address, .authkey = KEY, .authkey_len = strlen(KEY),
                          .digest = ours};
    mp_listener *l = mp_listener_new(&o);
    CHECK(l != NULL);
    if (!l)
        return;
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s client '%s' '%s' %s", peer_script(),
             mp_listener_address(l), pykey, modern ? "modern" : "");
    FILE *py = popen(cmd, "r");
    int code = expect_accept == 0 ? serve_one(l, 30) : mp_listener_accept(l, 30, &(mp_connection *){0});
    CHECK_INT(code, expect_accept);
    char line[256] = "";
    if (!fgets(line, sizeof line, py))
        line[0] = 0;
    int st = pclose(py);
    CHECK(WIFEXITED(st));
    CHECK_INT(WEXITSTATUS(st), expect_exit);
    if (expect_exit == 3)
        CHECK_CONTAINS(line, "auth-failed");
    mp_listener_free(l);
}

/* Python as the listener: wait for its "ready ADDRESS" (the bound address, so a TCP
 * port 0 is the port Python's listener got), connect to it. */
static void py_listener_case(const char *address, const char *pykey, bool modern,
                             mp_auth_digest ours, int expect_client, int expect_exit)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "python3 %s listener '%s' '%s' %s", peer_script(), address, pykey,
             modern ? "modern" : "");
    FILE *py = popen(cmd, "r");
    char line[256] = "";
    CHECK(fgets(line, sizeof line, py) != NULL);
    CHECK(strncmp(line, "ready ", 6) == 0);
    char *bound = line + 6;
    bound[strcspn(bound, "\n")] = 0;
    if (strcmp(address + strlen(address) - 2, ":0") != 0)
        CHECK_STR(bound, address);
    mp_client_opts o = {.authkey = KEY, .authkey_len = strlen(KEY), .digest = ours, .time_limit = 30};
    mp_clear_error();
    mp_connection *c = mp_client(bound, &o);
    CHECK_INT(c ? 0 : mp_last_error_code(), expect_client);
    if (c) {
        void *buf = NULL;
        size_t len = 0;
        CHECK_OK(mp_connection_recv_bytes(c, 0, &buf, &len));
        CHECK(len == 17 && memcmp(buf, "hello from python", 17) == 0);
        mp_free(buf);
        CHECK_OK(mp_connection_send_bytes(c, "shout", 0, 5));
        CHECK_OK(mp_connection_recv_bytes(c, 0, &buf, &len));
        CHECK(len == 5 && memcmp(buf, "SHOUT", 5) == 0);
        mp_free(buf);
        mp_connection_free(c);
    }
    if (!fgets(line, sizeof line, py))
        line[0] = 0;
    int st = pclose(py);
    CHECK(WIFEXITED(st));
    CHECK_INT(WEXITSTATUS(st), expect_exit);
}

static void test_python_interop(void)
{
    char path[128];
    snprintf(path, sizeof path, "/tmp/mp-test-py-%d.sock", (int)getpid());
    unlink(path);
    /* Python's own (3.11: legacy) handshake, both directions, Unix and TCP. */
    py_client_case(path, KEY, false, MP_AUTH_DEFAULT, 0, 0);
    py_client_case("127.0.0.1:0", KEY, false, MP_AUTH_DEFAULT, 0, 0);
    /* Our modern challenge to Python 3.11, which answers with raw HMAC-MD5 over it. */
    py_client_case(path, KEY, false, MP_AUTH_SHA256, 0, 0);
    py_listener_case(path, KEY, false, MP_AUTH_DEFAULT, 0, 0);
    py_listener_case(path, KEY, false, MP_AUTH_SHA384, 0, 0);
    py_listener_case("127.0.0.1:0", KEY, false, MP_AUTH_DEFAULT, 0, 0);
    /* The 3.12+ digest-prefixed form from Python. */
    py_client_case(path, KEY, true, MP_AUTH_DEFAULT, 0, 0);
    py_client_case(path, KEY, true, MP_AUTH_SHA3_256, 0, 0);
    py_listener_case(path, KEY, true, MP_AUTH_DEFAULT, 0, 0);
    /* Wrong keys: MP_EAUTH here, AuthenticationError there. */
    py_client_case(path, "bad", false, MP_AUTH_DEFAULT, MP_EAUTH, 3);
    py_client_case(path, "bad", true, MP_AUTH_DEFAULT, MP_EAUTH, 3);
    py_listener_case(path, "bad", false, MP_AUTH_DEFAULT, MP_EAUTH, 3);
    py_listener_case(path, "bad", true, MP_AUTH_SHA256, MP_EAUTH, 3);
    unlink(path);
}

/* ---- slow and silent peers ------------------------------------------------------------- */

typedef struct trickle_job {
    char path[128];
    int ready[2];         /* the peer writes one byte here once it holds the challenge */
    _Atomic int finished; /* the peer stopped (all sent, or the listener dropped it) */
    pthread_t thread;
} trickle_job;

/* Answer the challenge with a 20-byte reply, one byte every 0.2 s (5 s in all). */
static void *trickle_main(void *arg)
{
    trickle_job *t = arg;
    int fd = raw_connect(t->path);
    char buf[256];
    if (fd >= 0 && read(fd, buf, sizeof buf) > 0) {
        if (write(t->ready[1], "r", 1) != 1)
            perror("write");
        unsigned char reply[24] = {0, 0, 0, 20};
        for (int i = 0; i < 24; i++) {
            if (send(fd, reply + i, 1, MSG_NOSIGNAL) != 1)
                break;
            usleep(200000); /* the slow peer's pace, not a synchronisation */
        }
    }
    if (fd >= 0)
        close(fd);
    t->finished = 1;
    return NULL;
}

/* A peer trickling its reply and three silent ones connect first; a valid client that
 * connects after them is accepted first (accept does not serve peers in turn), and each
 * bad peer is dropped once its whole handshake passed 1 s (it never got 1 s per read). */
static void test_slow_peers_do_not_delay_others(void)
{
    mp_listener_opts o = {.authkey = KEY, .authkey_len = strlen(KEY), .handshake_limit = 1};
    mp_listener *l = mp_listener_new(&o);
    trickle_job t = {0};
    snprintf(t.path, sizeof t.path, "%s", mp_listener_address(l));
    CHECK(pipe(t.ready) == 0);
    pthread_create(&t.thread, NULL, trickle_main, &t);
    int silent[3];
    for (int i = 0; i < 3; i++)
        silent[i] = raw_connect(t.path);
    /* The listener must take the peers in while it waits for the valid client. */
    mp_connection *c = NULL;
    double t0 = mpt_now();
    CHECK_ERR(mp_listener_accept(l, 0.2, &c), MP_ETIMEOUT); /* nobody completes yet */
    char r;
    CHECK(read(t.ready[0], &r, 1) == 1); /* the trickler holds its challenge */
    client_job j;
    client_start(&j, mp_listener_address(l), KEY, MP_AUTH_DEFAULT);
    CHECK_OK(serve_one(l, 10)); /* the valid client, first */
    CHECK(!t.finished);         /* while the trickler is still at it */
    pthread_join(j.thread, NULL);
    CHECK_INT(j.result, 0);
    CHECK_INT(j.exchange, 0);
    for (int i = 0; i < 4; i++) { /* then the four bad peers, each at its deadline */
        CHECK_ERR(mp_listener_accept(l, 10, &c), MP_ETIMEOUT);
        CHECK_CONTAINS(mp_last_error(), "did not complete the handshake within 1 s");
    }
    double took = mpt_now() - t0;
    CHECK(took >= 0.9);
    CHECK(took < 3.5); /* generous; serving peers in turn would take 5 s or more */
    CHECK(c == NULL);
    pthread_join(t.thread, NULL);
    for (int i = 0; i < 3; i++)
        close(silent[i]);
    close(t.ready[0]);
    close(t.ready[1]);
    mp_listener_free(l);
}

/* With all-zero options a silent peer is dropped after the default 20 s (Python would hold
 * it forever), while MP_NO_LIMIT keeps it pending past that. */
static void test_default_handshake_limit(void)
{
    mp_listener *l = mp_listener_new(&(mp_listener_opts){.authkey = KEY,
                                                         .authkey_len = strlen(KEY)});
    mp_listener *forever = mp_listener_new(&(mp_listener_opts){
        .authkey = KEY, .authkey_len = strlen(KEY), .handshake_limit = MP_NO_LIMIT});
    int silent = raw_connect(mp_listener_address(l));
    int silent2 = raw_connect(mp_listener_address(forever));
    mp_connection *c = NULL;
    double t0 = mpt_now();
    CHECK_ERR(mp_listener_accept(l, 60, &c), MP_ETIMEOUT);
    CHECK_CONTAINS(mp_last_error(), "did not complete the handshake within 20 s");
    double took = mpt_now() - t0;
    CHECK(took >= 19.5 && took < 40);
    CHECK_ERR(mp_listener_accept(forever, 0, &c), MP_ETIMEOUT); /* still pending, not dropped */
    CHECK_CONTAINS(mp_last_error(), "no connection");
    close(silent);
    close(silent2);
    mp_listener_free(l);
    mp_listener_free(forever);
}

typedef struct slow_server {
    int fd;
    pthread_t thread;
} slow_server;

/* A server that trickles its challenge (4 + 31 bytes), one byte every 0.2 s. */
static void *slow_server_main(void *arg)
{
    slow_server *s = arg;
    int c = accept(s->fd, NULL, NULL);
    unsigned char ch[35] = {0, 0, 0, 31, '#', 'C', 'H', 'A', 'L', 'L', 'E', 'N', 'G', 'E', '#'};
    for (int i = 0; c >= 0 && i < 35; i++) {
        if (send(c, ch + i, 1, MSG_NOSIGNAL) != 1)
            break;
        usleep(200000); /* the slow peer's pace, not a synchronisation */
    }
    if (c >= 0)
        close(c);
    return NULL;
}

static void test_client_deadline_is_per_handshake(void)
{
    char path[108];
    snprintf(path, sizeof path, "/tmp/mp-test-slow-%d.sock", (int)getpid());
    unlink(path);
    slow_server s;
    s.fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
    CHECK(bind(s.fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(s.fd, 4) == 0);
    pthread_create(&s.thread, NULL, slow_server_main, &s);
    mp_client_opts co = {.authkey = KEY, .authkey_len = strlen(KEY), .time_limit = 1};
    mp_connection *c = NULL;
    double t0 = mpt_now();
    CHECK_NULL_ERR(c = mp_client(path, &co), MP_ETIMEOUT);
    double took = mpt_now() - t0;
    CHECK_CONTAINS(mp_last_error(), "did not complete the handshake");
    CHECK_CONTAINS(mp_last_error(), path);
    CHECK(took >= 0.9 && took < 3); /* per read, it would take the 7 s of the trickle */
    CHECK(c == NULL);
    pthread_join(s.thread, NULL);
    close(s.fd);
    unlink(path);
}

/* Listener.last_accepted: NULL before an accept; the TCP peer's "host:port", ""
 * for a Unix-socket peer (unnamed), as Python's. */
static void test_last_accepted(void)
{
    const char *addrs[] = {"127.0.0.1:0", NULL};
    for (size_t i = 0; i < 2; i++) {
        mp_listener_opts o = {.address = addrs[i]};
        mp_listener *l = mp_listener_new(&o);
        CHECK(l != NULL);
        if (!l)
            continue;
        CHECK(mp_listener_last_accepted(l) == NULL);
        mp_connection *c = mp_client(mp_listener_address(l), NULL), *s = NULL;
        CHECK(c != NULL);
        CHECK_OK(mp_listener_accept(l, 10, &s));
        const char *peer = mp_listener_last_accepted(l);
        CHECK(peer != NULL);
        if (i == 0 && c && peer) {
            struct sockaddr_in me;
            socklen_t len = sizeof me;
            CHECK_OK(getsockname(mp_connection_fileno(c), (struct sockaddr *)&me, &len));
            char want[64];
            snprintf(want, sizeof want, "127.0.0.1:%u", ntohs(me.sin_port));
            CHECK_STR(peer, want);
        } else if (peer) {
            CHECK_STR(peer, "");
        }
        mp_connection_free(c);
        mp_connection_free(s);
        mp_listener_free(l);
    }
}

int main(int argc, char **argv)
{
    /* Socket paths are registered with the resource tracker: its pipe stays open for the
     * whole run, so open it before the leak checks. */
    mp__tracker_ensure_running();
    RUN_IF(argc, argv, test_unix_default_address);
    RUN_IF(argc, argv, test_abstract_and_tcp);
    RUN_IF(argc, argv, test_every_digest_pair);
    RUN_IF(argc, argv, test_wrong_key);
    RUN_IF(argc, argv, test_bounded_handshake);
    RUN_IF(argc, argv, test_slow_peers_do_not_delay_others);
    RUN_IF(argc, argv, test_default_handshake_limit);
    RUN_IF(argc, argv, test_client_deadline_is_per_handshake);
    RUN_IF(argc, argv, test_errors);
    RUN_IF(argc, argv, test_wait_listener);
    RUN_IF(argc, argv, test_python_interop);
    RUN_IF(argc, argv, test_last_accepted);
    return mpt_done();
}
