/* Private helpers shared by every module: error reporting, EINTR-safe syscalls,
 * fd utilities, clocks and deadlines, futexes. Internal symbols use the mp__ prefix. */
#ifndef MP_INTERNAL_COMMON_H
#define MP_INTERNAL_COMMON_H

#include "multiproc/error.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- errors --------------------------------------------------------------------- */

/* Record `code` with a printf-style detail as this thread's last error; returns code
 * so callers can write `return mp__error(-errno, "open '%s'", path);`. Keeps errno. */
int mp__error(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The last error's message without the "NAME: description: " prefix mp__error put on it:
 * what to pass when re-reporting a failure in one's own words,
 *     mp__error(code, "accept on '%s': %s", address, mp__last_error_detail());
 * so the prefix appears once. A message without a detail gives its description. The
 * pointer is into the thread's last message: copy it before anything else may fail. */
const char *mp__last_error_detail(void);

/* -errno as a code, recorded with a detail message. */
#define mp__errno(...) mp__error(-errno, __VA_ARGS__)

/* Only failures of a public call set the last error. An internal attempt that may fail
 * on the way to a success (a probe, a first try with a fallback) must not leave its
 * message behind:
 * - mute: while muted, mp__error returns the code and records nothing (cheap, for hot
 *   paths; the fallback records its own error if it fails too). Nests:
 *       bool was = mp__error_mute(true); ...; mp__error_mute(was);
 * - save/restore: keep the message of a failure the call tolerates, then put the
 *   caller's last error back. */
bool mp__error_mute(bool on); /* returns the previous state */
typedef struct mp__error_saved {
    int code;
    char msg[1024];
} mp__error_saved;
void mp__error_save(mp__error_saved *s);
void mp__error_restore(const mp__error_saved *s);

/* ---- EINTR-safe syscalls (retry on EINTR, keep errno) ------------------------------ */

ssize_t mp__read(int fd, void *buf, size_t n);           /* one read, retried on EINTR */
ssize_t mp__write(int fd, const void *buf, size_t n);    /* one write, retried on EINTR */
int mp__read_full(int fd, void *buf, size_t n);   /* 0, -errno, or MP_EEOF if short */
int mp__write_full(int fd, const void *buf, size_t n); /* 0 or -errno */
int mp__close(int fd);                                 /* close; EINTR is not retried */
int mp__dup_cloexec(int fd, int min_fd);               /* F_DUPFD_CLOEXEC */
int mp__set_cloexec(int fd, bool on);
int mp__set_nonblock(int fd, bool on);
int mp__pipe(int fds[2]);                              /* O_CLOEXEC pipe, -errno */

/* The library never holds an fd numbered 0, 1 or 2: when the program has closed one
 * of them, the next fd the kernel hands out takes that number, and every child
 * inheriting its stdin/stdout/stderr would get a library pipe or socket instead of
 * the closed stream (a `cat` reading our own stdout pipe hangs forever). Every place
 * the library creates an fd wraps the call: `fd = mp__fd_high(open(...))`.
 * mp__fd_high(fd): fd itself when fd > 2 or fd < 0 (errno untouched); else a
 * close-on-exec copy >= 3 (the original is closed), or -1 with errno set (the
 * original closed too). mp__fd_high2(r, fds): the same for the two fds of a
 * pipe2/socketpair that returned r; returns 0, or r/-1 with errno (both closed). */
int mp__fd_high(int fd);
int mp__fd_high2(int r, int fds[2]);
/* fopen(path, "re") through mp__fd_high; NULL with errno on failure. */
FILE *mp__fopen_read(const char *path);

/* ---- time ----------------------------------------------------------------------- */

double mp__now(void); /* CLOCK_MONOTONIC seconds */

/* A deadline from a timeout in the library's convention: timeout < 0 waits forever
 * (deadline = -1), 0 polls, > 0 is seconds from now. */
double mp__deadline(double timeout);

/* The deadline of an options-struct limit (`..._limit`): negative (MP_NO_LIMIT) is none,
 * 0 is the field's default `dflt` (negative: none), positive is seconds from now. */
double mp__limit_deadline(double limit, double dflt);

/* MP_EINVAL (with "<what> <value>" in the message) for a NaN limit, else 0. */
int mp__limit_check(double limit, const char *what);

/* The default handshake limit of listeners, clients and managers (seconds). */
#define MP__HANDSHAKE_DEFAULT 20.0

/* Milliseconds left until `deadline` for poll(): -1 forever, 0 when past. */
int mp__ms_left(double deadline);

/* Seconds left (negative = forever, 0 when past). */
double mp__left(double deadline);

/* An absolute CLOCK_MONOTONIC timespec for the deadline (for futex waits). */
struct timespec;
void mp__deadline_ts(double deadline, struct timespec *ts);

/* The CLOCK_REALTIME time `secs` (>= 0) from now, for the calls that only take that
 * clock (pthread_mutex_timedlock). A jump of the wall clock moves such a time, so long
 * waits use it for bounded slices and keep their deadline with mp__now. */
void mp__realtime_after(double secs, struct timespec *ts);

/* ---- futex ---------------------------------------------------------------------- */

/* Waiting on a futex word: mp__iwait_futex (internal/iwait.h), which runs the deferred
 * signal handlers and is woken by signals. */
int mp__futex_wake(_Atomic uint32_t *addr, int n); /* wake up to n waiters */

/* Locks in shared memory (a dead holder's successor gets MP_EOWNERDEAD instead of
 * hanging): internal/rfutex.h. */

/* ---- signals ------------------------------------------------------------------ */

/* Runs the pending deferred handlers on this thread (the signals module) and returns
 * MP_EINTERRUPTED if one of them asked blocking calls to stop, else 0 and the caller
 * resumes waiting with the time that is left. The interruptible waits (internal/iwait.h)
 * call it before they sleep and after a wake-up; a call whose own system call failed
 * with EINTR calls it too. Does nothing on a library-internal thread. Weak default:
 * returns 0. */
int mp__signal_dispatch_pending(void);

/* ---- processes ------------------------------------------------------------------ */

int mp__pidfd_open(pid_t pid);           /* O_CLOEXEC pidfd, or -errno */
int mp__pidfd_send_signal(int pidfd, int sig);
/* Wait for a child's exit through its pidfd until the deadline; on exit reaps it
 * and stores a Python-style returncode (exit status, or -signal). 0, MP_ETIMEOUT,
 * MP_EINTERRUPTED, -ECHILD when someone else reaped it (a waitpid(-1) in a SIGCHLD
 * handler, or SIGCHLD ignored: the status is lost, the caller picks what to report),
 * or -errno. */
int mp__pidfd_wait(int pidfd, double deadline, int *returncode);

/* Allocation helpers that report -ENOMEM through mp__error. */
void *mp__calloc(size_t n, size_t size);
char *mp__strdup(const char *s);
/* A newly allocated formatted string (free()), or NULL with -ENOMEM recorded. */
char *mp__strdup_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#define MP__ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
