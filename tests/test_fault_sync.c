/* Kill storms against every synchronisation primitive: worker processes using a Lock, an
 * RLock, a Semaphore, a BoundedSemaphore, a Condition, an Event and a Barrier are SIGKILLed
 * at random points of their work (a random number of operations in: inside acquire, while
 * holding, inside release, inside wait), replacements start, and at the end the survivors
 * are told to stop. What must hold:
 *   - nothing hangs: every worker's wait has a bound and running out of it is a failure;
 *     every survivor stops when told, within 10 s;
 *   - Lock, RLock, Condition: mutual exclusion is never broken, and a lock whose holder
 *     died is handed to the next acquirer with MP_EOWNERDEAD (repairs <= kills), after
 *     which the protected state is repaired and everyone goes on;
 *   - Semaphores: never more holders than units; the units lost are exactly those the
 *     killed processes held (between the surely and the possibly held), and releasing
 *     them on the dead's behalf restores the count (a BoundedSemaphore refuses one more);
 *   - Event: waiters keep being woken while setters are killed;
 *   - Barrier: a party killed at any point breaks the barrier for the others (MP_EBROKEN,
 *     never a timeout), and after mp_barrier_reset it works again. */
#include "test_util.h"
#include "fault.h"

#include <stdatomic.h>
#include <sys/mman.h>

#define WORKERS 4
#define KILLS 4
#define LIMIT 10.0 /* a worker's wait lasting this long is a hang */

enum { OUT, ACQUIRING, HOLDING, RELEASING };

struct shared {
    /* the state a lock protects: a == b unless a holder died between the two stores */
    uint64_t a, b, inside;
    _Atomic uint64_t repairs, violations, timeouts, ops;
    _Atomic uint64_t mask;  /* semaphores: ids inside (a set bit holds a unit) */
    _Atomic uint32_t phase[MPT_MAX_IDS];
    int64_t tokens, tokens2; /* condition: produced, not yet consumed (and its shadow) */
};

struct sync_arg {
    struct shared *sh;
    mp_lock *lock;
    mp_semaphore *sem;
    unsigned units;
    mp_condition *cond;
    mp_event *event;
    mp_barrier *barrier;
};

static struct shared *shared_new(void)
{
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                             -1, 0);
    return sh == MAP_FAILED ? NULL : sh;
}

/* Inside the lock: check the state (or repair it after MP_EOWNERDEAD), then change it in
 * two steps, with room between them for a kill. */
static void critical_section(struct shared *sh, int r)
{
    if (r == MP_EOWNERDEAD) {
        atomic_fetch_add(&sh->repairs, 1);
        sh->b = sh->a;
        sh->inside = 0;
    } else if (sh->a != sh->b || sh->inside) {
        atomic_fetch_add(&sh->violations, 1);
    }
    sh->inside = 1;
    sh->a++;
    for (volatile int i = 0; i < 200; i++) {
    }
    sh->b++;
    sh->inside = 0;
}

/* ---- Lock and RLock ---- */

static int lock_worker(mpt_ctl *c, int slot, int id, void *arg)
{
    (void)slot;
    (void)id;
    struct sync_arg *a = arg;
    bool rec = mp_lock_is_recursive(a->lock);
    while (!atomic_load(&c->stop)) {
        int r = mp_lock_acquire(a->lock, LIMIT);
        if (r != 0 && r != MP_EOWNERDEAD)
            return 5;
        if (rec && mp_lock_acquire(a->lock, 0) != 0) /* again, as its owner */
            return 6;
        critical_section(a->sh, r);
        if ((rec && mp_lock_release(a->lock) < 0) || mp_lock_release(a->lock) < 0)
            return 7;
        atomic_fetch_add(&c->progress, 1);
    }
    return 0;
}

/* After a storm: the parent can take the lock (repairing if the last holder died). */
static void check_lock_after(struct sync_arg *a)
{
    int r = mp_lock_acquire(a->lock, 5);
    CHECK(r == 0 || r == MP_EOWNERDEAD);
    if (r == 0 || r == MP_EOWNERDEAD) {
        critical_section(a->sh, r);
        CHECK_OK(mp_lock_release(a->lock));
    }
    CHECK(!mp_lock_is_locked(a->lock));
}

/* Rounds of WORKERS processes with KILLS kills each; returns the problems. */
static int storm_rounds(struct sync_arg *a, mpt_worker_fn fn, int base, int *rounds, int *kills,
                        int (*check)(mpt_ctl *, struct sync_arg *))
{
    mpt_ctl *c = mpt_ctl_new();
    CHECK(c != NULL);
    int problems = 0;
    double t0 = mpt_now();
    for (*rounds = 0; mpt_more_rounds(*rounds, base, t0); ++*rounds) {
        unsigned seed = (unsigned)getpid() * 2654435761u + (unsigned)*rounds;
        memset((void *)a->sh->phase, 0, sizeof a->sh->phase);
        atomic_store(&a->sh->mask, 0);
        mpt_storm_begin(c, WORKERS, fn, a);
        problems += mpt_storm_kill(c, KILLS, 0, WORKERS, 200, &seed, fn, a);
        if (a->event) { /* setters first, then the waiters see the event set */
            problems += mpt_storm_stop(c, 1, 0, 2);
            mp_event_set(a->event);
        }
        problems += mpt_storm_stop(c, 1, a->event ? 2 : 0, WORKERS);
        if (check)
            problems += check(c, a);
        *kills += c->kills;
    }
    mpt_ctl_free(c);
    return problems;
}

static void lock_storm(mp_lock *l)
{
    struct sync_arg a = {.sh = shared_new(), .lock = l};
    CHECK(a.sh && l);
    int rounds, kills = 0;
    int problems = storm_rounds(&a, lock_worker, 10, &rounds, &kills, NULL);
    CHECK_INT(problems, 0);
    CHECK_INT(atomic_load(&a.sh->violations), 0);
    /* Some kills land inside the critical section (about one in four): recovered. */
    CHECK(atomic_load(&a.sh->repairs) > 0 && (int)atomic_load(&a.sh->repairs) <= kills);
    check_lock_after(&a);
    printf("     %d rounds, %d kills, %llu dead holders recovered (MP_EOWNERDEAD)\n", rounds,
           kills, (unsigned long long)atomic_load(&a.sh->repairs));
    munmap(a.sh, sizeof *a.sh);
    mp_lock_free(l);
}

static void test_kill_storm_lock(void) { lock_storm(mp_lock_new()); }
static void test_kill_storm_rlock(void) { lock_storm(mp_rlock_new()); }

/* ---- Semaphore and BoundedSemaphore ---- */

static int sem_worker(mpt_ctl *c, int slot, int id, void *arg)
{
    (void)slot;
    struct sync_arg *a = arg;
    struct shared *sh = a->sh;
    uint64_t bit = (uint64_t)1 << (id % 64);
    while (!atomic_load(&c->stop)) {
        atomic_store(&sh->phase[id], ACQUIRING);
        if (mp_semaphore_acquire(a->sem, LIMIT) != 0)
            return 5;
        atomic_store(&sh->phase[id], HOLDING);
        uint64_t in = atomic_fetch_or(&sh->mask, bit) | bit;
        if ((unsigned)__builtin_popcountll(in) > a->units) /* dead holders keep their bit */
            atomic_fetch_add(&sh->violations, 1);
        for (volatile int i = 0; i < 200; i++) {
        }
        atomic_fetch_and(&sh->mask, ~bit);
        atomic_store(&sh->phase[id], RELEASING);
        if (mp_semaphore_release(a->sem) < 0)
            return 6;
        atomic_store(&sh->phase[id], OUT);
        atomic_fetch_add(&c->progress, 1);
    }
    return 0;
}

/* The units lost are those the killed workers held; the parent gives them back. */
static int sem_check(mpt_ctl *c, struct sync_arg *a)
{
    unsigned surely = (unsigned)__builtin_popcountll(atomic_load(&a->sh->mask)), maybe = 0;
    for (int id = 0; id < c->next_id && id < MPT_MAX_IDS; id++)
        maybe += c->killed[id] && atomic_load(&a->sh->phase[id]) != OUT;
    int v = mp_semaphore_value(a->sem);
    unsigned lost = a->units - (unsigned)v;
    if (v < 0 || lost < surely || lost > maybe) {
        fprintf(stderr, "semaphore: value %d of %u, killed holders %u..%u\n", v, a->units,
                surely, maybe);
        return 1;
    }
    for (unsigned i = 0; i < lost; i++) /* released on the dead's behalf */
        if (mp_semaphore_release(a->sem) < 0)
            return 1;
    return mp_semaphore_value(a->sem) != (int)a->units;
}

static void sem_storm(mp_semaphore *s, unsigned units, bool bounded)
{
    struct sync_arg a = {.sh = shared_new(), .sem = s, .units = units};
    CHECK(a.sh && s);
    int rounds, kills = 0;
    int problems = storm_rounds(&a, sem_worker, 10, &rounds, &kills, sem_check);
    CHECK_INT(problems, 0);
    CHECK_INT(atomic_load(&a.sh->violations), 0);
    CHECK_INT(mp_semaphore_value(s), (int)units);
    if (bounded)
        CHECK_ERR(mp_semaphore_release(s), MP_ERANGE);
    printf("     %d rounds, %d kills\n", rounds, kills);
    munmap(a.sh, sizeof *a.sh);
    mp_semaphore_free(s);
}

/* KILLS + 2 units: even if every kill takes one, the survivors never run dry. */
static void test_kill_storm_semaphore(void) { sem_storm(mp_semaphore_new(KILLS + 2), KILLS + 2, false); }
static void test_kill_storm_bounded_semaphore(void)
{
    sem_storm(mp_bounded_semaphore_new(KILLS + 2), KILLS + 2, true);
}

/* ---- Condition: producers and consumers of tokens ---- */

static bool has_token_or_stop(void *arg)
{
    struct sync_arg *a = arg;
    return a->sh->tokens > 0 || a->sh->ops; /* ops doubles as the stop flag here */
}

/* Inside the condition's lock: tokens2 shadows tokens; a holder killed between the two
 * stores leaves them apart, and the next acquirer (MP_EOWNERDEAD) repairs. */
static void cond_state(struct shared *sh, int r, int delta)
{
    if (r == MP_EOWNERDEAD) {
        atomic_fetch_add(&sh->repairs, 1);
        sh->tokens2 = sh->tokens;
    } else if (sh->tokens != sh->tokens2 || sh->tokens < 0) {
        atomic_fetch_add(&sh->violations, 1);
    }
    sh->tokens += delta;
    for (volatile int i = 0; i < 100; i++) {
    }
    sh->tokens2 += delta;
}

static int cond_worker(mpt_ctl *c, int slot, int id, void *arg)
{
    (void)id;
    struct sync_arg *a = arg;
    struct shared *sh = a->sh;
    while (!atomic_load(&c->stop)) {
        int r = mp_condition_acquire(a->cond, LIMIT);
        if (r != 0 && r != MP_EOWNERDEAD)
            return 5;
        if (slot < 2) { /* producer */
            cond_state(sh, r, 1);
            mp_condition_notify(a->cond, 1);
        } else { /* consumer: waits for a token (or the stop) */
            if (r == MP_EOWNERDEAD)
                cond_state(sh, r, 0);
            if (atomic_load(&c->stop))
                sh->ops = 1;
            int w = mp_condition_wait_for(a->cond, has_token_or_stop, a, LIMIT);
            if (w == MP_EOWNERDEAD) {
                cond_state(sh, w, 0);
                w = 1;
            }
            if (w == 0) /* LIMIT seconds without a token while producers run: a hang */
                atomic_fetch_add(&sh->timeouts, 1);
            if (w == 1 && sh->tokens > 0)
                cond_state(sh, 0, -1);
        }
        if (mp_condition_release(a->cond) < 0)
            return 7;
        atomic_fetch_add(&c->progress, 1);
    }
    return 0;
}

static void test_kill_storm_condition(void)
{
    mp_condition *cv = mp_condition_new(NULL);
    struct sync_arg a = {.sh = shared_new(), .cond = cv};
    CHECK(a.sh && cv);
    mpt_ctl *c = mpt_ctl_new();
    int problems = 0, rounds = 0, kills = 0;
    double t0 = mpt_now();
    for (; mpt_more_rounds(rounds, 10, t0); rounds++) {
        unsigned seed = (unsigned)getpid() * 2654435761u + (unsigned)rounds;
        a.sh->ops = 0;
        mpt_storm_begin(c, WORKERS, cond_worker, &a);
        problems += mpt_storm_kill(c, KILLS, 0, WORKERS, 200, &seed, cond_worker, &a);
        atomic_store(&c->stop, 1);
        /* wake the consumers waiting for a token: the stop is their predicate too */
        int r = mp_condition_acquire(cv, 5);
        if (r == MP_EOWNERDEAD)
            cond_state(a.sh, r, 0);
        a.sh->ops = 1;
        CHECK_OK(mp_condition_notify_all(cv));
        CHECK_OK(mp_condition_release(cv));
        problems += mpt_storm_stop(c, 1, 0, WORKERS);
        kills += c->kills;
    }
    CHECK_INT(problems, 0);
    CHECK_INT(atomic_load(&a.sh->violations), 0);
    CHECK_INT(atomic_load(&a.sh->timeouts), 0);
    CHECK(atomic_load(&a.sh->repairs) > 0 && (int)atomic_load(&a.sh->repairs) <= kills);
    printf("     %d rounds, %d kills, %llu dead holders recovered (MP_EOWNERDEAD)\n", rounds,
           kills, (unsigned long long)atomic_load(&a.sh->repairs));
    mpt_ctl_free(c);
    munmap(a.sh, sizeof *a.sh);
    mp_condition_free(cv);
}

/* ---- Event: setters and waiters ---- */

static int event_worker(mpt_ctl *c, int slot, int id, void *arg)
{
    (void)id;
    struct sync_arg *a = arg;
    while (!atomic_load(&c->stop)) {
        if (slot < 2) { /* setter: the flag stays set until a waiter takes it */
            if (mp_event_set(a->event) < 0)
                return 6;
            sched_yield();
            continue;
        }
        if (mp_event_wait(a->event, LIMIT) != 0)
            return 5; /* not set for LIMIT seconds while setters run: a hang */
        if (atomic_load(&c->stop))
            break; /* leave it set for the other waiters */
        mp_event_clear(a->event);
        atomic_fetch_add(&c->progress, 1);
    }
    return 0;
}

static void test_kill_storm_event(void)
{
    struct sync_arg a = {.sh = shared_new(), .event = mp_event_new()};
    CHECK(a.sh && a.event);
    int rounds, kills = 0;
    CHECK_INT(storm_rounds(&a, event_worker, 10, &rounds, &kills, NULL), 0);
    /* still an event: a waiter in another process is woken by a set */
    mp_event_clear(a.event);
    pid_t pid = fork();
    if (pid == 0)
        _exit(mp_event_wait(a.event, LIMIT) == 0 ? 0 : 1);
    CHECK_INT(mpt_wait_blocked(pid, 0, "futex", 10), 0);
    CHECK_OK(mp_event_set(a.event));
    int st = mpt_reap_within(pid, 10);
    CHECK(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0);
    printf("     %d rounds, %d kills\n", rounds, kills);
    munmap(a.sh, sizeof *a.sh);
    mp_event_free(a.event);
}

/* ---- Barrier: a party killed at any point breaks it for the others ---- */

static int barrier_worker(mpt_ctl *c, int slot, int id, void *arg)
{
    (void)slot;
    (void)id;
    struct sync_arg *a = arg;
    /* A handle of its own (imported, as a Process's arguments would give it): the party
     * counts as a participant between waits too. */
    mp_value *v = mp_value_pack("[h]", &mp_kind_barrier, a->barrier), *back = NULL;
    char *buf = NULL;
    size_t len = 0, nfds = 0;
    int fds[4];
    mp_barrier *b = NULL;
    if (!v || mp_value_encode(v, &buf, &len, fds, 4, &nfds) < 0 ||
        mp_value_decode(buf, len, fds, nfds, &back) < 0 ||
        mp_value_unpack(back, "[h]", &mp_kind_barrier, &b) < 0)
        return 8;
    for (;;) {
        int r = mp_barrier_wait(b, LIMIT);
        if (r == MP_EBROKEN)
            return 0; /* what a party's death must give the others */
        if (r < 0)
            return 5; /* a timeout: the death was not noticed */
        atomic_fetch_add(&c->progress, 1);
    }
}

static void test_kill_storm_barrier(void)
{
    struct sync_arg a = {.sh = shared_new(), .barrier = mp_barrier_new(&(mp_barrier_opts){.parties = 3})};
    CHECK(a.sh && a.barrier);
    mpt_ctl *c = mpt_ctl_new();
    int problems = 0, rounds = 0;
    double t0 = mpt_now();
    for (; mpt_more_rounds(rounds, 15, t0); rounds++) {
        unsigned seed = (unsigned)getpid() * 2654435761u + (unsigned)rounds;
        mpt_storm_begin(c, 3, barrier_worker, &a);
        problems += !mpt_storm_progress(c, 1 + mpt_rand(&seed) % 60);
        int victim = (int)(mpt_rand(&seed) % 3);
        kill(c->pid[victim], SIGKILL);
        int st = mpt_reap_within(c->pid[victim], 10);
        problems += !(st >= 0 && WIFSIGNALED(st));
        for (int s = 0; s < 3; s++) { /* the survivors saw MP_EBROKEN and left */
            if (s == victim)
                continue;
            st = mpt_reap_within(c->pid[s], LIMIT + 5);
            if (!(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
                fprintf(stderr, "round %d: survivor slot %d: status 0x%x\n", rounds, s, st);
                problems++;
            }
        }
        problems += !mp_barrier_broken(a.barrier);
        CHECK_OK(mp_barrier_reset(a.barrier));
    }
    CHECK_INT(problems, 0);
    CHECK(!mp_barrier_broken(a.barrier));
    printf("     %d rounds, %d kills\n", rounds, rounds);
    mpt_ctl_free(c);
    munmap(a.sh, sizeof *a.sh);
    mp_barrier_free(a.barrier);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_kill_storm_lock);
    RUN_IF(argc, argv, test_kill_storm_rlock);
    RUN_IF(argc, argv, test_kill_storm_semaphore);
    RUN_IF(argc, argv, test_kill_storm_bounded_semaphore);
    RUN_IF(argc, argv, test_kill_storm_condition);
    RUN_IF(argc, argv, test_kill_storm_event);
    RUN_IF(argc, argv, test_kill_storm_barrier);
    return mpt_done();
}
