/* Queue batches: put_many and get_many, many items under one lock hold and one wake-up.
 *
 * DESIGN
 * - put_many encodes every value into one local buffer laid out as ring records, then
 *   takes `lock` once, waits for room for the whole batch, copies the buffer into the ring
 *   and publishes it with one store of the tail word (journaled with `unfinished` for a
 *   JoinableQueue). A producer killed before that store leaves none of its batch; after
 *   it, all of it: a batch is all or nothing, never a torn item nor a partial batch. So a
 *   batch must fit the queue at once (bytes <= capacity, items <= maxsize): MP_EINVAL
 *   otherwise, since it could never be put.
 * - get_many waits (as get does) for one item, then copies up to N whole records that
 *   fit its local buffer out of the ring and frees them with one store of the head word:
 *   a consumer killed before it leaves every item in the queue. Values are decoded after
 *   the lock is released. An item at head that is a stream (larger than the ring) or
 *   larger than the buffer is taken alone, as get takes it.
 */
#define _GNU_SOURCE
#include "queue/q.h"

#include "internal/value.h"

#include <stdlib.h>

#define BATCH_LOCAL 8192 /* bytes of records encoded or decoded on the stack */

/* A growable buffer of records, on the stack until it outgrows BATCH_LOCAL. */
typedef struct recbuf {
    unsigned char *p;
    size_t len, cap;
    bool heap;
} recbuf;

static int recbuf_grow(recbuf *r, size_t more)
{
    size_t cap = r->cap * 2 > r->len + more ? r->cap * 2 : r->len + more;
    unsigned char *p = r->heap ? realloc(r->p, cap) : malloc(cap);
    if (!p)
        return mp__error(-ENOMEM, "allocating a %zu-byte batch", cap);
    if (!r->heap)
        memcpy(p, r->p, r->len);
    r->p = p;
    r->cap = cap;
    r->heap = true;
    return 0;
}

static inline int recbuf_reserve(recbuf *r, size_t more)
{
    return r->len + more <= r->cap ? 0 : recbuf_grow(r, more);
}

/* Append v as one record [len][tag][pad][payload, padded to 8]. */
static int append_value(recbuf *r, const mp_value *v)
{
    size_t slen;
    if (recbuf_reserve(r, Q_REC + 64) < 0)
        return -ENOMEM;
    int code = 0;
    if (v->type == MP_INT)
        slen = q_pack_int(v->u.i, r->p + r->len + Q_REC);
    else
        code = mp__value_encode_into(v, r->p + r->len + Q_REC, r->cap - r->len - Q_REC, &slen);
    if (code == MP_EUNSUPPORTED)
        return mp__error(code, "a value holding handles cannot be put in a queue");
    if (code < 0) { /* too big for the room left: encode apart, then copy */
        char *buf = NULL;
        size_t nfds = 0;
        if ((code = mp_value_encode(v, &buf, &slen, NULL, 0, &nfds)) < 0)
            return code == MP_EUNSUPPORTED
                       ? mp__error(code, "a value holding handles cannot be put in a queue")
                       : code;
        if ((code = recbuf_reserve(r, rec_size(slen))) == 0)
            memcpy(r->p + r->len + Q_REC, buf, slen);
        mp_free(buf);
        if (code < 0)
            return code;
    } else if (recbuf_reserve(r, rec_size(slen)) < 0) {
        return -ENOMEM; /* unreachable: the payload already fit */
    }
    uint64_t hdr[2] = {slen, TAG_VALUE};
    memcpy(r->p + r->len, hdr, Q_REC);
    memset(r->p + r->len + Q_REC + slen, 0, rec_size(slen) - Q_REC - slen);
    r->len += rec_size(slen);
    return 0;
}

static int check_batch(const mp_queue *q, size_t n, size_t bytes)
{
    const struct qshared *s = q->s;
    if (bytes > s->capacity || (s->maxsize && n > s->maxsize) ||
        n >= (~(uint64_t)0 >> s->posbits)) /* the item counter's range (rings > 8 GiB) */
        return mp__error(MP_EINVAL,
                         "put_many: a batch of %zu items (%zu bytes) can never fit this queue "
                         "(capacity %llu bytes, maxsize %llu)",
                         n, bytes, (unsigned long long)s->capacity,
                         (unsigned long long)s->maxsize);
    return 0;
}

int mp_queue_put_many(mp_queue *q, const mp_value *const *values, size_t n, double timeout)
{
    int code = mp__q_check_open(q);
    if (code < 0)
        return code;
    if (!values && n)
        return mp__error(MP_EINVAL, "mp_queue_put_many: NULL values");
    for (size_t i = 0; i < n; i++)
        if (!values[i])
            return mp__error(MP_EINVAL, "mp_queue_put_many: values[%zu] is NULL", i);
    if (n == 0)
        return 0;
    uint64_t local[BATCH_LOCAL / 8];
    recbuf r = {(unsigned char *)local, 0, sizeof local, false};
    for (size_t i = 0; i < n && code == 0; i++)
        code = append_value(&r, values[i]);
    if (code == 0)
        code = check_batch(q, n, r.len);
    if (code == 0)
        code = mp__q_wait_room(q, r.len, n, timeout);
    if (code == 0) {
        ring_write(q, ld(&q->s->tailw), r.p, r.len);
        mp__q_publish(q, n, r.len); /* one store: the whole batch appears at once */
    }
    if (r.heap)
        free(r.p);
    return code;
}

/* Decode one record's payload into a value. */
static int decode_item(const void *p, size_t len, uint32_t tag, mp_value **out)
{
    int64_t i;
    if (tag == TAG_VALUE && q_unpack_int(p, len, &i)) { /* the common item, directly */
        *out = mp_value_int(i);
        return *out ? 0 : -ENOMEM;
    }
    if (tag == TAG_VALUE)
        return mp_value_decode(p, len, NULL, 0, out);
    *out = mp_value_bytes(p, len);
    return *out ? 0 : -ENOMEM;
}

int mp_queue_get_many(mp_queue *q, mp_value **out, size_t max, size_t *got, double timeout)
{
    if (got)
        *got = 0;
    if (!out || !got || max == 0)
        return mp__error(MP_EINVAL, "mp_queue_get_many: %s",
                         max == 0 ? "max is 0" : "NULL output pointer");
    uint64_t local[BATCH_LOCAL / 8];
    qbatch b = {local, sizeof local, max, 0, 0};
    void *buf = NULL;
    size_t len = 0;
    uint32_t tag = 0;
    int code = mp__q_get(q, &buf, &len, &tag, timeout, NULL, 0, &b);
    if (code < 0)
        return code;
    if (b.n == 0) { /* one item taken alone (a stream, or bigger than the buffer) */
        code = decode_item(buf, len, tag, &out[0]);
        free(buf);
        *got = code == 0;
        return code;
    }
    const unsigned char *p = (const unsigned char *)local;
    for (size_t i = 0; i < b.n; i++) {
        uint64_t hdr[2];
        memcpy(hdr, p, Q_REC);
        if ((code = decode_item(p + Q_REC, hdr[0], (uint32_t)hdr[1], &out[i])) < 0)
            return code; /* out[0..*got) stay the caller's; the rest of the batch is lost */
        *got = i + 1;
        p += rec_size(hdr[0]);
    }
    return 0;
}
