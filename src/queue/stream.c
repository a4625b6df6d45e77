/* Queue items larger than the ring, streamed through it.
 *
 * DESIGN
 * - The producer takes `wlock` (held for its whole put), waits for an empty ring,
 *   publishes a stream item, and copies chunks as space frees; one consumer takes
 *   `rlock`, claims the stream and copies chunks out. Both copy outside `lock` and
 *   publish progress under it.
 * - Because the claimer holds rlock and the producer holds wlock for as long as the
 *   stream is theirs, anyone may test them with trylock: EOWNERDEAD (or getting the
 *   lock) means the owner died. A dead producer aborts the stream (its item never
 *   existed; a reader drops its partial copy); a dead reader makes the producer start
 *   again from byte 0 for the next reader, so no consumer receives a torn item and no
 *   item is lost.
 * - Lock order: wlock or rlock, then lock. Nobody blocks on wlock/rlock holding lock.
 */
#define _GNU_SOURCE
#include "queue/q.h"

#include <errno.h>
#include <stdlib.h>

/* Drop the stream item entirely (its producer died or gave up). Under lock. */
void mp__q_stream_abort(struct qshared *s)
{
    qstate n = s->st;
    n.s_active = n.s_claimed = 0;
    n.s_done_gen = n.s_gen;
    if (s->joinable && n.unfinished)
        n.unfinished--;
    mp__q_commit(s, &n);
    bump(&s->data_seq);
    bump(&s->space_seq);
    bump(&s->stream_seq);
    mp__futex_wake(&s->data_seq, INT32_MAX);
    mp__futex_wake(&s->space_seq, INT32_MAX);
    mp__futex_wake(&s->stream_seq, INT32_MAX);
    if (n.unfinished == 0 && s->joinable) {
        bump(&s->join_seq);
        mp__futex_wake(&s->join_seq, INT32_MAX);
    }
}

/* The claimer died: unclaim, and make the producer start over from byte 0. Under lock. */
void mp__q_stream_unclaim(struct qshared *s)
{
    qstate n = s->st;
    n.s_claimed = 0;
    n.s_written = n.s_read = 0;
    n.s_epoch++;
    mp__q_commit(s, &n);
    bump(&s->stream_seq);
    bump(&s->data_seq);
    mp__futex_wake(&s->stream_seq, INT32_MAX);
    mp__futex_wake(&s->data_seq, INT32_MAX);
}

/* Check the stream's owners; called under lock while waiting. `self_w`/`self_r`: the caller
 * holds wlock/rlock itself, so an active stream / a claim it did not make is stale. */
void mp__q_stream_repair(struct qshared *s, bool self_w, bool self_r, bool own_claim)
{
    if (!s->st.s_active)
        return;
    if (!self_w && mp__q_owner_gone(&s->wlock)) {
        mp__q_stream_abort(s);
        return;
    }
    if (s->st.s_claimed && !own_claim && (self_r || mp__q_owner_gone(&s->rlock)))
        mp__q_stream_unclaim(s);
}

/* Publish a stream once the ring is empty; holds wlock. Returns with lock held on success. */
static int stream_start(mp_queue *q, uint32_t tag, size_t len, double deadline, double timeout)
{
    struct qshared *s = q->s;
    int code = mp__q_lock(q);
    if (code < 0)
        return code;
    for (;;) {
        if (s->st.s_active) /* we hold wlock: an active stream is a dead producer's */
            mp__q_stream_abort(s);
        uint64_t head = ld(&s->headw);
        if (head == ld(&s->tailw) && !s->st.s_active) /* empty */
            break;
        code = timeout == 0 ? MP_ETIMEOUT
                            : mp__q_wait(q, &s->space_seq, &s->put_waiters, &s->put_woken,
                                         NULL, deadline, &s->headw, head);
        if (code < 0) {
            qunlock(q);
            return code == MP_ETIMEOUT ? mp__q_full_error(q, timeout) : code;
        }
    }
    qstate n = s->st;
    n.s_active = 1;
    n.s_claimed = 0;
    n.s_len = len;
    n.s_tag = tag;
    n.s_written = n.s_read = 0;
    n.s_gen++;
    n.unfinished += s->joinable;
    mp__q_commit(s, &n);
    bump(&s->data_seq);
    mp__futex_wake(&s->data_seq, INT32_MAX);
    return 0;
}

/* Copy the item into the ring as the reader frees space, until the reader has it all.
 * Called and returns with lock held. */
static int stream_feed(mp_queue *q, const unsigned char *buf, size_t len, double deadline,
                       double timeout)
{
    struct qshared *s = q->s;
    uint64_t gen = s->st.s_gen, epoch = s->st.s_epoch, off = 0, base = ld(&s->tailw);
    for (;;) {
        if (s->st.s_done_gen >= gen) /* a reader took it all */
            return 0;
        mp__q_stream_repair(s, true, false, false);
        if (s->st.s_epoch != epoch) { /* the reader died: start over for the next one */
            epoch = s->st.s_epoch;
            off = 0;
        }
        uint64_t room = s->st.s_read + s->capacity - off;
        if (off < len && room > 0) {
            size_t n = (size_t)(len - off < room ? len - off : room);
            n = n < CHUNK ? n : CHUNK;
            qunlock(q);
            ring_write(q, base + off, buf + off, n);
            int code = mp__q_lock(q);
            if (code < 0)
                return code;
            if (s->st.s_epoch != epoch || s->st.s_gen != gen || !s->st.s_active)
                continue;
            off += n;
            qstate st = s->st;
            st.s_written = off;
            mp__q_commit(s, &st);
            bump(&s->stream_seq);
            wake(&s->stream_seq, s->stream_waiters, INT32_MAX);
            continue;
        }
        int code = mp__q_wait(q, &s->stream_seq, &s->stream_waiters, NULL, NULL, deadline, NULL, 0);
        if (code == MP_ETIMEOUT || code == MP_EINTERRUPTED) {
            if (s->st.s_done_gen >= gen)
                return 0;
            mp__q_stream_abort(s);
            return code == MP_ETIMEOUT ? mp__q_full_error(q, timeout) : code;
        }
        if (code < 0)
            return code;
    }
}

int mp__q_put_stream(mp_queue *q, uint32_t tag, const void *buf, size_t len, double timeout)
{
    double deadline = mp__deadline(timeout);
    int code = mp__q_lock_owner(&q->s->wlock);
    if (code < 0)
        return code;
    code = stream_start(q, tag, len, deadline, timeout);
    if (code == 0) {
        code = stream_feed(q, buf, len, deadline, timeout);
        if (code != -ENOTRECOVERABLE)
            qunlock(q);
    }
    mp__rf_unlock(&q->s->wlock);
    return code;
}

/* Copy a claimed stream out. Under lock on entry and on return. Returns 1 with the item,
 * 0 if the stream was aborted (go back to waiting), or a negative code. */
static int stream_drain(mp_queue *q, void **buf, size_t *len, uint32_t *tag)
{
    struct qshared *s = q->s;
    uint64_t gen = s->st.s_gen, total = s->st.s_len, base = ld(&s->tailw), got;
    unsigned char *p = malloc(total ? total : 1);
    if (!p)
        return mp__error(-ENOMEM, "allocating a %llu-byte item", (unsigned long long)total);
    for (;;) {
        mp__q_stream_repair(s, false, true, true);
        if (!s->st.s_active || s->st.s_gen != gen || !s->st.s_claimed) {
            free(p); /* the producer died or gave up: the item never existed */
            return 0;
        }
        got = s->st.s_read;
        if (got < s->st.s_written) {
            size_t n = (size_t)(s->st.s_written - got);
            n = n < CHUNK ? n : CHUNK;
            qunlock(q);
            ring_read(q, base + got, p + got, n);
            int code = mp__q_lock(q);
            if (code < 0) {
                free(p);
                return code;
            }
            if (!s->st.s_active || s->st.s_gen != gen)
                continue;
            qstate st = s->st;
            st.s_read = got + n;
            if (st.s_read == total) {
                st.s_active = st.s_claimed = 0;
                st.s_done_gen = gen;
                mp__q_commit_taken(q, &st, ld(&s->headw), 1); /* held by us, if joinable */
            } else {
                mp__q_commit(s, &st);
            }
            bump(&s->stream_seq);
            mp__futex_wake(&s->stream_seq, INT32_MAX);
            if (st.s_read == total) {
                bump(&s->space_seq);
                bump(&s->data_seq);
                mp__futex_wake(&s->space_seq, INT32_MAX);
                mp__futex_wake(&s->data_seq, INT32_MAX);
                *buf = p;
                *len = (size_t)total;
                *tag = (uint32_t)s->st.s_tag;
                return 1;
            }
            continue;
        }
        /* No deadline once claimed: the stream is ours and its producer waits for us. */
        int code = mp__q_wait(q, &s->stream_seq, &s->stream_waiters, NULL, NULL, -1, NULL, 0);
        if (code < 0) {
            free(p);
            return code;
        }
    }
}

/* A stream is at the head and unclaimed: take rlock, claim it, drain it. Under lock on
 * entry and return. 1 with the item, 0 to retry, negative on error. */
int mp__q_get_stream(mp_queue *q, void **buf, size_t *len, uint32_t *tag)
{
    struct qshared *s = q->s;
    qunlock(q);
    int code = mp__q_lock_owner(&s->rlock);
    if (code < 0) {
        mp__q_lock(q);
        return code;
    }
    code = mp__q_lock(q);
    if (code < 0) {
        mp__rf_unlock(&s->rlock);
        return code;
    }
    if (s->st.s_active && s->st.s_claimed) /* we hold rlock: that claimer is dead */
        mp__q_stream_unclaim(s);
    if (!s->st.s_active) {
        mp__rf_unlock(&s->rlock);
        return 0;
    }
    qstate n = s->st;
    n.s_claimed = 1;
    mp__q_commit(s, &n);
    bump(&s->stream_seq);
    mp__futex_wake(&s->stream_seq, INT32_MAX);
    code = stream_drain(q, buf, len, tag);
    mp__rf_unlock(&s->rlock);
    return code;
}
