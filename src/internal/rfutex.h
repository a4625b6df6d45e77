/* The library's robust lock: a futex word holding the owner's tid, on the kernel's robust
 * list, so that the holder's death is noticed (the next locker gets MP_EOWNERDEAD) instead
 * of leaving everyone waiting forever. Every lock that lives in shared memory is one of
 * these (Lock/RLock, the queue's locks, the barrier's state lock). How it works, what it
 * costs, and the fallback (a robust pthread mutex): src/sync/rfutex.c. */
#ifndef MP_INTERNAL_RFUTEX_H
#define MP_INTERNAL_RFUTEX_H

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "multiproc/error.h"

/* 40 bytes on 64-bit glibc, as a pthread_mutex_t: the same memory holds the fallback.
 * Zero-filled shared memory is not yet a lock: call mp__rf_init. */
typedef union mp__rfutex {
    struct {
        _Atomic uint32_t word; /* owner tid | MP__RF_WAITERS | MP__RF_DIED; 0: free */
        uint32_t spare[5];
        void *prev; /* robust-list links of the holding thread; the list entry is &next, */
        void *next; /* at the kernel-registered distance from `word` (rfutex.c) */
    } f;
    pthread_mutex_t m; /* the fallback */
} mp__rfutex;

/* Per-thread state (initial-exec TLS: a plain %fs-relative load in the shared library). */
typedef struct mp__rf_thread {
    int32_t tid; /* 0 until first use; reset in fork children */
    void *head;  /* the thread's struct robust_list_head if it can take our entries */
} mp__rf_thread;
extern _Thread_local mp__rf_thread mp__rf_self __attribute__((tls_model("initial-exec")));
void mp__rf_thread_init(void);

/* The calling thread's tid (cached). */
static inline int32_t mp__rf_tid(void)
{
    if (__builtin_expect(mp__rf_self.tid == 0, 0))
        mp__rf_thread_init();
    return mp__rf_self.tid;
}

/* Initialise a lock (in shared memory, before another process can see it). 0 or a
 * negative code (recorded). */
int mp__rf_init(mp__rfutex *l);

/* Take the lock without waiting: 0; MP_EOWNERDEAD when its previous holder died holding
 * it (the lock is now the caller's and already consistent: repair what it protects);
 * -EBUSY when someone holds it. No message is recorded. */
static inline int mp__rf_trylock(mp__rfutex *l);

/* Take the lock, waiting until `deadline` (mp__deadline: CLOCK_MONOTONIC seconds, -1
 * forever). With `signals`, the wait runs deferred signal handlers and wakes for a signal
 * (internal/iwait.h); without, it is uninterruptible. 0, MP_EOWNERDEAD (as for trylock),
 * MP_ETIMEOUT, MP_EINTERRUPTED, -EDEADLK (the caller holds it), or -errno. No message. */
int mp__rf_lock(mp__rfutex *l, double deadline, bool signals);

/* Release a lock the calling thread holds. */
static inline void mp__rf_unlock(mp__rfutex *l);

/* True when locks are the futex kind (false: the robust pthread mutex fallback). */
bool mp__rf_fast(void);

/* Tests: use the fallback (true) or the futex lock when the layout allows (false) for the
 * locks created and used from now on. Every process sharing a lock must use the same
 * kind: switch only while no lock exists (fork children inherit the choice). The
 * environment variable MP_LOCK_PTHREAD=1 selects the fallback at start. */
void mp__rf_use_pthread(bool on);

/* ---- the fast paths, inline (rfutex.c's DESIGN explains them) ------------------------ */

#define MP__RF_WAITERS 0x80000000u /* FUTEX_WAITERS */
#define MP__RF_DIED 0x40000000u    /* FUTEX_OWNER_DIED */
#define MP__RF_TID 0x3fffffffu     /* FUTEX_TID_MASK */

extern bool mp__rf_on; /* the futex kind is in use (mp__rf_fast) */
int mp__rf_trylock_slow(mp__rfutex *l); /* the word was not 0, or the fallback */
void mp__rf_unlock_slow(mp__rfutex *l); /* the fallback */
struct mp__rf_head;
/* The unlock's exchange found FUTEX_WAITERS: wake one, then put list_op_pending back to
 * `was` (h: the thread's head, or NULL). Out of line so that the fast path saves no
 * registers around a call. */
void mp__rf_unlock_wake(mp__rfutex *l, struct mp__rf_head *h, void *was);

/* The kernel's struct robust_list_head, as registered by the thread. */
struct mp__rf_head {
    void *list;
    long futex_offset;
    void *list_op_pending;
};

static inline void **mp__rf_entry(mp__rfutex *l) { return &l->f.next; }

/* An entry's prev field: the pointer just before it (glibc's doubly linked list). */
static inline void **mp__rf_prev_field(void *entry)
{
    return (void **)((uintptr_t)entry & ~(uintptr_t)1) - 1;
}

static inline void mp__rf_pending(struct mp__rf_head *h, void *entry)
{
    atomic_signal_fence(memory_order_seq_cst);
    h->list_op_pending = entry;
    atomic_signal_fence(memory_order_seq_cst);
}

/* Link l at the head of the list, whose first entry is `first` (h->list, read by the
 * caller before its CAS: a load after a locked instruction waits for it). */
static inline void mp__rf_enqueue(struct mp__rf_head *h, mp__rfutex *l, void *first)
{
    *mp__rf_prev_field(first) = mp__rf_entry(l);
    l->f.next = first;
    l->f.prev = h;
    atomic_signal_fence(memory_order_seq_cst); /* linked fully before it is reachable */
    h->list = mp__rf_entry(l);
}

static inline void mp__rf_dequeue(mp__rfutex *l)
{
    void *next = l->f.next, *prev = l->f.prev;
    *mp__rf_prev_field(next) = prev;
    void **prev_next = (void **)((uintptr_t)prev & ~(uintptr_t)1);
    *prev_next = (void *)((uintptr_t)next | ((uintptr_t)*prev_next & 1));
    atomic_signal_fence(memory_order_seq_cst);
}

/* One CAS of the word from v (no tid in it) to our tid, keeping or adding FUTEX_WAITERS
 * (`waiters`), with list_op_pending covering it and the entry linked on success; the
 * thread's tid is known. */
static inline bool mp__rf_cas_in(mp__rfutex *l, uint32_t v, uint32_t waiters)
{
    struct mp__rf_head *h = (struct mp__rf_head *)mp__rf_self.head;
    void *was = NULL, *first = NULL;
    if (__builtin_expect(h != NULL, 1)) {
        was = h->list_op_pending; /* a waiting lock_slow's own entry (rfutex.c) */
        first = h->list;
        mp__rf_pending(h, mp__rf_entry(l));
    }
    bool ok = atomic_compare_exchange_strong_explicit(
        &l->f.word, &v, (uint32_t)mp__rf_self.tid | waiters, memory_order_acquire,
        memory_order_relaxed);
    if (__builtin_expect(h != NULL, 1)) {
        if (ok)
            mp__rf_enqueue(h, l, first);
        mp__rf_pending(h, was);
    }
    return ok;
}

/* One attempt to take the lock from the value v (no tid in it): 0, MP_EOWNERDEAD or
 * -EBUSY (mp__rf_cas_in). */
static inline int mp__rf_take(mp__rfutex *l, uint32_t v, uint32_t waiters)
{
    if (!mp__rf_cas_in(l, v, waiters))
        return -EBUSY;
    return v & MP__RF_DIED ? MP_EOWNERDEAD : 0;
}

/* The uncontended case alone: true when the futex kind is in use, the thread's tid is
 * known and the word went 0 -> tid (the lock is the caller's). False says nothing: call
 * mp__rf_trylock_slow (the fallback, first use in a thread, a dead holder, busy). */
static inline bool mp__rf_trylock_fast(mp__rfutex *l)
{
    return __builtin_expect(mp__rf_on && mp__rf_self.tid != 0, 1) &&
           __builtin_expect(mp__rf_cas_in(l, 0, 0), 1);
}

static inline int mp__rf_trylock(mp__rfutex *l)
{
    if (__builtin_expect(mp__rf_trylock_fast(l), 1))
        return 0;
    return mp__rf_trylock_slow(l);
}

/* The tid of the word's holder, 0 when free or its holder died (futex kind only). */
static inline int32_t mp__rf_holder(const mp__rfutex *l)
{
    return (int32_t)(atomic_load_explicit(&((mp__rfutex *)l)->f.word, memory_order_relaxed) &
                     MP__RF_TID);
}

/* Release a futex-kind lock the calling thread holds (the caller checked mp__rf_on). */
static inline void mp__rf_unlock_futex(mp__rfutex *l)
{
    struct mp__rf_head *h = (struct mp__rf_head *)mp__rf_self.head;
    void *was = NULL;
    if (__builtin_expect(h != NULL, 1)) {
        was = h->list_op_pending;
        mp__rf_pending(h, mp__rf_entry(l));
        mp__rf_dequeue(l);
    }
    uint32_t v = atomic_exchange_explicit(&l->f.word, 0, memory_order_release);
    if (__builtin_expect(v & MP__RF_WAITERS, 0)) {
        mp__rf_unlock_wake(l, h, was);
        return;
    }
    if (__builtin_expect(h != NULL, 1))
        mp__rf_pending(h, was);
}

static inline void mp__rf_unlock(mp__rfutex *l)
{
    if (__builtin_expect(!mp__rf_on, 0)) {
        mp__rf_unlock_slow(l);
        return;
    }
    mp__rf_unlock_futex(l);
}

#endif
