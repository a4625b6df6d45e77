/* The rest of Python's signal surface: set_wakeup_fd with the caller's own fd,
 * siginterrupt, pause (without pause(2)'s lost-wake-up race), pthread_kill. */
#include "test_util.h"
#include "multiproc/signals.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/syscall.h>

static atomic_int calls;
static int count_calls(int signum, void *arg)
{
    (void)signum;
    (void)arg;
    atomic_fetch_add(&calls, 1);
    return 0;
}
static int stop_calls(int signum, void *arg)
{
    (void)signum;
    (void)arg;
    return 1;
}

static void test_set_wakeup_fd(void)
{
    int p[2];
    CHECK_OK(pipe2(p, O_NONBLOCK | O_CLOEXEC));
    CHECK_OK(mp_signal_set_handler(SIGUSR1, count_calls, NULL));
    int old = 99;
    CHECK_OK(mp_signal_set_wakeup_fd(p[1], &old));
    CHECK_INT(old, -1);
    atomic_store(&calls, 0);
    CHECK_OK(mp_signal_raise(SIGUSR1));
    unsigned char byte = 0;
    CHECK_INT(read(p[0], &byte, 1), 1);
    CHECK_INT(byte, SIGUSR1); /* the signal number, as Python writes it */
    CHECK_INT(mp_signal_dispatch(), 1);
    CHECK_INT(atomic_load(&calls), 1);
    CHECK_INT(read(p[0], &byte, 1), -1); /* dispatch left our fd alone; nothing more */
    CHECK_OK(mp_signal_set_wakeup_fd(-1, &old));
    CHECK_INT(old, p[1]);
    CHECK_OK(mp_signal_raise(SIGUSR1));
    CHECK_INT(read(p[0], &byte, 1), -1);
    CHECK_INT(errno, EAGAIN);
    CHECK_INT(mp_signal_dispatch(), 1);
    /* A blocking fd would hang the handler; a closed one is EBADF. */
    int b[2];
    CHECK_OK(pipe(b));
    CHECK_ERR(mp_signal_set_wakeup_fd(b[1], NULL), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "not non-blocking");
    close(b[0]);
    close(b[1]);
    CHECK_ERR(mp_signal_set_wakeup_fd(b[1], NULL), -EBADF);
    CHECK_OK(mp_signal_set_default(SIGUSR1));
    close(p[0]);
    close(p[1]);
}

/* The main thread's pending-signal bits as /proc shows them. */
static pid_t main_tid;
static unsigned long long thread_sigpnd(pid_t tid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/self/task/%d/status", (int)tid);
    FILE *f = fopen(path, "r");
    unsigned long long v = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "SigPnd:", 7) == 0)
            v = strtoull(line + 7, NULL, 16);
    if (f)
        fclose(f);
    return v;
}

/* Whether the thread sleeps in read(2) right now (/proc/.../syscall starts with 0). */
static int in_read(pid_t tid)
{
    char path[64], buf[64] = "";
    snprintf(path, sizeof path, "/proc/self/task/%d/syscall", (int)tid);
    FILE *f = fopen(path, "r");
    if (f && !fgets(buf, sizeof buf, f))
        buf[0] = 0;
    if (f)
        fclose(f);
    return strncmp(buf, "0 ", 2) == 0;
}

struct kicker {
    pthread_t target;
    int wfd;     /* write a byte here once the signal was taken (restart case), or -1 */
};

static void *kick(void *arg)
{
    struct kicker *k = arg;
    mp_signal_block(SIGUSR2); /* the signal is for the main thread only */
    while (!in_read(main_tid))
        sched_yield();
    mp_signal_pthread_kill(k->target, SIGUSR2);
    if (k->wfd >= 0) {
        while (thread_sigpnd(main_tid) & (1ULL << (SIGUSR2 - 1)))
            sched_yield(); /* until the kernel delivered it to the main thread */
        if (write(k->wfd, "x", 1) != 1)
            perror("write");
    }
    return NULL;
}

static ssize_t read_while_kicked(bool restart_case, char *c)
{
    int p[2];
    CHECK_OK(pipe2(p, O_CLOEXEC));
    struct kicker k = {pthread_self(), restart_case ? p[1] : -1};
    pthread_t t;
    pthread_create(&t, NULL, kick, &k);
    ssize_t r = read(p[0], c, 1);
    int e = errno;
    pthread_join(t, NULL);
    close(p[0]);
    close(p[1]);
    errno = e;
    return r;
}

static void test_siginterrupt_and_pthread_kill(void)
{
    main_tid = (pid_t)syscall(SYS_gettid);
    CHECK_OK(mp_signal_set_handler(SIGUSR2, count_calls, NULL));
    atomic_store(&calls, 0);
    char c = 0;
    /* Default: interrupting. read() fails with EINTR. */
    CHECK_INT(read_while_kicked(false, &c), -1);
    CHECK_INT(errno, EINTR);
    CHECK_INT(mp_signal_dispatch(), 1);
    /* siginterrupt(False): the read is restarted and gets the byte written after. */
    CHECK_OK(mp_signal_siginterrupt(SIGUSR2, false));
    struct sigaction sa;
    sigaction(SIGUSR2, NULL, &sa);
    CHECK(sa.sa_flags & SA_RESTART);
    CHECK_INT(read_while_kicked(true, &c), 1);
    CHECK_INT(c, 'x');
    CHECK_INT(mp_signal_dispatch(), 1); /* still recorded */
    CHECK_OK(mp_signal_siginterrupt(SIGUSR2, true));
    sigaction(SIGUSR2, NULL, &sa);
    CHECK(!(sa.sa_flags & SA_RESTART));
    CHECK_ERR(mp_signal_siginterrupt(SIGKILL, true), MP_EINVAL);
    CHECK_ERR(mp_signal_siginterrupt(0, true), MP_EINVAL);
    CHECK_OK(mp_signal_set_default(SIGUSR2));
    CHECK_OK(mp_signal_pthread_kill(pthread_self(), 0));
    CHECK_ERR(mp_signal_pthread_kill(pthread_self(), 4242), MP_EINVAL);
}

/* pthread_kill reaches exactly the thread named: it takes the signal with sigwait. */
static void *wait_usr1(void *arg)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    siginfo_t info;
    int *out = arg;
    out[0] = mp_signal_wait(&set, 20, &info);
    out[1] = (int)info.si_pid;
    return NULL;
}

static void test_pthread_kill_targets_thread(void)
{
    sigset_t set, old;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, &old); /* inherited by the thread */
    int got[2] = {0, 0};
    pthread_t t;
    pthread_create(&t, NULL, wait_usr1, got);
    CHECK_OK(mp_signal_pthread_kill(t, SIGUSR1));
    pthread_join(t, NULL);
    CHECK_INT(got[0], SIGUSR1);
    CHECK_INT(got[1], getpid());
    sigset_t pend;
    CHECK_OK(mp_signal_pending(&pend));
    CHECK(!sigismember(&pend, SIGUSR1)); /* not left for the main thread */
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void *send_usr1_to_process(void *arg)
{
    (void)arg;
    mp_signal_block(SIGUSR1);
    kill(getpid(), SIGUSR1); /* the main thread is the only one that takes it */
    return NULL;
}

static void test_pause(void)
{
    CHECK_OK(mp_signal_set_handler(SIGUSR1, count_calls, NULL));
    atomic_store(&calls, 0);
    pthread_t t;
    pthread_create(&t, NULL, send_usr1_to_process, NULL);
    CHECK_INT(mp_signal_pause(), 1); /* whether the signal came before or during */
    pthread_join(t, NULL);
    CHECK_INT(atomic_load(&calls), 1);
    /* Recorded but not dispatched yet: pause(2) would sleep forever here. */
    CHECK_OK(mp_signal_raise(SIGUSR1));
    CHECK_INT(mp_signal_pause(), 1);
    CHECK_OK(mp_signal_set_handler(SIGUSR1, stop_calls, NULL));
    CHECK_OK(mp_signal_raise(SIGUSR1));
    CHECK_ERR(mp_signal_pause(), MP_EINTERRUPTED);
    CHECK_OK(mp_signal_set_default(SIGUSR1));
}

int main(int argc, char **argv)
{
    mp_signal_wakeup_fd(); /* the library's pipe lives for the whole process: not a leak */
    RUN_IF(argc, argv, test_set_wakeup_fd);
    RUN_IF(argc, argv, test_siginterrupt_and_pthread_kill);
    RUN_IF(argc, argv, test_pthread_kill_targets_thread);
    RUN_IF(argc, argv, test_pause);
    return mpt_done();
}
