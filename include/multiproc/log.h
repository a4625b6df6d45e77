/**
 * @file log.h
 * @brief The multiprocessing logger (Python's multiprocessing.get_logger / log_to_stderr).
 *
 * CONTRACT DRAFT: the log module's owner completes the documentation.
 * Lines look like the seeds': `[INFO/Process-1] child process calling self.run()`.
 * Each line is written with one write() so lines from several processes never mix.
 */
#ifndef MULTIPROC_LOG_H
#define MULTIPROC_LOG_H

#ifdef __cplusplus
extern "C" {
#endif

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

/** Send the logger's lines to stderr from @p level up (Python's log_to_stderr). */
void mp_log_to_stderr(int level);
/** Set / read the logger's level. Lines below it are dropped. Default: WARNING,
 * with no output until log_to_stderr or mp_log_set_fd (Python prints nothing). */
void mp_log_set_level(int level);
int mp_log_get_level(void);
/** Write lines to @p fd instead (-1: nowhere). */
void mp_log_set_fd(int fd);
/** Log one line at @p level as `[LEVEL/ProcessName] message`. */
void mp_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#ifdef __cplusplus
}
#endif
#endif
