/* MessagePack encoding of values (msgpack-c's packer) and a bounds-checked decoder.
 *
 * Handles travel as ext type MP__EXT_HANDLE whose payload is itself MessagePack:
 * [kind name (str), the kind's bytes (bin), [fd index, ...]] where each index points
 * into the fd array sent beside the message.
 *
 * The decoder is an own walk over the bytes rather than msgpack_unpack: every length
 * is checked against the bytes that remain before anything is allocated, containers
 * grow only as items actually parse (so memory is proportional to the input), and
 * nesting is capped, so hostile input is an error code, never a crash. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/value.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#define MP__EXT_HANDLE 1
#define MP__MAX_DEPTH 512

/* ---- encoding ------------------------------------------------------------------- */

typedef struct enc {
    msgpack_packer pk;
    int *fds;
    size_t max_fds, nfds;
} enc;

static int pack_value(enc *e, const mp_value *v, int depth);

static int pack_failed(void) { return mp__error(-ENOMEM, "encoding: out of memory"); }

static int pack_buffer(msgpack_packer *pk, const mp_value *v)
{
    int r = v->type == MP_STR ? msgpack_pack_str_with_body(pk, v->u.s.data, v->u.s.len)
                              : msgpack_pack_bin_with_body(pk, v->u.s.data, v->u.s.len);
    return r < 0 ? pack_failed() : 0;
}

/* The ext payload for an exported object, into *sb. */
static int pack_handle_payload(msgpack_sbuffer *sb, const char *name, const void *data,
                               size_t len, size_t first_fd, size_t nfds)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    int r = msgpack_pack_array(&pk, 3);
    r |= msgpack_pack_str_with_body(&pk, name, strlen(name));
    r |= msgpack_pack_bin_with_body(&pk, data, len);
    r |= msgpack_pack_array(&pk, nfds);
    for (size_t i = 0; i < nfds; i++)
        r |= msgpack_pack_uint64(&pk, first_fd + i);
    return r ? pack_failed() : 0;
}

static int pack_handle(enc *e, const mp_value *v)
{
    const mp_kind *k = v->u.h.kind;
    void *data = NULL;
    size_t len = 0, n = 0;
    int fds[MP_KIND_MAX_FDS];
    int r = k->export_obj(v->u.h.obj, &data, &len, fds, &n);
    if (r < 0) {
        free(data);
        return r;
    }
    /* A handle without fds (a proxy) needs no fd array; one with fds does. */
    if (n > MP_KIND_MAX_FDS)
        r = mp__error(MP_EINVAL, "kind '%s' exported %zu fds (max %d)", k->name, n,
                      MP_KIND_MAX_FDS);
    else if (n && !e->fds)
        r = mp__error(MP_EUNSUPPORTED,
                      "value holds a '%s' handle (with %zu fds) but no fd array was given",
                      k->name, n);
    else if (e->nfds + n > e->max_fds)
        r = mp__error(-E2BIG, "value needs more than %zu fds", e->max_fds);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    if (r == 0)
        r = pack_handle_payload(&sb, k->name, data, len, e->nfds, n);
    if (r == 0 && (msgpack_pack_ext(&e->pk, sb.size, MP__EXT_HANDLE) < 0 ||
                   msgpack_pack_ext_body(&e->pk, sb.data, sb.size) < 0))
        r = pack_failed();
    if (r == 0 && n) {
        memcpy(e->fds + e->nfds, fds, n * sizeof *fds);
        e->nfds += n;
    }
    msgpack_sbuffer_destroy(&sb);
    free(data);
    return r;
}

static int pack_container(enc *e, const mp_value *v, int depth)
{
    int r;
    if (v->type == MP_LIST) {
        if (msgpack_pack_array(&e->pk, v->u.list.len) < 0)
            return pack_failed();
        for (size_t i = 0; i < v->u.list.len; i++)
            if ((r = pack_value(e, v->u.list.items[i], depth + 1)) < 0)
                return r;
        return 0;
    }
    if (msgpack_pack_map(&e->pk, v->u.map.len) < 0)
        return pack_failed();
    for (size_t i = 0; i < v->u.map.len; i++) {
        if ((r = pack_value(e, v->u.map.keys[i], depth + 1)) < 0 ||
            (r = pack_value(e, v->u.map.vals[i], depth + 1)) < 0)
            return r;
    }
    return 0;
}

static int pack_value(enc *e, const mp_value *v, int depth)
{
    if (depth > MP__MAX_DEPTH)
        return mp__error(MP_EINVAL, "value nested deeper than %d levels", MP__MAX_DEPTH);
    int r = 0;
    switch (v->type) {
    case MP_NIL:
        r = msgpack_pack_nil(&e->pk);
        break;
    case MP_BOOL:
        r = v->u.b ? msgpack_pack_true(&e->pk) : msgpack_pack_false(&e->pk);
        break;
    case MP_INT:
        r = msgpack_pack_int64(&e->pk, v->u.i);
        break;
    case MP_FLOAT:
        r = msgpack_pack_double(&e->pk, v->u.d);
        break;
    case MP_STR:
    case MP_BYTES:
        return pack_buffer(&e->pk, v);
    case MP_LIST:
    case MP_MAP:
        return pack_container(e, v, depth);
    case MP_HANDLE:
        return pack_handle(e, v);
    }
    return r < 0 ? pack_failed() : 0;
}

/* A fixed buffer as msgpack-c's write target: small values encode without a malloc
 * (msgpack_sbuffer starts at 8 KiB, which dominated the cost of small messages). */
typedef struct fixed_buf {
    char *data;
    size_t len, cap;
    bool overflow;
} fixed_buf;

static int fixed_write(void *data, const char *buf, size_t len)
{
    fixed_buf *f = data;
    if (len > f->cap - f->len) {
        f->overflow = true;
        return -1;
    }
    memcpy(f->data + f->len, buf, len);
    f->len += len;
    return 0;
}

int mp__value_encode_into(const mp_value *v, void *buf, size_t cap, size_t *len)
{
    if (v && v->type == MP_INT && cap >= 9) { /* the common item, without the packer */
        *len = mp__pack_int(v->u.i, buf);
        return 0;
    }
    fixed_buf f = {.data = buf, .cap = cap};
    enc e = {0};
    msgpack_packer_init(&e.pk, &f, fixed_write);
    /* A probe: every caller falls back to mp_value_encode, which reports a real
     * failure itself; an overflow or a handle must not leave a message behind. */
    bool was = mp__error_mute(true);
    int r = pack_value(&e, v, 0);
    mp__error_mute(was);
    if (f.overflow)
        return MP_ETOOSHORT; /* not an error worth a message: callers fall back */
    if (r < 0)
        return r;
    *len = f.len;
    return 0;
}

int mp_value_encode(const mp_value *v, char **buf, size_t *len, int *fds, size_t max_fds,
                    size_t *nfds)
{
    if (!v || !buf || !len)
        return mp__error(MP_EINVAL, "mp_value_encode: NULL argument");
    if (nfds)
        *nfds = 0;
    char small[256];
    size_t n;
    if (v->type != MP_HANDLE && mp__value_encode_into(v, small, sizeof small, &n) == 0) {
        /* A small value: one exact-size allocation. Anything else (too big, or
         * holding handles that need the fd array) takes the general path. */
        *buf = malloc(n ? n : 1);
        if (!*buf)
            return mp__error(-ENOMEM, "encoding: out of memory");
        memcpy(*buf, small, n);
        *len = n;
        return 0;
    }
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    enc e = {.fds = fds, .max_fds = fds ? max_fds : 0};
    msgpack_packer_init(&e.pk, &sb, msgpack_sbuffer_write);
    int r = pack_value(&e, v, 0);
    if (r < 0) {
        msgpack_sbuffer_destroy(&sb);
        return r;
    }
    *len = sb.size;
    *buf = sb.data ? msgpack_sbuffer_release(&sb) : mp__calloc(1, 1);
    if (nfds)
        *nfds = e.nfds;
    return *buf ? 0 : -ENOMEM;
}

/* ---- decoding ------------------------------------------------------------------- */

typedef struct dec {
    const uint8_t *p, *end;
    int *fds;     /* fds sent beside the message; used[i] once adopted */
    bool *used;
    size_t nfds;
    bool in_ext;  /* inside a handle payload: no nested handles */
    bool plain;   /* mp__value_decode_plain: no handles at all */
    const mp_kind *only; /* non-NULL: the one kind of handle accepted (untrusted input) */
    mp__vblock *blk;     /* non-NULL: scalars come from this block while it has room */
} dec;

static int bad(const char *what) { return mp__error(MP_EPROTO, "decoding: %s", what); }

static int need(dec *d, size_t n)
{
    return (size_t)(d->end - d->p) < n ? bad("truncated input") : 0;
}

static uint64_t be(const uint8_t *p, size_t n)
{
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = (x << 8) | p[i];
    return x;
}

/* Read an n-byte big-endian unsigned integer. */
static int take_uint(dec *d, size_t n, uint64_t *out)
{
    int r = need(d, n);
    if (r < 0)
        return r;
    *out = be(d->p, n);
    d->p += n;
    return 0;
}

static int decode_value(dec *d, int depth, mp_value **out);

static int decode_buffer(dec *d, mp_type t, uint64_t len, mp_value **out)
{
    int r = need(d, len);
    if (r < 0)
        return r;
    *out = t == MP_STR ? mp_value_strn((const char *)d->p, len) : mp_value_bytes(d->p, len);
    d->p += len;
    return *out ? 0 : -ENOMEM;
}

static int decode_list(dec *d, uint64_t n, int depth, mp_value **out)
{
    /* every item takes at least one byte: a larger count is a lie */
    if (n > (uint64_t)(d->end - d->p))
        return bad("array longer than the input");
    mp_value *list = mp_value_list();
    if (!list)
        return -ENOMEM;
    int r = 0;
    for (uint64_t i = 0; i < n && r == 0; i++) {
        mp_value *item = NULL;
        r = decode_value(d, depth + 1, &item);
        if (r == 0)
            r = mp_value_list_append(list, item);
    }
    if (r < 0) {
        mp_value_free(list);
        return r;
    }
    *out = list;
    return 0;
}

static int decode_map(dec *d, uint64_t n, int depth, mp_value **out)
{
    if (n > (uint64_t)(d->end - d->p) / 2)
        return bad("map longer than the input");
    mp_value *map = mp_value_map();
    if (!map)
        return -ENOMEM;
    int r = 0;
    for (uint64_t i = 0; i < n && r == 0; i++) {
        mp_value *k = NULL, *v = NULL;
        r = decode_value(d, depth + 1, &k);
        if (r == 0)
            r = decode_value(d, depth + 1, &v);
        if (r == 0)
            r = mp_value_map_set(map, k, v);
        else
            mp_value_free(k);
    }
    if (r < 0) {
        mp_value_free(map);
        return r;
    }
    *out = map;
    return 0;
}

/* Move the fds named by `idx` (a list of ints) out of the message's fd array. */
static int claim_fds(dec *d, const mp_value *idx, int *fds, size_t *n)
{
    *n = 0;
    if (idx->u.list.len > MP_KIND_MAX_FDS)
        return bad("handle with too many fds");
    for (size_t i = 0; i < idx->u.list.len; i++) {
        const mp_value *x = idx->u.list.items[i];
        if (x->type != MP_INT || x->u.i < 0 || (uint64_t)x->u.i >= d->nfds)
            return mp__error(MP_EPROTO, "decoding: handle refers to fd %lld of %zu sent",
                             x->type == MP_INT ? (long long)x->u.i : -1LL, d->nfds);
        if (d->used[x->u.i])
            return bad("two handles claim the same fd");
    }
    for (size_t i = 0; i < idx->u.list.len; i++) {
        size_t k = (size_t)idx->u.list.items[i]->u.i;
        d->used[k] = true;
        fds[(*n)++] = d->fds[k];
    }
    return 0;
}

static int import_handle(dec *d, const mp_value *desc, mp_value **out)
{
    const mp_value *name = mp_value_list_get(desc, 0), *data = mp_value_list_get(desc, 1),
                   *idx = mp_value_list_get(desc, 2);
    if (desc->type != MP_LIST || desc->u.list.len != 3 || name->type != MP_STR ||
        data->type != MP_BYTES || idx->type != MP_LIST)
        return bad("malformed handle");
    if (d->only && strcmp(name->u.s.data, d->only->name) != 0)
        return mp__error(MP_EPROTO, "decoding: a '%.64s' handle is not accepted here (only '%s')",
                         name->u.s.data, d->only->name);
    const mp_kind *k = mp_kind_find(name->u.s.data);
    if (!k)
        return mp__error(MP_ENOTFOUND, "decoding: unknown object kind '%s'", name->u.s.data);
    int fds[MP_KIND_MAX_FDS];
    size_t n;
    int r = claim_fds(d, idx, fds, &n);
    if (r < 0)
        return r;
    void *obj = NULL;
    r = k->import_obj(data->u.s.data, data->u.s.len, fds, n, &obj);
    if (r < 0)
        return r;
    *out = mp_value_handle(k, obj);
    if (!*out) {
        if (k->release_obj)
            k->release_obj(obj);
        return -ENOMEM;
    }
    (*out)->u.h.owned = true;
    return 0;
}

static int decode_ext(dec *d, uint64_t len, int type, int depth, mp_value **out)
{
    int r = need(d, len);
    if (r < 0)
        return r;
    if (type != MP__EXT_HANDLE || d->in_ext)
        return bad("unsupported extension type");
    if (d->plain)
        return bad("a handle where plain data is expected");
    dec sub = *d;
    sub.end = d->p + len;
    sub.in_ext = true;
    d->p += len;
    mp_value *desc = NULL;
    r = decode_value(&sub, depth + 1, &desc);
    if (r == 0 && sub.p != sub.end)
        r = bad("trailing bytes in a handle");
    if (r == 0)
        r = import_handle(d, desc, out);
    mp_value_free(desc);
    return r;
}

/* A scalar value: from the decode's block when it has room, else on its own. */
static mp_value *scalar(dec *d, mp_type t)
{
    mp_value *v = d->blk ? mp__vblock_take(d->blk, t) : NULL;
    return v ? v : mp__value_new(t);
}

static mp_value *scalar_int(dec *d, int64_t i)
{
    mp_value *v = scalar(d, MP_INT);
    if (v)
        v->u.i = i;
    return v;
}

static int decode_scalar(dec *d, uint8_t c, mp_value **out)
{
    uint64_t u;
    int r;
    if (c <= 0x7f || c >= 0xe0) {
        *out = scalar_int(d, (int8_t)c);
    } else if (c == 0xc0) {
        *out = scalar(d, MP_NIL);
    } else if (c == 0xc2 || c == 0xc3) {
        if ((*out = scalar(d, MP_BOOL)))
            (*out)->u.b = c == 0xc3;
    } else if (c == 0xca || c == 0xcb) {
        if ((r = take_uint(d, c == 0xca ? 4 : 8, &u)) < 0)
            return r;
        double x;
        if (c == 0xca) {
            uint32_t u32 = (uint32_t)u;
            float f;
            memcpy(&f, &u32, sizeof f);
            x = f;
        } else {
            memcpy(&x, &u, sizeof x);
        }
        if ((*out = scalar(d, MP_FLOAT)))
            (*out)->u.d = x;
    } else if (c >= 0xcc && c <= 0xcf) {
        if ((r = take_uint(d, (size_t)1 << (c - 0xcc), &u)) < 0)
            return r;
        if (u > INT64_MAX)
            return mp__error(MP_ERANGE, "decoding: integer %llu is out of range",
                             (unsigned long long)u);
        *out = scalar_int(d, (int64_t)u);
    } else if (c >= 0xd0 && c <= 0xd3) {
        size_t n = (size_t)1 << (c - 0xd0);
        if ((r = take_uint(d, n, &u)) < 0)
            return r;
        /* two's complement of n bytes (GCC converts out-of-range values modulo 2^n) */
        int64_t s = n == 1 ? (int8_t)u : n == 2 ? (int16_t)u : n == 4 ? (int32_t)u : (int64_t)u;
        *out = scalar_int(d, s);
    } else {
        return bad("invalid type byte");
    }
    return *out ? 0 : -ENOMEM;
}

static int decode_value(dec *d, int depth, mp_value **out)
{
    *out = NULL;
    if (depth > MP__MAX_DEPTH)
        return bad("nested deeper than 512 levels");
    int r = need(d, 1);
    if (r < 0)
        return r;
    uint8_t c = *d->p++;
    if (c <= 0x7f || (c >= 0xcc && c <= 0xd3) || c >= 0xe0)
        return decode_scalar(d, c, out); /* ints first: the common item */
    uint64_t n;
    if (c >= 0x80 && c <= 0x8f)
        return decode_map(d, c & 0x0f, depth, out);
    if (c >= 0x90 && c <= 0x9f)
        return decode_list(d, c & 0x0f, depth, out);
    if (c >= 0xa0 && c <= 0xbf)
        return decode_buffer(d, MP_STR, c & 0x1f, out);
    switch (c) {
    case 0xc4: case 0xc5: case 0xc6: /* bin 8/16/32 */
        if ((r = take_uint(d, (size_t)1 << (c - 0xc4), &n)) < 0)
            return r;
        return decode_buffer(d, MP_BYTES, n, out);
    case 0xd9: case 0xda: case 0xdb: /* str 8/16/32 */
        if ((r = take_uint(d, (size_t)1 << (c - 0xd9), &n)) < 0)
            return r;
        return decode_buffer(d, MP_STR, n, out);
    case 0xdc: case 0xdd: /* array 16/32 */
        if ((r = take_uint(d, c == 0xdc ? 2 : 4, &n)) < 0)
            return r;
        return decode_list(d, n, depth, out);
    case 0xde: case 0xdf: /* map 16/32 */
        if ((r = take_uint(d, c == 0xde ? 2 : 4, &n)) < 0)
            return r;
        return decode_map(d, n, depth, out);
    case 0xc7: case 0xc8: case 0xc9: { /* ext 8/16/32: length, then type */
        if ((r = take_uint(d, (size_t)1 << (c - 0xc7), &n)) < 0 || (r = need(d, 1)) < 0)
            return r;
        int type = (int8_t)*d->p++;
        return decode_ext(d, n, type, depth, out);
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: { /* fixext 1..16 */
        if ((r = need(d, 1)) < 0)
            return r;
        int type = (int8_t)*d->p++;
        return decode_ext(d, (uint64_t)1 << (c - 0xd4), type, depth, out);
    }
    default:
        return decode_scalar(d, c, out);
    }
}

static int decode(const void *buf, size_t len, int *fds, size_t nfds, bool plain,
                  const mp_kind *only, mp_value **out)
{
    int r = 0;
    bool *used = NULL;
    if (out)
        *out = NULL;
    if (!out || (!buf && len) || (!fds && nfds))
        r = mp__error(MP_EINVAL, "mp_value_decode: NULL argument");
    else if (nfds && !(used = mp__calloc(nfds, sizeof *used)))
        r = -ENOMEM;
    if (r == 0) {
        dec d = {.p = buf, .end = (const uint8_t *)buf + len, .fds = fds, .used = used,
                 .nfds = nfds, .plain = plain, .only = only};
        r = decode_value(&d, 0, out);
        if (r == 0 && d.p != d.end)
            r = mp__error(MP_EPROTO, "decoding: %zu trailing bytes after the value",
                          (size_t)(d.end - d.p));
        if (r < 0) {
            mp_value_free(*out); /* releases imported objects and their fds */
            *out = NULL;
        }
    }
    /* Whatever no imported object adopted is closed: the caller gave them all to us. */
    for (size_t i = 0; i < nfds; i++)
        if (!used || !used[i])
            mp__close(fds[i]);
    free(used);
    return r;
}

int mp__value_decode_next(const void *buf, size_t len, size_t *used, mp_value **out)
{
    return mp__value_decode_next_in(buf, len, NULL, used, out);
}

int mp__value_decode_next_in(const void *buf, size_t len, mp__vblock *blk, size_t *used,
                             mp_value **out)
{
    dec d = {.p = buf, .end = (const uint8_t *)buf + len, .blk = blk};
    int r = decode_value(&d, 0, out);
    if (r < 0) {
        mp_value_free(*out);
        *out = NULL;
        return r;
    }
    *used = (size_t)(d.p - (const uint8_t *)buf);
    return 0;
}

int mp_value_decode(const void *buf, size_t len, int *fds, size_t nfds, mp_value **out)
{
    return decode(buf, len, fds, nfds, false, NULL, out);
}

int mp__value_decode_plain(const void *buf, size_t len, mp_value **out)
{
    return decode(buf, len, NULL, 0, true, NULL, out);
}

int mp__value_decode_only(const void *buf, size_t len, const mp_kind *only, mp_value **out)
{
    return decode(buf, len, NULL, 0, false, only, out);
}
