/**
 * @file subprocess.h
 * @brief Run other programs: run/call/check_output, a Popen-style handle, pipelines
 *        (Python's `subprocess` module).
 *
 * Python mapping:
 * - `subprocess.run(args, ...)`          -> mp_run() / mp_run_sh() (shell=True) with
 *   an ::mp_subprocess_opts and an ::mp_run_result (CompletedProcess).
 * - `call` / `check_call` / `check_output` -> mp_call(), mp_check_call(), mp_check_output().
 * - `Popen(...)`                          -> mp_popen_start() / mp_popen_start_sh() and the
 *   mp_popen_* functions (poll, wait, communicate, send_signal, terminate, kill, pid,
 *   stdin/stdout/stderr as fds, readline/write for line-by-line talk).
 * - `stdin=/stdout=/stderr=`: ::mp_stdio: PIPE, DEVNULL, an fd, a file path, None
 *   (inherit), and STDOUT for stderr; `input=` is mp_subprocess_opts.input.
 * - `TimeoutExpired` -> MP_ETIMEOUT, `CalledProcessError` -> MP_ECHILDFAIL (the result
 *   is still filled: returncode, stdout, stderr), a missing program -> -ENOENT with
 *   the path in mp_last_error() (never a child exiting 127).
 * - `a | b | c` -> mp_pipeline().
 * - `getoutput(cmd)` / `getstatusoutput(cmd)` -> mp_getoutput() / mp_getstatusoutput().
 * - `preexec_fn=`, `user=`, `group=`, `extra_groups=`, `pipesize=`, `process_group=N`
 *   -> mp_subprocess_opts.preexec_fn (+ preexec_arg), .user, .group, .extra_groups (names
 *   or numeric ids as strings), .pipesize, .process_group (process_group=0 is new_pgroup).
 *
 * Differences from Python (pitfalls removed):
 * - No SIGCHLD handler is ever installed; children are watched through pidfds, so the
 *   program's own SIGCHLD handler keeps working. (If that handler reaps our child with
 *   waitpid(-1), its status is lost: returncode then reads 0, as in Python.)
 * - With `kill_group`, the child leads a new process group and timeouts, kill,
 *   terminate and send_signal reach the whole group, so a grandchild holding the
 *   pipes cannot make a timeout hang (bpo-37424). Even without it, mp_run() never
 *   waits for pipe EOF after a timeout: it kills, reaps, keeps what was read and
 *   returns.
 * - Default signal dispositions are restored in the child (ignored ones too, and the
 *   signal mask is cleared) unless `keep_signals` is set.
 * - Writing to a child that exited never raises SIGPIPE in the caller: the write
 *   reports -EPIPE (communicate ignores it, as Python does).
 * - Spawning uses clone(CLONE_VM|CLONE_VFORK): its cost does not depend on the
 *   parent's size, and it is safe from a multi-threaded program.
 *
 * Thread safety: every function may be called from several threads at once on
 * different handles (spawning from many threads is safe: fds are close-on-exec and
 * no global state is shared). One ::mp_popen handle must not be used by two threads
 * at once.
 *
 * Fork behaviour: a forked child inherits the handles' fds but must not wait for or
 * signal the parent's children (they are not its children); free the handles there
 * only with mp_popen_free() after mp_popen_forget().
 */
#ifndef MULTIPROC_SUBPROCESS_H
#define MULTIPROC_SUBPROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "multiproc/error.h"

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/** Where one of the child's standard streams goes (Python's stdin=/stdout=/stderr=). */
typedef enum mp_stdio_kind {
    MP_IO_INHERIT = 0, /**< the parent's own fd (Python's None), the default */
    MP_IO_PIPE,        /**< a pipe to the parent: captured output / writable stdin */
    MP_IO_DEVNULL,     /**< /dev/null */
    MP_IO_FD,          /**< the fd in mp_stdio.fd (borrowed: not closed) */
    MP_IO_FILE,        /**< the file mp_stdio.path: read for stdin; created and
                            truncated (or appended to) for stdout/stderr */
    MP_IO_STDOUT       /**< stderr only: into the same place as stdout */
} mp_stdio_kind;

/** One stream's setting. All-zero = inherit. */
typedef struct mp_stdio {
    mp_stdio_kind kind; /**< where the stream goes */
    int fd;           /**< MP_IO_FD: the parent fd the child gets (borrowed) */
    const char *path; /**< MP_IO_FILE: the file's path */
    bool append;      /**< MP_IO_FILE for output: append instead of truncating */
} mp_stdio;

/** A pipe to the parent (Python's PIPE). */
#define MP_STDIO_PIPE ((mp_stdio){.kind = MP_IO_PIPE})
/** /dev/null (Python's DEVNULL). */
#define MP_STDIO_DEVNULL ((mp_stdio){.kind = MP_IO_DEVNULL})
/** stderr into stdout (Python's STDOUT). */
#define MP_STDIO_STDOUT ((mp_stdio){.kind = MP_IO_STDOUT})
/** The parent's fd @p f (borrowed). */
#define MP_STDIO_FD(f) ((mp_stdio){.kind = MP_IO_FD, .fd = (f)})
/** The file at path @p p (opened for the child). */
#define MP_STDIO_FILE(p) ((mp_stdio){.kind = MP_IO_FILE, .path = (p)})

/**
 * Options for starting a child (run, call, Popen, pipelines). All-zero means
 * Python's defaults: streams inherited, close_fds on, signals restored, no time limit.
 */
typedef struct mp_subprocess_opts {
    mp_stdio in;             /**< stdin */
    mp_stdio out;            /**< stdout */
    mp_stdio err;            /**< stderr */
    bool capture_output;     /**< out and err become pipes where they were inherit */
    const void *input;       /**< run/pipeline: bytes written to stdin (stdin becomes a
                                  pipe); borrowed for the call's duration */
    size_t input_len;        /**< bytes of input */
    double time_limit;       /**< run/pipeline: seconds the whole call may take (then the
                                  child is killed: MP_ETIMEOUT); 0 or MP_NO_LIMIT:
                                  none */
    bool check;              /**< run/pipeline: a non-zero exit is MP_ECHILDFAIL */
    const char *executable;  /**< the program actually run (argv[0] is only what the
                                  child sees); for the _sh functions it replaces /bin/sh */
    const char *cwd;         /**< the child's working directory (NULL: ours) */
    char *const *env;        /**< replace the environment: "NAME=value" strings, NULL
                                  terminated (NULL: inherit ours) */
    char *const *env_add;    /**< "NAME=value" set on top of env (or ours) */
    char *const *env_remove; /**< names removed from env (or ours) */
    bool set_umask;          /**< apply `umask` in the child */
    unsigned umask;          /**< the child's umask when set_umask */
    bool inherit_fds;        /**< Python's close_fds=False: keep every inheritable fd
                                  (default: close all but 0-2 and pass_fds) */
    const int *pass_fds;     /**< fds the child keeps (their numbers unchanged) */
    size_t npass;            /**< entries in pass_fds */
    bool new_session;        /**< setsid() in the child (start_new_session) */
    bool new_pgroup;         /**< setpgid(0, 0) in the child (process_group=0) */
    bool kill_group;         /**< the child leads a new process group (unless
                                  new_session) and every signal we send, on timeout too,
                                  goes to the whole group */
    bool keep_signals;       /**< Python's restore_signals=False: keep ignored signals
                                  and the signal mask (handled signals are always reset) */
    /**
     * Python's preexec_fn: called in the child just before exec, after the streams,
     * cwd, umask, session/group and user/group settings. It must return 0; anything
     * else fails the start in the parent (a negative return is the error code, a
     * positive one MP_EPROCESS; the message says "preexec_fn failed in the child
     * (returned N)") and no child is left. A start asking for it forks instead of the
     * vfork-style clone (it costs what a fork of the caller costs). As with Python's,
     * the function runs in a fork of a possibly multi-threaded program: use only
     * async-signal-safe calls (signal(7): write, close, dup2, setrlimit, prctl, ...),
     * no malloc, no stdio, no locks.
     */
    int (*preexec_fn)(void *arg);
    void *preexec_arg;       /**< passed to preexec_fn */
    const char *user;        /**< Python's user=: a user name or a numeric uid ("1000");
                                  setreuid in the child. Unknown name: MP_ENOTFOUND */
    const char *group;       /**< Python's group=: a group name or a numeric gid */
    const char *const *extra_groups; /**< Python's extra_groups=: NULL-terminated names or
                                  numeric gids for setgroups (an empty list drops all
                                  supplementary groups); NULL leaves them */
    int pipesize;            /**< Python's pipesize=: F_SETPIPE_SZ of every pipe made for
                                  the child, in bytes (0: the library's choice) */
    pid_t process_group;     /**< > 0: the child joins this existing process group
                                  (Python's process_group=N); new_pgroup makes a new one */
} mp_subprocess_opts;

/** What a finished run gives back (Python's CompletedProcess). */
typedef struct mp_run_result {
    int returncode;   /**< exit status, or -N when killed by signal N */
    pid_t pid;        /**< the child's pid (already reaped) */
    char *out;        /**< captured stdout (NUL-terminated), NULL if not captured */
    size_t out_len;   /**< bytes in out */
    char *err;        /**< captured stderr (NUL-terminated), NULL if not captured */
    size_t err_len;   /**< bytes in err */
} mp_run_result;

/** Free the buffers of @p r and zero it. NULL is fine. */
void mp_run_result_free(mp_run_result *r);

/**
 * Run @p argv (argv[0] is searched in PATH of the child's environment when it has no
 * '/') to completion, feeding opts->input and collecting the pipes without deadlock.
 * @param argv NULL-terminated, at least one element.
 * @param opts NULL for the defaults.
 * @param res  filled (zero it first or reuse a freed one); the caller frees it with
 *             mp_run_result_free(), also after MP_ETIMEOUT / MP_ECHILDFAIL.
 * @return 0 when the child ran (whatever its status, unless check);
 *         MP_ETIMEOUT: opts->time_limit passed: the child (its group with kill_group)
 *         was killed and reaped, res holds what was read before and returncode -9;
 *         MP_ECHILDFAIL: check and a non-zero status, res fully filled;
 *         -ENOENT/-EACCES/...: the program could not be started (mp_last_error() names
 *         the path or the cwd); MP_EINVAL: NULL or empty argv, bad options;
 *         MP_EINTERRUPTED: a deferred signal handler asked blocking calls to stop (the
 *         child is killed and reaped).
 */
int mp_run(const char *const *argv, const mp_subprocess_opts *opts, mp_run_result *res);

/** mp_run() of `/bin/sh -c cmdline` (Python's shell=True). */
int mp_run_sh(const char *cmdline, const mp_subprocess_opts *opts, mp_run_result *res);

/**
 * Run and report the status only (Python's call): 0 with *returncode set, or an
 * error of mp_run(). Output is not captured unless the options say so (and is then
 * dropped).
 */
int mp_call(const char *const *argv, const mp_subprocess_opts *opts, int *returncode);

/** Run and return 0 only if the status is 0, else MP_ECHILDFAIL (Python's check_call). */
int mp_check_call(const char *const *argv, const mp_subprocess_opts *opts);

/**
 * Run with stdout captured and check on (Python's check_output). On 0 and on
 * MP_ECHILDFAIL / MP_ETIMEOUT, *out (NUL-terminated, @p len may be NULL) holds the
 * output and the caller frees it with mp_free(); on other errors *out is NULL.
 * Set opts->err = MP_STDIO_STDOUT to merge stderr into it.
 */
int mp_check_output(const char *const *argv, const mp_subprocess_opts *opts, char **out,
                    size_t *len);

/** mp_check_output() of `/bin/sh -c cmdline`. */
int mp_check_output_sh(const char *cmdline, const mp_subprocess_opts *opts, char **out,
                       size_t *len);

/**
 * Python's getstatusoutput: run @p cmd with `/bin/sh -c`, stderr merged into stdout, and
 * return its output with one trailing newline stripped. *status is the returncode
 * (exit status, or -N when killed by signal N; Python's value, not a wait status).
 * *out (NUL-terminated, mp_free; @p len may be NULL) is set on 0. 0 whatever the
 * status; -errno / MP_EINVAL when the shell cannot run.
 */
int mp_getstatusoutput(const char *cmd, int *status, char **out, size_t *len);

/** Python's getoutput: mp_getstatusoutput without the status. */
int mp_getoutput(const char *cmd, char **out, size_t *len);

/* ---- Popen --------------------------------------------------------------------------- */

/** A started child (Python's Popen). */
typedef struct mp_popen mp_popen;

/**
 * Start @p argv without waiting (Python's Popen). opts->input, time_limit and check are
 * ignored here (see mp_popen_communicate()).
 * @return the handle (free it with mp_popen_free()), or NULL when the child could not
 * start, with the code in mp_last_error_code(): the errors of mp_run().
 */
mp_popen *mp_popen_start(const char *const *argv, const mp_subprocess_opts *opts);

/** mp_popen_start() of `/bin/sh -c cmdline`. */
mp_popen *mp_popen_start_sh(const char *cmdline, const mp_subprocess_opts *opts);

/** The child's pid. */
pid_t mp_popen_pid(const mp_popen *p);

/** A pidfd that becomes readable when the child exits (borrowed; for poll/epoll). */
int mp_popen_pidfd(const mp_popen *p);

/**
 * The parent's end of the child's stream @p which (0 stdin, 1 stdout, 2 stderr) when
 * it is MP_IO_PIPE, else -1. Borrowed: use mp_popen_close_fd() to close it.
 * Bytes already read into the handle by readline/communicate are not in the fd.
 */
int mp_popen_fd(const mp_popen *p, int which);

/** Close the parent's end of stream @p which (e.g. stdin to send EOF). 0 or MP_EINVAL. */
int mp_popen_close_fd(mp_popen *p, int which);

/**
 * Has the child exited? 1 with *returncode set (may be NULL), 0 while it runs,
 * negative on error. Never blocks (Python's poll).
 */
int mp_popen_poll(mp_popen *p, int *returncode);

/**
 * Wait until the child exits (@p timeout seconds, negative forever, 0 polls).
 * 0 with *returncode set (may be NULL), MP_ETIMEOUT, MP_EINTERRUPTED.
 * Pitfall (as in Python): a child writing more than a pipe holds to an unread
 * MP_IO_PIPE blocks; use mp_popen_communicate() to read while waiting.
 */
int mp_popen_wait(mp_popen *p, double timeout, int *returncode);

/**
 * Write @p input to the child's stdin (then close it), read stdout and stderr until
 * EOF and wait for the child, all at once with one poll loop, so no pipe buffer can
 * deadlock (Python's communicate).
 * @param p     the child.
 * @param input borrowed; must stay valid until the call returns something other than
 *        MP_ETIMEOUT/MP_EINTERRUPTED. NULL/0: just close stdin.
 * @param len   bytes of input.
 * @param timeout seconds (negative forever). On MP_ETIMEOUT nothing is lost: the
 *        handle keeps what was read and how much input was written; call again
 *        (input may then be NULL: the remembered input continues).
 * @param res on 0: returncode, pid and the whole captured stdout/stderr move into it
 *        (caller frees with mp_run_result_free()); may be NULL.
 * @return 0, MP_ETIMEOUT, MP_EINTERRUPTED, -errno.
 */
int mp_popen_communicate(mp_popen *p, const void *input, size_t len, double timeout,
                         mp_run_result *res);

/**
 * Read one line of the child's stdout (pipe), '\n' included if present.
 * @param p    the child.
 * @param line receives a NUL-terminated copy owned by the handle, valid until the next
 *        readline or mp_popen_free().
 * @param len  its length (may be NULL).
 * @param timeout seconds (negative forever).
 * @return 0; MP_EEOF when stdout is at end of file and nothing is left; MP_ETIMEOUT
 *         (bytes read so far stay buffered); MP_EINVAL if stdout is not a pipe.
 */
int mp_popen_readline(mp_popen *p, const char **line, size_t *len, double timeout);

/**
 * Write all of @p data to the child's stdin (pipe); blocks until written. There is no
 * user-space buffering, so nothing needs flushing. -EPIPE when the child has closed
 * its stdin (no SIGPIPE is raised); MP_EINVAL if stdin is not a pipe.
 */
int mp_popen_write(mp_popen *p, const void *data, size_t len);

/** mp_popen_write() of @p line followed by '\n' (unless it already ends with one). */
int mp_popen_writeline(mp_popen *p, const char *line);

/**
 * Send @p sig to the child (to its process group with kill_group). A child already
 * reaped is not signalled (0 is returned), so a recycled pid is never hit.
 */
int mp_popen_send_signal(mp_popen *p, int sig);
/** mp_popen_send_signal(p, SIGTERM). */
int mp_popen_terminate(mp_popen *p);
/** mp_popen_send_signal(p, SIGKILL). */
int mp_popen_kill(mp_popen *p);

/**
 * Close the pipes and free the handle. A child still running is killed (SIGKILL, its
 * group with kill_group) and reaped, so nothing is left behind; wait first to let it
 * finish. NULL is fine.
 */
void mp_popen_free(mp_popen *p);

/**
 * Stop tracking the child without touching it (for a forked process, or to leave a
 * background child running): mp_popen_free() then only closes the fds.
 */
void mp_popen_forget(mp_popen *p);

/* ---- pipelines ---------------------------------------------------------------------- */

/**
 * Run @p n commands as `cmds[0] | cmds[1] | ...`: each stdout feeds the next stdin.
 * opts->in / input feed the first command, opts->out takes the last one's stdout
 * (MP_IO_PIPE or capture_output: captured into res->out); opts->err applies to every
 * command (MP_IO_PIPE: all their stderr is captured together into res->err);
 * cwd, env, umask, fds, session and group options apply to each command (executable
 * is ignored). time_limit kills every command. res->returncode is the last command's.
 * @param cmds the commands: @p n NULL-terminated argv arrays.
 * @param n    how many (at least 1).
 * @param opts NULL for the defaults.
 * @param res  as for mp_run() (may be NULL).
 * @param returncodes receives every command's returncode (n entries; may be NULL).
 * @return as mp_run(); with check, MP_ECHILDFAIL when any command failed (pipefail).
 */
int mp_pipeline(const char *const *const *cmds, size_t n, const mp_subprocess_opts *opts,
                mp_run_result *res, int *returncodes);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
