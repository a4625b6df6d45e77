/* Pickle encoding of values (protocol 4 or 5), read back by Python's pickle.loads.
 *
 * Only data opcodes are written: NONE, NEWTRUE/NEWFALSE, BININT1/2/BININT/LONG1,
 * BINFLOAT, SHORT_BINUNICODE/BINUNICODE/BINUNICODE8, SHORT_BINBYTES/BINBYTES/BINBYTES8,
 * EMPTY_LIST + APPENDS, EMPTY_DICT + SETITEMS, tuples (only for lists used as dict keys,
 * which Python needs hashable) and STOP. A value tree has no shared parts, so no memo is
 * written (loads does not need one; Python memoizes to share objects, which a tree cannot
 * have) and no FRAME (optional for readers). Writing goes to a 2 KiB buffer on the stack
 * first (a small value costs one malloc, of the result), scalars are written inline by
 * the container loops. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/pickle.h"
#include "internal/value.h"

#include <endian.h>
#include <stdlib.h>
#include <string.h>

/* The encoder writes into a buffer that starts on the C stack (a small value needs no
 * allocation but the result's) and moves to the heap, doubling, when it fills. Each
 * writer first makes room for everything it writes (room), then stores without checks. */
#define WBUF0 2048

typedef struct wbuf {
    unsigned char *data;
    size_t len, cap;
    unsigned char small[WBUF0];
} wbuf;

static __attribute__((noinline)) int wgrow(wbuf *e, size_t extra)
{
    if (extra > SIZE_MAX / 4 - e->len)
        return mp__error(-ENOMEM, "pickle: a %zu + %zu-byte pickle", e->len, extra);
    size_t cap = e->cap * 2;
    while (cap - e->len < extra)
        cap *= 2;
    unsigned char *d;
    if (e->data == e->small) {
        d = malloc(cap);
        if (d)
            memcpy(d, e->data, e->len);
    } else {
        d = realloc(e->data, cap);
    }
    if (!d)
        return mp__error(-ENOMEM, "pickle: growing the output to %zu bytes", cap);
    e->data = d;
    e->cap = cap;
    return 0;
}

/* Room for `extra` more bytes; then write at end(e) and advance len. */
static inline int room(wbuf *e, size_t extra)
{
    return e->cap - e->len >= extra ? 0 : wgrow(e, extra);
}

static inline unsigned char *end(wbuf *e) { return e->data + e->len; }

static inline int put1(wbuf *e, unsigned char op)
{
    int r = room(e, 1);
    if (r == 0)
        e->data[e->len++] = op;
    return r;
}

static inline void le(unsigned char *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (unsigned char)(v >> (8 * i));
}

static int put_int(wbuf *e, int64_t i)
{
    int r = room(e, 10);
    if (r < 0)
        return r;
    unsigned char *p = end(e);
    if (i >= 0 && i < 256) {
        p[0] = PK_BININT1;
        p[1] = (unsigned char)i;
        e->len += 2;
    } else if (i >= 0 && i < 65536) {
        p[0] = PK_BININT2;
        le(p + 1, (uint64_t)i, 2);
        e->len += 3;
    } else if (i >= INT32_MIN && i <= INT32_MAX) {
        p[0] = PK_BININT;
        le(p + 1, (uint64_t)i, 4);
        e->len += 5;
    } else {
        /* LONG1: the shortest little-endian two's complement that keeps the sign. */
        int n = 8;
        while (n > 1) {
            int64_t top = i >> (8 * (n - 1) - 1); /* the bits the shorter form drops, plus its sign bit */
            if (top != 0 && top != -1)
                break;
            n--;
        }
        p[0] = PK_LONG1;
        p[1] = (unsigned char)n;
        le(p + 2, (uint64_t)i, n);
        e->len += 2 + (size_t)n;
    }
    return 0;
}

static int put_float(wbuf *e, double d)
{
    int r = room(e, 9);
    if (r < 0)
        return r;
    uint64_t bits;
    memcpy(&bits, &d, 8);
    bits = htobe64(bits);
    unsigned char *p = end(e);
    p[0] = PK_BINFLOAT;
    memcpy(p + 1, &bits, 8);
    e->len += 9;
    return 0;
}

static int put_sized(wbuf *e, unsigned char op1, unsigned char op4, unsigned char op8,
                     const char *data, size_t n)
{
    if (n > SIZE_MAX - 16)
        return mp__error(-ENOMEM, "pickle: a %zu-byte item", n);
    int r = room(e, 9 + n);
    if (r < 0)
        return r;
    unsigned char *p = end(e);
    size_t h;
    if (n < 256) {
        p[0] = op1;
        p[1] = (unsigned char)n;
        h = 2;
    } else if (n <= 0xffffffffu) {
        p[0] = op4;
        le(p + 1, n, 4);
        h = 5;
    } else {
        p[0] = op8;
        le(p + 1, n, 8);
        h = 9;
    }
    if (n)
        memcpy(p + h, data, n);
    e->len += h + n;
    return 0;
}

static int put_value(wbuf *e, const mp_value *v, int depth, bool key);

/* A scalar, written in the container loops without a recursive call: 0, a negative code,
 * or 1 when v is not a scalar (a container or a handle: put_value's job). */
static inline int put_scalar(wbuf *e, const mp_value *v)
{
    switch (v ? v->type : MP_NIL) {
    case MP_NIL:
        return put1(e, PK_NONE);
    case MP_BOOL:
        return put1(e, v->u.b ? PK_NEWTRUE : PK_NEWFALSE);
    case MP_INT:
        return put_int(e, v->u.i);
    case MP_FLOAT:
        return put_float(e, v->u.d);
    case MP_STR:
        if (!mp__utf8_valid_inline(v->u.s.data, v->u.s.len))
            return mp__error(MP_EINVAL, "pickle: a str that is not UTF-8 (Python could not "
                                        "read it back; send it as bytes)");
        return put_sized(e, PK_SHORT_BINUNICODE, PK_BINUNICODE, PK_BINUNICODE8, v->u.s.data,
                         v->u.s.len);
    case MP_BYTES:
        return put_sized(e, PK_SHORT_BINBYTES, PK_BINBYTES, PK_BINBYTES8, v->u.s.data,
                         v->u.s.len);
    default:
        return 1;
    }
}

/* An item at depth `depth` (scalars inline). */
static inline int put_item(wbuf *e, const mp_value *v, int depth, bool key)
{
    if (depth > MP__PICKLE_MAX_DEPTH) /* put_value's message */
        return put_value(e, v, depth, key);
    int r = put_scalar(e, v);
    return r == 1 ? put_value(e, v, depth, key) : r;
}

static int put_list(wbuf *e, const mp_value *v, int depth, bool key)
{
    size_t n = v->u.list.len;
    int r = 0;
    if (key) { /* a dict key must be hashable in Python: a tuple */
        if (n == 0)
            return put1(e, PK_EMPTY_TUPLE);
        if (n > 3)
            r = put1(e, PK_MARK);
        for (size_t i = 0; i < n && r == 0; i++)
            r = put_item(e, v->u.list.items[i], depth + 1, true);
        if (r == 0)
            r = put1(e, n > 3 ? PK_TUPLE : (unsigned char)(PK_TUPLE1 + n - 1));
        return r;
    }
    r = put1(e, PK_EMPTY_LIST);
    if (r == 0 && n > 1)
        r = put1(e, PK_MARK);
    for (size_t i = 0; i < n && r == 0; i++)
        r = put_item(e, v->u.list.items[i], depth + 1, false);
    if (r == 0 && n > 0)
        r = put1(e, n > 1 ? PK_APPENDS : PK_APPEND);
    return r;
}

static int put_map(wbuf *e, const mp_value *v, int depth, bool key)
{
    if (key)
        return mp__error(MP_EUNSUPPORTED, "pickle: a map used as a map key has no Python "
                                          "equivalent (a dict is not hashable)");
    size_t n = v->u.map.len;
    int r = put1(e, PK_EMPTY_DICT);
    if (r == 0 && n > 1)
        r = put1(e, PK_MARK);
    for (size_t i = 0; i < n && r == 0; i++) {
        r = put_item(e, v->u.map.keys[i], depth + 1, true);
        if (r == 0)
            r = put_item(e, v->u.map.vals[i], depth + 1, false);
    }
    if (r == 0 && n > 0)
        r = put1(e, n > 1 ? PK_SETITEMS : PK_SETITEM);
    return r;
}

static int put_value(wbuf *e, const mp_value *v, int depth, bool key)
{
    if (depth > MP__PICKLE_MAX_DEPTH)
        return mp__error(MP_EINVAL, "pickle: nesting deeper than %d levels",
                         MP__PICKLE_MAX_DEPTH);
    int r = put_scalar(e, v);
    if (r != 1)
        return r;
    switch (v->type) {
    case MP_LIST:
        return put_list(e, v, depth, key);
    case MP_MAP:
        return put_map(e, v, depth, key);
    case MP_HANDLE:
        return mp__error(MP_EUNSUPPORTED, "pickle: a handle (%s) cannot travel to Python; "
                                          "only data can be pickled",
                         v->u.h.kind ? v->u.h.kind->name : "?");
    default:
        return mp__error(MP_EINVAL, "pickle: unknown value type %d", (int)v->type);
    }
}

int mp_value_pickle(const mp_value *v, int protocol, char **buf, size_t *len)
{
    if (!buf || !len)
        return mp__error(MP_EINVAL, "mp_value_pickle: NULL output pointer");
    *buf = NULL;
    *len = 0;
    if (protocol == 0)
        protocol = MP_PICKLE_DEFAULT_PROTOCOL;
    if (protocol != 4 && protocol != 5)
        return mp__error(MP_EINVAL, "mp_value_pickle: protocol %d (4 or 5, or 0 for 4)",
                         protocol);
    wbuf w, *e = &w; /* its start buffer uninitialised */
    e->data = e->small;
    e->cap = WBUF0;
    e->data[0] = PK_PROTO;
    e->data[1] = (unsigned char)protocol;
    e->len = 2;
    int r = put_value(e, v, 0, false);
    if (r == 0)
        r = put1(e, PK_STOP);
    if (r == 0)
        r = room(e, 1); /* a NUL after the bytes, as the other encoders leave */
    char *out = NULL;
    if (r == 0) {
        e->data[e->len] = 0;
        if (e->data == e->small) {
            out = malloc(e->len + 1);
            if (out)
                memcpy(out, e->data, e->len + 1);
            else
                r = mp__error(-ENOMEM, "pickle: a %zu-byte result", e->len);
        } else {
            out = (char *)e->data;
            e->data = e->small;
        }
    }
    if (e->data != e->small)
        free(e->data);
    if (r == 0) {
        *buf = out;
        *len = e->len;
    }
    return r;
}
