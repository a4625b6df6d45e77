/* subprocess: run, call, check_call, check_output (and their _sh forms).
 *
 * DESIGN
 * - Everything runs on the calling thread, through one Popen handle per call.
 * - Timeouts (bpo-37424): after a timeout run() kills the child (its group with
 *   kill_group), reaps it, then reads only what is already in the pipes, so a
 *   grandchild holding a pipe open cannot make it hang.
 */
#define _GNU_SOURCE
#include "subprocess/sub.h"
#include "internal/common.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* ---- run and friends ------------------------------------------------------------ */

void mp_run_result_free(mp_run_result *r)
{
    if (!r)
        return;
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

double mp__run_deadline(const mp_subprocess_opts *o)
{
    return o && o->time_limit > 0 ? mp__deadline(o->time_limit) : -1;
}

/* The status as an error when check is on: MP_ECHILDFAIL with Python's wording. */
int mp__check_status(const char *desc, int returncode)
{
    if (returncode == 0)
        return 0;
    if (returncode > 0)
        return mp__error(MP_ECHILDFAIL, "command '%s' returned non-zero exit status %d", desc,
                         returncode);
    const char *abbrev = sigabbrev_np(-returncode);
    return mp__error(MP_ECHILDFAIL, "command '%s' died with signal %d (SIG%s)", desc,
                     -returncode, abbrev ? abbrev : "?");
}

/* Drive a started child to the end; on timeout or interruption kill and reap it and
 * keep what was read. The handle is freed. */
static int run_to_end(mp_popen *p, const mp_subprocess_opts *o, mp_run_result *res)
{
    static const mp_subprocess_opts defaults;
    if (!o)
        o = &defaults;
    p->io.input = o->input;
    p->io.in_len = o->input ? o->input_len : 0;
    double deadline = mp__run_deadline(o);
    int rc = mp__io_pump(&p->io, deadline);
    if (rc == 0)
        rc = mp__child_reap(p, deadline);
    if (rc < 0) {
        mp__popen_signal(p, SIGKILL);
        mp__child_reap_blocking(p);
        mp__io_drain(&p->io);
        if (rc == MP_ETIMEOUT)
            mp__error(rc, "command '%s' timed out after %g seconds", p->desc, o->time_limit);
    }
    mp__popen_take_result(p, res);
    if (rc == 0 && o->check)
        rc = mp__check_status(p->desc, p->returncode);
    mp_popen_free(p);
    return rc;
}

static int run_argv(char *const *argv, const char *file, const mp_subprocess_opts *o,
                    mp_run_result *res)
{
    mp_run_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    mp_popen *p;
    int rc = mp__popen_create(argv, file, o, o && o->input, &p);
    if (rc < 0)
        return rc;
    rc = run_to_end(p, o, res);
    if (res == &local)
        mp_run_result_free(&local);
    return rc;
}

int mp_run(const char *const *argv, const mp_subprocess_opts *opts, mp_run_result *res)
{
    return run_argv((char *const *)argv, opts ? opts->executable : NULL, opts, res);
}

int mp_run_sh(const char *cmdline, const mp_subprocess_opts *opts, mp_run_result *res)
{
    if (!cmdline)
        return mp__error(MP_EINVAL, "mp_run_sh: cmdline is NULL");
    SH_ARGV(argv, cmdline);
    return run_argv(argv, mp__sh_file(opts), opts, res);
}

int mp_call(const char *const *argv, const mp_subprocess_opts *opts, int *returncode)
{
    mp_subprocess_opts o = opts ? *opts : (mp_subprocess_opts){0};
    o.check = false;
    mp_run_result r;
    int rc = mp_run(argv, &o, &r);
    if (returncode && rc == 0)
        *returncode = r.returncode;
    mp_run_result_free(&r);
    return rc;
}

int mp_check_call(const char *const *argv, const mp_subprocess_opts *opts)
{
    mp_subprocess_opts o = opts ? *opts : (mp_subprocess_opts){0};
    o.check = true;
    return mp_run(argv, &o, NULL);
}

static int check_output(char *const *argv, const char *file, const mp_subprocess_opts *opts,
                        char **out, size_t *len)
{
    if (!out)
        return mp__error(MP_EINVAL, "check_output: out is NULL");
    *out = NULL;
    mp_subprocess_opts o = opts ? *opts : (mp_subprocess_opts){0};
    o.check = true;
    o.out = MP_STDIO_PIPE;
    mp_run_result r;
    int rc = run_argv(argv, file, &o, &r);
    *out = r.out;
    if (len)
        *len = r.out_len;
    r.out = NULL;
    mp_run_result_free(&r);
    return rc;
}

int mp_check_output(const char *const *argv, const mp_subprocess_opts *opts, char **out,
                    size_t *len)
{
    return check_output((char *const *)argv, opts ? opts->executable : NULL, opts, out, len);
}

int mp_check_output_sh(const char *cmdline, const mp_subprocess_opts *opts, char **out,
                       size_t *len)
{
    if (!cmdline)
        return mp__error(MP_EINVAL, "mp_check_output_sh: cmdline is NULL");
    SH_ARGV(argv, cmdline);
    return check_output(argv, mp__sh_file(opts), opts, out, len);
}
