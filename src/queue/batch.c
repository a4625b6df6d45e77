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
 * - Small items are word records (q.h): an item of at most 7 payload bytes is one 8-byte
 *   word, so a batch of 64 ints is 512 bytes of ring, not 1536. put_many and put write
 *   them; every reader (take.c, ring.c, here) tells them by the word's top bit. A word record is
 *   an ordinary record as far as positions, commits and crashes go: the all-or-nothing and
 *   take-nothing arguments above hold unchanged, and a plain get takes one at a time.
 * - No allocation per item: get_many_into decodes into the caller's values (an int into a
 *   scalar in place, inline in the loop below; bytes through mp__value_set_buffer), and a
 *   producer reuses its own with mp_value_set_int and friends. Ints are packed and
 *   unpacked with whole-word stores and loads (a header assembled on the stack and copied
 *   whole stalled on store forwarding: ~60% of put_many's time in one profile).
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

/* Append v as one record: [len][tag][pad][payload, padded to 8], or a word record when
 * its MessagePack is at most 7 bytes. */
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
    if (slen <= Q_WORD_MAX) { /* a word record */
        uint64_t w = 0;
        memcpy(&w, r->p + r->len + Q_REC, slen);
        w = word_make(w, TAG_VALUE, slen);
        memcpy(r->p + r->len, &w, 8);
        r->len += 8;
        return 0;
    }
    uint64_t hdr[2] = {slen, TAG_VALUE};
    memcpy(r->p + r->len, hdr, Q_REC);
    memset(r->p + r->len + Q_REC + slen, 0, rec_size(slen) - Q_REC - slen);
    r->len += rec_size(slen);
    return 0;
}

/* An int's MessagePack (the same bytes as q_pack_int) as a record's payload, padded with
 * zeros to 8 (16 for a 9-byte int): whole-word stores rather than one per byte. Its
 * length. */
static inline size_t rec_pack_int(int64_t i, unsigned char *p)
{
    uint64_t w[2];
    size_t n = q_pack_int_words(i, w);
    memcpy(p, w, n > 8 ? 16 : 8);
    return n;
}

/* An int as one record at rec (32 bytes of room): a word record for ints up to 32 bits
 * (q_int_word), else a [len][tag] record. Its size. Word stores only (a header built on
 * the stack and copied whole would stall on store forwarding). */
static inline size_t int_record(int64_t i, unsigned char *rec)
{
    uint64_t w;
    if (q_int_word(i, &w)) { /* the common ints: one word, built directly */
        memcpy(rec, &w, 8);
        return 8;
    }
    uint64_t len = rec_pack_int(i, rec + Q_REC), tag = TAG_VALUE;
    memcpy(rec, &len, 8);
    memcpy(rec + 8, &tag, 8);
    return rec_size(len);
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
    if (n == 0)
        return 0;
    uint64_t local[BATCH_LOCAL / 8];
    recbuf r = {(unsigned char *)local, 0, sizeof local, false};
    unsigned char *p = r.p; /* r's fields in locals: no round trip through memory per item */
    size_t len = 0, cap = r.cap;
    for (size_t i = 0; i < n; i++) {
        const mp_value *v = values[i];
        if (v && v->type == MP_INT && cap - len >= Q_REC + 16) { /* the common item, inline */
            len += int_record(v->u.i, p + len);
            continue;
        }
        r.len = len;
        if (!v)
            code = mp__error(MP_EINVAL, "mp_queue_put_many: values[%zu] is NULL", i);
        else
            code = append_value(&r, v);
        if (code < 0)
            break;
        p = r.p;
        len = r.len;
        cap = r.cap;
    }
    r.len = len;
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

/* The payload length of a word record holding an int of up to 32 bits whose first byte
 * is c (q_word_int's table, q.h): 1 for a fixint, 2, 3 or 5 for uint/int 8, 16 and 32; X
 * for any other first byte. */
#define X 0xff
const unsigned char mp__q_word_int_len[256] = {
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, X, X, X, X,
    X, X, X, X, X, X, X, X, X, X, X, X, 2, 3, 5, X,
    2, 3, 5, X, X, X, X, X, X, X, X, X, X, X, X, X,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
    1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
};
#undef X

/* The int in a word record w of tag TAG_VALUE, into *i; false for anything else. */
static inline bool word_int(uint64_t w, int64_t *i) { return q_word_int(w, (w >> 56) & 7, i); }

/* Decode one record's payload into *slot: a value there is set in place when the item
 * fits it (an int into any scalar, short bytes into short bytes...), else freed and
 * replaced once the new one exists; NULL gets a new value. On failure *slot is unchanged. */
static inline int decode_into(const unsigned char *p, size_t len, uint32_t tag, bool padded,
                              mp_value **slot)
{
    mp_value *v = *slot, *nv;
    int64_t i;
    if (tag == TAG_VALUE && (padded ? q_unpack_int_padded(p, len, &i) : q_unpack_int(p, len, &i))) {
        if (v && mp__value_set_scalar_int(v, i))
            return 0;
        if (v)
            return mp_value_set_int(v, i);
        *slot = mp__value_new_scalar(MP_INT);
        if (!*slot)
            return -ENOMEM;
        (*slot)->u.i = i;
        return 0;
    }
    if (tag != TAG_VALUE)
        return mp__value_set_buffer(slot, MP_BYTES, p, len);
    int code = mp_value_decode(p, len, NULL, 0, &nv);
    if (code < 0)
        return code;
    mp_value_free(v);
    *slot = nv;
    return 0;
}

int mp__q_decode_into(const unsigned char *p, size_t len, uint32_t tag, bool padded,
                      mp_value **slot)
{
    return decode_into(p, len, tag, padded, slot);
}

/* get_many and get_many_into: with `reuse`, values already in out[] are decoded into.
 * Inlined into each, so the loop is compiled for a constant `reuse`. */
static inline __attribute__((always_inline)) int get_many(mp_queue *q, mp_value **out, size_t max, size_t *got, double timeout,
                    bool reuse, const char *fn)
{
    if (got)
        *got = 0;
    if (!out || !got || max == 0)
        return mp__error(MP_EINVAL, "%s: %s", fn, max == 0 ? "max is 0" : "NULL output pointer");
    uint64_t local[BATCH_LOCAL / 8];
    qbatch b = {local, sizeof local, max, 0, 0};
    void *buf = NULL;
    size_t len = 0;
    uint32_t tag = 0;
    int code = mp__q_get(q, &buf, &len, &tag, timeout, NULL, 0, &b);
    if (code < 0)
        return code;
    if (b.n == 0) { /* one item taken alone (a stream, or bigger than the buffer) */
        if (!reuse)
            out[0] = NULL;
        code = decode_into(buf, len, tag, false, &out[0]);
        free(buf);
        *got = code == 0;
        return code;
    }
    const unsigned char *p = (const unsigned char *)local;
    const size_t n = b.n;
    for (size_t i = 0; i < n; i++) {
        uint64_t w, tag;
        memcpy(&w, p, 8);
        mp_value *v = reuse ? out[i] : NULL;
        int64_t x;
        if (v && (w >> 60) == (8 | TAG_VALUE) && v->type < MP_STR &&
            word_int(w, &x)) { /* an int word into a scalar: the common item */
            v->type = MP_INT;
            v->u.i = x;
            p += 8;
            continue;
        }
        *got = i;
        if (!reuse)
            out[i] = NULL;
        if (rec_is_word(w)) { /* the payload is the word's first bytes */
            code = decode_into(p, rec_len_of(w), word_tag(w), true, &out[i]);
        } else {
            memcpy(&tag, p + 8, 8);
            code = decode_into(p + Q_REC, w, (uint32_t)tag, true, &out[i]);
        }
        if (code < 0)
            return code; /* out[0..*got) hold items; the rest of the batch is lost */
        p += rec_bytes(w);
    }
    *got = n;
    return 0;
}

int mp_queue_get_many(mp_queue *q, mp_value **out, size_t max, size_t *got, double timeout)
{
    return get_many(q, out, max, got, timeout, false, "mp_queue_get_many");
}

int mp_queue_get_many_into(mp_queue *q, mp_value **out, size_t max, size_t *got,
                           double timeout)
{
    return get_many(q, out, max, got, timeout, true, "mp_queue_get_many_into");
}
