/* Dynamic values: construction, containers, getters, the kind registry, comparison,
 * copy and free. Encoding lives in msgpack.c, format strings in pack.c,
 * Python-style printing in repr.c.
 *
 * DESIGN: values are plain trees owned by one thread at a time; the shared state is
 * the kind registry (a fixed array under a mutex, filled by library constructors
 * before main and read by decode in any thread) and the value blocks: an mp__vblock
 * holds many scalar values in one allocation, each freed on its own in any thread (an
 * atomic count per block; the last free releases it), with a small lock-free cache of
 * freed big blocks. */
#define _GNU_SOURCE
#include "internal/value.h"
#include "internal/common.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---- kind registry -------------------------------------------------------------- */

#define MP__MAX_KINDS 64

static const mp_kind *kinds[MP__MAX_KINDS];
static size_t nkinds;
static pthread_mutex_t kinds_lock = PTHREAD_MUTEX_INITIALIZER;

int mp_kind_register(const mp_kind *kind)
{
    if (!kind || !kind->name || !kind->name[0] || !kind->export_obj || !kind->import_obj)
        return mp__error(MP_EINVAL, "mp_kind_register: a kind needs a name, export and import");
    int r = 0;
    pthread_mutex_lock(&kinds_lock);
    for (size_t i = 0; i < nkinds && r == 0; i++)
        if (strcmp(kinds[i]->name, kind->name) == 0)
            r = mp__error(-EEXIST, "kind '%s' is already registered", kind->name);
    if (r == 0 && nkinds == MP__MAX_KINDS)
        r = mp__error(-ENOSPC, "kind '%s': registry full (%d kinds)", kind->name,
                      MP__MAX_KINDS);
    if (r == 0)
        kinds[nkinds++] = kind;
    pthread_mutex_unlock(&kinds_lock);
    return r;
}

const mp_kind *mp_kind_find(const char *name)
{
    const mp_kind *found = NULL;
    if (!name)
        return NULL;
    pthread_mutex_lock(&kinds_lock);
    for (size_t i = 0; i < nkinds && !found; i++)
        if (strcmp(kinds[i]->name, name) == 0)
            found = kinds[i];
    pthread_mutex_unlock(&kinds_lock);
    return found;
}

/* ---- value blocks ---------------------------------------------------------------- */

/* Decoding a message builds many small values and freeing it releases them all: a
 * per-thread cache of fixed-size blocks in two sizes makes that allocation a pointer pop
 * instead of a trip through malloc. A block holds a value, a str/bytes value with its
 * text when both fit (up to 79 bytes of text), or the item storage of a small container
 * (a list of up to 16 items, a map of up to 8 entries; marked cached_items). At most
 * VALUE_CACHE_MAX blocks of each size (96 KiB in all) are kept per thread, freed when the
 * thread exits. Under AddressSanitizer the cache is off, so every block is its own
 * malloc and use-after-free is still caught. */
#define VALUE_BLOCK MP__VALUE_BLOCK
#define VALUE_BLOCK_LARGE MP__VALUE_BLOCK_LARGE
#define VALUE_CACHE_MAX 512

#if defined(__SANITIZE_ADDRESS__)
#define VALUE_CACHE 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define VALUE_CACHE 0
#endif
#endif
#ifndef VALUE_CACHE
#define VALUE_CACHE 1
#endif

typedef mp__value_block value_block;

#define VALUE_TLS __thread __attribute__((tls_model("initial-exec")))
VALUE_TLS value_block *mp__block_cache[2];
VALUE_TLS unsigned mp__block_count[2];
#define block_cache mp__block_cache
#define block_count mp__block_count
static VALUE_TLS bool block_registered;
static pthread_key_t block_key;
static pthread_once_t block_once = PTHREAD_ONCE_INIT;

static void block_drain(void *unused)
{
    (void)unused;
    for (int c = 0; c < 2; c++) {
        while (block_cache[c]) {
            value_block *b = block_cache[c];
            block_cache[c] = b->next;
            free(b);
        }
        block_count[c] = 0;
    }
    block_registered = false; /* a value freed by a later destructor registers again */
}

static void block_key_init(void) { pthread_key_create(&block_key, block_drain); }

static __attribute__((noinline)) void *block_malloc(size_t size)
{
    return malloc(size > VALUE_BLOCK_LARGE ? size
                  : size > VALUE_BLOCK     ? VALUE_BLOCK_LARGE
                                           : VALUE_BLOCK);
}

/* Memory for `size` bytes (NULL on failure, nothing recorded). */
static inline void *block_alloc(size_t size)
{
    int c = size > VALUE_BLOCK;
    if (VALUE_CACHE && size <= VALUE_BLOCK_LARGE && block_cache[c]) {
        value_block *b = block_cache[c];
        block_cache[c] = b->next;
        block_count[c]--;
        return b;
    }
    return block_malloc(size);
}

/* So the thread's exit frees its cache. */
static __attribute__((noinline, cold)) void block_register(void)
{
    pthread_once(&block_once, block_key_init);
    pthread_setspecific(block_key, (void *)1);
    block_registered = true;
}

/* Give back memory from block_alloc(size). */
static inline void block_free(void *p, size_t size)
{
    int c = size > VALUE_BLOCK;
    if (VALUE_CACHE && size <= VALUE_BLOCK_LARGE && block_count[c] < VALUE_CACHE_MAX) {
        if (!block_registered)
            block_register();
        value_block *b = p;
        b->next = block_cache[c];
        block_cache[c] = b;
        block_count[c]++;
        return;
    }
    free(p);
}

/* Every value is a block of this size (a decoded million-int list is 48 MB of them). */
_Static_assert(sizeof(void *) != 8 || sizeof(mp_value) == 48, "mp_value grew past 48 bytes");

/* ---- blocks of scalar values -------------------------------------------------------- */

/* refs starts at cap + 1 (every slot, taken or not, and the creator); freeing a taken
 * value drops one, mp__vblock_done drops the untaken slots and the creator's. */
struct mp__vblock {
    _Atomic size_t refs;
    size_t cap, used;
    size_t bytes; /* its allocation's size */
    mp_value v[];
};

/* Freed big blocks are kept for the next ones (at most VBLOCK_CACHE_BYTES in all): fresh
 * memory costs a page fault and the kernel's zeroing of each page, more than the
 * decoding itself (repeated maps of a million values would otherwise fault in 48 MB
 * every time). A block is reused for a request of at least half its size. 64 slots: an
 * imap's consumer that lags behind the result thread holds dozens of chunks' blocks at
 * once, and with 16 the rest were freed and new ones faulted in again. */
#define VBLOCK_CACHE_MIN ((size_t)32 << 10)
#define VBLOCK_CACHE_BYTES ((size_t)64 << 20)
#define VBLOCK_CACHE_SLOTS 64

/* Lock-free (a slot is taken by exchange, filled by compare-and-swap), so a forked
 * child never finds it locked. */
static mp__vblock *_Atomic vcache[VBLOCK_CACHE_SLOTS];
static _Atomic size_t vcache_bytes;

static size_t vblock_bytes(size_t n) { return sizeof(mp__vblock) + (n ? n : 1) * sizeof(mp_value); }

/* Give b to the cache (false: full, the caller frees it). */
static bool vcache_put(mp__vblock *b)
{
    if (atomic_fetch_add(&vcache_bytes, b->bytes) + b->bytes <= VBLOCK_CACHE_BYTES)
        for (size_t i = 0; i < VBLOCK_CACHE_SLOTS; i++) {
            mp__vblock *expect = NULL;
            if (atomic_load_explicit(&vcache[i], memory_order_relaxed))
                continue; /* full: no locked instruction for it */
            if (atomic_compare_exchange_strong(&vcache[i], &expect, b))
                return true;
        }
    atomic_fetch_sub(&vcache_bytes, b->bytes);
    return false;
}

static mp__vblock *vblock_alloc(size_t n)
{
    size_t want = vblock_bytes(n);
    for (size_t i = 0; want >= VBLOCK_CACHE_MIN && i < VBLOCK_CACHE_SLOTS; i++) {
        if (!atomic_load_explicit(&vcache[i], memory_order_relaxed))
            continue;
        mp__vblock *c = atomic_exchange(&vcache[i], NULL); /* ours from here on */
        if (!c)
            continue;
        atomic_fetch_sub(&vcache_bytes, c->bytes);
        if (c->bytes >= want && c->bytes / 2 <= want)
            return c;
        if (!vcache_put(c)) /* not this one: back it goes */
            free(c);
    }
    mp__vblock *b = malloc(want);
    if (b)
        b->bytes = want;
    return b;
}

static void vblock_free(mp__vblock *b)
{
    if (VALUE_CACHE && b->bytes >= VBLOCK_CACHE_MIN && vcache_put(b))
        return;
    free(b);
}

mp__vblock *mp__vblock_new(size_t n)
{
    if (n > ((size_t)1 << 31) - 2)
        n = ((size_t)1 << 31) - 2; /* the index lives in 31 bits: later values come singly */
    if (n > (SIZE_MAX - sizeof(mp__vblock)) / sizeof(mp_value))
        return NULL;
    mp__vblock *b = vblock_alloc(n);
    if (!b)
        return NULL;
    atomic_init(&b->refs, n + 1);
    b->cap = n;
    b->used = 0;
    return b;
}

mp_value *mp__vblock_take(mp__vblock *b, mp_type t)
{
    if (!b || b->used == b->cap)
        return NULL;
    mp_value *v = &b->v[b->used++];
    *v = (mp_value){.type = t, .blk = (uint32_t)b->used}; /* blk: index + 1 */
    return v;
}

static void vblock_put(mp__vblock *b, size_t n)
{
    if (n && atomic_fetch_sub_explicit(&b->refs, n, memory_order_acq_rel) == n)
        vblock_free(b);
}

void mp__vblock_done(mp__vblock *b)
{
    if (b)
        vblock_put(b, b->cap - b->used + 1);
}

static void vblock_release(mp_value *v)
{
    mp_value *first = v - (v->blk - 1);
    vblock_put((mp__vblock *)((char *)first - offsetof(mp__vblock, v)), 1);
}

static size_t value_size(const mp_value *v)
{
    return v->type == MP_STR || v->type == MP_BYTES ? sizeof *v + v->u.s.len + 1 : sizeof *v;
}

static void items_free(void *p, size_t bytes, bool cached)
{
    if (cached)
        block_free(p, bytes);
    else
        free(p);
}

/* Item storage of a container: `bytes` of it, from the block cache when small (then
 * owner->cached_items is set) or malloc. realloc semantics: the first `used` bytes of
 * `old` (an allocation of old_bytes, cached or not per owner->cached_items) move over
 * and it is released; NULL on failure with `old` untouched. */
static void *items_realloc(void *old, size_t old_bytes, size_t used, size_t bytes,
                           mp_value *owner)
{
    bool cached = owner->cached_items;
    if (!cached && (bytes > VALUE_BLOCK_LARGE || !VALUE_CACHE))
        return realloc(old, bytes);
    void *p = bytes <= VALUE_BLOCK_LARGE ? block_alloc(bytes) : malloc(bytes);
    if (!p)
        return NULL;
    if (used)
        memcpy(p, old, used);
    if (old)
        items_free(old, old_bytes, cached);
    owner->cached_items = bytes <= VALUE_BLOCK_LARGE;
    return p;
}

/* ---- construction --------------------------------------------------------------- */

mp_value *mp__value_new(mp_type t)
{
    mp_value *v = block_alloc(sizeof *v);
    if (!v) {
        mp__error(-ENOMEM, "allocating a value");
        return NULL;
    }
    *v = (mp_value){.type = t}; /* stores, not a memset call */
    return v;
}

mp_value *mp_value_nil(void) { return mp__value_new(MP_NIL); }

mp_value *mp_value_bool(bool b)
{
    mp_value *v = mp__value_new(MP_BOOL);
    if (v)
        v->u.b = b;
    return v;
}

mp_value *mp_value_int(int64_t i)
{
    mp_value *v = mp__value_new(MP_INT);
    if (v)
        v->u.i = i;
    return v;
}

mp_value *mp_value_float(double d)
{
    mp_value *v = mp__value_new(MP_FLOAT);
    if (v)
        v->u.d = d;
    return v;
}

static mp_value *new_buffer(mp_type t, const void *data, size_t len)
{
    if (!data && len > 0) {
        mp__error(MP_EINVAL, "NULL data with length %zu", len);
        return NULL;
    }
    if (len > SIZE_MAX - sizeof(mp_value) - 1) {
        mp__error(-ENOMEM, "a %zu-byte string", len);
        return NULL;
    }
    /* One allocation: the bytes live right after the struct (see mp_value_free). */
    mp_value *v = block_alloc(sizeof *v + len + 1);
    if (!v) {
        mp__error(-ENOMEM, "allocating %zu bytes", len + 1);
        return NULL;
    }
    *v = (mp_value){.type = t};
    v->u.s.data = (char *)(v + 1);
    if (len)
        memcpy(v->u.s.data, data, len);
    v->u.s.data[len] = '\0';
    v->u.s.len = len;
    return v;
}

mp_value *mp_value_str(const char *s)
{
    if (!s) {
        mp__error(MP_EINVAL, "mp_value_str(NULL)");
        return NULL;
    }
    return new_buffer(MP_STR, s, strlen(s));
}

mp_value *mp_value_strn(const char *s, size_t len) { return new_buffer(MP_STR, s, len); }

mp_value *mp_value_bytes(const void *data, size_t len) { return new_buffer(MP_BYTES, data, len); }

mp_value *mp_value_list(void) { return mp__value_new(MP_LIST); }

mp_value *mp_value_map(void) { return mp__value_new(MP_MAP); }

mp_value *mp_value_handle(const mp_kind *kind, void *obj)
{
    if (!kind) {
        mp__error(MP_EINVAL, "mp_value_handle: NULL kind");
        return NULL;
    }
    mp_value *v = mp__value_new(MP_HANDLE);
    if (v) {
        v->u.h.kind = kind;
        v->u.h.obj = obj;
    }
    return v;
}

/* ---- lists ---------------------------------------------------------------------- */

/* Grow a list to hold at least `need` items: to `need` exactly when that is at least
 * twice the capacity (a decoder that knows its count), else by doubling. */
static int list_grow(mp_value *l, size_t need)
{
    size_t cap = l->u.list.cap;
    if (need <= cap)
        return 0;
    size_t ncap = cap ? cap * 2 : 4;
    if (ncap < need)
        ncap = need;
    if (ncap > SIZE_MAX / sizeof(mp_value *))
        return mp__error(-ENOMEM, "growing a list to %zu items", need);
    mp_value **p = items_realloc(l->u.list.items, cap * sizeof *p, l->u.list.len * sizeof *p,
                                 ncap * sizeof *p, l);
    if (!p)
        return mp__error(-ENOMEM, "growing a list to %zu items", ncap);
    l->u.list.items = p;
    l->u.list.cap = ncap;
    return 0;
}

int mp__value_list_reserve(mp_value *list, size_t need) { return list_grow(list, need); }

int mp_value_list_append(mp_value *list, mp_value *item)
{
    if (!item)
        return mp__error(MP_EINVAL, "list append: NULL item");
    if (!list || list->type != MP_LIST) {
        mp_value_free(item);
        return mp__error(MP_ETYPE, "list append: target is %s, not a list",
                         list ? mp_type_name(list->type) : "NULL");
    }
    int r = list_grow(list, list->u.list.len + 1);
    if (r < 0) {
        mp_value_free(item);
        return r;
    }
    list->u.list.items[list->u.list.len++] = item;
    return 0;
}

/* ---- maps ----------------------------------------------------------------------- */

#define MP__INDEX_MIN 8 /* below this many entries a linear scan is faster */

/* mp_value_equal(k, key), with the common case of str (or bytes) keys done inline: such
 * a key equals only a key of its own type with the same bytes. */
static inline bool key_equal(const mp_value *k, const mp_value *key)
{
    if (key->type == MP_STR || key->type == MP_BYTES)
        return k->type == key->type && k->u.s.len == key->u.s.len &&
               memcmp(k->u.s.data, key->u.s.data, key->u.s.len) == 0;
    return mp_value_equal(k, key);
}

static size_t index_cap(const mp_value *m) { return m->u.map.index ? m->u.map.index[0] : 0; }

/* The index slot for key: holding its entry, or the empty one where it would go. */
static size_t *map_probe(const mp_value *m, const mp_value *key, uint64_t h)
{
    size_t mask = m->u.map.index[0] - 1, *slots = m->u.map.index + 1;
    for (size_t i = (size_t)h & mask;; i = (i + 1) & mask) {
        size_t e = slots[i];
        if (e == 0 || key_equal(m->u.map.keys[e - 1], key))
            return &slots[i];
    }
}

static int map_reindex(mp_value *m, size_t cap)
{
    size_t *idx = calloc(cap + 1, sizeof *idx);
    if (!idx)
        return mp__error(-ENOMEM, "map index of %zu slots", cap);
    free(m->u.map.index);
    idx[0] = cap;
    m->u.map.index = idx;
    for (size_t e = 0; e < m->u.map.len; e++)
        *map_probe(m, m->u.map.keys[e], mp__value_hash(m->u.map.keys[e])) = e + 1;
    return 0;
}

/* Entry index of a key equal to `key`, or (size_t)-1. */
static size_t map_find(const mp_value *m, const mp_value *key)
{
    if (m->u.map.index) {
        size_t e = *map_probe(m, key, mp__value_hash(key));
        return e ? e - 1 : (size_t)-1;
    }
    for (size_t e = 0; e < m->u.map.len; e++)
        if (key_equal(m->u.map.keys[e], key))
            return e;
    return (size_t)-1;
}

/* Keys and values share one block: keys[0..cap) then vals[0..cap). */
static int map_grow(mp_value *m, size_t need)
{
    size_t cap = m->u.map.cap;
    if (need <= cap)
        return 0;
    size_t ncap = cap ? cap * 2 : 4;
    while (ncap < need)
        ncap *= 2;
    if (ncap > SIZE_MAX / (2 * sizeof(mp_value *)))
        return mp__error(-ENOMEM, "growing a map to %zu entries", need);
    /* the keys move over with the block; the vals are moved up to their new place */
    mp_value **block = items_realloc(m->u.map.keys, 2 * cap * sizeof *block,
                                     (cap + m->u.map.len) * sizeof *block,
                                     2 * ncap * sizeof *block, m);
    if (!block)
        return mp__error(-ENOMEM, "growing a map to %zu entries", ncap);
    memmove(block + ncap, block + cap, m->u.map.len * sizeof *block);
    m->u.map.keys = block;
    m->u.map.vals = block + ncap;
    m->u.map.cap = ncap;
    return 0;
}

static int map_append(mp_value *m, mp_value *key, mp_value *val)
{
    size_t n = m->u.map.len;
    int r = map_grow(m, n + 1);
    if (r < 0)
        return r;
    m->u.map.keys[n] = key;
    m->u.map.vals[n] = val;
    m->u.map.len = n + 1;
    if (m->u.map.len < MP__INDEX_MIN)
        return 0;
    /* Keep the index at most half full. */
    if (m->u.map.len * 2 > index_cap(m)) {
        size_t cap = 16;
        while (cap < m->u.map.len * 4)
            cap *= 2;
        if (map_reindex(m, cap) < 0) {
            m->u.map.len = n; /* roll back; caller frees key and val */
            return mp_last_error_code();
        }
        return 0;
    }
    *map_probe(m, key, mp__value_hash(key)) = n + 1;
    return 0;
}

int mp__value_map_add(mp_value *m, mp_value *key, mp_value *val)
{
    return map_append(m, key, val);
}

int mp_value_map_set(mp_value *map, mp_value *key, mp_value *val)
{
    int r = 0;
    if (!key || !val)
        r = mp__error(MP_EINVAL, "map set: NULL %s", key ? "value" : "key");
    else if (!map || map->type != MP_MAP)
        r = mp__error(MP_ETYPE, "map set: target is %s, not a map",
                      map ? mp_type_name(map->type) : "NULL");
    if (r < 0) {
        mp_value_free(key);
        mp_value_free(val);
        return r;
    }
    size_t e = map_find(map, key);
    if (e != (size_t)-1) {
        /* Python keeps the first key object and replaces the value. */
        mp_value_free(key);
        mp_value_free(map->u.map.vals[e]);
        map->u.map.vals[e] = val;
        return 0;
    }
    r = map_append(map, key, val);
    if (r < 0) {
        mp_value_free(key);
        mp_value_free(val);
    }
    return r;
}

int mp_value_map_set_str(mp_value *map, const char *key, mp_value *val)
{
    mp_value *k = mp_value_str(key);
    if (!k) {
        mp_value_free(val);
        return mp_last_error_code();
    }
    return mp_value_map_set(map, k, val);
}

/* ---- reading -------------------------------------------------------------------- */

mp_type mp_value_type(const mp_value *v) { return v ? v->type : MP_NIL; }

const char *mp_type_name(mp_type t)
{
    static const char *const names[] = {"nil", "bool", "int", "float", "str",
                                        "bytes", "list", "map", "handle"};
    return (unsigned)t < MP__ARRAY_LEN(names) ? names[t] : "unknown";
}

size_t mp_value_len(const mp_value *v)
{
    if (!v)
        return 0;
    switch (v->type) {
    case MP_STR:
    case MP_BYTES:
        return v->u.s.len;
    case MP_LIST:
        return v->u.list.len;
    case MP_MAP:
        return v->u.map.len;
    default:
        return 0;
    }
}

bool mp_value_get_bool(const mp_value *v) { return v && v->type == MP_BOOL && v->u.b; }

int64_t mp_value_get_int(const mp_value *v) { return v && v->type == MP_INT ? v->u.i : 0; }

double mp_value_get_float(const mp_value *v)
{
    if (v && v->type == MP_FLOAT)
        return v->u.d;
    if (v && v->type == MP_INT)
        return (double)v->u.i;
    return 0.0;
}

static const char *get_buffer(const mp_value *v, mp_type t, size_t *len)
{
    if (!v || v->type != t) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = v->u.s.len;
    return v->u.s.data;
}

const char *mp_value_get_str(const mp_value *v, size_t *len) { return get_buffer(v, MP_STR, len); }

const void *mp_value_get_bytes(const mp_value *v, size_t *len)
{
    return get_buffer(v, MP_BYTES, len);
}

mp_value *mp_value_list_get(const mp_value *v, size_t i)
{
    return v && v->type == MP_LIST && i < v->u.list.len ? v->u.list.items[i] : NULL;
}

mp_value *mp_value_map_key(const mp_value *v, size_t i)
{
    return v && v->type == MP_MAP && i < v->u.map.len ? v->u.map.keys[i] : NULL;
}

mp_value *mp_value_map_val(const mp_value *v, size_t i)
{
    return v && v->type == MP_MAP && i < v->u.map.len ? v->u.map.vals[i] : NULL;
}

mp_value *mp_value_map_get(const mp_value *map, const mp_value *key)
{
    if (!map || map->type != MP_MAP || !key)
        return NULL;
    size_t e = map_find(map, key);
    return e == (size_t)-1 ? NULL : map->u.map.vals[e];
}

mp_value *mp_value_map_get_str(const mp_value *map, const char *key)
{
    if (!key)
        return NULL;
    /* A stack key avoids an allocation per lookup. */
    mp_value k = {.type = MP_STR};
    k.u.s.data = (char *)key;
    k.u.s.len = strlen(key);
    return mp_value_map_get(map, &k);
}

void *mp_value_get_handle(const mp_value *v, const mp_kind **kind)
{
    if (!v || v->type != MP_HANDLE) {
        if (kind)
            *kind = NULL;
        return NULL;
    }
    if (kind)
        *kind = v->u.h.kind;
    return v->u.h.obj;
}

void *mp_value_take_handle(mp_value *v, const mp_kind **kind)
{
    void *obj = mp_value_get_handle(v, kind);
    if (v && v->type == MP_HANDLE)
        v->u.h.owned = false;
    return obj;
}

/* ---- comparison and hashing ------------------------------------------------------ */

static int type_rank(mp_type t)
{
    /* ints and floats share a rank: they compare by value */
    static const int rank[] = {[MP_NIL] = 0,   [MP_BOOL] = 1, [MP_INT] = 2,
                               [MP_FLOAT] = 2, [MP_STR] = 3,  [MP_BYTES] = 4,
                               [MP_LIST] = 5,  [MP_MAP] = 6,  [MP_HANDLE] = 7};
    return (unsigned)t < MP__ARRAY_LEN(rank) ? rank[t] : 8;
}

#define CMP(a, b) ((a) < (b) ? -1 : (a) > (b) ? 1 : 0)

/* Exact int64 vs double comparison (no rounding of the int); NaN sorts last. */
static int cmp_int_float(int64_t i, double d)
{
    if (isnan(d))
        return -1;
    if (d >= 9223372036854775808.0)
        return -1;
    if (d < -9223372036854775808.0)
        return 1;
    double t = trunc(d);
    int64_t ti = (int64_t)t;
    if (i != ti)
        return CMP(i, ti);
    return d > t ? -1 : d < t ? 1 : 0;
}

static int cmp_float(double a, double b)
{
    if (isnan(a) || isnan(b))
        return isnan(a) - isnan(b);
    return CMP(a, b);
}

static int cmp_numbers(const mp_value *a, const mp_value *b)
{
    if (a->type == MP_INT && b->type == MP_INT)
        return CMP(a->u.i, b->u.i);
    if (a->type == MP_INT)
        return cmp_int_float(a->u.i, b->u.d);
    if (b->type == MP_INT)
        return -cmp_int_float(b->u.i, a->u.d);
    return cmp_float(a->u.d, b->u.d);
}

static int cmp_buffers(const mp_value *a, const mp_value *b)
{
    size_t n = a->u.s.len < b->u.s.len ? a->u.s.len : b->u.s.len;
    int c = n ? memcmp(a->u.s.data, b->u.s.data, n) : 0;
    return c ? (c < 0 ? -1 : 1) : CMP(a->u.s.len, b->u.s.len);
}

static int cmp_lists(const mp_value *a, const mp_value *b)
{
    size_t n = a->u.list.len < b->u.list.len ? a->u.list.len : b->u.list.len;
    for (size_t i = 0; i < n; i++) {
        int c = mp_value_compare(a->u.list.items[i], b->u.list.items[i]);
        if (c)
            return c;
    }
    return CMP(a->u.list.len, b->u.list.len);
}

/* Entry order sorted by key (maps compare as sets of entries, like Python dicts);
 * qsort_r keeps this reentrant for nested maps. */
static int cmp_entry_r(const void *x, const void *y, void *ctx)
{
    const mp_value *m = ctx;
    const size_t *i = x, *j = y;
    return mp_value_compare(m->u.map.keys[*i], m->u.map.keys[*j]);
}

static size_t *sorted_entries_r(const mp_value *m)
{
    size_t n = m->u.map.len;
    size_t *order = malloc((n ? n : 1) * sizeof *order);
    if (!order)
        return NULL;
    for (size_t i = 0; i < n; i++)
        order[i] = i;
    qsort_r(order, n, sizeof *order, cmp_entry_r, (void *)m);
    return order;
}

static int cmp_maps(const mp_value *a, const mp_value *b)
{
    if (a->u.map.len != b->u.map.len)
        return CMP(a->u.map.len, b->u.map.len);
    size_t *oa = sorted_entries_r(a), *ob = sorted_entries_r(b);
    int c = 0;
    if (!oa || !ob) {
        c = CMP((uintptr_t)a, (uintptr_t)b); /* out of memory: any consistent answer */
    } else {
        for (size_t i = 0; i < a->u.map.len && !c; i++) {
            c = mp_value_compare(a->u.map.keys[oa[i]], b->u.map.keys[ob[i]]);
            if (!c)
                c = mp_value_compare(a->u.map.vals[oa[i]], b->u.map.vals[ob[i]]);
        }
    }
    free(oa);
    free(ob);
    return c;
}

static int cmp_handles(const mp_value *a, const mp_value *b)
{
    if (a->u.h.kind != b->u.h.kind) {
        int c = strcmp(a->u.h.kind->name, b->u.h.kind->name);
        if (c)
            return c < 0 ? -1 : 1;
        return CMP((uintptr_t)a->u.h.kind, (uintptr_t)b->u.h.kind);
    }
    return CMP((uintptr_t)a->u.h.obj, (uintptr_t)b->u.h.obj);
}

int mp_value_compare(const mp_value *a, const mp_value *b)
{
    if (!a || !b)
        return CMP(a != NULL, b != NULL);
    int ra = type_rank(a->type), rb = type_rank(b->type);
    if (ra != rb)
        return CMP(ra, rb);
    switch (a->type) {
    case MP_NIL:
        return 0;
    case MP_BOOL:
        return CMP(a->u.b, b->u.b);
    case MP_INT:
    case MP_FLOAT:
        return cmp_numbers(a, b);
    case MP_STR:
    case MP_BYTES:
        return cmp_buffers(a, b);
    case MP_LIST:
        return cmp_lists(a, b);
    case MP_MAP:
        return cmp_maps(a, b);
    case MP_HANDLE:
        return cmp_handles(a, b);
    }
    return 0;
}

/* Maps: same size and every key of a maps to an equal value in b (no sorting). */
static bool maps_equal(const mp_value *a, const mp_value *b)
{
    if (a->u.map.len != b->u.map.len)
        return false;
    for (size_t i = 0; i < a->u.map.len; i++) {
        const mp_value *bv = mp_value_map_get(b, a->u.map.keys[i]);
        if (!bv || !mp_value_equal(a->u.map.vals[i], bv))
            return false;
    }
    return true;
}

bool mp_value_equal(const mp_value *a, const mp_value *b)
{
    if (a && b && a->type == MP_MAP && b->type == MP_MAP)
        return maps_equal(a, b);
    if (a && b && a->type == MP_LIST && b->type == MP_LIST) {
        if (a->u.list.len != b->u.list.len)
            return false;
        for (size_t i = 0; i < a->u.list.len; i++)
            if (!mp_value_equal(a->u.list.items[i], b->u.list.items[i]))
                return false;
        return true;
    }
    return mp_value_compare(a, b) == 0;
}

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

static uint64_t hash_float(double d)
{
    if (isnan(d))
        return 0x7ff8dead;
    /* Integral floats hash like the equal int so 1 and 1.0 find each other. */
    if (d >= -9223372036854775808.0 && d < 9223372036854775808.0 && d == trunc(d))
        return mix64((uint64_t)(int64_t)d);
    uint64_t bits;
    memcpy(&bits, &d, sizeof bits);
    return mix64(bits);
}

static uint64_t hash_bytes(const char *p, size_t n, uint64_t seed)
{
    uint64_t h = 0xcbf29ce484222325ULL ^ seed;
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)p[i];
        h *= 0x100000001b3ULL;
    }
    return mix64(h);
}

uint64_t mp__value_hash(const mp_value *v)
{
    if (!v)
        return 0;
    uint64_t h = 0;
    switch (v->type) {
    case MP_NIL:
        return 0x6e696c;
    case MP_BOOL:
        return v->u.b ? 0xb001 : 0xb000;
    case MP_INT:
        return mix64((uint64_t)v->u.i);
    case MP_FLOAT:
        return hash_float(v->u.d);
    case MP_STR:
    case MP_BYTES:
        return hash_bytes(v->u.s.data, v->u.s.len, v->type);
    case MP_LIST:
        h = 0x11;
        for (size_t i = 0; i < v->u.list.len; i++)
            h = mix64(h * 31 + mp__value_hash(v->u.list.items[i]));
        return h;
    case MP_MAP:
        /* order-independent, like map equality */
        for (size_t i = 0; i < v->u.map.len; i++)
            h += mix64(mp__value_hash(v->u.map.keys[i]) * 7 +
                       mp__value_hash(v->u.map.vals[i]));
        return h ^ 0x3a9;
    case MP_HANDLE:
        return mix64((uint64_t)(uintptr_t)v->u.h.obj);
    }
    return 0;
}

/* ---- copy and free -------------------------------------------------------------- */

static mp_value *copy_container(const mp_value *v)
{
    mp_value *c = mp__value_new(v->type);
    if (!c)
        return NULL;
    int r = 0;
    if (v->type == MP_LIST) {
        for (size_t i = 0; i < v->u.list.len && r == 0; i++)
            r = mp_value_list_append(c, mp_value_copy(v->u.list.items[i]));
    } else {
        for (size_t i = 0; i < v->u.map.len && r == 0; i++) {
            mp_value *k = mp_value_copy(v->u.map.keys[i]);
            mp_value *x = mp_value_copy(v->u.map.vals[i]);
            r = (k && x) ? map_append(c, k, x) : mp_last_error_code();
            if (r < 0) {
                mp_value_free(k);
                mp_value_free(x);
            }
        }
    }
    if (r < 0) {
        mp_value_free(c);
        return NULL;
    }
    return c;
}

mp_value *mp_value_copy(const mp_value *v)
{
    if (!v) {
        mp__error(MP_EINVAL, "mp_value_copy(NULL)");
        return NULL;
    }
    switch (v->type) {
    case MP_STR:
    case MP_BYTES:
        return new_buffer(v->type, v->u.s.data, v->u.s.len);
    case MP_LIST:
    case MP_MAP:
        return copy_container(v);
    case MP_HANDLE:
        return mp_value_handle(v->u.h.kind, v->u.h.obj);
    default: {
        mp_value *c = mp__value_new(v->type);
        if (c)
            c->u = v->u;
        return c;
    }
    }
}

/* Hand a chain of n blocks of class c (head..tail) to the block cache, freeing what
 * does not fit. */
static void cache_splice(int c, value_block *head, value_block *tail, unsigned n)
{
    while (head && block_count[c] + n > VALUE_CACHE_MAX) { /* cache full */
        value_block *b = head;
        head = b->next;
        n--;
        free(b);
    }
    if (!head)
        return;
    if (!block_registered)
        block_register();
    tail->next = block_cache[c];
    block_cache[c] = head;
    block_count[c] += n;
}

/* The items of a container: scalars (most items) are chained up locally and handed to
 * the block cache in one go (no per-item cache bookkeeping); containers and handles go
 * through mp_value_free. */
static void free_items(mp_value **items, size_t n)
{
    value_block *h0 = NULL, *t0 = NULL, *h1 = NULL, *t1 = NULL;
    unsigned n0 = 0, n1 = 0;
    for (size_t i = 0; i < n; i++) {
        mp_value *x = items[i];
        if (!x || x->type >= MP_LIST || x->blk) { /* blk: released to its mp__vblock */
            mp_value_free(x);
            continue;
        }
        value_block *b = (value_block *)x;
        if (x->type < MP_STR || sizeof *x + x->u.s.len + 1 <= VALUE_BLOCK) {
            b->next = h0;
            h0 = b;
            t0 = t0 ? t0 : b;
            n0++;
        } else if (sizeof *x + x->u.s.len + 1 <= VALUE_BLOCK_LARGE) {
            b->next = h1; /* str and bytes hold their bytes in the block */
            h1 = b;
            t1 = t1 ? t1 : b;
            n1++;
        } else {
            free(x);
        }
    }
    if (!VALUE_CACHE) {
        for (value_block *b = h0, *nx; b; b = nx)
            nx = b->next, free(b);
        for (value_block *b = h1, *nx; b; b = nx)
            nx = b->next, free(b);
        return;
    }
    if (h0)
        cache_splice(0, h0, t0, n0);
    if (h1)
        cache_splice(1, h1, t1, n1);
}

/* Release what v holds besides its own block (a container's items, an owned handle's
 * object); v's fields are left stale. */
static void release_contents(mp_value *v)
{
    switch (v->type) {
    case MP_STR:
    case MP_BYTES:
        break; /* the bytes are part of the value's own allocation */
    case MP_LIST:
        free_items(v->u.list.items, v->u.list.len);
        if (v->u.list.items)
            items_free(v->u.list.items, v->u.list.cap * sizeof(mp_value *), v->cached_items);
        break;
    case MP_MAP:
        free_items(v->u.map.keys, v->u.map.len);
        free_items(v->u.map.vals, v->u.map.len);
        if (v->u.map.keys) /* vals share the block */
            items_free(v->u.map.keys, 2 * v->u.map.cap * sizeof(mp_value *), v->cached_items);
        free(v->u.map.index);
        break;
    case MP_HANDLE:
        if (v->u.h.owned && v->u.h.kind->release_obj)
            v->u.h.kind->release_obj(v->u.h.obj);
        break;
    default:
        break;
    }
}

void mp_value_free(mp_value *v)
{
    if (!v)
        return;
    release_contents(v);
    if (v->blk)
        vblock_release(v);
    else
        block_free(v, value_size(v));
}

/* ---- reuse: a value set to new content in place ---------------------------------------- */

/* v emptied and made a zeroed value of type t, keeping its block (blk) and thus its
 * pointer. Its block is never smaller than value_size() says (str/bytes are set in
 * place only within the size class they already had), so freeing it later is right. */
static void reset(mp_value *v, mp_type t)
{
    if (v->type >= MP_LIST) /* scalars, str and bytes hold nothing outside their block */
        release_contents(v);
    *v = (mp_value){.type = t, .blk = v->blk};
}

int mp_value_set_nil(mp_value *v)
{
    if (!v)
        return mp__error(MP_EINVAL, "mp_value_set_nil: NULL value");
    reset(v, MP_NIL);
    return 0;
}

int mp_value_set_bool(mp_value *v, bool b)
{
    if (!v)
        return mp__error(MP_EINVAL, "mp_value_set_bool: NULL value");
    reset(v, MP_BOOL);
    v->u.b = b;
    return 0;
}

int mp_value_set_int(mp_value *v, int64_t i)
{
    if (!v)
        return mp__error(MP_EINVAL, "mp_value_set_int: NULL value");
    if (v->type != MP_INT)
        reset(v, MP_INT);
    v->u.i = i;
    return 0;
}

int mp_value_set_float(mp_value *v, double d)
{
    if (!v)
        return mp__error(MP_EINVAL, "mp_value_set_float: NULL value");
    reset(v, MP_FLOAT);
    v->u.d = d;
    return 0;
}

/* The bytes a value's block surely has: its size class (what block_malloc gave for
 * value_size), or just the struct for a value in an mp__vblock. */
static size_t block_room(const mp_value *v)
{
    size_t size = value_size(v);
    if (v->blk)
        return sizeof *v;
    return size <= VALUE_BLOCK ? VALUE_BLOCK : size <= VALUE_BLOCK_LARGE ? VALUE_BLOCK_LARGE : size;
}

int mp__value_set_buffer(mp_value **v, mp_type t, const void *data, size_t len)
{
    if (!data && len > 0)
        return mp__error(MP_EINVAL, "NULL data with length %zu", len);
    mp_value *old = *v;
    if (old && len <= SIZE_MAX - sizeof *old - 1 && sizeof *old + len + 1 <= block_room(old)) {
        char *dst = (char *)(old + 1);
        if (len)
            memmove(dst, data, len); /* data may be old's own bytes */
        reset(old, t);
        old->u.s.data = dst;
        old->u.s.data[len] = '\0';
        old->u.s.len = len;
        return 0;
    }
    mp_value *nv = new_buffer(t, data, len);
    if (!nv)
        return mp_last_error_code();
    mp_value_free(old);
    *v = nv;
    return 0;
}

int mp_value_set_bytes(mp_value **v, const void *data, size_t len)
{
    if (!v)
        return mp__error(MP_EINVAL, "mp_value_set_bytes: NULL value pointer");
    return mp__value_set_buffer(v, MP_BYTES, data, len);
}

int mp_value_set_strn(mp_value **v, const char *s, size_t len)
{
    if (!v)
        return mp__error(MP_EINVAL, "mp_value_set_strn: NULL value pointer");
    return mp__value_set_buffer(v, MP_STR, s, len);
}

/* ---- for the manager: removing map entries ------------------------------------------- */

/* Entry index of a key equal to key in map m, or -1. */
long mp__value_map_index(const mp_value *m, const mp_value *key)
{
    if (!m || m->type != MP_MAP || !key)
        return -1;
    size_t e = map_find(m, key);
    return e == (size_t)-1 ? -1 : (long)e;
}

/* Remove entry e of map m, handing its key and value to the caller (*key, *val; NULL to
 * free them). Later entries keep their order; the index is rebuilt (O(n)). */
int mp__value_map_remove(mp_value *m, size_t e, mp_value **key, mp_value **val)
{
    if (!m || m->type != MP_MAP || e >= m->u.map.len)
        return mp__error(MP_EINVAL, "map remove: no entry %zu", e);
    mp_value *k = m->u.map.keys[e], *v = m->u.map.vals[e];
    size_t tail = m->u.map.len - e - 1;
    memmove(m->u.map.keys + e, m->u.map.keys + e + 1, tail * sizeof *m->u.map.keys);
    memmove(m->u.map.vals + e, m->u.map.vals + e + 1, tail * sizeof *m->u.map.vals);
    m->u.map.len--;
    if (key)
        *key = k;
    else
        mp_value_free(k);
    if (val)
        *val = v;
    else
        mp_value_free(v);
    if (m->u.map.index) {
        if (m->u.map.len < MP__INDEX_MIN) {
            free(m->u.map.index);
            m->u.map.index = NULL;
        } else if (map_reindex(m, index_cap(m)) < 0) {
            free(m->u.map.index); /* fall back to linear search */
            m->u.map.index = NULL;
        }
    }
    return 0;
}
