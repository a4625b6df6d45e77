/* The subprocess I/O engine: growing output buffers, the SIGPIPE guard, and one poll
 * loop over the parent's ends of a child's stdin, stdout and stderr.
 *
 * DESIGN
 * - Who runs where: the engine runs on the calling thread, one handle (or pipeline)
 *   at a time; nothing is shared between engines.
 * - All its state (input offset, the buffers read so far) lives in struct io, so a
 *   call interrupted by a timeout or a signal loses nothing and can be repeated.
 *   Buffers grow geometrically and reads are large.
 * - SIGPIPE: while we write to a child's stdin the thread blocks SIGPIPE; a SIGPIPE
 *   we caused is consumed before unblocking, so the program never dies of a child
 *   that closed its stdin.
 */
#define _GNU_SOURCE
#include "subprocess/sub.h"
#include "internal/common.h"
#include "internal/iwait.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- SIGPIPE guard -------------------------------------------------------------- */

void mp__sigpipe_block(pipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
    g->active = true;
}

/* A SIGPIPE our write raised is thread-directed and pending on this thread: take it
 * before unblocking, unless one was already pending before we started. */
void mp__sigpipe_unblock(pipe_guard *g, bool got_epipe)
{
    if (!g->active)
        return;
    if (got_epipe && !g->was_pending) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    g->active = false;
}

/* ---- the I/O engine ------------------------------------------------------------- */

void mp__io_init(io *x)
{
    memset(x, 0, sizeof *x);
    x->fd[0] = x->fd[1] = x->fd[2] = -1;
}

void mp__io_close(io *x, int i)
{
    mp__close(x->fd[i]);
    x->fd[i] = -1;
}

void mp__io_release(io *x)
{
    for (int i = 0; i < 3; i++) {
        mp__io_close(x, i);
        mp__buf_free(&x->buf[i]);
    }
}

/* One write of the remaining input. 0 or -errno; EPIPE ends the input quietly. */
static int io_write_some(io *x)
{
    size_t n = x->in_len - x->in_off;
    ssize_t w = n ? mp__write(x->fd[0], x->input + x->in_off, n < WRITE_MAX ? n : WRITE_MAX)
                  : 0;
    if (w < 0) {
        if (errno == EAGAIN)
            return 0;
        if (errno != EPIPE)
            return mp__errno("writing to the child's stdin");
        x->epipe = true; /* the child stopped reading: like Python, not an error */
        mp__io_close(x, 0);
        return 0;
    }
    x->in_off += (size_t)w;
    if (x->in_off >= x->in_len)
        mp__io_close(x, 0);
    return 0;
}

/* One read into buf[i]: >0 bytes, 0 at EOF (fd closed), -EAGAIN, or -errno. */
ssize_t mp__io_read_some(io *x, int i)
{
    mp__buf *b = &x->buf[i];
    size_t want = b->len < READ_MIN ? READ_MIN : (b->len < READ_MAX ? b->len : READ_MAX);
    if (mp__buf_reserve(b, want) < 0)
        return -ENOMEM;
    ssize_t r = mp__read(x->fd[i], b->data + b->len, b->cap - b->len - 1);
    if (r > 0) {
        b->len += (size_t)r;
        return r;
    }
    if (r == 0) {
        mp__io_close(x, i);
        return 0;
    }
    if (errno == EAGAIN)
        return -EAGAIN;
    return mp__errno("reading the child's %s", i == 1 ? "stdout" : "stderr");
}

static int io_start_writing(io *x, pipe_guard *g)
{
    if (x->fd[0] < 0)
        return 0;
    if (x->in_off >= x->in_len) {
        mp__io_close(x, 0);
        return 0;
    }
    if (!x->in_nonblock) {
        /* Non-blocking: a blocking write bigger than the free pipe space would wait
         * for the child, which may itself wait for us to read its output. */
        int rc = mp__set_nonblock(x->fd[0], true);
        if (rc < 0)
            return mp__error(rc, "stdin pipe: O_NONBLOCK");
        x->in_nonblock = true;
    }
    mp__sigpipe_block(g);
    return 0;
}

/* One round: poll every open end and serve what is ready. 0, MP_ETIMEOUT, or an
 * error; MP_EINTERRUPTED if a deferred handler asked to stop. */
static int io_round(io *x, double deadline)
{
    struct pollfd pf[3];
    int idx[3], n = 0;
    for (int i = 0; i < 3; i++)
        if (x->fd[i] >= 0) {
            pf[n] = (struct pollfd){.fd = x->fd[i], .events = i == 0 ? POLLOUT : POLLIN};
            idx[n++] = i;
        }
    int r = mp__iwait_poll(pf, (nfds_t)n, deadline);
    if (r == 0)
        return MP_ETIMEOUT;
    if (r < 0)
        return r == MP_EINTERRUPTED ? r : mp__error(r, "poll");
    for (int k = 0; k < n; k++) {
        if (!pf[k].revents)
            continue;
        int i = idx[k];
        ssize_t rc = i == 0 ? io_write_some(x) : mp__io_read_some(x, i);
        if (rc < 0 && rc != -EAGAIN)
            return (int)rc;
    }
    return 0;
}

/* Feed the input and read both outputs until every end is closed or the deadline. */
int mp__io_pump(io *x, double deadline)
{
    pipe_guard g = {.active = false};
    int rc = io_start_writing(x, &g);
    while (rc == 0 && (x->fd[0] >= 0 || x->fd[1] >= 0 || x->fd[2] >= 0)) {
        if (deadline >= 0 && mp__now() >= deadline)
            rc = MP_ETIMEOUT; /* a chatty child must not stretch the timeout */
        else
            rc = io_round(x, deadline);
    }
    mp__sigpipe_unblock(&g, x->epipe);
    return rc;
}

/* After the child is gone: take what is already in the pipes, without waiting for
 * an EOF that a grandchild holding the pipe may never give. */
void mp__io_drain(io *x)
{
    for (int i = 1; i < 3; i++) {
        if (x->fd[i] < 0 || mp__set_nonblock(x->fd[i], true) < 0)
            continue;
        for (int rounds = 0; rounds < 64 && x->fd[i] >= 0; rounds++)
            if (mp__io_read_some(x, i) <= 0)
                break;
    }
}
