/**
 * @file signals.h
 * @brief Handle and send signals, the safe way (Python's `signal` module).
 *
 * Python mapping:
 *  - `signal.signal(sig, handler)`  -> mp_signal_set_handler(sig, fn, arg)
 *  - `signal.signal(sig, SIG_DFL/SIG_IGN)` -> mp_signal_set_default / mp_signal_ignore
 *  - `signal.getsignal(sig)`        -> mp_signal_get_handler (also reports a "foreign"
 *                                      handler installed with sigaction by someone else)
 *  - a handler that raises an exception to stop a blocking call -> a handler that
 *    returns non-zero: the library's blocking call (or mp_signal_dispatch) returns
 *    MP_EINTERRUPTED
 *  - the interpreter running handlers "between bytecodes" -> mp_signal_dispatch(),
 *    which the program calls; and, as Python runs pending handlers before and after
 *    every blocking call, every blocking call of the library runs them before it
 *    sleeps and is woken by a signal while it sleeps (see "Blocking calls" below)
 *  - `signal.set_wakeup_fd(fd)`     -> mp_signal_set_wakeup_fd(fd, &old) (the caller's
 *                                      own non-blocking fd), or mp_signal_wakeup_fd() (a
 *                                      pipe the library owns)
 *  - `siginterrupt(sig, flag)`, `pause()`, `pthread_kill(tid, sig)` ->
 *    mp_signal_siginterrupt, mp_signal_pause, mp_signal_pthread_kill
 *  - `alarm`, `setitimer`, `getitimer` -> mp_signal_alarm, mp_signal_setitimer,
 *    mp_signal_getitimer
 *  - `pthread_sigmask`, `sigpending`, `sigtimedwait` -> mp_signal_mask (+ block /
 *    unblock), mp_signal_pending, mp_signal_wait
 *  - `Signals(n).name`, `Signals['SIGTERM']`, `strsignal`, `valid_signals` ->
 *    mp_signal_name, mp_signal_from_name, mp_signal_description, mp_signal_list
 *  - `os.kill`, `os.killpg`, `pidfd_send_signal`, `raise_signal`, `sigqueue` ->
 *    mp_signal_send, mp_signal_send_group, mp_signal_send_pidfd, mp_signal_raise,
 *    mp_signal_queue
 *
 * How it works: the real (kernel-level) handler only counts the delivery in an atomic
 * counter per signal and writes one byte to a non-blocking wake-up pipe (errno is
 * preserved). The user's handler runs later, in normal context, on the thread that
 * calls mp_signal_dispatch() (directly, or inside a library blocking call): there it
 * may allocate, print and take locks. The real handler is installed WITHOUT
 * SA_RESTART, so the program's own blocking system calls (open() of a FIFO, read(),
 * poll()) return EINTR and the program gets a chance to dispatch.
 *
 * Blocking calls of the library (queue get/put, lock, event, condition, semaphore and
 * barrier waits, process join, mp_run, Popen wait/communicate/readline, connection
 * send and receive (before a message starts), listener accept, mp_wait, pool and
 * manager waits): a handler pending when the call is about to sleep runs first, and a
 * handled signal arriving while it sleeps (also just before the sleep starts, or
 * delivered to another thread) wakes it. After the handlers ran, the call waits on
 * with the time left if they all returned 0, and returns MP_EINTERRUPTED if one
 * returned non-zero. A call with a zero timeout does not sleep and runs no handler.
 * Two limits: a lock acquire sleeps in the C library's mutex, which a signal cannot
 * wake, so a signal arriving during it is handled within 0.1 s; on Linux before 5.16
 * (no futex_waitv) a queue or sync-object wait handles a signal that lands just before
 * its sleep, or on another thread, at its next wake-up (at most 0.25 s).
 *
 * Coalescing: the kernel keeps at most one pending instance of a standard signal
 * (1..31): if SIGUSR1 is sent 1000 times while it is pending, the handler may run
 * fewer times (at least once). Real-time signals (SIGRTMIN..SIGRTMAX) are queued by
 * the kernel and each delivery is counted: the user handler runs once per delivery.
 *
 * Thread safety: every function may be called from any thread. Handlers run on the
 * thread that dispatches (which may be any thread waiting in a library call); the
 * handler table is protected by a mutex that is NOT held while a user handler runs, so
 * a handler may install or remove handlers. A signal sent to the process is delivered
 * by the kernel to any thread that does not block it. The library starts threads only
 * for a Pool (its result thread) and a manager server (one per connection); they block
 * every asynchronous signal, so they never take a delivery, and never run a handler.
 * (Unlike Python, handlers are not restricted to the main thread.)
 *
 * Fork behaviour: in a forked child the installed handlers stay (as the kernel keeps
 * dispositions), the pending counts are cleared and the wake-up pipe is recreated
 * with the same fd number, so parent and child never wake each other. After exec
 * handled signals revert to their defaults (kernel rule) and the pipe is closed
 * (close-on-exec).
 */
#ifndef MULTIPROC_SIGNALS_H
#define MULTIPROC_SIGNALS_H

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/time.h>
#include <sys/types.h>

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/**
 * A deferred signal handler. Runs in normal context (not in the kernel's signal
 * context) on the dispatching thread, once per recorded delivery of @p signum.
 * @p arg is the pointer given to mp_signal_set_handler.
 * Return 0 to let the blocking call that ran it carry on waiting, non-zero to ask it
 * to stop and return MP_EINTERRUPTED (Python: raising an exception in the handler).
 */
typedef int (*mp_signal_handler)(int signum, void *arg);

/** What a signal does now (mp_signal_get_handler). */
typedef enum mp_signal_disposition {
    MP_SIGNAL_DEFAULT = 0, /**< SIG_DFL: the kernel's default action */
    MP_SIGNAL_IGNORE = 1,  /**< SIG_IGN */
    MP_SIGNAL_HANDLER = 2, /**< a handler installed with mp_signal_set_handler */
    MP_SIGNAL_FOREIGN = 3  /**< a handler installed by someone else (sigaction) */
} mp_signal_disposition;

/* ---- handlers ------------------------------------------------------------------- */

/**
 * Install @p fn (with @p arg) as the deferred handler of @p signum, replacing any
 * previous disposition (also a foreign handler).
 * @return 0; MP_EINVAL for an invalid number, SIGKILL/SIGSTOP or a NULL @p fn (with a
 * message in mp_last_error()); -errno if the wake-up pipe cannot be created.
 */
int mp_signal_set_handler(int signum, mp_signal_handler fn, void *arg);

/**
 * Restore the default action of @p signum (SIG_DFL). Deliveries recorded but not yet
 * dispatched are dropped. @return 0 or MP_EINVAL.
 */
int mp_signal_set_default(int signum);

/** Ignore @p signum (SIG_IGN); undispatched deliveries are dropped. @return 0 or MP_EINVAL. */
int mp_signal_ignore(int signum);

/**
 * The current disposition of @p signum, read from the kernel.
 * @param signum the signal.
 * @param fn,arg if non-NULL, receive the deferred handler and its pointer when the
 *        result is MP_SIGNAL_HANDLER (NULL otherwise).
 * @return an mp_signal_disposition (>= 0), or MP_EINVAL for an invalid number.
 */
int mp_signal_get_handler(int signum, mp_signal_handler *fn, void **arg);

/**
 * Run the deferred handlers of every delivery recorded so far, on this thread, and
 * drain the wake-up fd. Cheap when nothing is pending (no system call).
 * @return the number of handler calls (>= 0), or MP_EINTERRUPTED if at least one
 * handler returned non-zero (all pending handlers still run; mp_last_error() names
 * the signal).
 */
int mp_signal_dispatch(void);

/**
 * The read end of the wake-up pipe: from the first call on, it becomes readable
 * (POLLIN) whenever a handled signal arrives (and at once if one is already
 * recorded). Poll it in an event loop, then call mp_signal_dispatch(), which drains
 * it. Until the first call (or the first library wait that polls fds, which watches
 * the pipe too) the library skips the pipe, so a program that only calls
 * mp_signal_dispatch() pays no system call per signal. Owned by the library: do not
 * read or close it. The number stays the same for the life of the process (also in
 * forked children).
 * @return the fd, or -errno if it could not be created.
 */
int mp_signal_wakeup_fd(void);

/**
 * Python's set_wakeup_fd: from now on every handled signal (one installed with
 * mp_signal_set_handler) also writes its number as one byte to @p fd, the caller's own
 * fd (a pipe or socket end), from the signal handler. The fd must be non-blocking (a
 * full buffer drops the byte; the delivery is still recorded and dispatched). The
 * library never reads or closes it; mp_signal_dispatch does not drain it. @p fd -1
 * stops. The previous fd (-1 if none) goes to @p old_fd when non-NULL. Independent of
 * mp_signal_wakeup_fd (both may be used). Any thread may call it (Python: main only).
 * @return 0; MP_EINVAL for a blocking fd; -EBADF for a closed one.
 */
int mp_signal_set_wakeup_fd(int fd, int *old_fd);

/**
 * Python's siginterrupt: @p interrupt true (the library's default for handlers it
 * installs) makes the program's system calls interrupted by @p signum fail with
 * EINTR, so it can dispatch; false restarts them (SA_RESTART). Deliveries are recorded
 * either way, and the library's blocking calls are woken and dispatch either way.
 * Installing a handler again resets it to interrupting (as in Python).
 * @return 0 or MP_EINVAL.
 */
int mp_signal_siginterrupt(int signum, bool interrupt);

/**
 * Python's signal.pause: sleep until a signal arrives, then run the deferred handlers.
 * Unlike pause(2) a delivery recorded just before the call is not slept through: the
 * call returns at once. A signal blocked in this thread, or whose action is to be
 * ignored (SIGCHLD by default), does not wake it. @return what mp_signal_dispatch
 * returns (handler calls, or MP_EINTERRUPTED).
 */
int mp_signal_pause(void);

/**
 * Python's pthread_kill: send @p signum to thread @p thread of this process (0 only
 * checks the thread; 0 is -ESRCH). A handled signal is recorded and dispatched as usual (on the
 * thread that dispatches). @return 0, MP_EINVAL, -ESRCH.
 */
int mp_signal_pthread_kill(pthread_t thread, int signum);

/* ---- timers --------------------------------------------------------------------- */

/**
 * Deliver SIGALRM after @p seconds (0 cancels), like alarm(2).
 * @return the seconds left of the previous alarm (0 if none). Cannot fail.
 */
unsigned mp_signal_alarm(unsigned seconds);

/** Interval timers (setitimer(2)); the values are the ITIMER_* constants. */
typedef enum mp_itimer {
    MP_ITIMER_REAL = ITIMER_REAL,       /**< wall clock, delivers SIGALRM */
    MP_ITIMER_VIRTUAL = ITIMER_VIRTUAL, /**< user CPU time, delivers SIGVTALRM */
    MP_ITIMER_PROF = ITIMER_PROF        /**< user+system CPU time, delivers SIGPROF */
} mp_itimer;

/**
 * Arm timer @p which to fire after @p seconds, then every @p interval seconds
 * (0: once). @p seconds == 0 cancels it. The previous setting is stored in
 * @p old_seconds / @p old_interval when non-NULL (Python's return value).
 * @return 0; MP_EINVAL for an unknown timer or a negative/non-finite time.
 */
int mp_signal_setitimer(int which, double seconds, double interval, double *old_seconds,
                        double *old_interval);

/** Read timer @p which: seconds left and interval (either pointer may be NULL).
 * @return 0 or MP_EINVAL. */
int mp_signal_getitimer(int which, double *seconds, double *interval);

/* ---- mask, pending, wait -------------------------------------------------------- */

/**
 * Change this thread's signal mask (pthread_sigmask): @p how is SIG_BLOCK,
 * SIG_UNBLOCK or SIG_SETMASK; @p set NULL only queries. The previous mask goes to
 * @p old when non-NULL. @return 0 or MP_EINVAL.
 */
int mp_signal_mask(int how, const sigset_t *set, sigset_t *old);

/** Block one signal in this thread. @return 0 or MP_EINVAL. */
int mp_signal_block(int signum);

/** Unblock one signal in this thread. @return 0 or MP_EINVAL. */
int mp_signal_unblock(int signum);

/** True if @p signum is blocked in this thread. */
bool mp_signal_is_blocked(int signum);

/** The signals pending for this thread or the process (sigpending). @return 0 or -errno. */
int mp_signal_pending(sigset_t *out);

/**
 * Wait until one of the signals in @p set is pending and take it (sigtimedwait).
 * The signals should be blocked first (mp_signal_mask), or a handler may take them.
 * @param set the signals to wait for.
 * @param timeout seconds; negative waits forever, 0 only checks.
 * @param info if non-NULL receives the sender's details (si_pid, si_code, ...).
 * @return the signal number; MP_ETIMEOUT; MP_EINTERRUPTED if another, handled
 * signal interrupted the wait and its handler asked to stop; MP_EINVAL.
 */
int mp_signal_wait(const sigset_t *set, double timeout, siginfo_t *info);

/* ---- names ---------------------------------------------------------------------- */

/**
 * The name of @p signum: "SIGTERM", "SIGRTMIN", "SIGRTMIN+3", "SIGRTMAX".
 * @return a static string, or NULL for an invalid number.
 */
const char *mp_signal_name(int signum);

/**
 * The number for a name: "SIGTERM", "TERM", "sigterm", "SIGRTMIN+3", "RTMAX-1",
 * aliases such as "SIGIOT", "SIGPOLL", "SIGCLD", or a decimal number "15".
 * @return the signal number (> 0), or MP_EINVAL for an unknown name.
 */
int mp_signal_from_name(const char *name);

/**
 * The description of @p signum, as strsignal() prints it in the C locale:
 * "Terminated", "Real-time signal 3". @return a static string, NULL if invalid.
 */
const char *mp_signal_description(int signum);

/** True if @p signum is a signal number of this system (1..31, SIGRTMIN..SIGRTMAX). */
bool mp_signal_is_valid(int signum);

/**
 * The valid signal numbers in increasing order (Python's valid_signals()).
 * Stores up to @p cap of them in @p out (which may be NULL when @p cap is 0).
 * @return how many exist (may exceed @p cap).
 */
int mp_signal_list(int *out, size_t cap);

/* ---- sending -------------------------------------------------------------------- */

/** Send @p signum to process @p pid (kill(2); pid <= 0 has kill's meaning; signum 0
 * only checks that the process exists). @return 0, MP_EINVAL, -ESRCH, -EPERM. */
int mp_signal_send(pid_t pid, int signum);

/** Send @p signum to every process of group @p pgid (0: the caller's group).
 * @return 0, MP_EINVAL, -ESRCH, -EPERM. */
int mp_signal_send_group(pid_t pgid, int signum);

/** Send @p signum through a pidfd (immune to pid reuse). @return 0, MP_EINVAL,
 * -EBADF, -ESRCH, -EPERM. */
int mp_signal_send_pidfd(int pidfd, int signum);

/** Send @p signum to the calling thread (raise(3)); a handled signal is recorded
 * before this returns. @return 0 or MP_EINVAL. */
int mp_signal_raise(int signum);

/** Queue @p signum with an integer @p value to @p pid (sigqueue(3)). Real-time
 * signals are never merged. @return 0, MP_EINVAL, -EAGAIN (queue limit), -ESRCH. */
int mp_signal_queue(pid_t pid, int signum, int value);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
