/* Lock and RLock across processes.
 *
 * DESIGN: the lock is the library's robust lock (internal/rfutex.h, src/sync/rfutex.c: a
 * futex word holding the owner's tid, on the kernel's robust list) in an anonymous shared
 * segment (internal/shm.h). When its holder dies the kernel marks the word and wakes a
 * waiter, whose acquire gets MP_EOWNERDEAD: the lock is consistent at once and the new
 * holder repairs the protected state.
 * Shared: the lock; the holder's tid is the tid in the futex word (the fallback keeps it
 * in `owner`, written by the holder); an RLock's depth, written by the holder.
 * Uncontended, a plain Lock's acquire is the lock's inline trylock (one CAS, the robust
 * list entry linked) after a check of `recursive`; release checks that the word is
 * exactly our tid (held by us, no waiters) and runs the inline unlock (one exchange).
 * Everything else (RLock, the fallback, waiters, errors) is out of line. Where the ~5.5
 * ns of an acquire + release go, before and after this shape: rfutex.c, "Cost".
 * A holder that died leaves a word with FUTEX_OWNER_DIED and no tid: the lock counts
 * as held (mp_lock_is_locked) and nobody's to release until the next acquire takes it
 * over with MP_EOWNERDEAD; the dead tid itself is gone (the fallback still names it).
 * A blocking acquire is the lock's futex wait with signals (iwait.c): deferred handlers
 * run before it sleeps, and a signal that arrives while it sleeps wakes it at once.
 * (With the fallback, a robust pthread mutex, it sleeps in slices of 0.1 s instead.)
 * Lock order: a lock is a leaf; nothing else is taken while acquiring it.
 */
#define _GNU_SOURCE
#include "sync/sync_internal.h"

#include "internal/iwait.h"

#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- helpers shared by the sync files ---------------------------------------------- */

int32_t mp__sync_tid(void) { return mp__rf_tid(); }

int mp__sync_wait_slice(_Atomic uint32_t *word, uint32_t expected, double deadline)
{
    double now = mp__now();
    if (deadline >= 0 && now >= deadline)
        return MP_ETIMEOUT;
    double end = now + MP__SYNC_SLICE;
    bool last = deadline >= 0 && deadline <= end;
    int r = mp__iwait_futex(word, expected, last ? deadline : end);
    if (r == MP_ETIMEOUT)
        return last ? MP_ETIMEOUT : 0;
    return r;
}

int mp__sync_seg_create(mp__shm *seg, size_t size, const char *tag)
{
    return mp__shm_create(seg, size, tag);
}

int mp__sync_blob(const void *src, size_t len, void **data, size_t *out_len)
{
    void *p = malloc(len);
    if (!p)
        return mp__error(-ENOMEM, "exporting a sync object");
    memcpy(p, src, len);
    *data = p;
    *out_len = len;
    return 0;
}

/* ---- lock in shared memory ---------------------------------------------------------- */

int mp__lock_sh_init(mp__lock_sh *sh, bool recursive)
{
    int r = mp__rf_init(&sh->m);
    if (r < 0)
        return r;
    atomic_store_explicit(&sh->owner, 0, memory_order_relaxed);
    sh->depth = 0;
    sh->recursive = recursive;
    sh->magic = MP__LOCK_MAGIC;
    return 0;
}

mp_lock *mp__lock_view(const mp__shm *seg, size_t off)
{
    mp_lock *l = mp__calloc(1, sizeof *l);
    if (!l)
        return NULL;
    atomic_store(&l->refs, 1);
    l->seg = *seg;
    l->owns_seg = 0;
    l->off = off;
    l->sh = (mp__lock_sh *)((char *)seg->addr + off);
    return l;
}

mp_lock *mp__lock_ref(mp_lock *l)
{
    if (l)
        atomic_fetch_add(&l->refs, 1);
    return l;
}

static mp_lock *lock_create(bool recursive)
{
    mp__shm seg;
    int r = mp__sync_seg_create(&seg, sizeof(mp__lock_sh), recursive ? "mp-rlock" : "mp-lock");
    if (r < 0)
        return NULL;
    if (mp__lock_sh_init(seg.addr, recursive) < 0) {
        mp__shm_release(&seg);
        return NULL;
    }
    mp_lock *l = mp__lock_view(&seg, 0);
    if (!l) {
        mp__shm_release(&seg);
        return NULL;
    }
    l->owns_seg = 1;
    return l;
}

mp_lock *mp_lock_new(void) { return lock_create(false); }
mp_lock *mp_rlock_new(void) { return lock_create(true); }

/* ---- acquire / release ------------------------------------------------------------
 * The futex kind keeps the holder's tid in its word (set by the CAS that takes it), so
 * `owner` is written only with the fallback (right after taking m, cleared right before
 * unlocking); `depth` only for an RLock. The fast paths are the lock's own trylock/unlock
 * plus a check of `recursive` and, on release, of the word's tid. */

/* The holder's tid, 0 when free or its holder died (futex kind: the kernel cleared the
 * tid; see died()). */
static inline int32_t owner_of(const mp__lock_sh *sh)
{
    if (__builtin_expect(mp__rf_on, 1))
        return mp__rf_holder(&sh->m);
    return atomic_load_explicit(&sh->owner, memory_order_relaxed);
}

/* A dead holder's lock nobody has taken over yet (futex kind; the fallback keeps the dead
 * tid in `owner`). */
static bool died(const mp__lock_sh *sh)
{
    return mp__rf_on &&
           (atomic_load_explicit(&((mp__lock_sh *)sh)->m.f.word, memory_order_relaxed) &
            (MP__RF_DIED | MP__RF_TID)) == MP__RF_DIED;
}

/* Just acquired m (at recursion depth `depth`) by a way other than the fast path. */
static void took(mp__lock_sh *sh, uint32_t depth)
{
    if (!mp__rf_on)
        atomic_store_explicit(&sh->owner, mp__sync_tid(), memory_order_relaxed);
    if (sh->recursive)
        sh->depth = depth;
}

/* Release m (the caller holds it). */
static void give_up(mp__lock_sh *sh)
{
    if (sh->recursive)
        sh->depth = 0;
    if (!mp__rf_on)
        atomic_store_explicit(&sh->owner, 0, memory_order_relaxed);
    mp__rf_unlock(&sh->m);
}

static int took_dead(mp__lock_sh *sh)
{
    took(sh, 1);
    return mp__error(MP_EOWNERDEAD, "the previous holder of the lock died holding it");
}

/* A plain Lock already held by the caller can never be acquired: wait out the
 * timeout like Python would, but refuse to deadlock forever. */
static int self_deadlock(double deadline)
{
    if (deadline < 0)
        return mp__error(-EDEADLK, "Lock is already held by this thread (would deadlock)");
    int r = mp__iwait_poll(NULL, 0, deadline); /* a sleep that signals wake */
    if (r < 0)
        return r == MP_EINTERRUPTED ? r : mp__error(r, "waiting out a lock timeout");
    return mp__error(MP_ETIMEOUT, "Lock is held by this thread");
}

/* The trylock failed with r (not 0). */
static int lock_wait(mp__lock_sh *sh, int r, double timeout)
{
    if (r == MP_EOWNERDEAD)
        return took_dead(sh);
    double deadline = mp__deadline(timeout);
    if (owner_of(sh) == mp__sync_tid())
        return self_deadlock(deadline);
    if (timeout == 0)
        return mp__error(MP_ETIMEOUT, "lock is held (tid %d)", (int)owner_of(sh));
    r = mp__rf_lock(&sh->m, deadline, true);
    if (r == 0) {
        took(sh, 1);
        return 0;
    }
    if (r == MP_EOWNERDEAD)
        return took_dead(sh);
    if (r == MP_ETIMEOUT)
        return mp__error(MP_ETIMEOUT, "timed out waiting for the lock");
    if (r == MP_EINTERRUPTED)
        return r; /* the message names the signal */
    return mp__error(r, "waiting for the lock");
}

/* Everything but a plain Lock taken on the futex fast path: an RLock, the fallback, the
 * thread's first lock, a dead holder, a held lock. */
static __attribute__((noinline)) int acquire_slow(mp__lock_sh *sh, double timeout, bool tried)
{
    if (sh->recursive && owner_of(sh) == mp__sync_tid()) {
        sh->depth++;
        return 0;
    }
    int r = tried ? mp__rf_trylock_slow(&sh->m) : mp__rf_trylock(&sh->m);
    if (r == 0) {
        took(sh, 1);
        return 0;
    }
    return lock_wait(sh, r, timeout);
}

int mp_lock_acquire(mp_lock *l, double timeout)
{
    if (__builtin_expect(!l, 0))
        return mp__error(MP_EINVAL, "mp_lock_acquire: NULL lock");
    mp__lock_sh *sh = l->sh;
    if (__builtin_expect(sh->recursive, 0))
        return acquire_slow(sh, timeout, false);
    if (__builtin_expect(mp__rf_trylock_fast(&sh->m), 1))
        return 0;
    return acquire_slow(sh, timeout, true);
}

static int release_error(const mp__lock_sh *sh)
{
    int32_t owner = owner_of(sh);
    if (died(sh))
        return mp__error(MP_ENOTOWNER, "lock is held by a thread that died holding it "
                                       "(the next acquire takes it over)");
    if (owner == 0)
        return mp__error(MP_ESTATE, sh->recursive ? "cannot release un-acquired lock"
                                                  : "release unlocked lock");
    return mp__error(MP_ENOTOWNER, "lock is held by another thread (tid %d)", (int)owner);
}

/* Everything but a plain futex-kind Lock held by the caller without waiters. */
static __attribute__((noinline)) int release_slow(mp__lock_sh *sh)
{
    /* glibc would refuse a non-owner with EPERM, but checking first keeps tools like
     * ThreadSanitizer quiet (and the futex kind has no owner check of its own). */
    if (owner_of(sh) != mp__sync_tid())
        return release_error(sh);
    if (sh->recursive && --sh->depth > 0)
        return 0;
    give_up(sh);
    return 0;
}

int mp_lock_release(mp_lock *l)
{
    if (__builtin_expect(!l, 0))
        return mp__error(MP_EINVAL, "mp_lock_release: NULL lock");
    mp__lock_sh *sh = l->sh;
    if (__builtin_expect(mp__rf_on && !sh->recursive, 1)) {
        uint32_t w = atomic_load_explicit(&sh->m.f.word, memory_order_relaxed);
        if (__builtin_expect(w == (uint32_t)mp__rf_self.tid && w != 0, 1)) {
            mp__rf_unlock_futex(&sh->m);
            return 0;
        }
    }
    return release_slow(sh);
}

uint32_t mp__lock_release_all(mp_lock *l)
{
    mp__lock_sh *sh = l->sh;
    uint32_t depth = sh->recursive ? sh->depth : 1;
    give_up(sh);
    return depth;
}

int mp__lock_reacquire(mp_lock *l, uint32_t depth)
{
    mp__lock_sh *sh = l->sh;
    int r = mp__rf_lock(&sh->m, -1, false);
    int code = r == MP_EOWNERDEAD ? took_dead(sh) : 0;
    took(sh, depth ? depth : 1);
    return code;
}

bool mp_lock_is_locked(const mp_lock *l) { return l && (owner_of(l->sh) != 0 || died(l->sh)); }

bool mp_lock_is_mine(const mp_lock *l) { return l && owner_of(l->sh) == mp__sync_tid(); }

bool mp_lock_is_recursive(const mp_lock *l) { return l && l->sh->recursive; }

void mp_lock_free(mp_lock *l)
{
    if (!l || atomic_fetch_sub(&l->refs, 1) > 1)
        return;
    /* Unmapping a mutex still on this thread's robust list would leave glibc a
     * dangling pointer: release it first. */
    if (mp_lock_is_mine(l))
        mp__lock_release_all(l);
    if (l->owns_seg)
        mp__shm_release(&l->seg);
    free(l);
}

/* ---- passing to other processes --------------------------------------------------- */

struct lock_wire {
    uint32_t magic;
    uint32_t off;
};

int mp__lock_export(mp_lock *l, void **data, size_t *len, int *fds, size_t *nfds)
{
    struct lock_wire w = {MP__LOCK_MAGIC, (uint32_t)l->off};
    fds[0] = l->seg.fd;
    *nfds = 1;
    return mp__sync_blob(&w, sizeof w, data, len);
}

int mp__lock_import(const void *data, size_t len, int *fds, size_t nfds, mp_lock **out)
{
    struct lock_wire w = {0, 0};
    if (len == sizeof w)
        memcpy(&w, data, sizeof w);
    /* The offset comes from the peer: a misaligned one would make every access to the
     * lock's words undefined (and its futex calls fail). */
    if (len != sizeof w || nfds != 1 || w.off % _Alignof(mp__lock_sh) != 0) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return mp__error(MP_EPROTO, "lock handle: bad description");
    }
    mp__shm seg;
    int r = mp__shm_attach(&seg, fds[0], (size_t)w.off + sizeof(mp__lock_sh));
    if (r < 0)
        return r;
    mp__lock_sh *sh = (mp__lock_sh *)((char *)seg.addr + w.off);
    if (w.magic != MP__LOCK_MAGIC || sh->magic != MP__LOCK_MAGIC) {
        mp__shm_release(&seg);
        return mp__error(MP_EPROTO, "lock handle: not a lock segment");
    }
    mp_lock *l = mp__lock_view(&seg, w.off);
    if (!l) {
        mp__shm_release(&seg);
        return -ENOMEM;
    }
    l->owns_seg = 1;
    *out = l;
    return 0;
}

static int lock_export_obj(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    return mp__lock_export(obj, data, len, fds, nfds);
}

static int lock_import_obj(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    mp_lock *l = NULL;
    int r = mp__lock_import(data, len, fds, nfds, &l);
    *obj = l;
    return r;
}

static void lock_release_obj(void *obj) { mp_lock_free(obj); }

const mp_kind mp_kind_lock = {"lock", lock_export_obj, lock_import_obj, lock_release_obj};

__attribute__((constructor(200))) static void lock_register_kind(void)
{
    mp_kind_register(&mp_kind_lock);
}
