/* Semaphore, BoundedSemaphore and Event across processes.
 *
 * DESIGN: each object is a few atomics in a shared segment, with no internal lock,
 * so a process dying anywhere in these calls leaves a consistent state.
 * - Semaphore: `value` is the futex word. acquire = CAS value-1 when > 0, else
 *   waiters++ and sleep while value == 0. release = CAS value+1 (bounded: refused at
 *   `max`), then wake one sleeper if waiters > 0. Both sides use seq_cst so either the
 *   releaser sees the waiter or the waiter's futex sees the new value.
 * - Event: `flag` is the futex word; set stores 1 and wakes everyone if waiters > 0.
 * Sleepers wake every MP__SYNC_SLICE anyway, so a wake-up lost because the waker died
 * between its store and its futex wake is noticed at once.
 * Units a dead process took from a semaphore are not given back: semaphores have no
 * owner (any process may release), exactly as in Python.
 */
#define _GNU_SOURCE
#include "sync/sync_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- Semaphore ------------------------------------------------------------------- */

typedef struct sem_sh {
    _Atomic uint32_t value;
    _Atomic uint32_t waiters;
    uint32_t max; /* 0: unbounded (up to INT32_MAX) */
    uint32_t magic;
} sem_sh;

#define SEM_MAGIC 0x53454d41u /* "SEMA" */
#define EVENT_MAGIC 0x45564e54u /* "EVNT" */

struct mp_semaphore {
    mp__shm seg;
    sem_sh *sh;
};

static mp_semaphore *sem_create(unsigned value, bool bounded)
{
    if (value > INT32_MAX) {
        mp__error(MP_EINVAL, "semaphore initial value %u is out of range", value);
        return NULL;
    }
    mp_semaphore *s = mp__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    if (mp__sync_seg_create(&s->seg, sizeof(sem_sh), "mp-semaphore") < 0) {
        free(s);
        return NULL;
    }
    s->sh = s->seg.addr;
    atomic_store(&s->sh->value, value);
    s->sh->max = bounded ? value : 0;
    s->sh->magic = SEM_MAGIC;
    return s;
}

mp_semaphore *mp_semaphore_new(unsigned value) { return sem_create(value, false); }
mp_semaphore *mp_bounded_semaphore_new(unsigned value) { return sem_create(value, true); }

static bool sem_try(sem_sh *sh)
{
    uint32_t v = atomic_load(&sh->value);
    while (v > 0)
        if (atomic_compare_exchange_weak(&sh->value, &v, v - 1))
            return true;
    return false;
}

int mp_semaphore_acquire(mp_semaphore *s, double timeout)
{
    if (!s)
        return mp__error(MP_EINVAL, "mp_semaphore_acquire: NULL semaphore");
    sem_sh *sh = s->sh;
    if (sem_try(sh))
        return 0;
    if (timeout == 0)
        return mp__error(MP_ETIMEOUT, "semaphore has no units left");
    double deadline = mp__deadline(timeout);
    int r = 0;
    atomic_fetch_add(&sh->waiters, 1);
    while (!sem_try(sh)) {
        r = mp__sync_wait_slice(&sh->value, 0, deadline);
        if (r < 0) {
            if (sem_try(sh))
                r = 0;
            break;
        }
    }
    atomic_fetch_sub(&sh->waiters, 1);
    if (r == MP_ETIMEOUT)
        return mp__error(MP_ETIMEOUT, "timed out waiting for the semaphore");
    return r;
}

int mp_semaphore_release(mp_semaphore *s)
{
    if (!s)
        return mp__error(MP_EINVAL, "mp_semaphore_release: NULL semaphore");
    sem_sh *sh = s->sh;
    uint32_t limit = sh->max ? sh->max : INT32_MAX;
    uint32_t v = atomic_load(&sh->value);
    do {
        if (v >= limit)
            return mp__error(MP_ERANGE, "semaphore released too many times");
    } while (!atomic_compare_exchange_weak(&sh->value, &v, v + 1));
    if (atomic_load(&sh->waiters) > 0)
        mp__futex_wake(&sh->value, 1);
    return 0;
}

int mp_semaphore_value(const mp_semaphore *s)
{
    return s ? (int)atomic_load(&s->sh->value) : 0;
}

void mp_semaphore_free(mp_semaphore *s)
{
    if (!s)
        return;
    mp__shm_release(&s->seg);
    free(s);
}

/* ---- Event ----------------------------------------------------------------------- */

typedef struct event_sh {
    _Atomic uint32_t flag;
    _Atomic uint32_t waiters;
    uint32_t magic;
} event_sh;

struct mp_event {
    mp__shm seg;
    event_sh *sh;
};

mp_event *mp_event_new(void)
{
    mp_event *e = mp__calloc(1, sizeof *e);
    if (!e)
        return NULL;
    if (mp__sync_seg_create(&e->seg, sizeof(event_sh), "mp-event") < 0) {
        free(e);
        return NULL;
    }
    e->sh = e->seg.addr;
    e->sh->magic = EVENT_MAGIC;
    return e;
}

int mp_event_set(mp_event *e)
{
    if (!e)
        return mp__error(MP_EINVAL, "mp_event_set: NULL event");
    atomic_store(&e->sh->flag, 1);
    if (atomic_load(&e->sh->waiters) > 0)
        mp__futex_wake(&e->sh->flag, INT32_MAX);
    return 0;
}

int mp_event_clear(mp_event *e)
{
    if (!e)
        return mp__error(MP_EINVAL, "mp_event_clear: NULL event");
    atomic_store(&e->sh->flag, 0);
    return 0;
}

bool mp_event_is_set(const mp_event *e) { return e && atomic_load(&e->sh->flag) != 0; }

int mp_event_wait(mp_event *e, double timeout)
{
    if (!e)
        return mp__error(MP_EINVAL, "mp_event_wait: NULL event");
    event_sh *sh = e->sh;
    if (atomic_load(&sh->flag))
        return 0;
    if (timeout == 0)
        return mp__error(MP_ETIMEOUT, "event is not set");
    double deadline = mp__deadline(timeout);
    int r = 0;
    atomic_fetch_add(&sh->waiters, 1);
    while (!atomic_load(&sh->flag)) {
        r = mp__sync_wait_slice(&sh->flag, 0, deadline);
        if (r < 0) {
            if (atomic_load(&sh->flag))
                r = 0;
            break;
        }
    }
    atomic_fetch_sub(&sh->waiters, 1);
    if (r == MP_ETIMEOUT)
        return mp__error(MP_ETIMEOUT, "timed out waiting for the event");
    return r;
}

void mp_event_free(mp_event *e)
{
    if (!e)
        return;
    mp__shm_release(&e->seg);
    free(e);
}

/* ---- passing to other processes (one fd, a magic number as the description) -------- */

static int seg_export(const mp__shm *seg, uint32_t magic, void **data, size_t *len, int *fds,
                      size_t *nfds)
{
    fds[0] = seg->fd;
    *nfds = 1;
    return mp__sync_blob(&magic, sizeof magic, data, len);
}

/* Map the one fd and check the magic number at `magic_off` in the segment. */
static int seg_import(const void *data, size_t len, int *fds, size_t nfds, uint32_t magic,
                      size_t size, size_t magic_off, mp__shm *seg)
{
    uint32_t m = 0;
    if (len == sizeof m)
        memcpy(&m, data, sizeof m);
    if (m != magic || nfds != 1) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return mp__error(MP_EPROTO, "sync handle: bad description");
    }
    int r = mp__shm_attach(seg, fds[0], size);
    if (r < 0)
        return r;
    uint32_t have;
    memcpy(&have, (char *)seg->addr + magic_off, sizeof have);
    if (have != magic) {
        mp__shm_release(seg);
        return mp__error(MP_EPROTO, "sync handle: segment holds another kind of object");
    }
    return 0;
}

static int sem_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    return seg_export(&((mp_semaphore *)obj)->seg, SEM_MAGIC, data, len, fds, nfds);
}

static int sem_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    mp_semaphore *s = mp__calloc(1, sizeof *s);
    if (!s) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return -ENOMEM;
    }
    int r = seg_import(data, len, fds, nfds, SEM_MAGIC, sizeof(sem_sh),
                       offsetof(sem_sh, magic), &s->seg);
    if (r < 0) {
        free(s);
        return r;
    }
    s->sh = s->seg.addr;
    *obj = s;
    return 0;
}

static void sem_release_obj(void *obj) { mp_semaphore_free(obj); }

static int event_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    return seg_export(&((mp_event *)obj)->seg, EVENT_MAGIC, data, len, fds, nfds);
}

static int event_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    mp_event *e = mp__calloc(1, sizeof *e);
    if (!e) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return -ENOMEM;
    }
    int r = seg_import(data, len, fds, nfds, EVENT_MAGIC, sizeof(event_sh),
                       offsetof(event_sh, magic), &e->seg);
    if (r < 0) {
        free(e);
        return r;
    }
    e->sh = e->seg.addr;
    *obj = e;
    return 0;
}

static void event_release_obj(void *obj) { mp_event_free(obj); }

const mp_kind mp_kind_semaphore = {"semaphore", sem_export, sem_import, sem_release_obj};
const mp_kind mp_kind_event = {"event", event_export, event_import, event_release_obj};

__attribute__((constructor(200))) static void sem_event_register_kinds(void)
{
    mp_kind_register(&mp_kind_semaphore);
    mp_kind_register(&mp_kind_event);
}
