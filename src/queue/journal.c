/* Queue crash safety: the robust lock and the commits it protects.
 *
 * DESIGN
 * - Any thread of any process mapping the segment takes `lock` to change the shared
 *   state. A put or get of a ring record changes one position word: a single 8-byte
 *   store commits it. Any other change (st, both position words and at most one holder
 *   slot, mp__q_commit_all) is made on a local copy, written to the journal,
 *   flagged valid, applied, then unflagged. When a process dies holding the robust
 *   mutex, the next locker (EOWNERDEAD) rolls the journal forward if it was valid and
 *   otherwise finds the last committed state intact: nobody ever sees a torn item.
 * - Robust mutexes never spin in glibc; lock_spin tries a little before sleeping.
 * - Lock order: wlock or rlock, then lock; nobody blocks on wlock/rlock holding lock.
 */
#define _GNU_SOURCE
#include "queue/q.h"

#include <errno.h>
#include <sched.h>

/* Items in the queue (a stream counts as one). Under lock. */
uint64_t mp__q_item_count(const struct qshared *s)
{
    return items_between(s, ld(&s->headw), ld(&s->tailw)) + (s->st.s_active != 0);
}

static void publish(struct qshared *s)
{
    atomic_store_explicit(&s->active_pub, s->st.s_active != 0, memory_order_release);
}

/* The ordering that matters is program order within the committing thread: a SIGKILL
 * stops it between two instructions and the next locker sees every store before that
 * point (the kernel marks the robust mutex dead after them). Hence compiler fences and
 * relaxed stores: no CPU barrier is needed. Position-word commits (put_record,
 * take_record) are a single store; everything else goes through the journal here. */
static void journal_apply(struct qshared *s)
{
    s->st = s->journal.st;
    atomic_store_explicit(&s->tailw, s->journal.tailw, memory_order_relaxed);
    if (s->joinable) /* a plain queue's head moves only by consumers' swaps (take.c) */
        atomic_store_explicit(&s->headw, s->journal.headw, memory_order_relaxed);
    if (s->journal.slot < Q_HOLDERS)
        s->holders[s->journal.slot] = s->journal.holder;
}

void mp__q_commit_all(struct qshared *s, const qstate *next, uint64_t tailw, uint64_t headw,
                      uint32_t slot, const qholder *holder)
{
    s->journal.st = *next;
    s->journal.tailw = tailw;
    s->journal.headw = headw;
    s->journal.slot = holder ? slot : Q_NO_SLOT;
    if (holder)
        s->journal.holder = *holder;
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&s->journal_valid, 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst); /* the journal is complete before st changes */
    journal_apply(s);
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&s->journal_valid, 0, memory_order_relaxed);
    publish(s);
}

void mp__q_commit_tail(struct qshared *s, const qstate *next, uint64_t tailw)
{
    mp__q_commit_all(s, next, tailw, ld(&s->headw), Q_NO_SLOT, NULL);
}

void mp__q_commit(struct qshared *s, const qstate *next)
{
    mp__q_commit_tail(s, next, ld(&s->tailw));
}

/* Robust mutexes never spin in glibc: a contended one costs a futex sleep and wake, far
 * more than the ~20 ns a put holds it. Try a little before sleeping. Spinning reads the
 * lock word (a plain load keeps the line shared; a failed trylock is a compare-and-swap,
 * which would take the line from the holder about to release it); with the pthread
 * fallback, whose word is private, it retries trylock now and then instead. */
static int lock_spin(mp__rfutex *m)
{
    int r = mp__rf_trylock(m);
    if (r != -EBUSY)
        return r;
    for (int i = 0; i < 200; i++) {
        cpu_relax();
        if (mp__rf_on ? atomic_load_explicit(&m->f.word, memory_order_relaxed) != 0 : i % 16)
            continue;
        r = mp__rf_trylock(m);
        if (r != -EBUSY)
            return r;
    }
    return mp__rf_lock(m, -1, false);
}

int mp__q_lock(mp_queue *q)
{
    int r = lock_spin(&q->s->lock);
    if (r == MP_EOWNERDEAD) {
        /* The holder died: roll its journaled change forward, or keep the last commit. */
        struct qshared *s = q->s;
        if (atomic_load_explicit(&s->journal_valid, memory_order_relaxed))
            journal_apply(s);
        atomic_store_explicit(&s->journal_valid, 0, memory_order_relaxed);
        publish(q->s);
        return 0;
    }
    return r ? mp__error(r, "queue lock") : 0;
}

/* Lock a stream mutex (wlock/rlock); a dead previous owner is fine: the stream state is
 * repaired under `lock` by whoever notices (see stream_repair). */
int mp__q_lock_owner(mp__rfutex *m)
{
    int r = mp__rf_lock(m, -1, false);
    if (r == MP_EOWNERDEAD)
        r = 0;
    return r ? mp__error(r, "queue stream lock") : 0;
}

/* Whether the owner of m is gone (trylock succeeded or found it dead). Leaves m unlocked. */
bool mp__q_owner_gone(mp__rfutex *m)
{
    int r = mp__rf_trylock(m);
    if (r == -EBUSY)
        return false;
    if (r == 0 || r == MP_EOWNERDEAD)
        mp__rf_unlock(m);
    return true;
}
