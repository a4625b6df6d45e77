/* Queue waits: futex sleeps in slices, and brief spinning before them.
 *
 * DESIGN
 * - A waiter counts itself (get_waiters, put_waiters, ...) under `lock`, atomically (a
 *   plain queue's consumers read put_waiters without the lock, take.c), then sleeps on
 *   a futex word unlocked, in slices of SLICE seconds so that dead stream owners are
 *   noticed even when nobody wakes it. It holds `lock` again on return.
 * - Before sleeping, a consumer facing an empty ring (or a producer facing a full one)
 *   spins briefly on the other side's position word: a sleep and wake cost microseconds.
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
