/* Signal helpers for the library's own code (owned by the signals module). */
#ifndef MP_INTERNAL_SIGUTIL_H
#define MP_INTERNAL_SIGUTIL_H

/* Block every asynchronous signal in the calling thread, so that signals sent to the
 * process are delivered to (and their deferred handlers dispatched on) the user's
 * threads, never a library-internal thread. Synchronous fault signals (SIGSEGV,
 * SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS) stay unblocked: blocking them would turn
 * a crash into undefined behaviour. Call it first thing in every internal thread. */
void mp__block_signals_in_thread(void);

/* The signals module's wake-up fd (read end, POLLIN when a handled signal arrived),
 * or -1 if no handler was ever installed. A blocking call that polls several fds may
 * add it to close the race where a signal lands just before poll() starts; when it
 * is readable, call mp__signal_dispatch_pending(). */
int mp__signal_wake_fd(void);

#endif
