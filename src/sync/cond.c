/* Condition variables across processes.
 *
 * DESIGN: a Condition is a shared segment holding a futex word `seq` and one 64-bit
 * atomic `state` = (waiters << 32 | tokens), plus a reference to a Lock/RLock handle.
 * - wait: (lock held) waiters++, snapshot seq, release the lock fully, then sleep on
 *   seq in slices; whenever woken, try to take a token (tokens--, waiters-- in one
 *   CAS). A waiter that times out leaves with waiters-- unless a token is there.
 * - notify(n): (lock held) tokens += min(n, waiters - tokens), seq++, futex wake.
 * Tokens make notify(n) wake at most n waiters even though sleepers wake on their own
 * every slice. No internal lock exists, so a notifier dying at any point cannot block
 * anyone: a token it published is found by the next slice at the latest, and a
 * waiter dying leaves at worst one spare token (a spurious wake-up for someone).
 * Lock order: only the user's lock is taken (never while sleeping).
 */
#define _GNU_SOURCE
#include "sync/sync_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct cond_sh {
    _Atomic uint32_t seq;
    uint32_t magic;
    _Atomic uint64_t state; /* waiters << 32 | tokens; tokens <= waiters */
} cond_sh;

#define COND_MAGIC 0x434f4e44u /* "COND" */
#define WAITERS(s) ((uint32_t)((s) >> 32))
#define TOKENS(s) ((uint32_t)(s))
#define STATE(w, t) (((uint64_t)(w) << 32) | (uint64_t)(t))

struct mp_condition {
    mp__shm seg;
    cond_sh *sh;
    mp_lock *lock; /* a reference on the lock handle */
};

static mp_condition *cond_wrap(mp__shm *seg, mp_lock *lock)
{
    mp_condition *c = mp__calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->seg = *seg;
    c->sh = seg->addr;
    c->lock = lock;
    return c;
}

mp_condition *mp_condition_new(mp_lock *lock)
{
    mp_lock *l = lock ? mp__lock_ref(lock) : mp_rlock_new();
    if (!l)
        return NULL;
    mp__shm seg;
    if (mp__sync_seg_create(&seg, sizeof(cond_sh), "mp-condition") < 0) {
        mp_lock_free(l);
        return NULL;
    }
    ((cond_sh *)seg.addr)->magic = COND_MAGIC;
    mp_condition *c = cond_wrap(&seg, l);
    if (!c) {
        mp__shm_release(&seg);
        mp_lock_free(l);
    }
    return c;
}

mp_lock *mp_condition_lock(mp_condition *c) { return c ? c->lock : NULL; }

int mp_condition_acquire(mp_condition *c, double timeout)
{
    return mp_lock_acquire(c ? c->lock : NULL, timeout);
}

int mp_condition_release(mp_condition *c) { return mp_lock_release(c ? c->lock : NULL); }

/* Take a token if one is there: the notifier meant it for some waiter, us included. */
static bool take_token(cond_sh *sh)
{
    uint64_t s = atomic_load(&sh->state);
    while (TOKENS(s) > 0)
        if (atomic_compare_exchange_weak(&sh->state, &s, STATE(WAITERS(s) - 1, TOKENS(s) - 1)))
            return true;
    return false;
}

/* Leave without being notified, unless a token arrived meanwhile (then we take it). */
static bool leave_or_take(cond_sh *sh)
{
    uint64_t s = atomic_load(&sh->state);
    for (;;) {
        uint64_t next = TOKENS(s) > 0 ? STATE(WAITERS(s) - 1, TOKENS(s) - 1)
                                      : STATE(WAITERS(s) - 1, 0);
        if (atomic_compare_exchange_weak(&sh->state, &s, next))
            return TOKENS(s) > 0;
    }
}

static int sleep_until_notified(cond_sh *sh, uint32_t seq, double deadline)
{
    for (;;) {
        if (take_token(sh))
            return 0;
        int r = mp__sync_wait_slice(&sh->seq, seq, deadline);
        if (r < 0)
            return leave_or_take(sh) ? 0 : r;
        seq = atomic_load(&sh->seq);
    }
}

int mp_condition_wait(mp_condition *c, double timeout)
{
    if (!c)
        return mp__error(MP_EINVAL, "mp_condition_wait: NULL condition");
    if (!mp_lock_is_mine(c->lock))
        return mp__error(MP_ENOTOWNER, "cannot wait on un-acquired lock");
    double deadline = mp__deadline(timeout);
    cond_sh *sh = c->sh;
    atomic_fetch_add(&sh->state, (uint64_t)1 << 32);
    uint32_t seq = atomic_load(&sh->seq);
    uint32_t depth = mp__lock_release_all(c->lock);
    int r = sleep_until_notified(sh, seq, deadline);
    int rl = mp__lock_reacquire(c->lock, depth);
    if (rl < 0)
        return rl;
    if (r == MP_ETIMEOUT)
        return mp__error(MP_ETIMEOUT, "condition wait timed out");
    return r;
}

int mp_condition_wait_for(mp_condition *c, mp_predicate_fn pred, void *arg, double timeout)
{
    if (!c || !pred)
        return mp__error(MP_EINVAL, "mp_condition_wait_for: NULL argument");
    if (!mp_lock_is_mine(c->lock))
        return mp__error(MP_ENOTOWNER, "cannot wait on un-acquired lock");
    double deadline = mp__deadline(timeout);
    while (!pred(arg)) {
        double left = mp__left(deadline);
        if (deadline >= 0 && left <= 0)
            return 0;
        int r = mp_condition_wait(c, left);
        if (r < 0 && r != MP_ETIMEOUT)
            return r;
    }
    return 1;
}

int mp_condition_notify(mp_condition *c, int n)
{
    if (!c)
        return mp__error(MP_EINVAL, "mp_condition_notify: NULL condition");
    if (!mp_lock_is_mine(c->lock))
        return mp__error(MP_ENOTOWNER, "cannot notify on un-acquired lock");
    if (n <= 0)
        return 0;
    cond_sh *sh = c->sh;
    uint64_t s = atomic_load(&sh->state);
    uint32_t k;
    do {
        uint32_t idle = WAITERS(s) - TOKENS(s);
        k = idle < (uint32_t)n ? idle : (uint32_t)n;
        if (k == 0)
            return 0;
    } while (!atomic_compare_exchange_weak(&sh->state, &s, STATE(WAITERS(s), TOKENS(s) + k)));
    atomic_fetch_add(&sh->seq, 1);
    mp__futex_wake(&sh->seq, (int)k);
    return 0;
}

int mp_condition_notify_all(mp_condition *c) { return mp_condition_notify(c, INT_MAX); }

void mp_condition_free(mp_condition *c)
{
    if (!c)
        return;
    mp_lock_free(c->lock);
    mp__shm_release(&c->seg);
    free(c);
}

/* ---- passing to other processes ------------------------------------------------------
 * Wire format: [u32 magic][u32 lock blob length][lock blob]; fds: condition, lock. */

static int cond_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    mp_condition *c = obj;
    void *lb = NULL;
    size_t lblen = 0, lnfds = 0;
    int r = mp__lock_export(c->lock, &lb, &lblen, fds + 1, &lnfds);
    if (r < 0)
        return r;
    size_t total = 8 + lblen;
    char *buf = malloc(total);
    if (!buf) {
        free(lb);
        return mp__error(-ENOMEM, "exporting a condition");
    }
    uint32_t hdr[2] = {COND_MAGIC, (uint32_t)lblen};
    memcpy(buf, hdr, 8);
    memcpy(buf + 8, lb, lblen);
    free(lb);
    fds[0] = c->seg.fd;
    *nfds = 1 + lnfds;
    *data = buf;
    *len = total;
    return 0;
}

static int cond_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    uint32_t hdr[2];
    if (len < 8 || nfds != 2 || (memcpy(hdr, data, 8), hdr[0] != COND_MAGIC) ||
        hdr[1] != len - 8) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return mp__error(MP_EPROTO, "condition handle: bad description");
    }
    mp_lock *l = NULL;
    int r = mp__lock_import((const char *)data + 8, len - 8, fds + 1, 1, &l);
    if (r < 0) {
        close(fds[0]);
        return r;
    }
    mp__shm seg;
    r = mp__shm_attach(&seg, fds[0], sizeof(cond_sh));
    if (r < 0) {
        mp_lock_free(l);
        return r;
    }
    if (((cond_sh *)seg.addr)->magic != COND_MAGIC) {
        mp__shm_release(&seg);
        mp_lock_free(l);
        return mp__error(MP_EPROTO, "condition handle: not a condition segment");
    }
    mp_condition *c = cond_wrap(&seg, l);
    if (!c) {
        mp__shm_release(&seg);
        mp_lock_free(l);
        return -ENOMEM;
    }
    *obj = c;
    return 0;
}

static void cond_release(void *obj) { mp_condition_free(obj); }

const mp_kind mp_kind_condition = {"condition", cond_export, cond_import, cond_release};

__attribute__((constructor(200))) static void cond_register_kind(void)
{
    mp_kind_register(&mp_kind_condition);
}
