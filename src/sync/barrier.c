/* Barrier across processes.
 *
 * DESIGN: a shared segment holds a robust lock `m` (internal/rfutex.h) guarding the state
 * (count, generation, broken flag, the parties waiting in this generation and a table
 * of participants, each named by pid + start time so a reused pid is not taken for a
 * live party: internal/procid.h), and a futex word `seq` bumped on every release,
 * break and reset. A waiter sleeps on `seq` in slices of MP__SYNC_SLICE; after each
 * slice it takes `m` and checks, in order: did its generation end (released, or
 * broken by a reset)? is the barrier broken? did its own timeout pass? did a waiting
 * party or a registered participant die (pidfd liveness check)? A death breaks the
 * barrier for everyone instead of leaving them hanging. A process registers as a
 * participant when it creates or imports the barrier (a handle it will free: Process
 * frees the arguments after the target), and unregisters when it frees that handle
 * or exits normally (atexit). Merely waiting does not register: a fork child using
 * an inherited handle and leaving with _exit would otherwise look like a dead party
 * to every later round.
 * The action runs in the last party to arrive, with `m` held (as Python holds the
 * condition's lock); if that process dies inside it, the next process to take `m`
 * gets MP_EOWNERDEAD and breaks the barrier.
 * Lock order: `m` only; the process-local handle list lock is never held with `m`.
 */
#define _GNU_SOURCE
#include "sync/sync_internal.h"
#include "process/proc.h" /* mp__target_locate/resolve: how functions travel */
#include "internal/procid.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BARRIER_MAGIC 0x42415252u /* "BARR" */
#define MAX_PARTIES 1024
#define MAX_PARTICIPANTS 64
#define OUTCOMES 16

typedef struct participant {
    pid_t pid;
    uint32_t handles; /* handles this process holds */
    uint64_t start;   /* its start time: with pid, who it is (internal/procid.h) */
} participant;

typedef struct barrier_sh {
    _Atomic uint32_t seq;
    uint32_t magic;
    mp__rfutex m;
    uint32_t parties;
    uint32_t count;  /* arrived in the current generation */
    uint32_t gen;
    uint32_t broken;
    uint8_t outcome[OUTCOMES]; /* per generation g % OUTCOMES: 0 released, 1 broken */
    double default_timeout;
    char why[128];             /* why it broke, for mp_last_error() */
    participant part[MAX_PARTICIPANTS];
    mp__procid waiting[MAX_PARTIES]; /* pid + start time: a reused pid is not a party */
} barrier_sh;

struct mp_barrier {
    mp__shm seg;
    barrier_sh *sh;
    mp_barrier_action_fn action;
    void *action_arg;
    bool action_missing; /* imported, but the action is not found in this process */
    char missing_why[200]; /* why not, for the party that would run it */
    pid_t registered; /* pid that registered through this handle, 0 if none */
    struct mp_barrier *next, *prev; /* this process's handles, for atexit */
};

/* ---- process-local list of handles (for unregistering at exit) ---------------------- */

static pthread_mutex_t handles_lock = PTHREAD_MUTEX_INITIALIZER;
static mp_barrier *handles;
static bool atexit_done;

static void unregister(mp_barrier *b);

static void unregister_all_at_exit(void)
{
    pthread_mutex_lock(&handles_lock);
    for (mp_barrier *b = handles; b; b = b->next)
        unregister(b);
    pthread_mutex_unlock(&handles_lock);
}

static void list_add(mp_barrier *b)
{
    pthread_mutex_lock(&handles_lock);
    if (!atexit_done) {
        atexit(unregister_all_at_exit);
        atexit_done = true;
    }
    b->next = handles;
    if (handles)
        handles->prev = b;
    handles = b;
    pthread_mutex_unlock(&handles_lock);
}

static void list_remove(mp_barrier *b)
{
    pthread_mutex_lock(&handles_lock);
    if (b->prev)
        b->prev->next = b->next;
    else if (handles == b)
        handles = b->next;
    if (b->next)
        b->next->prev = b->prev;
    pthread_mutex_unlock(&handles_lock);
}

/* ---- the state lock ------------------------------------------------------------------ */

static void break_locked(barrier_sh *sh, const char *why)
{
    if (!sh->broken) {
        sh->broken = 1;
        sh->outcome[sh->gen % OUTCOMES] = 1;
        snprintf(sh->why, sizeof sh->why, "%s", why);
    }
    atomic_fetch_add(&sh->seq, 1);
    mp__futex_wake(&sh->seq, INT32_MAX);
}

/* Take m; a process that died holding it (e.g. inside the action) breaks the barrier. */
static void lock_state(barrier_sh *sh)
{
    if (mp__rf_lock(&sh->m, -1, false) == MP_EOWNERDEAD)
        break_locked(sh, "a party died inside the barrier");
}

static void unlock_state(barrier_sh *sh) { mp__rf_unlock(&sh->m); }

static bool is_me(const participant *p, mp__procid me)
{
    return p->pid == me.pid && p->start == me.start;
}

static void register_locked(mp_barrier *b)
{
    mp__procid me = mp__procid_self();
    if (b->registered == me.pid)
        return;
    barrier_sh *sh = b->sh;
    participant *free_slot = NULL;
    for (int i = 0; i < MAX_PARTICIPANTS; i++) {
        if (is_me(&sh->part[i], me)) {
            sh->part[i].handles++;
            b->registered = me.pid;
            return;
        }
        if (!free_slot && sh->part[i].pid == 0)
            free_slot = &sh->part[i];
    }
    if (free_slot) { /* a full table only means deaths beyond it go unnoticed */
        free_slot->pid = me.pid;
        free_slot->start = me.start;
        free_slot->handles = 1;
        b->registered = me.pid;
    }
}

static void unregister(mp_barrier *b)
{
    mp__procid me = mp__procid_self();
    if (b->registered != me.pid)
        return;
    barrier_sh *sh = b->sh;
    lock_state(sh);
    for (int i = 0; i < MAX_PARTICIPANTS; i++)
        if (is_me(&sh->part[i], me) && --sh->part[i].handles == 0)
            sh->part[i].pid = 0;
    unlock_state(sh);
    b->registered = 0;
}

/* ---- creation ------------------------------------------------------------------------ */

static mp_barrier *wrap(mp__shm *seg)
{
    mp_barrier *b = mp__calloc(1, sizeof *b);
    if (!b)
        return NULL;
    b->seg = *seg;
    b->sh = seg->addr;
    list_add(b);
    return b;
}

mp_barrier *mp_barrier_new(const mp_barrier_opts *opts)
{
    if (!opts || opts->parties < 1 || opts->parties > MAX_PARTIES) {
        mp__error(MP_EINVAL, "barrier parties must be 1..%d", MAX_PARTIES);
        return NULL;
    }
    if (mp__limit_check(opts->wait_limit, "barrier wait_limit") < 0)
        return NULL;
    mp__shm seg;
    if (mp__sync_seg_create(&seg, sizeof(barrier_sh), "mp-barrier") < 0)
        return NULL;
    barrier_sh *sh = seg.addr;
    if (mp__rf_init(&sh->m) < 0) {
        mp__shm_release(&seg);
        return NULL;
    }
    sh->parties = opts->parties;
    sh->default_timeout = opts->wait_limit > 0 ? opts->wait_limit : -1;
    sh->magic = BARRIER_MAGIC;
    mp_barrier *b = wrap(&seg);
    if (!b) {
        mp__shm_release(&seg);
        return NULL;
    }
    b->action = opts->action;
    b->action_arg = opts->action_arg;
    lock_state(sh);
    register_locked(b);
    unlock_state(sh);
    return b;
}

/* ---- waiting ------------------------------------------------------------------------- */

static int broken_error(barrier_sh *sh);

/* The last party: run the action, then release everyone. Called with m held. */
static int release_locked(mp_barrier *b, int index)
{
    barrier_sh *sh = b->sh;
    if (b->action_missing) {
        /* The others get the short reason; this party the whole story. */
        break_locked(sh, "the barrier action is not available in the last party's process");
        return mp__error(MP_EBROKEN, "the barrier action is not available in this process: %s",
                         b->missing_why);
    }
    if (b->action) {
        int ar = b->action(b->action_arg);
        if (ar != 0) {
            char why[64];
            snprintf(why, sizeof why, "barrier action failed (returned %d)", ar);
            break_locked(sh, why);
            return mp__error(MP_EBROKEN, "%s", why);
        }
    }
    sh->outcome[sh->gen % OUTCOMES] = 0;
    sh->gen++;
    sh->count = 0;
    atomic_fetch_add(&sh->seq, 1);
    mp__futex_wake(&sh->seq, INT32_MAX);
    return index;
}

/* A dead party among those waiting, or a dead registered participant, or 0. */
static pid_t find_dead_locked(barrier_sh *sh)
{
    mp__procid me = mp__procid_self();
    for (uint32_t i = 0; i < sh->count && i < MAX_PARTIES; i++) {
        mp__procid w = sh->waiting[i];
        if (!mp__procid_same(w, me) && mp__procid_dead(w.pid, w.start))
            return w.pid;
    }
    for (int i = 0; i < MAX_PARTICIPANTS; i++) {
        pid_t p = sh->part[i].pid;
        if (p && !is_me(&sh->part[i], me) && mp__procid_dead(p, sh->part[i].start)) {
            sh->part[i].pid = 0; /* report each death once */
            return p;
        }
    }
    return 0;
}

/* Reset: participants that died before it broke the barrier once; they must not break
 * it again in the rounds after (a process that left without freeing its handle would
 * otherwise break every later round whose wait lasts a slice). */
static void forget_dead_locked(barrier_sh *sh)
{
    for (int i = 0; i < MAX_PARTICIPANTS; i++) {
        pid_t p = sh->part[i].pid;
        if (p && mp__procid_dead(p, sh->part[i].start))
            sh->part[i].pid = 0;
    }
}

static int broken_error(barrier_sh *sh)
{
    return mp__error(MP_EBROKEN, "%s", sh->why[0] ? sh->why : "barrier is broken");
}

/* One check after a slice, with m held: >= 0 the arrival index (released),
 * a negative code to return, or 1 << 30 to keep waiting. */
#define KEEP_WAITING (1 << 30)
static int check_locked(barrier_sh *sh, uint32_t gen, int index, int slice_rc)
{
    if (sh->gen != gen)
        return sh->outcome[gen % OUTCOMES] ? broken_error(sh) : index;
    if (sh->broken)
        return broken_error(sh);
    if (slice_rc == MP_ETIMEOUT) {
        break_locked(sh, "a party timed out waiting at the barrier");
        return mp__error(MP_ETIMEOUT, "barrier wait timed out (the barrier is now broken)");
    }
    if (slice_rc < 0) {
        break_locked(sh, "a party's wait was interrupted");
        return slice_rc;
    }
    pid_t dead = find_dead_locked(sh);
    if (dead) {
        char why[64];
        snprintf(why, sizeof why, "a barrier party (pid %d) died", (int)dead);
        break_locked(sh, why);
        return broken_error(sh);
    }
    return KEEP_WAITING;
}

int mp_barrier_wait(mp_barrier *b, double timeout)
{
    if (!b)
        return mp__error(MP_EINVAL, "mp_barrier_wait: NULL barrier");
    barrier_sh *sh = b->sh;
    lock_state(sh);
    if (timeout < 0)
        timeout = sh->default_timeout;
    double deadline = mp__deadline(timeout);
    if (sh->broken) {
        int r = broken_error(sh);
        unlock_state(sh);
        return r;
    }
    int index = (int)sh->count++;
    sh->waiting[index] = mp__procid_self();
    if (sh->count == sh->parties) {
        int r = release_locked(b, index);
        unlock_state(sh);
        return r;
    }
    uint32_t gen = sh->gen;
    int r = KEEP_WAITING;
    while (r == KEEP_WAITING) {
        uint32_t seq = atomic_load(&sh->seq);
        unlock_state(sh);
        int rc = mp__sync_wait_slice(&sh->seq, seq, deadline);
        lock_state(sh);
        r = check_locked(sh, gen, index, rc);
    }
    unlock_state(sh);
    return r;
}

int mp_barrier_reset(mp_barrier *b)
{
    if (!b)
        return mp__error(MP_EINVAL, "mp_barrier_reset: NULL barrier");
    barrier_sh *sh = b->sh;
    lock_state(sh);
    if (sh->count > 0) { /* the parties waiting now see their generation broken */
        sh->outcome[sh->gen % OUTCOMES] = 1;
        snprintf(sh->why, sizeof sh->why, "the barrier was reset while waiting");
        sh->gen++;
    }
    sh->count = 0;
    sh->broken = 0;
    forget_dead_locked(sh);
    atomic_fetch_add(&sh->seq, 1);
    mp__futex_wake(&sh->seq, INT32_MAX);
    unlock_state(sh);
    return 0;
}

int mp_barrier_abort(mp_barrier *b)
{
    if (!b)
        return mp__error(MP_EINVAL, "mp_barrier_abort: NULL barrier");
    lock_state(b->sh);
    break_locked(b->sh, "the barrier was aborted");
    unlock_state(b->sh);
    return 0;
}

unsigned mp_barrier_parties(const mp_barrier *b) { return b ? b->sh->parties : 0; }

unsigned mp_barrier_n_waiting(const mp_barrier *b)
{
    if (!b)
        return 0;
    lock_state(b->sh);
    unsigned n = b->sh->broken ? 0 : b->sh->count;
    unlock_state(b->sh);
    return n;
}

bool mp_barrier_broken(const mp_barrier *b)
{
    if (!b)
        return false;
    lock_state(b->sh);
    bool broken = b->sh->broken;
    unlock_state(b->sh);
    return broken;
}

void mp_barrier_free(mp_barrier *b)
{
    if (!b)
        return;
    list_remove(b);
    unregister(b);
    mp__shm_release(&b->seg);
    free(b);
}

/* ---- passing to other processes ------------------------------------------------------
 * The action travels the way Process targets do (src/process/target.c): the object it
 * lives in and its offset there, which a fork, spawn or forkserver child resolves
 * without needing an exported symbol (a static function works). Its argument travels
 * as a raw pointer value (see mp_barrier_opts.action_arg). Wire: barrier_wire, then
 * path_len bytes of the object's path ("" for the main program). */

struct barrier_wire {
    uint32_t magic;
    uint32_t has_action;
    uint64_t arg;
    uint64_t offset;
    uint32_t path_len;
    char sym[256];
};

/* The action as a target-shaped pointer (target.c works on any function's address). */
static mp_target_fn as_target(mp_barrier_action_fn fn) { return (mp_target_fn)(void (*)(void))fn; }

static int barrier_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    mp_barrier *b = obj;
    struct barrier_wire w;
    memset(&w, 0, sizeof w);
    w.magic = BARRIER_MAGIC;
    w.arg = (uint64_t)(uintptr_t)b->action_arg;
    mp__target_loc *loc = NULL;
    if (b->action) {
        loc = mp__calloc(1, sizeof *loc);
        if (!loc)
            return -ENOMEM;
        int r = mp__target_locate(as_target(b->action), loc);
        if (r < 0) {
            free(loc);
            return r;
        }
        w.has_action = 1;
        w.offset = loc->offset;
        w.path_len = (uint32_t)strlen(loc->path);
        memcpy(w.sym, loc->sym, sizeof w.sym);
    }
    char *p = mp__calloc(1, sizeof w + w.path_len);
    if (p) {
        memcpy(p, &w, sizeof w);
        if (loc)
            memcpy(p + sizeof w, loc->path, w.path_len);
    }
    free(loc);
    if (!p)
        return -ENOMEM;
    fds[0] = b->seg.fd;
    *nfds = 1;
    *data = p;
    *len = sizeof w + w.path_len;
    return 0;
}

/* Find the action in this process. A failure is not the import's failure: the message
 * is kept for the party that would run the action, and the caller's last error stays. */
static void resolve_action(mp_barrier *b, const struct barrier_wire *w, const char *path)
{
    mp__target_loc *loc = mp__calloc(1, sizeof *loc);
    mp_target_fn fn = NULL;
    mp__error_saved saved;
    mp__error_save(&saved);
    int r = -ENOMEM;
    if (loc) {
        memcpy(loc->path, path, w->path_len);
        memcpy(loc->sym, w->sym, sizeof loc->sym);
        loc->sym[sizeof loc->sym - 1] = 0;
        loc->offset = w->offset;
        r = mp__target_resolve(loc, &fn);
    }
    if (r < 0) {
        b->action_missing = true;
        snprintf(b->missing_why, sizeof b->missing_why, "%s",
                 loc ? mp__last_error_detail() : "out of memory");
    } else {
        b->action = (mp_barrier_action_fn)(void (*)(void))fn;
    }
    mp__error_restore(&saved);
    free(loc);
}

static int barrier_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    struct barrier_wire w;
    if (len < sizeof w || nfds != 1 || (memcpy(&w, data, sizeof w), w.magic != BARRIER_MAGIC) ||
        w.path_len != len - sizeof w || w.path_len >= sizeof((mp__target_loc *)0)->path) {
        for (size_t i = 0; i < nfds; i++)
            close(fds[i]);
        return mp__error(MP_EPROTO, "barrier handle: bad description");
    }
    mp__shm seg;
    int r = mp__shm_attach(&seg, fds[0], sizeof(barrier_sh));
    if (r < 0)
        return r;
    if (((barrier_sh *)seg.addr)->magic != BARRIER_MAGIC) {
        mp__shm_release(&seg);
        return mp__error(MP_EPROTO, "barrier handle: not a barrier segment");
    }
    mp_barrier *b = wrap(&seg);
    if (!b) {
        mp__shm_release(&seg);
        return -ENOMEM;
    }
    if (w.has_action)
        resolve_action(b, &w, (const char *)data + sizeof w);
    b->action_arg = (void *)(uintptr_t)w.arg;
    lock_state(b->sh);
    register_locked(b);
    unlock_state(b->sh);
    *obj = b;
    return 0;
}

static void barrier_release_obj(void *obj) { mp_barrier_free(obj); }

const mp_kind mp_kind_barrier = {"barrier", barrier_export, barrier_import, barrier_release_obj};

__attribute__((constructor(200))) static void barrier_register_kind(void)
{
    mp_kind_register(&mp_kind_barrier);
}
