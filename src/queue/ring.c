/* Queue records in the ring: room, copy in, copy out.
 *
 * DESIGN
 * - Records [u64 len][u32 tag][u32 pad][payload, padded to 8] sit at increasing byte
 *   positions (modulo capacity), copied in and out under `lock`. The ring bytes of a
 *   record are written before the store of the position word that publishes them and
 *   read before the store that frees them.
 * - A put of a small item writes only the lock's and the tail's cache lines and the
 *   ring's; waiters are woken only when some have counted themselves.
 * - An item of up to 7 bytes (an int of up to 32 bits, the common item) is one word
 *   record written with one store (mp__q_put_word), before the tail's store that commits
 *   it, like any record; a wider int's record is written as words (mp__q_put_words): no
 *   memcpy call, and no byte store re-read as a word.
 */
#define _GNU_SOURCE
#include "queue/q.h"

#include <errno.h>
#include <sys/mman.h>

#include <errno.h>
#include <stdlib.h>

static bool fits(const struct qshared *s, uint64_t h, uint64_t t, uint64_t need,
                 uint64_t items)
{
    uint64_t n = items_between(s, h, t);
    if (s->maxsize && n + items > s->maxsize)
        return false;
    if (n + items >= (~(uint64_t)0 >> s->posbits)) /* the item counter's range (rings > 8 GiB) */
        return false;
    return need <= s->capacity - bytes_between(s, h, t);
}

/* Under lock. Against head_seen first (the producers' line): headw (the consumers') is
 * read only when that view shows no room. head_seen is always a value headw had, at most
 * one ring behind the tail (every tail move passes this check), so the room it shows is
 * there. On false, head_seen is the head that decided it: what a waiter watches. */
static inline bool has_room(struct qshared *s, uint64_t need, uint64_t items)
{
    uint64_t t = ld(&s->tailw);
    if (!s->st.s_active && fits(s, s->head_seen, t, need, items))
        return true;
    s->head_seen = atomic_load_explicit(&s->headw, memory_order_acquire);
    return !s->st.s_active && fits(s, s->head_seen, t, need, items);
}

int mp__q_full_error(const mp_queue *q, double timeout)
{
    if (timeout == 0)
        return mp__error(MP_EFULL, "queue is full (%llu items)",
                         (unsigned long long)mp__q_item_count(q->s));
    return mp__error(MP_EFULL, "queue still full after %.3g s", timeout);
}

/* Page faults: every process mapping the ring faults each page in once, and a producer
 * writing a fresh page takes a fault per page (reads get 16 at a time, the kernel's
 * fault-around; writes to a shared mapping one). Faults cost microseconds each in a
 * guest (~10 us for a queue's first put in the KVM/PVM guest of Dec 2026), so a producer
 * about to write past the stretch of ring it mapped in last maps the next stretch in with
 * one madvise(MADV_POPULATE_WRITE), outside the lock: 32 KiB the first time, doubling to
 * 256 KiB, so a process that puts one item pays for 8 pages, not 64, and the ring's memory
 * is still allocated as it fills (at most 256 KiB ahead). Measured there (4p4c, 1M ints,
 * 8 forked processes, 5 alternating rounds): ~3100 faults a run -> ~700, 15.6M -> 17.1M
 * items/s (medians; 17.7M with 1 MiB stretches, 17.3M mapping the whole ring at a
 * producer's first put); 1p1c unchanged; a new queue's first put 16 -> 57 us with 256 KiB
 * from the start. Kernels before 5.14 have no MADV_POPULATE_WRITE: the first EINVAL turns
 * it off for the process. */
static bool prefault_off;

/* pf_win: the stretch's first page << 32 | its pages. */
static inline uint64_t pf_first(uint64_t pf) { return (pf >> 32) << 12; }
static inline uint64_t pf_bytes(uint64_t pf) { return (pf & 0xffffffff) << 12; }

void mp__q_prefault(mp_queue *q, uint64_t pos, uint64_t need)
{
    uint64_t cap = q->s->capacity, pf = atomic_load_explicit(&q->pf_win, memory_order_relaxed);
    uint64_t len = pf ? 2 * pf_bytes(pf) : (uint64_t)1 << Q_PREFAULT_FIRST;
    if (len > (uint64_t)1 << Q_PREFAULT_MAX)
        len = (uint64_t)1 << Q_PREFAULT_MAX;
    uint64_t off = pos & q->mask, from = off & ~(uint64_t)4095;
    if (len < off + need - from) /* a record longer than the stretch */
        len = (off + need - from + 4095) & ~(uint64_t)4095;
    if (len > cap - from) /* up to the ring's end; a put past it maps on from its start */
        len = cap - from;
    atomic_store_explicit(&q->pf_win, (from >> 12) << 32 | len >> 12, memory_order_relaxed);
    if (__atomic_load_n(&prefault_off, __ATOMIC_RELAXED))
        return;
    if (madvise(q->ring + from, len, MADV_POPULATE_WRITE) < 0 && errno == EINVAL)
        __atomic_store_n(&prefault_off, true, __ATOMIC_RELAXED);
}

/* Whether the record at pos (need bytes) ends past the stretch this handle mapped in. */
static inline bool new_window(const mp_queue *q, uint64_t pos, uint64_t need)
{
    uint64_t pf = atomic_load_explicit(&q->pf_win, memory_order_relaxed);
    return ((pos + need - 1) & q->mask) - pf_first(pf) >= pf_bytes(pf); /* (0: none yet) */
}

static inline __attribute__((always_inline)) int
wait_room(mp_queue *q, uint64_t need, uint64_t items, double timeout)
{
    struct qshared *s = q->s;
    double deadline = NAN;
    bool spun = timeout == 0;
    int code = mp__q_lock(q);
    if (code < 0)
        return code;
    if (__builtin_expect(new_window(q, ld(&s->tailw), need), 0)) {
        uint64_t tail = ld(&s->tailw); /* map it in unlocked, then go on from the new tail */
        qunlock(q);
        mp__q_prefault(q, tail, need);
        if ((code = mp__q_lock(q)) < 0)
            return code;
    }
    while (!has_room(s, need, items)) {
        mp__q_stream_repair(s, false, false, false);
        if (has_room(s, need, items))
            break;
        if (!spun && !s->st.s_active) {
            spun = true;
            uint64_t seen = ld(&s->headw); /* a get moves it */
            qunlock(q);
            mp__q_spin_while(&s->headw, seen);
            if ((code = mp__q_lock(q)) < 0)
                return code;
            continue;
        }
        code = timeout == 0 ? MP_ETIMEOUT
                            : mp__q_wait(q, &s->space_seq, &s->put_waiters, &s->put_woken, NULL,
                                    lazy_deadline(&deadline, timeout), &s->headw,
                                    s->head_seen);
        if (code < 0) {
            qunlock(q);
            return code == MP_ETIMEOUT ? mp__q_full_error(q, timeout) : code;
        }
    }
    return 0;
}

int mp__q_wait_room(mp_queue *q, uint64_t need, uint64_t items, double timeout)
{
    return wait_room(q, need, items, timeout);
}

static inline __attribute__((always_inline)) void
publish(mp_queue *q, uint64_t items, uint64_t need)
{
    struct qshared *s = q->s;
    uint64_t tail = ld(&s->tailw);
    if (s->joinable) { /* the tail and unfinished move together: journaled */
        qstate n = s->st;
        n.unfinished += items;
        mp__q_commit_tail(s, &n, advance_n(s, tail, items, need));
    } else {
        commit_word(&s->tailw, advance_n(s, tail, items, need));
    }
    /* Sleepers counted and not yet woken, one per item (one futex call per sleep, not
     * per item). A sleeper read data_seq under the lock: it must see it move. */
    uint32_t idle = s->get_waiters > s->get_pending ? s->get_waiters - s->get_pending : 0;
    uint32_t n = items < idle ? (uint32_t)items : idle;
    if (n) {
        s->get_pending += n;
        bump(&s->data_seq);
    }
    qunlock(q);
    wake(&s->data_seq, n, (int)n);
}

void mp__q_publish(mp_queue *q, uint64_t items, uint64_t need)
{
    publish(q, items, need);
}

int mp__q_put_record(mp_queue *q, uint32_t tag, const void *buf, size_t len, double timeout)
{
    uint64_t need = rec_size(len);
    /* A small record is assembled here and copied into the ring in one go. */
    uint64_t small[8];
    bool one_copy = need <= sizeof small;
    if (one_copy) {
        small[need / 8 - 1] = 0; /* the padding: no stale stack bytes in shared memory */
        small[0] = len;
        small[1] = tag;
        if (len <= 16) /* an int is 1 to 9 bytes */
            copy_small(small + 2, buf, len);
        else
            memcpy(small + 2, buf, len);
    }
    int code = wait_room(q, need, 1, timeout);
    if (code < 0)
        return code;
    uint64_t tail = ld(&q->s->tailw);
    if (one_copy) {
        ring_write(q, tail, small, need);
    } else {
        uint64_t hdr[2] = {len, tag};
        ring_write(q, tail, hdr, Q_REC);
        ring_write(q, tail + Q_REC, buf, len);
    }
    publish(q, 1, need);
    return 0;
}

int mp__q_put_words(mp_queue *q, uint32_t tag, size_t len, const uint64_t w[2], double timeout)
{
    uint64_t need = rec_size(len); /* 24 or 32 */
    int code = wait_room(q, need, 1, timeout);
    if (code < 0)
        return code;
    /* Word stores (positions and the capacity are multiples of 8: a word never wraps). */
    uint64_t tail = ld(&q->s->tailw), rec[4] = {len, tag, w[0], w[1]};
    for (uint64_t k = 0; k < need / 8; k++)
        memcpy(q->ring + ((tail + 8 * k) & q->mask), &rec[k], 8);
    publish(q, 1, need);
    return 0;
}

int mp__q_put_word(mp_queue *q, uint64_t w, double timeout)
{
    int code = wait_room(q, 8, 1, timeout);
    if (code < 0)
        return code;
    /* One aligned store (positions are multiples of 8), before the tail's that commits it */
    memcpy(q->ring + (ld(&q->s->tailw) & q->mask), &w, 8);
    publish(q, 1, 8);
    return 0;
}

/* JoinableQueue: take the record at head. Under lock; count > 0 and no stream. */
int mp__q_take_record(mp_queue *q, void **buf, size_t *len, uint32_t *tag, void *local,
                       size_t local_cap)
{
    struct qshared *s = q->s;
    uint64_t hdr[2], w, head = ld(&s->headw);
    ring_read(q, head, &w, 8);
    if (!rec_sane(s->capacity, w))
        return mp__error(MP_EPROTO, "queue record at ring offset %llu is corrupt (length %llu)",
                         (unsigned long long)(head & q->mask), (unsigned long long)w);
    hdr[0] = rec_len_of(w);
    if (rec_is_word(w))
        hdr[1] = word_tag(w);
    else
        ring_read(q, head + 8, &hdr[1], 8);
    char *p = local && hdr[0] <= local_cap ? local : malloc(hdr[0] ? hdr[0] : 1);
    if (!p)
        return mp__error(-ENOMEM, "allocating a %llu-byte item", (unsigned long long)hdr[0]);
    if (rec_is_word(w))
        memcpy(p, &w, hdr[0]); /* a word record: the payload is the word's first bytes */
    else
        ring_read(q, head + Q_REC, p, hdr[0]);
    head = advance(s, head, rec_bytes(w));
    mp__q_commit_taken(q, &s->st, head, 1); /* the head and the caller's holder slot */
    if (head != ld(&s->tailw)) /* the next get (ours, likely) finds the next record in cache */
        __builtin_prefetch(q->ring + (head & q->mask));
    if (s->put_waiters)
        bump(&s->space_seq);
    *buf = p;
    *len = hdr[0];
    *tag = (uint32_t)hdr[1];
    return 0;
}

long mp__q_take_records(mp_queue *q, void *dst, size_t cap, size_t max, size_t *bytes)
{
    struct qshared *s = q->s;
    uint64_t head = ld(&s->headw), tail = ld(&s->tailw), pos = head, taken = 0;
    size_t n = 0;
    while (n < max && pos != tail) {
        uint64_t len;
        ring_read(q, pos, &len, 8);
        if (!rec_sane(s->capacity, len))
            return mp__error(MP_EPROTO, "queue record at ring offset %llu is corrupt (length %llu)",
                             (unsigned long long)(pos & q->mask), (unsigned long long)len);
        if (taken + rec_bytes(len) > cap)
            break;
        taken += rec_bytes(len);
        pos = advance(s, pos, rec_bytes(len));
        n++;
    }
    if (n == 0)
        return 0;
    ring_read(q, head, dst, taken);
    mp__q_commit_taken(q, &s->st, pos, (uint32_t)n); /* the whole batch, held by the caller */
    if (s->put_waiters)
        bump(&s->space_seq);
    *bytes = taken;
    return (long)n;
}
