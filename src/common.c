/* Private helpers: EINTR-safe syscalls, fds, clocks, futexes, pidfds. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/iwait.h"

#include <stdarg.h>

#include <fcntl.h>
#include <linux/futex.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- syscalls ----------------------------------------------------------------- */

ssize_t mp__read(int fd, void *buf, size_t n)
{
    ssize_t r;
    do
        r = read(fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r;
}

ssize_t mp__write(int fd, const void *buf, size_t n)
{
    ssize_t r;
    do
        r = write(fd, buf, n);
    while (r < 0 && errno == EINTR);
    return r;
}

int mp__read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n > 0) {
        ssize_t r = mp__read(fd, p, n);
        if (r < 0)
            return -errno;
        if (r == 0)
            return MP_EEOF;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int mp__write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n > 0) {
        ssize_t r = mp__write(fd, p, n);
        if (r < 0)
            return -errno;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

int mp__close(int fd)
{
    /* Linux always releases the fd, even when close() reports EINTR: never retry. */
    if (fd < 0)
        return 0;
    int r = close(fd);
    return (r < 0 && errno != EINTR) ? -errno : 0;
}

int mp__dup_cloexec(int fd, int min_fd)
{
    int r = fcntl(fd, F_DUPFD_CLOEXEC, min_fd);
    return r < 0 ? -errno : r;
}

int mp__set_cloexec(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFD);
    if (fl < 0)
        return -errno;
    fl = on ? (fl | FD_CLOEXEC) : (fl & ~FD_CLOEXEC);
    return fcntl(fd, F_SETFD, fl) < 0 ? -errno : 0;
}

int mp__set_nonblock(int fd, bool on)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return -errno;
    fl = on ? (fl | O_NONBLOCK) : (fl & ~O_NONBLOCK);
    return fcntl(fd, F_SETFL, fl) < 0 ? -errno : 0;
}

int mp__pipe(int fds[2]) { return mp__fd_high2(pipe2(fds, O_CLOEXEC), fds) < 0 ? -errno : 0; }

int mp__fd_high(int fd)
{
    if (fd < 0 || fd > 2)
        return fd;
    /* Only 0..2 can be free below 3, so F_DUPFD_CLOEXEC from 3 is always above them.
     * Every fd the library creates is close-on-exec, so the copy keeps that. */
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int err = errno;
    close(fd);
    errno = err;
    return moved;
}

FILE *mp__fopen_read(const char *path)
{
    int fd = mp__fd_high(open(path, O_RDONLY | O_CLOEXEC));
    FILE *f = fd < 0 ? NULL : fdopen(fd, "r");
    if (!f && fd >= 0) {
        int err = errno;
        close(fd);
        errno = err;
    }
    return f;
}

int mp__fd_high2(int r, int fds[2])
{
    if (r < 0)
        return r;
    fds[0] = mp__fd_high(fds[0]);
    fds[1] = mp__fd_high(fds[1]);
    if (fds[0] >= 0 && fds[1] >= 0)
        return 0;
    int err = errno;
    if (fds[0] >= 0)
        close(fds[0]);
    if (fds[1] >= 0)
        close(fds[1]);
    errno = err;
    return -1;
}

/* ---- time --------------------------------------------------------------------- */

double mp__now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

double mp__deadline(double timeout)
{
    if (timeout < 0 || isnan(timeout))
        return -1;
    return mp__now() + timeout;
}

double mp__limit_deadline(double limit, double dflt)
{
    if (limit == 0)
        limit = dflt;
    return limit > 0 ? mp__now() + limit : -1;
}

int mp__limit_check(double limit, const char *what)
{
    if (isnan(limit))
        return mp__error(MP_EINVAL, "%s %g (seconds; MP_NO_LIMIT for none)", what, limit);
    return 0;
}

double mp__left(double deadline)
{
    if (deadline < 0)
        return -1;
    double left = deadline - mp__now();
    return left > 0 ? left : 0;
}

int mp__ms_left(double deadline)
{
    if (deadline < 0)
        return -1;
    double left = mp__left(deadline);
    if (left <= 0)
        return 0;
    if (left > 2e6)
        return 2000000000;
    return (int)ceil(left * 1000.0);
}

void mp__deadline_ts(double deadline, struct timespec *ts)
{
    double whole = floor(deadline);
    ts->tv_sec = (time_t)whole;
    ts->tv_nsec = (long)((deadline - whole) * 1e9);
    if (ts->tv_nsec >= 1000000000L)
        ts->tv_nsec = 999999999L;
}

void mp__realtime_after(double secs, struct timespec *ts)
{
    clock_gettime(CLOCK_REALTIME, ts);
    if (!(secs > 0))
        return;
    if (secs > 1e9) /* ~30 years: far enough, and no time_t overflow */
        secs = 1e9;
    double whole = floor(secs);
    long ns = ts->tv_nsec + (long)((secs - whole) * 1e9);
    ts->tv_sec += (time_t)whole + ns / 1000000000L;
    ts->tv_nsec = ns % 1000000000L;
}

/* ---- futex -------------------------------------------------------------------- */

int mp__futex_wake(_Atomic uint32_t *addr, int n)
{
    long r = syscall(SYS_futex, addr, FUTEX_WAKE, n, NULL, NULL, 0);
    return r < 0 ? -errno : (int)r;
}

/* ---- signals ------------------------------------------------------------------ */

/* The signals module defines the real one; without it nothing is ever pending. */
__attribute__((weak)) int mp__signal_dispatch_pending(void) { return 0; }

/* ---- processes ---------------------------------------------------------------- */

int mp__pidfd_open(pid_t pid)
{
    int r = mp__fd_high((int)syscall(SYS_pidfd_open, pid, 0));
    return r < 0 ? -errno : r; /* pidfds are always close-on-exec */
}

int mp__pidfd_send_signal(int pidfd, int sig)
{
    long r = syscall(SYS_pidfd_send_signal, pidfd, sig, NULL, 0);
    return r < 0 ? -errno : 0;
}

int mp__pidfd_wait(int pidfd, double deadline, int *returncode)
{
    int r = mp__iwait_poll1(pidfd, POLLIN, deadline);
    if (r < 0)
        return r;
    if (r == 0)
        return MP_ETIMEOUT;
    /* Readable: the process has ended, so this waitid does not block. */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    int w;
    do
        w = waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED);
    while (w < 0 && errno == EINTR);
    if (w < 0)
        return errno == ECHILD ? -ECHILD : mp__errno("waitid on pidfd %d", pidfd);
    *returncode = si.si_code == CLD_EXITED ? si.si_status : -si.si_status;
    return 0;
}

void *mp__calloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p)
        mp__error(-ENOMEM, "allocating %zu bytes", n * size);
    return p;
}

char *mp__strdup_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s = NULL;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        mp__error(-ENOMEM, "formatting a string");
    return s;
}

char *mp__strdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        mp__error(-ENOMEM, "copying a string");
    return p;
}
