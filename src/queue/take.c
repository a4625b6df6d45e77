/* Queue gets without the lock: a plain queue's consumers take records by compare-and-swap.
 *
 * DESIGN
 * - In a plain queue (not a JoinableQueue) the head word moves only by compare-and-swap,
 *   never by a plain store, whether the consumer holds `lock` or not: it reads the head,
 *   copies the record(s) there out of the ring, then swaps the head past them. A swap
 *   that fails (another consumer took them first) discards the copy, which may be torn,
 *   and tries again at the new head. A swap that succeeds proves the head did not move
 *   while we copied, so no producer could reuse those bytes: the copy is whole. A length
 *   read from a moving head may be garbage: it is believed only once the head is seen
 *   unmoved after reading it.
 * - Producers write ring bytes only between the tail and head_seen + capacity (ring.c);
 *   head_seen is a value headw had. The tail is stored with release after the ring bytes
 *   and read with acquire here, so a record below the tail read here is whole.
 * - Crash: a consumer killed before its swap took nothing (the item stays for the next
 *   one); after it, the item went with it, as when a consumer is killed just after a
 *   locked get returned. It holds no lock, so it leaves nothing to repair.
 * - Waking: a producer waiting for room counts itself in put_waiters (an atomic add),
 *   clears put_woken and then re-reads headw before it sleeps (wait.c's watch); a
 *   consumer swaps the head and then reads put_waiters and put_woken. All sequentially
 *   consistent, so either the producer sees the new head and does not sleep, or the
 *   consumer sees it counted and not yet woken, sets put_woken and wakes every sleeper.
 *   A consumer that finds put_woken set skips the futex call: a sleeper counted after
 *   that wake cleared it first, so such a consumer's swap came before the sleeper's
 *   re-read of the head.
 * - The tail view: a process keeps the last tail it read (tail_seen) and the head it was
 *   good for (head_mine: the head then, or where its own last take left it). While the
 *   head is at or after head_mine and before tail_seen (it moved only by gets, ours or
 *   other processes'), the items from the head to tail_seen are committed (the tail only
 *   moves forward), so a get does not read tailw, the line every put writes; once the
 *   items it showed are gone, it reads tailw afresh. With several consumer processes this
 *   spares most gets a line from the producers' core. The two words are stored tail first
 *   and read head first, every tail_seen is a value tailw had, and the view must show at
 *   most capacity / 8 items (what the ring can hold: a record is 8 bytes or more), so a
 *   tail older than the head, which shows nearly 2^40 items, is never believed: threads
 *   of one process racing on them can only cost a re-read.
 * - Wrap-around: a position word carries an item count modulo 2^(64 - posbits) (41 bits
 *   for the default 4 MiB ring, 40 for 8 MiB). A swap, or the tail view, could only be fooled by a head
 *   word that came back to the very value it had, after a multiple of 2^40 items taken
 *   while this consumer was between its read and its swap (for the view: a head that
 *   came back, 2^40 items later, to within the view's items after head_mine while this
 *   process was idle). The view is used only where the count has 40 bits or more (rings
 *   up to 8 MiB); bigger rings read tailw on every get.
 */
#define _GNU_SOURCE
#include "queue/q.h"

#include <errno.h>
#include <stdlib.h>

static inline uint64_t acq(const _Atomic uint64_t *w)
{
    return atomic_load_explicit(w, memory_order_acquire);
}

/* Producers waiting for room: the swap that freed it was a full barrier before these
 * reads. Only the first taker after a producer went to sleep calls the futex. */
static inline void wake_putters(struct qshared *s)
{
    if (__atomic_load_n(&s->put_waiters, __ATOMIC_SEQ_CST) &&
        !__atomic_load_n(&s->put_woken, __ATOMIC_SEQ_CST) &&
        !__atomic_exchange_n(&s->put_woken, 1, __ATOMIC_SEQ_CST)) {
        bump(&s->space_seq);
        mp__futex_wake(&s->space_seq, INT32_MAX);
    }
}

static inline bool swap_head(struct qshared *s, uint64_t *h, uint64_t next)
{
    return atomic_compare_exchange_weak_explicit(&s->headw, h, next, memory_order_seq_cst,
                                                 memory_order_acquire);
}

/* The first word of the record at pos (its length, or a word record), checked: 1 when it
 * is sane, 0 when the head moved (*h is then the new head), or MP_EPROTO for a corrupt
 * record at a head that stayed. */
static inline int record_len(mp_queue *q, uint64_t *h, uint64_t pos, uint64_t *len)
{
    struct qshared *s = q->s;
    ring_read(q, pos, len, 8);
    if (__builtin_expect(*len <= s->capacity - Q_REC, 1) || rec_sane(s->capacity, *len))
        return 1;
    uint64_t now = acq(&s->headw);
    if (now != *h) {
        *h = now;
        return 0;
    }
    return mp__error(MP_EPROTO, "queue record at ring offset %llu is corrupt (length %llu)",
                     (unsigned long long)(pos & q->mask), (unsigned long long)*len);
}

/* Up to b->max whole records at h that fit b->cap (b->n of them). 1 taken, 0 when the
 * head moved (*h updated), Q_BIG when the first alone does not fit, or an error. */
static int take_many(mp_queue *q, uint64_t *h, uint64_t t, struct qbatch *b)
{
    struct qshared *s = q->s;
    const uint64_t avail = bytes_between(s, *h, t), cap = b->cap < avail ? b->cap : avail;
    uint64_t taken = 0, len, items = items_between(s, *h, t);
    size_t n = 0, max = b->max;
    if (avail == 8 * items) { /* every record is 8 bytes or more: all word records */
        n = (size_t)(items < max ? items : max);
        n = n < cap / 8 ? n : (size_t)(cap / 8);
        taken = 8 * (uint64_t)n; /* no walk: the decoder reads each word anyway */
    }
    while (n < max && taken < cap) {
        /* records are 8-aligned, so a first word never wraps: read it in place */
        len = atomic_load_explicit((_Atomic uint64_t *)(q->ring + ((*h + taken) & q->mask)),
                                   memory_order_relaxed);
        if (!rec_sane(s->capacity, len)) {
            int r = record_len(q, h, *h + taken, &len);
            if (r <= 0)
                return r;
        }
        if (taken + rec_bytes(len) > cap)
            break;
        taken += rec_bytes(len);
        n++;
    }
    if (n == 0)
        return Q_BIG;
    uint64_t pos = advance_n(s, *h, n, taken);
    ring_read(q, *h, b->dst, taken);
    if (!swap_head(s, h, pos))
        return 0;
    atomic_store_explicit(&q->head_mine, pos, memory_order_relaxed);
    b->n = n;
    b->bytes = taken;
    return 1;
}

/* The record at *h is n bytes, more than the caller's buffer: Q_BIG with *len = n, or 0
 * when the head moved meanwhile (n was then read from a moving head). */
static int too_big(struct qshared *s, uint64_t *h, uint64_t n, size_t *len)
{
    uint64_t now = acq(&s->headw);
    if (now != *h) {
        *h = now;
        return 0;
    }
    *len = n;
    return Q_BIG;
}

/* take_one for the word record w at *h (a small item). */
static __attribute__((noinline)) int take_word(mp_queue *q, uint64_t *h, uint64_t w,
                                               void **buf, size_t *len, uint32_t *tag,
                                               void *local, size_t local_cap, bool alloc)
{
    uint64_t n = rec_len_of(w);
    if (n > local_cap && !alloc)
        return too_big(q->s, h, n, len);
    char *p = local && n <= local_cap ? local : malloc(n ? n : 1);
    if (!p)
        return mp__error(-ENOMEM, "allocating a %llu-byte item", (unsigned long long)n);
    memcpy(p, &w, n); /* the payload: the word's first bytes */
    uint64_t next = advance(q->s, *h, 8);
    if (!swap_head(q->s, h, next)) {
        if (p != local)
            free(p);
        return 0;
    }
    atomic_store_explicit(&q->head_mine, next, memory_order_relaxed);
    *buf = p;
    *len = n;
    *tag = word_tag(w);
    return 1;
}

/* The record at h, into local or malloc'd (when alloc). 1 taken, 0 the head moved, Q_BIG,
 * or an error. */
static int take_one(mp_queue *q, uint64_t *h, void **buf, size_t *len, uint32_t *tag,
                    void *local, size_t local_cap, bool alloc)
{
    struct qshared *s = q->s;
    uint64_t hdr[2];
    int r = record_len(q, h, *h, &hdr[0]);
    if (r <= 0)
        return r;
    if (rec_is_word(hdr[0])) /* a small item (an int of up to 32 bits) */
        return take_word(q, h, hdr[0], buf, len, tag, local, local_cap, alloc);
    if (hdr[0] > local_cap && !alloc)
        return too_big(s, h, hdr[0], len);
    ring_read(q, *h + 8, &hdr[1], 8);
    char *p = local && hdr[0] <= local_cap ? local : malloc(hdr[0] ? hdr[0] : 1);
    if (!p)
        return mp__error(-ENOMEM, "allocating a %llu-byte item", (unsigned long long)hdr[0]);
    uint64_t padded = rec_size(hdr[0]) - Q_REC;
    if (p == local && alloc && padded <= local_cap && padded <= 16)
        ring_read(q, *h + Q_REC, p, padded); /* our own buffer: whole words (an int) */
    else if (hdr[0])
        ring_read(q, *h + Q_REC, p, hdr[0]);
    uint64_t next = advance(s, *h, rec_size(hdr[0]));
    if (!swap_head(s, h, next)) {
        if (p != local)
            free(p);
        return 0;
    }
    atomic_store_explicit(&q->head_mine, next, memory_order_relaxed);
    if (next != atomic_load_explicit(&q->tail_seen, memory_order_relaxed))
        __builtin_prefetch(q->ring + (next & q->mask)); /* the next get finds it in cache */
    *buf = p;
    *len = hdr[0];
    *tag = (uint32_t)hdr[1];
    return 1;
}

/* A tail at or after h: this process's last view of it while the head is between where
 * this process last saw or left it and that tail (another process's gets moved it there:
 * the items from h to the view's tail are still committed, as the tail only moves
 * forward); else a fresh read. */
static inline uint64_t tail_view(mp_queue *q, uint64_t h)
{
    struct qshared *s = q->s;
    uint64_t mine = atomic_load_explicit(&q->head_mine, memory_order_acquire);
    uint64_t t = acq(&q->tail_seen), n = items_between(s, h, t);
    if (n && n <= q->tail_cache_max && items_between(s, mine, h) < items_between(s, mine, t))
        return t;
    t = acq(&s->tailw);
    atomic_store_explicit(&q->tail_seen, t, memory_order_release); /* before its head */
    atomic_store_explicit(&q->head_mine, h, memory_order_release);
    return t;
}

int mp__q_take_words(mp_queue *q, uint64_t w[2], size_t *len, uint32_t *tag)
{
    struct qshared *s = q->s;
    uint64_t h = acq(&s->headw);
    for (;;) {
        uint64_t t = tail_view(q, h), n;
        if (t == h)
            return 0;
        int r = record_len(q, &h, h, &n);
        if (r < 0)
            return r;
        if (r == 0) /* the head moved */
            continue;
        /* Results go to registers, not a buffer on the stack: words stored one by one and
         * read back two at a time would stall on store forwarding. */
        uint64_t need, w0, w1 = 0, tg;
        if (rec_is_word(n)) { /* a word record: the payload is the word's first bytes */
            need = 8;
            tg = word_tag(n);
            w0 = n & (((uint64_t)1 << 56) - 1);
            n = rec_len_of(n);
        } else {
            if (n > 16)
                return Q_BIG; /* (or a length read from a moving head: the caller re-reads) */
            need = rec_size(n); /* 24 or 32; words never wrap (ring.c) */
            memcpy(&tg, q->ring + ((h + 8) & q->mask), 8);
            memcpy(&w0, q->ring + ((h + 16) & q->mask), 8);
            if (need == 32)
                memcpy(&w1, q->ring + ((h + 24) & q->mask), 8);
        }
        uint64_t next = advance(s, h, need);
        if (!swap_head(s, &h, next))
            continue;
        atomic_store_explicit(&q->head_mine, next, memory_order_relaxed);
        if (next != atomic_load_explicit(&q->tail_seen, memory_order_relaxed))
            __builtin_prefetch(q->ring + (next & q->mask));
        wake_putters(s);
        *len = n;
        *tag = (uint32_t)tg;
        w[0] = w0;
        w[1] = w1;
        return 1;
    }
}

int mp__q_take(mp_queue *q, void **buf, size_t *len, uint32_t *tag, void *local,
               size_t local_cap, bool alloc, struct qbatch *b)
{
    struct qshared *s = q->s;
    uint64_t h = acq(&s->headw);
    for (;;) {
        uint64_t t = tail_view(q, h);
        if (t == h)
            return 0;
        int r = b && b->max ? take_many(q, &h, t, b) : Q_BIG;
        if (r == Q_BIG) /* single items, or a record too big for the batch buffer */
            r = take_one(q, &h, buf, len, tag, local, local_cap, alloc);
        if (r == 0) /* the head moved: try again at the new one */
            continue;
        if (r == 1)
            wake_putters(s);
        return r;
    }
}
