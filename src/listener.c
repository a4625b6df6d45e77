/* Listener and Client over Unix-domain and TCP sockets, with Python's HMAC handshake
 * (src/handshake.c: one deadline for the whole exchange, on both sides).
 *
 * DESIGN: a listener with an authkey authenticates several peers at once, so one slow or
 * silent peer never delays the others: accept takes every pending connection (up to
 * MAX_INFLIGHT handshakes in progress), drives each handshake without blocking under one
 * poll, and hands out whichever completes first; handshakes still in progress stay in the
 * listener for the next accept. A handshake that fails or passes its deadline is closed
 * and reported by the accept that sees it (MP_EAUTH, MP_ETIMEOUT), as Python's accept
 * raises; the next accept goes on with the others. One thread accepts at a time. */
#define _GNU_SOURCE
#include "multiproc/connection.h"

#include "internal/common.h"
#include "internal/iwait.h"
#include "internal/handshake.h"
#include "internal/tracker.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define MAX_INFLIGHT 64 /* handshakes in progress per listener; more wait in the backlog */

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
        if (a->len <= offsetof(struct sockaddr_un, sun_path)) /* unnamed (a client's end) */
            snprintf(out, n, "%s", "");
        else if (un->sun_path[0] == 0)
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

/* ---- Listener ------------------------------------------------------------------------ */

struct mp_listener {
    int fd; /* non-blocking: accept drains the backlog */
    bool unlink_path; /* a Unix path we bound (and registered with the resource tracker) */
    char address[128];
    void *authkey;
    size_t authkey_len;
    mp_auth_digest digest;
    double handshake_limit; /* seconds (the default already applied); negative: none */
    size_t max_message_size;
    mp_codec codec;
    mp__hs *hs[MAX_INFLIGHT]; /* handshakes in progress, oldest first */
    int nhs;
    char last_accepted[128]; /* the peer of the last accepted connection */
    bool accepted;           /* one was accepted */
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

/* A socket file is registered with the resource tracker before bind creates it, so a
 * program SIGKILLed at any point leaves no file behind (the tracker ignores a path that
 * never came to exist, and one that existed before we registered: see src/tracker.c). */
static int bind_path(mp_listener *l, const sockaddr_any *a, const char *address)
{
    const struct sockaddr_un *un = (const struct sockaddr_un *)&a->ss;
    bool path = a->family == AF_UNIX && un->sun_path[0] != 0;
    if (path && mp__tracker_register(MP__RT_FILE, un->sun_path) < 0)
        return mp_last_error_code();
    if (bind(l->fd, (const struct sockaddr *)&a->ss, a->len) < 0) {
        int code = mp__errno("bind '%s'", address);
        if (path)
            mp__tracker_unregister(MP__RT_FILE, un->sun_path);
        return code;
    }
    l->unlink_path = path;
    return 0;
}

static int listener_bind(mp_listener *l, const char *address, int backlog)
{
    sockaddr_any a;
    int code = parse_address(address, true, &a);
    if (code < 0)
        return code;
    l->fd = mp__fd_high(socket(a.family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
    if (l->fd < 0)
        return mp__errno("socket for '%s'", address);
    if (a.family != AF_UNIX) {
        int one = 1;
        setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    }
    if ((code = bind_path(l, &a, address)) < 0)
        return code;
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
    if (mp__limit_check(opts->handshake_limit, "listener: handshake_limit") < 0)
        return NULL;
    if ((unsigned)opts->codec > MP_CODEC_PICKLE) {
        mp__error(MP_EINVAL, "listener: unknown codec %d", (int)opts->codec);
        return NULL;
    }
    mp_listener *l = mp__calloc(1, sizeof *l);
    if (!l)
        return NULL;
    l->fd = -1;
    l->digest = opts->digest;
    l->handshake_limit = opts->handshake_limit == 0 ? MP__HANDSHAKE_DEFAULT : opts->handshake_limit;
    l->max_message_size = opts->max_message_size;
    l->codec = opts->codec;
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
        int code = mp_last_error_code();
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mp__last_error_detail());
        mp_listener_free(l); /* unlinks the path if we bound it */
        mp__error(code, "%s", msg);
        return NULL;
    }
    return l;
}

/* A new connection, or NULL with the error set; the fd is adopted. */
static mp_connection *wrap(mp_listener *l, int fd)
{
    sockaddr_any peer;
    memset(&peer, 0, sizeof peer);
    peer.len = sizeof peer.ss;
    if (getpeername(fd, (struct sockaddr *)&peer.ss, &peer.len) == 0) {
        peer.family = peer.ss.ss_family;
        format_address(&peer, l->last_accepted, sizeof l->last_accepted);
    } else {
        l->last_accepted[0] = '\0';
    }
    l->accepted = true;
    mp_connection *c = mp_connection_from_fd(fd, true, true);
    if (c && l->max_message_size)
        mp_connection_set_max_message_size(c, l->max_message_size);
    if (c)
        mp_connection_set_codec(c, l->codec);
    return c;
}

/* One pending connection without blocking: its fd, -EAGAIN when none, or an error. */
static int accept_one(mp_listener *l)
{
    for (;;) {
        int fd = mp__fd_high(accept4(l->fd, NULL, NULL, SOCK_CLOEXEC));
        if (fd >= 0)
            return fd;
        if (errno == EINTR || errno == ECONNABORTED)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return -EAGAIN;
        return mp__errno("accept on '%s'", l->address);
    }
}

/* Without an authkey: the first connection in the backlog. */
static int accept_plain(mp_listener *l, double timeout, mp_connection **out)
{
    double deadline = mp__deadline(timeout);
    for (;;) {
        int fd = accept_one(l);
        if (fd >= 0) {
            *out = wrap(l, fd);
            return *out ? 0 : mp_last_error_code();
        }
        if (fd != -EAGAIN)
            return fd;
        int r = mp__iwait_poll1(l->fd, POLLIN, deadline);
        if (r < 0)
            return mp__error(r, "accept on '%s'", l->address);
        if (r == 0)
            return mp__error(MP_ETIMEOUT, "no connection on '%s' within %.3g s", l->address,
                             timeout);
    }
}

/* Take the handshake at index i out of the set (order kept: oldest first). */
static mp__hs *hs_remove(mp_listener *l, int i)
{
    mp__hs *h = l->hs[i];
    memmove(&l->hs[i], &l->hs[i + 1], (size_t)(l->nhs - i - 1) * sizeof l->hs[0]);
    l->nhs--;
    return h;
}

/* The deadline of a handshake limit (0: the default, so a silent peer never holds a slot). */
static double limit_deadline(double limit)
{
    return mp__limit_deadline(limit, MP__HANDSHAKE_DEFAULT);
}

/* Start a handshake for every connection in the backlog, while there is room. */
static int admit_pending(mp_listener *l)
{
    while (l->nhs < MAX_INFLIGHT) {
        int fd = accept_one(l);
        if (fd == -EAGAIN)
            return 0;
        if (fd < 0)
            return fd;
        mp__hs *h = mp__hs_new(fd, true, l->authkey, l->authkey_len, l->digest,
                               limit_deadline(l->handshake_limit));
        if (!h) {
            mp__close(fd);
            return mp_last_error_code();
        }
        l->hs[l->nhs++] = h;
    }
    return 0;
}

/* Advance every handshake; the first one that ends (authenticated, failed or past its
 * deadline) is returned: 1 with *out, or its error. 0 when none ended. */
static int advance_all(mp_listener *l, mp_connection **out)
{
    double now = mp__now();
    for (int i = 0; i < l->nhs; i++) {
        mp__hs *h = l->hs[i];
        int r = mp__hs_step(h);
        double d = mp__hs_deadline(h);
        if (r == 0 && (d < 0 || now < d))
            continue;
        int fd = mp__hs_fd(h);
        mp__hs_free(hs_remove(l, i));
        if (r == 1) {
            *out = wrap(l, fd);
            return *out ? 1 : mp_last_error_code();
        }
        mp__close(fd);
        if (r == 0)
            return mp__error(MP_ETIMEOUT, "accept on '%s': a peer did not complete the handshake "
                                          "within %.3g s", l->address, l->handshake_limit);
        return mp__error(r, "accept on '%s': %s", l->address, mp__last_error_detail());
    }
    return 0;
}

/* The one poll of an authenticating accept: the listening socket (while there is room)
 * and every handshake, until the nearest deadline. >0 ready, 0 timeout, negative. */
static int wait_any(mp_listener *l, double deadline)
{
    struct pollfd p[MAX_INFLIGHT + 1];
    int n = 0;
    double until = deadline;
    if (l->nhs < MAX_INFLIGHT)
        p[n++] = (struct pollfd){.fd = l->fd, .events = POLLIN};
    for (int i = 0; i < l->nhs; i++) {
        p[n++] = (struct pollfd){.fd = mp__hs_fd(l->hs[i]), .events = mp__hs_events(l->hs[i])};
        double d = mp__hs_deadline(l->hs[i]);
        if (d >= 0 && (until < 0 || d < until))
            until = d;
    }
    return mp__iwait_poll(p, (nfds_t)n, until);
}

static int accept_auth(mp_listener *l, double timeout, mp_connection **out)
{
    double deadline = mp__deadline(timeout);
    for (;;) {
        int r = admit_pending(l);
        if (r == 0)
            r = advance_all(l, out);
        if (r != 0)
            return r < 0 ? r : 0;
        if (deadline >= 0 && mp__now() >= deadline)
            return mp__error(MP_ETIMEOUT, "no connection on '%s' within %.3g s", l->address,
                             timeout);
        r = wait_any(l, deadline);
        if (r < 0)
            return mp__error(r, "accept on '%s'", l->address);
    }
}

int mp_listener_accept(mp_listener *l, double timeout, mp_connection **out)
{
    if (!out)
        return mp__error(MP_EINVAL, "mp_listener_accept: NULL output pointer");
    *out = NULL;
    if (!l || l->fd < 0)
        return mp__error(MP_ECLOSED, "listener is closed");
    return l->authkey ? accept_auth(l, timeout, out) : accept_plain(l, timeout, out);
}

const char *mp_listener_address(const mp_listener *l) { return l ? l->address : ""; }
int mp_listener_fileno(const mp_listener *l) { return l ? l->fd : -1; }

int mp_listener_close(mp_listener *l)
{
    if (!l)
        return 0;
    while (l->nhs > 0) {
        mp__hs *h = hs_remove(l, l->nhs - 1);
        mp__close(mp__hs_fd(h));
        mp__hs_free(h);
    }
    if (l->fd >= 0)
        mp__close(l->fd);
    l->fd = -1;
    if (l->unlink_path && unlink(l->address) == 0)
        mp__tracker_unregister(MP__RT_FILE, l->address);
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
        int p = mp__iwait_poll1(fd, POLLOUT, deadline);
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

/* One deadline covers connect and the whole handshake. */
static int client_connect(const char *address, const mp_client_opts *opts, mp_connection **out)
{
    static const mp_client_opts defaults;
    if (!opts)
        opts = &defaults;
    if (!address)
        return mp__error(MP_EINVAL, "mp_client: NULL address");
    if (mp__limit_check(opts->time_limit, "mp_client: time_limit") < 0)
        return mp_last_error_code();
    if ((unsigned)opts->codec > MP_CODEC_PICKLE)
        return mp__error(MP_EINVAL, "mp_client: unknown codec %d", (int)opts->codec);
    double deadline = limit_deadline(opts->time_limit);
    sockaddr_any a;
    int code = parse_address(address, false, &a);
    if (code < 0)
        return code;
    int fd = mp__fd_high(socket(a.family, SOCK_STREAM | SOCK_CLOEXEC, 0));
    if (fd < 0)
        return mp__errno("socket for '%s'", address);
    code = connect_deadline(fd, &a, address, deadline);
    if (code == 0 && opts->authkey)
        code = mp__hs_run(fd, false, opts->authkey, opts->authkey_len, opts->digest, deadline);
    if (code < 0) {
        mp__close(fd);
        return mp__error(code, "client to '%s': %s", address, mp__last_error_detail());
    }
    mp_connection *c = mp_connection_from_fd(fd, true, true);
    if (!c)
        return mp_last_error_code();
    if (opts->max_message_size)
        mp_connection_set_max_message_size(c, opts->max_message_size);
    mp_connection_set_codec(c, opts->codec);
    *out = c;
    return 0;
}

mp_connection *mp_client(const char *address, const mp_client_opts *opts)
{
    mp_connection *c = NULL;
    client_connect(address, opts, &c);
    return c;
}

/* ---- for the manager ----------------------------------------------------------------- */

/* The server side of the handshake on a connection the caller accepted from l's fd
 * itself: the manager authenticates on each connection's own thread, so a slow peer
 * never holds its accept loop. The listener's handshake_limit applies. */
int mp__listener_handshake(const mp_listener *l, mp_connection *c);
int mp__listener_handshake(const mp_listener *l, mp_connection *c)
{
    if (!l || !c)
        return mp__error(MP_EINVAL, "mp__listener_handshake: NULL argument");
    if (!l->authkey)
        return 0;
    return mp__hs_run(mp_connection_fileno(c), true, l->authkey, l->authkey_len, l->digest,
                      limit_deadline(l->handshake_limit));
}

const char *mp_listener_last_accepted(const mp_listener *l)
{
    return l && l->accepted ? l->last_accepted : NULL;
}
