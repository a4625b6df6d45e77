/**
 * @file info.h
 * @brief Process information read from /proc: pid, parent, state, start time, CPU
 * times, memory, working directory, executable, command line, environment.
 *
 * Python mapping (the os / psutil calls):
 * - `os.getpid()`, `os.getppid()`            -> info.pid, info.ppid
 * - `psutil.Process(pid).status()`           -> info.state ('S') and info.state_name ("sleeping")
 * - `psutil.Process(pid).create_time()`      -> info.start_time (seconds since the epoch)
 * - `os.times()` / `Process.cpu_times()`     -> info.user_time, info.system_time
 * - `Process.memory_info()` rss / vms        -> info.rss, info.vms (bytes)
 * - `Process.num_threads()`, `.name()`, `.exe()`, `.cmdline()` -> num_threads, name, exe, cmdline
 * - `os.getcwd()` / `Process.cwd()`          -> info.cwd or mp_proc_cwd()
 * - `os.environ` / `Process.environ()`       -> info.environ or mp_proc_environ()
 * - psutil.NoSuchProcess -> -ESRCH, psutil.AccessDenied -> -EACCES
 *
 * Errors: a pid that does not exist (or has gone) is -ESRCH with the message
 * "pid 12345: no such process". The working directory, executable and environment
 * of another user's process are not readable without privileges: the single-field
 * functions return -EACCES ("pid 1: environ: permission denied"); mp_proc_info_get
 * still succeeds and leaves those fields NULL with the code in cwd_error,
 * exe_error, environ_error (as psutil's as_dict() does for AccessDenied fields).
 * A zombie has no cwd/exe/environ: the same fields report -ESRCH.
 *
 * Thread safety: every function is safe from any thread (no shared state).
 * Fork behaviour: nothing is cached; pid 0 always means the calling process.
 */
#ifndef MULTIPROC_INFO_H
#define MULTIPROC_INFO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/** What mp_proc_info_get reports about one process. */
typedef struct mp_proc_info {
    pid_t pid;             /**< the process */
    pid_t ppid;            /**< its parent */
    pid_t pgid;            /**< its process group */
    pid_t sid;             /**< its session */
    uid_t uid;             /**< owner (of /proc/PID) */
    gid_t gid;             /**< owner's group */
    char state;            /**< kernel letter: 'R', 'S', 'D', 'Z', 'T', 't', 'X', 'I', ... */
    const char *state_name; /**< psutil's word: "running", "sleeping", "zombie", ... (static) */
    char *name;            /**< the command name (comm, at most 15 bytes) */
    double start_time;     /**< when it started, seconds since the epoch */
    double user_time;      /**< CPU seconds in user mode */
    double system_time;    /**< CPU seconds in the kernel */
    double children_user_time;   /**< of waited-for children */
    double children_system_time; /**< of waited-for children */
    uint64_t rss;          /**< resident memory, bytes */
    uint64_t vms;          /**< virtual memory size, bytes */
    int num_threads;       /**< threads in the process */
    int nice;              /**< nice value, -20..19 */
    char *exe;             /**< the executable's path, or NULL (see exe_error) */
    char *cwd;             /**< working directory, or NULL (see cwd_error) */
    char **cmdline;        /**< argv, NULL-terminated (empty for kernel threads and zombies) */
    size_t cmdline_len;    /**< entries in cmdline */
    char **environ;        /**< "KEY=VALUE" strings, NULL-terminated, or NULL (environ_error) */
    size_t environ_len;    /**< entries in environ */
    int exe_error;         /**< 0, or why exe is NULL (-EACCES, -ESRCH) */
    int cwd_error;         /**< 0, or why cwd is NULL */
    int environ_error;     /**< 0, or why environ is NULL */
} mp_proc_info;

/**
 * Fill @p out with everything about @p pid (0: the calling process). Returns 0,
 * -ESRCH when the process does not exist, -EACCES/-EPERM only if even its status
 * is unreadable, -ENOMEM. On success free the contents with mp_proc_info_free; on
 * failure nothing needs freeing.
 */
int mp_proc_info_get(pid_t pid, mp_proc_info *out);
/** Free what mp_proc_info_get allocated inside @p info (not the struct itself);
 * the struct is zeroed. NULL is fine. */
void mp_proc_info_free(mp_proc_info *info);

/** Working directory of @p pid (0: self) into *out (free with mp_free).
 * -ESRCH, -EACCES ("pid 1: cwd: permission denied"). */
int mp_proc_cwd(pid_t pid, char **out);
/** Path of the executable of @p pid into *out (free with mp_free). -ESRCH, -EACCES. */
int mp_proc_exe(pid_t pid, char **out);
/** argv of @p pid as a NULL-terminated array (*out, free with mp_proc_strv_free) and
 * its length (*n, may be NULL). -ESRCH, -EACCES. */
int mp_proc_cmdline(pid_t pid, char ***out, size_t *n);
/** Environment of @p pid ("KEY=VALUE", as it was at exec time for another process)
 * as a NULL-terminated array (free with mp_proc_strv_free). -ESRCH, -EACCES. */
int mp_proc_environ(pid_t pid, char ***out, size_t *n);
/** Free an array returned by mp_proc_cmdline / mp_proc_environ. NULL is fine. */
void mp_proc_strv_free(char **v);
/** The value of @p key in an environ array (borrowed), or NULL. */
const char *mp_proc_env_get(char *const *env, const char *key);

/** True if a process with this pid exists (zombies included). */
bool mp_pid_exists(pid_t pid);
/** psutil's word for a state letter ("sleeping" for 'S'); "unknown" otherwise. */
const char *mp_proc_state_name(char state);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
