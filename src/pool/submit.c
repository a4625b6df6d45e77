/* Submitting work: jobs (one per call), chunks (one message each), completion.
 *
 * DESIGN: a submitting thread (any thread) encodes its chunks itself and appends them
 * to p->pending under p->mu as it goes (the first chunk alone, then batches), so the
 * workers start on the first chunk while the rest are encoded; chunk ids are given
 * under the same lock. Between its first and last part a call counts in p->submitting,
 * so a closing pool does not wind down and a terminated one waits to fail the rest.
 * The result thread is woken (eventfd) only when it may be asleep (p->idle); else it
 * looks at the queue again before it sleeps. A chunk whose arguments cannot be encoded
 * is queued as a failed chunk (fail_code): the result thread fails its items, so the
 * error reaches the caller through the result, as Python's map_async does. Completion (mp__job_complete_item, job_finish) runs on the
 * result thread alone: it writes an item (apply/map: into the job's array of values,
 * which becomes the map's result list, failures apart; iterators: a ring slot), then
 * publishes it (the slot's state, the job's done flag: release stores), then bumps
 * mp__pool_seq so that waiters re-check (once per read of the result thread's, see
 * mp__pool_notify_hold). A job is freed when the user's handle (a member of the job),
 * the pool's reference and (for a source-fed job) the pool's list of sources are gone.
 * Per apply_async, the allocations are the job and, unless one answered before is kept
 * (p->cache, up to CHUNK_CACHE_MAX, under p->cache_mu), a chunk and its buffer: the
 * handle, the value slot and the task function's location (interned) are not. */
#define _GNU_SOURCE
#include "internal/buf.h"
#include "internal/common.h"
#include "internal/iwait.h"
#include "internal/value.h"
#include "pool/pool.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- waiting (all pools share one futex word) ------------------------------------ */

_Atomic uint32_t mp__pool_seq;
static _Atomic int waiters;
/* The result thread while it handles a read's messages: jobs that finish then are
 * announced once, at the end (mp__pool_notify_release), not one futex wake each. */
static _Thread_local int notify_held;
static _Thread_local bool notify_owed;

void mp__pool_notify(void)
{
    notify_owed = false;
    atomic_fetch_add(&mp__pool_seq, 1);
    if (atomic_load(&waiters))
        mp__futex_wake(&mp__pool_seq, INT_MAX);
}

void mp__pool_notify_hold(void) { notify_held++; }

void mp__pool_notify_release(void)
{
    if (--notify_held == 0 && notify_owed)
        mp__pool_notify();
}

int mp__pool_wait_until(bool (*done)(void *), void *arg, double deadline)
{
    for (;;) {
        atomic_fetch_add(&waiters, 1);
        uint32_t s = atomic_load(&mp__pool_seq);
        if (done(arg)) {
            atomic_fetch_sub(&waiters, 1);
            return 0;
        }
        int r = deadline >= 0 && mp__left(deadline) <= 0
                    ? MP_ETIMEOUT
                    : mp__iwait_futex(&mp__pool_seq, s, deadline);
        atomic_fetch_sub(&waiters, 1);
        if (r == MP_ETIMEOUT && done(arg))
            return 0;
        if (r < 0)
            return r;
    }
}

/* ---- jobs -------------------------------------------------------------------------- */

/* An iterator's ring: a big one is a mapping of its own, zero when first touched and
 * returned whole when freed (from the heap, calloc would clear it by hand and a
 * trimmed heap fault it in again for every call: an imap of a million items spent a
 * fifth of its time there). A mapping whose every slot was taken is all zero again
 * (next empties each slot): the last such one (RING_CACHE_MAX at most) is kept for the
 * next iterator, which then neither faults nor clears its pages (a 1M-item imap faulted
 * 4096 pages on the result thread, an eighth of its time). While cached, its first
 * slot holds the mapping's size, cleared when it is taken. */
#define RING_MAP_MIN ((size_t)1 << 20)
#define RING_CACHE_MAX ((size_t)64 << 20)

static item *_Atomic ring_cache;

static size_t ring_bytes(size_t cap) { return cap * sizeof(item); }

/* A cached mapping of at least want bytes (and not four times more), or NULL. */
static item *ring_cached(size_t want, size_t *bytes)
{
    if (!atomic_load_explicit(&ring_cache, memory_order_relaxed))
        return NULL;
    item *r = atomic_exchange(&ring_cache, NULL); /* ours from here on */
    if (!r)
        return NULL;
    size_t have;
    memcpy(&have, r, sizeof have);
    memset(r, 0, sizeof have);
    if (have >= want && have / 4 <= want) {
        *bytes = have;
        return r;
    }
    munmap(r, have);
    return NULL;
}

/* The ring's slots; *bytes: its mapping's size (0: from the heap). */
static item *ring_alloc(size_t cap, size_t *bytes)
{
    *bytes = 0;
    if (cap > SIZE_MAX / sizeof(item)) {
        mp__error(-ENOMEM, "pool: a ring of %zu items", cap);
        return NULL;
    }
    if (ring_bytes(cap) < RING_MAP_MIN)
        return mp__calloc(cap, sizeof(item));
    item *r = ring_cached(ring_bytes(cap), bytes);
    if (r)
        return r;
    void *m = mmap(NULL, ring_bytes(cap), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                   -1, 0);
    if (m == MAP_FAILED) {
        mp__errno("pool: mapping a ring of %zu items", cap);
        return NULL;
    }
    *bytes = ring_bytes(cap);
    return m;
}

/* zero: every slot is empty (the mapping may be cached). */
static void ring_free(item *r, size_t bytes, bool zero)
{
    if (!bytes) {
        free(r);
        return;
    }
    if (zero && bytes <= RING_CACHE_MAX) {
        memcpy(r, &bytes, sizeof bytes);
        r = atomic_exchange(&ring_cache, r); /* the one it replaces goes */
        if (!r)
            return;
        memcpy(&bytes, r, sizeof bytes);
    }
    munmap(r, bytes);
}

job *mp__job_new(mp_pool *p, enum job_kind kind, size_t n, size_t cap, bool ring)
{
    job *j = mp__calloc(1, sizeof *j);
    if (!j)
        return NULL;
    if (ring)
        j->items = ring_alloc(cap ? cap : 1, &j->ring_map);
    else
        j->vals = kind == JOB_APPLY && n == 1 ? &j->one : mp__calloc(n ? n : 1, sizeof *j->vals);
    if (!j->items && !j->vals) {
        free(j);
        return NULL;
    }
    j->pool = p;
    j->kind = kind;
    j->n = n;
    j->cap = cap;
    j->ring = ring;
    j->wake_fd = -1;
    atomic_init(&j->refs, 2);
    return j;
}

static void job_free(job *j)
{
    /* Every item taken: next emptied each slot, nothing is left to free in the ring. */
    bool all_taken = j->items && !j->source && atomic_load(&j->consumed) == j->n;
    for (size_t i = 0; j->items && !all_taken && i < (j->cap ? j->cap : 1); i++) {
        item *it = &j->items[i];
        if (atomic_load(&it->state) == 1 && it->code)
            free(it->u.msg);
        else if (atomic_load(&it->state) == 1)
            mp_value_free(it->u.v);
    }
    ring_free(j->items, j->ring_map, all_taken);
    for (size_t i = 0; j->vals && i < j->n; i++)
        mp_value_free(j->vals[i]);
    if (j->vals != &j->one)
        free(j->vals);
    for (size_t i = 0; j->msgs && i < j->n; i++)
        free(j->msgs[i]);
    free(j->msgs);
    free(j->codes);
    mp_value_free(j->value);
    if (!j->fnloc_shared)
        free(j->fnloc);
    free(j->first_msg);
    free(j->source_msg);
    if (j->wake_fd >= 0)
        mp__pool_fd_close(j->wake_fd);
    free(j);
}

void mp__job_unref(job *j)
{
    if (j && atomic_fetch_sub(&j->refs, 1) == 1)
        job_free(j);
}

/* The final value of apply and map: built once, read by get and callbacks. */
static void build_value(job *j)
{
    if (j->kind == JOB_APPLY) {
        j->value = j->vals[0];
        j->vals[0] = NULL;
    } else if (j->kind == JOB_MAP) {
        /* The list takes the vals array over (failed items hold nil). */
        mp_value *list = mp_value_list();
        for (size_t i = 0; list && i < j->n; i++)
            if (!j->vals[i] && !(j->vals[i] = mp_value_nil())) {
                mp_value_free(list);
                list = NULL;
            }
        if (!list) {
            if (!j->first_code) {
                j->first_code = -ENOMEM;
                j->first_msg = strdup("pool: out of memory building the map's result");
            }
            return;
        }
        list->u.list.items = j->vals;
        list->u.list.len = list->u.list.cap = j->n;
        j->vals = NULL;
        j->value = list;
    }
}

/* Everything is in: value, callbacks (on this thread, before waiters see done, as
 * Python), done, the pool's reference. While notices are held (mp__pool_notify_hold)
 * the waiters are woken later, once for all; before a callback, which may take long,
 * they are woken for the jobs that finished before. */
static void job_finish(job *j)
{
    if (j->kind == JOB_APPLY || j->kind == JOB_MAP)
        build_value(j);
    bool cb = j->first_code ? j->opts.error_callback != NULL : j->opts.callback != NULL;
    if (cb && notify_owed)
        mp__pool_notify();
    if (!j->first_code && j->opts.callback)
        j->opts.callback(j->value, j->opts.userdata);
    else if (j->first_code && j->opts.error_callback)
        j->opts.error_callback(j->first_code, j->first_msg ? j->first_msg : "",
                               j->opts.userdata);
    atomic_store_explicit(&j->done, 1, memory_order_release);
    if (notify_held)
        notify_owed = true;
    else
        mp__pool_notify();
    mp__job_unref(j);
}

static bool job_all_in(job *j)
{
    size_t done = atomic_load(&j->completed);
    if (j->source)
        return atomic_load(&j->source_done) && done == j->n;
    return done == j->n;
}

/* A failure of apply/map/map_array item idx: its code and message. */
static void record_failure(job *j, size_t idx, int code, const char *msg)
{
    if (!j->codes) {
        j->codes = calloc(j->n ? j->n : 1, sizeof *j->codes);
        j->msgs = calloc(j->n ? j->n : 1, sizeof *j->msgs);
    }
    if (!j->codes || !j->msgs)
        return; /* the first failure (below) is still reported */
    j->codes[idx] = code;
    free(j->msgs[idx]);
    j->msgs[idx] = strdup(msg && msg[0] ? msg : mp_strerror(code));
}

static void note_first(job *j, size_t idx, int code, const char *msg)
{
    if (code < 0 && (!j->first_code || idx < j->first_index)) {
        j->first_code = code;
        j->first_index = idx;
        free(j->first_msg);
        j->first_msg = strdup(msg && msg[0] ? msg : mp_strerror(code));
    }
}

void mp__job_complete_vals(job *j, size_t ok)
{
    atomic_fetch_add(&j->completed, ok);
    if (ok && job_all_in(j))
        job_finish(j);
}

void mp__job_complete_item(job *j, size_t idx, mp_value *v, int code, const char *msg)
{
    if (!j->ring) {
        j->vals[idx] = v;
        if (code) {
            record_failure(j, idx, code, msg);
            note_first(j, idx, code, msg);
        }
        mp__job_complete_vals(j, 1);
        return;
    }
    item *it;
    if (j->kind == JOB_IMAP_UNORDERED)
        it = &j->items[atomic_fetch_add(&j->ring_filled, 1) % j->cap];
    else
        it = &j->items[idx % j->cap];
    it->code = code;
    if (code) {
        mp_value_free(v);
        it->u.msg = strdup(msg && msg[0] ? msg : mp_strerror(code)); /* NULL: the code's */
    } else {
        it->u.v = v;
    }
    note_first(j, idx, code, msg);
    atomic_store_explicit(&it->state, 1, memory_order_release);
    atomic_fetch_add(&j->completed, 1);
    if (job_all_in(j))
        job_finish(j);
}

void mp__job_complete_ring(job *j, size_t first, mp_value **vs, const bool *skip,
                           size_t count)
{
    size_t ok = 0;
    for (size_t k = 0; k < count; k++)
        ok += !skip[k];
    if (!ok)
        return;
    /* unordered: the run's slots are reserved at once, filled in turn */
    bool unordered = j->kind == JOB_IMAP_UNORDERED;
    size_t slot = (unordered ? atomic_fetch_add(&j->ring_filled, ok) : first) % j->cap;
    for (size_t k = 0; k < count; k++) {
        if (!skip[k]) {
            item *it = &j->items[slot];
            it->u.v = vs[k]; /* the slot is empty: code 0 */
            atomic_store_explicit(&it->state, 1, memory_order_release);
        }
        /* ordered: item first + k's slot; unordered: the next one reserved */
        if ((!unordered || !skip[k]) && ++slot == j->cap)
            slot = 0; /* no division per item */
    }
    atomic_fetch_add(&j->completed, ok); /* one count for the run: it may finish the job */
    if (job_all_in(j))
        job_finish(j);
}

void mp__job_end_source(job *j, int code, const char *msg)
{
    if (atomic_load(&j->source_done))
        return;
    j->source_code = code;
    if (code)
        j->source_msg = strdup(msg && msg[0] ? msg : mp_strerror(code));
    j->n = j->read;
    atomic_store(&j->stalled, 0);
    atomic_store_explicit(&j->source_done, 1, memory_order_release);
    if (job_all_in(j))
        job_finish(j);
    else
        mp__pool_notify();
}

/* ---- chunks ------------------------------------------------------------------------ */

void mp__chunk_free(chunk *c)
{
    if (!c)
        return;
    for (size_t i = 0; i < c->nfds; i++)
        mp__pool_fd_close(c->fds[i]);
    free(c->fds);
    if (c->tb)
        mp__txbuf_unref(c->tb); /* a backend may still be sending its bytes */
    else
        free(c->buf);
    free(c->fail_msg);
    free(c);
}

void mp__chunk_fail(chunk *c, int code, const char *msg)
{
    for (size_t i = 0; i < c->nfds; i++)
        mp__pool_fd_close(c->fds[i]);
    free(c->fds);
    if (c->tb)
        mp__txbuf_unref(c->tb);
    else
        free(c->buf);
    c->fds = NULL;
    c->nfds = 0;
    c->tb = NULL;
    c->buf = NULL;
    c->len = c->cap = 0;
    c->fail_code = code < 0 ? code : -ENOMEM;
    free(c->fail_msg);
    c->fail_msg = msg ? strdup(msg) : NULL; /* NULL: the code's text */
}

/* The chunk's arguments as one MessagePack array, item by item into one buffer (no
 * list built); MP_EUNSUPPORTED when an item holds handles. */
static int encode_fast(mp__buf *g, mp_value *const *args, size_t count)
{
    uint32_t be = __builtin_bswap32((uint32_t)count);
    int r = mp__buf_append(g, "\xdd", 1);
    if (r == 0)
        r = mp__buf_append(g, &be, 4);
    if (r < 0)
        return r;
    for (size_t k = 0; k < count; k++) {
        const mp_value *v = args[k];
        if (k + 16 < count) /* the items are scattered in memory: ask for them early */
            __builtin_prefetch(args[k + 16]);
        if (v->type == MP_INT && g->cap - g->len > 10) { /* the usual item */
            g->len += mp__pack_int(v->u.i, (unsigned char *)g->data + g->len);
            continue;
        }
        for (;;) {
            size_t n = 0;
            /* the room left, less the buffer's NUL */
            size_t room = g->cap > g->len ? g->cap - g->len - 1 : 0;
            r = mp__value_encode_into(args[k], g->data + g->len, room, &n);
            if (r == 0) {
                g->len += n;
                break;
            }
            if (r != MP_ETOOSHORT)
                return r;
            if ((r = mp__buf_reserve(g, room + 64)) < 0)
                return r;
        }
    }
    return 0;
}

/* With handles: one list encoded with its fds, which the chunk keeps (dup'd) so it can
 * be sent again if its worker dies before starting it. */
static int encode_handles(mp__buf *g, mp_value *const *args, size_t count, chunk *c)
{
    mp_value *list = mp_value_list();
    int r = list ? 0 : -ENOMEM;
    for (size_t k = 0; r == 0 && k < count; k++)
        r = mp_value_list_append(list, mp_value_copy(args[k]));
    int fds[MP__POOL_MAX_FDS];
    size_t nfds = 0;
    char *enc = NULL;
    size_t elen = 0;
    if (r == 0)
        r = mp_value_encode(list, &enc, &elen, fds, MP__POOL_MAX_FDS, &nfds);
    mp_value_free(list);
    if (r == 0)
        r = mp__buf_append(g, enc, elen);
    if (r == 0) {
        c->fds = nfds ? malloc(nfds * sizeof(int)) : NULL;
        if (nfds && !c->fds)
            r = -ENOMEM;
        for (size_t i = 0; r == 0 && i < nfds; i++) {
            int d = mp__pool_fd_track(mp__dup_cloexec(fds[i], 0));
            if (d < 0) {
                r = mp__errno("pool: dup of a handle's fd");
                break;
            }
            c->fds[c->nfds++] = d;
        }
    }
    free(enc);
    return r;
}

/* Kept: at most this many chunks, with buffers of at most this many bytes. */
#define CHUNK_CACHE_MAX 4096
#define CHUNK_CACHE_BYTES 512

void mp__chunk_done(mp_pool *p, chunk *c)
{
    if (!c->cap || c->cap > CHUNK_CACHE_BYTES || c->nfds || c->fail_msg || !c->buf || c->tb ||
        atomic_load_explicit(&p->ncache, memory_order_relaxed) + p->nspent >= CHUNK_CACHE_MAX) {
        mp__chunk_free(c);
        return;
    }
    c->next = p->spent;
    p->spent = c;
    p->nspent++;
}

static void free_list(chunk *c)
{
    while (c) {
        chunk *n = c->next;
        mp__chunk_free(c);
        c = n;
    }
}

void mp__chunk_spent_flush(mp_pool *p)
{
    if (!p->spent)
        return;
    chunk *last = p->spent;
    while (last->next)
        last = last->next;
    pthread_mutex_lock(&p->cache_mu);
    last->next = p->cache;
    p->cache = p->spent;
    p->ncache += p->nspent;
    pthread_mutex_unlock(&p->cache_mu);
    p->spent = NULL;
    p->nspent = 0;
}

void mp__chunk_cache_free(mp_pool *p)
{
    free_list(p->spent);
    free_list(p->cache);
    p->spent = p->cache = NULL;
    p->nspent = p->ncache = 0;
}

/* A zeroed chunk, and its buffer: a kept one's, or none. */
static chunk *chunk_new(mp_pool *p, mp__buf *g)
{
    *g = (mp__buf){0};
    chunk *c = NULL;
    if (p && atomic_load_explicit(&p->ncache, memory_order_relaxed)) { /* a hint */
        pthread_mutex_lock(&p->cache_mu);
        if ((c = p->cache)) {
            p->cache = c->next;
            p->ncache--;
        }
        pthread_mutex_unlock(&p->cache_mu);
    }
    if (!c)
        return mp__calloc(1, sizeof *c);
    *g = (mp__buf){.data = c->buf, .cap = c->cap};
    memset(c, 0, sizeof *c);
    return c;
}

chunk *mp__chunk_build(mp_pool *p, job *j, mp_value *const *args, size_t first, size_t count,
                       bool fail_ok)
{
    mp__buf g;
    chunk *c = chunk_new(p, &g);
    if (!c)
        return NULL;
    c->job = j;
    c->first = first;
    c->count = count;
    mp__msg_hdr h = {0}; /* filled in once the length is known */
    /* room for a few small items at once (not 64 bytes grown to 128 for every apply) */
    int r = mp__buf_reserve(&g, sizeof h + j->fnloc_len + 16 + 9 * (count < 64 ? count : 64));
    if (r == 0)
        r = mp__buf_append(&g, &h, sizeof h);
    if (r == 0)
        r = mp__buf_append(&g, j->fnloc, j->fnloc_len);
    if (r == 0) {
        size_t mark = g.len;
        r = encode_fast(&g, args, count);
        if (r < 0 && r != -ENOMEM) {
            /* Handles (which need their fds), or an error the fast probe does not
             * describe: the general encoder, which says what is wrong. */
            g.len = mark;
            r = encode_handles(&g, args, count, c);
            if (r == 0 && c->nfds && p && p->backend) /* fds stay on this host */
                r = mp__error(MP_EUNSUPPORTED, "handles (queues, locks, connections, shared "
                              "memory) cannot travel to %s workers", p->backend->name);
        }
    }
    if (r < 0) {
        mp__buf_free(&g);
        char msg[512];
        snprintf(msg, sizeof msg, "pool: encoding task arguments (items %zu-%zu): %s", first,
                 first + count - 1, mp__last_error_detail());
        if (r == -ENOMEM || !fail_ok) {
            mp__error(r, "%s", msg);
            mp__chunk_free(c);
            return NULL;
        }
        mp_clear_error(); /* not the call's error: its items fail with it */
        mp__chunk_fail(c, r, msg);
        return c;
    }
    h = (mp__msg_hdr){.type = MSG_TASK | (j->time_limit > 0 ? MSG_TIMED : 0),
                      .nfds = (uint32_t)c->nfds, .len = g.len - sizeof h, .arg = count};
    memcpy(g.data, &h, sizeof h);
    c->cap = g.cap;
    c->buf = mp__buf_take(&g, &c->len);
    if (!c->buf) {
        mp__chunk_free(c);
        return NULL;
    }
    return c;
}

int mp__pool_enqueue(mp_pool *p, chunk *first, chunk *last, int flags)
{
    bool internal = flags & ENQ_INTERNAL;
    pthread_mutex_lock(&p->mu);
    int r = 0;
    if (flags & ENQ_CONT) {
        /* Part of a call already under way: its items must end, so on a pool that can
         * no longer run them they fail (the result thread fails them, in order). */
        int code = p->state == 2 ? MP_ECLOSED : p->broken_code;
        const char *msg = p->state == 2 ? "the pool was terminated" : p->broken_msg;
        for (chunk *c = first; code && c; c = c == last ? NULL : c->next)
            if (!c->fail_code)
                mp__chunk_fail(c, code, msg);
    } else if (p->state == 2 && internal)
        r = mp__error(MP_ECLOSED, "the pool was terminated");
    else if (p->state == 2 || (p->state == 1 && !internal))
        r = mp__error(MP_ESTATE, "Pool not running");
    else if (p->broken_code)
        r = mp__error(p->broken_code, "%s", p->broken_msg);
    /* Chunks already waiting: the result thread was woken for them, or holds them until
     * a worker has room, which a worker's result will tell it; no need to wake it. */
    bool wake = !p->pending;
    if (r == 0) {
        for (chunk *c = first; c; c = c->next) {
            c->id = ++p->next_id;
            if (c->buf)
                memcpy(c->buf + offsetof(mp__msg_hdr, id), &c->id, sizeof c->id);
            if (c == last)
                break;
        }
        last->next = NULL;
        if (p->pending_tail)
            p->pending_tail->next = first;
        else
            p->pending = first;
        p->pending_tail = last;
        if (flags & ENQ_BEGIN)
            atomic_fetch_add(&p->submitting, 1);
        if (flags & ENQ_END) {
            atomic_fetch_sub(&p->submitting, 1);
            wake = true; /* a closing or terminating pool waits for this */
        }
    }
    pthread_mutex_unlock(&p->mu);
    if (r == 0 && wake && (atomic_load(&p->idle) || (flags & ENQ_END)))
        mp__pool_wake(p);
    return r;
}

/* ---- the calls ---------------------------------------------------------------------- */

static int prepare_fn(job *j, void (*fn)(void))
{
    const char *loc = NULL;
    int r = mp__fn_locate_shared(fn, &loc, &j->fnloc_len); /* its name only when needed */
    j->fnloc = (char *)loc;
    j->fnloc_shared = r == 0;
    return r;
}

static size_t default_chunksize(const mp_pool *p, size_t n)
{
    size_t d = (size_t)p->processes * 4;
    size_t cs = n / d + (n % d ? 1 : 0);
    return cs ? cs : 1;
}

/* Items a batch of chunks holds before it is queued (a chunk is queued alone when it is
 * the call's first or this big). */
#define BATCH_ITEMS 4096

static void free_chunks(chunk *c)
{
    while (c) {
        chunk *nx = c->next;
        mp__chunk_free(c);
        c = nx;
    }
}

/* Build the chunks of items[0, n) and queue them as they are built, so the workers start
 * on the first while the rest are encoded. A chunk whose arguments cannot be encoded is
 * queued as a failed one: its items fail with the encoding error through the result
 * (Python's map_async raises such errors from get), the others run. Returns an error
 * only when nothing was queued (the pool is not running, or no memory for the first);
 * the job keeps the pool's reference. */
static int submit_items(mp_pool *p, job *j, mp_value *const *args, size_t n, size_t cs)
{
    chunk *first = NULL, *last = NULL;
    size_t batch = 0;
    bool begun = false; /* a first part was queued with ENQ_BEGIN */
    /* Spare for running out of memory once begun: it fails every item left. A call of
     * one part (apply, a small map) needs none. */
    chunk *spare = NULL;
    if (n > cs && !(spare = mp__calloc(1, sizeof *spare)))
        return -ENOMEM;
    for (size_t i = 0; i < n;) {
        size_t k = n - i < cs ? n - i : cs;
        chunk *c = mp__chunk_build(p, j, args + i, i, k, j->kind != JOB_APPLY);
        if (!c && !begun) {
            int r = mp_last_error_code();
            free_chunks(first);
            mp__chunk_free(spare);
            return r ? r : -ENOMEM;
        }
        if (!c) { /* the chunk could not even be allocated: end the call here */
            c = spare;
            spare = NULL;
            c->job = j;
            c->first = i;
            c->count = k = n - i;
            mp__chunk_fail(c, -ENOMEM, "pool: out of memory encoding the arguments");
        }
        if (last)
            last->next = c;
        else
            first = c;
        last = c;
        batch += k;
        i += k;
        bool end = i == n;
        if (!end && begun && batch < BATCH_ITEMS)
            continue;
        int flags = begun ? ENQ_CONT | (end ? ENQ_END : 0) : end ? 0 : ENQ_BEGIN;
        int r = mp__pool_enqueue(p, first, last, flags);
        if (r < 0) { /* only a first part can be refused */
            free_chunks(first);
            mp__chunk_free(spare);
            return r;
        }
        begun = begun || !end;
        first = last = NULL;
        batch = 0;
    }
    mp__chunk_free(spare);
    return 0;
}

static int check_pool(mp_pool *p, void *fn)
{
    if (!p || !fn)
        return mp__error(MP_EINVAL, "pool: NULL pool or task function");
    pthread_mutex_lock(&p->mu);
    int state = p->state;
    pthread_mutex_unlock(&p->mu);
    if (state)
        return mp__error(MP_ESTATE, "Pool not running");
    return 0;
}

/* A job for fn over items (list or, for apply, one value), submitted. NULL on error. */
static job *start_job(mp_pool *p, enum job_kind kind, void (*fn)(void), const mp_value *items,
                      bool star, size_t chunksize, const mp_pool_call_opts *opts)
{
    if (check_pool(p, (void *)fn) < 0)
        return NULL;
    if (opts && isnan(opts->task_time_limit)) {
        mp__error(MP_EINVAL, "pool: task_time_limit is NaN");
        return NULL;
    }
    mp_value *const *args;
    size_t n;
    const mp_value *one = items ? items : NULL;
    mp_value *nil = NULL;
    if (kind == JOB_APPLY) {
        if (!one)
            one = nil = mp_value_nil();
        args = (mp_value *const *)&one;
        n = 1;
    } else {
        if (mp_value_type(items) != MP_LIST) {
            mp__error(items ? MP_ETYPE : MP_EINVAL, "pool: the items must be a list, got %s",
                      items ? mp_type_name(mp_value_type(items)) : "NULL");
            return NULL;
        }
        args = items->u.list.items;
        n = items->u.list.len;
        for (size_t i = 0; star && i < n; i++)
            if (mp_value_type(args[i]) != MP_LIST) {
                mp__error(MP_ETYPE, "starmap: item %zu is not an argument list (got %s)", i,
                          mp_type_name(mp_value_type(args[i])));
                return NULL;
            }
    }
    bool ring = kind == JOB_IMAP || kind == JOB_IMAP_UNORDERED;
    job *j = mp__job_new(p, kind, n, n, ring);
    if (!j) {
        mp_value_free(nil);
        return NULL;
    }
    if (opts)
        j->opts = *opts;
    /* 0: the pool's limit; negative: none for this call (MP_NO_LIMIT). */
    double tl = opts ? opts->task_time_limit : 0;
    j->time_limit = tl > 0 ? tl : tl < 0 ? 0 : p->time_limit;
    size_t cs = chunksize ? chunksize : ring ? 1 : default_chunksize(p, n);
    int r = prepare_fn(j, fn);
    if (r == 0 && n == 0) {
        job_finish(j); /* nothing to run: complete now, in this thread */
        return j;
    }
    if (r == 0)
        r = submit_items(p, j, args, n, cs);
    mp_value_free(nil);
    if (r < 0) {
        mp__job_unref(j);
        mp__job_unref(j);
        return NULL;
    }
    return j;
}

static mp_pool_result *wrap_result(job *j)
{
    if (!j)
        return NULL;
    j->handle.j = j;
    return &j->handle;
}

mp_pool_result *mp_pool_apply_async(mp_pool *p, mp_task_fn fn, const mp_value *arg,
                                    const mp_pool_call_opts *opts)
{
    return wrap_result(start_job(p, JOB_APPLY, (void (*)(void))(void *)fn, arg, false, 1, opts));
}

mp_pool_result *mp_pool_map_async(mp_pool *p, mp_task_fn fn, const mp_value *items,
                                  const mp_pool_call_opts *opts)
{
    return wrap_result(start_job(p, JOB_MAP, (void (*)(void))(void *)fn, items, false,
                                 opts ? opts->chunksize : 0, opts));
}

mp_pool_result *mp_pool_starmap_async(mp_pool *p, mp_task_fn fn, const mp_value *items,
                                      const mp_pool_call_opts *opts)
{
    return wrap_result(start_job(p, JOB_MAP, (void (*)(void))(void *)fn, items, true,
                                 opts ? opts->chunksize : 0, opts));
}

/* Wait for a job and move its value out to the caller. */
static int finish_sync(job *j, mp_value **out)
{
    if (!j)
        return mp_last_error_code() ? mp_last_error_code() : -ENOMEM;
    mp_pool_result res = {.j = j};
    const mp_value *v = NULL;
    int r = mp_pool_result_get(&res, -1, &v);
    if (r == 0) {
        *out = j->value;
        j->value = NULL;
    }
    mp__job_unref(j);
    return r;
}

int mp_pool_apply(mp_pool *p, mp_task_fn fn, const mp_value *arg, mp_value **out)
{
    if (!out)
        return mp__error(MP_EINVAL, "pool: NULL output pointer");
    return finish_sync(start_job(p, JOB_APPLY, (void (*)(void))(void *)fn, arg, false, 1, NULL),
                       out);
}

int mp_pool_map(mp_pool *p, mp_task_fn fn, const mp_value *items, size_t chunksize,
                mp_value **out)
{
    if (!out)
        return mp__error(MP_EINVAL, "pool: NULL output pointer");
    return finish_sync(
        start_job(p, JOB_MAP, (void (*)(void))(void *)fn, items, false, chunksize, NULL), out);
}

int mp_pool_starmap(mp_pool *p, mp_task_fn fn, const mp_value *items, size_t chunksize,
                    mp_value **out)
{
    if (!out)
        return mp__error(MP_EINVAL, "pool: NULL output pointer");
    return finish_sync(
        start_job(p, JOB_MAP, (void (*)(void))(void *)fn, items, true, chunksize, NULL), out);
}

static mp_pool_iter *wrap_iter(job *j)
{
    if (!j)
        return NULL;
    mp_pool_iter *it = mp__calloc(1, sizeof *it);
    if (!it) {
        mp__job_unref(j);
        return NULL;
    }
    it->j = j;
    return it;
}

mp_pool_iter *mp_pool_imap(mp_pool *p, mp_task_fn fn, const mp_value *items, size_t chunksize)
{
    return wrap_iter(start_job(p, JOB_IMAP, (void (*)(void))(void *)fn, items, false, chunksize,
                               NULL));
}

mp_pool_iter *mp_pool_imap_unordered(mp_pool *p, mp_task_fn fn, const mp_value *items,
                                     size_t chunksize)
{
    return wrap_iter(start_job(p, JOB_IMAP_UNORDERED, (void (*)(void))(void *)fn, items, false,
                               chunksize, NULL));
}

/* ---- input from a callback --------------------------------------------------------- */

mp_pool_iter *mp_pool_imap_source(mp_pool *p, mp_task_fn fn, mp_pool_source_fn source,
                                  void *userdata, const mp_pool_imap_opts *opts)
{
    if (check_pool(p, (void *)fn) < 0)
        return NULL;
    if (!source) {
        mp__error(MP_EINVAL, "pool: imap_source needs a source function");
        return NULL;
    }
    size_t cs = opts && opts->chunksize ? opts->chunksize : 1;
    size_t window = opts && opts->window ? opts->window : 0;
    size_t min = 2 * (size_t)p->processes * cs;
    if (!window)
        window = 64 * cs > min ? 64 * cs : min;
    if (window < cs)
        window = cs;
    bool unordered = opts && opts->unordered;
    job *j = mp__job_new(p, unordered ? JOB_IMAP_UNORDERED : JOB_IMAP, 0, window, true);
    if (!j)
        return NULL;
    j->source = source;
    j->source_ud = userdata;
    j->chunksize = cs;
    j->time_limit = p->time_limit;
    j->wake_fd = mp__pool_fd_track(mp__dup_cloexec(p->wake_fd, 0));
    int r = j->wake_fd < 0 ? mp__errno("pool: dup") : prepare_fn(j, (void (*)(void))(void *)fn);
    if (r == 0) {
        pthread_mutex_lock(&p->mu);
        if (p->state)
            r = mp__error(MP_ESTATE, "Pool not running");
        else {
            atomic_fetch_add(&j->refs, 1); /* the pool's list of sources */
            j->next_src = p->sources;
            p->sources = j;
        }
        pthread_mutex_unlock(&p->mu);
    }
    if (r < 0) {
        mp__job_unref(j);
        mp__job_unref(j);
        return NULL;
    }
    mp__pool_wake(p);
    return wrap_iter(j);
}

void mp__job_pump_source(mp_pool *p, job *j)
{
    size_t cs = j->chunksize;
    mp_value **buf = NULL;
    while (!atomic_load(&j->source_done)) {
        if (atomic_load(&j->abandoned)) {
            mp__job_end_source(j, 0, NULL);
            break;
        }
        size_t consumed = atomic_load(&j->consumed);
        if (j->read - consumed + cs > j->cap) {
            atomic_store(&j->stalled, 1);
            /* The consumer may have taken an item between our check and the flag. */
            if (atomic_load(&j->consumed) == consumed)
                break;
            continue;
        }
        if (!buf && !(buf = malloc(cs * sizeof *buf))) {
            mp__job_end_source(j, -ENOMEM, "pool: out of memory reading the input");
            break;
        }
        size_t k = 0;
        int r = 1;
        while (k < cs && (r = j->source(j->source_ud, &buf[k])) == 1)
            k++;
        char msg[512] = "";
        if (r < 0)
            snprintf(msg, sizeof msg, "imap input failed: %s",
                     mp_last_error_code() == r ? mp__last_error_detail() : mp_strerror(r));
        if (k) {
            chunk *c = mp__chunk_build(p, j, buf, j->read, k, false);
            for (size_t i = 0; i < k; i++)
                mp_value_free(buf[i]);
            int e = c ? mp__pool_enqueue(p, c, c, ENQ_INTERNAL) : mp_last_error_code();
            if (e < 0) {
                mp__chunk_free(c);
                mp__job_end_source(j, e, mp__last_error_detail());
                break;
            }
            j->read += k;
        }
        if (r <= 0) {
            mp__job_end_source(j, r, msg);
            break;
        }
    }
    free(buf);
}
