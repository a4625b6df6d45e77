/* Listener and Client over Unix-domain and TCP sockets, with Python's HMAC handshake.
 *
 * The handshake is multiprocessing.connection's deliver_challenge/answer_challenge: the
 * listener challenges first, then answers the client's challenge. Two forms exist and we
 * accept both from a peer:
 *   legacy (Python <= 3.11): "#CHALLENGE#" + 20 random bytes, reply = raw HMAC-MD5 (16 bytes)
 *   modern (Python >= 3.12): "#CHALLENGE#{sha256}" + 40 random bytes, reply = "{sha256}" +
 *                            HMAC over the whole message including the prefix.
 * A reply of 16 or 20 bytes is legacy MD5, as in 3.12's _get_digest_name_and_payload.
 * Every handshake read is bounded (maxlength, so a huge length is refused before any
 * allocation) and the whole handshake has a deadline (SO_RCVTIMEO/SO_SNDTIMEO). */
#define _GNU_SOURCE
#include "multiproc/connection.h"

#include "internal/common.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define CHALLENGE "#CHALLENGE#"
#define WELCOME "#WELCOME#"
#define FAILURE "#FAILURE#"
#define LEGACY_MSG_LEN 20
#define MODERN_MSG_LEN 40
#define MD5_LEN 16
#define MAX_DIGEST_NAME 8 /* "sha3_256" */

/* ---- addresses ---------------------------------------------------------------------- */

typedef struct sockaddr_any {
    struct sockaddr_storage ss;
    socklen_t len;
    int family;
} sockaddr_any;

static int parse_unix(const char *path, bool abstract, sockaddr_any *a)
{
    struct sockaddr_un *un = (struct sockaddr_un *)&a->ss;
    size_t n = strlen(path);
    if (n == 0 || n + 1 > sizeof un->sun_path)
        return mp__error(MP_EINVAL, "Unix socket address '%s%s' is empty or too long",
                         abstract ? "@" : "", path);
    memset(a, 0, sizeof *a);
    un->sun_family = AF_UNIX;
    memcpy(un->sun_path + (abstract ? 1 : 0), path, n);
    a->len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (abstract ? 1 : 1));
    a->family = AF_UNIX;
    return 0;
}

static int parse_tcp(const char *addr, bool passive, sockaddr_any *a)
{
    char host[256];
    const char *port;
    if (addr[0] == '[') {
        const char *end = strchr(addr, ']');
        if (!end || end[1] != ':' || (size_t)(end - addr - 1) >= sizeof host)
            return mp__error(MP_EINVAL, "bad address '%s' (expected [ipv6]:port)", addr);
        memcpy(host, addr + 1, (size_t)(end - addr - 1));
        host[end - addr - 1] = 0;
        port = end + 2;
    } else {
        const char *colon = strrchr(addr, ':');
        if (!colon || (size_t)(colon - addr) >= sizeof host)
            return mp__error(MP_EINVAL,
                             "bad address '%s' (expected /path, @name or host:port)", addr);
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = 0;
        port = colon + 1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV | (passive ? AI_PASSIVE : 0)};
    struct addrinfo *res = NULL;
    int r = getaddrinfo(host[0] ? host : NULL, port, &hints, &res);
    if (r != 0)
        return mp__error(MP_EINVAL, "resolve '%s': %s", addr, gai_strerror(r));
    memset(a, 0, sizeof *a);
    memcpy(&a->ss, res->ai_addr, res->ai_addrlen);
    a->len = res->ai_addrlen;
    a->family = res->ai_family;
    freeaddrinfo(res);
    return 0;
}

static int parse_address(const char *addr, bool passive, sockaddr_any *a)
{
    if (!addr || !addr[0])
        return mp__error(MP_EINVAL, "empty address");
    if (strncmp(addr, "unix:", 5) == 0)
        return parse_unix(addr + 5, false, a);
    if (addr[0] == '/' || addr[0] == '.')
        return parse_unix(addr, false, a);
    if (addr[0] == '@')
        return parse_unix(addr + 1, true, a);
    if (strncmp(addr, "tcp:", 4) == 0)
        addr += 4;
    return parse_tcp(addr, passive, a);
}

/* Text form of a bound address: "/path", "@name", "1.2.3.4:80", "[::1]:80". */
static void format_address(const sockaddr_any *a, char *out, size_t n)
{
    if (a->family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&a->ss;
        size_t plen = a->len - offsetof(struct sockaddr_un, sun_path);
        if (plen > 0 && un->sun_path[0] == 0)
            snprintf(out, n, "@%.*s", (int)(plen - 1), un->sun_path + 1);
        else
            snprintf(out, n, "%s", un->sun_path);
        return;
    }
    char host[INET6_ADDRSTRLEN] = "";
    if (a->family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)&a->ss;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        snprintf(out, n, "%s:%u", host, ntohs(in->sin_port));
    } else {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&a->ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        snprintf(out, n, "[%s]:%u", host, ntohs(in6->sin6_port));
    }
}

/* ---- HMAC handshake ------------------------------------------------------------------ */

static const EVP_MD *digest_md(const char *name, size_t len)
{
    static const struct {
        const char *name;
        const EVP_MD *(*md)(void);
    } table[] = {{"md5", EVP_md5},       {"sha256", EVP_sha256},     {"sha384", EVP_sha384},
                 {"sha3_256", EVP_sha3_256}, {"sha3_384", EVP_sha3_384}};
    for (size_t i = 0; i < MP__ARRAY_LEN(table); i++)
        if (strlen(table[i].name) == len && memcmp(table[i].name, name, len) == 0)
            return table[i].md();
    return NULL;
}

static const char *digest_name(mp_auth_digest d)
{
    switch (d) {
    case MP_AUTH_SHA256: return "sha256";
    case MP_AUTH_SHA384: return "sha384";
    case MP_AUTH_SHA3_256: return "sha3_256";
    case MP_AUTH_SHA3_384: return "sha3_384";
    case MP_AUTH_MD5: return "md5";
    default: return NULL; /* legacy */
    }
}

/* Split a challenge or reply into digest name and payload (3.12's rule): 16 or 20 bytes
 * is legacy MD5 with no prefix (*name_len = 0); otherwise "{name}payload" with an allowed
 * name. Returns 0 or MP_EAUTH. */
static int split_digest(const unsigned char *m, size_t len, const char **name, size_t *name_len,
                        const unsigned char **payload, size_t *payload_len)
{
    if (len == LEGACY_MSG_LEN || len == MD5_LEN) {
        *name = "md5";
        *name_len = 0;
        *payload = m;
        *payload_len = len;
        return 0;
    }
    if (len > 2 && m[0] == '{') {
        const unsigned char *end = memchr(m + 1, '}', len - 1 < MAX_DIGEST_NAME + 1 ? len - 1 : MAX_DIGEST_NAME + 1);
        if (end && digest_md((const char *)m + 1, (size_t)(end - m - 1))) {
            *name = (const char *)m + 1;
            *name_len = (size_t)(end - m - 1);
            *payload = end + 1;
            *payload_len = len - (size_t)(end + 1 - m);
            return 0;
        }
    }
    return mp__error(MP_EAUTH, "unsupported message length, missing digest prefix, or "
                               "unsupported digest (%zu bytes)", len);
}

static int hmac(const EVP_MD *md, const void *key, size_t keylen, const void *msg, size_t len,
                unsigned char *out, unsigned *outlen)
{
    static const unsigned char empty_key[1];
    if (!HMAC(md, keylen ? key : empty_key, (int)keylen, msg, len, out, outlen))
        return mp__error(MP_EAUTH, "HMAC computation failed");
    return 0;
}

/* Receive one bounded handshake message into buf (NUL-free binary; *len set). */
static int recv_small(mp_connection *c, unsigned char *buf, size_t cap, size_t *len)
{
    void *p;
    int code = mp_connection_recv_bytes(c, cap, &p, len);
    if (code == MP_EPROTO)
        return mp__error(MP_EAUTH, "authentication: peer sent an oversized message (%s)",
                         mp_last_error());
    if (code == -EAGAIN || code == -EWOULDBLOCK)
        return mp__error(MP_ETIMEOUT, "authentication: the peer did not answer in time");
    if (code < 0)
        return code;
    memcpy(buf, p, *len);
    free(p);
    return 0;
}

static int send_msg(mp_connection *c, const void *buf, size_t len)
{
    int code = mp_connection_send_bytes(c, buf, 0, len);
    if (code == -EAGAIN || code == -EWOULDBLOCK)
        return mp__error(MP_ETIMEOUT, "authentication: the peer is not reading");
    return code;
}

/* Check a reply against our challenge message (our digest choice can't be downgraded:
 * the MAC covers the "{name}" prefix). */
static int verify_reply(const void *key, size_t keylen, const unsigned char *msg, size_t msglen,
                        const unsigned char *reply, size_t rlen)
{
    const char *name;
    size_t name_len;
    const unsigned char *mac;
    size_t mac_len;
    int code = split_digest(reply, rlen, &name, &name_len, &mac, &mac_len);
    if (code < 0)
        return code;
    const EVP_MD *md = digest_md(name, name_len ? name_len : 3);
    unsigned char expected[EVP_MAX_MD_SIZE];
    unsigned elen = 0;
    code = hmac(md, key, keylen, msg, msglen, expected, &elen);
    if (code < 0)
        return code;
    if (elen != mac_len || CRYPTO_memcmp(expected, mac, elen) != 0)
        return mp__error(MP_EAUTH, "digest received was wrong");
    return 0;
}

static int deliver_challenge(mp_connection *c, const void *key, size_t keylen, mp_auth_digest d)
{
    unsigned char out[64], msg[64], reply[256 + MAX_DIGEST_NAME + 8];
    const char *name = digest_name(d);
    size_t plen = name ? (size_t)snprintf((char *)msg, sizeof msg, "{%s}", name) : 0;
    size_t nrand = name ? MODERN_MSG_LEN : LEGACY_MSG_LEN;
    if (getrandom(msg + plen, nrand, 0) != (ssize_t)nrand)
        return mp__errno("getrandom for the challenge");
    size_t msglen = plen + nrand;
    memcpy(out, CHALLENGE, strlen(CHALLENGE));
    memcpy(out + strlen(CHALLENGE), msg, msglen);
    int code = send_msg(c, out, strlen(CHALLENGE) + msglen);
    size_t rlen = 0;
    if (code == 0)
        code = recv_small(c, reply, sizeof reply, &rlen);
    if (code < 0)
        return code;
    code = verify_reply(key, keylen, msg, msglen, reply, rlen);
    if (code < 0) {
        send_msg(c, FAILURE, strlen(FAILURE));
        return code;
    }
    return send_msg(c, WELCOME, strlen(WELCOME));
}

static int answer_challenge(mp_connection *c, const void *key, size_t keylen)
{
    unsigned char msg[256], reply[EVP_MAX_MD_SIZE + MAX_DIGEST_NAME + 2];
    size_t len = 0;
    int code = recv_small(c, msg, sizeof msg, &len);
    if (code < 0)
        return code;
    size_t cl = strlen(CHALLENGE);
    if (len < cl || memcmp(msg, CHALLENGE, cl) != 0)
        return mp__error(MP_EAUTH, "protocol error: expected a challenge");
    if (len - cl < LEGACY_MSG_LEN)
        return mp__error(MP_EAUTH, "challenge too short: %zu bytes", len - cl);
    const char *name;
    size_t name_len;
    const unsigned char *payload;
    size_t payload_len;
    code = split_digest(msg + cl, len - cl, &name, &name_len, &payload, &payload_len);
    if (code < 0)
        return code;
    size_t prefix = name_len ? name_len + 2 : 0;
    if (name_len)
        memcpy(reply, msg + cl, prefix); /* "{name}" */
    unsigned mlen = 0;
    code = hmac(digest_md(name, name_len ? name_len : 3), key, keylen, msg + cl, len - cl,
                reply + prefix, &mlen);
    if (code == 0)
        code = send_msg(c, reply, prefix + mlen);
    if (code == 0)
        code = recv_small(c, msg, sizeof msg, &len);
    if (code < 0)
        return code;
    if (len != strlen(WELCOME) || memcmp(msg, WELCOME, len) != 0)
        return mp__error(MP_EAUTH, "digest sent was rejected");
    return 0;
}

/* Bound every handshake read/write by the deadline, then restore blocking forever. */
static void set_io_timeout(int fd, double seconds)
{
    struct timeval tv = {0, 0};
    if (seconds > 0) {
        tv.tv_sec = (time_t)seconds;
        tv.tv_usec = (suseconds_t)((seconds - (double)tv.tv_sec) * 1e6);
        if (tv.tv_sec == 0 && tv.tv_usec == 0)
            tv.tv_usec = 1000;
    }
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int handshake(mp_connection *c, bool server, const void *key, size_t keylen,
                     mp_auth_digest d, double timeout)
{
    int fd = mp_connection_fileno(c);
    set_io_timeout(fd, timeout < 0 ? 0 : timeout);
    int code = server ? deliver_challenge(c, key, keylen, d) : answer_challenge(c, key, keylen);
    if (code == 0)
        code = server ? answer_challenge(c, key, keylen) : deliver_challenge(c, key, keylen, d);
    if (code == MP_EEOF || code == MP_EPROTO)
        code = mp__error(MP_EAUTH, "authentication: the peer closed the connection (%s)",
                         mp_last_error());
    if (mp_connection_fileno(c) >= 0)
        set_io_timeout(fd, 0);
    return code;
}

/* ---- Listener ------------------------------------------------------------------------ */

struct mp_listener {
    int fd;
    bool unlink_path;
    char address[128];
    void *authkey;
    size_t authkey_len;
    mp_auth_digest digest;
    double handshake_timeout;
};

static void default_path(char *out, size_t n)
{
    static _Atomic unsigned counter;
    const char *dir = getenv("TMPDIR");
    unsigned rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) < 0)
        rnd = (unsigned)getpid();
    snprintf(out, n, "%s/mp-listener-%d-%u-%08x.sock", dir && dir[0] ? dir : "/tmp", (int)getpid(),
             counter++, rnd);
}

static int listener_bind(mp_listener *l, const char *address, int backlog)
{
    sockaddr_any a;
    int code = parse_address(address, true, &a);
    if (code < 0)
        return code;
    l->fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l->fd < 0)
        return mp__errno("socket for '%s'", address);
    if (a.family != AF_UNIX) {
        int one = 1;
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    if (bind(l->fd, (struct sockaddr *)&a.ss, a.len) < 0)
        return mp__errno("bind '%s'", address);
    l->unlink_path = a.family == AF_UNIX && ((struct sockaddr_un *)&a.ss)->sun_path[0] != 0;
    if (listen(l->fd, backlog > 0 ? backlog : 16) < 0)
        return mp__errno("listen on '%s'", address);
    a.len = sizeof a.ss;
    if (getsockname(l->fd, (struct sockaddr *)&a.ss, &a.len) < 0)
        return mp__errno("getsockname '%s'", address);
    format_address(&a, l->address, sizeof l->address);
    return 0;
}

mp_listener *mp_listener_new(const mp_listener_opts *opts)
{
    static const mp_listener_opts defaults;
    if (!opts)
        opts = &defaults;
    mp_listener *l = mp__calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->fd = -1;
    l->digest = opts->digest;
    l->handshake_timeout = opts->handshake_timeout > 0 ? opts->handshake_timeout : 20.0;
    if (opts->authkey) {
        l->authkey = malloc(opts->authkey_len ? opts->authkey_len : 1);
        if (!l->authkey) {
            mp__error(-ENOMEM, "copying the authkey");
            free(l);
            return NULL;
        }
        memcpy(l->authkey, opts->authkey, opts->authkey_len);
        l->authkey_len = opts->authkey_len;
    }
    char path[108];
    const char *address = opts->address;
    if (!address) {
        default_path(path, sizeof path);
        address = path;
    }
    if (listener_bind(l, address, opts->backlog) < 0) {
        l->unlink_path = false; /* never remove a path we did not bind */
        mp_listener_free(l);
        return NULL;
    }
    return l;
}

int mp_listener_accept(mp_listener *l, double timeout, mp_connection **out)
{
    if (!out)
        return mp__error(MP_EINVAL, "mp_listener_accept: NULL output pointer");
    *out = NULL;
    if (!l || l->fd < 0)
        return mp__error(MP_ECLOSED, "listener is closed");
    int r = mp__poll1(l->fd, POLLIN, mp__deadline(timeout));
    if (r < 0)
        return mp__error(r, "accept on '%s'", l->address);
    if (r == 0)
        return mp__error(MP_ETIMEOUT, "no connection on '%s' within %.3g s", l->address, timeout);
    int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return mp__errno("accept on '%s'", l->address);
    mp_connection *c = mp_connection_from_fd(fd, true, true);
    if (!c)
        return mp_last_error_code();
    if (l->authkey) {
        int code = handshake(c, true, l->authkey, l->authkey_len, l->digest, l->handshake_timeout);
        if (code < 0) {
            mp_connection_free(c);
            return mp__error(code, "accept on '%s': %s", l->address, mp_last_error());
        }
    }
    *out = c;
    return 0;
}

const char *mp_listener_address(const mp_listener *l) { return l ? l->address : ""; }
int mp_listener_fileno(const mp_listener *l) { return l ? l->fd : -1; }

int mp_listener_close(mp_listener *l)
{
    if (!l || l->fd < 0)
        return 0;
    mp__close(l->fd);
    l->fd = -1;
    if (l->unlink_path)
        unlink(l->address);
    l->unlink_path = false;
    return 0;
}

void mp_listener_free(mp_listener *l)
{
    if (!l)
        return;
    mp_listener_close(l);
    if (l->authkey) {
        OPENSSL_cleanse(l->authkey, l->authkey_len);
        free(l->authkey);
    }
    free(l);
}

/* ---- Client -------------------------------------------------------------------------- */

static int connect_deadline(int fd, const sockaddr_any *a, const char *address, double deadline)
{
    mp__set_nonblock(fd, true);
    int r = connect(fd, (const struct sockaddr *)&a->ss, a->len);
    if (r < 0 && errno != EINPROGRESS && errno != EINTR)
        return mp__errno("connect to '%s'", address);
    if (r < 0) {
        int p = mp__poll1(fd, POLLOUT, deadline);
        if (p < 0)
            return mp__error(p, "connect to '%s'", address);
        if (p == 0)
            return mp__error(MP_ETIMEOUT, "connect to '%s' timed out", address);
        int err = 0;
        socklen_t elen = sizeof err;
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen);
        if (err)
            return mp__error(-err, "connect to '%s'", address);
    }
    mp__set_nonblock(fd, false);
    return 0;
}

int mp_client(const char *address, const mp_client_opts *opts, mp_connection **out)
{
    static const mp_client_opts defaults;
    if (!opts)
        opts = &defaults;
    if (!out)
        return mp__error(MP_EINVAL, "mp_client: NULL output pointer");
    *out = NULL;
    if (!address)
        return mp__error(MP_EINVAL, "mp_client: NULL address");
    double timeout = opts->timeout == 0 ? 20.0 : opts->timeout;
    double deadline = mp__deadline(timeout);
    sockaddr_any a;
    int code = parse_address(address, false, &a);
    if (code < 0)
        return code;
    int fd = socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return mp__errno("socket for '%s'", address);
    code = connect_deadline(fd, &a, address, deadline);
    if (code < 0) {
        mp__close(fd);
        return code;
    }
    mp_connection *c = mp_connection_from_fd(fd, true, true);
    if (!c)
        return mp_last_error_code();
    if (opts->authkey) {
        double left = mp__left(deadline);
        code = handshake(c, false, opts->authkey, opts->authkey_len, opts->digest,
                         left < 0 ? -1 : (left > 0 ? left : 0.001));
        if (code < 0) {
            mp_connection_free(c);
            return mp__error(code, "client to '%s': %s", address, mp_last_error());
        }
    }
    *out = c;
    return 0;
}

/* ---- for the manager ----------------------------------------------------------------- */

/* The server side of the handshake on a connection the caller accepted from l's fd
 * itself: the manager authenticates on each connection's own thread, so a slow peer
 * never holds its accept loop. */
int mp__listener_handshake(const mp_listener *l, mp_connection *c, double timeout);
int mp__listener_handshake(const mp_listener *l, mp_connection *c, double timeout)
{
    if (!l || !c)
        return mp__error(MP_EINVAL, "mp__listener_handshake: NULL argument");
    if (!l->authkey)
        return 0;
    return handshake(c, true, l->authkey, l->authkey_len, l->digest, timeout);
}
