/* Private parts of the sync module shared by the src/sync files and src/shared/shared.c (a shared
 * Value/Array embeds an RLock in its own segment). */
#ifndef MP_SYNC_INTERNAL_H
#define MP_SYNC_INTERNAL_H

#include "internal/common.h"
#include "internal/rfutex.h"
#include "internal/shm.h"
#include "multiproc/sync.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

/* How long a waiter sleeps before re-checking shared state, liveness of other
 * processes and pending signal handlers. */
#define MP__SYNC_SLICE 0.1

/* The shared part of a Lock/RLock. */
typedef struct mp__lock_sh {
    mp__rfutex m;             /* the robust lock (internal/rfutex.h) */
    _Atomic int32_t owner;    /* the fallback only (the futex kind's word holds the
                               * holder's tid): the holder's tid, 0 when free, set by the
                               * holder after taking m, cleared before releasing it; a
                               * dead holder's tid stays until the next locker takes m
                               * over (EOWNERDEAD) */
    uint32_t depth;           /* RLock only: recursion depth, written by the holder */
    uint32_t recursive;
    uint32_t magic;
} mp__lock_sh;

#define MP__LOCK_MAGIC 0x4c4f434bu /* "LOCK" */

/* A process-local handle. Several users in one process (a Condition, a Value)
 * share one handle through `refs`, so the lock is always locked and unlocked through
 * the same mapping (the thread's robust list records the mapped address). */
struct mp_lock {
    _Atomic int refs;
    mp__shm seg;      /* mapping holding sh; unmapped on the last free if owns_seg */
    int owns_seg;
    size_t off;       /* offset of sh in seg (for export) */
    mp__lock_sh *sh;
};

/* Initialise a lock in shared memory at sh (zeroed). 0 or -errno. */
int mp__lock_sh_init(mp__lock_sh *sh, bool recursive);
/* A handle for a lock living inside someone else's mapping (not owned: the caller
 * keeps seg mapped while the handle lives). NULL on -ENOMEM. */
mp_lock *mp__lock_view(const mp__shm *seg, size_t off);
/* Another reference to the same handle (released by mp_lock_free). */
mp_lock *mp__lock_ref(mp_lock *l);
/* Export/import a lock handle as bytes + one fd (used by the kinds of objects that
 * carry a lock: Condition, Value/Array). */
int mp__lock_export(mp_lock *l, void **data, size_t *len, int *fds, size_t *nfds);
int mp__lock_import(const void *data, size_t len, int *fds, size_t nfds, mp_lock **out);

/* Release the lock completely (all RLock levels) for a Condition wait; returns the
 * depth to restore. The caller holds the lock. */
uint32_t mp__lock_release_all(mp_lock *l);
/* Re-acquire after a Condition wait, without a time limit and not interruptible,
 * restoring the depth. 0 or MP_EOWNERDEAD (acquired in both cases). */
int mp__lock_reacquire(mp_lock *l, uint32_t depth);

/* The calling thread's tid (cached; reset in fork children). */
int32_t mp__sync_tid(void);

/* Sleep on a futex word for at most one slice and at most until deadline:
 * 0 (woken, value changed, or slice over), MP_ETIMEOUT (deadline passed),
 * MP_EINTERRUPTED. */
int mp__sync_wait_slice(_Atomic uint32_t *word, uint32_t expected, double deadline);

/* Create a segment for one object of `size` bytes. */
int mp__sync_seg_create(mp__shm *seg, size_t size, const char *tag);

/* Kind export helpers: a malloc'd copy of `len` bytes. */
int mp__sync_blob(const void *src, size_t len, void **data, size_t *out_len);

#endif
