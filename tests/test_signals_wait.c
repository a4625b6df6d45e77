/* Signals and the library's blocking calls: a deferred handler runs before every call
 * sleeps and a signal during the sleep wakes it (Python runs a pending handler before and
 * after every blocking call). For each blocking call:
 * - a signal raised before the call: the handler runs at once; a handler that asks to
 *   stop ends the call (MP_EINTERRUPTED), one that returns 0 lets it wait on;
 * - a signal sent while it sleeps (observed asleep in the kernel, no sleeps): the same;
 * - no signal: the call times out and no handler runs.
 * (Connection send and receive have no timeout: a handler that returns 0 is shown to let
 * a receive go on by sending it the message it waits for.)
 * And a program blocked on a queue handles every one of 12 SIGTERMs, each sent as soon as
 * the previous one was handled. */
#include "test_util.h"
#include "multiproc.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/syscall.h>

/* ---- handlers ------------------------------------------------------------------- */

static atomic_int calls;

static int stop_handler(int signum, void *arg)
{
    (void)signum;
    (void)arg;
    atomic_fetch_add(&calls, 1);
    return 1; /* Python: raise in the handler */
}

static int count_handler(int signum, void *arg)
{
    (void)signum;
    (void)arg;
    atomic_fetch_add(&calls, 1);
    return 0;
}

static void install(mp_signal_handler fn)
{
    atomic_store(&calls, 0);
    CHECK_OK(mp_signal_set_handler(SIGUSR1, fn, NULL));
}

/* A child that waits until our thread `tid` sleeps in the kernel in a wait whose wchan
 * contains `in`, then sends SIGUSR1 to this process. Reaped by reap_signaller. */
static pid_t signaller(pid_t tid, const char *in)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid == 0) {
        int ok = mpt_wait_blocked(parent, tid, in, 20) == 0;
        kill(parent, SIGUSR1);
        _exit(ok ? 0 : 1);
    }
    CHECK(pid > 0);
    return pid;
}

static void reap_signaller(pid_t pid)
{
    int st = -1;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0); /* it saw the call asleep */
}

/* ---- the blocking calls ---------------------------------------------------------- */

typedef struct blocker {
    const char *name;
    const char *wchan;          /* where it sleeps: "futex" or "poll" */
    void (*setup)(void);
    int (*call)(double timeout); /* the blocking call */
    int timeout_code;           /* what it returns when its timeout passes */
    void (*teardown)(void);
} blocker;

static mp_queue *q;
static mp_event *ev;
static mp_lock *lk;
static mp_condition *cv;
static mp_semaphore *sem;
static mp_barrier *bar;
static mp_popen *pop;
static mp_process *proc;
static mp_connection *ca, *cb;
static mp_listener *lis;
static pid_t holder;
static int holder_pipe[2];

static void q_setup(void)
{
    mp_queue_opts o = {.maxsize = 1};
    CHECK_NEW(q, mp_queue_new(&o));
}
static int q_get(double t)
{
    mp_value *v = NULL;
    int r = mp_queue_get(q, &v, t);
    mp_value_free(v);
    return r;
}
static void q_teardown(void) { mp_queue_free(q); }

static void qfull_setup(void)
{
    q_setup();
    mp_value *v = mp_value_int(1);
    CHECK_OK(mp_queue_put(q, v, 0));
    mp_value_free(v);
}
static int q_put(double t)
{
    mp_value *v = mp_value_int(2);
    int r = mp_queue_put(q, v, t);
    mp_value_free(v);
    return r;
}

static void ev_setup(void) { CHECK_NEW(ev, mp_event_new()); }
static int ev_wait(double t) { return mp_event_wait(ev, t); }
static void ev_teardown(void) { mp_event_free(ev); }

/* The lock is held by another process until we close holder_pipe[1]. */
static void lk_setup(void)
{
    CHECK_NEW(lk, mp_lock_new());
    int ready[2];
    CHECK_INT(pipe(ready), 0);
    CHECK_INT(pipe(holder_pipe), 0);
    holder = fork();
    if (holder == 0) {
        char c = 'x';
        close(ready[0]);
        close(holder_pipe[1]);
        if (mp_lock_acquire(lk, -1) != 0 || write(ready[1], &c, 1) != 1)
            _exit(1);
        while (read(holder_pipe[0], &c, 1) < 0 && errno == EINTR)
            ; /* EOF: the test is done */
        mp_lock_release(lk);
        _exit(0);
    }
    close(ready[1]);
    close(holder_pipe[0]);
    char c;
    CHECK_INT(read(ready[0], &c, 1), 1);
    close(ready[0]);
}
static int lk_acquire(double t)
{
    int r = mp_lock_acquire(lk, t);
    if (r == 0)
        mp_lock_release(lk);
    return r;
}
static void lk_teardown(void)
{
    close(holder_pipe[1]);
    int st;
    while (waitpid(holder, &st, 0) < 0 && errno == EINTR)
        ;
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    mp_lock_free(lk);
}

static void cv_setup(void)
{
    CHECK_NEW(cv, mp_condition_new(NULL));
    CHECK_OK(mp_condition_acquire(cv, -1));
}
static int cv_wait(double t) { return mp_condition_wait(cv, t); }
static void cv_teardown(void)
{
    CHECK_OK(mp_condition_release(cv));
    mp_condition_free(cv);
}

static void sem_setup(void) { CHECK_NEW(sem, mp_semaphore_new(0)); }
static int sem_acquire(double t) { return mp_semaphore_acquire(sem, t); }
static void sem_teardown(void) { mp_semaphore_free(sem); }

static void bar_setup(void)
{
    mp_barrier_opts o = {.parties = 2};
    CHECK_NEW(bar, mp_barrier_new(&o));
}
static int bar_wait(double t) { return mp_barrier_wait(bar, t); }
static void bar_teardown(void) { mp_barrier_free(bar); }

static void none(void) {}
static int run_sleep(double t)
{
    const char *argv[] = {"sleep", "60", NULL};
    mp_subprocess_opts o = {.time_limit = t};
    mp_run_result res;
    memset(&res, 0, sizeof res);
    int r = mp_run(argv, &o, &res);
    mp_run_result_free(&res);
    return r;
}

static void pop_setup(void)
{
    const char *argv[] = {"sleep", "60", NULL};
    mp_subprocess_opts o = {.capture_output = true};
    CHECK_NEW(pop, mp_popen_start(argv, &o));
}
static int pop_communicate(double t) { return mp_popen_communicate(pop, NULL, 0, t, NULL); }
static int pop_wait(double t) { return mp_popen_wait(pop, t, NULL); }
static void pop_teardown(void)
{
    CHECK_OK(mp_popen_kill(pop));
    CHECK_OK(mp_popen_wait(pop, -1, NULL));
    mp_popen_free(pop);
}

static int sleeper(mp_value *args)
{
    (void)args;
    for (;;)
        pause();
    return 0;
}
static void proc_setup(void)
{
    mp_process_opts o = {.target = sleeper};
    CHECK_NEW(proc, mp_process_new(&o));
    CHECK_OK(mp_process_start(proc));
}
static int proc_join(double t) { return mp_process_join(proc, t); }
static void proc_teardown(void)
{
    CHECK_OK(mp_process_kill(proc));
    CHECK_OK(mp_process_join(proc, -1));
    mp_process_free(proc);
}

static void conn_setup(void) { CHECK_OK(mp_pipe(true, &ca, &cb)); }
/* recv has no timeout: it waits forever (the scenarios with a timeout skip it). */
static int conn_recv(double t)
{
    (void)t;
    void *buf = NULL;
    size_t len = 0;
    int r = mp_connection_recv_bytes(ca, 0, &buf, &len);
    free(buf);
    return r;
}
static void conn_teardown(void)
{
    mp_connection_free(ca);
    mp_connection_free(cb);
}

/* The peer reads nothing and the socket buffer is full: a send waits for room. */
static void conn_full_setup(void)
{
    conn_setup();
    int fd = mp_connection_fileno(ca);
    int fl = fcntl(fd, F_GETFL);
    CHECK_INT(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
    static char junk[65536];
    while (write(fd, junk, sizeof junk) > 0)
        ;
    CHECK_INT(errno, EAGAIN);
    CHECK_INT(fcntl(fd, F_SETFL, fl), 0);
}
static int conn_send(double t)
{
    (void)t;
    return mp_connection_send_bytes(ca, "hi", 0, 2);
}

static int wait_conn(double t)
{
    mp_waitable w[1] = {mp_wait_conn(ca)};
    int r = mp_wait(w, 1, t);
    return r == 0 ? MP_ETIMEOUT : r; /* 0 ready: the timeout passed */
}

static void lis_setup(void) { CHECK_NEW(lis, mp_listener_new(NULL)); }
static int lis_accept(double t)
{
    mp_connection *c = NULL;
    int r = mp_listener_accept(lis, t, &c);
    mp_connection_free(c);
    return r;
}
static void lis_teardown(void) { mp_listener_free(lis); }

static const blocker blockers[] = {
    {"queue get (empty)", "futex", q_setup, q_get, MP_EEMPTY, q_teardown},
    {"queue put (full)", "futex", qfull_setup, q_put, MP_EFULL, q_teardown},
    {"event wait", "futex", ev_setup, ev_wait, MP_ETIMEOUT, ev_teardown},
    {"lock acquire (held by another process)", "futex", lk_setup, lk_acquire, MP_ETIMEOUT,
     lk_teardown},
    {"condition wait", "futex", cv_setup, cv_wait, MP_ETIMEOUT, cv_teardown},
    {"semaphore acquire", "futex", sem_setup, sem_acquire, MP_ETIMEOUT, sem_teardown},
    {"barrier wait", "futex", bar_setup, bar_wait, MP_ETIMEOUT, bar_teardown},
    {"mp_run (sleep 60)", "poll", none, run_sleep, MP_ETIMEOUT, none},
    {"popen communicate", "poll", pop_setup, pop_communicate, MP_ETIMEOUT, pop_teardown},
    {"popen wait", "poll", pop_setup, pop_wait, MP_ETIMEOUT, pop_teardown},
    {"process join", "poll", proc_setup, proc_join, MP_ETIMEOUT, proc_teardown},
    {"connection recv", "poll", conn_setup, conn_recv, 0, conn_teardown},
    {"connection send (full)", "poll", conn_full_setup, conn_send, 0, conn_teardown},
    {"mp_wait (a silent connection)", "poll", conn_setup, wait_conn, MP_ETIMEOUT, conn_teardown},
    {"listener accept", "poll", lis_setup, lis_accept, MP_ETIMEOUT, lis_teardown},
};

/* ---- the scenarios ------------------------------------------------------------- */

#define FOR_EACH_BLOCKER(b)                                                              \
    for (const blocker *b = blockers; b < blockers + MP__N_BLOCKERS; b++)
#define MP__N_BLOCKERS (sizeof blockers / sizeof blockers[0])

static void report(const blocker *b, const char *scenario, int r, int want, double dt)
{
    if (r != want)
        fprintf(stderr, "  %s, %s: returned %s (%d), expected %s; %.2f s; %s\n", b->name,
                scenario, mp_errname(r), r, mp_errname(want), dt, mp_last_error());
}

/* Raised before the call, handler asks to stop: MP_EINTERRUPTED at once. */
static void test_raised_before_stops(void)
{
    FOR_EACH_BLOCKER(b)
    {
        b->setup();
        install(stop_handler);
        CHECK_OK(mp_signal_raise(SIGUSR1));
        double t0 = mpt_now();
        int r = b->call(30);
        double dt = mpt_now() - t0;
        report(b, "raised before (stop)", r, MP_EINTERRUPTED, dt);
        CHECK_INT(r, MP_EINTERRUPTED);
        CHECK_INT(calls, 1);
        CHECK(dt < 5);
        b->teardown();
    }
    CHECK_OK(mp_signal_set_default(SIGUSR1));
}

/* Raised before the call, handler returns 0: it ran, and the call waited on to its
 * timeout (Python: the handler runs, the wait resumes with the time left). */
static void test_raised_before_resumes(void)
{
    FOR_EACH_BLOCKER(b)
    {
        if (b->timeout_code == 0)
            continue; /* no timeout to wait out: see test_recv_handler_resumes */
        b->setup();
        install(count_handler);
        CHECK_OK(mp_signal_raise(SIGUSR1));
        double t0 = mpt_now();
        int r = b->call(0.3);
        double dt = mpt_now() - t0;
        report(b, "raised before (resume)", r, b->timeout_code, dt);
        CHECK_INT(r, b->timeout_code);
        CHECK_INT(calls, 1);
        CHECK(dt >= 0.25 && dt < 10);
        b->teardown();
    }
    CHECK_OK(mp_signal_set_default(SIGUSR1));
}

/* Sent while the call sleeps: it wakes, the handler runs and stops it. */
static void test_during_sleep_stops(void)
{
    FOR_EACH_BLOCKER(b)
    {
        b->setup();
        install(stop_handler);
        pid_t s = signaller(0, b->wchan);
        double t0 = mpt_now();
        int r = b->call(30);
        double dt = mpt_now() - t0;
        report(b, "during the sleep (stop)", r, MP_EINTERRUPTED, dt);
        CHECK_INT(r, MP_EINTERRUPTED);
        CHECK_INT(calls, 1);
        CHECK(dt < 10);
        reap_signaller(s);
        b->teardown();
    }
    CHECK_OK(mp_signal_set_default(SIGUSR1));
}

/* No signal: the call times out, no handler runs. */
static void test_no_signal(void)
{
    FOR_EACH_BLOCKER(b)
    {
        if (b->timeout_code == 0)
            continue;
        b->setup();
        install(count_handler);
        double t0 = mpt_now();
        int r = b->call(0.2);
        double dt = mpt_now() - t0;
        report(b, "no signal", r, b->timeout_code, dt);
        CHECK_INT(r, b->timeout_code);
        CHECK_INT(calls, 0);
        CHECK(dt >= 0.15);
        b->teardown();
    }
    CHECK_OK(mp_signal_set_default(SIGUSR1));
}

/* recv has no timeout: a handler that returns 0 (and here sends the message the recv
 * waits for) lets it go on and receive. Raised before the call, and while it sleeps. */
static int send_handler(int signum, void *arg)
{
    (void)signum;
    atomic_fetch_add(&calls, 1);
    return mp_connection_send_bytes(arg, "hi", 0, 2) == 0 ? 0 : 1;
}

static void test_recv_handler_resumes(void)
{
    for (int during = 0; during < 2; during++) {
        conn_setup();
        atomic_store(&calls, 0);
        CHECK_OK(mp_signal_set_handler(SIGUSR1, send_handler, cb));
        pid_t s = -1;
        if (during)
            s = signaller(0, "poll");
        else
            CHECK_OK(mp_signal_raise(SIGUSR1));
        void *buf = NULL;
        size_t len = 0;
        CHECK_OK(mp_connection_recv_bytes(ca, 0, &buf, &len));
        CHECK_INT(len, 2);
        CHECK(buf && memcmp(buf, "hi", 2) == 0);
        free(buf);
        CHECK_INT(calls, 1);
        if (s > 0)
            reap_signaller(s);
        conn_teardown();
        CHECK_OK(mp_signal_set_default(SIGUSR1));
    }
}

/* ---- another thread takes the signal ------------------------------------------- */

/* The signal is delivered to the main thread while a second thread sleeps in the call:
 * the sleeper wakes and runs the handler (no EINTR reaches it). */
static const blocker *thread_blocker;
static atomic_int thread_tid;
static int thread_result;

static void *thread_call(void *arg)
{
    (void)arg;
    atomic_store(&thread_tid, (int)syscall(SYS_gettid));
    thread_result = thread_blocker->call(30);
    return NULL;
}

static void test_other_thread_takes_the_signal(void)
{
    FOR_EACH_BLOCKER(b)
    {
        if (b->call == run_sleep || b->call == pop_communicate || b->call == cv_wait)
            continue; /* the condition is held by this thread; enough poll cases */
        b->setup();
        install(stop_handler);
        thread_blocker = b;
        atomic_store(&thread_tid, 0);
        pthread_t t;
        CHECK_INT(pthread_create(&t, NULL, thread_call, NULL), 0);
        while (atomic_load(&thread_tid) == 0)
            sched_yield();
        CHECK_INT(mpt_wait_blocked(getpid(), atomic_load(&thread_tid), b->wchan, 20), 0);
        /* raise() delivers to the calling (main) thread, which is not in a wait. */
        double t0 = mpt_now();
        CHECK_OK(mp_signal_raise(SIGUSR1));
        pthread_join(t, NULL);
        double dt = mpt_now() - t0;
        report(b, "signal on another thread", thread_result, MP_EINTERRUPTED, dt);
        CHECK_INT(thread_result, MP_EINTERRUPTED);
        CHECK_INT(calls, 1);
        CHECK(dt < 10);
        b->teardown();
    }
    CHECK_OK(mp_signal_set_default(SIGUSR1));
}

/* ---- prompt handling ------------------------------------------------------------ */

/* A signal during a futex sleep is handled at once, not when some slice ends: ROUNDS
 * signals, each sent (by a child) as soon as the call sleeps again after the previous
 * handler ran, and the time from each send to its handler, summed, stays far below what
 * sleeping in 0.1 s slices would give (0.05 s per signal on average: a lock acquire did
 * that while it slept inside glibc's mutex). The handler lets the call go on, except the
 * last, which stops it. */
enum { ROUNDS = 8 };
struct prompt {
    _Atomic int handled;
    double sent[ROUNDS], ran[ROUNDS];
};
static struct prompt *pr;

static int prompt_handler(int signum, void *arg)
{
    (void)signum;
    (void)arg;
    int k = atomic_load(&pr->handled);
    if (k < ROUNDS)
        pr->ran[k] = mpt_now();
    atomic_store(&pr->handled, k + 1);
    return k + 1 >= ROUNDS;
}

static void test_futex_waits_handle_promptly(void)
{
    pr = mmap(NULL, sizeof *pr, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(pr != MAP_FAILED);
    FOR_EACH_BLOCKER(b)
    {
        if (strcmp(b->wchan, "futex") != 0)
            continue;
        b->setup();
        memset(pr, 0, sizeof *pr);
        CHECK_OK(mp_signal_set_handler(SIGUSR1, prompt_handler, NULL));
        pid_t parent = getpid();
        pid_t pid = fork();
        if (pid == 0) {
            for (int k = 0; k < ROUNDS; k++) {
                double end = mpt_now() + 20;
                while (atomic_load(&pr->handled) < k && mpt_now() < end)
                    sched_yield();
                if (mpt_wait_blocked(parent, 0, "futex", 20) != 0)
                    _exit(1);
                pr->sent[k] = mpt_now();
                kill(parent, SIGUSR1);
            }
            _exit(0);
        }
        int r = b->call(30);
        double late = 0;
        for (int k = 0; k < ROUNDS; k++)
            late += pr->ran[k] - pr->sent[k];
        if (late >= 0.2)
            fprintf(stderr, "  %s: %d signals handled %.3f s after they were sent\n", b->name,
                    ROUNDS, late);
        CHECK_INT(r, MP_EINTERRUPTED);
        CHECK_INT(atomic_load(&pr->handled), ROUNDS);
        CHECK(late < 0.2);
        reap_signaller(pid);
        b->teardown();
    }
    CHECK_OK(mp_signal_set_default(SIGUSR1));
    munmap(pr, sizeof *pr);
}

/* ---- 12 SIGTERMs ----------------------------------------------------------------- */

static int ack_fd = -1;
static atomic_int terms;

static int term_handler(int signum, void *arg)
{
    (void)signum;
    (void)arg;
    int n = atomic_fetch_add(&terms, 1) + 1;
    char c = (char)n;
    if (write(ack_fd, &c, 1) != 1)
        return 1;
    return 0;
}

static void test_twelve_sigterms(void)
{
    enum { N = 12 };
    mp_queue *tq;
    CHECK_NEW(tq, mp_queue_new(NULL));
    int acks[2];
    CHECK_INT(pipe(acks), 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(acks[0]);
        ack_fd = acks[1];
        if (mp_signal_set_handler(SIGTERM, term_handler, NULL) != 0)
            _exit(100);
        char c = 0;
        if (write(ack_fd, &c, 1) != 1) /* ready */
            _exit(101);
        mp_value *v = NULL;
        int r;
        while ((r = mp_queue_get(tq, &v, 60)) != 0)
            if (r != MP_EINTERRUPTED)
                _exit(102);
        mp_value_free(v);
        _exit(atomic_load(&terms));
    }
    close(acks[1]);
    char c;
    CHECK_INT(read(acks[0], &c, 1), 1);
    int handled = 0;
    for (int i = 1; i <= N; i++) {
        CHECK_OK(mp_signal_send(pid, SIGTERM)); /* right after the previous was handled */
        struct pollfd p = {.fd = acks[0], .events = POLLIN};
        if (poll(&p, 1, 5000) != 1 || read(acks[0], &c, 1) != 1)
            break; /* not handled within 5 s: lost */
        CHECK_INT(c, i);
        handled = i;
    }
    CHECK_INT(handled, N);
    mp_value *stop = mp_value_int(0);
    CHECK_OK(mp_queue_put(tq, stop, -1));
    mp_value_free(stop);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    CHECK(WIFEXITED(st));
    CHECK_INT(WEXITSTATUS(st), N);
    close(acks[0]);
    mp_queue_free(tq);
}

int main(int argc, char **argv)
{
    /* The signals module's wake-up pipe lives as long as the process: not a leak. */
    CHECK(mp_signal_wakeup_fd() >= 0);
    lis_setup(); /* ... nor the resource tracker's connection, made for the first socket */
    lis_teardown();
    RUN_IF(argc, argv, test_raised_before_stops);
    RUN_IF(argc, argv, test_raised_before_resumes);
    RUN_IF(argc, argv, test_during_sleep_stops);
    RUN_IF(argc, argv, test_no_signal);
    RUN_IF(argc, argv, test_recv_handler_resumes);
    RUN_IF(argc, argv, test_other_thread_takes_the_signal);
    RUN_IF(argc, argv, test_futex_waits_handle_promptly);
    RUN_IF(argc, argv, test_twelve_sigterms);
    return mpt_done();
}
