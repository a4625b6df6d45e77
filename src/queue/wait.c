/* Queue waits: futex sleeps in slices, and brief spinning before them.
 *
 * DESIGN
 * - A waiter counts itself (get_waiters, put_waiters, ...) under `lock`, atomically (a
 *   plain queue's consumers read put_waiters without the lock, take.c), then sleeps on
 *   a futex word unlocked, in slices of SLICE seconds so that dead stream owners are
 *   noticed even when nobody wakes it. It holds `lock` again on return.
 * - Before sleeping, a consumer facing an empty ring (or a producer facing a full one)
 *   spins briefly on the other side's position word: a sleep and wake cost microseconds.
 * - A plain queue's consumer that finds the ring empty does not re-read tailw at once
 *   (mp__q_spin_for_items): a consumer that keeps up with a streaming producer would
 *   otherwise pull the tail's and the ring's lines to its core after every item, and the
 *   producer's next unlock (a locked exchange) would wait for them to come back: one
 *   cross-core round trip per item (~450 ns between the two vCPUs of the Zen 5 guest of
 *   Dec 2026 at times, ~190 ns at others; it bound 1p1c to 10-12M items/s there). It
 *   first waits get_delay pauses, a per-process figure that doubles (up to
 *   Q_GET_DELAY_MAX) whenever two or more items came during a wait (a stream: the
 *   producer fills lines undisturbed and the consumer then takes them in runs) and
 *   shrinks by a quarter (down to Q_GET_DELAY_MIN) whenever one or none did (a
 *   request/response pattern shows that every time, so it stays at the minimum and pays
 *   ~40 ns). Measured there (1M ints, 1 producer + 1 consumer process, 4 alternating
 *   rounds): 10.1-11.1M items/s before, 20.6-21.7M adaptive; a ping-pong of one int over
 *   two queues 1.2-1.5 us per round trip both ways. A fixed delay of 16 pauses gave 18-26M
 *   but added ~0.25 us to a 0.45 us ping-pong when the vCPUs were close; 64 added 0.6 us.
 */
#define _GNU_SOURCE
#include "queue/q.h"

#include "internal/iwait.h"

#include <sched.h>

/* Sleep on seq (unlocking meanwhile) for at most one slice or until the deadline.
 * Returns 0 (re-check), MP_ETIMEOUT when the deadline passed, MP_EINTERRUPTED, or a lock
 * error. The lock is held again on return (except on a lock error). */
int mp__q_wait(mp_queue *q, _Atomic uint32_t *seq, uint32_t *waiters, uint32_t *woken,
               uint32_t *pending, double deadline, const _Atomic uint64_t *watch,
               uint64_t watched)
{
    if (deadline >= 0 && mp__now() >= deadline)
        return MP_ETIMEOUT;
    uint32_t seen = atomic_load(seq);
    __atomic_fetch_add(waiters, 1, __ATOMIC_SEQ_CST); /* a full barrier before the re-read */
    if (woken) /* we are not woken yet: the next waker must call the futex */
        __atomic_store_n(woken, 0, __ATOMIC_SEQ_CST);
    if (watch && atomic_load(watch) != watched) { /* a lock-free peer moved it meanwhile */
        __atomic_fetch_sub(waiters, 1, __ATOMIC_SEQ_CST);
        return 0;
    }
    qunlock(q);
    double slice = mp__now() + SLICE;
    int r = mp__iwait_futex(seq, seen, deadline >= 0 && deadline < slice ? deadline : slice);
    int code = mp__q_lock(q);
    if (code < 0)
        return code;
    if (__atomic_load_n(waiters, __ATOMIC_RELAXED))
        __atomic_fetch_sub(waiters, 1, __ATOMIC_RELAXED);
    if (pending && *pending) /* woken or not: one fewer on its way back */
        (*pending)--;
    if (r == MP_EINTERRUPTED)
        return mp__error(r, "queue wait interrupted by a signal");
    if (deadline >= 0 && mp__now() >= deadline)
        return MP_ETIMEOUT;
    return 0;
}

/* Spin a little (unlocked) hoping the counter moves away from `value`: a sleep + wake costs
 * microseconds, a consumer that keeps up with its producer should not pay it, nor a
 * producer that is ahead of its consumer (a full ring) pay a sleep per item. */
void mp__q_spin_while(const _Atomic uint64_t *c, uint64_t value)
{
    for (int i = 0; i < 400; i++) {
        if (atomic_load_explicit(c, memory_order_relaxed) != value)
            return;
        cpu_relax();
    }
    for (int i = 0; i < 4; i++) {
        if (atomic_load_explicit(c, memory_order_relaxed) != value)
            return;
        sched_yield();
    }
}





void mp__q_spin_for_items(mp_queue *q, uint64_t seen)
{
    uint32_t d = atomic_load_explicit(&q->get_delay, memory_order_relaxed);
    if (d < Q_GET_DELAY_MIN)
        d = Q_GET_DELAY_MIN;
    for (uint32_t k = 0; k < d; k++)
        cpu_relax();
    uint64_t t = atomic_load_explicit(&q->s->tailw, memory_order_relaxed);
    uint64_t came = items_between(q->s, seen, t);
    /* Two or more: the producer went on without us, a stream. One or none: what a
     * request/response pattern shows every time, and a stream now and then. */
    if (came >= 2 && d < Q_GET_DELAY_MAX)
        d *= 2;
    else if (came <= 1 && d > Q_GET_DELAY_MIN)
        d -= d / 4 + 1;
    atomic_store_explicit(&q->get_delay, d, memory_order_relaxed);
    if (t == seen)
        mp__q_spin_while(&q->s->tailw, seen);
}
