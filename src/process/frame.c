/* Framing of the bootstrap sockets (a launch record and its fds; see proc.h) and the
 * child's reply. The receiver treats what arrives as untrusted: lengths are bounded and
 * checked, fds beyond the announced ones are closed. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "process/proc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* The head of a frame: its length and, when it carries one, the secret. */
struct head {
    uint32_t n;
    unsigned char secret[MP__BOOT_SECRET_LEN];
};
#define HEAD_LEN(secret) (sizeof(uint32_t) + ((secret) ? MP__BOOT_SECRET_LEN : 0))

int mp__frame_begin(int sock, const mp__secret *secret, const void *buf, size_t len,
                    const int *fds, size_t nfds, int flags, size_t *sent)
{
    size_t hlen = HEAD_LEN(secret), slen = hlen - sizeof(uint32_t);
    *sent = 0;
    if (len > MP__FRAME_MAX - slen)
        return mp__error(-E2BIG, "a launch record of %zu bytes", len);
    if (nfds > MP__PROC_MAX_FDS)
        return mp__error(-E2BIG, "%zu fds in one launch", nfds);
    struct head h = {.n = (uint32_t)(len + slen)};
    if (secret)
        memcpy(h.secret, secret->b, sizeof h.secret);
    /* Head and record in one call: one wake-up of the reader, not two. */
    struct iovec iov[3] = {{.iov_base = &h.n, .iov_len = sizeof h.n},
                           {.iov_base = h.secret, .iov_len = slen},
                           {.iov_base = (void *)buf, .iov_len = len}};
    ssize_t r = mp__sendmsg_fds(sock, iov, 3, fds, nfds, flags);
    if (r < 0)
        return mp__error((int)r, "sending a launch record");
    if ((size_t)r < hlen) /* a stream socket may take part of the head only in theory */
        return mp__error(MP_EPROTO, "short write of a launch header");
    *sent = (size_t)r - hlen;
    return 0;
}

int mp__frame_finish(int sock, const void *buf, size_t len, size_t sent)
{
    int w = mp__write_full(sock, (const char *)buf + sent, len - sent);
    return w < 0 ? mp__error(w, "sending a launch record") : 0;
}

int mp__frame_send(int sock, const mp__secret *secret, const void *buf, size_t len,
                   const int *fds, size_t nfds)
{
    size_t sent = 0;
    int r = mp__frame_begin(sock, secret, buf, len, fds, nfds, 0, &sent);
    return r < 0 ? r : mp__frame_finish(sock, buf, len, sent);
}

/* The first read brings the head, the fds and, for a usual record, all of it. */
#define FRAME_FIRST 4096

/* Read the rest of a head the first read split (rare). */
static int head_rest(int sock, struct head *h, size_t got, size_t hlen)
{
    int code = mp__read_full(sock, (char *)h + got, hlen - got);
    if (code == MP_EEOF)
        return mp__error(MP_EEOF, "launch channel closed inside a header");
    return code < 0 ? mp__error(code, "reading a launch header") : 0;
}

/* The head, once whole: the length of the payload in *body. */
static int head_check(const struct head *h, const mp__secret *secret, int mflags, size_t *body)
{
    size_t slen = secret ? MP__BOOT_SECRET_LEN : 0;
    if ((mflags & MSG_CTRUNC) || h->n > MP__FRAME_MAX || h->n < slen)
        return mp__error(MP_EPROTO, "malformed launch header");
    if (secret && !mp__secret_equal(secret, h->secret))
        return mp__error(MP_EPROTO, "the launch record does not carry this start's secret");
    *body = h->n - slen;
    return 0;
}

int mp__frame_recv(int sock, const mp__secret *secret, mp__buf *out, int *fds,
                   size_t max_fds, size_t *nfds)
{
    struct head h = {0};
    size_t hlen = HEAD_LEN(secret), body = 0, got = 0;
    _Static_assert(offsetof(struct head, secret) == sizeof(uint32_t), "head is packed");
    *nfds = 0;
    out->len = 0;
    if (mp__buf_reserve(out, FRAME_FIRST) < 0)
        return mp__error(-ENOMEM, "a launch record buffer");
    struct iovec iov[2] = {{.iov_base = &h, .iov_len = hlen},
                           {.iov_base = out->data, .iov_len = FRAME_FIRST}};
    int mflags = 0;
    ssize_t r = mp__recvmsg_fds(sock, iov, 2, fds, max_fds, nfds, 0, &mflags);
    int code = 0;
    if (r < 0)
        code = mp__error((int)r, "receiving a launch record");
    else if (r == 0)
        code = mp__error(MP_EEOF, "launch channel closed");
    else if ((size_t)r < hlen)
        code = head_rest(sock, &h, (size_t)r, hlen);
    else
        got = (size_t)r - hlen;
    if (!code)
        code = head_check(&h, secret, mflags, &body);
    if (!code && got > body) /* the sender waits for our reply after a frame */
        code = mp__error(MP_EPROTO, "bytes after a launch record");
    if (!code && mp__buf_reserve(out, body) < 0)
        code = mp__error(-ENOMEM, "a launch record of %zu bytes", body);
    if (!code && (code = mp__read_full(sock, out->data + got, body - got)) < 0)
        code = mp__error(code, code == MP_EEOF ? "launch channel closed inside a record"
                                               : "reading a launch record");
    if (code < 0) {
        for (size_t i = 0; i < *nfds; i++)
            mp__close(fds[i]);
        *nfds = 0;
        return code;
    }
    out->len = body;
    out->data[body] = '\0';
    return 0;
}

/* Reply: i32 code, u32 message length, i32 pid (0 if not told), then the message;
 * a forkserver child's pidfd rides along (SCM_RIGHTS). */
#define REPLY_HDR 12

int mp__reply_send(int sock, int code, const char *msg, pid_t pid, int pidfd)
{
    char buf[1024];
    int32_t c = code, p = pid;
    uint32_t n = (uint32_t)strnlen(msg ? msg : "", sizeof buf - REPLY_HDR);
    memcpy(buf, &c, 4);
    memcpy(buf + 4, &n, 4);
    memcpy(buf + 8, &p, 4);
    memcpy(buf + REPLY_HDR, msg ? msg : "", n);
    struct iovec iov = {.iov_base = buf, .iov_len = REPLY_HDR + (size_t)n};
    ssize_t r = mp__sendmsg_fds(sock, &iov, 1, &pidfd, pidfd >= 0 ? 1 : 0, 0);
    if (r < 0)
        return (int)r;
    return mp__write_full(sock, buf + r, iov.iov_len - (size_t)r);
}

int mp__reply_recv(int sock, const char *what, pid_t *pid, int *pidfd)
{
    char hdr[REPLY_HDR], msg[1024];
    struct iovec iov = {.iov_base = hdr, .iov_len = sizeof hdr};
    int fd = -1;
    size_t nfd = 0;
    ssize_t r = mp__recvmsg_fds(sock, &iov, 1, &fd, 1, &nfd, MSG_WAITALL, NULL);
    if (r < 0)
        return mp__error((int)r, "reading the bootstrap reply of %s", what);
    int code = 0;
    int32_t c = 0, p = 0;
    uint32_t n = 0;
    /* A forkserver child that died before replying leaves the server's 4-byte exit
     * status and EOF: short as well. */
    if (r < (ssize_t)sizeof hdr && (r = mp__read_full(sock, hdr + r, sizeof hdr - (size_t)r)) < 0)
        code = r == MP_EEOF ? mp__error(MP_EPROCESS, "%s exited before it started the target",
                                        what)
                            : mp__error((int)r, "reading the bootstrap reply of %s", what);
    if (!code) {
        memcpy(&c, hdr, 4);
        memcpy(&n, hdr + 4, 4);
        memcpy(&p, hdr + 8, 4);
        if (n >= sizeof msg || c > 0)
            code = mp__error(MP_EPROTO, "malformed bootstrap reply from %s", what);
    }
    if (!code && (code = mp__read_full(sock, msg, n)) < 0)
        code = mp__error(code, "reading the bootstrap reply of %s", what);
    if (!code && c < 0) {
        msg[n] = '\0';
        code = mp__error(c, "%s: %s", what, msg);
    }
    if (code < 0 || !pidfd) {
        mp__close(fd);
        fd = -1;
    }
    if (pid)
        *pid = p;
    if (pidfd)
        *pidfd = fd;
    return code;
}
