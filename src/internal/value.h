/* Private layout of mp_value, shared by src/value*.c (core, msgpack, pack, repr). */
#ifndef MP_INTERNAL_VALUE_H
#define MP_INTERNAL_VALUE_H

#include "multiproc/value.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

struct mp_value {
    mp_type type;
    /* blk: 0, or 1 + its index in the mp__vblock that holds it (see below).
     * cached_items: a list's items or a map's keys/vals block came from the per-thread
     * block cache (small containers, see value.c), not malloc: grown and freed through
     * value.c only. Code that installs its own malloc'd array leaves it 0. */
    uint32_t blk : 31;
    uint32_t cached_items : 1;
    union {
        bool b;
        int64_t i;
        double d;
        struct { /* str and bytes: stored right after the struct, NUL-terminated */
            char *data;
            size_t len;
        } s;
        struct {
            mp_value **items;
            size_t len, cap;
        } list;
        struct {
            mp_value **keys, **vals; /* one block: vals == keys + cap */
            size_t len, cap;
            /* Open-addressing index (entry + 1, 0 = empty), built once a map grows
             * past a few entries so set/get stay O(1) for large decoded maps:
             * index[0] is the number of slots (a power of 2), the slots follow (kept
             * out of the struct so that every value is 48 bytes, not 56). */
            size_t *index;
        } map;
        struct {
            const mp_kind *kind;
            void *obj;
            bool owned; /* imported by decode: released with the value */
        } h;
    } u;
};

/* A hash consistent with mp_value_equal (an int and an equal float hash alike). */
uint64_t mp__value_hash(const mp_value *v);

/* Python's str.isprintable() for one code point >= 0x80 (src/value/unicode.c). */
bool mp__unicode_printable(uint32_t c);

/* The MessagePack format byte of an int outside the fixint range (-32..127), in its
 * shortest form as msgpack-c packs it (non-negative values as uint formats); the payload
 * is 1 << (format & 3) bytes, big-endian. */
static inline unsigned char mp__int_format(int64_t i)
{
    if (i >= 0)
        return i <= 0xff ? 0xcc : i <= 0xffff ? 0xcd : i <= 0xffffffffLL ? 0xce : 0xcf;
    return i >= -128 ? 0xd0 : i >= -32768 ? 0xd1 : i >= -2147483648LL ? 0xd2 : 0xd3;
}

/* MessagePack of an int in its shortest form (as msgpack-c packs it: non-negative
 * values as uint formats), written to p (9 bytes of room), without msgpack-c's packer
 * and its error mute (a thread-local round trip each). Its length. */
static inline size_t mp__pack_int(int64_t i, unsigned char *p)
{
    if (i >= -32 && i <= 127) {
        p[0] = (unsigned char)i; /* positive or negative fixint */
        return 1;
    }
    unsigned char t = mp__int_format(i);
    unsigned n = 1u << (t & 3);
    uint64_t u = (uint64_t)i;
    p[0] = t;
    for (unsigned k = 0; k < n; k++)
        p[1 + k] = (unsigned char)(u >> (8 * (n - 1 - k)));
    return 1 + n;
}

/* The MessagePack int at p (any int format that fits an int64), for hot paths that
 * decode many: its length with *out set, or 0 when p holds something else (or is cut
 * short), which the caller hands to the general decoder. */
static inline size_t mp__unpack_int(const unsigned char *p, size_t len, int64_t *out)
{
    if (!len)
        return 0;
    unsigned char c = p[0];
    if (c <= 0x7f || c >= 0xe0) {
        *out = (signed char)c;
        return 1;
    }
    if (c < 0xcc || c > 0xd3)
        return 0;
    size_t n = (size_t)1 << (c & 3);
    if (len < 1 + n || (c == 0xcf && p[1] & 0x80)) /* past INT64_MAX: the general path */
        return 0;
    uint64_t u = 0;
    for (size_t k = 0; k < n; k++)
        u = u << 8 | p[1 + k];
    if (c <= 0xce)
        *out = (int64_t)u;
    else
        *out = n == 1 ? (int8_t)u : n == 2 ? (int16_t)u : n == 4 ? (int32_t)u : (int64_t)u;
    return 1 + n;
}

/* Encode v as MessagePack into buf (cap bytes) without allocating: 0 and *len,
 * MP_ETOOSHORT when it does not fit, or MP_EUNSUPPORTED for a value holding handles.
 * For hot paths that keep small items in their own memory; on failure they fall
 * back to mp_value_encode. Records no error (a probe; see mp__error_mute). */
int mp__value_encode_into(const mp_value *v, void *buf, size_t cap, size_t *len);

/* Decode the one value at the start of buf (no fds: a handle needing some fails) and
 * say how many bytes it took, for hot paths that walk a list without building it. */
int mp__value_decode_next(const void *buf, size_t len, size_t *used, mp_value **out);

/* mp_value_decode of a value that must hold no handle (a handle is MP_EPROTO, and no
 * kind's import runs): for records read by code that must not import objects. */
int mp__value_decode_plain(const void *buf, size_t len, mp_value **out);

/* A block of scalar values (nil, bool, int, float) allocated at once, for decoding many
 * results: one malloc instead of one per value. Each value taken from it is still freed
 * on its own with mp_value_free, in any thread and order; the memory goes when the
 * creator is done with the block and its last value is freed (an atomic count). */
typedef struct mp__vblock mp__vblock;
/* Room for up to n values (NULL when out of memory: callers fall back to single values). */
mp__vblock *mp__vblock_new(size_t n);
/* A zeroed value of scalar type t from the block; NULL when it is full (or b is NULL). */
mp_value *mp__vblock_take(mp__vblock *b, mp_type t);
/* The creator takes no more values: the unused room is given back. NULL is fine. */
void mp__vblock_done(mp__vblock *b);

/* mp__value_decode_next whose scalars come from blk while it has room. */
int mp__value_decode_next_in(const void *buf, size_t len, mp__vblock *blk, size_t *used,
                             mp_value **out);

/* Allocate a zeroed value of type t (NULL + -ENOMEM recorded). */
mp_value *mp__value_new(mp_type t);

/* The per-thread block cache of value.c (its 64-byte class [0] and 128-byte class [1]),
 * so a decoder can take a scalar's block inline: mp__value_new_scalar. */
typedef struct mp__value_block {
    struct mp__value_block *next;
} mp__value_block;
extern __thread __attribute__((tls_model("initial-exec"))) mp__value_block *mp__block_cache[2];
extern __thread __attribute__((tls_model("initial-exec"))) unsigned mp__block_count[2];

#define MP__VALUE_BLOCK 64        /* class [0] */
#define MP__VALUE_BLOCK_LARGE 128 /* class [1] */

/* mp__value_new for any type but str and bytes (a 64-byte block), popping the cache
 * inline. The cache stays empty under AddressSanitizer, so this is then malloc. */
static inline mp_value *mp__value_new_scalar(mp_type t)
{
    mp__value_block *b = mp__block_cache[0];
    if (!b)
        return mp__value_new(t);
    mp__block_cache[0] = b->next;
    mp__block_count[0]--;
    __builtin_prefetch(b->next, 1); /* the next pop's block: its link is read then */
    mp_value *v = (mp_value *)b;
    *v = (mp_value){.type = t};
    return v;
}

/* mp_value_strn (t MP_STR) or mp_value_bytes (MP_BYTES) of data that is not NULL, the
 * block popped inline when the value and its bytes fit one. */
static inline mp_value *mp__value_new_buffer(mp_type t, const char *data, size_t len)
{
    size_t size = sizeof(mp_value) + len + 1;
    int c = size > MP__VALUE_BLOCK;
    mp__value_block *b = size <= MP__VALUE_BLOCK_LARGE ? mp__block_cache[c] : NULL;
    if (!b)
        return t == MP_STR ? mp_value_strn(data, len) : mp_value_bytes(data, len);
    mp__block_cache[c] = b->next;
    mp__block_count[c]--;
    __builtin_prefetch(b->next, 1);
    mp_value *v = (mp_value *)b;
    *v = (mp_value){.type = t};
    v->u.s.data = (char *)(v + 1);
    v->u.s.len = len;
    memcpy(v->u.s.data, data, len);
    v->u.s.data[len] = '\0';
    return v;
}

/* mp_value_set_bytes / mp_value_set_strn (t MP_BYTES or MP_STR) for a non-NULL v. */
int mp__value_set_buffer(mp_value **v, mp_type t, const void *data, size_t len);

/* mp_value_set_int for a value holding nothing outside itself (nil, bool, int, float),
 * inline: false (nothing done) for any other. */
static inline bool mp__value_set_scalar_int(mp_value *v, int64_t i)
{
    if (v->type >= MP_STR)
        return false;
    v->type = MP_INT;
    v->u.i = i;
    return true;
}

/* Room for at least `need` items in a list (growing to twice its capacity or more), for
 * decoders that fill items[] directly. 0 or -ENOMEM (recorded). */
int mp__value_list_reserve(mp_value *list, size_t need);

/* Append an entry to a map without looking for an equal key (the caller knows there is
 * none). The map owns key and val on success; on failure (-ENOMEM) the caller still does. */
int mp__value_map_add(mp_value *m, mp_value *key, mp_value *val);

/* Map entry removal (for the manager's dicts): the entry index of a key or -1, and
 * removing entry e (key/val handed over, or freed when NULL). */
long mp__value_map_index(const mp_value *m, const mp_value *key);
int mp__value_map_remove(mp_value *m, size_t e, mp_value **key, mp_value **val);

/* How a kind's handles print inside a value's repr, instead of "<kind object at 0x...>"
 * (the manager's proxies print as Python's "<ListProxy object, typeid 'list' at 0x...>").
 * fn writes at most n bytes to out. Registered from a constructor; at most 8 kinds. */
typedef void (*mp__kind_repr_fn)(const void *obj, char *out, size_t n);
void mp__kind_set_repr(const mp_kind *kind, mp__kind_repr_fn fn);

/* Decode untrusted bytes that may hold handles of one kind only, and no fds: any other
 * handle is MP_EPROTO before its kind's import runs. Never allocates more than a small
 * multiple of len (every count is checked against the bytes left). */
int mp__value_decode_only(const void *buf, size_t len, const mp_kind *only, mp_value **out);

/* mp_value_pack with a va_list. */
mp_value *mp__value_vpack(const char *fmt, va_list ap);

#endif
