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

