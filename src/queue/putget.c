/* Queue put and get: a record in the ring, or a stream for an item too big for it.
 *
 * DESIGN
 * - Any thread of any process that maps the queue calls these directly: no feeder
 *   thread, no pipe; an item is in shared memory as soon as put returns.
 * - Waiting: under `lock`, through wait.c; a stream is claimed through stream.c.
 */
#define _GNU_SOURCE
#include "queue/q.h"

#include "internal/value.h"

#include <stdlib.h>

static int put_tagged(mp_queue *q, uint32_t tag, const void *buf, size_t len, double timeout)
{
    int code = mp__q_check_open(q);
    if (code < 0)
        return code;
    if (!buf && len)
        return mp__error(MP_EINVAL, "put: NULL buffer");
    if (len <= Q_WORD_MAX) { /* one word record */
        uint64_t w = 0;
        if (len)
            memcpy(&w, buf, len);
        return mp__q_put_word(q, word_make(w, tag, len), timeout);
    }
    if (rec_size(len) > q->s->capacity || len > ((uint64_t)1 << 62))
        return mp__q_put_stream(q, tag, buf, len, timeout);
    return mp__q_put_record(q, tag, buf, len, timeout);
}

int mp_queue_put_bytes(mp_queue *q, const void *buf, size_t len, double timeout)
{
    return put_tagged(q, TAG_BYTES, buf, len, timeout);
}

int mp_queue_put(mp_queue *q, const mp_value *v, double timeout)
{
    int code = mp__q_check_open(q);
    if (code < 0)
        return code;
    /* Small values are encoded on the stack, straight into the ring: no malloc. */
    unsigned char small[256];
    size_t slen;
    if (v && v->type == MP_INT) { /* the common item: straight to the ring as words */
        uint64_t w[2];
        if (q_int_word(v->u.i, &w[0])) /* up to 32 bits: one word record */
            return mp__q_put_word(q, w[0], timeout);
        size_t n = q_pack_int_words(v->u.i, w);
        return rec_size(n) > q->s->capacity ? put_tagged(q, TAG_VALUE, w, n, timeout)
                                            : mp__q_put_words(q, TAG_VALUE, n, w, timeout);
    }
    if (v && mp__value_encode_into(v, small, sizeof small, &slen) == 0)
        return put_tagged(q, TAG_VALUE, small, slen, timeout);
    char *buf = NULL;
    size_t len = 0, nfds = 0;
    int nofds[1]; /* handles without fds (manager proxies) travel; fds cannot */
    code = mp_value_encode(v, &buf, &len, nofds, 0, &nfds);
    if (code < 0) {
        if (code == -E2BIG)
            return mp__error(MP_EUNSUPPORTED, "a value holding handles with fds cannot be put "
                                              "in a queue (only fd-less ones such as proxies)");
        return code;
    }
    code = put_tagged(q, TAG_VALUE, buf, len, timeout);
    mp_free(buf);
    return code;
}

int mp_queue_put_nowait(mp_queue *q, const mp_value *v) { return mp_queue_put(q, v, 0); }

int mp__q_empty_error(double timeout)
{
    if (timeout == 0)
        return mp__error(MP_EEMPTY, "no item to take without waiting");
    return mp__error(MP_EEMPTY, "queue still empty after %.3g s", timeout);
}

static int too_short(size_t *len, uint64_t need, size_t cap)
{
    *len = need;
    return mp__error(MP_ETOOSHORT, "the item at the head of the queue is %llu bytes, the buffer "
                     "%zu: it stays in the queue", (unsigned long long)need, cap);
}

/* `local` (local_cap bytes, may be NULL) receives a small item instead of a malloc'd buffer.
 * With `b`, up to b->max whole records are copied to b->dst instead (b->n of them; 0 when
 * the item at head came through buf as usual: a stream or a record too big for b->cap).
 * With b->max == 0, the item must fit `local`: else MP_ETOOSHORT, *len = its size, and it
 * stays in the queue. */
static inline __attribute__((always_inline)) int
get_core(mp_queue *q, void **buf, size_t *len, uint32_t *tag, double timeout, void *local,
         size_t local_cap, qbatch *b)
{
    int code = mp__q_check_open(q);
    if (code < 0)
        return code;
    struct qshared *s = q->s;
    double deadline = NAN;
    bool spun = timeout == 0;
    bool fit = b && b->max == 0; /* the item must fit `local` or stay in the queue */
    bool plain = !s->joinable;   /* consumers take without the lock (take.c) */
    if (plain) {
        code = mp__q_take(q, buf, len, tag, local, local_cap, !fit, b);
        if (code == 0 && !spun && !atomic_load_explicit(&s->active_pub, memory_order_relaxed)) {
            spun = true; /* empty: spin (unlocked) on the tail before taking the lock */
            mp__q_spin_for_items(q, atomic_load_explicit(&q->tail_seen, memory_order_relaxed));
            code = mp__q_take(q, buf, len, tag, local, local_cap, !fit, b);
        }
        if (code != 0)
            return code == Q_BIG ? too_short(len, *len, local_cap) : code < 0 ? code : 0;
    }
    if ((code = mp__q_lock(q)) < 0)
        return code;
    for (;;) {
        if (s->st.s_active && !s->st.s_claimed) {
            if (fit && s->st.s_len > local_cap) {
                code = too_short(len, s->st.s_len, local_cap);
                break;
            }
            code = mp__q_get_stream(q, buf, len, tag);
            if (code != 0)
                break;
            continue;
        }
        if (ld(&s->headw) != ld(&s->tailw) && !s->st.s_active && plain) {
            code = mp__q_take(q, buf, len, tag, local, local_cap, !fit, b);
            if (code == 0) /* another consumer took it first */
                continue;
            code = code == Q_BIG ? too_short(len, *len, local_cap) : code < 0 ? code : 0;
            break;
        }
        if (ld(&s->headw) != ld(&s->tailw) && !s->st.s_active) {
            if (fit) {
                uint64_t rec_len;
                ring_read(q, ld(&s->headw), &rec_len, 8);
                rec_len = rec_len_of(rec_len);
                if (rec_len > local_cap) {
                    code = too_short(len, rec_len, local_cap);
                    break;
                }
            }
            long n = b && !fit ? mp__q_take_records(q, b->dst, b->cap, b->max, &b->bytes) : 0;
            if (n != 0) {
                code = n < 0 ? (int)n : 0;
                if (n > 0)
                    b->n = (size_t)n;
                break;
            }
            code = mp__q_take_record(q, buf, len, tag, local, local_cap);
            break;
        }
        mp__q_stream_repair(s, false, false, false);
        if (!spun) {
            spun = true;
            uint64_t seen = ld(&s->tailw); /* a put moves it */
            qunlock(q);
            mp__q_spin_while(&s->tailw, seen);
            if ((code = mp__q_lock(q)) < 0)
                return code;
            continue;
        }
        code = timeout == 0 ? MP_ETIMEOUT
                            : mp__q_wait(q, &s->data_seq, &s->get_waiters, NULL,
                                    &s->get_pending, lazy_deadline(&deadline, timeout), NULL, 0);
        if (code < 0)
            break;
    }
    uint32_t put_waiters = plain ? 0 : s->put_waiters; /* mp__q_take woke them */
    uint32_t more = ld(&s->headw) != ld(&s->tailw) && s->get_waiters;
    qunlock(q);
    if (code >= 0) {
        wake(&s->space_seq, put_waiters, INT32_MAX);
        wake(&s->data_seq, more, 1); /* pass the baton if items remain */
        return 0;
    }
    return code == MP_ETIMEOUT ? mp__q_empty_error(timeout) : code;
}

int mp__q_get(mp_queue *q, void **buf, size_t *len, uint32_t *tag, double timeout,
              void *local, size_t local_cap, qbatch *b)
{
    return get_core(q, buf, len, tag, timeout, local, local_cap, b);
}

/* Single items: b == NULL, so the batch branches fold away. */
static int get_tagged(mp_queue *q, void **buf, size_t *len, uint32_t *tag, double timeout,
                      void *local, size_t local_cap)
{
    return get_core(q, buf, len, tag, timeout, local, local_cap, NULL);
}

int mp_queue_get_bytes(mp_queue *q, void **buf, size_t *len, double timeout)
{
    uint32_t tag;
    if (!buf || !len)
        return mp__error(MP_EINVAL, "mp_queue_get_bytes: NULL output pointer");
    *buf = NULL;
    *len = 0;
    return get_tagged(q, buf, len, &tag, timeout, NULL, 0);
}

int mp_queue_get_bytes_into(mp_queue *q, void *buf, size_t bufsize, size_t *len,
                            double timeout)
{
    if (!len || (!buf && bufsize))
        return mp__error(MP_EINVAL, "mp_queue_get_bytes_into: NULL %s", len ? "buffer" : "len");
    *len = 0;
    void *got = NULL;
    uint32_t tag;
    qbatch fit = {0};
    int code = mp__q_get(q, &got, len, &tag, timeout, buf, bufsize, &fit);
    if (code == 0 && got != buf) { /* a streamed item that fits: copied from its buffer */
        if (*len)
            memcpy(buf, got, *len);
        free(got);
    }
    return code;
}

/* get_into's general way: waiting, a bigger record, a JoinableQueue, a closed queue. */
static __attribute__((noinline)) int get_into_general(mp_queue *q, mp_value **slot,
                                                      double timeout)
{
    uint64_t local[32]; /* small items are decoded from here, without a malloc */
    void *buf = local;
    size_t len;
    uint32_t tag;
    int code = get_tagged(q, &buf, &len, &tag, timeout, local, sizeof local);
    if (code < 0)
        return code;
    code = mp__q_decode_into(buf, len, tag, buf == local, slot);
    if (buf != local)
        free(buf);
    return code;
}

int mp_queue_get_into(mp_queue *q, mp_value **slot, double timeout)
{
    if (!slot)
        return mp__error(MP_EINVAL, "mp_queue_get_into: NULL slot");
    if (__builtin_expect(q && !q->closed && !q->s->joinable, 1)) {
        /* A plain queue's small record at head (an int): its words, with no buffer between */
        uint64_t w[2];
        size_t len;
        uint32_t tag;
        int code = mp__q_take_words(q, w, &len, &tag);
        if (code < 0)
            return code;
        const unsigned char *p = (const unsigned char *)w;
        int64_t i;
        if (code == 1 && tag == TAG_VALUE && *slot &&
            (len <= Q_WORD_MAX ? q_word_int(w[0], len, &i) : q_unpack_int_padded(p, len, &i)) &&
            mp__value_set_scalar_int(*slot, i))
            return 0; /* the common item into a reused scalar: no value made or freed */
        if (code == 1)
            return mp__q_decode_into(p, len, tag, true, slot);
    }
    return get_into_general(q, slot, timeout); /* empty: wait there */
}

int mp_queue_get(mp_queue *q, mp_value **out, double timeout)
{
    if (!out)
        return mp__error(MP_EINVAL, "mp_queue_get: NULL output pointer");
    *out = NULL;
    return mp_queue_get_into(q, out, timeout);
}

int mp_queue_get_nowait(mp_queue *q, mp_value **out) { return mp_queue_get(q, out, 0); }
