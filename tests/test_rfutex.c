/* The robust lock itself (src/sync/rfutex.c): a holder that dies at any point we can reach
 * hands the lock to the next locker with MP_EOWNERDEAD (a waiter blocked on it is woken by
 * the kernel at once), a thread that exits holding it counts as dead, its list entries
 * live in glibc's robust list next to glibc's own robust mutexes (unlinked in any order,
 * both recovered), mutual exclusion holds across forked processes over many cycles, and
 * timeouts and abandoned waits lose no wake-up. Run twice by ctest: as is, and with
 * MP_LOCK_PTHREAD=1 (the fallback, a robust pthread mutex); the checks of the futex
 * lock's internals (list_op_pending, glibc's list) only run in the first. */
#include "test_util.h"

#include "internal/common.h"
#include "internal/rfutex.h"

#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>

static void *shared_map(size_t n)
{
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(p != MAP_FAILED);
    memset(p, 0, n);
    return p;
}

static mp__rfutex *new_lock(void)
{
    mp__rfutex *l = shared_map(4096);
    CHECK_INT(mp__rf_init(l), 0);
    return l;
}

static void free_lock(mp__rfutex *l) { munmap(l, 4096); }

static void reap(pid_t pid, int want_sig)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (want_sig)
        CHECK(WIFSIGNALED(st) && WTERMSIG(st) == want_sig);
    else
        CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* A child that takes the lock, says so on the pipe, and sleeps until killed. */
static pid_t holder(mp__rfutex *l)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        int r = mp__rf_lock(l, -1, false);
        char c = r == 0 ? 'y' : 'n';
        if (write(p[1], &c, 1) != 1)
            _exit(2);
        for (;;)
            pause();
    }
    close(p[1]);
    char c = 0;
    CHECK(read(p[0], &c, 1) == 1 && c == 'y');
    close(p[0]);
    return pid;
}

/* A child that waits until our thread `tid` sleeps in a futex wait, then SIGKILLs victim. */
static pid_t killer(pid_t tid, pid_t victim)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        int ok = mpt_wait_blocked(parent, tid, "futex", 20) == 0;
        kill(victim, SIGKILL);
        _exit(ok ? 0 : 1);
    }
    return pid;
}

/* ---- a dead holder ----------------------------------------------------------------- */

/* The holder is SIGKILLed while we sleep on the lock: the kernel wakes us and we get it
 * with MP_EOWNERDEAD; it is consistent at once (the next lock is a plain 0). Waiting
 * without signals, with signals (no handler: one futex word), and with a handler
 * installed (futex_waitv on the word and the signal sequence). */
static void waiter_gets_owner_dead(bool signals)
{
    mp__rfutex *l = new_lock();
    pid_t h = holder(l);
    pid_t k = killer(0, h);
    double t0 = mpt_now();
    int r = mp__rf_lock(l, mpt_now() + 30, signals);
    CHECK_INT(r, MP_EOWNERDEAD);
    CHECK(mpt_now() - t0 < 20);
    reap(k, 0);
    reap(h, SIGKILL);
    mp__rf_unlock(l);
    CHECK_INT(mp__rf_lock(l, -1, signals), 0);
    CHECK_INT(mp__rf_trylock(l), -EBUSY); /* ours: not recursive */
    mp__rf_unlock(l);
    CHECK_INT(mp__rf_trylock(l), 0);
    mp__rf_unlock(l);
    free_lock(l);
}

static int noop_handler(int signum, void *arg)
{
    (void)signum;
    (void)arg;
    return 0;
}

static void test_killed_holder_wakes_waiter(void)
{
    waiter_gets_owner_dead(false);
    waiter_gets_owner_dead(true);
}

/* Run after the others: the handler's wake-up pipe stays open. */
static void test_killed_holder_wakes_waiter_with_handler(void)
{
    CHECK_OK(mp_signal_set_handler(SIGUSR1, noop_handler, NULL));
    waiter_gets_owner_dead(true);
    waiter_gets_owner_dead(false);
    CHECK_OK(mp_signal_set_default(SIGUSR1));
}

/* Nobody waits when the holder dies: the next trylock and the next lock see it. */
static void test_killed_holder_then_trylock(void)
{
    mp__rfutex *l = new_lock();
    pid_t h = holder(l);
    CHECK_INT(mp__rf_trylock(l), -EBUSY);
    kill(h, SIGKILL);
    reap(h, SIGKILL);
    CHECK_INT(mp__rf_trylock(l), MP_EOWNERDEAD);
    mp__rf_unlock(l);
    CHECK_INT(mp__rf_trylock(l), 0);
    mp__rf_unlock(l);
    /* and through lock */
    h = holder(l);
    kill(h, SIGKILL);
    reap(h, SIGKILL);
    CHECK_INT(mp__rf_lock(l, -1, false), MP_EOWNERDEAD);
    mp__rf_unlock(l);
    free_lock(l);
}

/* A recoverer that dies before unlocking leaves the lock dead again: the next one gets
 * MP_EOWNERDEAD too (no "not recoverable" state). */
static void test_recoverer_dies_too(void)
{
    mp__rfutex *l = new_lock();
    pid_t h = holder(l);
    kill(h, SIGKILL);
    reap(h, SIGKILL);
    pid_t pid = fork();
    if (pid == 0) {
        int r = mp__rf_lock(l, -1, false);
        _exit(r == MP_EOWNERDEAD ? 0 : 1); /* exits holding it */
    }
    reap(pid, 0);
    CHECK_INT(mp__rf_lock(l, -1, false), MP_EOWNERDEAD);
    mp__rf_unlock(l);
    free_lock(l);
}

/* ---- threads ------------------------------------------------------------------------ */

static void *lock_and_return(void *arg)
{
    return (void *)(intptr_t)mp__rf_lock(arg, -1, false);
}

/* A thread (not a process) that returns holding the lock: the kernel processes its list
 * at its exit, so the next locker gets MP_EOWNERDEAD, in its own process too. */
static void test_thread_exits_holding(void)
{
    mp__rfutex *l = new_lock();
    pthread_t t;
    void *res = (void *)1;
    CHECK(pthread_create(&t, NULL, lock_and_return, l) == 0);
    CHECK(pthread_join(t, &res) == 0);
    CHECK_INT((int)(intptr_t)res, 0);
    CHECK_INT(mp__rf_trylock(l), MP_EOWNERDEAD);
    mp__rf_unlock(l);
    free_lock(l);
}

static int gate_pipe[2];
static atomic_int thread_holds;

static void *hold_until_told(void *arg)
{
    if (mp__rf_lock(arg, -1, false) != 0)
        return (void *)1;
    atomic_store(&thread_holds, 1);
    char c;
    if (read(gate_pipe[0], &c, 1) != 1)
        return (void *)2;
    return NULL; /* still holding the lock */
}

/* The same while the main thread sleeps on the lock: the thread's exit wakes it. A child
 * tells the thread to exit once it sees us asleep. */
static void test_thread_exit_wakes_waiter(void)
{
    mp__rfutex *l = new_lock();
    CHECK(pipe(gate_pipe) == 0);
    atomic_store(&thread_holds, 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, hold_until_told, l) == 0);
    while (!atomic_load(&thread_holds))
        sched_yield();
    pid_t pid = fork();
    if (pid == 0) {
        int ok = mpt_wait_blocked(getppid(), 0, "futex", 20) == 0;
        _exit(ok && write(gate_pipe[1], "g", 1) == 1 ? 0 : 1);
    }
    CHECK_INT(mp__rf_lock(l, mpt_now() + 30, true), MP_EOWNERDEAD);
    reap(pid, 0);
    void *res = (void *)1;
    CHECK(pthread_join(t, &res) == 0 && res == NULL);
    mp__rf_unlock(l);
    close(gate_pipe[0]);
    close(gate_pipe[1]);
    free_lock(l);
}

/* ---- many cycles across fork ---------------------------------------------------------- */

#define PROCS 3
#define CYCLES 20000

static void count_under_lock(mp__rfutex *l, volatile uint64_t *a, volatile uint64_t *b, int n)
{
    for (int i = 0; i < n; i++) {
        if (mp__rf_lock(l, -1, (i & 1) != 0) != 0)
            _exit(3);
        uint64_t v = *a;
        *a = v + 1;
        *b = *b + 1;
        mp__rf_unlock(l);
    }
}

/* PROCS forked processes and two threads of ours contend: no increment is lost (the
 * pair a, b moves together), and every child exits cleanly. Then fork while holding:
 * the child does not inherit the hold (its list is empty; the lock stays ours). */
static void *count_thread(void *arg)
{
    uint64_t *p = arg;
    count_under_lock((mp__rfutex *)(p + 2), p, p + 1, CYCLES);
    return NULL;
}

static void test_fork_cycles(void)
{
    char *m = shared_map(4096);
    uint64_t *p = (uint64_t *)m; /* a, b, then the lock */
    mp__rfutex *l = (mp__rfutex *)(p + 2);
    CHECK_INT(mp__rf_init(l), 0);
    pid_t kids[PROCS];
    for (int i = 0; i < PROCS; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            count_under_lock(l, p, p + 1, CYCLES);
            _exit(0);
        }
    }
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&t[i], NULL, count_thread, p) == 0);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    for (int i = 0; i < PROCS; i++)
        reap(kids[i], 0);
    CHECK_INT(p[0], (uint64_t)(PROCS + 2) * CYCLES);
    CHECK_INT(p[1], p[0]);

    /* fork while holding, many times: each child finds it held and takes it after we
     * release; our hold is not the child's */
    for (int i = 0; i < 50; i++) {
        CHECK_INT(mp__rf_lock(l, -1, false), 0);
        pid_t pid = fork();
        if (pid == 0) {
            int r = mp__rf_trylock(l);
            if (r != -EBUSY)
                _exit(1);
            r = mp__rf_lock(l, -1, false);
            _exit(r == 0 ? 0 : 2);
        }
        CHECK_INT(mpt_wait_blocked(pid, 0, "futex", 20), 0); /* past its trylock */
        mp__rf_unlock(l);
        reap(pid, 0); /* it exited holding l: dead */
        CHECK_INT(mp__rf_lock(l, -1, false), MP_EOWNERDEAD);
        mp__rf_unlock(l);
    }
    munmap(m, 4096);
}

/* ---- timeouts and abandoned waits --------------------------------------------------------- */

static void test_timeout(void)
{
    mp__rfutex *l = new_lock();
    pid_t h = holder(l);
    double t0 = mpt_now();
    CHECK_INT(mp__rf_lock(l, mpt_now() + 0.2, false), MP_ETIMEOUT);
    CHECK(mpt_now() - t0 >= 0.19);
    CHECK_INT(mp__rf_lock(l, mpt_now() + 0.1, true), MP_ETIMEOUT);
    CHECK_INT(mp__rf_lock(l, mpt_now() - 1, true), MP_ETIMEOUT);
    kill(h, SIGKILL);
    reap(h, SIGKILL);
    CHECK_INT(mp__rf_lock(l, mpt_now() + 0.1, true), MP_EOWNERDEAD);
    mp__rf_unlock(l);
    free_lock(l);
}

/* ---- the futex lock's internals --------------------------------------------------------- */

/* A child that takes the lock as the fast path does, but SIGKILLs itself at `point`
 * (1: after the CAS, before the entry is linked; 2: linked, list_op_pending still set;
 * 3: on unlock, unlinked, before the exchange; 4: after the exchange, before the wake).
 * It tells us on the pipe once it holds the lock (points 3 and 4 die only when told). */
static void die_at(mp__rfutex *l, int point, int tell)
{
    struct mp__rf_head *h = mp__rf_self.head;
    mp__rf_tid();
    uint32_t v = 0;
    mp__rf_pending(h, mp__rf_entry(l));
    if (!atomic_compare_exchange_strong(&l->f.word, &v, (uint32_t)mp__rf_self.tid))
        _exit(1);
    if (point == 1)
        raise(SIGKILL);
    mp__rf_enqueue(h, l, h->list);
    if (point == 2)
        raise(SIGKILL);
    mp__rf_pending(h, NULL);
    char c = 'y';
    if (write(tell, &c, 1) != 1 || read(tell, &c, 1) != 1) /* wait for the go */
        _exit(1);
    mp__rf_pending(h, mp__rf_entry(l));
    mp__rf_dequeue(l);
    if (point == 3)
        raise(SIGKILL);
    atomic_exchange(&l->f.word, 0);
    raise(SIGKILL); /* point 4: no wake, list_op_pending set */
}

static void test_death_at_each_point(void)
{
    if (!mp__rf_fast())
        return;
    for (int point = 1; point <= 4; point++) {
        mp__rfutex *l = new_lock();
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
        pid_t pid = fork();
        if (pid == 0) {
            close(sv[0]);
            die_at(l, point, sv[1]);
            _exit(1);
        }
        close(sv[1]);
        if (point <= 2) {
            reap(pid, SIGKILL);
            CHECK_INT(mp__rf_trylock(l), MP_EOWNERDEAD);
        } else {
            char c = 0;
            CHECK(read(sv[0], &c, 1) == 1);
            /* we sleep on the lock (FUTEX_WAITERS set), then the child unlocks and dies */
            pid_t k = fork();
            if (k == 0) {
                int ok = mpt_wait_blocked(getppid(), 0, "futex", 20) == 0;
                _exit(ok && write(sv[0], "g", 1) == 1 ? 0 : 1);
            }
            int r = mp__rf_lock(l, mpt_now() + 30, false);
            /* 3: it died holding the word; 4: the word was free, the kernel woke us */
            CHECK_INT(r, point == 3 ? MP_EOWNERDEAD : 0);
            reap(k, 0);
            reap(pid, SIGKILL);
        }
        close(sv[0]);
        mp__rf_unlock(l);
        CHECK_INT(mp__rf_trylock(l), 0);
        mp__rf_unlock(l);
        free_lock(l);
    }
}

/* A waiter keeps list_op_pending on the lock it waits for, for its whole sleep: if it is
 * killed after a wake-up meant for it, the kernel finds the lock free with that entry
 * pending and wakes another waiter (a kill storm lost such wake-ups). After the lock is
 * taken the previous value is back. Seen from the main thread on a waiting thread. */
struct pend_arg {
    mp__rfutex *l;
    bool signals;
    _Atomic(struct mp__rf_head *) head;
    _Atomic int tid, result;
};

static void *pend_waiter(void *arg)
{
    struct pend_arg *a = arg;
    mp__rf_tid();
    atomic_store(&a->tid, (int)syscall(SYS_gettid));
    atomic_store(&a->head, (struct mp__rf_head *)mp__rf_self.head);
    int r = mp__rf_lock(a->l, mpt_now() + 30, a->signals);
    struct mp__rf_head *h = mp__rf_self.head;
    if (r == 0 && h->list_op_pending != NULL)
        r = 99;
    mp__rf_unlock(a->l);
    if (r == 0 && h->list_op_pending != NULL)
        r = 98;
    atomic_store(&a->result, r);
    return NULL;
}

/* Another thread's list_op_pending, read while that thread sleeps in the kernel (a plain
 * field it writes without atomics: not a race in fact, but ThreadSanitizer cannot see the
 * sleep that orders it). noipa: IPA-SRA would move the load into the caller. */
__attribute__((noipa, no_sanitize_thread)) static void *pending_of(struct mp__rf_head *h)
{
    return h->list_op_pending;
}

static void test_waiter_keeps_pending(void)
{
    if (!mp__rf_fast())
        return;
    for (int signals = 0; signals < 2; signals++) {
        struct pend_arg a = {.l = new_lock(), .signals = signals};
        CHECK_INT(mp__rf_lock(a.l, -1, false), 0);
        pthread_t t;
        CHECK(pthread_create(&t, NULL, pend_waiter, &a) == 0);
        while (!atomic_load(&a.tid))
            sched_yield();
        CHECK_INT(mpt_wait_blocked(getpid(), atomic_load(&a.tid), "futex", 20), 0);
        struct mp__rf_head *h = atomic_load(&a.head);
        CHECK(h && pending_of(h) == (void *)mp__rf_entry(a.l));
        mp__rf_unlock(a.l);
        pthread_join(t, NULL);
        CHECK_INT(atomic_load(&a.result), 0);
        free_lock(a.l);
    }
}

/* The hole the protocol leaves: a waiter killed after its wake-up, while a newcomer takes
 * the free lock on the fast path (dropping FUTEX_WAITERS), leaves the other sleepers with
 * nobody to wake them. Here: W1 (a child waiting as lock_slow does) sleeps first, then our
 * thread W2; we release, which wakes W1 only; we take the lock again on the fast path, kill
 * W1 and release (no FUTEX_WAITERS: no wake). W2 must still get the lock (its recheck)
 * long before its 10 s limit. */
struct late_arg {
    mp__rfutex *l;
    _Atomic int tid, result;
    double took;
};

static void *late_waiter(void *arg)
{
    struct late_arg *a = arg;
    atomic_store(&a->tid, (int)syscall(SYS_gettid));
    double t0 = mpt_now();
    int r = mp__rf_lock(a->l, mpt_now() + 10, false);
    a->took = mpt_now() - t0;
    if (r == 0)
        mp__rf_unlock(a->l);
    atomic_store(&a->result, r);
    return NULL;
}

static void sim_waiter(mp__rfutex *l, int tell)
{
    mp__rf_tid();
    struct mp__rf_head *h = mp__rf_self.head;
    mp__rf_pending(h, mp__rf_entry(l));
    uint32_t v = atomic_load(&l->f.word);
    while (!(v & MP__RF_WAITERS) && !atomic_compare_exchange_weak(&l->f.word, &v, v | MP__RF_WAITERS))
        ;
    syscall(SYS_futex, &l->f.word, FUTEX_WAIT, v | MP__RF_WAITERS, NULL, NULL, 0);
    if (write(tell, "w", 1) != 1)
        _exit(1);
    for (;;)
        pause(); /* woken, not yet taking the lock: killed here */
}

static void test_killed_after_wakeup_newcomer(void)
{
    if (!mp__rf_fast())
        return;
    struct late_arg a = {.l = new_lock()};
    CHECK_INT(mp__rf_lock(a.l, -1, false), 0);
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t w1 = fork();
    if (w1 == 0) {
        close(p[0]);
        sim_waiter(a.l, p[1]);
    }
    close(p[1]);
    CHECK_INT(mpt_wait_blocked(w1, 0, "futex", 20), 0);
    pthread_t t;
    CHECK(pthread_create(&t, NULL, late_waiter, &a) == 0);
    while (!atomic_load(&a.tid))
        sched_yield();
    CHECK_INT(mpt_wait_blocked(getpid(), atomic_load(&a.tid), "futex", 20), 0);
    mp__rf_unlock(a.l); /* wakes W1, the first sleeper */
    char c = 0;
    CHECK(read(p[0], &c, 1) == 1 && c == 'w');
    int mine = mp__rf_trylock(a.l); /* the newcomer: 0 -> our tid, FUTEX_WAITERS gone */
    kill(w1, SIGKILL);
    reap(w1, SIGKILL);
    if (mine == 0)
        mp__rf_unlock(a.l); /* sees no FUTEX_WAITERS: wakes nobody */
    pthread_join(t, NULL);
    CHECK_INT(atomic_load(&a.result), 0);
    CHECK(a.took < 5);
    close(p[0]);
    free_lock(a.l);
}

/* Our entries share glibc's robust list with its own robust mutexes: held interleaved and
 * released out of order, then the holder dies: every one still held is recovered (ours
 * MP_EOWNERDEAD, glibc's EOWNERDEAD), the released ones are free. */
static void test_shares_glibc_list(void)
{
    char *m = shared_map(4096);
    pthread_mutex_t *g1 = (pthread_mutex_t *)m, *g2 = g1 + 1, *g3 = g1 + 2;
    mp__rfutex *r1 = (mp__rfutex *)(m + 1024), *r2 = r1 + 1, *r3 = r1 + 2;
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    CHECK(pthread_mutex_init(g1, &a) == 0 && pthread_mutex_init(g2, &a) == 0 &&
          pthread_mutex_init(g3, &a) == 0);
    pthread_mutexattr_destroy(&a);
    CHECK_INT(mp__rf_init(r1) | mp__rf_init(r2) | mp__rf_init(r3), 0);
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        bool ok = pthread_mutex_lock(g1) == 0 && mp__rf_lock(r1, -1, false) == 0 &&
                  pthread_mutex_lock(g2) == 0 && mp__rf_lock(r2, -1, false) == 0 &&
                  mp__rf_lock(r3, -1, false) == 0;
        pthread_mutex_unlock(g1); /* the oldest glibc entry */
        mp__rf_unlock(r2);        /* one of ours in the middle */
        ok = ok && pthread_mutex_lock(g3) == 0; /* linked at the head, before ours */
        mp__rf_unlock(r3);                       /* ours, next to glibc's */
        if (write(p[1], ok ? "y" : "n", 1) != 1)
            _exit(1);
        for (;;)
            pause(); /* holding r1, g2, g3 */
    }
    close(p[1]);
    char c = 0;
    CHECK(read(p[0], &c, 1) == 1 && c == 'y');
    close(p[0]);
    kill(pid, SIGKILL);
    reap(pid, SIGKILL);
    CHECK_INT(pthread_mutex_trylock(g1), 0);
    CHECK_INT(pthread_mutex_trylock(g2), EOWNERDEAD);
    CHECK_INT(pthread_mutex_trylock(g3), EOWNERDEAD);
    CHECK_INT(mp__rf_trylock(r1), MP_EOWNERDEAD);
    CHECK_INT(mp__rf_trylock(r2), 0);
    CHECK_INT(mp__rf_trylock(r3), 0);
    pthread_mutex_consistent(g2);
    pthread_mutex_consistent(g3);
    pthread_mutex_unlock(g1);
    pthread_mutex_unlock(g2);
    pthread_mutex_unlock(g3);
    mp__rf_unlock(r1);
    mp__rf_unlock(r2);
    mp__rf_unlock(r3);
    /* and ours and glibc's in one thread of this process, released in every order */
    for (int order = 0; order < 4; order++) {
        CHECK_INT(mp__rf_lock(r1, -1, false), 0);
        CHECK(pthread_mutex_lock(g1) == 0);
        CHECK_INT(mp__rf_lock(r2, -1, false), 0);
        if (order & 1) {
            pthread_mutex_unlock(g1);
            mp__rf_unlock(r1);
        } else {
            mp__rf_unlock(r1);
            pthread_mutex_unlock(g1);
        }
        if (order & 2)
            mp__rf_unlock(r2);
        else {
            CHECK_INT(mp__rf_trylock(r3), 0);
            mp__rf_unlock(r2);
            mp__rf_unlock(r3);
        }
    }
    struct mp__rf_head *h = mp__rf_self.head;
    if (mp__rf_fast())
        CHECK(h && h->list == (void *)h); /* our thread's list is empty again */
    munmap(m, 4096);
}

/* The kind in use is the one asked for. */
static void test_kind(void)
{
    const char *env = getenv("MP_LOCK_PTHREAD");
    bool forced = env && env[0] == '1';
    CHECK_INT(mp__rf_fast(), !forced);
}

int main(int argc, char **argv)
{
    printf("lock kind: %s\n", mp__rf_fast() ? "futex" : "pthread (fallback)");
    RUN_IF(argc, argv, test_kind);
    RUN_IF(argc, argv, test_killed_holder_wakes_waiter);
    RUN_IF(argc, argv, test_killed_holder_then_trylock);
    RUN_IF(argc, argv, test_recoverer_dies_too);
    RUN_IF(argc, argv, test_thread_exits_holding);
    RUN_IF(argc, argv, test_thread_exit_wakes_waiter);
    RUN_IF(argc, argv, test_fork_cycles);
    RUN_IF(argc, argv, test_timeout);
    RUN_IF(argc, argv, test_death_at_each_point);
    RUN_IF(argc, argv, test_waiter_keeps_pending);
    RUN_IF(argc, argv, test_killed_after_wakeup_newcomer);
    RUN_IF(argc, argv, test_shares_glibc_list);
    mp_signal_wakeup_fd(); /* opened once, outside the leak checks */
    RUN_IF(argc, argv, test_killed_holder_wakes_waiter_with_handler);
    return mpt_done();
}
