/* Named SharedMemory (POSIX shm in /dev/shm) and ShareableList on top of it.
 *
 * A created segment is registered with the resource tracker (src/tracker.c) unless
 * the caller opts out - before shm_open creates it, so a program SIGKILLed at any point
 * (even between shm_open and ftruncate) leaves no segment; a failed create unregisters.
 * Unlink unregisters it. Attaching never registers (Python's
 * attach-registers behaviour makes an attaching program unlink the creator's segment
 * when it exits). Handles travel between processes by fd (the mapping works even
 * after the name is unlinked) together with the tracker pipe, so a child started
 * without it still reports to the program's tracker.
 *
 * ShareableList: exactly Python's layout (see the ShareableList section), so a list made
 * by either language is read and written by the other. As in Python, str/bytes items
 * lose trailing NULs, and the per-item format and code are re-read on every access (any
 * process may change an item's type). No lock: like Python's, concurrent writers must
 * coordinate themselves.
 */
#define _GNU_SOURCE
#include "multiproc/shared.h"
#include "internal/common.h"
#include "internal/tracker.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#define SHM_NAME_MAX 200

struct mp_shm {
    char name[SHM_NAME_MAX + 2]; /* with the leading '/' */
    int fd;
    void *addr;
    size_t size;
};

/* ---- SharedMemory ------------------------------------------------------------------- */

static int check_name(const char *name, char out[SHM_NAME_MAX + 2])
{
    const char *n = name[0] == '/' ? name + 1 : name;
    size_t len = strlen(n);
    if (len == 0 || len > SHM_NAME_MAX || strchr(n, '/') || strchr(n, '\n') ||
        strcmp(n, ".") == 0 || strcmp(n, "..") == 0)
        return mp__error(MP_EINVAL, "bad shared memory name '%s'", name);
    out[0] = '/';
    memcpy(out + 1, n, len + 1);
    return 0;
}

/* Generated names start with MULTIPROC_SHM_PREFIX when it is set and sane, else "mp". */
static const char *name_prefix(void)
{
    const char *p = secure_getenv("MULTIPROC_SHM_PREFIX");
    size_t n = p ? strlen(p) : 0;
    if (n == 0 || n > 64 || strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789._") != n)
        return "mp";
    return p;
}

static void generate_name(char out[SHM_NAME_MAX + 2])
{
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, GRND_NONBLOCK) != (ssize_t)sizeof rnd)
        rnd = (uint32_t)(mp__now() * 1e9) ^ (uint32_t)getpid();
    snprintf(out, SHM_NAME_MAX + 2, "/%s-%d-%08x", name_prefix(), (int)getpid(), rnd);
}

static mp_shm *map_fd(int fd, const char *slash_name, size_t size)
{
    void *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) {
        mp__errno("mmap shared memory '%s' (%zu bytes)", slash_name, size);
        return NULL;
    }
    mp_shm *m = mp__calloc(1, sizeof *m);
    if (!m) {
        munmap(addr, size);
        return NULL;
    }
    snprintf(m->name, sizeof m->name, "%s", slash_name);
    m->fd = fd;
    m->addr = addr;
    m->size = size;
    return m;
}

/* Create the segment, registered first unless `untracked`. */
static int open_new(const char *name, char slash[SHM_NAME_MAX + 2], unsigned mode,
                    bool untracked)
{
    for (int tries = 0; tries < 100; tries++) {
        if (name) {
            int r = check_name(name, slash);
            if (r < 0)
                return r;
        } else {
            generate_name(slash);
        }
        if (!untracked && mp__tracker_register(MP__RT_SHM, slash) < 0)
            return mp_last_error_code();
        int fd = mp__fd_high(shm_open(slash, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode ? mode : 0600));
        if (fd >= 0)
            return fd;
        int err = errno;
        if (!untracked)
            mp__tracker_unregister(MP__RT_SHM, slash);
        errno = err;
        if (errno != EEXIST || name)
            return mp__errno("shm_open '%s'", slash + 1);
    }
    return mp__error(-EEXIST, "could not find a free shared memory name");
}

mp_shm *mp_shm_create(const char *name, size_t size, const mp_shm_opts *opts)
{
    mp_shm_opts none = {0};
    if (!opts)
        opts = &none;
    if (size == 0) {
        mp__error(MP_EINVAL, "shared memory size must be positive");
        return NULL;
    }
    char slash[SHM_NAME_MAX + 2];
    int fd = open_new(name, slash, opts->mode, opts->untracked);
    if (fd < 0)
        return NULL;
    mp_shm *m = NULL;
    if (ftruncate(fd, (off_t)size) < 0)
        mp__errno("ftruncate shared memory '%s' to %zu bytes", slash + 1, size);
    else
        m = map_fd(fd, slash, size);
    if (!m) { /* keep the first error's message: these calls cannot fail usefully */
        shm_unlink(slash);
        close(fd);
        if (!opts->untracked)
            mp__tracker_unregister(MP__RT_SHM, slash);
    }
    return m;
}

mp_shm *mp_shm_attach(const char *name)
{
    char slash[SHM_NAME_MAX + 2];
    if (!name || check_name(name, slash) < 0) {
        if (!name)
            mp__error(MP_EINVAL, "attaching shared memory needs a name");
        return NULL;
    }
    int fd = mp__fd_high(shm_open(slash, O_RDWR | O_CLOEXEC, 0));
    if (fd < 0) {
        mp__errno("shm_open '%s'", slash + 1);
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size <= 0) {
        if (st.st_size <= 0)
            mp__error(MP_EINVAL, "shared memory '%s' is empty", slash + 1);
        else
            mp__errno("fstat shared memory '%s'", slash + 1);
        close(fd);
        return NULL;
    }
    mp_shm *m = map_fd(fd, slash, (size_t)st.st_size);
    if (!m)
        close(fd);
    return m;
}

const char *mp_shm_name(const mp_shm *m) { return m ? m->name + 1 : NULL; }
void *mp_shm_buf(const mp_shm *m) { return m ? m->addr : NULL; }
size_t mp_shm_size(const mp_shm *m) { return m ? m->size : 0; }

void mp_shm_close(mp_shm *m)
{
    if (!m)
        return;
    munmap(m->addr, m->size);
    close(m->fd);
    free(m);
}

int mp_shm_unlink(mp_shm *m)
{
    if (!m)
        return mp__error(MP_EINVAL, "mp_shm_unlink: NULL handle");
    if (shm_unlink(m->name) < 0)
        return mp__errno("shm_unlink '%s'", m->name + 1);
    /* Only a program that has a tracker can have registered it. */
    if (mp__tracker_fd() >= 0)
        mp__tracker_unregister(MP__RT_SHM, m->name);
    return 0;
}

/* ---- passing SharedMemory handles -----------------------------------------------------
 * Wire: [u32 magic][u32 has_tracker][u64 size][name]; fds: segment, tracker pipe. */

#define SHM_WIRE_MAGIC 0x53484d4eu /* "SHMN" */

struct shm_wire {
    uint32_t magic;
    uint32_t has_tracker;
    uint64_t size;
    char name[SHM_NAME_MAX + 2];
};

static int shm_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    mp_shm *m = obj;
    struct shm_wire *w = mp__calloc(1, sizeof *w);
    if (!w)
        return -ENOMEM;
    w->magic = SHM_WIRE_MAGIC;
    w->size = m->size;
    memcpy(w->name, m->name, sizeof w->name);
    fds[0] = m->fd;
    *nfds = 1;
    if (mp__tracker_fd() >= 0) {
        fds[1] = mp__tracker_fd();
        *nfds = 2;
        w->has_tracker = 1;
    }
    *data = w;
    *len = sizeof *w;
    return 0;
}

static int shm_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    struct shm_wire w;
    if (len != sizeof w || (memcpy(&w, data, sizeof w), w.magic != SHM_WIRE_MAGIC) ||
        nfds != 1 + (size_t)(w.has_tracker != 0) || w.size == 0) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return mp__error(MP_EPROTO, "shared memory handle: bad description");
    }
    if (nfds == 2)
        mp__tracker_adopt(fds[1]);
    w.name[sizeof w.name - 1] = 0;
    mp_shm *m = map_fd(fds[0], w.name, (size_t)w.size);
    if (!m) {
        close(fds[0]);
        return mp_last_error_code();
    }
    *obj = m;
    return 0;
}

static void shm_release_obj(void *obj) { mp_shm_close(obj); }

const mp_kind mp_kind_shm = {"shared_memory", shm_export, shm_import, shm_release_obj};

/* ---- ShareableList ------------------------------------------------------------------ */

/* Python's layout (Lib/multiprocessing/shared_memory.py), native byte order:
 *   int64 n; int64 offsets[n + 1] (offsets[0] = 0, from the start of the data area);
 *   the data area at D = (n + 2) * 8: item i in [D + offsets[i], D + offsets[i + 1]);
 *   n struct formats of 8 bytes each at F = D + offsets[n] ("q", "d", "xxxxxxx?" for
 *   bool, "xxxxxx?x" for None, "<capacity>s" for str/bytes, NUL-padded);
 *   n signed bytes at F + 8n: 0 int/float/bool, 1 str, 2 bytes, 3 None. */

#define SL_FMT_BOOL "xxxxxxx?"
#define SL_FMT_NONE "xxxxxx?x"
/* A format has 8 characters, so a str/bytes slot holds at most 9999999 bytes; capacities
 * are multiples of 8 (Python's rule: 8 * (len // 8 + 1)). */
#define SL_MAX_CAP 9999992u

enum { SL_CODE_PLAIN = 0, SL_CODE_STR = 1, SL_CODE_BYTES = 2, SL_CODE_NONE = 3 };

struct mp_sl {
    mp_shm *shm;
    unsigned char *base;
    size_t n;
    uint64_t *offs; /* offsets[0..n], read once (as Python does): validated, never re-read */
};

mp_sl_item mp_sl_int(int64_t i) { return (mp_sl_item){.type = MP_SL_INT, .i = i}; }
mp_sl_item mp_sl_float(double f) { return (mp_sl_item){.type = MP_SL_FLOAT, .f = f}; }
mp_sl_item mp_sl_bool(bool b) { return (mp_sl_item){.type = MP_SL_BOOL, .b = b}; }
mp_sl_item mp_sl_none(void) { return (mp_sl_item){.type = MP_SL_NONE}; }
mp_sl_item mp_sl_str(const char *s)
{
    return (mp_sl_item){.type = MP_SL_STR, .data = s ? s : "", .len = s ? strlen(s) : 0};
}
mp_sl_item mp_sl_bytes(const void *data, size_t len)
{
    return (mp_sl_item){.type = MP_SL_BYTES, .data = data, .len = data ? len : 0};
}

static bool is_blob(mp_sl_type t) { return t == MP_SL_STR || t == MP_SL_BYTES; }

static uint64_t slot_cap(const mp_sl_item *it)
{
    return is_blob(it->type) ? (it->len / 8 + 1) * 8 : 8;
}

static int check_item(const mp_sl_item *it)
{
    if (!it || it->type > MP_SL_BYTES || (is_blob(it->type) && it->len && !it->data))
        return mp__error(MP_EINVAL, "bad ShareableList item");
    return 0;
}

static int64_t rd64(const unsigned char *p)
{
    int64_t v;
    memcpy(&v, p, 8);
    return v;
}

static void wr64(unsigned char *p, int64_t v) { memcpy(p, &v, 8); }

static size_t data_start(const mp_sl *l) { return (l->n + 2) * 8; }
static uint64_t sl_offset(const mp_sl *l, size_t i) { return l->offs[i]; }
static unsigned char *fmt_at(const mp_sl *l, size_t i)
{
    return l->base + data_start(l) + sl_offset(l, l->n) + 8 * i;
}
static signed char *code_at(const mp_sl *l, size_t i)
{
    return (signed char *)(l->base + data_start(l) + sl_offset(l, l->n) + 8 * l->n + i);
}

/* Write item `it` into slot i (capacity already checked), format and code first, as
 * Python's __setitem__ does. */
static void write_slot(mp_sl *l, size_t i, const mp_sl_item *it)
{
    uint64_t cap = sl_offset(l, i + 1) - sl_offset(l, i);
    unsigned char *p = l->base + data_start(l) + sl_offset(l, i);
    char fmt[9] = {0};
    signed char code = SL_CODE_PLAIN;
    switch (it->type) {
    case MP_SL_INT: memcpy(fmt, "q", 1); break;
    case MP_SL_FLOAT: memcpy(fmt, "d", 1); break;
    case MP_SL_BOOL: memcpy(fmt, SL_FMT_BOOL, 8); break;
    case MP_SL_NONE: memcpy(fmt, SL_FMT_NONE, 8); code = SL_CODE_NONE; break;
    default:
        snprintf(fmt, sizeof fmt, "%llus", (unsigned long long)cap);
        code = it->type == MP_SL_STR ? SL_CODE_STR : SL_CODE_BYTES;
        break;
    }
    memcpy(fmt_at(l, i), fmt, 8);
    *code_at(l, i) = code;
    size_t width = is_blob(it->type) ? (size_t)cap : 8; /* struct writes pad bytes as NUL */
    memset(p, 0, width);
    switch (it->type) {
    case MP_SL_INT: memcpy(p, &it->i, 8); break;
    case MP_SL_FLOAT: memcpy(p, &it->f, 8); break;
    case MP_SL_BOOL: p[7] = it->b; break;
    case MP_SL_STR:
    case MP_SL_BYTES:
        if (it->len)
            memcpy(p, it->data, it->len);
        break;
    default: break;
    }
}

/* A handle on a validated (or new, n items) list: the length and offsets are copied out
 * of the shared memory, so another process rewriting them cannot send us out of bounds. */
static mp_sl *sl_wrap(mp_shm *shm, size_t n)
{
    mp_sl *l = mp__calloc(1, sizeof *l);
    uint64_t *offs = l ? mp__calloc(n + 1, sizeof *offs) : NULL;
    if (!offs) {
        free(l);
        return NULL;
    }
    l->shm = shm;
    l->base = mp_shm_buf(shm);
    l->n = n;
    l->offs = offs;
    for (size_t i = 0; i <= n; i++)
        offs[i] = (uint64_t)rd64(l->base + 8 + 8 * i);
    return l;
}

static int sl_validate(const mp_sl *l);

/* Wrap an existing list: read its length once, copy its offsets, validate the copies. */
static mp_sl *sl_open(mp_shm *shm)
{
    size_t size = mp_shm_size(shm);
    int64_t n = size >= 8 ? rd64(mp_shm_buf(shm)) : -1;
    /* each item takes at least an offset, a format and a code: 17 bytes */
    if (n < 0 || (uint64_t)n > size / 17 || ((size_t)n + 2) * 8 > size) {
        mp__error(MP_EPROTO, "shared memory '%s' is not a ShareableList (%zu bytes, %lld items)",
                  mp_shm_name(shm), size, (long long)n);
        return NULL;
    }
    mp_sl *l = sl_wrap(shm, (size_t)n);
    if (l && sl_validate(l) < 0) {
        free(l->offs);
        free(l);
        return NULL;
    }
    return l;
}

/* Check a list's length and offsets (copied out of the segment by sl_wrap) against the
 * segment's size before trusting them: it may be any segment. */
static int sl_validate(const mp_sl *l)
{
    size_t size = mp_shm_size(l->shm), n = l->n, d = (n + 2) * 8;
    uint64_t prev = 0;
    for (size_t i = 0; i <= n; i++) {
        uint64_t off = l->offs[i];
        if ((i == 0 && off != 0) || off < prev || off > size)
            return mp__error(MP_EPROTO, "ShareableList '%s': item offset %zu is corrupt",
                             mp_shm_name(l->shm), i);
        prev = off;
    }
    if (prev > size - d || size - d - (size_t)prev < 9 * n)
        return mp__error(MP_EPROTO, "ShareableList '%s': %zu bytes cannot hold its %zu items",
                         mp_shm_name(l->shm), size, n);
    return 0;
}

mp_sl *mp_sl_create(const mp_sl_item *items, size_t n, const char *name,
                    const mp_shm_opts *opts)
{
    if (n && !items) {
        mp__error(MP_EINVAL, "mp_sl_create: NULL items");
        return NULL;
    }
    size_t size = (n + 2) * 8 + 9 * n;
    for (size_t i = 0; i < n; i++) {
        if (check_item(&items[i]) < 0)
            return NULL;
        if (slot_cap(&items[i]) > SL_MAX_CAP) {
            mp__error(MP_ERANGE, "ShareableList item %zu: %zu bytes (Python's layout holds at "
                                 "most %u per str/bytes item)", i, items[i].len, SL_MAX_CAP - 1);
            return NULL;
        }
        size += slot_cap(&items[i]);
    }
    mp_shm *shm = mp_shm_create(name, size, opts);
    if (!shm)
        return NULL;
    unsigned char *base = mp_shm_buf(shm);
    wr64(base, (int64_t)n);
    uint64_t off = 0;
    wr64(base + 8, 0);
    for (size_t i = 0; i < n; i++) {
        off += slot_cap(&items[i]);
        wr64(base + 8 + 8 * (i + 1), (int64_t)off);
    }
    mp_sl *l = sl_wrap(shm, n);
    if (!l) {
        mp_shm_unlink(shm);
        mp_shm_close(shm);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        write_slot(l, i, &items[i]);
    return l;
}

mp_sl *mp_sl_attach(const char *name)
{
    mp_shm *shm = mp_shm_attach(name);
    if (!shm)
        return NULL;
    mp_sl *l = sl_open(shm);
    if (!l)
        mp_shm_close(shm);
    return l;
}

size_t mp_sl_len(const mp_sl *l) { return l ? l->n : 0; }
mp_shm *mp_sl_shm(const mp_sl *l) { return l ? l->shm : NULL; }

static int slot_index(const mp_sl *l, long i, size_t *out)
{
    if (!l)
        return mp__error(MP_EINVAL, "NULL ShareableList");
    long n = (long)l->n;
    long j = i < 0 ? i + n : i;
    if (j < 0 || j >= n)
        return mp__error(MP_ERANGE, "ShareableList index %ld out of range (length %ld)", i, n);
    *out = (size_t)j;
    return 0;
}

/* Read slot i as Python's __getitem__ does: by its format and back-transform code.
 * Another process may write any bytes there: a format or code we do not know is
 * MP_EPROTO. */
static int read_slot(const mp_sl *l, size_t i, mp_sl_item *out)
{
    const unsigned char *p = l->base + data_start(l) + sl_offset(l, i);
    uint64_t cap = sl_offset(l, i + 1) - sl_offset(l, i);
    char fmt[9] = {0};
    memcpy(fmt, fmt_at(l, i), 8);
    signed char code = *code_at(l, i);
    memset(out, 0, sizeof *out);
    size_t flen = strlen(fmt);
    if (code == SL_CODE_NONE) {
        out->type = MP_SL_NONE;
        return 0;
    }
    if (code == SL_CODE_STR || code == SL_CODE_BYTES) {
        char *end = NULL;
        unsigned long long w = flen > 1 && fmt[flen - 1] == 's' ? strtoull(fmt, &end, 10) : 0;
        if (!end || end != fmt + flen - 1 || w > cap)
            goto corrupt;
        size_t len = (size_t)w;
        while (len && p[len - 1] == 0) /* Python strips trailing NULs */
            len--;
        out->type = code == SL_CODE_STR ? MP_SL_STR : MP_SL_BYTES;
        out->data = (const char *)p;
        out->len = len;
        return 0;
    }
    if (code != SL_CODE_PLAIN || cap < 8)
        goto corrupt;
    if (strcmp(fmt, "q") == 0) {
        out->type = MP_SL_INT;
        memcpy(&out->i, p, 8);
    } else if (strcmp(fmt, "d") == 0) {
        out->type = MP_SL_FLOAT;
        memcpy(&out->f, p, 8);
    } else if (strcmp(fmt, SL_FMT_BOOL) == 0) {
        out->type = MP_SL_BOOL;
        out->b = p[7] != 0;
    } else {
        goto corrupt;
    }
    return 0;
corrupt:
    return mp__error(MP_EPROTO, "ShareableList '%s': item %zu has format '%s' and code %d",
                     mp_shm_name(l->shm), i, fmt, code);
}

int mp_sl_get(const mp_sl *l, long i, mp_sl_item *out)
{
    size_t j = 0;
    int r = slot_index(l, i, &j);
    if (r < 0)
        return r;
    if (!out)
        return mp__error(MP_EINVAL, "mp_sl_get: NULL output");
    return read_slot(l, j, out);
}

int mp_sl_set(mp_sl *l, long i, const mp_sl_item *item)
{
    size_t j = 0;
    int r = slot_index(l, i, &j);
    if (r < 0 || (r = check_item(item)) < 0)
        return r;
    uint64_t cap = sl_offset(l, j + 1) - sl_offset(l, j);
    if (is_blob(item->type) && item->len > cap)
        return mp__error(MP_ERANGE, "item exceeds available storage: %zu bytes, slot %zu holds %llu",
                         item->len, j, (unsigned long long)cap);
    write_slot(l, j, item);
    return 0;
}

static bool items_equal(const mp_sl_item *a, const mp_sl_item *b)
{
    bool an = a->type == MP_SL_INT || a->type == MP_SL_FLOAT;
    bool bn = b->type == MP_SL_INT || b->type == MP_SL_FLOAT;
    if (an && bn) {
        if (a->type == MP_SL_INT && b->type == MP_SL_INT)
            return a->i == b->i;
        double x = a->type == MP_SL_INT ? (double)a->i : a->f;
        double y = b->type == MP_SL_INT ? (double)b->i : b->f;
        return x == y;
    }
    if (a->type != b->type)
        return false;
    if (a->type == MP_SL_BOOL)
        return a->b == b->b;
    if (is_blob(a->type))
        return a->len == b->len && (a->len == 0 || memcmp(a->data, b->data, a->len) == 0);
    return true; /* None */
}

int mp_sl_index(const mp_sl *l, const mp_sl_item *item)
{
    for (size_t i = 0; l && item && i < l->n; i++) {
        mp_sl_item it;
        if (read_slot(l, i, &it) == 0 && items_equal(&it, item))
            return (int)i;
    }
    return mp__error(MP_ENOTFOUND, "item is not in the ShareableList");
}

int mp_sl_count(const mp_sl *l, const mp_sl_item *item)
{
    int count = 0;
    for (size_t i = 0; l && item && i < l->n; i++) {
        mp_sl_item it;
        count += read_slot(l, i, &it) == 0 && items_equal(&it, item);
    }
    return count;
}

void mp_sl_close(mp_sl *l)
{
    if (!l)
        return;
    mp_shm_close(l->shm);
    free(l->offs);
    free(l);
}

/* ---- passing ShareableList handles (as their SharedMemory) ---------------------------- */

static int sl_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    return shm_export(((mp_sl *)obj)->shm, data, len, fds, nfds);
}

static int sl_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    void *shm = NULL;
    int r = shm_import(data, len, fds, nfds, &shm);
    if (r < 0)
        return r;
    mp_sl *l = sl_open(shm);
    if (!l) {
        r = mp_last_error_code();
        mp_shm_close(shm);
        return r;
    }
    *obj = l;
    return 0;
}

static void sl_release_obj(void *obj) { mp_sl_close(obj); }

const mp_kind mp_kind_sl = {"shareable_list", sl_export, sl_import, sl_release_obj};

__attribute__((constructor(200))) static void shared_memory_register_kinds(void)
{
    mp_kind_register(&mp_kind_shm);
    mp_kind_register(&mp_kind_sl);
}
