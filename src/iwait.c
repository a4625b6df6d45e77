/* Interruptible waits: the one place where a library call goes to sleep.
 *
 * DESIGN
 * - The race to close: a deferred handler runs when someone dispatches. A wait that
 *   only dispatches after its sleep fails with EINTR misses a signal that arrived
 *   before the call (it is pending, nothing interrupts anything) and one that lands
 *   between a check and the sleep. So every wait (1) makes the signal observable by
 *   its sleep, (2) dispatches, (3) sleeps on something the signal handler changes:
 *   - poll waits add the signals module's wake-up pipe to the poll set (asked for in
 *     step 1, so from then on the handler writes a byte for every delivery);
 *   - futex waits read `sig_seq` (step 1), which the handler bumps, and sleep with
 *     futex_waitv on the object's word and on `sig_seq` at that value: a signal after
 *     the read makes the kernel return EAGAIN at once, one during the sleep wakes it
 *     (FUTEX_WAKE from the handler when `seq_sleepers` says someone sleeps; the
 *     sleeper counts itself before reading sig_seq, both seq_cst, so either the
 *     handler sees the sleeper or the sleeper sees the new value).
 * - After waking for a signal the wait dispatches again; a handler asking to stop ends
 *   it with MP_EINTERRUPTED, otherwise it goes on with the time left (PEP 475).
 * - Cost: nothing on any fast path (callers come here only to sleep). In a process that
 *   never installed a handler through the library (no wake-up pipe) these are the plain
 *   system calls. The futex_waitv probe result is cached: ENOSYS once, then the old
 *   single-word futex wait (documented in iwait.h).
 * - Shared state: sig_seq, seq_sleepers, waitv_missing: process-local atomics.
 */
#define _GNU_SOURCE
#include "internal/iwait.h"

#include "internal/common.h"
#include "internal/sigutil.h"

#include <limits.h>
#include <linux/futex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_futex_waitv
#define SYS_futex_waitv 449
#endif

static _Atomic uint32_t sig_seq; /* bumped by every handled signal */
static atomic_int seq_sleepers;  /* futex waits sleeping on sig_seq right now */
static atomic_int waitv_missing; /* futex_waitv said ENOSYS */

/* ---- signal context ------------------------------------------------------------- */

void mp__iwait_signal_arrived(void)
{
    atomic_fetch_add(&sig_seq, 1);
    if (atomic_load(&seq_sleepers) > 0)
        syscall(SYS_futex, &sig_seq, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
}

/* ---- poll ----------------------------------------------------------------------- */

/* poll() retried on EINTR after dispatching: the plain wait, when no handler exists or
 * there is no time to sleep. */
static int plain_poll(struct pollfd *fds, nfds_t n, double deadline)
{
    for (;;) {
        int r = poll(fds, n, mp__ms_left(deadline));
        if (r >= 0)
            return r;
        if (errno != EINTR)
            return -errno;
        int code = mp__signal_dispatch_pending();
        if (code < 0)
            return code;
    }
}

/* One poll of the caller's fds plus the wake-up pipe (last). The caller's revents are
 * copied back; *woken says the pipe was readable. Ready count of the caller's fds,
 * or -errno (EINTR included). */
static int poll_with_wake(struct pollfd *fds, nfds_t n, int wfd, double deadline, bool *woken)
{
    struct pollfd stack[16];
    struct pollfd *all = n < 16 ? stack : malloc((n + 1) * sizeof *all);
    if (!all)
        return -ENOMEM;
    if (n)
        memcpy(all, fds, n * sizeof *all);
    all[n] = (struct pollfd){.fd = wfd, .events = POLLIN};
    int r = poll(all, n + 1, mp__ms_left(deadline));
    int err = errno;
    if (r >= 0) {
        *woken = all[n].revents != 0;
        r -= *woken;
        for (nfds_t i = 0; i < n; i++)
            fds[i].revents = all[i].revents;
    }
    if (all != stack)
        free(all);
    errno = err;
    return r < 0 ? -err : r;
}

int mp__iwait_poll(struct pollfd *fds, nfds_t n, double deadline)
{
    for (;;) {
        if (mp__ms_left(deadline) == 0)
            return plain_poll(fds, n, deadline); /* no sleep: no handlers */
        int wfd = mp__signal_wake_fd();          /* from now on every signal writes a byte */
        if (wfd < 0)
            return plain_poll(fds, n, deadline);
        int code = mp__signal_dispatch_pending();
        if (code < 0)
            return code;
        bool woken = false;
        int r = poll_with_wake(fds, n, wfd, deadline, &woken);
        if (r < 0 && r != -EINTR)
            return r;
        if (woken || r == -EINTR) {
            code = mp__signal_dispatch_woken();
            if (code < 0)
                return code;
        }
        if (r > 0 || (r == 0 && !woken && mp__ms_left(deadline) == 0))
            return r;
    }
}

int mp__iwait_poll1(int fd, short events, double deadline)
{
    struct pollfd p = {.fd = fd, .events = events};
    int r = mp__iwait_poll(&p, 1, deadline);
    return r > 0 ? p.revents : r;
}

/* ---- futex ---------------------------------------------------------------------- */

/* The single-word wait: 0 (woken, value differs, or a signal interrupted it and no
 * handler asked to stop), MP_ETIMEOUT, MP_EINTERRUPTED, -errno. */
static int futex_wait1(_Atomic uint32_t *word, uint32_t expected, double deadline)
{
    struct timespec ts, *tsp = NULL;
    if (deadline >= 0) {
        mp__deadline_ts(deadline, &ts);
        tsp = &ts;
    }
    /* FUTEX_WAIT_BITSET takes an absolute CLOCK_MONOTONIC deadline. Shared (not
     * private): the word may live in memory other processes map. */
    long r =
        syscall(SYS_futex, word, FUTEX_WAIT_BITSET, expected, tsp, NULL, FUTEX_BITSET_MATCH_ANY);
    if (r == 0 || errno == EAGAIN)
        return 0;
    if (errno == ETIMEDOUT)
        return MP_ETIMEOUT;
    if (errno == EINTR) {
        int code = mp__signal_dispatch_pending();
        return code < 0 ? code : 0;
    }
    return -errno;
}

/* futex_waitv on the object's word and sig_seq: 0 (woken, a value differs, or a
 * signal), MP_ETIMEOUT, -ENOSYS, -errno. */
static int futex_wait2(_Atomic uint32_t *word, uint32_t expected, uint32_t seq, double deadline)
{
    struct futex_waitv w[2];
    memset(w, 0, sizeof w);
    w[0].uaddr = (uint64_t)(uintptr_t)word;
    w[0].val = expected;
    w[0].flags = FUTEX_32; /* shared: the word may be in another process's mapping too */
    w[1].uaddr = (uint64_t)(uintptr_t)&sig_seq;
    w[1].val = seq;
    w[1].flags = FUTEX_32 | FUTEX_PRIVATE_FLAG;
    struct timespec ts, *tsp = NULL;
    if (deadline >= 0) {
        mp__deadline_ts(deadline, &ts);
        tsp = &ts;
    }
    long r = syscall(SYS_futex_waitv, w, 2, 0, tsp, CLOCK_MONOTONIC);
    if (r >= 0 || errno == EAGAIN || errno == EINTR)
        return 0;
    return errno == ETIMEDOUT ? MP_ETIMEOUT : -errno;
}

void mp__iwait_without_waitv(bool on)
{
    atomic_store(&waitv_missing, on);
}

int mp__iwait_futex(_Atomic uint32_t *word, uint32_t expected, double deadline)
{
    if (!mp__signal_in_use() || (deadline >= 0 && mp__left(deadline) <= 0))
        return futex_wait1(word, expected, deadline);
    if (atomic_load_explicit(&waitv_missing, memory_order_relaxed)) {
        int code = mp__signal_dispatch_pending(); /* the window stays open: iwait.h */
        return code < 0 ? code : futex_wait1(word, expected, deadline);
    }
    atomic_fetch_add(&seq_sleepers, 1);
    uint32_t seq = atomic_load(&sig_seq); /* before the check: a later signal changes it */
    int r = mp__signal_dispatch_pending();
    if (r == 0)
        r = futex_wait2(word, expected, seq, deadline);
    atomic_fetch_sub(&seq_sleepers, 1);
    if (r == -ENOSYS) {
        atomic_store(&waitv_missing, 1);
        return futex_wait1(word, expected, deadline);
    }
    if (r == 0)
        r = mp__signal_dispatch_pending(); /* whatever woke us: a signal may have */
    return r;
}
