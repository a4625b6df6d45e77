/* Framing of the bootstrap sockets and the child's reply.
 *
 * Everything on a bootstrap socket is a frame (proc.h): u32 length, the start's secret
 * when the frame carries one (a spawn child's launch frame, trust.c), then a value
 * encoded with the library's codec: the launch record (launch.c), the child's reply,
 * the forkserver's exit status. Fds ride on the frame's first bytes through the one
 * SCM_RIGHTS path (fdpass.c). The receiver treats what arrives as untrusted: lengths
 * are bounded and checked, the values decoded plain (no handles), fds beyond those
 * expected closed. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/value.h"
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
        return mp__error(-E2BIG, "a bootstrap frame of %zu bytes", len);
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
        return mp__error((int)r, "sending a bootstrap frame");
    if ((size_t)r < hlen) /* a stream socket may take part of the head only in theory */
        return mp__error(MP_EPROTO, "short write of a frame header");
    *sent = (size_t)r - hlen;
    return 0;
}

int mp__frame_finish(int sock, const void *buf, size_t len, size_t sent)
{
    int w = mp__write_full(sock, (const char *)buf + sent, len - sent);
    return w < 0 ? mp__error(w, "sending a bootstrap frame") : 0;
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
        return mp__error(MP_EEOF, "bootstrap socket closed inside a frame header");
    return code < 0 ? mp__error(code, "reading a frame header") : 0;
}

/* The head, once whole: the length of the payload in *body. */
static int head_check(const struct head *h, const mp__secret *secret, int mflags, size_t *body)
{
    size_t slen = secret ? MP__BOOT_SECRET_LEN : 0;
    if ((mflags & MSG_CTRUNC) || h->n > MP__FRAME_MAX || h->n < slen)
        return mp__error(MP_EPROTO, "malformed frame header");
    if (secret && !mp__secret_equal(secret, h->secret))
        return mp__error(MP_EPROTO, "the launch record does not carry this start's secret");
    *body = h->n - slen;
    return 0;
}

/* mp__frame_recv reading at most first bytes past the head in its first read (0: the
 * frame exactly, nothing after it). */
static int frame_read(int sock, const mp__secret *secret, mp__buf *out, int *fds,
                      size_t max_fds, size_t *nfds, size_t first)
{
    struct head h = {0};
    size_t hlen = HEAD_LEN(secret), body = 0, got = 0;
    _Static_assert(offsetof(struct head, secret) == sizeof(uint32_t), "head is packed");
    *nfds = 0;
    out->len = 0;
    if (mp__buf_reserve(out, first) < 0)
        return mp__error(-ENOMEM, "a frame buffer");
    struct iovec iov[2] = {{.iov_base = &h, .iov_len = hlen},
                           {.iov_base = out->data, .iov_len = first}};
    int mflags = 0;
    ssize_t r = mp__recvmsg_fds(sock, iov, first ? 2 : 1, fds, max_fds, nfds,
                                first ? 0 : MSG_WAITALL, &mflags);
    int code = 0;
    if (r < 0)
        code = mp__error((int)r, "receiving a bootstrap frame");
    else if (r == 0)
        code = mp__error(MP_EEOF, "bootstrap socket closed");
    else if ((size_t)r < hlen)
        code = head_rest(sock, &h, (size_t)r, hlen);
    else
        got = (size_t)r - hlen;
    if (!code)
        code = head_check(&h, secret, mflags, &body);
    if (!code && got > body) /* the sender waits for our reply after a frame */
        code = mp__error(MP_EPROTO, "bytes after a frame");
    if (!code && mp__buf_reserve(out, body) < 0)
        code = mp__error(-ENOMEM, "a frame of %zu bytes", body);
    if (!code && (code = mp__read_full(sock, out->data + got, body - got)) < 0)
        code = mp__error(code, code == MP_EEOF ? "bootstrap socket closed inside a frame"
                                               : "reading a bootstrap frame");
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

int mp__frame_recv(int sock, const mp__secret *secret, mp__buf *out, int *fds,
                   size_t max_fds, size_t *nfds)
{
    return frame_read(sock, secret, out, fds, max_fds, nfds, FRAME_FIRST);
}

/* ---- the child's reply ---------------------------------------------------------- */

/* The verdict is a frame holding the value {"code": int, "msg": str, "pid": int}, with
 * a forkserver child's pidfd (SCM_RIGHTS). */
int mp__reply_send(int sock, int code, const char *msg, pid_t pid, int pidfd)
{
    mp_value *v = mp_value_pack("{s:i, s:s, s:i}", "code", code, "msg", msg ? msg : "", "pid",
                                (int)pid);
    char *buf = NULL;
    size_t len = 0;
    int r = v ? mp_value_encode(v, &buf, &len, NULL, 0, NULL) : mp_last_error_code();
    mp_value_free(v);
    if (r == 0)
        r = mp__frame_send(sock, NULL, buf, len, &pidfd, pidfd >= 0 ? 1 : 0);
    free(buf);
    return r;
}

/* The reply frame, read exactly: on a forkserver child's socket the server's status
 * frame may follow at once (see forkserver.c). A child that died before replying
 * leaves only that status (an int), or EOF. */
static int reply_value(int sock, const char *what, mp_value **v, int *fd, size_t *nfd)
{
    mp__buf b = {0};
    int r = frame_read(sock, NULL, &b, fd, 1, nfd, 0);
    if (r == 0 && (r = mp__value_decode_plain(b.data, b.len, v)) < 0 && r != -ENOMEM)
        r = MP_EPROTO;
    mp__buf_free(&b);
    if (r == MP_EEOF || (r == 0 && mp_value_type(*v) == MP_INT))
        return mp__error(MP_EPROCESS, "%s exited before it started the target", what);
    if (r == MP_EPROTO)
        return mp__error(MP_EPROTO, "malformed bootstrap reply from %s", what);
    if (r < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mp__last_error_detail());
        return mp__error(r, "reading the bootstrap reply of %s: %s", what, msg);
    }
    return 0;
}

/* The reply's fields, looked up directly (it is read on every start). */
static int reply_fields(const mp_value *v, int *code, const char **msg, int *pid)
{
    const mp_value *c = mp_value_map_get_str(v, "code"), *m = mp_value_map_get_str(v, "msg"),
                   *p = mp_value_map_get_str(v, "pid");
    if (mp_value_type(c) != MP_INT || mp_value_type(m) != MP_STR || mp_value_type(p) != MP_INT ||
        mp_value_get_int(c) > 0 || mp_value_get_int(c) < INT32_MIN ||
        mp_value_get_int(p) < 0 || mp_value_get_int(p) > INT32_MAX)
        return MP_EPROTO;
    *code = (int)mp_value_get_int(c);
    *msg = mp_value_get_str(m, NULL);
    *pid = (int)mp_value_get_int(p);
    return 0;
}

int mp__reply_recv(int sock, const char *what, pid_t *pid, int *pidfd)
{
    mp_value *v = NULL;
    int fd = -1, c = 0, p = 0;
    size_t nfd = 0;
    const char *msg = NULL;
    int code = reply_value(sock, what, &v, &fd, &nfd);
    if (!code && reply_fields(v, &c, &msg, &p) < 0)
        code = mp__error(MP_EPROTO, "malformed bootstrap reply from %s", what);
    if (!code && c < 0)
        code = mp__error(c, "%s: %s", what, msg);
    mp_value_free(v);
    if (code < 0 || !pidfd) {
        mp__close(fd);
        fd = -1;
    }
    if (pid)
        *pid = code < 0 ? 0 : p;
    if (pidfd)
        *pidfd = fd;
    return code;
}
