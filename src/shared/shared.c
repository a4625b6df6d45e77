/* Value, Array, raw variants and structs in anonymous shared memory.
 *
 * DESIGN: one memfd segment per object: a header, then (unless raw or given a lock)
 * an RLock (src/sync: robust process-shared mutex), then the data at a 64-byte
 * aligned offset. A user-supplied lock is referenced, not copied, and travels as a
 * second fd. Nothing but the lock coordinates access; the get/set helpers take it.
 */
#define _GNU_SOURCE
#include "multiproc/shared.h"
#include "sync/sync_internal.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SHARED_MAGIC 0x53484152u /* "SHAR" */
#define DATA_ALIGN 64

enum { LOCK_NONE, LOCK_OWN, LOCK_EXTERNAL };

/* The lock comes first and a value of up to 8 bytes shares its cache line, so a
 * locked increment touches one line (as a mutex next to its counter does). */
typedef struct shared_hdr {
    mp__lock_sh lock; /* used when lock_mode == LOCK_OWN */
    char small_pad[56 - sizeof(mp__lock_sh)];
    uint64_t small;   /* the data when it fits in 8 bytes */
    uint32_t magic;
    uint32_t typecode;
    uint64_t itemsize;
    uint64_t length;
    uint64_t data_off;
    uint32_t lock_mode;
    uint32_t pad;
} shared_hdr;

_Static_assert(sizeof(mp__lock_sh) <= 56, "the lock must leave room for a small value");

struct mp_shared {
    mp__shm seg;
    shared_hdr *hdr;
    void *data;
    mp_lock *lock; /* NULL for raw */
    bool synced;   /* a synchronized() handle: its lock is the handle's, not the segment's */
};

size_t mp_typecode_size(char t)
{
    switch (t) {
    case 'b': case 'B': case 'c': return 1;
    case 'h': case 'H': return 2;
    case 'i': case 'I': case 'f': return 4;
    case 'l': case 'L': case 'q': case 'Q': case 'd': return 8;
    default: return 0;
    }
}

static size_t data_offset(size_t bytes)
{
    if (bytes <= 8)
        return offsetof(shared_hdr, small);
    return (sizeof(shared_hdr) + DATA_ALIGN - 1) / DATA_ALIGN * DATA_ALIGN;
}

static mp_shared *wrap(mp__shm *seg)
{
    mp_shared *s = mp__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->seg = *seg;
    s->hdr = seg->addr;
    s->data = (char *)seg->addr + s->hdr->data_off;
    return s;
}

static int attach_lock(mp_shared *s, const mp_shared_opts *opts)
{
    if (s->hdr->lock_mode == LOCK_NONE)
        return 0;
    if (s->hdr->lock_mode == LOCK_EXTERNAL) {
        s->lock = mp__lock_ref(opts->lock);
        return 0;
    }
    int r = mp__lock_sh_init(&s->hdr->lock, true);
    if (r < 0)
        return r;
    s->lock = mp__lock_view(&s->seg, offsetof(shared_hdr, lock));
    return s->lock ? 0 : -ENOMEM;
}

static mp_shared *create(char typecode, size_t itemsize, size_t length, const void *initial,
                         const mp_shared_opts *opts)
{
    if (itemsize == 0 || length == 0 || length > (SIZE_MAX - data_offset(SIZE_MAX)) / itemsize) {
        mp__error(MP_EINVAL, "shared %s: bad size (%zu items of %zu bytes)",
                  typecode ? "array" : "struct", length, itemsize);
        return NULL;
    }
    mp_shared_opts none = {0};
    if (!opts)
        opts = &none;
    mp__shm seg;
    size_t off = data_offset(itemsize * length);
    size_t total = off + itemsize * length;
    if (total < sizeof(shared_hdr))
        total = sizeof(shared_hdr);
    if (mp__shm_create(&seg, total, "mp-shared") < 0)
        return NULL;
    shared_hdr *h = seg.addr;
    h->magic = SHARED_MAGIC;
    h->typecode = (uint32_t)(unsigned char)typecode;
    h->itemsize = itemsize;
    h->length = length;
    h->data_off = off;
    h->lock_mode = opts->raw ? LOCK_NONE : opts->lock ? LOCK_EXTERNAL : LOCK_OWN;
    mp_shared *s = wrap(&seg);
    if (!s || attach_lock(s, opts) < 0) {
        if (s && s->lock)
            mp_lock_free(s->lock);
        free(s);
        mp__shm_release(&seg);
        return NULL;
    }
    if (initial)
        memcpy(s->data, initial, itemsize * length);
    return s;
}

mp_shared *mp_shared_array_new(char typecode, size_t length, const void *initial,
                               const mp_shared_opts *opts)
{
    size_t size = mp_typecode_size(typecode);
    if (!size) {
        mp__error(MP_EINVAL, "unknown typecode '%c' (use one of bBhHiIlLqQfdc)",
                  typecode ? typecode : '?');
        return NULL;
    }
    return create(typecode, size, length, initial, opts);
}

mp_shared *mp_shared_value_new(char typecode, const void *initial, const mp_shared_opts *opts)
{
    return mp_shared_array_new(typecode, 1, initial, opts);
}

mp_shared *mp_raw_value_new(char typecode, const void *initial)
{
    mp_shared_opts o = {.raw = true};
    return mp_shared_array_new(typecode, 1, initial, &o);
}

mp_shared *mp_raw_array_new(char typecode, size_t length, const void *initial)
{
    mp_shared_opts o = {.raw = true};
    return mp_shared_array_new(typecode, length, initial, &o);
}

mp_shared *mp_shared_struct_new(size_t size, const void *initial, const mp_shared_opts *opts)
{
    return create(0, size, 1, initial, opts);
}

void *mp_shared_ptr(const mp_shared *s) { return s ? s->data : NULL; }
size_t mp_shared_len(const mp_shared *s) { return s ? (size_t)s->hdr->length : 0; }
size_t mp_shared_itemsize(const mp_shared *s) { return s ? (size_t)s->hdr->itemsize : 0; }
char mp_shared_typecode(const mp_shared *s) { return s ? (char)s->hdr->typecode : 0; }
mp_lock *mp_shared_get_lock(const mp_shared *s) { return s ? s->lock : NULL; }

int mp_shared_acquire(mp_shared *s, double timeout)
{
    return s && s->lock ? mp_lock_acquire(s->lock, timeout) : 0;
}

int mp_shared_release(mp_shared *s) { return s && s->lock ? mp_lock_release(s->lock) : 0; }

/* ---- typed access ------------------------------------------------------------------- */

/* Take the lock for a helper unless the caller already holds it (so a plain Lock
 * held around a get/set does not deadlock); a dead previous holder does not stop a
 * read or write. Returns true if it must be released afterwards. */
static bool lock_for_access(mp_shared *s)
{
    if (!s->lock || mp_lock_is_mine(s->lock))
        return false;
    int r;
    while ((r = mp_lock_acquire(s->lock, -1)) == MP_EINTERRUPTED)
        ;
    return r == 0 || r == MP_EOWNERDEAD;
}

static void unlock_after_access(mp_shared *s, bool locked)
{
    if (locked)
        mp_lock_release(s->lock);
}

static int check_index(const mp_shared *s, size_t i)
{
    if (!s)
        return mp__error(MP_EINVAL, "NULL shared object");
    if (i >= s->hdr->length)
        return mp__error(MP_ERANGE, "index %zu out of range (length %llu)", i,
                         (unsigned long long)s->hdr->length);
    if (s->hdr->typecode == 0)
        return mp__error(MP_ETYPE, "a shared struct has no typed items");
    return 0;
}

static double load_float(char t, const void *p)
{
    if (t == 'f')
        return *(const float *)p;
    return *(const double *)p;
}

static int64_t load_int(char t, const void *p)
{
    switch (t) {
    case 'b': return *(const int8_t *)p;
    case 'B': case 'c': return *(const uint8_t *)p;
    case 'h': return *(const int16_t *)p;
    case 'H': return *(const uint16_t *)p;
    case 'i': return *(const int32_t *)p;
    case 'I': return *(const uint32_t *)p;
    case 'l': case 'q': case 'L': case 'Q': return *(const int64_t *)p;
    case 'f': case 'd': return (int64_t)load_float(t, p);
    default: return 0;
    }
}

int64_t mp_shared_get_int(mp_shared *s, size_t i)
{
    if (check_index(s, i) < 0)
        return 0;
    char t = (char)s->hdr->typecode;
    bool locked = lock_for_access(s);
    int64_t v = load_int(t, (char *)s->data + i * s->hdr->itemsize);
    unlock_after_access(s, locked);
    return v;
}

double mp_shared_get_float(mp_shared *s, size_t i)
{
    if (check_index(s, i) < 0)
        return 0;
    char t = (char)s->hdr->typecode;
    void *p = (char *)s->data + i * s->hdr->itemsize;
    bool locked = lock_for_access(s);
    double v;
    if (t == 'f' || t == 'd')
        v = load_float(t, p);
    else if (t == 'L' || t == 'Q')
        v = (double)*(uint64_t *)p;
    else
        v = (double)load_int(t, p);
    unlock_after_access(s, locked);
    return v;
}

static bool int_fits(char t, int64_t v)
{
    switch (t) {
    case 'b': return v >= INT8_MIN && v <= INT8_MAX;
    case 'B': case 'c': return v >= 0 && v <= UINT8_MAX;
    case 'h': return v >= INT16_MIN && v <= INT16_MAX;
    case 'H': return v >= 0 && v <= UINT16_MAX;
    case 'i': return v >= INT32_MIN && v <= INT32_MAX;
    case 'I': return v >= 0 && v <= UINT32_MAX;
    case 'L': case 'Q': return v >= 0;
    default: return true;
    }
}

static void store_int(char t, void *p, int64_t v)
{
    switch (t) {
    case 'b': case 'B': case 'c': *(uint8_t *)p = (uint8_t)v; break;
    case 'h': case 'H': *(uint16_t *)p = (uint16_t)v; break;
    case 'i': case 'I': *(uint32_t *)p = (uint32_t)v; break;
    case 'f': *(float *)p = (float)v; break;
    case 'd': *(double *)p = (double)v; break;
    default: *(int64_t *)p = v; break;
    }
}

int mp_shared_set_int(mp_shared *s, size_t i, int64_t v)
{
    int r = check_index(s, i);
    if (r < 0)
        return r;
    char t = (char)s->hdr->typecode;
    if (!int_fits(t, v))
        return mp__error(MP_ERANGE, "%lld does not fit typecode '%c'", (long long)v, t);
    bool locked = lock_for_access(s);
    store_int(t, (char *)s->data + i * s->hdr->itemsize, v);
    unlock_after_access(s, locked);
    return 0;
}

int mp_shared_set_float(mp_shared *s, size_t i, double v)
{
    int r = check_index(s, i);
    if (r < 0)
        return r;
    char t = (char)s->hdr->typecode;
    if (t != 'f' && t != 'd')
        return mp__error(MP_ETYPE, "typecode '%c' holds integers, not floats", t);
    bool locked = lock_for_access(s);
    void *p = (char *)s->data + i * s->hdr->itemsize;
    if (t == 'f')
        *(float *)p = (float)v;
    else
        *(double *)p = v;
    unlock_after_access(s, locked);
    return 0;
}

static int check_range(const mp_shared *s, size_t start, size_t n)
{
    if (!s)
        return mp__error(MP_EINVAL, "NULL shared object");
    if (start > s->hdr->length || n > s->hdr->length - start)
        return mp__error(MP_ERANGE, "items %zu..%zu out of range (length %llu)", start,
                         start + n, (unsigned long long)s->hdr->length);
    return 0;
}

int mp_shared_read(mp_shared *s, size_t start, size_t n, void *out)
{
    int r = check_range(s, start, n);
    if (r < 0)
        return r;
    bool locked = lock_for_access(s);
    memcpy(out, (char *)s->data + start * s->hdr->itemsize, n * s->hdr->itemsize);
    unlock_after_access(s, locked);
    return 0;
}

int mp_shared_write(mp_shared *s, size_t start, size_t n, const void *in)
{
    int r = check_range(s, start, n);
    if (r < 0)
        return r;
    bool locked = lock_for_access(s);
    memcpy((char *)s->data + start * s->hdr->itemsize, in, n * s->hdr->itemsize);
    unlock_after_access(s, locked);
    return 0;
}

void mp_shared_free(mp_shared *s)
{
    if (!s)
        return;
    mp_lock_free(s->lock); /* before unmapping: an own lock lives in the segment */
    mp__shm_release(&s->seg);
    free(s);
}

/* ---- sharedctypes.copy and synchronized ---------------------------------------------- */

mp_shared *mp_shared_copy(mp_shared *s)
{
    if (!s) {
        mp__error(MP_EINVAL, "NULL shared object");
        return NULL;
    }
    mp_shared_opts raw = {.raw = true};
    mp_shared *c = create((char)s->hdr->typecode, s->hdr->itemsize, s->hdr->length, NULL, &raw);
    if (c) {
        bool locked = lock_for_access(s);
        memcpy(c->data, s->data, s->hdr->itemsize * s->hdr->length);
        unlock_after_access(s, locked);
    }
    return c;
}

mp_shared *mp_shared_synchronized(mp_shared *s, mp_lock *lock)
{
    if (!s || s->lock) {
        mp__error(MP_EINVAL, s ? "object already synchronized" : "NULL shared object");
        return NULL;
    }
    int fd = dup(s->seg.fd);
    mp__shm seg;
    if (fd < 0 || mp__shm_attach(&seg, fd, sizeof(shared_hdr)) < 0) {
        if (fd < 0)
            mp__errno("synchronized: dup");
        return NULL;
    }
    mp_shared *w = wrap(&seg);
    mp_lock *l = w ? (lock ? mp__lock_ref(lock) : mp_rlock_new()) : NULL;
    if (!l) {
        free(w);
        mp__shm_release(&seg);
        return NULL;
    }
    w->lock = l;
    w->synced = true;
    return w;
}

/* ---- Array('c'): value and raw ------------------------------------------------------- */

static int check_chars(const mp_shared *s)
{
    if (!s)
        return mp__error(MP_EINVAL, "NULL shared object");
    if (s->hdr->typecode != 'c')
        return mp__error(MP_ETYPE, "value/raw are for Array('c'), not '%c'",
                         s->hdr->typecode ? (char)s->hdr->typecode : '?');
    return 0;
}

/* The bytes (all of them, or up to the first NUL), NUL-terminated, malloc'd. */
static char *chars_get(mp_shared *s, bool raw, size_t *len)
{
    if (len)
        *len = 0;
    if (check_chars(s) < 0)
        return NULL;
    size_t n = (size_t)s->hdr->length;
    char *out = mp__calloc(1, n + 1);
    if (!out)
        return NULL;
    bool locked = lock_for_access(s);
    memcpy(out, s->data, n);
    unlock_after_access(s, locked);
    if (!raw)
        n = strnlen(out, n);
    if (len)
        *len = n;
    return out;
}

char *mp_shared_chars_value(mp_shared *s, size_t *len) { return chars_get(s, false, len); }

char *mp_shared_chars_raw(mp_shared *s, size_t *len) { return chars_get(s, true, len); }

static int chars_set(mp_shared *s, const void *in, size_t n, bool raw)
{
    int r = check_chars(s);
    if (r < 0)
        return r;
    if (!in && n)
        return mp__error(MP_EINVAL, "NULL bytes");
    if (n > s->hdr->length)
        return mp__error(MP_ERANGE, "byte string too long (%zu bytes, array of %llu)", n,
                         (unsigned long long)s->hdr->length);
    bool locked = lock_for_access(s);
    if (n)
        memcpy(s->data, in, n);
    if (!raw && n < s->hdr->length)
        ((char *)s->data)[n] = '\0';
    unlock_after_access(s, locked);
    return 0;
}

int mp_shared_chars_set_value(mp_shared *s, const void *bytes, size_t len)
{
    return chars_set(s, bytes, len, false);
}

int mp_shared_chars_set_raw(mp_shared *s, const void *bytes, size_t len)
{
    return chars_set(s, bytes, len, true);
}

/* ---- passing to other processes ------------------------------------------------------
 * Wire: [u32 magic][u32 lock blob length][lock blob]; fds: the segment, then the
 * external lock's segment if any. */

static int shared_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    mp_shared *s = obj;
    void *lb = NULL;
    size_t lblen = 0, lnfds = 0;
    if (s->hdr->lock_mode == LOCK_EXTERNAL || s->synced) {
        int r = mp__lock_export(s->lock, &lb, &lblen, fds + 1, &lnfds);
        if (r < 0)
            return r;
    }
    char *buf = malloc(8 + lblen);
    if (!buf) {
        free(lb);
        return mp__error(-ENOMEM, "exporting a shared object");
    }
    uint32_t hdr[2] = {SHARED_MAGIC, (uint32_t)lblen};
    memcpy(buf, hdr, 8);
    if (lblen)
        memcpy(buf + 8, lb, lblen);
    free(lb);
    fds[0] = s->seg.fd;
    *nfds = 1 + lnfds;
    *data = buf;
    *len = 8 + lblen;
    return 0;
}

static int import_fail(int *fds, size_t nfds, const char *why)
{
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    return mp__error(MP_EPROTO, "shared object handle: %s", why);
}

/* The segment came from another process: its header must describe data that lies
 * inside the segment, checked without an overflow (a hostile length times itemsize
 * can wrap around to a small number), and a lock mode we know. */
static bool header_fits(const shared_hdr *h, size_t size)
{
    if (h->magic != SHARED_MAGIC || h->itemsize == 0 || h->length == 0 ||
        h->lock_mode > LOCK_EXTERNAL || h->data_off > size)
        return false;
    if (h->data_off == offsetof(shared_hdr, small)) /* up to 8 bytes inside the header */
        return h->length <= sizeof h->small / h->itemsize;
    return h->data_off >= sizeof(shared_hdr) && h->length <= (size - h->data_off) / h->itemsize;
}

static int shared_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    uint32_t hdr[2] = {0, 0};
    if (len >= 8)
        memcpy(hdr, data, 8);
    if (hdr[0] != SHARED_MAGIC || hdr[1] != len - 8 || nfds != 1 + (hdr[1] > 0))
        return import_fail(fds, nfds, "bad description");
    mp_shared_opts opts = {0};
    if (hdr[1]) {
        int r = mp__lock_import((const char *)data + 8, len - 8, fds + 1, 1, &opts.lock);
        if (r < 0) {
            close(fds[0]);
            return r;
        }
    }
    mp__shm seg;
    int r = mp__shm_attach(&seg, fds[0], sizeof(shared_hdr));
    shared_hdr *h = r < 0 ? NULL : seg.addr;
    if (h && !header_fits(h, seg.size)) {
        mp__shm_release(&seg);
        r = mp__error(MP_EPROTO, "shared object handle: not a shared object segment");
    }
    mp_shared *s = r < 0 ? NULL : wrap(&seg);
    if (s) {
        if (h->lock_mode == LOCK_OWN)
            s->lock = mp__lock_view(&s->seg, offsetof(shared_hdr, lock));
        else if (opts.lock) /* the segment's external lock, or a synchronized() one */
            s->lock = mp__lock_ref(opts.lock);
        s->synced = h->lock_mode == LOCK_NONE && opts.lock;
    } else if (r >= 0) {
        mp__shm_release(&seg);
        r = -ENOMEM;
    }
    mp_lock_free(opts.lock); /* s holds its own reference */
    *obj = s;
    return r < 0 ? r : 0;
}

static void shared_release(void *obj) { mp_shared_free(obj); }

const mp_kind mp_kind_shared = {"shared", shared_export, shared_import, shared_release};

__attribute__((constructor(200))) static void shared_register_kind(void)
{
    mp_kind_register(&mp_kind_shared);
}
