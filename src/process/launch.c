/* The launch record a spawn or forkserver child receives, and the framing used on the
 * bootstrap sockets. The record is little more than fixed fields and length-prefixed
 * strings; the child treats it as untrusted input (bounds-checked parsing). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "process/proc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LAUNCH_MAGIC 0x4d504c31u /* "MPL1" */
#define FRAME_MAX (1u << 30)

/* ---- packing ------------------------------------------------------------------- */

struct out {
    char *buf;
    size_t len, cap;
    int err;
};

static void put(struct out *o, const void *p, size_t n)
{
    if (o->err)
        return;
    if (o->len + n > o->cap) {
        size_t cap = o->cap ? o->cap * 2 : 256;
        while (cap < o->len + n)
            cap *= 2;
        char *b = realloc(o->buf, cap);
        if (!b) {
            o->err = -ENOMEM;
            return;
        }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, p, n);
    o->len += n;
}

static void put_u32(struct out *o, uint32_t v) { put(o, &v, sizeof v); }

static void put_bytes(struct out *o, const void *p, size_t n)
{
    put_u32(o, (uint32_t)n);
    put(o, p, n);
}

static void put_str(struct out *o, const char *s) { put_bytes(o, s, s ? strlen(s) : 0); }

int mp__launch_pack(const mp__launch *l, char **buf, size_t *len)
{
    struct out o = {0};
    put_u32(&o, LAUNCH_MAGIC);
    put_u32(&o, l->method);
    put_u32(&o, l->daemon);
    put_u32(&o, (uint32_t)l->log_level);
    put_u32(&o, (uint32_t)l->log_on);
    put_u32(&o, (uint32_t)l->parent_pid);
    put_u32(&o, l->nfds);
    put(&o, &l->loc.offset, sizeof l->loc.offset);
    put_str(&o, l->loc.path);
    put_str(&o, l->loc.sym);
    put_str(&o, l->name);
    put_str(&o, l->identity);
    put_bytes(&o, l->args, l->args_len);
    if (o.err) {
        free(o.buf);
        return mp__error(o.err, "packing a launch record");
    }
    *buf = o.buf;
    *len = o.len;
    return 0;
}

/* ---- parsing ------------------------------------------------------------------- */

struct in {
    const char *p;
    size_t left;
    bool bad;
};

static void get(struct in *in, void *dst, size_t n)
{
    if (in->bad || n > in->left) {
        in->bad = true;
        memset(dst, 0, n);
        return;
    }
    memcpy(dst, in->p, n);
    in->p += n;
    in->left -= n;
}

static uint32_t get_u32(struct in *in)
{
    uint32_t v;
    get(in, &v, sizeof v);
    return v;
}

/* A length-prefixed field copied into a fresh NUL-terminated buffer. */
static char *get_dup(struct in *in, size_t *len)
{
    uint32_t n = get_u32(in);
    if (in->bad || n > in->left) {
        in->bad = true;
        return NULL;
    }
    char *s = malloc((size_t)n + 1);
    if (!s) {
        in->bad = true;
        return NULL;
    }
    memcpy(s, in->p, n);
    s[n] = '\0';
    in->p += n;
    in->left -= n;
    if (len)
        *len = n;
    return s;
}

static void get_fixed(struct in *in, char *dst, size_t cap)
{
    size_t n = 0;
    char *s = get_dup(in, &n);
    if (!s || n >= cap)
        in->bad = true;
    else
        memcpy(dst, s, n + 1);
    free(s);
}

int mp__launch_unpack(const char *buf, size_t len, mp__launch *l)
{
    struct in in = {buf, len, false};
    memset(l, 0, sizeof *l);
    if (get_u32(&in) != LAUNCH_MAGIC)
        return mp__error(MP_EPROTO, "not a launch record");
    l->method = get_u32(&in);
    l->daemon = get_u32(&in);
    l->log_level = (int32_t)get_u32(&in);
    l->log_on = (int32_t)get_u32(&in);
    l->parent_pid = (int32_t)get_u32(&in);
    l->nfds = get_u32(&in);
    get(&in, &l->loc.offset, sizeof l->loc.offset);
    get_fixed(&in, l->loc.path, sizeof l->loc.path);
    get_fixed(&in, l->loc.sym, sizeof l->loc.sym);
    l->name = get_dup(&in, NULL);
    l->identity = get_dup(&in, NULL);
    l->args = get_dup(&in, &l->args_len);
    if (in.bad) {
        mp__launch_clear(l);
        return mp__error(MP_EPROTO, "truncated launch record");
    }
    return 0;
}

void mp__launch_clear(mp__launch *l)
{
    free(l->name);
    free(l->identity);
    free(l->args);
    l->name = l->identity = l->args = NULL;
}

/* ---- framing ------------------------------------------------------------------- */

int mp__frame_send(int sock, const void *buf, size_t len, const int *fds, size_t nfds)
{
    if (len > FRAME_MAX)
        return mp__error(-E2BIG, "a launch record of %zu bytes", len);
    uint32_t n = (uint32_t)len;
    struct iovec iov = {.iov_base = &n, .iov_len = sizeof n};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MP__PROC_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > MP__PROC_MAX_FDS)
        return mp__error(-E2BIG, "%zu fds in one launch", nfds);
    if (nfds) {
        memset(&u, 0, sizeof u);
        msg.msg_control = u.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t r;
    do
        r = sendmsg(sock, &msg, MSG_NOSIGNAL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return mp__errno("sending a launch record");
    if (r != (ssize_t)sizeof n) /* a stream socket may take part of 4 bytes only in theory */
        return mp__error(MP_EPROTO, "short write of a launch header");
    int w = mp__write_full(sock, buf, len);
    return w < 0 ? mp__error(w, "sending a launch record") : 0;
}

static void close_all(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mp__close(fds[i]);
}

int mp__frame_recv(int sock, char **buf, size_t *len, int *fds, size_t max_fds, size_t *nfds)
{
    uint32_t n = 0;
    struct iovec iov = {.iov_base = &n, .iov_len = sizeof n};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MP__PROC_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    *nfds = 0;
    ssize_t r;
    do
        r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return mp__errno("receiving a launch record");
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (*nfds < max_fds)
                fds[(*nfds)++] = fd;
            else
                mp__close(fd);
        }
    }
    int code = 0;
    if (r != (ssize_t)sizeof n)
        code = r == 0 ? mp__error(MP_EEOF, "launch channel closed")
                      : mp__error(MP_EPROTO, "short launch header");
    else if ((msg.msg_flags & MSG_CTRUNC) || n > FRAME_MAX)
        code = mp__error(MP_EPROTO, "malformed launch header");
    char *b = code ? NULL : malloc((size_t)n + 1);
    if (!code && !b)
        code = mp__error(-ENOMEM, "a launch record of %u bytes", n);
    if (!code && (code = mp__read_full(sock, b, n)) < 0)
        code = mp__error(code, "reading a launch record");
    if (code < 0) {
        free(b);
        close_all(fds, *nfds);
        *nfds = 0;
        return code;
    }
    *buf = b;
    *len = n;
    return 0;
}

int mp__reply_send(int sock, int code, const char *msg)
{
    char buf[1024];
    int32_t c = code;
    uint32_t n = (uint32_t)strnlen(msg ? msg : "", sizeof buf - 8);
    memcpy(buf, &c, 4);
    memcpy(buf + 4, &n, 4);
    memcpy(buf + 8, msg ? msg : "", n);
    return mp__write_full(sock, buf, 8 + (size_t)n);
}

int mp__reply_recv(int sock, const char *what)
{
    char hdr[8], msg[1024];
    int r = mp__read_full(sock, hdr, sizeof hdr);
    if (r == MP_EEOF)
        return mp__error(MP_EPROCESS, "%s exited before it started the target", what);
    if (r < 0)
        return mp__error(r, "reading the bootstrap reply of %s", what);
    int32_t code;
    uint32_t n;
    memcpy(&code, hdr, 4);
    memcpy(&n, hdr + 4, 4);
    if (n >= sizeof msg || code > 0)
        return mp__error(MP_EPROTO, "malformed bootstrap reply from %s", what);
    if ((r = mp__read_full(sock, msg, n)) < 0)
        return mp__error(r, "reading the bootstrap reply of %s", what);
    msg[n] = '\0';
    return code < 0 ? mp__error(code, "%s: %s", what, msg) : 0;
}
