/* The robust lock (internal/rfutex.h): a futex word on the kernel's robust list.
 *
 * DESIGN
 * - The word: 0 when free, else the holder's tid, plus FUTEX_WAITERS (someone sleeps or
 *   may sleep on it) and FUTEX_OWNER_DIED (the kernel's mark: the holder died). This is
 *   the kernel's robust-futex ABI (Documentation/locking/robust-futex-ABI.rst), the one
 *   glibc's robust mutexes use, without their general-purpose overhead (kinds, counts,
 *   __owner/__nusers bookkeeping, no spinning).
 * - Lock: one CAS 0 -> tid. Unlock: one exchange -> 0, and a FUTEX_WAKE only if the old
 *   value had FUTEX_WAITERS. Contended: spin briefly reading the word, then set
 *   FUTEX_WAITERS and futex-wait on the word. A waiter that takes the lock after sleeping
 *   keeps FUTEX_WAITERS (others may sleep too), so its unlock wakes the next. A waiter
 *   that gives up (timeout, interrupted) while the word is free passes a wake-up on, so a
 *   wake it consumed is not lost.
 * - Dead holders: every held lock is on its holder thread's robust list, the one glibc
 *   registered with set_robust_list at thread start (found with get_robust_list). When a
 *   thread exits or dies (SIGKILL included; also at execve), the kernel walks that list
 *   and, for each word still holding the thread's tid, sets FUTEX_OWNER_DIED (clearing
 *   the tid, keeping FUTEX_WAITERS) and wakes one waiter. The next locker sees a word
 *   with no tid and OWNER_DIED, takes it (CAS to its tid, OWNER_DIED dropped) and gets
 *   MP_EOWNERDEAD: the lock is consistent at once, the caller repairs the state it
 *   protects (the queue rolls its journal forward, lock.c reports it). A recoverer that
 *   dies while repairing leaves OWNER_DIED again, so the next one repairs again: no
 *   "not recoverable" state is needed (no caller ever unlocks without repairing).
 * - Sharing glibc's list: our entries are linked into the same list as glibc's own robust
 *   mutexes, the way glibc links them (its list is doubly linked: each entry is a
 *   {prev, next} pair, the list pointer is &next, prev points at the previous &next, the
 *   head's prev is the word just before the registered head), so either can unlink its
 *   entries in any order. The kernel finds the word at a fixed distance (futex_offset)
 *   from each entry, registered once per thread: our union puts `word` 32 bytes before
 *   `next`, as pthread_mutex_t does. Checked at run time per thread (offset, head size,
 *   the head's prev link); when the check fails at start (another libc or layout), every
 *   lock is a robust process-shared pthread mutex instead (the fallback: same results,
 *   glibc's speed, lock waits in 0.1 s slices for signals). A thread whose own check
 *   fails (no list registered: a raw clone) uses the futex lock unregistered: its death
 *   while holding a lock is not recovered.
 * - list_op_pending: set to our entry before the CAS that takes the lock and put back
 *   after the entry is linked; set before unlinking on unlock and put back after the
 *   exchange and wake. So a death between the CAS and the insertion, or between the
 *   unlink and the exchange, is recovered too (the kernel handles the pending entry
 *   like a listed one); one after the exchange makes the kernel wake a waiter (the word
 *   has no owner), so no wake-up is lost. A waiter keeps it on its lock for its whole
 *   wait (glibc does the same): a waiter killed after a wake-up was meant for it makes
 *   the kernel wake another if the lock is still free. "Put back", not cleared: a signal
 *   handler run during that wait may take and release other locks, and must leave the
 *   waiter's entry in place.
 * - One hole is left by the protocol (glibc's robust mutex has it too): a waiter killed
 *   after its wake-up, while a newcomer took the free lock on the fast path (0 -> tid,
 *   which drops FUTEX_WAITERS), leaves the other sleepers with nobody to wake them: the
 *   newcomer's unlock sees no FUTEX_WAITERS, and the kernel, finding the word owned,
 *   wakes nobody. So sleeps last at most RF_RECHECK (0.2 s): a sleeper then looks again
 *   and sets FUTEX_WAITERS anew. Only that case ever waits for a recheck (the kill storms
 *   of tests/test_fault_*.c hung without it); a recheck costs a waiter one wake-up.
 * - Waits: with `signals` (mp_lock_acquire) the wait is the library's interruptible
 *   futex wait (iwait.c: futex_waitv on the word and the signal sequence), so a handler
 *   runs as soon as a signal arrives. Without (the queue, barrier and condition
 *   re-acquire, which hold their locks for a few instructions), a plain FUTEX_WAIT.
 *   Waits are shared futex ops (not private): the kernel's death wake is a shared wake.
 * - Shared state: the 40-byte union only. Per thread: its tid and robust head (TLS).
 * - Fast paths (internal/rfutex.h, inline): mp__rf_trylock_fast is the uncontended take
 *   alone (futex kind in use, tid known, CAS 0 -> tid, entry linked), false otherwise, so
 *   a caller with its own slow path (lock.c) skips a second CAS; unlock puts the wake-up
 *   and its list_op_pending restore out of line (mp__rf_unlock_wake), so the common
 *   unlock saves no registers. The queues (src/queue) use the same inline trylock/unlock.
 * - Cost (RelWithDebInfo, AMD EPYC in a VM, 2 cores shared with other sessions at load
 *   average 6-8, Dec 2026; best of 400 alternated runs of 20k, which an idle core's time
 *   slice holds undisturbed). One acquire + release, each a call into the shared
 *   library, against a plain process-shared pthread mutex (5.68 ns; glibc: ~22
 *   instructions each way around one lock cmpxchg / one xchg, owner and nusers kept):
 *     the two locked instructions alone (CAS 0 -> tid, owner check, xchg)   4.6-4.9 ns
 *     + list_op_pending set and put back around each                         +0.5 ns
 *     + linking and unlinking the entry (= this file's fast paths)           +0.5 ns
 *   so the robust list costs ~1 ns, and mp_lock_acquire + mp_lock_release cost 5.3-5.7 ns
 *   (0.99-1.08x the plain mutex; ~29 and ~33 instructions). Before the trim (lock.c kept
 *   its own `owner` and `depth` stores, checked `recursive` twice, re-read the tid, and
 *   saved registers for calls on both paths) they cost 6.96-7.0 ns (0.81-0.82x): the
 *   lock.c layer, not the robust list, was what the plain mutex did not pay. In
 *   bench_sync (best of 200 alternated runs of 200k, load average 7-9) lock_uncontended
 *   was 0.92-0.95x the plain mutex in 10 runs (before the trim: 0.65-0.81x). The earlier
 *   glibc robust mutex cost 11.4-12.7 ns (0.45-0.50x); the fallback still costs that.
 *   The queues' rows with the futex lock against glibc's robust mutex: README.md. The
 *   trim left them as they were: bench_queue on the library before and after it, 8
 *   alternated pairs at load average 7-9, queue_1p1c_int 3.1-8.2 M/s after, 3.6-11.0
 *   before, the pair's second run the faster in 14 of 16 (order, not library).
 */
#define _GNU_SOURCE
#include "internal/rfutex.h"

#include "internal/common.h"
#include "internal/iwait.h"

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RF_WAITERS MP__RF_WAITERS
#define RF_DIED MP__RF_DIED
#define RF_TID MP__RF_TID
_Static_assert(RF_WAITERS == FUTEX_WAITERS && RF_DIED == FUTEX_OWNER_DIED &&
                   RF_TID == FUTEX_TID_MASK, "the kernel's bits");
_Static_assert(sizeof(struct mp__rf_head) == sizeof(struct robust_list_head), "the kernel's head");
#define RF_SPINS 100
#define RF_SLICE 0.1 /* the fallback's longest sleep before running signal handlers */
#define RF_RECHECK 0.2 /* the futex lock's longest sleep before looking again */

_Thread_local mp__rf_thread mp__rf_self __attribute__((tls_model("initial-exec")));

/* The futex implementation is in use. Decided at start, changed only by tests. */
bool mp__rf_on;

#if defined(__GLIBC__) && __SIZEOF_POINTER__ == 8 && defined(SYS_get_robust_list)
#define RF_CAN_FAST 1
#else
#define RF_CAN_FAST 0
#endif

/* The distance from a list entry (&next) to the word, as registered by glibc. */
#define RF_OFFSET ((long)offsetof(mp__rfutex, f.word) - (long)offsetof(mp__rfutex, f.next))
_Static_assert(sizeof(mp__rfutex) == sizeof(pthread_mutex_t) || !RF_CAN_FAST,
               "the futex lock and its fallback share 40 bytes");
_Static_assert(offsetof(mp__rfutex, f.next) - offsetof(mp__rfutex, f.prev) == sizeof(void *),
               "an entry is a {prev, next} pair");

/* ---- the thread's robust list --------------------------------------------------- */

/* glibc's layout, checked: the registered head has our futex_offset, and the word before
 * it is the head's prev link (it points at the head when the list is empty, else at the
 * last entry, whose next is the head). */
static bool head_ok(struct robust_list_head *h, size_t len)
{
    if (!h || len != sizeof *h || h->futex_offset != RF_OFFSET)
        return false;
    void *prev = ((void **)h)[-1];
    if ((void *)h->list.next == (void *)h)
        return prev == (void *)h;
    return prev && *(void **)((uintptr_t)prev & ~(uintptr_t)1) == (void *)h;
}

static struct robust_list_head *my_head(void)
{
#if RF_CAN_FAST
    struct robust_list_head *h = NULL;
    size_t len = 0;
    if (syscall(SYS_get_robust_list, 0, &h, &len) == 0 && head_ok(h, len))
        return h;
#endif
    return NULL;
}

void mp__rf_thread_init(void)
{
    mp__rf_self.tid = (int32_t)syscall(SYS_gettid);
    mp__rf_self.head = my_head();
}

static void rf_child(void) { mp__rf_self.tid = 0; } /* glibc resets the child's list */

__attribute__((constructor(150))) static void rf_start(void)
{
    pthread_atfork(NULL, NULL, rf_child);
    const char *env = getenv("MP_LOCK_PTHREAD");
    bool forced = env && env[0] && env[0] != '0';
    mp__rf_on = !forced && my_head() != NULL;
}

bool mp__rf_fast(void) { return mp__rf_on; }

void mp__rf_use_pthread(bool on) { mp__rf_on = !on && my_head() != NULL; }

/* ---- the slow halves of the inline fast paths --------------------------------------- */

static int fb_trylock(mp__rfutex *l);
static int fb_lock(mp__rfutex *l, double deadline, bool signals);

int mp__rf_trylock_slow(mp__rfutex *l)
{
    if (__builtin_expect(!mp__rf_on, 0))
        return fb_trylock(l);
    mp__rf_tid();
    uint32_t v = atomic_load_explicit(&l->f.word, memory_order_relaxed);
    if ((v & RF_TID) == 0) /* free (first use in this thread), or its holder died */
        return mp__rf_take(l, v, v & RF_WAITERS);
    return -EBUSY;
}

void mp__rf_unlock_slow(mp__rfutex *l) { pthread_mutex_unlock(&l->m); }

void mp__rf_unlock_wake(mp__rfutex *l, struct mp__rf_head *h, void *was)
{
    mp__futex_wake(&l->f.word, 1);
    if (h)
        mp__rf_pending(h, was);
}

/* ---- waiting ----------------------------------------------------------------------- */

/* An uninterruptible FUTEX_WAIT while the word is `v`: 0 or MP_ETIMEOUT. */
static int wait_plain(_Atomic uint32_t *word, uint32_t v, double deadline)
{
    struct timespec ts, *tsp = NULL;
    if (deadline >= 0) {
        mp__deadline_ts(deadline, &ts);
        tsp = &ts;
    }
    long r = syscall(SYS_futex, word, FUTEX_WAIT_BITSET, v, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
    return r < 0 && errno == ETIMEDOUT ? MP_ETIMEOUT : 0;
}

static inline void cpu_pause(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Giving up without the lock: if it is free now, a wake-up meant for us may have been
 * consumed by our wait; pass one on. */
static int give_up(mp__rfutex *l, int code)
{
    if ((atomic_load_explicit(&l->f.word, memory_order_relaxed) & RF_TID) == 0)
        mp__futex_wake(&l->f.word, 1);
    return code;
}

static int lock_wait(mp__rfutex *l, double deadline, bool signals)
{
    int32_t me = mp__rf_tid();
    for (int i = 0; i < RF_SPINS; i++) {
        uint32_t v = atomic_load_explicit(&l->f.word, memory_order_relaxed);
        if ((v & RF_TID) == 0) {
            int r = mp__rf_take(l, v, v & RF_WAITERS);
            if (r != -EBUSY)
                return r;
        } else if ((int32_t)(v & RF_TID) == me) {
            return -EDEADLK;
        }
        cpu_pause();
    }
    for (;;) {
        uint32_t v = atomic_load_explicit(&l->f.word, memory_order_relaxed);
        if ((v & RF_TID) == 0) {
            int r = mp__rf_take(l, v, RF_WAITERS); /* others may sleep: our unlock wakes one */
            if (r != -EBUSY)
                return r;
            continue;
        }
        if ((int32_t)(v & RF_TID) == me)
            return -EDEADLK;
        if (!(v & RF_WAITERS) &&
            !atomic_compare_exchange_weak_explicit(&l->f.word, &v, v | RF_WAITERS,
                                                   memory_order_relaxed, memory_order_relaxed))
            continue;
        v |= RF_WAITERS;
        double end = mp__now() + RF_RECHECK;
        bool last = deadline >= 0 && deadline <= end;
        int r = signals ? mp__iwait_futex(&l->f.word, v, last ? deadline : end)
                        : wait_plain(&l->f.word, v, last ? deadline : end);
        if (r == MP_ETIMEOUT && !last)
            continue; /* a recheck: FUTEX_WAITERS is set again if it was lost */
        if (r < 0)
            return give_up(l, r);
    }
}

/* The whole wait runs with list_op_pending on our entry (take() restores it after its
 * own use, and so does any lock a signal handler takes meanwhile): a waiter killed after a
 * wake-up was meant for it, before it took the lock, makes the kernel wake another
 * (the word has no owner then), so the wake-up is not lost with it. */
static int lock_slow(mp__rfutex *l, double deadline, bool signals)
{
    struct mp__rf_head *h = (struct mp__rf_head *)mp__rf_self.head;
    void *was = h ? h->list_op_pending : NULL;
    if (h)
        mp__rf_pending(h, mp__rf_entry(l));
    int r = lock_wait(l, deadline, signals);
    if (h)
        mp__rf_pending(h, was);
    return r;
}

int mp__rf_lock(mp__rfutex *l, double deadline, bool signals)
{
    int r = mp__rf_trylock(l);
    if (__builtin_expect(r != -EBUSY, 1))
        return r;
    if (!mp__rf_on)
        return fb_lock(l, deadline, signals);
    if (deadline >= 0 && mp__now() >= deadline)
        return MP_ETIMEOUT;
    return lock_slow(l, deadline, signals);
}

/* ---- init ---------------------------------------------------------------------------- */

int mp__rf_init(mp__rfutex *l)
{
    if (mp__rf_on) {
        atomic_store_explicit(&l->f.word, 0, memory_order_relaxed);
        l->f.prev = l->f.next = NULL;
        return 0;
    }
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    int r = pthread_mutex_init(&l->m, &a);
    pthread_mutexattr_destroy(&a);
    return r != 0 ? mp__error(-r, "pthread_mutex_init (robust, process-shared)") : 0;
}

/* ---- the fallback: a robust process-shared pthread mutex ------------------------------ */

static int fb_result(mp__rfutex *l, int r)
{
    if (r == EOWNERDEAD) {
        pthread_mutex_consistent(&l->m);
        return MP_EOWNERDEAD;
    }
    return -r;
}

static int fb_trylock(mp__rfutex *l) { return fb_result(l, pthread_mutex_trylock(&l->m)); }

/* pthread lock calls never return EINTR and their word cannot join a futex_waitv, so a
 * wait with `signals` runs the handlers between slices of RF_SLICE. Every wait is sliced:
 * glibc's robust mutex has the same hole as ours (a woken waiter killed while a newcomer
 * takes the lock), and a new timedlock call sets FUTEX_WAITERS again. The slice end is a
 * CLOCK_REALTIME time (pthread_mutex_timedlock; clocklock is not intercepted by the
 * sanitizers): a clock jump stretches or shortens one slice, the deadline is monotonic. */
static int fb_lock(mp__rfutex *l, double deadline, bool signals)
{
    for (;;) {
        if (signals) {
            int code = mp__signal_dispatch_pending();
            if (code < 0)
                return code;
        }
        double left = mp__left(deadline);
        bool last = deadline >= 0 && left <= RF_SLICE;
        struct timespec ts;
        mp__realtime_after(last ? left : RF_SLICE, &ts);
        int r = pthread_mutex_timedlock(&l->m, &ts);
        if (r != ETIMEDOUT)
            return fb_result(l, r);
        if (last)
            return MP_ETIMEOUT;
    }
}
