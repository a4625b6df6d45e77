/**
 * @file log.h
 * @brief The multiprocessing logger (Python's multiprocessing.get_logger / log_to_stderr).
 *
 * Python mapping:
 * - `multiprocessing.log_to_stderr(level)` -> mp_log_to_stderr(level)
 * - `get_logger().setLevel(l)` / `.getEffectiveLevel()` -> mp_log_set_level / mp_log_get_level
 * - `get_logger().info("x %d", n)` -> mp_log(MP_LOG_INFO, "x %d", n)
 * - a handler on another stream -> mp_log_set_fd(fd)
 *
 * Lines look like Python's `[%(levelname)s/%(processName)s] %(message)s`:
 * `[INFO/Process-1] child process calling self.run()`,
 * `[INFO/MainProcess] process shutting down`. The process name is
 * mp_current_process_name(). As in Python nothing is printed until mp_log_to_stderr()
 * or mp_log_set_fd() names a destination.
 *
 * Thread safety: every function may be called from any thread; the settings are
 * atomics. Each line is formatted into one buffer and written with a single write(),
 * so lines from several threads or processes sharing the fd never mix (for lines up
 * to PIPE_BUF = 4096 bytes on a pipe; files opened with O_APPEND are atomic too).
 * mp_log keeps errno unchanged.
 *
 * Fork behaviour: a forked child keeps the parent's level and fd. Spawned and
 * forkserver children get them from the process module (it reads mp_log_get_level
 * and mp_log_get_fd in the parent).
 */
#ifndef MULTIPROC_LOG_H
#define MULTIPROC_LOG_H

#include <stdarg.h>
#include <stdbool.h>

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/** Levels, with Python's numbers (SUBDEBUG and SUBWARNING are multiprocessing's). */
enum mp_log_level {
    MP_LOG_NOTSET = 0,
    MP_LOG_SUBDEBUG = 5,
    MP_LOG_DEBUG = 10,
    MP_LOG_INFO = 20,
    MP_LOG_SUBWARNING = 25,
    MP_LOG_WARNING = 30,
    MP_LOG_ERROR = 40,
    MP_LOG_CRITICAL = 50
};

/**
 * Send the logger's lines to stderr (fd 2), from @p level up (Python's
 * log_to_stderr). @p level MP_LOG_NOTSET (0) keeps the current level, as Python's
 * log_to_stderr(None) does. Cannot fail.
 */
void mp_log_to_stderr(int level);
/**
 * Set the logger's level: lines below it are dropped. Default MP_LOG_WARNING
 * (Python's effective default). MP_LOG_NOTSET lets every line through.
 */
void mp_log_set_level(int level);
/** The logger's current level. */
int mp_log_get_level(void);
/**
 * Write lines to @p fd (borrowed: the logger never closes it; keep it open while
 * logging to it), or -1 for nowhere (the default).
 */
void mp_log_set_fd(int fd);
/** The fd lines go to, or -1 when logging is off. */
int mp_log_get_fd(void);
/** True when a line at @p level would be written (to skip costly formatting). */
bool mp_log_enabled(int level);
/**
 * Log one line at @p level as `[LEVEL/ProcessName] message` plus a newline. LEVEL is
 * Python's name (DEBUG, INFO, SUBWARNING, ...; "Level 7" for other numbers). Write
 * errors are ignored (a logger must never fail its caller).
 */
void mp_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** mp_log with a va_list. */
void mp_vlog(int level, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/** Name of a level as printed in lines: "INFO", or NULL for a number without one. */
const char *mp_log_level_name(int level);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
