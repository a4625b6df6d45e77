/* An event loop sleeping in poll() on the signal wake-up fd. */
/* An event loop that sleeps in poll() on the signal wake-up fd (Python's
 * signal.set_wakeup_fd + an asyncio-style loop): a periodic timer ticks, SIGUSR1 from
 * a child process is handled in normal context, and SIGTERM ends the loop cleanly. */
#define _GNU_SOURCE
#include <multiproc/error.h>
#include <multiproc/signals.h>

#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

static int ticks;
static bool done;

static int on_tick(int signum, void *arg)
{
    (void)arg;
    printf("tick %d (%s)\n", ++ticks, mp_signal_name(signum));
    return 0;
}

static int on_usr1(int signum, void *arg)
{
    (void)arg;
    printf("got %s: %s\n", mp_signal_name(signum), mp_signal_description(signum));
    return 0;
}

static int on_term(int signum, void *arg)
{
    (void)arg;
    printf("got %s, shutting down\n", mp_signal_name(signum));
    done = true;
    return 0;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    mp_signal_set_handler(SIGALRM, on_tick, NULL);
    mp_signal_set_handler(SIGUSR1, on_usr1, NULL);
    mp_signal_set_handler(SIGTERM, on_term, NULL);
    int wake = mp_signal_wakeup_fd();

    pid_t parent = getpid();
    pid_t child = fork();
    if (child == 0) { /* another process talks to us with signals */
        usleep(150000);
        mp_signal_send(parent, SIGUSR1);
        usleep(400000);
        mp_signal_send(parent, SIGTERM);
        _exit(0);
    }
    mp_signal_setitimer(MP_ITIMER_REAL, 0.2, 0.2, NULL, NULL);
    while (!done) {
        struct pollfd p = {.fd = wake, .events = POLLIN};
        if (poll(&p, 1, 5000) == 0)
            break; /* nothing for 5 s: give up */
        mp_signal_dispatch();
    }
    mp_signal_setitimer(MP_ITIMER_REAL, 0, 0, NULL, NULL);
    waitpid(child, NULL, 0);
    printf("loop ended after %d ticks\n", ticks);
    return done ? 0 : 1;
}
