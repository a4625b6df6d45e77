/**
 * @file process.h
 * @brief Run a C function in another process (Python's multiprocessing.Process).
 *
 * Python mapping:
 * - `Process(target=f, args=(...), name=..., daemon=...)` -> mp_process_new() with an
 *   mp_process_opts; `p.start()`, `p.join(timeout)`, `p.is_alive()`,
 *   `p.terminate()`, `p.kill()`, `p.close()`, `p.pid`, `p.name`, `p.exitcode`,
 *   `p.sentinel` -> mp_process_*.
 * - `current_process().name` -> mp_current_process_name(); `parent_process().pid`
 *   -> mp_parent_process_pid(); `parent_process()` -> mp_parent_process() (a process
 *   object: name, pid, is_alive); `active_children()` -> mp_active_children();
 *   `cpu_count()` -> mp_cpu_count() (the affinity mask, like os.process_cpu_count).
 * - `set_start_method`, `get_start_method`, `get_context` -> mp_set_start_method,
 *   mp_get_start_method, mp_get_context (+ mp_process_opts.ctx);
 *   `get_all_start_methods()` -> mp_get_all_start_methods().
 * - `set_executable(path)` -> mp_set_executable() (mp_get_executable());
 *   `set_forkserver_preload([...])` -> mp_set_forkserver_preload() (shared libraries
 *   the forkserver dlopen()s once, instead of modules it imports).
 * - `current_process().authkey` (get and set) -> mp_current_process_authkey(),
 *   mp_set_current_process_authkey(); `p.authkey` -> mp_process_authkey(),
 *   mp_process_set_authkey(). 32 random bytes in the main process; a child starts
 *   with its Process object's key (the parent's at mp_process_new) under every start
 *   method. Managers use it when given no authkey (listeners and clients do not, as
 *   in Python 3.11).
 * - Exceptions -> error codes: ProcessError/RuntimeError -> MP_EPROCESS, ValueError
 *   on a closed process -> MP_ECLOSED / MP_ESTATE.
 *
 * Exit codes (Python's rules, in C):
 * | in the target (Python)         | in the target (C)                  | exitcode |
 * |--------------------------------|------------------------------------|----------|
 * | `return` / `return n`          | `return 0;`                        | 0        |
 * | (no equivalent: Python ignores | `return n;`                        | n        |
 * |  the return value)             |                                    |          |
 * | `sys.exit(n)`                  | `mp_process_exit(n);`              | n        |
 * | an exception (traceback shown) | `mp_process_fail("RuntimeError: ..")` | 1     |
 * | killed by signal N             | killed by signal N                 | -N       |
 * A target's return value is its exit code (0..255). mp_process_fail prints
 * `Process NAME:` and a traceback-like block to stderr, then exits with 1.
 *
 * Start methods: `fork` (the default) copies the parent; `spawn` execs the program
 * again (/proc/self/exe) and gives the child only stdin/stdout/stderr and the fds of
 * the objects in its arguments; `forkserver` asks a single-threaded server process
 * (a spawn of the program, started on first use) to fork the child. Forking a
 * multi-threaded parent with `fork` works but logs a warning (mp_log, WARNING): only
 * the calling thread exists in the child, so locks other threads held stay locked.
 * spawn and forkserver are the safe choices.
 *
 * Targets: a plain function pointer. Under spawn and forkserver it is found again in
 * the new exec by (object, offset): functions of the program and of shared libraries
 * it loaded at start work; a function the parent cannot place (not in any loaded
 * object) is MP_EINVAL from start; one the child cannot find (e.g. in a library the
 * parent dlopen()ed later) is MP_ENOTFOUND from start — the child never crashes.
 *
 * Arguments: an mp_value (copied by mp_process_new). It is encoded with
 * mp_value_encode and decoded in the child under every method (so handles to library
 * objects arrive as imported objects owning their own fds, under fork too). The target
 * receives it and may keep it until it returns (the library frees it afterwards).
 *
 * The spawn/forkserver child bootstrap: a library constructor (priority 500, after
 * every library kind registration at priority 200) recognises the child, then runs
 * the main program's own constructors (its .init_array: with a static link, only the
 * entries after the library's) so that kinds the program registers in its own
 * constructors exist, then receives its launch record, runs the target and exits; it
 * never returns to main. Register kinds in constructors (not in main). Constructors of
 * other shared libraries that depend on libmultiproc and were not yet initialised do
 * not run in a spawn child. The bootstrap engages only in a child the library started
 * (a socket from its parent at fd 3 carrying the start's secret, never in a setuid or
 * setgid program): MULTIPROC_BOOTSTRAP set by anyone else is ignored and removed, and
 * the program starts normally.
 *
 * At exit (atexit in the main program, mp_process_exit in children): the library
 * logs `process shutting down`, terminates its running daemon children and joins the
 * other children, as Python's util._exit_function. A child also logs `process exiting
 * with exitcode N` and flushes stdio, then calls _exit (the parent's atexit handlers
 * do not run in a fork child that leaves through mp_process_exit or by returning).
 *
 * Thread safety: a process object is used by one thread at a time. Starting processes
 * from several threads at once is fine. mp_active_children() and the at-exit handler
 * poll every tracked child: don't run them while another thread uses those objects.
 *
 * Fork behaviour: a fork child forgets its parent's children (their fds are closed in
 * the child; operating on them is MP_EPROCESS "can only join a child process") and
 * starts its own numbering (`Process-1:1` for the first child of `Process-1`).
 * In every child stdin is /dev/null (as Python's _close_stdin).
 */
#ifndef MULTIPROC_PROCESS_H
#define MULTIPROC_PROCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "multiproc/error.h"
#include "multiproc/value.h"

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/**
 * A process target. Runs in the child with the arguments decoded there (handles
 * imported and usable; nil when no arguments were given). Its return value is the
 * child's exit code (0..255).
 */
typedef int (*mp_target_fn)(mp_value *args);

/** Start methods. */
typedef enum mp_start_method {
    MP_START_DEFAULT = 0, /**< the program's default (set_start_method, else fork) */
    MP_START_FORK,
    MP_START_SPAWN,
    MP_START_FORKSERVER
} mp_start_method;

/** A start method's context. */
typedef struct mp_context mp_context;

/**
 * The context for a start method: "fork", "spawn", "forkserver", or NULL for the
 * default context (which follows mp_set_start_method). Contexts are static: never
 * freed, usable side by side. NULL with MP_EINVAL in mp_last_error() for an unknown
 * name.
 */
mp_context *mp_get_context(const char *method);
/**
 * Set the default start method ("fork", "spawn", "forkserver"). Allowed once:
 * MP_ESTATE ("context has already been set") if it was set before or the default was
 * already used (a process started with the default context, mp_get_start_method),
 * unless @p force. With force, NULL unsets it. MP_EINVAL for an unknown name.
 */
int mp_set_start_method(const char *method, bool force);
/** Name of the default start method ("fork" if never set); fixes the default. */
const char *mp_get_start_method(void);
/** Name of a context's start method (NULL: the default context). */
const char *mp_context_method(const mp_context *ctx);
/**
 * Start the forkserver now if it is not running (Python's
 * forkserver.ensure_running). Otherwise it starts with the first forkserver child.
 * It holds one fd in this process until exit. 0 or an error from starting it.
 */
int mp_forkserver_ensure_running(void);

/** A process object (opaque). */
typedef struct mp_process mp_process;

/** Options; all-zero means defaults (but a target is required). */
typedef struct mp_process_opts {
    mp_target_fn target;  /**< required */
    const mp_value *args; /**< copied by mp_process_new (NULL: nil); handles stay
                               borrowed: their objects must live until start */
    const char *name;     /**< NULL: "Process-N" (N counts this process's children) */
    bool daemon;          /**< terminated at the parent's exit; may not have children */
    mp_context *ctx;      /**< NULL: default context */
} mp_process_opts;

/**
 * A new, unstarted process object (free with mp_process_free). Takes the next number
 * N for "Process-N" even when a name is given, as Python. NULL on error: MP_EINVAL
 * without a target, -ENOMEM.
 */
mp_process *mp_process_new(const mp_process_opts *opts);
/**
 * Start the child. Errors: MP_EPROCESS "cannot start a process twice"; MP_EPROCESS
 * "daemonic processes are not allowed to have children" in a daemon; MP_ECLOSED;
 * MP_EINVAL / MP_ENOTFOUND for a target that cannot be located (spawn/forkserver);
 * encoding errors of the arguments; -errno from fork/exec. On failure no child
 * remains and the object can be started again.
 */
int mp_process_start(mp_process *p);
/**
 * Wait until the process ends or the timeout passes (seconds, negative: forever,
 * 0: poll). 0 when it ended (its exit code is then set), MP_ETIMEOUT,
 * MP_EINTERRUPTED (a signal handler asked blocking calls to stop), MP_EPROCESS for an
 * unstarted process ("can only join a started process"), for the calling process
 * itself ("cannot join current process") or another process's child; MP_ECLOSED.
 */
int mp_process_join(mp_process *p, double timeout);
/** True while the child runs (reaps it when it has ended). True for the calling
 * process's own object, false for unstarted, ended or closed ones. */
bool mp_process_is_alive(mp_process *p);
/** Send SIGTERM (exit code -15 unless the target handles it). 0 if it already ended;
 * MP_EPROCESS if not started or not our child; MP_ECLOSED. */
int mp_process_terminate(mp_process *p);
/** Send SIGKILL (exit code -9); as mp_process_terminate. */
int mp_process_kill(mp_process *p);
/**
 * The exit code: sets *code and returns 0 when the process has ended (polls it);
 * MP_ESTATE while running or unstarted (Python's None); MP_ECLOSED. Negative *code:
 * killed by that signal. 255 if the status was lost (another waitpid(-1) reaped it, or
 * the forkserver died).
 */
int mp_process_exitcode(const mp_process *p, int *code);
/** The child's pid, 0 before start. */
pid_t mp_process_pid(const mp_process *p);
/** The process's name (borrowed, lives as the object). */
const char *mp_process_name(const mp_process *p);
/** Whether it was created as a daemon. */
bool mp_process_daemon(const mp_process *p);
/**
 * An fd that becomes readable when the process ends (for mp_wait / poll), owned by
 * the object (valid until close/free), or -1 before start. A pidfd under fork and
 * spawn; under forkserver the connection on which the exit status arrives.
 */
int mp_process_sentinel(const mp_process *p);
/**
 * Python's repr: `<Process name='Process-1' pid=42 parent=41 stopped exitcode=-SIGTERM>`
 * (status initial / started / stopped / closed; " daemon" for daemons). Polls the
 * child. A malloc'd string (mp_free), NULL on allocation failure.
 */
char *mp_process_repr(const mp_process *p);
/** Release the fds and arguments; later calls return MP_ECLOSED. MP_ESTATE if still
 * running. */
int mp_process_close(mp_process *p);
/**
 * Free the object. A running child is not killed: the library keeps watching it so it
 * never becomes a zombie, and the at-exit handler still joins (or, for a daemon,
 * terminates) it. NULL is fine.
 */
void mp_process_free(mp_process *p);

/**
 * The children started by this process that are still running (finished ones are
 * reaped, as Python's active_children). Stores up to @p max borrowed pointers in
 * @p out (may be NULL) and returns how many are alive.
 */
int mp_active_children(mp_process **out, size_t max);

/* ---- leaving a child ---------------------------------------------------------------- */
/**
 * Exit the calling process with @p code (Python's sys.exit(n) in a child): runs the
 * library's at-exit steps (join children, terminate daemons, log `process exiting
 * with exitcode N`), flushes stdio and _exit()s. In the main process it is exit(code).
 */
_Noreturn void mp_process_exit(int code);
/**
 * Fail like an uncaught exception: prints `Process NAME:` (in a child),
 * `Traceback (most recent call last):`, a frame naming the target function and the
 * formatted message (e.g. "RuntimeError: There was an error!") to stderr, then
 * mp_process_exit(1).
 */
_Noreturn void mp_process_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- this process ------------------------------------------------------------------ */
/** Name of the calling process: "MainProcess" in the main program, the Process name
 * in a child. Static storage. */
const char *mp_current_process_name(void);
/** pid of the process that started this one through multiproc, or 0 in MainProcess. */
pid_t mp_parent_process_pid(void);
/** True in a daemon child. */
bool mp_current_process_daemon(void);
/** Number of usable CPUs (the affinity mask), at least 1. */
int mp_cpu_count(void);
/**
 * The parent process as a process object (Python's parent_process()): its name and
 * pid; mp_process_is_alive() tells whether it still runs (it cannot be joined,
 * signalled through the object or closed: MP_EPROCESS). Borrowed, lives until exit.
 * NULL in MainProcess (not an error: mp_last_error is left alone).
 */
mp_process *mp_parent_process(void);

/* ---- authentication key ------------------------------------------------------------ */
/** Longest authkey, bytes. */
#define MP_AUTHKEY_MAX 256
/**
 * This process's authkey (current_process().authkey): 32 random bytes made on first
 * use in the main process; in a child, the key of its Process object. Borrowed: valid
 * until the next mp_set_current_process_authkey. Stores its length in @p len (may be
 * NULL). Do not set it while other threads read it.
 */
const void *mp_current_process_authkey(size_t *len);
/** Replace this process's authkey (1..MP_AUTHKEY_MAX bytes, copied); children created
 * afterwards inherit it. MP_EINVAL for NULL, empty or too long. */
int mp_set_current_process_authkey(const void *key, size_t len);
/** A process object's authkey (copied from this process's at mp_process_new): what the
 * child will see as its own. Borrowed; NULL (with *len 0) for a NULL process. */
const void *mp_process_authkey(const mp_process *p, size_t *len);
/** Set the key a process object's child will have (1..MP_AUTHKEY_MAX bytes, copied):
 * MP_ESTATE once started, MP_EINVAL for a bad key. */
int mp_process_set_authkey(mp_process *p, const void *key, size_t len);

/* ---- start methods and the spawned program ---------------------------------------- */
/**
 * The start methods this platform has, the default first (Python's
 * get_all_start_methods): "fork", "spawn", "forkserver" unless the default was set
 * to another. Stores up to @p max static strings in @p out (may be NULL) and returns
 * how many there are (3).
 */
int mp_get_all_start_methods(const char **out, size_t max);
/**
 * The program the spawn start method and the forkserver exec (Python's
 * set_executable): an absolute path to a build of the same program (its functions
 * sit at the same offsets; another binary's children fail to start with
 * MP_ENOTFOUND). NULL or "" restores the default, /proc/self/exe. Takes effect for
 * the next spawn child and the next forkserver started. MP_EINVAL for a relative
 * or too long path; a missing file is -ENOENT from mp_process_start.
 */
int mp_set_executable(const char *path);
/** The path set by mp_set_executable, or "/proc/self/exe". Static storage. */
const char *mp_get_executable(void);
/**
 * Shared libraries the forkserver dlopen()s (RTLD_NOW | RTLD_GLOBAL) once when it
 * starts, so that its children start with them loaded (Python's
 * set_forkserver_preload, which imports modules). @p n names (paths or sonames,
 * copied; none may contain ':'); n = 0 clears the list. A library that fails to
 * load is skipped, as Python skips a module that fails to import (logged at DEBUG).
 * Applies to a forkserver started afterwards. MP_EINVAL for a NULL or bad name.
 */
int mp_set_forkserver_preload(const char *const *libs, size_t n);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
