/* Signal benchmarks: multiproc's deferred handlers beside the raw-syscall floor.
 * Prints: case<TAB>unit<TAB>multiproc_rate<TAB>floor_rate (higher is better).
 *
 * signal_roundtrip: send SIGUSR1 to ourselves and wait until the handler has run.
 *   multiproc: kill() + mp_signal_dispatch() (the deferred handler runs there);
 *   floor: a sigaction handler setting a flag + kill() + check the flag.
 * signal_wakefd_loop: the event-loop path: kill(), poll() the wake-up fd, dispatch.
 *   floor: a sigaction handler writing a byte to a pipe, poll() and read() it. */
#define _GNU_SOURCE
#include <multiproc/signals.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SECONDS 0.3 /* per round; the best of ROUNDS alternating rounds counts */
#define ROUNDS 3

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Run `one` in batches for about SECONDS; the rate in calls per second. */
static double rate(void (*one)(void))
{
    for (int i = 0; i < 1000; i++) /* warm up */
        one();
    long n = 0;
    double t0 = now(), t;
    do {
        for (int i = 0; i < 1000; i++)
            one();
        n += 1000;
        t = now();
    } while (t - t0 < SECONDS);
    return (double)n / (t - t0);
}

/* ---- multiproc ------------------------------------------------------------------ */

static long mp_runs;

static int mp_handler(int signum, void *arg)
{
    (void)signum;
    (void)arg;
    mp_runs++;
    return 0;
}

static void mp_roundtrip(void)
{
    long before = mp_runs;
    kill(getpid(), SIGUSR1);
    while (mp_runs == before)
        mp_signal_dispatch();
}

static int mp_wake;

static void mp_wakefd(void)
{
    long before = mp_runs;
    kill(getpid(), SIGUSR1);
    while (mp_runs == before) {
        struct pollfd p = {.fd = mp_wake, .events = POLLIN};
        if (poll(&p, 1, -1) > 0 || errno == EINTR)
            mp_signal_dispatch();
    }
}

/* ---- floor ---------------------------------------------------------------------- */

static volatile sig_atomic_t raw_flag;
static int raw_pipe[2];

static void raw_flag_handler(int sig)
{
    (void)sig;
    raw_flag = 1;
}

static void raw_pipe_handler(int sig)
{
    int saved = errno;
    char b = (char)sig;
    if (write(raw_pipe[1], &b, 1) < 0) { /* full: the reader will wake anyway */
    }
    errno = saved;
}

static void raw_roundtrip(void)
{
    raw_flag = 0;
    kill(getpid(), SIGUSR2);
    while (!raw_flag)
        ;
}

static void raw_wakefd(void)
{
    kill(getpid(), SIGUSR2);
    char buf[64];
    for (;;) {
        struct pollfd p = {.fd = raw_pipe[0], .events = POLLIN};
        if (poll(&p, 1, -1) > 0 && read(raw_pipe[0], buf, sizeof buf) > 0)
            return;
    }
}

static void raw_install(void (*fn)(int))
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = fn;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR2, &sa, NULL);
}

/* The best of alternating rounds: the machine is shared, so take each side's best. */
static void compare(const char *name, void (*mp_one)(void), void (*raw_one)(void),
                    void (*raw_handler)(int))
{
    double mp = 0, floor = 0;
    for (int r = 0; r < ROUNDS; r++) {
        double a = rate(mp_one);
        raw_install(raw_handler);
        double b = rate(raw_one);
        mp = a > mp ? a : mp;
        floor = b > floor ? b : floor;
    }
    printf("%s\tdeliv/s\t%.1f\t%.1f\n", name, mp, floor);
}

int main(void)
{
    if (mp_signal_set_handler(SIGUSR1, mp_handler, NULL) < 0 ||
        pipe2(raw_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return 1;
    compare("signal_roundtrip", mp_roundtrip, raw_roundtrip, raw_flag_handler);
    /* From here on the library also writes to its wake-up pipe (someone polls it). */
    mp_wake = mp_signal_wakeup_fd();
    compare("signal_wakefd_loop", mp_wakefd, raw_wakefd, raw_pipe_handler);
    return 0;
}
