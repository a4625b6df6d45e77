/* The registry of started, not yet reaped children, and waiting for a child's end.
 * The process module's files: see core.h.
 *
 * DESIGN
 * - Who runs where: the creating process (the "owner") starts, polls, signals and
 *   joins its children; the child runs mp__proc_run() and leaves through
 *   mp_process_exit(), which never returns to the caller's main.
 * - Shared state: the registry of started, not yet reaped children (a list under
 *   reg_lock, recursive because reaping from inside an iteration unlinks entries) and
 *   the default start method (under reg_lock too). A process object itself is used
 *   by one thread at a time, as in Python.
 * - Child death is observed through pidfds (fork/spawn) or the forkserver's status
 *   connection, never through a SIGCHLD handler.
 * - Waiting: a child's end is collected once (a status read, a waitid), so one thread
 *   at a time waits for a given process, under its wait_lock. A poll from another
 *   thread (start() reaping finished children, is_alive, active_children) that finds
 *   it taken reports the process as still running; a second joiner waits for the
 *   first and then sees the result.
 * - Lock order: a process's wait_lock before reg_lock (finishing a wait unlinks the
 *   process), never the reverse: under reg_lock only trylock, or a blocking wait at
 *   exit that releases wait_lock before it needs reg_lock. The forkserver client's
 *   start-up lock (forkserver.c) is never taken while holding either.
 * - Fork: the child re-initialises reg_lock and forgets the parent's children (their
 *   fds are closed in the child), like Python's `_children = set()`. It runs nothing
 *   before the parent holds its pidfd (the start pipe, see await_go): a pid is never
 *   looked up or signalled after the child could have been reaped. */
#define _GNU_SOURCE
#include "process/core.h"
#include "internal/common.h"
#include "internal/iwait.h"

#include <poll.h>
#include <pthread.h>
#include <time.h>

pthread_mutex_t mp__proc_reg_lock = PTHREAD_RECURSIVE_MUTEX_INITIALIZER_NP;
mp_process *mp__proc_reg_head;

/* ---- the registry -------------------------------------------------------------- */

void mp__proc_reg_add(mp_process *p)
{
    pthread_mutex_lock(&mp__proc_reg_lock);
    p->prev = NULL;
    p->next = mp__proc_reg_head;
    if (mp__proc_reg_head)
        mp__proc_reg_head->prev = p;
    mp__proc_reg_head = p;
    p->in_reg = true;
    pthread_mutex_unlock(&mp__proc_reg_lock);
}

void mp__proc_reg_remove(mp_process *p)
{
    pthread_mutex_lock(&mp__proc_reg_lock);
    if (p->in_reg) {
        if (p->prev)
            p->prev->next = p->next;
        else
            mp__proc_reg_head = p->next;
        if (p->next)
            p->next->prev = p->prev;
        p->in_reg = false;
    }
    pthread_mutex_unlock(&mp__proc_reg_lock);
}

/* ---- waiting ------------------------------------------------------------------- */

/* Under wait_lock: the end is known. The pidfd stays until close/free: the owner may be
 * signalling through it from another thread at this very moment. */
static void mark_done(mp_process *p, int rc)
{
    p->exitcode = rc;
    p->state = ST_DONE;
}

/* Take p's wait_lock: at once when polling, else until the deadline. */
static int lock_wait(mp_process *p, double deadline)
{
    double left = mp__left(deadline);
    int r;
    if (left == 0)
        r = pthread_mutex_trylock(&p->wait_lock);
    else if (left < 0)
        r = pthread_mutex_lock(&p->wait_lock);
    else {
        struct timespec ts;
        mp__realtime_after(left, &ts);
        r = pthread_mutex_timedlock(&p->wait_lock, &ts);
    }
    return r == 0 ? 0 : MP_ETIMEOUT; /* EBUSY, ETIMEDOUT: another thread is waiting */
}
static int proc_wait_locked(mp_process *p, double deadline, int *out);

/* Collect p's end if it comes before the deadline (0 polls, -1 forever). 0 when it
 * has ended (p may be freed if detached), MP_ETIMEOUT, or an error. */
int mp__proc_wait(mp_process *p, double deadline)
{
    if (p->state != ST_STARTED)
        return 0;
    int r = lock_wait(p, deadline), rc = 0;
    if (r < 0)
        return r;
    if (p->state != ST_STARTED) { /* another thread collected it meanwhile */
        pthread_mutex_unlock(&p->wait_lock);
        return 0;
    }
    r = proc_wait_locked(p, deadline, &rc);
    if (r == 0)
        mark_done(p, rc);
    pthread_mutex_unlock(&p->wait_lock);
    if (r == 0) {
        mp__proc_reg_remove(p);
        if (p->detached)
            mp__proc_destroy(p);
    }
    return r;
}

/* The wait itself: 0 with *out, MP_ETIMEOUT, or an error. */
static int proc_wait_locked(mp_process *p, double deadline, int *out)
{
    int rc = 0, r;
    if (p->method == MP_START_FORKSERVER) {
        r = mp__iwait_poll1(p->statfd, POLLIN, deadline);
        if (r < 0)
            return r;
        if (r == 0)
            return MP_ETIMEOUT;
        r = mp__fs_read_status(p->statfd, &rc);
        if (r == MP_EEOF) {
            /* The server died: the status is lost. The pidfd still tells the end. */
            int w = p->pidfd >= 0 ? mp__iwait_poll1(p->pidfd, POLLIN, deadline) : 1;
            if (w == 0)
                return MP_ETIMEOUT;
            rc = 255;
        } else if (r < 0) {
            return r;
        }
    } else {
        r = mp__pidfd_wait(p->pidfd, deadline, &rc);
        if (r == MP_ETIMEOUT || r == MP_EINTERRUPTED)
            return r;
        if (r == -ECHILD) /* reaped behind our back (waitpid(-1)?): status lost */
            rc = 255;
        else if (r < 0)
            return mp__error(r, "waiting for process %s (pid %d)", p->name, (int)p->pid);
    }
    *out = rc;
    return 0;
}

double mp__proc_poll_now(void) { return mp__deadline(0); }

/* Python's _cleanup(): reap finished children so no zombies accumulate. */
void mp__proc_reap_finished(void)
{
    pthread_mutex_lock(&mp__proc_reg_lock);
    for (mp_process *p = mp__proc_reg_head, *next; p; p = next) {
        next = p->next;
        mp__proc_wait(p, mp__proc_poll_now());
    }
    pthread_mutex_unlock(&mp__proc_reg_lock);
}

int mp_active_children(mp_process **out, size_t max)
{
    int n = 0;
    pthread_mutex_lock(&mp__proc_reg_lock);
    for (mp_process *p = mp__proc_reg_head, *next; p; p = next) {
        next = p->next;
        bool detached = p->detached;
        if (mp__proc_wait(p, mp__proc_poll_now()) != MP_ETIMEOUT || detached)
            continue;
        if (out && (size_t)n < max)
            out[n] = p;
        n++;
    }
    pthread_mutex_unlock(&mp__proc_reg_lock);
    return n;
}
