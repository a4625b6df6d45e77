/* Connections: Python-compatible length-prefixed messages over a socket or pipe fd.
 *
 * DESIGN: a connection is an fd and a few flags; nothing is buffered in user space (so the
 * fd's readiness is exactly the connection's, and a connection can be handed to another
 * process at any time) except one message kept after MP_ETOOSHORT. A message is a 4-byte
 * big-endian length (or -1 and an 8-byte length beyond 0x7fffffff) then the payload,
 * written with one writev/sendmsg so small messages are one syscall. Sockets are written
 * with MSG_NOSIGNAL; pipe writes block SIGPIPE around the write on this thread only and
 * swallow the SIGPIPE they caused, so a dead reader is -EPIPE, never a dead program.
 *
 * Handles: on a Unix socket a value's fds ride as SCM_RIGHTS on the first byte of its
 * message (the length header), so the byte stream stays exactly Python's. The receiver
 * takes them with a recvmsg of that header; every fd it took is owned by an imported
 * object or closed, whatever goes wrong (too many fds, a malformed value). */
#define _GNU_SOURCE
#include "multiproc/connection.h"

#include "internal/common.h"
#include "internal/iwait.h"
#include "internal/fdpass.h"
#include "internal/sigutil.h"

#include <arpa/inet.h>
#include <endian.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

struct mp_connection {
    int fd;
    bool readable, writable, is_socket, closed;
    bool is_unix; /* an AF_UNIX socket: values may carry fds */
    bool has_pending; /* a message kept after MP_ETOOSHORT */
    void *pending;
    size_t pending_len;
    size_t max_msg; /* largest message we allocate for; 0: MP_CONNECTION_DEFAULT_MAX_MESSAGE */
    mp_codec codec; /* how send/recv encode values */
};

/* The bound on an announced length, checked before anything is allocated. */
static size_t max_message(const mp_connection *c)
{
    return c->max_msg ? c->max_msg : MP_CONNECTION_DEFAULT_MAX_MESSAGE;
}

int mp_connection_set_max_message_size(mp_connection *c, size_t max)
{
    if (!c)
        return mp__error(MP_EINVAL, "connection is NULL");
    c->max_msg = max;
    return 0;
}

size_t mp_connection_max_message_size(const mp_connection *c) { return c ? max_message(c) : 0; }

int mp_connection_set_codec(mp_connection *c, mp_codec codec)
{
    if (!c)
        return mp__error(MP_EINVAL, "connection is NULL");
    if (codec != MP_CODEC_MSGPACK && codec != MP_CODEC_PICKLE)
        return mp__error(MP_EINVAL, "unknown codec %d", (int)codec);
    c->codec = codec;
    return 0;
}

mp_codec mp_connection_codec(const mp_connection *c) { return c ? c->codec : MP_CODEC_MSGPACK; }

bool mp__connection_has_pending(const mp_connection *c);
bool mp__connection_has_pending(const mp_connection *c) { return c && c->has_pending; }

mp_connection *mp_connection_from_fd(int fd, bool readable, bool writable)
{
    if (fd < 0) {
        mp__error(MP_EINVAL, "connection from invalid fd %d", fd);
        return NULL;
    }
    mp_connection *c = mp__calloc(1, sizeof *c);
    if (!c) {
        mp__close(fd);
        return NULL;
    }
    struct stat st;
    c->fd = fd;
    c->readable = readable;
    c->writable = writable;
    c->is_socket = fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode);
    int domain = 0;
    socklen_t dlen = sizeof domain;
    c->is_unix = c->is_socket && getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &dlen) == 0 &&
                 domain == AF_UNIX;
    return c;
}

int mp_pipe(bool duplex, mp_connection **a, mp_connection **b)
{
    int fds[2];
    if (!a || !b)
        return mp__error(MP_EINVAL, "mp_pipe: NULL output pointer");
    *a = *b = NULL;
    if (duplex) {
        if (mp__fd_high2(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds), fds) < 0)
            return mp__errno("socketpair");
    } else if (mp__pipe(fds) < 0) {
        return mp__errno("pipe");
    }
    *a = mp_connection_from_fd(fds[0], true, duplex);
    *b = mp_connection_from_fd(fds[1], duplex, true);
    if (!*a || !*b) {
        if (!*a)
            mp__close(fds[0]);
        if (!*b)
            mp__close(fds[1]);
        mp_connection_free(*a);
        mp_connection_free(*b);
        *a = *b = NULL;
        return -ENOMEM;
    }
    return 0;
}

/* ---- checks ------------------------------------------------------------------------ */

static int check_usable(const mp_connection *c, bool sending)
{
    if (!c)
        return mp__error(MP_EINVAL, "connection is NULL");
    if (c->closed)
        return mp__error(MP_ECLOSED, "connection is closed");
    if (sending && !c->writable)
        return mp__error(MP_ESTATE, "connection is read-only: this end of a one-way pipe only receives");
    if (!sending && !c->readable)
        return mp__error(MP_ESTATE, "connection is write-only: this end of a one-way pipe only sends");
    return 0;
}

/* ---- sending -------------------------------------------------------------------------- */

/* One writev/sendmsg (with fds, on a socket). Pipes get SIGPIPE blocked for this thread
 * during the write; a SIGPIPE we caused is consumed so it is not delivered once unblocked. */
static ssize_t write_some(mp_connection *c, struct iovec *iov, int iovcnt, const int *fds,
                          size_t nfds)
{
    if (c->is_socket) {
        ssize_t r = mp__sendmsg_fds_once(c->fd, iov, iovcnt, fds, nfds, 0);
        if (r < 0)
            errno = (int)-r;
        return r < 0 ? -1 : r;
    }
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pending);
    bool was_pending = sigismember(&pending, SIGPIPE);
    ssize_t r = writev(c->fd, iov, iovcnt);
    int saved = errno;
    if (r < 0 && saved == EPIPE && !was_pending) {
        struct timespec zero = {0, 0};
        sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = saved;
    return r;
}

static void iov_advance(struct iovec **iov, int *iovcnt, size_t n)
{
    while (*iovcnt > 0 && n >= (*iov)->iov_len) {
        n -= (*iov)->iov_len;
        (*iov)++;
        (*iovcnt)--;
    }
    if (*iovcnt > 0) {
        (*iov)->iov_base = (char *)(*iov)->iov_base + n;
        (*iov)->iov_len -= n;
    }
}

/* Before the blocking read or write that starts a message: the deferred signal handlers
 * run, and a signal while the peer is silent (or not reading) wakes the wait
 * (internal/iwait.h). Only in a program that installed a handler through the library:
 * elsewhere it would cost a poll per message for nothing. Once a message has started it
 * is always finished (the stream stays framed): handlers then run only on EINTR.
 * 0 or a code. */
static int await_ready(mp_connection *c, short events)
{
    if (!mp__signal_in_use())
        return 0;
    const char *what = events == POLLIN ? "receive" : "send";
    int r = mp__iwait_poll1(c->fd, events, -1);
    if (r == MP_EINTERRUPTED)
        return mp__error(r, "%s interrupted by a signal", what);
    return r < 0 ? mp__error(r, "%s on connection fd %d: poll", what, c->fd) : 0;
}

/* Write every byte; fds go with the first byte written. A signal before the first byte may
 * interrupt the call; once a message has started it is always finished so the stream stays
 * framed. */
static int write_all(mp_connection *c, struct iovec *iov, int iovcnt, const int *fds,
                     size_t nfds)
{
    bool started = false;
    while (iovcnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            iovcnt--;
            continue;
        }
        ssize_t r = write_some(c, iov, iovcnt, started ? NULL : fds, started ? 0 : nfds);
        if (r < 0) {
            if (errno == EINTR) {
                int code = mp__signal_dispatch_pending();
                if (code < 0 && !started)
                    return mp__error(code, "send interrupted by a signal");
                continue;
            }
            return mp__errno("send on connection fd %d", c->fd);
        }
        started = true;
        iov_advance(&iov, &iovcnt, (size_t)r);
    }
    return 0;
}

/* One message: the length header then the bytes, fds riding on the header's first byte. */
static int send_message(mp_connection *c, const void *buf, size_t size, const int *fds,
                        size_t nfds)
{
    unsigned char hdr[12];
    size_t hlen;
    if (size > 0x7fffffff) {
        uint32_t m1 = htonl(0xffffffffu);
        uint64_t n = htobe64((uint64_t)size);
        memcpy(hdr, &m1, 4);
        memcpy(hdr + 4, &n, 8);
        hlen = 12;
    } else {
        uint32_t n = htonl((uint32_t)size);
        memcpy(hdr, &n, 4);
        hlen = 4;
    }
    struct iovec iov[2] = {{hdr, hlen}, {(void *)buf, size}};
    int code = await_ready(c, POLLOUT);
    return code < 0 ? code : write_all(c, iov, 2, fds, nfds);
}

int mp_connection_send_bytes(mp_connection *c, const void *buf, size_t offset, size_t size)
{
    int code = check_usable(c, true);
    if (code < 0)
        return code;
    if (!buf && size > 0)
        return mp__error(MP_EINVAL, "send_bytes: NULL buffer");
    return send_message(c, (const char *)buf + offset, size, NULL, 0);
}

int mp_connection_send(mp_connection *c, const mp_value *v)
{
    int code = check_usable(c, true);
    if (code < 0)
        return code;
    char *buf = NULL;
    size_t len = 0, nfds = 0;
    if (c->codec == MP_CODEC_PICKLE) {
        code = mp_value_pickle(v, 0, &buf, &len);
        if (code == 0)
            code = send_message(c, buf, len, NULL, 0);
        mp_free(buf);
        return code;
    }
    int fds[MP_CONNECTION_MAX_FDS];
    /* Handles without fds (manager proxies) travel on any connection. */
    code = mp_value_encode(v, &buf, &len, fds, c->is_unix ? MP_CONNECTION_MAX_FDS : 0, &nfds);
    if (code == -E2BIG && !c->is_unix)
        return mp__error(MP_EUNSUPPORTED, "a value holding handles with fds needs a Unix-socket "
                                          "connection (its fds travel by SCM_RIGHTS); this one "
                                          "is %s",
                         c->is_socket ? "not a Unix socket (TCP)" : "a one-way pipe");
    if (code == -E2BIG)
        return mp__error(code, "a value sent over a connection carries at most %d fds",
                         MP_CONNECTION_MAX_FDS);
    if (code < 0)
        return code;
    /* The fds are the objects' own, borrowed: sendmsg gives the peer its copies. */
    code = send_message(c, buf, len, fds, nfds);
    mp_free(buf);
    return code;
}

/* ---- receiving ------------------------------------------------------------------------ */

/* Read exactly n bytes. `started`: bytes of this message were already read, so neither a
 * signal nor EOF may leave the stream half-read silently. */
static int read_exact(mp_connection *c, void *buf, size_t n, bool started)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = read(c->fd, p, n > 0x40000000 ? 0x40000000 : n);
        if (r > 0) {
            p += r;
            n -= (size_t)r;
            started = true;
            continue;
        }
        if (r == 0) {
            if (!started)
                return mp__error(MP_EEOF, "connection fd %d: the other end is closed", c->fd);
            return mp__error(MP_EPROTO, "connection fd %d: end of file in the middle of a message",
                             c->fd);
        }
        if (errno == EINTR) {
            int code = mp__signal_dispatch_pending();
            if (code < 0 && !started)
                return mp__error(code, "receive interrupted by a signal");
            continue;
        }
        return mp__errno("receive on connection fd %d", c->fd);
    }
    return 0;
}

/* fds that arrived with a message, for a value receive. */
typedef struct rx_fds {
    int fds[MP_CONNECTION_MAX_FDS];
    size_t n;
    bool truncated; /* the peer sent more than fit (MSG_CTRUNC): the extra were dropped */
} rx_fds;

static void rx_close(rx_fds *rx)
{
    for (size_t i = 0; i < rx->n; i++)
        mp__close(rx->fds[i]);
    rx->n = 0;
}

/* Read n bytes starting a message, taking the fds that ride on its first byte. */
static int read_first(mp_connection *c, void *buf, size_t n, rx_fds *rx)
{
    for (;;) {
        struct iovec iov = {buf, n};
        int mflags = 0;
        ssize_t r = mp__recvmsg_fds_once(c->fd, &iov, 1, rx->fds, MP_CONNECTION_MAX_FDS, &rx->n,
                                         0, &mflags);
        if (r > 0) {
            rx->truncated |= (mflags & MSG_CTRUNC) != 0;
            return (size_t)r == n ? 0 : read_exact(c, (char *)buf + r, n - (size_t)r, true);
        }
        if (r == 0)
            return mp__error(MP_EEOF, "connection fd %d: the other end is closed", c->fd);
        if (r != -EINTR)
            return mp__error((int)r, "receive on connection fd %d", c->fd);
        int code = mp__signal_dispatch_pending();
        if (code < 0)
            return mp__error(code, "receive interrupted by a signal");
    }
}

/* The next message's length (and, with rx, the fds sent with it). */
static int read_header(mp_connection *c, uint64_t *size, rx_fds *rx)
{
    uint32_t n;
    int code = await_ready(c, POLLIN);
    if (code < 0)
        return code;
    code = rx ? read_first(c, &n, 4, rx) : read_exact(c, &n, 4, false);
    if (code < 0)
        return code;
    int32_t s = (int32_t)ntohl(n);
    if (s >= 0) {
        *size = (uint64_t)s;
        return 0;
    }
    if (s != -1)
        return mp__error(MP_EPROTO, "bad message length %d", s);
    uint64_t big;
    code = read_exact(c, &big, 8, true);
    if (code < 0)
        return code;
    *size = be64toh(big);
    return 0;
}

/* Python closes the connection when a message exceeds maxlength: the stream cannot be
 * resynchronised without reading the whole message anyway. */
static int bad_length(mp_connection *c, uint64_t size, size_t maxlength)
{
    mp_connection_close(c);
    return mp__error(MP_EPROTO, "bad message length: %llu bytes > maxlength %zu (connection closed)",
                     (unsigned long long)size, maxlength);
}

/* Past the connection's maximum: the body is not read (a hostile peer may announce 8 GB
 * and send nothing, or send it all), so the stream cannot be resynchronised: closed. */
static int too_big(mp_connection *c, uint64_t size)
{
    size_t max = max_message(c);
    mp_connection_close(c);
    return mp__error(-EMSGSIZE, "the peer announced a message of %llu bytes, over this "
                                "connection's maximum of %zu bytes "
                                "(mp_connection_set_max_message_size; connection closed)",
                     (unsigned long long)size, max);
}

static int read_body(mp_connection *c, uint64_t size, void **buf)
{
    if (size > (uint64_t)SIZE_MAX / 2)
        return mp__error(MP_EPROTO, "message of %llu bytes is too large", (unsigned long long)size);
    char *p = malloc(size ? (size_t)size : 1);
    if (!p)
        return mp__error(-ENOMEM, "allocating a %llu-byte message", (unsigned long long)size);
    int code = read_exact(c, p, (size_t)size, true);
    if (code < 0) {
        free(p);
        return code;
    }
    *buf = p;
    return 0;
}

/* recv_bytes; with rx (a Unix socket), also the fds that came with the message. */
static int recv_message(mp_connection *c, size_t maxlength, void **buf, size_t *len, rx_fds *rx)
{
    int code = check_usable(c, false);
    if (code < 0)
        return code;
    *buf = NULL;
    *len = 0;
    if (c->has_pending) {
        if (maxlength && c->pending_len > maxlength)
            return bad_length(c, c->pending_len, maxlength);
        return mp_connection_take_pending(c, buf, len);
    }
    uint64_t size;
    code = read_header(c, &size, rx);
    if (code < 0)
        return code;
    if (maxlength && size > maxlength)
        return bad_length(c, size, maxlength);
    if (!maxlength && size > max_message(c))
        return too_big(c, size);
    code = read_body(c, size, buf);
    if (code == 0)
        *len = (size_t)size;
    return code;
}

int mp_connection_recv_bytes(mp_connection *c, size_t maxlength, void **buf, size_t *len)
{
    return recv_message(c, maxlength, buf, len, NULL);
}

static int too_short(size_t size, size_t room)
{
    return mp__error(MP_ETOOSHORT,
                     "message of %zu bytes does not fit the %zu bytes available (kept: receive "
                     "again or mp_connection_take_pending)",
                     size, room);
}

int mp_connection_recv_bytes_into(mp_connection *c, void *buf, size_t bufsize, size_t offset,
                                  size_t *len)
{
    int code = check_usable(c, false);
    if (code < 0)
        return code;
    if (offset > bufsize || (!buf && bufsize > 0))
        return mp__error(MP_EINVAL, "recv_bytes_into: offset %zu beyond a %zu-byte buffer", offset,
                         bufsize);
    size_t room = bufsize - offset;
    if (c->has_pending) {
        *len = c->pending_len;
        if (c->pending_len > room)
            return too_short(c->pending_len, room);
        if (c->pending_len)
            memcpy((char *)buf + offset, c->pending, c->pending_len);
        free(c->pending);
        c->pending = NULL;
        c->has_pending = false;
        return 0;
    }
    uint64_t size;
    code = read_header(c, &size, NULL);
    if (code < 0)
        return code;
    if (size <= room) {
        *len = (size_t)size;
        return read_exact(c, (char *)buf + offset, (size_t)size, true);
    }
    if (size > max_message(c))
        return too_big(c, size);
    code = read_body(c, size, &c->pending);
    if (code < 0)
        return code;
    c->pending_len = (size_t)size;
    c->has_pending = true;
    *len = (size_t)size;
    return too_short((size_t)size, room);
}

int mp_connection_take_pending(mp_connection *c, void **buf, size_t *len)
{
    if (!c || !c->has_pending)
        return mp__error(MP_ESTATE, "no pending message");
    *buf = c->pending;
    *len = c->pending_len;
    c->pending = NULL;
    c->has_pending = false;
    return 0;
}

int mp_connection_recv(mp_connection *c, mp_value **out)
{
    void *buf;
    size_t len;
    if (!out)
        return mp__error(MP_EINVAL, "mp_connection_recv: NULL output pointer");
    *out = NULL;
    rx_fds rx = {.n = 0, .truncated = false};
    bool pickle = c && c->codec == MP_CODEC_PICKLE;
    bool with_fds = c && c->is_unix && !pickle; /* a pickle carries no fds (dropped) */
    int code = recv_message(c, 0, &buf, &len, with_fds ? &rx : NULL);
    if (code < 0) {
        rx_close(&rx);
        return code;
    }
    if (rx.truncated) {
        rx_close(&rx);
        free(buf);
        return mp__error(MP_EPROTO, "a message came with more than %d fds (all were closed)",
                         MP_CONNECTION_MAX_FDS);
    }
    if (pickle)
        code = mp_value_unpickle(buf, len, out);
    else
        code = mp_value_decode(buf, len, rx.fds, rx.n, out); /* adopts the fds */
    free(buf);
    return code;
}

int mp_connection_poll(mp_connection *c, double timeout)
{
    int code = check_usable(c, false);
    if (code < 0)
        return code;
    if (c->has_pending)
        return 1;
    int r = mp__iwait_poll1(c->fd, POLLIN, mp__deadline(timeout));
    if (r < 0)
        return mp__error(r, "poll on connection fd %d", c->fd);
    if (r & POLLNVAL)
        return mp__error(-EBADF, "poll on connection fd %d", c->fd);
    return r > 0 ? 1 : 0;
}

/* ---- state ---------------------------------------------------------------------------- */

int mp_connection_fileno(const mp_connection *c) { return c && !c->closed ? c->fd : -1; }
bool mp_connection_readable(const mp_connection *c) { return c && c->readable; }
bool mp_connection_writable(const mp_connection *c) { return c && c->writable; }
bool mp_connection_closed(const mp_connection *c) { return !c || c->closed; }

int mp_connection_close(mp_connection *c)
{
    if (!c || c->closed)
        return 0;
    c->closed = true;
    free(c->pending);
    c->pending = NULL;
    c->has_pending = false;
    int code = mp__close(c->fd);
    c->fd = -1;
    return code < 0 ? mp__error(code, "close connection") : 0;
}

void mp_connection_free(mp_connection *c)
{
    if (!c)
        return;
    mp_connection_close(c);
    free(c);
}

/* ---- the "connection" kind ---------------------------------------------------------------
 * Exported as one fd plus a flags byte and any pending message. */

enum { EXP_READABLE = 1, EXP_WRITABLE = 2, EXP_PENDING = 4, EXP_MAXSIZE = 8, EXP_PICKLE = 16 };

static int conn_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    mp_connection *c = obj;
    if (c->closed)
        return mp__error(MP_ECLOSED, "cannot pass a closed connection");
    size_t head = 1 + (c->max_msg ? 8 : 0);
    size_t n = head + (c->has_pending ? c->pending_len : 0);
    unsigned char *d = malloc(n);
    if (!d)
        return mp__error(-ENOMEM, "exporting a connection");
    d[0] = (unsigned char)((c->readable ? EXP_READABLE : 0) | (c->writable ? EXP_WRITABLE : 0) |
                           (c->has_pending ? EXP_PENDING : 0) | (c->max_msg ? EXP_MAXSIZE : 0) |
                           (c->codec == MP_CODEC_PICKLE ? EXP_PICKLE : 0));
    if (c->max_msg) {
        uint64_t m = htobe64((uint64_t)c->max_msg);
        memcpy(d + 1, &m, 8);
    }
    if (c->has_pending && c->pending_len)
        memcpy(d + head, c->pending, c->pending_len);
    *data = d;
    *len = n;
    fds[0] = c->fd;
    *nfds = 1;
    return 0;
}

static int conn_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    const unsigned char *d = data;
    size_t head = len >= 1 && (d[0] & EXP_MAXSIZE) ? 9 : 1;
    if (len < head || nfds != 1) {
        for (size_t i = 0; i < nfds; i++)
            mp__close(fds[i]);
        return mp__error(MP_EPROTO, "bad connection handle (%zu bytes, %zu fds)", len, nfds);
    }
    mp_connection *c = mp_connection_from_fd(fds[0], d[0] & EXP_READABLE, d[0] & EXP_WRITABLE);
    if (!c)
        return mp_last_error_code();
    if (d[0] & EXP_PICKLE)
        c->codec = MP_CODEC_PICKLE;
    if (d[0] & EXP_MAXSIZE) {
        uint64_t m;
        memcpy(&m, d + 1, 8);
        c->max_msg = (size_t)be64toh(m);
    }
    if (d[0] & EXP_PENDING) {
        c->pending = malloc(len > head ? len - head : 1);
        if (!c->pending) {
            mp_connection_free(c);
            return mp__error(-ENOMEM, "importing a connection");
        }
        memcpy(c->pending, d + head, len - head);
        c->pending_len = len - head;
        c->has_pending = true;
    }
    *obj = c;
    return 0;
}

static void conn_release(void *obj) { mp_connection_free(obj); }

const mp_kind mp_kind_connection = {
    .name = "connection",
    .export_obj = conn_export,
    .import_obj = conn_import,
    .release_obj = conn_release,
};

__attribute__((constructor(200))) static void conn_register(void)
{
    mp_kind_register(&mp_kind_connection);
}
