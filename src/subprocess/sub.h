/* Private parts of the subprocess module, shared by the files of src/subprocess/:
 *   io.c        the SIGPIPE guard, the poll-loop I/O engine
 *   env.c       the child's environment (env, env_add, env_remove)
 *   creds.c     user=/group=/extra_groups= resolved in the parent
 *   start.c     streams and the spawn request: starting one child
 *   popen.c     the Popen handle: reaping, signals, communicate, readline, write
 *   run.c       run, call, check_call, check_output
 *   pipeline.c  pipelines
 *   shell.c     getoutput / getstatusoutput
 */
#ifndef MP_SUBPROCESS_SUB_H
#define MP_SUBPROCESS_SUB_H

#include "multiproc/subprocess.h"
#include "internal/buf.h"
#include "internal/spawn.h"

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define READ_MIN (64 * 1024)       /* smallest read; reads grow with the buffer */
#define READ_MAX (4 * 1024 * 1024) /* largest single read */
#define WRITE_MAX (1024 * 1024)    /* largest single write to a pipe */
#define PIPE_BIG (1024 * 1024)     /* pipe size for bulk streams (default max) */

/* ---- SIGPIPE guard (io.c) ----------------------------------------------------- */

typedef struct pipe_guard {
    sigset_t old;
    bool was_pending;
    bool active;
} pipe_guard;

void mp__sigpipe_block(pipe_guard *g);
void mp__sigpipe_unblock(pipe_guard *g, bool got_epipe);

/* ---- the I/O engine (io.c) ---------------------------------------------------- */

typedef struct io {
    int fd[3];      /* parent ends: 0 writes stdin, 1 and 2 read; -1 when closed */
    bool piped[3];  /* the stream was a pipe (captured even if empty) */
    const char *input;
    size_t in_len, in_off;
    bool epipe;
    bool in_nonblock;
    mp__buf buf[3]; /* buf[1] stdout, buf[2] stderr */
} io;

void mp__io_init(io *x);
void mp__io_close(io *x, int i);
void mp__io_release(io *x);
/* One read into buf[i]: >0 bytes, 0 at EOF (fd closed), -EAGAIN, or -errno. */
ssize_t mp__io_read_some(io *x, int i);
/* Feed the input and read both outputs until every end is closed or the deadline. */
int mp__io_pump(io *x, double deadline);
/* After the child is gone: take what is already in the pipes. */
void mp__io_drain(io *x);

/* ---- the handle (popen.c) ----------------------------------------------------- */

struct mp_popen {
    pid_t pid;
    int pidfd;
    bool exited;
    bool forgotten;
    bool group;         /* signals go to the process group -pid */
    bool comm_started;
    int returncode;
    io io;
    size_t rd_off;      /* bytes of io.buf[1] already returned by readline */
    mp__buf line;       /* readline's result */
    char desc[160];     /* the command, for messages */
};

/* Wait for the child's exit until the deadline and reap it. 0, MP_ETIMEOUT,
 * MP_EINTERRUPTED or -errno. */
int mp__child_reap(mp_popen *p, double deadline);
/* Reap, ignoring interruptions: used when we have killed the child. */
void mp__child_reap_blocking(mp_popen *p);
/* Signal the child (or its group); never a pid that may have been recycled. */
int mp__popen_signal(mp_popen *p, int sig);
/* Move the captured output (and the status) into res. */
void mp__popen_take_result(mp_popen *p, mp_run_result *res);

/* ---- starting a child (start.c, env.c) ---------------------------------------- */

/* Start argv (file: the program to execute, NULL = argv[0]) with the options. */
int mp__popen_create(char *const *argv, const char *file, const mp_subprocess_opts *o,
                     bool stdin_pipe, mp_popen **out);
/* The child's environment when the options change it: pointers to the caller's
 * strings (nothing copied), freed by the caller with free(). NULL = inherit. */
int mp__build_env(const mp_subprocess_opts *o, char ***out);
/* The shell to run a command line with. */
const char *mp__sh_file(const mp_subprocess_opts *o);
/* argv for `sh -c cmdline`, on the caller's stack. */
#define SH_ARGV(name, cmdline) char *name[] = {"/bin/sh", "-c", (char *)(cmdline), NULL}

/* ---- run (run.c) -------------------------------------------------------------- */

/* The status as an error when check is on: MP_ECHILDFAIL with Python's wording. */
int mp__check_status(const char *desc, int returncode);
double mp__run_deadline(const mp_subprocess_opts *o);

/* Fill req->set_uid/uid, set_gid/gid, set_groups/groups/ngroups from the options.
 * *groups receives the malloc'd gid array the request points to (free it after the
 * spawn; NULL when none). 0, MP_ENOTFOUND (an unknown name), MP_EINVAL, -ENOMEM. */
int mp__sub_creds(const mp_subprocess_opts *o, mp__spawn_req *req, gid_t **groups);

#endif
