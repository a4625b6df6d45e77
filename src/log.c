/* The multiprocessing logger: `[LEVEL/ProcessName] message` lines, one write() each.
 *
 * DESIGN: the only state is two atomics (level, fd), read by any thread of any
 * process; a line is built on the stack (heap for long ones) and written at once
 * so concurrent writers never interleave within a line. */
#define _GNU_SOURCE
#include "multiproc/log.h"
#include "multiproc/process.h"
#include "internal/common.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static atomic_int log_level = MP_LOG_WARNING;
static atomic_int log_fd = -1;

void mp_log_to_stderr(int level)
{
    if (level != MP_LOG_NOTSET)
        atomic_store(&log_level, level);
    atomic_store(&log_fd, 2);
}

void mp_log_set_level(int level) { atomic_store(&log_level, level); }

int mp_log_get_level(void) { return atomic_load(&log_level); }

void mp_log_set_fd(int fd) { atomic_store(&log_fd, fd < 0 ? -1 : fd); }

int mp_log_get_fd(void) { return atomic_load(&log_fd); }

bool mp_log_enabled(int level)
{
    return atomic_load(&log_fd) >= 0 && level >= atomic_load(&log_level);
}

const char *mp_log_level_name(int level)
{
    switch (level) {
    case MP_LOG_NOTSET: return "NOTSET";
    case MP_LOG_SUBDEBUG: return "SUBDEBUG";
    case MP_LOG_DEBUG: return "DEBUG";
    case MP_LOG_INFO: return "INFO";
    case MP_LOG_SUBWARNING: return "SUBWARNING";
    case MP_LOG_WARNING: return "WARNING";
    case MP_LOG_ERROR: return "ERROR";
    case MP_LOG_CRITICAL: return "CRITICAL";
    default: return NULL;
    }
}

/* "[LEVEL/Name] " into buf; returns its length. */
static int line_prefix(char *buf, size_t size, int level)
{
    const char *name = mp_log_level_name(level);
    const char *proc = mp_current_process_name();
    if (!proc)
        proc = "MainProcess";
    if (name)
        return snprintf(buf, size, "[%s/%s] ", name, proc);
    return snprintf(buf, size, "[Level %d/%s] ", level, proc); /* Python's unnamed level */
}

void mp_vlog(int level, const char *fmt, va_list ap)
{
    int fd = atomic_load(&log_fd);
    if (fd < 0 || level < atomic_load(&log_level) || !fmt)
        return;
    int saved = errno;
    char stack[1024], prefix[256];
    int np = line_prefix(prefix, sizeof prefix, level);
    if (np < 0 || (size_t)np >= sizeof prefix)
        np = (int)strlen(prefix);
    va_list copy;
    va_copy(copy, ap);
    int nm = vsnprintf(stack, sizeof stack, fmt, copy);
    va_end(copy);
    if (nm < 0)
        nm = 0;
    /* one buffer holding prefix + message + newline */
    size_t total = (size_t)np + (size_t)nm + 1;
    char *line = total + 1 <= sizeof stack ? stack : malloc(total + 1);
    if (!line) { /* out of memory: write what fits */
        line = stack;
        total = sizeof stack - 1;
        nm = (int)(total - 1 - (size_t)np);
    }
    if (line == stack) {
        memmove(stack + np, stack, (size_t)nm); /* message is already in stack */
    } else {
        vsnprintf(line + np, (size_t)nm + 1, fmt, ap);
    }
    memcpy(line, prefix, (size_t)np);
    line[total - 1] = '\n';
    if (mp__write_full(fd, line, total) < 0) {
        /* nothing sensible to do: a logger never fails its caller */
    }
    if (line != stack)
        free(line);
    errno = saved;
}

void mp_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mp_vlog(level, fmt, ap);
    va_end(ap);
}
