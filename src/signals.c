/* Signals: deferred handlers, wake-up fd, timers, masks, names, sending.
 *
 * DESIGN
 * - Who runs where: on_signal() is the only code that runs in signal context, on
 *   whichever thread the kernel picks. It touches nothing but lock-free atomics and
 *   write(2) on the non-blocking wake-up pipe, and restores errno. The user's handlers
 *   run in mp_signal_dispatch(), on the thread that calls it (the program itself, or
 *   a library blocking call through mp__signal_dispatch_pending(): before it sleeps
 *   and after a wake-up, see src/iwait.c). Library-internal threads never dispatch.
 * - What is shared: `pending[sig]` counts deliveries not yet dispatched (one count per
 *   delivery, so queued real-time signals are never lost); `any_pending` is the cheap
 *   "something to do" flag; `wake_bytes` counts bytes sitting in the pipe so dispatch
 *   only reads the pipe when it has something to drain; `wake_wanted` says whether
 *   anyone asked for the fd at all (until then on_signal skips the write, and dispatch
 *   costs no system call). The handler table (fn, arg) is guarded by `table_lock`.
 * - Waking the library's waits: on_signal() also bumps iwait's sequence word (futex
 *   waits), and poll waits ask for the wake-up pipe (wake_wanted), so every delivery
 *   writes its byte. A wait that saw the byte drains the pipe whatever wake_bytes says
 *   (the writer may not have counted it yet; the count then dips below 0 briefly).
 * - Ordering that makes the wake-up fd reliable: on_signal() increments the counter,
 *   then sets the flag, then writes the byte; dispatch drains the pipe, then clears the
 *   flag, then takes the counters. So a byte seen by an event loop always has its
 *   count visible, and a byte written after a drain always leaves the flag set (no
 *   stale byte with nothing to dispatch, so no busy loop).
 * - Lock order: only table_lock. It is never held while a user handler runs (a
 *   handler may install handlers or dispatch recursively), and it is held across
 *   fork() (pthread_atfork) so the child gets a consistent, unlocked table.
 * - Fork: all signals are blocked from the prepare hook until the child hook has reset
 *   the counters and recreated the pipe (same fd numbers via dup3), so a signal sent
 *   to the new child right away is delivered after the reset, not wiped by it.
 */
#define _GNU_SOURCE
#include "multiproc/signals.h"

#include "internal/common.h"
#include "internal/iwait.h"
#include "internal/sigutil.h"

#include <ctype.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MP__NSIG 65 /* signal numbers 1..64 on Linux */

/* ---- state ---------------------------------------------------------------------- */

static atomic_ulong pending[MP__NSIG];
static atomic_int any_pending;
static atomic_long wake_bytes;
static atomic_int wake_wanted; /* someone polls the pipe: only then write to it */
static _Atomic int wake_r = -1;
static _Atomic int wake_w = -1;
static _Atomic int user_wake_fd = -1; /* mp_signal_set_wakeup_fd: the caller's own fd */

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    mp_signal_handler fn;
    void *arg;
} table[MP__NSIG];

/* A library-internal thread (mp__block_signals_in_thread): it never runs the user's
 * handlers, even when its waits find one pending. */
static _Thread_local bool internal_thread;

static pthread_once_t init_once = PTHREAD_ONCE_INIT;
static int init_error;
static _Thread_local sigset_t fork_saved_mask;

/* ---- the real handler (signal context: async-signal-safe only) ------------------ */

/* One byte into the pipe (async-signal-safe); a full pipe (EAGAIN) is fine. */
static void wake_up(unsigned char byte)
{
    int fd = atomic_load(&wake_w);
    if (fd >= 0 && write(fd, &byte, 1) == 1)
        atomic_fetch_add(&wake_bytes, 1);
}

/* Python's set_wakeup_fd: the signal number as one byte into the caller's fd (which is
 * non-blocking: a full pipe or socket just drops the byte). */
static void user_wake(int sig)
{
    int fd = atomic_load(&user_wake_fd);
    unsigned char byte = (unsigned char)sig;
    if (fd >= 0 && write(fd, &byte, 1) < 0) {
        /* nothing to do in signal context: the count is recorded all the same */
    }
}

static void on_signal(int sig, siginfo_t *si, void *uc)
{
    (void)si;
    (void)uc;
    int saved = errno;
    if (sig > 0 && sig < MP__NSIG)
        atomic_fetch_add(&pending[sig], 1);
    atomic_store(&any_pending, 1);
    mp__iwait_signal_arrived(); /* wakes the library's futex waits */
    if (atomic_load(&wake_wanted))
        wake_up((unsigned char)sig);
    user_wake(sig);
    errno = saved;
}

/* ---- names and validity --------------------------------------------------------- */

struct sig_text {
    const char *name;
    const char *descr; /* glibc's strsignal() text in the C locale */
};

static const struct sig_text std_signals[32] = {
    [SIGHUP] = {"SIGHUP", "Hangup"},
    [SIGINT] = {"SIGINT", "Interrupt"},
    [SIGQUIT] = {"SIGQUIT", "Quit"},
    [SIGILL] = {"SIGILL", "Illegal instruction"},
    [SIGTRAP] = {"SIGTRAP", "Trace/breakpoint trap"},
    [SIGABRT] = {"SIGABRT", "Aborted"},
    [SIGBUS] = {"SIGBUS", "Bus error"},
    [SIGFPE] = {"SIGFPE", "Floating point exception"},
    [SIGKILL] = {"SIGKILL", "Killed"},
    [SIGUSR1] = {"SIGUSR1", "User defined signal 1"},
    [SIGSEGV] = {"SIGSEGV", "Segmentation fault"},
    [SIGUSR2] = {"SIGUSR2", "User defined signal 2"},
    [SIGPIPE] = {"SIGPIPE", "Broken pipe"},
    [SIGALRM] = {"SIGALRM", "Alarm clock"},
    [SIGTERM] = {"SIGTERM", "Terminated"},
#ifdef SIGSTKFLT
    [SIGSTKFLT] = {"SIGSTKFLT", "Stack fault"},
#endif
    [SIGCHLD] = {"SIGCHLD", "Child exited"},
    [SIGCONT] = {"SIGCONT", "Continued"},
    [SIGSTOP] = {"SIGSTOP", "Stopped (signal)"},
    [SIGTSTP] = {"SIGTSTP", "Stopped"},
    [SIGTTIN] = {"SIGTTIN", "Stopped (tty input)"},
    [SIGTTOU] = {"SIGTTOU", "Stopped (tty output)"},
    [SIGURG] = {"SIGURG", "Urgent I/O condition"},
    [SIGXCPU] = {"SIGXCPU", "CPU time limit exceeded"},
    [SIGXFSZ] = {"SIGXFSZ", "File size limit exceeded"},
    [SIGVTALRM] = {"SIGVTALRM", "Virtual timer expired"},
    [SIGPROF] = {"SIGPROF", "Profiling timer expired"},
    [SIGWINCH] = {"SIGWINCH", "Window changed"},
    [SIGIO] = {"SIGIO", "I/O possible"},
#ifdef SIGPWR
    [SIGPWR] = {"SIGPWR", "Power failure"},
#endif
    [SIGSYS] = {"SIGSYS", "Bad system call"},
};

/* Other spellings accepted by mp_signal_from_name (without the SIG prefix). */
static const struct {
    const char *name;
    int sig;
} aliases[] = {{"IOT", SIGABRT}, {"POLL", SIGIO}, {"CLD", SIGCHLD}};

/* Real-time names depend on SIGRTMIN, which glibc only knows at run time. */
static char rt_names[MP__NSIG][16];
static char rt_descr[MP__NSIG][32];
static pthread_once_t rt_once = PTHREAD_ONCE_INIT;

static void rt_init(void)
{
    for (int s = SIGRTMIN; s <= SIGRTMAX && s < MP__NSIG; s++) {
        if (s == SIGRTMIN)
            snprintf(rt_names[s], sizeof rt_names[s], "SIGRTMIN");
        else if (s == SIGRTMAX)
            snprintf(rt_names[s], sizeof rt_names[s], "SIGRTMAX");
        else
            snprintf(rt_names[s], sizeof rt_names[s], "SIGRTMIN+%d", s - SIGRTMIN);
        snprintf(rt_descr[s], sizeof rt_descr[s], "Real-time signal %d", s - SIGRTMIN);
    }
}

bool mp_signal_is_valid(int signum)
{
    if (signum > 0 && signum < (int)MP__ARRAY_LEN(std_signals))
        return std_signals[signum].name != NULL;
    return signum >= SIGRTMIN && signum <= SIGRTMAX && signum < MP__NSIG;
}

const char *mp_signal_name(int signum)
{
    if (!mp_signal_is_valid(signum))
        return NULL;
    if (signum < (int)MP__ARRAY_LEN(std_signals))
        return std_signals[signum].name;
    pthread_once(&rt_once, rt_init);
    return rt_names[signum];
}

const char *mp_signal_description(int signum)
{
    if (!mp_signal_is_valid(signum))
        return NULL;
    if (signum < (int)MP__ARRAY_LEN(std_signals))
        return std_signals[signum].descr;
    pthread_once(&rt_once, rt_init);
    return rt_descr[signum];
}

int mp_signal_list(int *out, size_t cap)
{
    size_t n = 0;
    for (int s = 1; s < MP__NSIG; s++) {
        if (!mp_signal_is_valid(s))
            continue;
        if (out && n < cap)
            out[n] = s;
        n++;
    }
    return (int)n;
}

/* "+3" / "-3" / "" after RTMIN / RTMAX: the offset, or INT_MIN when malformed. */
static int parse_offset(const char *p, bool *ok)
{
    *ok = true;
    if (*p == '\0')
        return 0;
    int sign = *p == '+' ? 1 : *p == '-' ? -1 : 0;
    if (!sign || !isdigit((unsigned char)p[1])) {
        *ok = false;
        return 0;
    }
    char *end;
    long v = strtol(p + 1, &end, 10);
    if (*end || v > MP__NSIG)
        *ok = false;
    return sign * (int)v;
}

/* A name without its SIG prefix, upper-cased: the number or 0. */
static int lookup_upper(const char *u)
{
    for (int s = 1; s < (int)MP__ARRAY_LEN(std_signals); s++)
        if (std_signals[s].name && strcmp(std_signals[s].name + 3, u) == 0)
            return s;
    for (size_t i = 0; i < MP__ARRAY_LEN(aliases); i++)
        if (strcmp(aliases[i].name, u) == 0)
            return aliases[i].sig;
    bool ok;
    if (strncmp(u, "RTMIN", 5) == 0) {
        int off = parse_offset(u + 5, &ok);
        return ok && off >= 0 ? SIGRTMIN + off : 0;
    }
    if (strncmp(u, "RTMAX", 5) == 0) {
        int off = parse_offset(u + 5, &ok);
        return ok && off <= 0 ? SIGRTMAX + off : 0;
    }
    return 0;
}

int mp_signal_from_name(const char *name)
{
    if (!name || !*name)
        return mp__error(MP_EINVAL, "empty signal name");
    char u[32];
    size_t n = strlen(name);
    if (n >= sizeof u)
        return mp__error(MP_EINVAL, "unknown signal name '%.40s...'", name);
    for (size_t i = 0; i <= n; i++)
        u[i] = (char)toupper((unsigned char)name[i]);
    int sig;
    if (isdigit((unsigned char)u[0])) {
        char *end;
        long v = strtol(u, &end, 10);
        sig = (*end || v > MP__NSIG) ? 0 : (int)v;
    } else {
        sig = lookup_upper(strncmp(u, "SIG", 3) == 0 ? u + 3 : u);
    }
    if (!mp_signal_is_valid(sig))
        return mp__error(MP_EINVAL, "unknown signal name '%s'", name);
    return sig;
}

/* MP_EINVAL with a clear message unless signum is a valid number. */
static int check_valid(int signum, const char *what)
{
    if (mp_signal_is_valid(signum))
        return 0;
    return mp__error(MP_EINVAL, "%s: %d is not a valid signal number (1..%d, except %d..%d)",
                     what, signum, SIGRTMAX, (int)MP__ARRAY_LEN(std_signals), SIGRTMIN - 1);
}

/* Valid and neither SIGKILL nor SIGSTOP, whose disposition cannot change. */
static int check_catchable(int signum, const char *what)
{
    int r = check_valid(signum, what);
    if (r < 0)
        return r;
    if (signum == SIGKILL || signum == SIGSTOP)
        return mp__error(MP_EINVAL, "%s: %s cannot be caught or ignored", what,
                         mp_signal_name(signum));
    return 0;
}

/* ---- the wake-up pipe and fork ------------------------------------------------- */

static void atfork_prepare(void)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &fork_saved_mask);
    pthread_mutex_lock(&table_lock);
}

static void atfork_parent(void)
{
    pthread_mutex_unlock(&table_lock);
    pthread_sigmask(SIG_SETMASK, &fork_saved_mask, NULL);
}

/* A fresh pipe at the inherited fd numbers: the child must not share (and drain) the
 * parent's pipe, and the fd number the program learned stays valid. */
static void renew_pipe(void)
{
    int fds[2];
    int r = atomic_load(&wake_r), w = atomic_load(&wake_w);
    if (r < 0 || w < 0)
        return;
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) == 0 && dup3(fds[0], r, O_CLOEXEC) >= 0 &&
        dup3(fds[1], w, O_CLOEXEC) >= 0) {
        close(fds[0]);
        close(fds[1]);
        return;
    }
    /* Out of fds in a fresh child: better no wake-ups than the parent's pipe. */
    atomic_store(&wake_w, -1);
    close(w);
}

static void atfork_child(void)
{
    for (int s = 0; s < MP__NSIG; s++)
        atomic_store(&pending[s], 0);
    atomic_store(&any_pending, 0);
    atomic_store(&wake_bytes, 0);
    renew_pipe();
    pthread_mutex_unlock(&table_lock);
    pthread_sigmask(SIG_SETMASK, &fork_saved_mask, NULL);
}

static void init(void)
{
    int fds[2];
    if (mp__fd_high2(pipe2(fds, O_CLOEXEC | O_NONBLOCK), fds) < 0) {
        init_error = mp__errno("creating the signal wake-up pipe");
        return;
    }
    atomic_store(&wake_r, fds[0]);
    atomic_store(&wake_w, fds[1]);
    int e = pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
    if (e)
        init_error = mp__error(-e, "registering the signal fork handlers");
}

static int ensure_init(void)
{
    pthread_once(&init_once, init);
    return init_error;
}

/* From now on every delivery also writes to the pipe. Until someone asked for the fd,
 * nobody could poll it, and skipping the write (and the drain) saves two system calls
 * per signal. A delivery recorded before the switch gets its byte here, so a poller
 * never sleeps on a pending signal. */
static void want_wake_ups(void)
{
    if (atomic_load(&wake_wanted) || atomic_exchange(&wake_wanted, 1))
        return;
    if (atomic_load(&any_pending))
        wake_up(0);
}

int mp_signal_wakeup_fd(void)
{
    int r = ensure_init();
    if (r < 0)
        return mp__error(r, "creating the signal wake-up pipe");
    want_wake_ups();
    return atomic_load(&wake_r);
}

int mp__signal_wake_fd(void)
{
    int fd = atomic_load(&wake_r);
    if (fd >= 0)
        want_wake_ups();
    return fd;
}

/* ---- handlers ------------------------------------------------------------------- */

int mp_signal_set_handler(int signum, mp_signal_handler fn, void *arg)
{
    int r = check_catchable(signum, "mp_signal_set_handler");
    if (r < 0)
        return r;
    if (!fn)
        return mp__error(MP_EINVAL, "mp_signal_set_handler: NULL handler for %s",
                         mp_signal_name(signum));
    r = ensure_init();
    if (r < 0)
        return r;
    /* No SA_RESTART: blocking system calls must return EINTR so the program gets to
     * dispatch. Empty sa_mask: on_signal is reentrant. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_signal;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    pthread_mutex_lock(&table_lock);
    table[signum].fn = fn; /* before the kernel can deliver to on_signal */
    table[signum].arg = arg;
    if (sigaction(signum, &sa, NULL) < 0) {
        r = mp__errno("sigaction(%s)", mp_signal_name(signum));
        table[signum].fn = NULL;
        table[signum].arg = NULL;
    }
    pthread_mutex_unlock(&table_lock);
    return r;
}

static int set_plain(int signum, void (*action)(int), const char *what)
{
    int r = check_catchable(signum, what);
    if (r < 0)
        return r;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = action;
    sigemptyset(&sa.sa_mask);
    pthread_mutex_lock(&table_lock);
    if (sigaction(signum, &sa, NULL) < 0) {
        r = mp__errno("sigaction(%s)", mp_signal_name(signum));
    } else {
        table[signum].fn = NULL;
        table[signum].arg = NULL;
        atomic_store(&pending[signum], 0);
    }
    pthread_mutex_unlock(&table_lock);
    return r;
}

int mp_signal_set_default(int signum)
{
    return set_plain(signum, SIG_DFL, "mp_signal_set_default");
}

int mp_signal_ignore(int signum) { return set_plain(signum, SIG_IGN, "mp_signal_ignore"); }

int mp_signal_get_handler(int signum, mp_signal_handler *fn, void **arg)
{
    if (fn)
        *fn = NULL;
    if (arg)
        *arg = NULL;
    int r = check_valid(signum, "mp_signal_get_handler");
    if (r < 0)
        return r;
    struct sigaction old;
    pthread_mutex_lock(&table_lock);
    if (sigaction(signum, NULL, &old) < 0) {
        r = mp__errno("sigaction(%s)", mp_signal_name(signum));
    } else if ((old.sa_flags & SA_SIGINFO) && old.sa_sigaction == on_signal) {
        r = MP_SIGNAL_HANDLER;
        if (fn)
            *fn = table[signum].fn;
        if (arg)
            *arg = table[signum].arg;
    } else if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_DFL) {
        r = MP_SIGNAL_DEFAULT;
    } else if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN) {
        r = MP_SIGNAL_IGNORE;
    } else {
        r = MP_SIGNAL_FOREIGN;
    }
    pthread_mutex_unlock(&table_lock);
    return r;
}

/* ---- dispatch ------------------------------------------------------------------- */

/* Read the pipe empty; only when bytes were written (a read is a system call). */
static void drain_wake_pipe(bool force)
{
    if (!force && atomic_load(&wake_bytes) <= 0)
        return;
    int fd = atomic_load(&wake_r);
    char buf[512];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        atomic_fetch_sub(&wake_bytes, (long)n);
        if ((size_t)n < sizeof buf) /* a short read from a pipe: it is empty now */
            return;
    }
}

/* The handler for signum right now, looked up per call: a previous call may have
 * replaced it (and freed the old arg). */
static mp_signal_handler lookup(int signum, void **arg)
{
    pthread_mutex_lock(&table_lock);
    mp_signal_handler fn = table[signum].fn;
    *arg = table[signum].arg;
    pthread_mutex_unlock(&table_lock);
    return fn;
}

/* Run `count` recorded deliveries of signum; adds to *calls; true if one asked to stop. */
static bool run_handlers(int signum, unsigned long count, int *calls)
{
    bool stop = false;
    while (count-- > 0) {
        void *arg;
        mp_signal_handler fn = lookup(signum, &arg);
        if (!fn)
            break; /* set to default/ignore meanwhile: drop the rest */
        if (fn(signum, arg) != 0)
            stop = true;
        if (*calls < INT32_MAX)
            (*calls)++;
    }
    return stop;
}

int mp_signal_dispatch(void)
{
    if (atomic_load(&any_pending) == 0 && atomic_load(&wake_bytes) <= 0)
        return 0;
    drain_wake_pipe(false);
    atomic_store(&any_pending, 0);
    int calls = 0, stopper = 0;
    for (int s = 1; s < MP__NSIG; s++) {
        if (atomic_load(&pending[s]) == 0)
            continue;
        unsigned long n = atomic_exchange(&pending[s], 0);
        if (run_handlers(s, n, &calls) && !stopper)
            stopper = s;
    }
    if (stopper)
        return mp__error(MP_EINTERRUPTED, "the handler of %s asked to stop",
                         mp_signal_name(stopper));
    return calls;
}

int mp__signal_dispatch_pending(void)
{
    if (internal_thread)
        return 0;
    int r = mp_signal_dispatch();
    return r < 0 ? r : 0;
}

int mp__signal_dispatch_woken(void)
{
    drain_wake_pipe(true);
    return mp__signal_dispatch_pending();
}

bool mp__signal_in_use(void) { return !internal_thread && atomic_load(&wake_r) >= 0; }

/* ---- timers --------------------------------------------------------------------- */

unsigned mp_signal_alarm(unsigned seconds) { return alarm(seconds); }

static int check_timer(int which)
{
    if (which == ITIMER_REAL || which == ITIMER_VIRTUAL || which == ITIMER_PROF)
        return 0;
    return mp__error(MP_EINVAL, "unknown interval timer %d (MP_ITIMER_REAL, _VIRTUAL, _PROF)",
                     which);
}

/* Seconds to a timeval, rounding up so a tiny positive time does not mean "cancel". */
static int to_timeval(double s, struct timeval *tv, const char *what)
{
    if (!isfinite(s) || s < 0 || s > 1e15)
        return mp__error(MP_EINVAL, "setitimer: %s must be a finite number >= 0, got %g", what,
                         s);
    double whole = floor(s);
    double usec = ceil((s - whole) * 1e6 - 1e-6); /* -1e-6: don't round 0.5 s to 0.500001 */
    if (usec < 0)
        usec = 0;
    tv->tv_sec = (time_t)whole;
    tv->tv_usec = (suseconds_t)usec;
    if (tv->tv_usec >= 1000000) {
        tv->tv_sec++;
        tv->tv_usec -= 1000000;
    }
    return 0;
}

static double from_timeval(const struct timeval *tv)
{
    return (double)tv->tv_sec + (double)tv->tv_usec * 1e-6;
}

int mp_signal_setitimer(int which, double seconds, double interval, double *old_seconds,
                        double *old_interval)
{
    int r = check_timer(which);
    struct itimerval nv, ov;
    if (r < 0 || (r = to_timeval(seconds, &nv.it_value, "seconds")) < 0 ||
        (r = to_timeval(interval, &nv.it_interval, "interval")) < 0)
        return r;
    if (setitimer((__itimer_which_t)which, &nv, &ov) < 0)
        return mp__errno("setitimer(%d)", which);
    if (old_seconds)
        *old_seconds = from_timeval(&ov.it_value);
    if (old_interval)
        *old_interval = from_timeval(&ov.it_interval);
    return 0;
}

int mp_signal_getitimer(int which, double *seconds, double *interval)
{
    int r = check_timer(which);
    if (r < 0)
        return r;
    struct itimerval v;
    if (getitimer((__itimer_which_t)which, &v) < 0)
        return mp__errno("getitimer(%d)", which);
    if (seconds)
        *seconds = from_timeval(&v.it_value);
    if (interval)
        *interval = from_timeval(&v.it_interval);
    return 0;
}

/* ---- mask, pending, wait ------------------------------------------------------- */

int mp_signal_mask(int how, const sigset_t *set, sigset_t *old)
{
    if (how != SIG_BLOCK && how != SIG_UNBLOCK && how != SIG_SETMASK)
        return mp__error(MP_EINVAL, "mp_signal_mask: how must be SIG_BLOCK, SIG_UNBLOCK or "
                                  "SIG_SETMASK, got %d",
                         how);
    int e = pthread_sigmask(how, set, old);
    return e ? mp__error(-e, "pthread_sigmask") : 0;
}

static int mask_one(int how, int signum, const char *what)
{
    int r = check_valid(signum, what);
    if (r < 0)
        return r;
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, signum);
    return mp_signal_mask(how, &set, NULL);
}

int mp_signal_block(int signum) { return mask_one(SIG_BLOCK, signum, "mp_signal_block"); }

int mp_signal_unblock(int signum)
{
    return mask_one(SIG_UNBLOCK, signum, "mp_signal_unblock");
}

bool mp_signal_is_blocked(int signum)
{
    sigset_t cur;
    if (!mp_signal_is_valid(signum) || pthread_sigmask(SIG_BLOCK, NULL, &cur) != 0)
        return false;
    return sigismember(&cur, signum) == 1;
}

int mp_signal_pending(sigset_t *out)
{
    if (!out)
        return mp__error(MP_EINVAL, "mp_signal_pending: NULL set");
    return sigpending(out) < 0 ? mp__errno("sigpending") : 0;
}

int mp_signal_wait(const sigset_t *set, double timeout, siginfo_t *info)
{
    if (!set)
        return mp__error(MP_EINVAL, "mp_signal_wait: NULL set");
    siginfo_t local;
    if (!info)
        info = &local;
    double deadline = mp__deadline(timeout);
    if (timeout != 0) { /* before sleeping, as every blocking call */
        int r = mp__signal_dispatch_pending();
        if (r < 0)
            return r;
    }
    for (;;) {
        int r;
        if (deadline < 0) {
            r = sigwaitinfo(set, info);
        } else {
            double left = mp__left(deadline);
            struct timespec ts = {(time_t)left, (long)((left - floor(left)) * 1e9)};
            r = sigtimedwait(set, info, &ts);
        }
        if (r > 0)
            return r;
        if (errno == EAGAIN)
            return mp__error(MP_ETIMEOUT, "no signal of the set arrived within %g s",
                             timeout);
        if (errno != EINTR)
            return mp__errno("sigtimedwait");
        r = mp__signal_dispatch_pending(); /* another signal's handler ran */
        if (r < 0)
            return r;
    }
}

/* ---- sending -------------------------------------------------------------------- */

/* 0 (the existence probe) or a valid number. */
static int check_sendable(int signum, const char *what)
{
    return signum == 0 ? 0 : check_valid(signum, what);
}

int mp_signal_send(pid_t pid, int signum)
{
    int r = check_sendable(signum, "mp_signal_send");
    if (r < 0)
        return r;
    if (kill(pid, signum) < 0)
        return mp__errno("kill(%d, %s)", (int)pid, signum ? mp_signal_name(signum) : "0");
    return 0;
}

int mp_signal_send_group(pid_t pgid, int signum)
{
    int r = check_sendable(signum, "mp_signal_send_group");
    if (r < 0)
        return r;
    if (pgid < 0)
        return mp__error(MP_EINVAL, "mp_signal_send_group: negative process group %d",
                         (int)pgid);
    if (killpg(pgid, signum) < 0)
        return mp__errno("killpg(%d, %s)", (int)pgid, signum ? mp_signal_name(signum) : "0");
    return 0;
}

int mp_signal_send_pidfd(int pidfd, int signum)
{
    int r = check_sendable(signum, "mp_signal_send_pidfd");
    if (r < 0)
        return r;
    r = mp__pidfd_send_signal(pidfd, signum);
    if (r < 0)
        return mp__error(r, "pidfd_send_signal(fd %d, %s)", pidfd,
                         signum ? mp_signal_name(signum) : "0");
    return 0;
}

int mp_signal_raise(int signum)
{
    int r = check_valid(signum, "mp_signal_raise");
    if (r < 0)
        return r;
    return raise(signum) != 0 ? mp__errno("raise(%s)", mp_signal_name(signum)) : 0;
}

int mp_signal_queue(pid_t pid, int signum, int value)
{
    int r = check_sendable(signum, "mp_signal_queue");
    if (r < 0)
        return r;
    union sigval v = {.sival_int = value};
    if (sigqueue(pid, signum, v) < 0)
        return errno == EAGAIN ? -EAGAIN /* hot path in storms: no message */
                               : mp__errno("sigqueue(%d, %s)", (int)pid,
                                           signum ? mp_signal_name(signum) : "0");
    return 0;
}

/* ---- for the library's own threads -------------------------------------------- */

/* A process forked from an internal thread (a pool's workers are forked by its result
 * thread) is a program of its own: its one thread runs the user's handlers again. */
static void internal_atfork_child(void) { internal_thread = false; }

static void register_internal_atfork(void)
{
    pthread_atfork(NULL, NULL, internal_atfork_child);
}

void mp__block_signals_in_thread(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_internal_atfork);
    static const int sync_signals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGSYS};
    sigset_t set;
    sigfillset(&set);
    for (size_t i = 0; i < MP__ARRAY_LEN(sync_signals); i++)
        sigdelset(&set, sync_signals[i]);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    internal_thread = true;
}

/* ---- Python's set_wakeup_fd, siginterrupt, pause, pthread_kill ------------------- */

int mp_signal_set_wakeup_fd(int fd, int *old_fd)
{
    if (fd >= 0) {
        int fl = fcntl(fd, F_GETFL);
        if (fl < 0)
            return mp__errno("mp_signal_set_wakeup_fd: fd %d", fd);
        if (!(fl & O_NONBLOCK)) /* a blocking write would hang the signal handler */
            return mp__error(MP_EINVAL, "mp_signal_set_wakeup_fd: fd %d is not non-blocking", fd);
    }
    int old = atomic_exchange(&user_wake_fd, fd < 0 ? -1 : fd);
    if (old_fd)
        *old_fd = old;
    return 0;
}

int mp_signal_siginterrupt(int signum, bool interrupt)
{
    int r = check_catchable(signum, "mp_signal_siginterrupt");
    if (r < 0)
        return r;
    struct sigaction sa;
    pthread_mutex_lock(&table_lock); /* no mp_signal_set_handler in between */
    if (sigaction(signum, NULL, &sa) == 0) {
        if (interrupt)
            sa.sa_flags &= ~SA_RESTART;
        else
            sa.sa_flags |= SA_RESTART;
        if (sigaction(signum, &sa, NULL) < 0)
            r = mp__errno("sigaction(%s)", mp_signal_name(signum));
    } else {
        r = mp__errno("sigaction(%s)", mp_signal_name(signum));
    }
    pthread_mutex_unlock(&table_lock);
    return r;
}

/* Every signal blocked while we look for recorded deliveries, then sigsuspend with the
 * caller's mask: a signal arriving just before the wait cannot be missed (pause(2)
 * would sleep through it). */
int mp_signal_pause(void)
{
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    if (atomic_load(&any_pending) == 0)
        sigsuspend(&old);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return mp_signal_dispatch();
}

int mp_signal_pthread_kill(pthread_t thread, int signum)
{
    int r = check_sendable(signum, "mp_signal_pthread_kill");
    if (r < 0)
        return r;
    if (thread == (pthread_t)0) /* glibc dereferences the handle: no thread is 0 */
        return mp__error(-ESRCH, "mp_signal_pthread_kill: no thread 0");
    int e = pthread_kill(thread, signum);
    if (e)
        return mp__error(-e, "pthread_kill(%s)", signum ? mp_signal_name(signum) : "0");
    return 0;
}
