/* Signal helpers for the library's own code (owned by the signals module). */
#ifndef MP_INTERNAL_SIGUTIL_H
#define MP_INTERNAL_SIGUTIL_H

#include <stdbool.h>

/* Block every asynchronous signal in the calling thread, so that signals sent to the
 * process are delivered to (and their deferred handlers dispatched on) the user's
 * threads, never a library-internal thread. Synchronous fault signals (SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS) stay unblocked: blocking them would turn
 * a crash into undefined behaviour. Call it first thing in every internal thread: it
 * also marks the thread as one that never runs the user's deferred handlers (its
 * waits are plain waits; mp__signal_dispatch_pending does nothing there). */
void mp__block_signals_in_thread(void);

/* The signals module's wake-up fd (read end, POLLIN when a handled signal arrived),
 * or -1 if no handler was ever installed. From the first call on, every handled signal
 * writes a byte to it. The interruptible waits (internal/iwait.h) add it to their poll
 * set to close the race where a signal lands just before poll() starts; when it is
 * readable they call mp__signal_dispatch_woken(). */
int mp__signal_wake_fd(void);

/* Drain the wake-up fd (whatever the byte count says: a byte may be seen before the
 * handler that wrote it has counted it) and run the pending handlers: 0, or
 * MP_EINTERRUPTED if one asked blocking calls to stop. */
int mp__signal_dispatch_woken(void);

/* True once a handler was installed through the library in this process (only then
 * can a deferred handler be pending), on a thread that may run handlers (not a
 * library-internal one). */
bool mp__signal_in_use(void);

#endif
