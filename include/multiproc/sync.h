/**
 * @file sync.h
 * @brief Synchronisation primitives that work across processes (Python's
 *        multiprocessing.Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition,
 *        Barrier), robust against processes that die at the worst moment.
 *
 * Python mapping:
 * - `Lock()` -> mp_lock_new(), `RLock()` -> mp_rlock_new(); both are `mp_lock *`.
 *   `acquire(block, timeout)` -> mp_lock_acquire(l, timeout) (timeout < 0: block
 *   forever, 0: try once = `block=False`); `False` -> MP_ETIMEOUT.
 *   `release()` of an unheld lock (ValueError/RuntimeError) -> MP_ESTATE.
 * - `Semaphore(n)` / `BoundedSemaphore(n)` -> mp_semaphore_new(n) /
 *   mp_bounded_semaphore_new(n); over-release of a bounded one -> MP_ERANGE.
 * - `Event()` -> mp_event_new(); `wait(t)` returning False -> MP_ETIMEOUT.
 * - `Condition(lock=None)` -> mp_condition_new(lock or NULL for a fresh RLock);
 *   `wait_for(predicate, t)` takes a C callback.
 * - `Barrier(parties, action, timeout)` -> mp_barrier_new(&opts);
 *   BrokenBarrierError -> MP_EBROKEN.
 * - `with lock:` -> `MP_WITH_LOCK(lock) { ... }` (GCC and Clang): the block runs with
 *   the lock held and it is released on every way out (end, break, continue, return,
 *   goto); `MP_WITH_LOCK_RC(lock, rc)` also tells why a block did not run. Or
 *   mp_lock_acquire / mp_lock_release around the block by hand.
 *
 * Where we differ from Python (on purpose):
 * - Robust locks: when a process (or thread) dies holding a Lock, an RLock or the lock
 *   under a Condition, the next acquirer gets the lock together with MP_EOWNERDEAD.
 *   The lock IS held when that code is returned: repair the protected state, then go
 *   on (and release it as usual). Python hangs forever instead.
 * - A Lock is owned by the thread that acquired it: releasing it from another thread
 *   or process is MP_ENOTOWNER (Python allows it for Lock; ownership is what makes
 *   the robust recovery above possible).
 * - A Barrier whose party dies breaks for the others (MP_EBROKEN) instead of
 *   hanging: a party that dies while waiting, or a process that created or imported
 *   the barrier (e.g. received it in Process arguments) and dies before freeing it.
 * - Semaphores, Events and Conditions keep no internal lock a dying process could
 *   hold; their waiters re-check the shared state every 100 ms, so a wake-up lost
 *   because the waker died between its store and its wake call is found anyway.
 *
 * Every blocking call takes a timeout in seconds (negative: forever, 0: try once),
 * and returns MP_EINTERRUPTED when a deferred signal handler asked blocking calls to
 * stop (see signals.h). Lock waits notice such a request within 100 ms.
 *
 * Passing to other processes: each object lives in an anonymous shared segment.
 * Under fork a child simply uses the parent's handle. Under every start method the
 * objects can travel inside process arguments as handles:
 * `mp_value_pack("[h]", &mp_kind_lock, lock)`, read back in the child with
 * `mp_value_unpack(args, "[h]", &mp_kind_lock, &lock)` (the child's copy is released
 * with the args value).
 *
 * Thread safety: every function may be called from any thread of any process sharing
 * the object, except *_free, which must not race other calls on the same handle.
 * Fork: a child inherits handles and their state (a lock held by the parent at fork
 * time stays held by the parent's thread).
 */
#ifndef MULTIPROC_SYNC_H
#define MULTIPROC_SYNC_H

#include <stdbool.h>
#include <stddef.h>

#include "multiproc/value.h"

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/* ---- Lock and RLock ------------------------------------------------------------- */

/** A process-shared lock: a Lock (not recursive) or an RLock (recursive). */
typedef struct mp_lock mp_lock;

/**
 * A new unlocked Lock (Python's multiprocessing.Lock). NULL on failure, with the code
 * in mp_last_error_code(). Free with mp_lock_free().
 */
mp_lock *mp_lock_new(void);

/**
 * A new unlocked RLock: the owning thread may acquire it again; it is released when
 * released as many times as acquired. NULL on failure. Free with mp_lock_free().
 */
mp_lock *mp_rlock_new(void);

/**
 * Acquire @p l, waiting up to @p timeout seconds (negative: forever, 0: try once).
 * Returns 0 (acquired), MP_EOWNERDEAD (acquired; the previous owner died holding it:
 * repair what it protects), MP_ETIMEOUT (not acquired; also when a Lock is already
 * held by the calling thread and the timeout passes), MP_EINTERRUPTED (not
 * acquired).
 */
int mp_lock_acquire(mp_lock *l, double timeout);

/**
 * Release @p l. MP_ESTATE ("release unlocked lock") if it is not held,
 * MP_ENOTOWNER if another thread or process holds it (also when its holder died
 * holding it and no acquire has taken it over yet).
 */
int mp_lock_release(mp_lock *l);

/* ---- with lock: ------------------------------------------------------------------ */

/**
 * For MP_WITH_LOCK: acquire @p l (waiting forever) and return it, or NULL when it was
 * not acquired (the block is then skipped). Stores mp_lock_acquire's code in @p rc
 * (may be NULL): 0, MP_EOWNERDEAD (acquired, the block runs: repair the state),
 * MP_EINTERRUPTED, MP_EINVAL for a NULL lock.
 */
mp_lock *mp_lock_scope_enter(mp_lock *l, int *rc);
/** For MP_WITH_LOCK: release *@p slot if it is set and clear it (the scope's cleanup). */
void mp_lock_scope_exit(mp_lock **slot);

#if defined(__GNUC__) || defined(__clang__) || defined(MP_DOXYGEN)
/** @cond internal */
#define MP__WL_CAT2(a, b) a##b
#define MP__WL_CAT(a, b) MP__WL_CAT2(a, b)
#define MP__WITH_LOCK(lock, rcp, v)                                                       \
    for (mp_lock *v __attribute__((cleanup(mp_lock_scope_exit))) =                       \
             mp_lock_scope_enter((lock), (rcp));                                          \
         v; mp_lock_scope_exit(&v))
/** @endcond */
/**
 * Python's `with lock:` for C: `MP_WITH_LOCK(lock) { ... }` runs the statement after it
 * once with @p lock held (waiting forever) and releases it on every way out of it:
 * the end of the block, `break`, `continue`, `return` and `goto` out of it (the
 * variable it declares has a cleanup function, so the compiler releases it as the
 * scope ends; `longjmp` and `exit` are the exceptions). If the lock cannot be
 * acquired (MP_EINTERRUPTED from a signal handler, a NULL lock) the block is skipped;
 * use MP_WITH_LOCK_RC to know. Nests (each use declares its own variable). Needs GCC
 * or Clang (the cleanup attribute).
 */
#define MP_WITH_LOCK(lock) MP__WITH_LOCK(lock, (int *)0, MP__WL_CAT(mp_with_lock_, __COUNTER__))
/**
 * MP_WITH_LOCK that stores mp_lock_acquire's code in the int @p rc (an lvalue the
 * caller declared): 0 or MP_EOWNERDEAD when the block ran, the error when it did not.
 */
#define MP_WITH_LOCK_RC(lock, rc)                                                          \
    MP__WITH_LOCK(lock, &(rc), MP__WL_CAT(mp_with_lock_, __COUNTER__))
#endif

/** True if @p l is held by someone (a snapshot; a lock whose holder died holding it
 * counts as held until the next acquire takes it over). */
bool mp_lock_is_locked(const mp_lock *l);

/** True if @p l is held by the calling thread. */
bool mp_lock_is_mine(const mp_lock *l);

/** True for an RLock. */
bool mp_lock_is_recursive(const mp_lock *l);

/**
 * Free this process's handle (the shared lock lives on in other processes that
 * hold handles). If the calling thread holds it, it is released first. NULL is fine.
 */
void mp_lock_free(mp_lock *l);

/* ---- Semaphore and BoundedSemaphore --------------------------------------------- */

/** A process-shared counting semaphore. */
typedef struct mp_semaphore mp_semaphore;

/** A semaphore with @p value units (Python's Semaphore(value)). NULL on failure
 * (MP_EINVAL if value > INT32_MAX). Free with mp_semaphore_free(). */
mp_semaphore *mp_semaphore_new(unsigned value);

/** A semaphore that may never hold more than @p value units: releasing beyond that
 * is MP_ERANGE. NULL on failure. */
mp_semaphore *mp_bounded_semaphore_new(unsigned value);

/** Take one unit, waiting up to @p timeout seconds. 0, MP_ETIMEOUT or MP_EINTERRUPTED. */
int mp_semaphore_acquire(mp_semaphore *s, double timeout);

/** Give back one unit (any process may release). MP_ERANGE with "semaphore released
 * too many times" when a bounded semaphore is already full (or the count would
 * exceed INT32_MAX). */
int mp_semaphore_release(mp_semaphore *s);

/** The current number of units (Python's get_value()). */
int mp_semaphore_value(const mp_semaphore *s);

/** Free this process's handle. NULL is fine. */
void mp_semaphore_free(mp_semaphore *s);

/* ---- Event ----------------------------------------------------------------------- */

/** A process-shared flag processes can wait on. */
typedef struct mp_event mp_event;

/** A new, clear event. NULL on failure. Free with mp_event_free(). */
mp_event *mp_event_new(void);
/** Set the flag and wake every waiter. */
int mp_event_set(mp_event *e);
/** Clear the flag. */
int mp_event_clear(mp_event *e);
/** The flag. */
bool mp_event_is_set(const mp_event *e);
/** Wait until the flag is set: 0 when set, MP_ETIMEOUT after @p timeout seconds,
 * MP_EINTERRUPTED. */
int mp_event_wait(mp_event *e, double timeout);
/** Free this process's handle. NULL is fine. */
void mp_event_free(mp_event *e);

/* ---- Condition ------------------------------------------------------------------- */

/** A process-shared condition variable over a Lock or an RLock. */
typedef struct mp_condition mp_condition;

/**
 * A condition over @p lock (borrowed: the condition takes its own handle to the same
 * shared lock, so @p lock may be freed independently), or over a new RLock when
 * @p lock is NULL (Python's default). NULL on failure.
 */
mp_condition *mp_condition_new(mp_lock *lock);

/** The condition's lock (borrowed, valid while the condition lives). */
mp_lock *mp_condition_lock(mp_condition *c);

/** mp_lock_acquire() on the condition's lock. */
int mp_condition_acquire(mp_condition *c, double timeout);
/** mp_lock_release() on the condition's lock. */
int mp_condition_release(mp_condition *c);

/**
 * Release the lock (fully, for an RLock), wait to be notified or for @p timeout
 * seconds, then re-acquire the lock (without a time limit) before returning.
 * Returns 0 (notified), MP_ETIMEOUT, MP_EINTERRUPTED or MP_EOWNERDEAD (the lock's
 * holder died; notified or not, the state needs repair) - in all these cases the lock
 * is held again on return. MP_ENOTOWNER ("cannot wait on un-acquired lock") if the
 * caller does not hold the lock. Spurious wake-ups are rare but possible (e.g.
 * after a waiter died): loop on your predicate, or use mp_condition_wait_for().
 */
int mp_condition_wait(mp_condition *c, double timeout);

/** A predicate for mp_condition_wait_for(): true when the awaited state is reached. */
typedef bool (*mp_predicate_fn)(void *arg);

/**
 * Wait until @p pred(@p arg) is true, evaluating it with the lock held (Python's
 * wait_for). Returns 1 when the predicate became true, 0 when it was still false
 * after @p timeout (Python returns the predicate's last value), MP_EOWNERDEAD when
 * the lock's holder died (lock held, predicate not re-evaluated), or another
 * negative code. The lock is held on return in every case but MP_ENOTOWNER.
 */
int mp_condition_wait_for(mp_condition *c, mp_predicate_fn pred, void *arg, double timeout);

/** Wake up to @p n waiters (the caller must hold the lock: else MP_ENOTOWNER,
 * "cannot notify on un-acquired lock"). */
int mp_condition_notify(mp_condition *c, int n);
/** Wake every waiter (the caller must hold the lock). */
int mp_condition_notify_all(mp_condition *c);
/** Free this process's handle (and its handle to the lock). NULL is fine. */
void mp_condition_free(mp_condition *c);

/* ---- Barrier --------------------------------------------------------------------- */

/** A process-shared barrier for a fixed number of parties. */
typedef struct mp_barrier mp_barrier;

/** The action run by exactly one party (the last to arrive) before the others are
 * released. A non-zero return breaks the barrier (everyone gets MP_EBROKEN). */
typedef int (*mp_barrier_action_fn)(void *arg);

/** Barrier options; all-zero is not valid (parties must be >= 1). */
typedef struct mp_barrier_opts {
    unsigned parties;             /**< number of parties, 1..1024 */
    mp_barrier_action_fn action;  /**< optional; runs in whichever process arrives last,
                                       so under spawn it must be a function of the
                                       program (not a pointer into a parent's heap) */
    void *action_arg;             /**< passed to action (must be valid in that process) */
    double wait_limit;            /**< seconds a wait with a negative timeout may last
                                       (Python's Barrier(timeout=)); 0 or MP_NO_LIMIT:
                                       none */
} mp_barrier_opts;

/** A new barrier. NULL with MP_EINVAL when parties is 0 or too large. */
mp_barrier *mp_barrier_new(const mp_barrier_opts *opts);

/**
 * Wait until all parties have called mp_barrier_wait(). Returns the arrival index,
 * 0 .. parties-1 (different for every party, as in Python), or: MP_EBROKEN (the
 * barrier is or became broken: aborted, reset while waiting, the action failed, or
 * a party died), MP_ETIMEOUT (this party's timeout passed: the barrier is now broken
 * for everyone), MP_EINTERRUPTED (also breaks the barrier). A negative @p timeout
 * waits up to the barrier's wait_limit (forever when it is 0), as Python's
 * wait(timeout=None) uses Barrier(timeout=).
 */
int mp_barrier_wait(mp_barrier *b, double timeout);
/** Return the barrier to its initial state; parties waiting now get MP_EBROKEN.
 * Participants that have died by now are forgotten (their deaths broke it once). */
int mp_barrier_reset(mp_barrier *b);
/** Break the barrier: current and future waits return MP_EBROKEN until a reset. */
int mp_barrier_abort(mp_barrier *b);
/** Number of parties. */
unsigned mp_barrier_parties(const mp_barrier *b);
/** Number of parties currently waiting. */
unsigned mp_barrier_n_waiting(const mp_barrier *b);
/** True if the barrier is broken. */
bool mp_barrier_broken(const mp_barrier *b);
/** Free this process's handle; if it was created or imported here, this process
 * stops counting as a participant whose death breaks the barrier. NULL is fine. */
void mp_barrier_free(mp_barrier *b);

/* ---- passing objects to other processes ------------------------------------------- */

/** Kinds for mp_value_handle / the `h` format code. Imported objects are released by
 * freeing the value that holds them (or taken with mp_value_take_handle and freed
 * with the matching *_free). */
extern const mp_kind mp_kind_lock;      /**< mp_lock * (Lock and RLock) */
extern const mp_kind mp_kind_semaphore; /**< mp_semaphore * (both kinds) */
extern const mp_kind mp_kind_event;     /**< mp_event * */
extern const mp_kind mp_kind_condition; /**< mp_condition * */
extern const mp_kind mp_kind_barrier;   /**< mp_barrier * */

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
