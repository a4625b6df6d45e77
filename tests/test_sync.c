/* Lock, RLock, Semaphore, BoundedSemaphore, Event, Condition, Barrier across processes,
 * including holders and parties killed with SIGKILL at the worst moment. */
#include "test_util.h"
#include "multiproc/sync.h"
#include "sync/sync_internal.h"
#include "internal/procid.h"

#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* ---- helpers ------------------------------------------------------------------------ */

/* Memory shared with forked children for the tests' own bookkeeping. */
static void *shared_page(void)
{
    void *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

typedef int (*child_fn)(void *arg);

static pid_t fork_child(child_fn fn, void *arg)
{
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid == 0)
        _exit(fn(arg));
    return pid;
}

/* Wait for a child; returns its exit status, or 128+signal. */
static int reap(pid_t pid)
{
    int st = 0;
    if (waitpid(pid, &st, 0) < 0)
        return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void kill_and_reap(pid_t pid)
{
    kill(pid, SIGKILL);
    reap(pid);
}

/* Spin until *flag reaches want (set by a child), at most 10 s. */
static int wait_flag(_Atomic int *flag, int want)
{
    for (int i = 0; i < 10000; i++) {
        if (atomic_load(flag) >= want)
            return 0;
        usleep(1000);
    }
    return -1;
}

/* ---- Lock ------------------------------------------------------------------------------ */

static void test_lock_basic(void)
{
    mp_lock *l = mp_lock_new();
    CHECK(l != NULL);
    CHECK(!mp_lock_is_locked(l));
    CHECK(!mp_lock_is_recursive(l));
    CHECK_ERR(mp_lock_release(l), MP_ESTATE);
    CHECK_CONTAINS(mp_last_error(), "release unlocked lock");
    CHECK_OK(mp_lock_acquire(l, -1));
    CHECK(mp_lock_is_locked(l));
    CHECK(mp_lock_is_mine(l));
    /* A Lock is not recursive: the owner cannot take it again. */
    CHECK_ERR(mp_lock_acquire(l, 0), MP_ETIMEOUT);
    double t0 = mpt_now();
    CHECK_ERR(mp_lock_acquire(l, 0.2), MP_ETIMEOUT);
    double dt = mpt_now() - t0;
    CHECK(dt >= 0.19 && dt < 5);
    CHECK_ERR(mp_lock_acquire(l, -1), -EDEADLK);
    CHECK_OK(mp_lock_release(l));
    CHECK(!mp_lock_is_locked(l));
    CHECK_OK(mp_lock_acquire(l, 0));
    CHECK_OK(mp_lock_release(l));
    mp_lock_free(l);
    mp_lock_free(NULL);
}

static void *release_from_thread(void *arg)
{
    return (void *)(intptr_t)mp_lock_release(arg);
}

static void test_lock_release_by_other_thread(void)
{
    mp_lock *l = mp_lock_new();
    CHECK_OK(mp_lock_acquire(l, -1));
    pthread_t t;
    void *ret;
    pthread_create(&t, NULL, release_from_thread, l);
    pthread_join(t, &ret);
    CHECK_INT((intptr_t)ret, MP_ENOTOWNER);
    CHECK(mp_lock_is_mine(l));
    CHECK_OK(mp_lock_release(l));
    mp_lock_free(l);
}

struct counter_arg {
    mp_lock *lock;
    long *counter;
    int n;
};

static int count_under_lock(void *p)
{
    struct counter_arg *a = p;
    for (int i = 0; i < a->n; i++) {
        if (mp_lock_acquire(a->lock, -1) != 0)
            return 1;
        long v = *(volatile long *)a->counter;
        *(volatile long *)a->counter = v + 1;
        if (mp_lock_release(a->lock) != 0)
            return 2;
    }
    return 0;
}

static void test_lock_mutual_exclusion(void)
{
    mp_lock *l = mp_lock_new();
    long *counter = shared_page();
    struct counter_arg a = {l, counter, 20000};
    pid_t pids[4];
    for (int i = 0; i < 4; i++)
        pids[i] = fork_child(count_under_lock, &a);
    CHECK_INT(count_under_lock(&a), 0);
    for (int i = 0; i < 4; i++)
        CHECK_INT(reap(pids[i]), 0);
    CHECK_INT(*counter, 5 * 20000);
    munmap(counter, 4096);
    mp_lock_free(l);
}

struct hold_arg {
    mp_lock *lock;
    _Atomic int *flag;
};

static int hold_and_hang(void *p)
{
    struct hold_arg *a = p;
    if (mp_lock_acquire(a->lock, -1) != 0)
        return 1;
    atomic_store(a->flag, 1);
    pause();
    return 0;
}

static void owner_died_case(bool recursive)
{
    mp_lock *l = recursive ? mp_rlock_new() : mp_lock_new();
    _Atomic int *flag = shared_page();
    struct hold_arg a = {l, flag};
    pid_t pid = fork_child(hold_and_hang, &a);
    CHECK_OK(wait_flag(flag, 1));
    /* The messages name the holder (its tid: the child's pid, it has one thread). */
    char tid[40];
    snprintf(tid, sizeof tid, "(tid %d)", (int)pid);
    CHECK(mp_lock_is_locked(l) && !mp_lock_is_mine(l));
    CHECK_ERR(mp_lock_acquire(l, 0), MP_ETIMEOUT);
    CHECK_CONTAINS(mp_last_error(), tid);
    CHECK_ERR(mp_lock_release(l), MP_ENOTOWNER);
    CHECK_CONTAINS(mp_last_error(), tid);
    kill_and_reap(pid);
    /* Dead, not yet taken over: still locked, and not ours to release. */
    CHECK(mp_lock_is_locked(l) && !mp_lock_is_mine(l));
    CHECK_ERR(mp_lock_release(l), MP_ENOTOWNER);
    CHECK_CONTAINS(mp_last_error(), "lock is held by");
    double t0 = mpt_now();
    CHECK_ERR(mp_lock_acquire(l, 5), MP_EOWNERDEAD);
    CHECK(mpt_now() - t0 < 2);
    CHECK_CONTAINS(mp_last_error(), "died holding it");
    CHECK(mp_lock_is_mine(l)); /* acquired together with the error */
    CHECK_OK(mp_lock_release(l));
    CHECK_INT(mp_lock_acquire(l, 0), 0); /* recovered for good */
    CHECK_OK(mp_lock_release(l));
    munmap((void *)flag, 4096);
    mp_lock_free(l);
}

static void test_lock_owner_dies(void) { owner_died_case(false); }
static void test_rlock_owner_dies(void) { owner_died_case(true); }

/* A waiter blocked in acquire gets the lock when the holder is killed. */
static void test_lock_waiter_woken_when_owner_dies(void)
{
    mp_lock *l = mp_lock_new();
    _Atomic int *flag = shared_page();
    struct hold_arg a = {l, flag};
    pid_t pid = fork_child(hold_and_hang, &a);
    CHECK_OK(wait_flag(flag, 1));
    pid_t killer = fork();
    if (killer == 0) { /* kill the holder once the parent is asleep waiting for the lock */
        mpt_wait_blocked(getppid(), 0, "futex", 10);
        kill(pid, SIGKILL);
        _exit(0);
    }
    double t0 = mpt_now();
    CHECK_ERR(mp_lock_acquire(l, 10), MP_EOWNERDEAD);
    CHECK(mpt_now() - t0 < 5);
    CHECK_OK(mp_lock_release(l));
    reap(killer);
    reap(pid);
    munmap((void *)flag, 4096);
    mp_lock_free(l);
}

/* Workers loop on the lock; we SIGKILL them at random moments (often while they hold
 * it). Survivors and the parent must always get the lock, with MP_EOWNERDEAD exactly
 * when a holder died. */
struct chaos {
    _Atomic long ops;
    _Atomic long ownerdead;
    _Atomic int bad;
    long inside; /* 1 while someone is in the critical section */
};

struct chaos_arg {
    mp_lock *lock;
    struct chaos *c;
};

static int chaos_worker(void *p)
{
    struct chaos_arg *a = p;
    for (;;) {
        int r = mp_lock_acquire(a->lock, 10);
        if (r == MP_EOWNERDEAD) {
            atomic_fetch_add(&a->c->ownerdead, 1);
            a->c->inside = 0; /* repair: the dead holder left its mark */
        } else if (r != 0) {
            atomic_store(&a->c->bad, 1);
            return 1;
        }
        if (a->c->inside)
            atomic_store(&a->c->bad, 2);
        a->c->inside = 1;
        for (volatile int i = 0; i < 200; i++)
            ;
        a->c->inside = 0;
        atomic_fetch_add(&a->c->ops, 1);
        mp_lock_release(a->lock);
    }
}

static void test_lock_kill_holders_in_a_loop(void)
{
    mp_lock *l = mp_lock_new();
    struct chaos *c = shared_page();
    struct chaos_arg a = {l, c};
    pid_t pids[3];
    for (int i = 0; i < 3; i++)
        pids[i] = fork_child(chaos_worker, &a);
    srand(42);
    for (int round = 0; round < 30; round++) {
        usleep(2000 + rand() % 8000); /* not synchronisation: kills land at random points */
        int victim = rand() % 3;
        kill_and_reap(pids[victim]);
        pids[victim] = fork_child(chaos_worker, &a);
    }
    usleep(20000); /* the last workers run a while before the final kills (chaos timing) */
    for (int i = 0; i < 3; i++)
        kill_and_reap(pids[i]);
    int r = mp_lock_acquire(l, 5);
    CHECK(r == 0 || r == MP_EOWNERDEAD);
    CHECK_OK(mp_lock_release(l));
    CHECK_INT(atomic_load(&c->bad), 0);
    CHECK(atomic_load(&c->ops) > 100);
    fprintf(stderr, "  chaos: %ld ops, %ld owner-died recoveries\n", atomic_load(&c->ops),
            atomic_load(&c->ownerdead));
    munmap(c, 4096);
    mp_lock_free(l);
}

/* ---- RLock ----------------------------------------------------------------------------- */

static void test_rlock(void)
{
    mp_lock *l = mp_rlock_new();
    CHECK(mp_lock_is_recursive(l));
    CHECK_ERR(mp_lock_release(l), MP_ESTATE);
    CHECK_CONTAINS(mp_last_error(), "cannot release un-acquired lock");
    CHECK_OK(mp_lock_acquire(l, -1));
    CHECK_OK(mp_lock_acquire(l, 0));
    CHECK_OK(mp_lock_acquire(l, 1));
    pthread_t t;
    void *ret;
    pthread_create(&t, NULL, release_from_thread, l);
    pthread_join(t, &ret);
    CHECK_INT((intptr_t)ret, MP_ENOTOWNER);
    CHECK_OK(mp_lock_release(l));
    CHECK_OK(mp_lock_release(l));
    CHECK(mp_lock_is_locked(l));
    CHECK_OK(mp_lock_release(l));
    CHECK(!mp_lock_is_locked(l));
    CHECK_ERR(mp_lock_release(l), MP_ESTATE);
    mp_lock_free(l);
}

/* ---- Semaphore ------------------------------------------------------------------------- */

static void test_semaphore_basic(void)
{
    mp_semaphore *s = mp_semaphore_new(2);
    CHECK_INT(mp_semaphore_value(s), 2);
    CHECK_OK(mp_semaphore_acquire(s, 0));
    CHECK_OK(mp_semaphore_acquire(s, -1));
    CHECK_INT(mp_semaphore_value(s), 0);
    CHECK_ERR(mp_semaphore_acquire(s, 0), MP_ETIMEOUT);
    double t0 = mpt_now();
    CHECK_ERR(mp_semaphore_acquire(s, 0.15), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 >= 0.14);
    CHECK_OK(mp_semaphore_release(s));
    CHECK_OK(mp_semaphore_release(s));
    CHECK_OK(mp_semaphore_release(s)); /* unbounded: may go above the initial value */
    CHECK_INT(mp_semaphore_value(s), 3);
    mp_semaphore_free(s);

    mp_semaphore *b = mp_bounded_semaphore_new(1);
    CHECK_ERR(mp_semaphore_release(b), MP_ERANGE);
    CHECK_CONTAINS(mp_last_error(), "semaphore released too many times");
    CHECK_OK(mp_semaphore_acquire(b, 0));
    CHECK_OK(mp_semaphore_release(b));
    CHECK_ERR(mp_semaphore_release(b), MP_ERANGE);
    CHECK_INT(mp_semaphore_value(b), 1);
    mp_semaphore_free(b);
    CHECK(mp_semaphore_new(0x80000000u) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    mp_semaphore_free(NULL);
}

struct sem_arg {
    mp_semaphore *s;
    _Atomic int *active;
    _Atomic int *max_active;
};

static int sem_worker(void *p)
{
    struct sem_arg *a = p;
    if (mp_semaphore_acquire(a->s, 10) != 0)
        return 1;
    int now = atomic_fetch_add(a->active, 1) + 1;
    int m = atomic_load(a->max_active);
    while (now > m && !atomic_compare_exchange_weak(a->max_active, &m, now))
        ;
    usleep(30000); /* the workload: hold the unit long enough for holders to overlap */
    atomic_fetch_sub(a->active, 1);
    return mp_semaphore_release(a->s) == 0 ? 0 : 2;
}

static void test_semaphore_limits_concurrency(void)
{
    mp_semaphore *s = mp_semaphore_new(3);
    _Atomic int *page = shared_page();
    struct sem_arg a = {s, &page[0], &page[1]};
    pid_t pids[10];
    for (int i = 0; i < 10; i++)
        pids[i] = fork_child(sem_worker, &a);
    for (int i = 0; i < 10; i++)
        CHECK_INT(reap(pids[i]), 0);
    CHECK_INT(atomic_load(&page[1]), 3);
    CHECK_INT(mp_semaphore_value(s), 3);
    munmap(page, 4096);
    mp_semaphore_free(s);
}

static int sem_release_later(void *p)
{
    if (mpt_wait_blocked(getppid(), 0, "futex", 10) < 0) /* the parent sleeps in acquire */
        return 2;
    return mp_semaphore_release(p) == 0 ? 0 : 1;
}

static void test_semaphore_wakes_waiter(void)
{
    mp_semaphore *s = mp_semaphore_new(0);
    pid_t pid = fork_child(sem_release_later, s);
    double t0 = mpt_now();
    CHECK_OK(mp_semaphore_acquire(s, 10));
    CHECK(mpt_now() - t0 < 5);
    CHECK_INT(reap(pid), 0);
    mp_semaphore_free(s);
}

/* ---- Event ------------------------------------------------------------------------------ */

static int event_set_later(void *p)
{
    if (mpt_wait_blocked(getppid(), 0, "futex", 10) < 0) /* the parent sleeps in wait */
        return 2;
    return mp_event_set(p) == 0 ? 0 : 1;
}

static int event_wait_child(void *p)
{
    return mp_event_wait(p, 10) == 0 && mp_event_is_set(p) ? 0 : 1;
}

static void test_event(void)
{
    mp_event *e = mp_event_new();
    CHECK(!mp_event_is_set(e));
    CHECK_ERR(mp_event_wait(e, 0), MP_ETIMEOUT);
    double t0 = mpt_now();
    CHECK_ERR(mp_event_wait(e, 0.15), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 >= 0.14);
    pid_t waiters[3];
    for (int i = 0; i < 3; i++)
        waiters[i] = fork_child(event_wait_child, e);
    pid_t setter = fork_child(event_set_later, e);
    CHECK_OK(mp_event_wait(e, 10));
    CHECK(mp_event_is_set(e));
    CHECK_INT(reap(setter), 0);
    for (int i = 0; i < 3; i++)
        CHECK_INT(reap(waiters[i]), 0);
    CHECK_OK(mp_event_wait(e, 0));
    CHECK_OK(mp_event_clear(e));
    CHECK(!mp_event_is_set(e));
    CHECK_ERR(mp_event_wait(e, 0.01), MP_ETIMEOUT);
    mp_event_free(e);
}

/* ---- Condition ------------------------------------------------------------------------- */

struct cond_arg {
    mp_condition *c;
    _Atomic int *woken;
    _Atomic int *ready;
    int *value;
};

static int cond_waiter(void *p)
{
    struct cond_arg *a = p;
    if (mp_condition_acquire(a->c, -1) != 0)
        return 1;
    atomic_fetch_add(a->ready, 1);
    int r = mp_condition_wait(a->c, 10);
    if (r == 0)
        atomic_fetch_add(a->woken, 1);
    mp_condition_release(a->c);
    return r == 0 ? 0 : 3;
}

static void test_condition_errors_and_timeout(void)
{
    mp_condition *c = mp_condition_new(NULL);
    CHECK(mp_lock_is_recursive(mp_condition_lock(c)));
    CHECK_ERR(mp_condition_wait(c, 0), MP_ENOTOWNER);
    CHECK_CONTAINS(mp_last_error(), "cannot wait on un-acquired lock");
    CHECK_ERR(mp_condition_notify(c, 1), MP_ENOTOWNER);
    CHECK_CONTAINS(mp_last_error(), "cannot notify on un-acquired lock");
    CHECK_ERR(mp_condition_notify_all(c), MP_ENOTOWNER);
    CHECK_OK(mp_condition_acquire(c, -1));
    CHECK_OK(mp_condition_acquire(c, -1)); /* RLock: twice; wait releases both levels */
    double t0 = mpt_now();
    CHECK_ERR(mp_condition_wait(c, 0.15), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 >= 0.14);
    CHECK(mp_lock_is_mine(mp_condition_lock(c)));
    CHECK_OK(mp_condition_notify(c, 1)); /* nobody waits: fine */
    CHECK_OK(mp_condition_release(c));
    CHECK_OK(mp_condition_release(c));
    CHECK(!mp_lock_is_locked(mp_condition_lock(c)));
    mp_condition_free(c);
}

static void test_condition_notify_one_then_all(void)
{
    mp_lock *l = mp_lock_new();
    mp_condition *c = mp_condition_new(l);
    mp_lock_free(l); /* the condition keeps its own reference */
    _Atomic int *page = shared_page();
    struct cond_arg a = {c, &page[0], &page[1], NULL};
    pid_t pids[3];
    for (int i = 0; i < 3; i++)
        pids[i] = fork_child(cond_waiter, &a);
    CHECK_OK(wait_flag(a.ready, 3));
    for (int i = 0; i < 3; i++) /* all three asleep in the condition wait */
        CHECK_OK(mpt_wait_blocked(pids[i], 0, "futex", 10));
    CHECK_OK(mp_condition_acquire(c, -1));
    CHECK_OK(mp_condition_notify(c, 1));
    CHECK_OK(mp_condition_release(c));
    CHECK_OK(wait_flag(a.woken, 1));
    /* The time IS the test: several re-check slices pass, still exactly one woken. */
    usleep(400000);
    CHECK_INT(atomic_load(a.woken), 1);
    CHECK_OK(mp_condition_acquire(c, -1));
    CHECK_OK(mp_condition_notify_all(c));
    CHECK_OK(mp_condition_release(c));
    for (int i = 0; i < 3; i++)
        CHECK_INT(reap(pids[i]), 0);
    CHECK_INT(atomic_load(a.woken), 3);
    munmap(page, 4096);
    mp_condition_free(c);
}

static bool value_reached(void *arg) { return *(volatile int *)arg >= 3; }

static int cond_incrementer(void *p)
{
    struct cond_arg *a = p;
    for (int i = 0; i < 3; i++) {
        usleep(30000); /* pacing, not synchronisation: the waiter sees several notifies */
        mp_condition_acquire(a->c, -1);
        (*a->value)++;
        mp_condition_notify_all(a->c);
        mp_condition_release(a->c);
    }
    return 0;
}

static void test_condition_wait_for(void)
{
    mp_condition *c = mp_condition_new(NULL);
    int *page = shared_page();
    struct cond_arg a = {c, NULL, NULL, page};
    CHECK_OK(mp_condition_acquire(c, -1));
    CHECK_INT(mp_condition_wait_for(c, value_reached, page, 0.05), 0);
    pid_t pid = fork_child(cond_incrementer, &a);
    CHECK_INT(mp_condition_wait_for(c, value_reached, page, 10), 1);
    CHECK_INT(*page, 3);
    CHECK_OK(mp_condition_release(c));
    CHECK_INT(reap(pid), 0);
    munmap(page, 4096);
    mp_condition_free(c);
}

static int cond_hold_and_die(void *p)
{
    struct cond_arg *a = p;
    mp_condition_acquire(a->c, -1);
    if (a->value) /* notify first, then die still holding the lock */
        mp_condition_notify(a->c, 1);
    atomic_store(a->ready, 2);
    pause();
    return 0;
}

/* The holder of a condition's lock (a notifier, or not) dies while we wait: we are
 * not left hanging, we get the lock back with MP_EOWNERDEAD. */
static void notifier_dies_case(bool notify)
{
    mp_condition *c = mp_condition_new(NULL);
    _Atomic int *page = shared_page();
    struct cond_arg b = {c, &page[0], &page[1], notify ? (int *)&page[2] : NULL};
    CHECK_OK(mp_condition_acquire(c, -1));
    pid_t pid = fork_child(cond_hold_and_die, &b);
    pid_t killer = fork();
    if (killer == 0) {
        wait_flag(b.ready, 2);
        /* the parent is asleep: in the wait (no notify) or retaking the lock */
        mpt_wait_blocked(getppid(), 0, "futex", 10);
        kill(pid, SIGKILL);
        _exit(0);
    }
    double t0 = mpt_now();
    /* Our wait releases the lock, the child takes it (and notifies us or not), then
     * it is killed while holding it. */
    CHECK_INT(mp_condition_wait(c, notify ? 10 : 0.2), MP_EOWNERDEAD);
    CHECK(mpt_now() - t0 < 5);
    CHECK(mp_lock_is_mine(mp_condition_lock(c)));
    CHECK_OK(mp_condition_release(c));
    reap(killer);
    reap(pid);
    munmap((void *)page, 4096);
    mp_condition_free(c);
}

static void test_condition_lock_holder_dies(void) { notifier_dies_case(false); }
static void test_condition_notifier_dies(void) { notifier_dies_case(true); }

/* ---- Barrier --------------------------------------------------------------------------- */

struct barrier_arg {
    mp_barrier *b;
    _Atomic int *results; /* bitmask of indices seen */
    _Atomic int *actions;
    int rounds;
};

static _Atomic int *action_counter;
static int count_action(void *arg)
{
    (void)arg;
    atomic_fetch_add(action_counter, 1);
    return 0;
}

static int barrier_party(void *p)
{
    struct barrier_arg *a = p;
    for (int i = 0; i < a->rounds; i++) {
        int r = mp_barrier_wait(a->b, 10);
        if (r < 0)
            return 10 + (r == MP_EBROKEN);
        atomic_fetch_or(a->results, 1 << r);
    }
    return 0;
}

static void test_barrier_basic(void)
{
    CHECK(mp_barrier_new(NULL) == NULL);
    mp_barrier_opts bad = {0};
    CHECK(mp_barrier_new(&bad) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    CHECK_NULL_ERR(mp_barrier_new(&(mp_barrier_opts){.parties = 1, .wait_limit = NAN}),
                   MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "wait_limit");

    _Atomic int *page = shared_page();
    action_counter = &page[2];
    mp_barrier_opts o = {.parties = 3, .action = count_action};
    mp_barrier *b = mp_barrier_new(&o);
    CHECK_INT(mp_barrier_parties(b), 3);
    CHECK_INT(mp_barrier_n_waiting(b), 0);
    CHECK(!mp_barrier_broken(b));
    struct barrier_arg a = {b, &page[0], &page[2], 5};
    pid_t p1 = fork_child(barrier_party, &a), p2 = fork_child(barrier_party, &a);
    CHECK_INT(barrier_party(&a), 0);
    CHECK_INT(reap(p1), 0);
    CHECK_INT(reap(p2), 0);
    CHECK_INT(atomic_load(&page[0]), 7); /* indices 0, 1 and 2 were all handed out */
    CHECK_INT(atomic_load(&page[2]), 5); /* one action per round */
    munmap(page, 4096);
    mp_barrier_free(b);
}

static int barrier_wait_child(void *p)
{
    int r = mp_barrier_wait(p, 10);
    return r == MP_EBROKEN ? 0 : 100 + (r < 0 ? -r % 100 : r);
}

static void test_barrier_timeout_abort_reset(void)
{
    mp_barrier_opts o = {.parties = 3};
    mp_barrier *b = mp_barrier_new(&o);
    pid_t p = fork_child(barrier_wait_child, b);
    for (int i = 0; i < 5000 && mp_barrier_n_waiting(b) < 1; i++)
        usleep(2000);
    CHECK_INT(mp_barrier_n_waiting(b), 1);
    double t0 = mpt_now();
    CHECK_ERR(mp_barrier_wait(b, 0.2), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 < 5);
    CHECK(mp_barrier_broken(b));
    CHECK_INT(reap(p), 0); /* the other party got MP_EBROKEN */
    CHECK_ERR(mp_barrier_wait(b, 0), MP_EBROKEN);
    CHECK_OK(mp_barrier_reset(b));
    CHECK(!mp_barrier_broken(b));

    /* reset while a party waits: it gets MP_EBROKEN, the barrier stays usable */
    p = fork_child(barrier_wait_child, b);
    for (int i = 0; i < 5000 && mp_barrier_n_waiting(b) < 1; i++)
        usleep(2000);
    CHECK_INT(mp_barrier_n_waiting(b), 1);
    CHECK_OK(mp_barrier_reset(b));
    CHECK_INT(reap(p), 0);
    CHECK(!mp_barrier_broken(b));
    CHECK_INT(mp_barrier_n_waiting(b), 0);
    mp_barrier_free(b);

    /* wait_limit bounds a wait with a negative timeout (Python's Barrier(timeout=)) */
    b = mp_barrier_new(&(mp_barrier_opts){.parties = 2, .wait_limit = 0.2});
    t0 = mpt_now();
    CHECK_ERR(mp_barrier_wait(b, -1), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 < 5);
    CHECK(mp_barrier_broken(b));
    mp_barrier_free(b);
    b = mp_barrier_new(&o);

    /* abort breaks the waiting party and later ones */
    p = fork_child(barrier_wait_child, b);
    for (int i = 0; i < 5000 && mp_barrier_n_waiting(b) < 1; i++)
        usleep(2000);
    CHECK_INT(mp_barrier_n_waiting(b), 1);
    CHECK_OK(mp_barrier_abort(b));
    CHECK_INT(reap(p), 0);
    CHECK(mp_barrier_broken(b));
    CHECK_ERR(mp_barrier_wait(b, 1), MP_EBROKEN);
    CHECK_CONTAINS(mp_last_error(), "aborted");
    mp_barrier_free(b);

    /* parties = 1: never waits */
    mp_barrier_opts one = {.parties = 1};
    b = mp_barrier_new(&one);
    CHECK_INT(mp_barrier_wait(b, -1), 0);
    mp_barrier_free(b);
}

static int failing_action(void *arg)
{
    (void)arg;
    return 7;
}

static void test_barrier_action_fails(void)
{
    mp_barrier_opts o = {.parties = 2, .action = failing_action};
    mp_barrier *b = mp_barrier_new(&o);
    pid_t p = fork_child(barrier_wait_child, b);
    int r = mp_barrier_wait(b, 10);
    CHECK_INT(r, MP_EBROKEN);
    CHECK_INT(reap(p), 0);
    CHECK(mp_barrier_broken(b));
    mp_barrier_free(b);
}

static int barrier_wait_forever_child(void *p)
{
    mp_barrier_wait(p, -1);
    pause();
    return 0;
}

static void test_barrier_party_dies_while_waiting(void)
{
    mp_barrier_opts o = {.parties = 3};
    mp_barrier *b = mp_barrier_new(&o);
    pid_t victim = fork_child(barrier_wait_forever_child, b);
    pid_t other = fork_child(barrier_wait_child, b);
    for (int i = 0; i < 5000 && mp_barrier_n_waiting(b) < 2; i++)
        usleep(2000);
    pid_t killer = fork();
    if (killer == 0) { /* kill the victim asleep in its wait */
        mpt_wait_blocked(victim, 0, "futex", 10);
        kill(victim, SIGKILL);
        _exit(0);
    }
    reap(killer);
    reap(victim);
    CHECK_INT(reap(other), 0); /* the other waiter saw the death: MP_EBROKEN */
    CHECK(mp_barrier_broken(b));
    CHECK_ERR(mp_barrier_wait(b, 1), MP_EBROKEN);
    CHECK_CONTAINS(mp_last_error(), "died");
    mp_barrier_free(b);
}

static void *roundtrip(const mp_kind *kind, void *obj);

/* The child imports the barrier as Process would (so it counts as a participant). */
static int barrier_one_round_then_hang(void *p)
{
    mp_barrier *mine = roundtrip(&mp_kind_barrier, p);
    if (!mine || mp_barrier_wait(mine, 10) < 0)
        return 1;
    pause();
    return 0;
}

/* A participant that took part in round 1 and is killed before round 2 breaks
 * round 2. */
static void test_barrier_party_dies_before_arriving(void)
{
    mp_barrier_opts o = {.parties = 2};
    mp_barrier *b = mp_barrier_new(&o);
    pid_t p = fork_child(barrier_one_round_then_hang, b);
    CHECK(mp_barrier_wait(b, 10) >= 0);
    CHECK_OK(mpt_wait_blocked(p, 0, "pause", 10)); /* round 1 over for it too */
    kill_and_reap(p);
    double t0 = mpt_now();
    CHECK_ERR(mp_barrier_wait(b, 10), MP_EBROKEN);
    CHECK(mpt_now() - t0 < 3);
    CHECK_CONTAINS(mp_last_error(), "died");
    mp_barrier_free(b);
}

static int barrier_wait_once(void *p) { return mp_barrier_wait(p, 10) >= 0 ? 0 : 1; }

static int barrier_import_and_leave(void *p)
{
    mp_barrier *mine = roundtrip(&mp_kind_barrier, p);
    return mine ? 0 : 1; /* leaves without freeing it: a participant gone */
}

/* A reset forgets the participants that died before it: the kill-storm pattern (a
 * party dies, the survivors leave, reset, new parties) must work again after it. On the
 * old code the dead participants stayed on record and broke every later wait that
 * lasted a slice (seen as a rare test_kill_storm_barrier failure under TSan). */
static void test_barrier_reset_forgets_the_dead(void)
{
    mp_barrier_opts o = {.parties = 2};
    mp_barrier *b = mp_barrier_new(&o);
    /* As in a storm: the barrier breaks (here: abort), a party leaves, then reset. */
    CHECK_OK(mp_barrier_abort(b));
    CHECK_INT(reap(fork_child(barrier_import_and_leave, b)), 0);
    CHECK_OK(mp_barrier_reset(b));
    /* A wait alone now lasts several slices and ends by its own timeout, not by an old death. */
    CHECK_ERR(mp_barrier_wait(b, 0.35), MP_ETIMEOUT);
    CHECK_OK(mp_barrier_reset(b));
    pid_t p = fork_child(barrier_wait_once, b);
    CHECK(mp_barrier_wait(b, 10) >= 0);
    CHECK_INT(reap(p), 0);
    CHECK(!mp_barrier_broken(b));
    mp_barrier_free(b);
}

/* A participant whose pid now names another live process (the pid was reused after it
 * died) is a dead party: parties are named by pid + start time. Simulated on the
 * creator's own record: its start time is changed, so its pid stands for a process that
 * is gone while a live one (this test) has it. On the old code (pid only) the wait
 * slept to its timeout. */
static void test_barrier_reused_pid_is_dead(void)
{
    mp_barrier_opts o = {.parties = 2};
    mp_barrier *b = mp_barrier_new(&o);
    void *data = NULL;
    size_t len = 0, nfds = 0;
    int fds[MP_KIND_MAX_FDS];
    CHECK_OK(mp_kind_barrier.export_obj(b, &data, &len, fds, &nfds));
    struct stat st;
    CHECK(fstat(fds[0], &st) == 0);
    char *seg = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
    CHECK(seg != MAP_FAILED);
    /* our participant record: {pid, handles 1, start} */
    mp__procid me = mp__procid_self();
    struct { int32_t pid; uint32_t handles; uint64_t start; } rec = {me.pid, 1, me.start};
    char *at = memmem(seg, (size_t)st.st_size, &rec, sizeof rec);
    CHECK(at != NULL && me.start != 0);
    if (at) {
        uint64_t other = me.start + 1;
        memcpy(at + 8, &other, 8);
        double t0 = mpt_now();
        CHECK_ERR(mp_barrier_wait(b, 10), MP_EBROKEN);
        CHECK(mpt_now() - t0 < 3);
        CHECK_CONTAINS(mp_last_error(), "died");
        memcpy(at + 8, &me.start, 8); /* so free finds its own record */
    }
    munmap(seg, (size_t)st.st_size);
    free(data);
    mp_barrier_free(b);
}


/* Fork children using the inherited handle and leaving with _exit are not mistaken for
 * dead parties in later rounds. */
static void test_barrier_fork_children_in_sequence(void)
{
    mp_barrier_opts o = {.parties = 2};
    mp_barrier *b = mp_barrier_new(&o);
    for (int round = 0; round < 3; round++) {
        pid_t p = fork_child(barrier_wait_once, b);
        CHECK(mp_barrier_wait(b, 10) >= 0);
        CHECK_INT(reap(p), 0);
    }
    CHECK(!mp_barrier_broken(b));
    mp_barrier_free(b);
}

/* ---- handles through the kinds (what Process uses under spawn/forkserver) ----------- */

static void *roundtrip(const mp_kind *kind, void *obj)
{
    void *data = NULL;
    size_t len = 0, nfds = 0;
    int fds[MP_KIND_MAX_FDS];
    if (kind->export_obj(obj, &data, &len, fds, &nfds) < 0)
        return NULL;
    for (size_t i = 0; i < nfds; i++)
        fds[i] = dup(fds[i]); /* import adopts its fds */
    void *out = NULL;
    int r = kind->import_obj(data, len, fds, nfds, &out);
    free(data);
    return r < 0 ? NULL : out;
}

/* A lock handle is a segment fd and an offset, both from the peer: an offset the lock's
 * words cannot be aligned at is refused, even where the magic number is found
 * (fuzz/corpus/value/crash-lock-misaligned-offset: UBSan's misaligned access). */
static void test_lock_handle_misaligned(void)
{
    int fd = memfd_create("lock", MFD_CLOEXEC);
    CHECK(fd >= 0 && ftruncate(fd, 4096) == 0);
    uint32_t wire[2] = {MP__LOCK_MAGIC, 0x7a};
    off_t at = 0x7a + offsetof(mp__lock_sh, magic); /* the magic where the offset points */
    CHECK(pwrite(fd, &wire[0], 4, at) == 4);
    void *obj = NULL;
    CHECK_ERR(mp_kind_lock.import_obj(wire, sizeof wire, &fd, 1, &obj), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "lock handle: bad description");
    if (obj)
        mp_kind_lock.release_obj(obj);
    /* fd was closed either way: the leak check at exit tells */
}

static void test_kinds_roundtrip(void)
{
    CHECK(mp_kind_find("lock") == &mp_kind_lock);
    CHECK(mp_kind_find("semaphore") == &mp_kind_semaphore);
    CHECK(mp_kind_find("event") == &mp_kind_event);
    CHECK(mp_kind_find("condition") == &mp_kind_condition);
    CHECK(mp_kind_find("barrier") == &mp_kind_barrier);

    mp_lock *l = mp_rlock_new();
    mp_lock *l2 = roundtrip(&mp_kind_lock, l);
    CHECK(l2 != NULL && mp_lock_is_recursive(l2));
    CHECK_OK(mp_lock_acquire(l2, 0));
    CHECK(mp_lock_is_locked(l));
    CHECK_OK(mp_lock_release(l2));
    mp_kind_lock.release_obj(l2);

    mp_semaphore *s = mp_bounded_semaphore_new(1);
    mp_semaphore *s2 = roundtrip(&mp_kind_semaphore, s);
    CHECK_OK(mp_semaphore_acquire(s2, 0));
    CHECK_INT(mp_semaphore_value(s), 0);
    CHECK_OK(mp_semaphore_release(s));
    CHECK_ERR(mp_semaphore_release(s2), MP_ERANGE);
    mp_kind_semaphore.release_obj(s2);

    mp_event *e = mp_event_new();
    mp_event *e2 = roundtrip(&mp_kind_event, e);
    CHECK_OK(mp_event_set(e2));
    CHECK(mp_event_is_set(e));
    mp_kind_event.release_obj(e2);
    /* a semaphore description does not import as an event */
    CHECK(roundtrip(&mp_kind_event, s) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EPROTO);

    mp_condition *c = mp_condition_new(l);
    mp_condition *c2 = roundtrip(&mp_kind_condition, c);
    CHECK_OK(mp_condition_acquire(c2, 0));
    CHECK(mp_lock_is_locked(l));
    CHECK_OK(mp_condition_release(c2));
    mp_kind_condition.release_obj(c2);

    mp_barrier_opts o = {.parties = 2};
    mp_barrier *b = mp_barrier_new(&o);
    mp_barrier *b2 = roundtrip(&mp_kind_barrier, b);
    CHECK_INT(mp_barrier_parties(b2), 2);
    mp_kind_barrier.release_obj(b2);

    mp_condition_free(c);
    mp_lock_free(l);
    mp_semaphore_free(s);
    mp_event_free(e);
    mp_barrier_free(b);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_lock_basic);
    RUN_IF(argc, argv, test_lock_release_by_other_thread);
    RUN_IF(argc, argv, test_lock_mutual_exclusion);
    RUN_IF(argc, argv, test_lock_owner_dies);
    RUN_IF(argc, argv, test_rlock_owner_dies);
    RUN_IF(argc, argv, test_lock_waiter_woken_when_owner_dies);
    RUN_IF(argc, argv, test_lock_kill_holders_in_a_loop);
    RUN_IF(argc, argv, test_rlock);
    RUN_IF(argc, argv, test_semaphore_basic);
    RUN_IF(argc, argv, test_semaphore_limits_concurrency);
    RUN_IF(argc, argv, test_semaphore_wakes_waiter);
    RUN_IF(argc, argv, test_event);
    RUN_IF(argc, argv, test_condition_errors_and_timeout);
    RUN_IF(argc, argv, test_condition_notify_one_then_all);
    RUN_IF(argc, argv, test_condition_wait_for);
    RUN_IF(argc, argv, test_condition_lock_holder_dies);
    RUN_IF(argc, argv, test_condition_notifier_dies);
    RUN_IF(argc, argv, test_barrier_basic);
    RUN_IF(argc, argv, test_barrier_timeout_abort_reset);
    RUN_IF(argc, argv, test_barrier_action_fails);
    RUN_IF(argc, argv, test_barrier_party_dies_while_waiting);
    RUN_IF(argc, argv, test_barrier_party_dies_before_arriving);
    RUN_IF(argc, argv, test_barrier_reused_pid_is_dead);
    RUN_IF(argc, argv, test_barrier_reset_forgets_the_dead);
    RUN_IF(argc, argv, test_barrier_fork_children_in_sequence);
    RUN_IF(argc, argv, test_kinds_roundtrip);
    RUN_IF(argc, argv, test_lock_handle_misaligned);
    return mpt_done();
}
