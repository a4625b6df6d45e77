/* Interruptible waits: every library call that sleeps goes through one of these, so
 * the deferred signal handlers (mp_signal_set_handler) run before it sleeps, and a
 * handled signal that arrives at any moment after that check wakes the sleep (Python
 * runs a pending handler before and after every blocking call).
 *
 * The outcome, the same for both kinds of wait:
 * - a handler that returns 0 lets the wait go on with the time that is left;
 * - a handler that returns non-zero ends it: MP_EINTERRUPTED (mp_last_error() names the
 *   signal), whether it ran before the sleep or during it.
 * A wait with no time left (a poll: deadline now or past) never runs handlers: it does
 * not sleep. In a process that never installed a handler through the library these
 * are the plain system calls. */
#ifndef MP_INTERNAL_IWAIT_H
#define MP_INTERNAL_IWAIT_H

#include <poll.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* poll() the n fds (fds may be NULL when n is 0: a plain interruptible sleep) until the
 * deadline (CLOCK_MONOTONIC seconds, -1 forever; see mp__deadline). The signals
 * module's wake-up pipe joins the poll set, so a signal between the handler check and
 * poll() wakes it. Returns how many of the caller's fds are ready (> 0, revents set),
 * 0 at the deadline, MP_EINTERRUPTED, or -errno (no message recorded). */
int mp__iwait_poll(struct pollfd *fds, nfds_t n, double deadline);

/* The same for one fd: its revents (> 0), 0 at the deadline, MP_EINTERRUPTED or -errno. */
int mp__iwait_poll1(int fd, short events, double deadline);

/* Sleep while *word == expected (a futex word, shared between processes) until the
 * deadline (-1 forever). Returns 0 when woken, when the value differs, or after a
 * handler ran that did not ask to stop (callers re-check their condition and wait
 * again), MP_ETIMEOUT, MP_EINTERRUPTED, or -errno.
 * A handled signal bumps a process-wide sequence word, and the sleep is one
 * futex_waitv on both words (Linux >= 5.16), so a signal in the window between the
 * handler check and the sleep ends the sleep at once. Without futex_waitv (ENOSYS:
 * an older kernel) the handlers still run before the sleep and whenever a signal
 * interrupts it (EINTR), but a signal landing in that window, or delivered to another
 * thread, is only handled at the next wake-up (queue and sync-object waits sleep in
 * slices of at most 0.25 s; a pool wait until a task completes). */
int mp__iwait_futex(_Atomic uint32_t *word, uint32_t expected, double deadline);

/* Tests: behave as on a kernel without futex_waitv (true), or probe again (false). */
void mp__iwait_without_waitv(bool on);

/* For the signals module's handler (async-signal-safe): a handled signal arrived;
 * wake every futex wait of this process. */
void mp__iwait_signal_arrived(void);

#endif
