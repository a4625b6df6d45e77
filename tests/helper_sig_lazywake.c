/* Run by test_signals in a fresh process (no inherited state): a signal recorded
 * before anyone asked for the wake-up fd still makes the fd readable once asked.
 * Exit status 0 if so; a bit per failed check otherwise. */
#define _GNU_SOURCE
#include <multiproc/signals.h>

#include <poll.h>
#include <unistd.h>

static int runs;

static int handler(int signum, void *arg)
{
    (void)signum;
    (void)arg;
    runs++;
    return 0;
}

static int readable(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) == 1;
}

int main(void)
{
    int bad = 0;
    if (mp_signal_set_handler(SIGUSR1, handler, NULL) < 0)
        return 64;
    /* Without a wake-up fd user, dispatch works on the counters alone. */
    mp_signal_raise(SIGUSR1);
    if (mp_signal_dispatch() != 1 || runs != 1)
        bad |= 1;
    mp_signal_raise(SIGUSR1); /* recorded, no byte written: nobody polls yet */
    int fd = mp_signal_wakeup_fd();
    if (fd < 0 || !readable(fd))
        bad |= 2; /* asking for the fd wakes it for the pending delivery */
    if (mp_signal_dispatch() != 1 || runs != 2 || readable(fd))
        bad |= 4;
    mp_signal_raise(SIGUSR1);
    if (!readable(fd) || mp_signal_dispatch() != 1)
        bad |= 8;
    return bad;
}
