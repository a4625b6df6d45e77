/* Framed messages over a worker's Unix stream socket, with SCM_RIGHTS fds.
 *
 * DESIGN: one socket pair per worker. The parent's end is nonblocking and serviced by
 * the result thread alone (mp__chan_send_some + mp__rx_fill/next); the worker's end is
 * blocking and used by the worker's one thread. fds sent with a message ride with its
 * first byte; the kernel never merges a read across two sendmsg calls that carry
 * different fds, so the receiver keeps a FIFO of the fds in arrival order and a message
 * takes its `nfds` from the front once the whole message is buffered. A message's body
 * is read where it lies in the buffer (no copy: a map's result message is megabytes),
 * so each reader handles a message before it fills the buffer again. */
#define _GNU_SOURCE
#include "internal/buf.h"
#include "internal/common.h"
#include "pool/pool.h"
#include "process/proc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

#define RX_CHUNK (256 * 1024)
/* A message bigger than this is refused as malformed (a hostile peer cannot make us
 * allocate without bound). */
#define MSG_MAX ((uint64_t)1 << 36)

/* Room for `more` bytes after dropping what was taken, when that is all of it or more
 * than half the buffer (so a message is moved at most about once). */
static int rx_reserve(mp__rx *rx, size_t more)
{
    if (rx->off && (rx->off == rx->b.len || rx->off > rx->b.cap / 2)) {
        mp__buf_consume(&rx->b, rx->off);
        rx->off = 0;
    }
    return mp__buf_reserve(&rx->b, more);
}

static void rx_push_fds(mp__rx *rx, const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (rx->nfds == rx->fds_cap) {
            size_t cap = rx->fds_cap ? rx->fds_cap * 2 : 16;
            int *f = realloc(rx->fds, cap * sizeof *f);
            if (!f) {
                mp__close(fds[i]);
                continue;
            }
            rx->fds = f;
            rx->fds_cap = cap;
        }
        rx->fds[rx->nfds++] = fds[i];
    }
}

int mp__rx_fill(mp__rx *rx, int sock, bool nonblock)
{
    /* Large messages: read what the header announced in one go when we can. */
    size_t want = RX_CHUNK;
    if (rx->b.len - rx->off >= sizeof(mp__msg_hdr)) {
        mp__msg_hdr h;
        memcpy(&h, rx->b.data + rx->off, sizeof h);
        size_t need = sizeof h + (h.len < MSG_MAX ? (size_t)h.len : 0);
        if (need > rx->b.len - rx->off && need - (rx->b.len - rx->off) > want)
            want = need - (rx->b.len - rx->off);
    }
    int r = rx_reserve(rx, want);
    if (r < 0)
        return r;
    /* all the room but the buffer's NUL */
    struct iovec iov = {.iov_base = rx->b.data + rx->b.len, .iov_len = rx->b.cap - rx->b.len - 1};
    int fds[MP__POOL_MAX_FDS];
    size_t nfds = 0;
    ssize_t n = mp__recvmsg_fds(sock, &iov, 1, fds, MP__POOL_MAX_FDS, &nfds,
                                nonblock ? MSG_DONTWAIT : 0, NULL);
    if (n < 0)
        return n == -EWOULDBLOCK ? -EAGAIN : (int)n;
    rx_push_fds(rx, fds, nfds);
    rx->short_read = (size_t)n < iov.iov_len;
    if (n == 0)
        return 0;
    rx->b.len += (size_t)n;
    rx->b.data[rx->b.len] = '\0';
    return 1;
}

int mp__rx_next(mp__rx *rx, mp__msg *msg)
{
    size_t have = rx->b.len - rx->off;
    if (have < sizeof(mp__msg_hdr))
        return 0;
    mp__msg_hdr h;
    memcpy(&h, rx->b.data + rx->off, sizeof h);
    if (h.len >= MSG_MAX || h.nfds > MP__POOL_MAX_FDS)
        return mp__error(MP_EPROTO, "pool: malformed message header (%llu bytes, %u fds)",
                         (unsigned long long)h.len, h.nfds);
    if (have - sizeof h < h.len)
        return 0;
    if (h.nfds > rx->nfds)
        return mp__error(MP_EPROTO, "pool: a message announced %u fds, %zu arrived", h.nfds,
                         rx->nfds);
    msg->h = h;
    msg->body = rx->b.data + rx->off + sizeof h; /* borrowed: see mp__msg */
    rx->off += sizeof h + h.len;
    msg->nfds = h.nfds;
    if (h.nfds) { /* rx->fds is NULL until fds first arrive */
        memcpy(msg->fds, rx->fds, h.nfds * sizeof(int));
        memmove(rx->fds, rx->fds + h.nfds, (rx->nfds - h.nfds) * sizeof(int));
        rx->nfds -= h.nfds;
    }
    return 1;
}

void mp__rx_free(mp__rx *rx)
{
    mp__buf_free(&rx->b);
    for (size_t i = 0; i < rx->nfds; i++)
        mp__close(rx->fds[i]);
    free(rx->fds);
    memset(rx, 0, sizeof *rx);
}

void mp__msg_clear(mp__msg *msg)
{
    msg->body = NULL; /* the reading buffer's */
    for (size_t i = 0; i < msg->nfds; i++)
        if (msg->fds[i] >= 0)
            mp__close(msg->fds[i]);
    msg->nfds = 0;
}

int mp__chan_send(int sock, const mp__msg_hdr *h, const void *body, const int *fds)
{
    struct iovec iov[2] = {{.iov_base = (void *)h, .iov_len = sizeof *h},
                           {.iov_base = (void *)body, .iov_len = (size_t)h->len}};
    size_t total = sizeof *h + (size_t)h->len, sent = 0;
    bool first = true;
    while (sent < total) {
        struct iovec v[2];
        int nv = 0;
        size_t skip = sent;
        for (int i = 0; i < 2; i++) {
            if (skip >= iov[i].iov_len) {
                skip -= iov[i].iov_len;
                continue;
            }
            v[nv].iov_base = (char *)iov[i].iov_base + skip;
            v[nv].iov_len = iov[i].iov_len - skip;
            skip = 0;
            nv++;
        }
        ssize_t r = mp__sendmsg_fds(sock, v, nv, first ? fds : NULL, first ? h->nfds : 0, 0);
        if (r < 0)
            return (int)r;
        first = false;
        sent += (size_t)r;
    }
    return 0;
}

int mp__chan_send_some(int sock, const void *buf, size_t total, size_t *off, const int *fds,
                       size_t nfds)
{
    while (*off < total) {
        struct iovec v = {.iov_base = (char *)buf + *off, .iov_len = total - *off};
        bool first = *off == 0;
        ssize_t r = mp__sendmsg_fds(sock, &v, 1, first ? fds : NULL, first ? nfds : 0,
                                    MSG_DONTWAIT);
        if (r == -EAGAIN || r == -EWOULDBLOCK)
            return 0;
        if (r < 0)
            return (int)r;
        *off += (size_t)r;
    }
    return 1;
}

char *mp__rx_tail(mp__rx *rx, size_t n)
{
    return rx_reserve(rx, n) < 0 ? NULL : rx->b.data + rx->b.len;
}

void mp__rx_commit(mp__rx *rx, size_t n)
{
    rx->b.len += n;
    rx->b.data[rx->b.len] = '\0';
}

int mp__rx_push(mp__rx *rx, const void *data, size_t n)
{
    int r = rx_reserve(rx, n);
    if (r < 0)
        return r;
    memcpy(rx->b.data + rx->b.len, data, n);
    rx->b.len += n;
    rx->b.data[rx->b.len] = '\0';
    return 0;
}
