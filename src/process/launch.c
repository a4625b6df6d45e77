/* The launch record a spawn or forkserver child receives, and the framing used on the
 * bootstrap sockets. The record is little more than fixed fields and length-prefixed
 * strings, each followed by a NUL so that a parsed record may point into its buffer;
 * the receiver treats it as untrusted input (bounds-checked parsing). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "process/proc.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define LAUNCH_MAGIC 0x4d504c32u /* "MPL2" */
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
    put(o, "", 1);
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

/* A length-prefixed field: where its n bytes are in the buffer (the NUL after them
 * is checked). */
static const char *get_field(struct in *in, size_t *len)
{
    uint32_t n = get_u32(in);
    if (in->bad || n >= in->left || in->p[n] != '\0') {
        in->bad = true;
        *len = 0;
        return NULL;
    }
    const char *s = in->p;
    in->p += (size_t)n + 1;
    in->left -= (size_t)n + 1;
    *len = n;
    return s;
}

static void get_fixed(struct in *in, char *dst, size_t cap)
{
    size_t n = 0;
    const char *s = get_field(in, &n);
    if (!s || n >= cap)
        in->bad = true;
    else
        memcpy(dst, s, n + 1);
}

/* Everything but the three variable fields, whose places are returned in f/flen
 * (name, identity, args). */
static int parse(const char *buf, size_t len, mp__launch *l, const char *f[3], size_t flen[3])
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
    for (int i = 0; i < 3; i++)
        f[i] = get_field(&in, &flen[i]);
    if (in.bad)
        return mp__error(MP_EPROTO, "truncated launch record");
    return 0;
}

static char *dup_field(const char *s, size_t n, bool *bad)
{
    char *d = malloc(n + 1);
    if (!d) {
        *bad = true;
        return NULL;
    }
    memcpy(d, s, n + 1);
    return d;
}

int mp__launch_unpack(const char *buf, size_t len, mp__launch *l)
{
    const char *f[3];
    size_t flen[3];
    int r = parse(buf, len, l, f, flen);
    if (r < 0)
        return r;
    bool bad = false;
    l->name = dup_field(f[0], flen[0], &bad);
    l->identity = dup_field(f[1], flen[1], &bad);
    l->args = dup_field(f[2], flen[2], &bad);
    l->args_len = flen[2];
    if (bad) {
        mp__launch_clear(l);
        return mp__error(-ENOMEM, "copying a launch record");
    }
    return 0;
}

int mp__launch_view(const char *buf, size_t len, mp__launch *l)
{
    const char *f[3];
    size_t flen[3];
    int r = parse(buf, len, l, f, flen);
    if (r < 0)
        return r;
    l->name = (char *)f[0];
    l->identity = (char *)f[1];
    l->args = (char *)f[2];
    l->args_len = flen[2];
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

static void close_all(int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mp__close(fds[i]);
}

int mp__frame_send(int sock, const void *buf, size_t len, const int *fds, size_t nfds)
{
    if (len > FRAME_MAX)
        return mp__error(-E2BIG, "a launch record of %zu bytes", len);
    if (nfds > MP__PROC_MAX_FDS)
        return mp__error(-E2BIG, "%zu fds in one launch", nfds);
    uint32_t n = (uint32_t)len;
    /* Header and record in one call: one wake-up of the reader, not two. */
    struct iovec iov[2] = {{.iov_base = &n, .iov_len = sizeof n},
                           {.iov_base = (void *)buf, .iov_len = len}};
    ssize_t r = mp__sendmsg_fds(sock, iov, 2, fds, nfds, 0);
    if (r < 0)
        return mp__error((int)r, "sending a launch record");
    if (r < (ssize_t)sizeof n) /* a stream socket may take part of 4 bytes only in theory */
        return mp__error(MP_EPROTO, "short write of a launch header");
    size_t sent = (size_t)r - sizeof n; /* a big record goes on in pieces */
    int w = mp__write_full(sock, (const char *)buf + sent, len - sent);
    return w < 0 ? mp__error(w, "sending a launch record") : 0;
}

/* The first read brings the header, the fds and, for a usual record, all of it. */
#define FRAME_FIRST 4096

int mp__frame_recv(int sock, char **buf, size_t *len, int *fds, size_t max_fds, size_t *nfds)
{
    uint32_t n = 0;
    char *b = malloc(FRAME_FIRST);
    struct iovec iov[2] = {{.iov_base = &n, .iov_len = sizeof n},
                           {.iov_base = b, .iov_len = FRAME_FIRST}};
    union {
        char buf[CMSG_SPACE(sizeof(int) * MP__PROC_MAX_FDS)];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = 2, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    *nfds = 0;
    if (!b)
        return mp__error(-ENOMEM, "a launch record buffer");
    ssize_t r;
    do
        r = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        free(b);
        return mp__errno("receiving a launch record");
    }
    mp__msg_adopt_fds(&msg, fds, max_fds, nfds);
    int code = 0;
    size_t got = 0;
    if (r == 0)
        code = mp__error(MP_EEOF, "launch channel closed");
    else if (r < (ssize_t)sizeof n) /* split header: read the rest of it */
        code = mp__read_full(sock, (char *)&n + r, sizeof n - (size_t)r);
    else
        got = (size_t)r - sizeof n;
    if (code == MP_EEOF && r > 0)
        code = mp__error(MP_EPROTO, "short launch header");
    else if (code < 0 && r > 0)
        code = mp__error(code, "reading a launch header");
    else if (!code && ((msg.msg_flags & MSG_CTRUNC) || n > FRAME_MAX))
        code = mp__error(MP_EPROTO, "malformed launch header");
    else if (!code && got > n) /* the sender waits for our reply after a frame */
        code = mp__error(MP_EPROTO, "bytes after a launch record");
    if (!code && (size_t)n + 1 > FRAME_FIRST) {
        char *bigger = realloc(b, (size_t)n + 1);
        if (bigger)
            b = bigger;
        else
            code = mp__error(-ENOMEM, "a launch record of %u bytes", n);
    }
    if (!code && (code = mp__read_full(sock, b + got, n - got)) < 0)
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
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                        .msg_controllen = sizeof u.buf};
    int fd = -1;
    size_t nfd = 0;
    ssize_t r;
    do
        r = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    while (r < 0 && errno == EINTR);
    if (r < 0)
        return mp__errno("reading the bootstrap reply of %s", what);
    mp__msg_adopt_fds(&mh, &fd, 1, &nfd);
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
