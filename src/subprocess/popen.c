/* The subprocess Popen handle: waiting, signals, communicate, readline, write.
 *
 * DESIGN
 * - Who runs where: everything runs on the calling thread. Children are started by
 *   mp__spawn (src/spawn.c) and watched through their pidfds: no SIGCHLD handler,
 *   no helper thread. A handle is used by one thread at a time; different handles
 *   share nothing, so threads may run children side by side.
 * - The I/O engine (struct io) is one poll loop over the parent's ends of stdin,
 *   stdout and stderr. All its state (input offset, the buffers read so far) lives
 *   in the struct, so a call interrupted by a timeout or a signal loses nothing and
 *   can be repeated. Buffers grow geometrically and reads are large.
 * - SIGPIPE: while we write to a child's stdin the thread blocks SIGPIPE; a SIGPIPE
 *   we caused is consumed before unblocking, so the program never dies of a child
 *   that closed its stdin.
 * - Timeouts (bpo-37424): after a timeout run() kills the child (its group with
 *   kill_group), reaps it, then reads only what is already in the pipes, so a
 *   grandchild holding a pipe open cannot make it hang.
 */
#define _GNU_SOURCE
#include "subprocess/sub.h"
#include "internal/common.h"
#include "internal/iwait.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the handle ----------------------------------------------------------------- */

/* Wait for the child's exit until the deadline and reap it. 0, MP_ETIMEOUT,
 * MP_EINTERRUPTED or -errno. */
int mp__child_reap(mp_popen *p, double deadline)
{
    if (p->exited)
        return 0;
    int rc = 0;
    int r = mp__pidfd_wait(p->pidfd, deadline, &rc);
    /* -ECHILD: someone else (a SIGCHLD handler calling waitpid(-1)) reaped it and the
     * status is lost; Python reports 0 too. */
    if (r < 0 && r != -ECHILD)
        return r;
    p->exited = true;
    p->returncode = rc;
    return 0;
}

/* Reap, ignoring interruptions: used when we have killed the child. */
void mp__child_reap_blocking(mp_popen *p)
{
    while (mp__child_reap(p, -1) == MP_EINTERRUPTED)
        ;
}

int mp__popen_signal(mp_popen *p, int sig)
{
    if (p->exited || p->forgotten)
        return 0; /* never signal a pid that may have been recycled */
    if (p->group) {
        /* The leader is not reaped yet, so -pid still names its group. */
        if (kill(-p->pid, sig) < 0 && errno != ESRCH)
            return mp__errno("signal %d to process group %d", sig, (int)p->pid);
        return 0;
    }
    int r = mp__pidfd_send_signal(p->pidfd, sig);
    if (r < 0 && r != -ESRCH)
        return mp__error(r, "signal %d to pid %d", sig, (int)p->pid);
    return 0;
}

void mp__popen_take_result(mp_popen *p, mp_run_result *res)
{
    memset(res, 0, sizeof *res);
    res->returncode = p->returncode;
    res->pid = p->pid;
    if (p->io.piped[1]) {
        mp__buf_consume(&p->io.buf[1], p->rd_off);
        res->out = mp__buf_take(&p->io.buf[1], &res->out_len);
    }
    p->rd_off = 0;
    if (p->io.piped[2])
        res->err = mp__buf_take(&p->io.buf[2], &res->err_len);
}


/* ---- Popen API ------------------------------------------------------------------ */

mp_popen *mp_popen_start(const char *const *argv, const mp_subprocess_opts *opts)
{
    mp_popen *p = NULL;
    mp__popen_create((char *const *)argv, opts ? opts->executable : NULL, opts, false, &p);
    return p;
}

mp_popen *mp_popen_start_sh(const char *cmdline, const mp_subprocess_opts *opts)
{
    if (!cmdline) {
        mp__error(MP_EINVAL, "mp_popen_start_sh: NULL cmdline");
        return NULL;
    }
    mp_popen *p = NULL;
    SH_ARGV(argv, cmdline);
    mp__popen_create(argv, mp__sh_file(opts), opts, false, &p);
    return p;
}

pid_t mp_popen_pid(const mp_popen *p) { return p ? p->pid : -1; }

int mp_popen_pidfd(const mp_popen *p) { return p ? p->pidfd : -1; }

int mp_popen_fd(const mp_popen *p, int which)
{
    return p && which >= 0 && which < 3 ? p->io.fd[which] : -1;
}

int mp_popen_close_fd(mp_popen *p, int which)
{
    if (!p || which < 0 || which > 2)
        return mp__error(MP_EINVAL, "mp_popen_close_fd: bad handle or stream %d", which);
    mp__io_close(&p->io, which);
    return 0;
}

int mp_popen_poll(mp_popen *p, int *returncode)
{
    if (!p)
        return mp__error(MP_EINVAL, "mp_popen_poll: NULL handle");
    int rc = mp__child_reap(p, 0);
    if (rc == MP_ETIMEOUT)
        return 0;
    if (rc < 0)
        return rc;
    if (returncode)
        *returncode = p->returncode;
    return 1;
}

int mp_popen_wait(mp_popen *p, double timeout, int *returncode)
{
    if (!p)
        return mp__error(MP_EINVAL, "mp_popen_wait: NULL handle");
    int rc = mp__child_reap(p, mp__deadline(timeout));
    if (rc == MP_ETIMEOUT)
        return mp__error(rc, "'%s' still running after %g seconds", p->desc, timeout);
    if (rc < 0)
        return rc;
    if (returncode)
        *returncode = p->returncode;
    return 0;
}

int mp_popen_communicate(mp_popen *p, const void *input, size_t len, double timeout,
                         mp_run_result *res)
{
    if (!p)
        return mp__error(MP_EINVAL, "mp_popen_communicate: NULL handle");
    if (input && !p->io.piped[0])
        return mp__error(MP_EINVAL, "communicate: input given but stdin is not a pipe");
    if (!p->comm_started) {
        p->comm_started = true;
        p->io.input = input;
        p->io.in_len = input ? len : 0;
    } else if (input) {
        p->io.input = input; /* the same bytes again: the offset is kept */
    }
    double deadline = mp__deadline(timeout);
    int rc = mp__io_pump(&p->io, deadline);
    if (rc == 0)
        rc = mp__child_reap(p, deadline);
    if (rc == MP_ETIMEOUT)
        return mp__error(rc, "communicate with '%s': timed out after %g seconds", p->desc,
                         timeout);
    if (rc < 0)
        return rc;
    if (res)
        mp__popen_take_result(p, res);
    return 0;
}

/* Copy `n` bytes of buffered stdout out as the current line. */
static int emit_line(mp_popen *p, size_t n, const char **line, size_t *len)
{
    mp__buf *b = &p->io.buf[1];
    p->line.len = 0;
    if (mp__buf_reserve(&p->line, n) < 0)
        return -ENOMEM;
    memcpy(p->line.data, b->data + p->rd_off, n);
    p->line.data[n] = 0;
    p->line.len = n;
    p->rd_off += n;
    if (p->rd_off == b->len)
        p->rd_off = b->len = 0;
    *line = p->line.data;
    if (len)
        *len = n;
    return 0;
}

/* Keep the unread tail at the front so the buffer does not grow with consumed lines. */
static void compact_stdout(mp_popen *p)
{
    mp__buf *b = &p->io.buf[1];
    if (p->rd_off == 0 || p->rd_off < b->len / 2)
        return;
    mp__buf_consume(b, p->rd_off);
    p->rd_off = 0;
}

int mp_popen_readline(mp_popen *p, const char **line, size_t *len, double timeout)
{
    if (!p || !line)
        return mp__error(MP_EINVAL, "mp_popen_readline: NULL argument");
    if (!p->io.piped[1])
        return mp__error(MP_EINVAL, "readline: the child's stdout is not a pipe");
    double deadline = mp__deadline(timeout);
    size_t scanned = 0;
    for (;;) {
        mp__buf *b = &p->io.buf[1];
        size_t avail = b->len - p->rd_off;
        char *start = b->data ? b->data + p->rd_off : NULL;
        char *nl = avail > scanned ? memchr(start + scanned, '\n', avail - scanned) : NULL;
        if (nl)
            return emit_line(p, (size_t)(nl - start) + 1, line, len);
        scanned = avail;
        if (p->io.fd[1] < 0) {
            if (avail)
                return emit_line(p, avail, line, len);
            return mp__error(MP_EEOF, "readline: '%s' closed its stdout", p->desc);
        }
        int r = mp__iwait_poll1(p->io.fd[1], POLLIN, deadline);
        if (r < 0)
            return r;
        if (r == 0)
            return mp__error(MP_ETIMEOUT, "readline from '%s': timed out", p->desc);
        compact_stdout(p);
        ssize_t got = mp__io_read_some(&p->io, 1);
        if (got < 0 && got != -EAGAIN)
            return (int)got;
    }
}

int mp_popen_write(mp_popen *p, const void *data, size_t len)
{
    if (!p || (!data && len))
        return mp__error(MP_EINVAL, "mp_popen_write: NULL argument");
    if (!p->io.piped[0])
        return mp__error(MP_EINVAL, "write: the child's stdin is not a pipe");
    if (p->io.fd[0] < 0)
        return mp__error(MP_ECLOSED, "write: the child's stdin is closed");
    if (p->io.in_nonblock) {
        mp__set_nonblock(p->io.fd[0], false);
        p->io.in_nonblock = false;
    }
    pipe_guard g;
    mp__sigpipe_block(&g);
    int rc = mp__write_full(p->io.fd[0], data, len);
    mp__sigpipe_unblock(&g, rc == -EPIPE);
    if (rc < 0)
        return mp__error(rc, "writing to the stdin of '%s'", p->desc);
    return 0;
}

int mp_popen_writeline(mp_popen *p, const char *line)
{
    if (!line)
        return mp__error(MP_EINVAL, "mp_popen_writeline: NULL line");
    size_t n = strlen(line);
    int rc = mp_popen_write(p, line, n);
    if (rc == 0 && (n == 0 || line[n - 1] != '\n'))
        rc = mp_popen_write(p, "\n", 1);
    return rc;
}

int mp_popen_send_signal(mp_popen *p, int sig)
{
    if (!p)
        return mp__error(MP_EINVAL, "mp_popen_send_signal: NULL handle");
    return mp__popen_signal(p, sig);
}

int mp_popen_terminate(mp_popen *p) { return mp_popen_send_signal(p, SIGTERM); }

int mp_popen_kill(mp_popen *p) { return mp_popen_send_signal(p, SIGKILL); }

void mp_popen_forget(mp_popen *p)
{
    if (p)
        p->forgotten = true;
}

void mp_popen_free(mp_popen *p)
{
    if (!p)
        return;
    if (!p->exited && !p->forgotten) {
        mp__popen_signal(p, SIGKILL);
        mp__child_reap_blocking(p);
    }
    mp__io_release(&p->io);
    mp__close(p->pidfd);
    mp__buf_free(&p->line);
    free(p);
}

