/* subprocess: pipelines (cmd1 | cmd2 | ...), driven by one I/O engine. */
#define _GNU_SOURCE
#include "subprocess/sub.h"
#include "internal/common.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* ---- pipelines ------------------------------------------------------------------ */

typedef struct pipeline {
    mp_popen **stage;
    size_t n, started;
    io io;          /* first stdin, last stdout, the shared stderr pipe */
    int err_write;  /* write end of the shared stderr pipe (until all started) */
} pipeline;

/* Stage i's options: its stdin is the previous stdout, its stdout the next stdin. */
static mp_subprocess_opts stage_opts(const mp_subprocess_opts *o, pipeline *pl, size_t i)
{
    mp_subprocess_opts s = *o;
    s.capture_output = false;
    if (i > 0)
        s.in = MP_STDIO_FD(pl->stage[i - 1]->io.fd[1]);
    if (i + 1 < pl->n)
        s.out = MP_STDIO_PIPE;
    else if (o->capture_output && s.out.kind == MP_IO_INHERIT)
        s.out = MP_STDIO_PIPE;
    if (pl->err_write >= 0)
        s.err = MP_STDIO_FD(pl->err_write);
    return s;
}

static int pipeline_start(pipeline *pl, const char *const *const *cmds,
                          const mp_subprocess_opts *o)
{
    bool err_pipe = o->err.kind == MP_IO_PIPE ||
                    (o->capture_output && o->err.kind == MP_IO_INHERIT);
    if (err_pipe) {
        int p[2];
        if (mp__pipe(p) < 0)
            return mp__errno("stderr pipe");
        pl->io.fd[2] = p[0];
        pl->io.piped[2] = true;
        pl->err_write = p[1];
    }
    for (size_t i = 0; i < pl->n; i++) {
        if (!cmds[i] || !cmds[i][0])
            return mp__error(MP_EINVAL, "pipeline: command %zu is NULL or empty", i);
        mp_subprocess_opts s = stage_opts(o, pl, i);
        int rc = mp__popen_create((char *const *)cmds[i], NULL, &s, i == 0 && o->input,
                              &pl->stage[i]);
        if (rc < 0)
            return rc;
        pl->started++;
        if (i > 0) /* only the next stage reads it now: EOF and SIGPIPE work */
            mp__io_close(&pl->stage[i - 1]->io, 1);
    }
    mp__close(pl->err_write);
    pl->err_write = -1;
    /* The engine owns the ends the parent talks through. */
    mp_popen *first = pl->stage[0], *last = pl->stage[pl->n - 1];
    pl->io.fd[0] = first->io.fd[0], first->io.fd[0] = -1;
    pl->io.piped[0] = first->io.piped[0];
    pl->io.fd[1] = last->io.fd[1], last->io.fd[1] = -1;
    pl->io.piped[1] = last->io.piped[1];
    return 0;
}

/* Reap every stage (killing them all first when `kill` is set). */
static int pipeline_reap(pipeline *pl, double deadline, bool kill)
{
    for (size_t i = 0; i < pl->started; i++)
        if (kill)
            mp__popen_signal(pl->stage[i], SIGKILL);
    for (size_t i = 0; i < pl->started; i++) {
        if (kill) {
            mp__child_reap_blocking(pl->stage[i]);
            continue;
        }
        int rc = mp__child_reap(pl->stage[i], deadline);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void pipeline_result(pipeline *pl, mp_run_result *res, int *returncodes)
{
    memset(res, 0, sizeof *res);
    if (pl->started == pl->n) {
        res->returncode = pl->stage[pl->n - 1]->returncode;
        res->pid = pl->stage[pl->n - 1]->pid;
    }
    if (pl->io.piped[1])
        res->out = mp__buf_take(&pl->io.buf[1], &res->out_len);
    if (pl->io.piped[2])
        res->err = mp__buf_take(&pl->io.buf[2], &res->err_len);
    for (size_t i = 0; returncodes && i < pl->started; i++)
        returncodes[i] = pl->stage[i]->returncode;
}

static int pipeline_check(pipeline *pl)
{
    for (size_t i = 0; i < pl->n; i++) {
        int rc = pl->stage[i]->returncode;
        if (rc != 0)
            return mp__check_status(pl->stage[i]->desc, rc);
    }
    return 0;
}

int mp_pipeline(const char *const *const *cmds, size_t n, const mp_subprocess_opts *opts,
                mp_run_result *res, int *returncodes)
{
    static const mp_subprocess_opts defaults;
    const mp_subprocess_opts *o = opts ? opts : &defaults;
    mp_run_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    if (!cmds || n == 0)
        return mp__error(MP_EINVAL, "pipeline: no commands");
    pipeline pl = {.n = n, .err_write = -1};
    mp__io_init(&pl.io);
    pl.stage = mp__calloc(n, sizeof *pl.stage);
    if (!pl.stage)
        return -ENOMEM;
    int rc = pipeline_start(&pl, cmds, o);
    if (rc == 0) {
        pl.io.input = o->input;
        pl.io.in_len = o->input ? o->input_len : 0;
        double deadline = mp__run_deadline(o);
        rc = mp__io_pump(&pl.io, deadline);
        if (rc == 0)
            rc = pipeline_reap(&pl, deadline, false);
        if (rc == MP_ETIMEOUT)
            mp__error(rc, "pipeline timed out after %g seconds", o->time_limit);
    }
    if (rc < 0) {
        pipeline_reap(&pl, -1, true);
        mp__io_drain(&pl.io);
    }
    pipeline_result(&pl, res, returncodes);
    if (rc == 0 && o->check)
        rc = pipeline_check(&pl);
    mp__close(pl.err_write);
    for (size_t i = 0; i < pl.started; i++)
        mp_popen_free(pl.stage[i]);
    free(pl.stage);
    mp__io_release(&pl.io);
    if (res == &local)
        mp_run_result_free(&local);
    return rc;
}
