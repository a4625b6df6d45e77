/* The error model: one table of library codes, a thread-local detailed message. */
#define _GNU_SOURCE
#include "multiproc/error.h"
#include "internal/common.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static _Thread_local char last_msg[1024];
static _Thread_local int last_code;
static _Thread_local bool muted;

bool mp__error_mute(bool on)
{
    bool was = muted;
    muted = on;
    return was;
}

void mp__error_save(mp__error_saved *s)
{
    _Static_assert(sizeof s->msg == sizeof last_msg, "saved message fits");
    s->code = last_code;
    memcpy(s->msg, last_msg, sizeof last_msg);
}

void mp__error_restore(const mp__error_saved *s)
{
    last_code = s->code;
    memcpy(last_msg, s->msg, sizeof last_msg);
}

const char *mp_strerror(int code)
{
    if (code == 0)
        return "success";
    switch (code) {
#define MP__ERROR_TEXT(name, value, text) \
    case name:                            \
        return text;
        MP_ERRORS(MP__ERROR_TEXT)
#undef MP__ERROR_TEXT
    default:
        break;
    }
    if (code < 0 && code > -4096)
        return strerror(-code); /* glibc's table is static and thread-safe for known codes */
    return "unknown error";
}

const char *mp_errname(int code)
{
    if (code == 0)
        return "OK";
    switch (code) {
#define MP__ERROR_NAME(name, value, text) \
    case name:                            \
        return #name;
        MP_ERRORS(MP__ERROR_NAME)
#undef MP__ERROR_NAME
    default:
        break;
    }
    if (code < 0 && code > -4096) {
        const char *n = strerrorname_np(-code);
        if (n)
            return n;
    }
    return "EUNKNOWN";
}

const char *mp_last_error(void) { return last_msg; }

int mp_last_error_code(void) { return last_code; }

const char *mp__last_error_detail(void)
{
    const char *name = mp_errname(last_code), *desc = mp_strerror(last_code);
    size_t nl = strlen(name), dl = strlen(desc);
    const char *m = last_msg;
    if (strncmp(m, name, nl) != 0 || strncmp(m + nl, ": ", 2) != 0 ||
        strncmp(m + nl + 2, desc, dl) != 0)
        return m; /* not one of ours (cleared, or restored from elsewhere) */
    m += nl + 2 + dl;
    if (!*m)
        return desc;
    return strncmp(m, ": ", 2) == 0 ? m + 2 : last_msg;
}

void mp_clear_error(void)
{
    last_msg[0] = '\0';
    last_code = 0;
}

void mp_free(void *p) { free(p); }

int mp__error(int code, const char *fmt, ...)
{
    if (muted)
        return code;
    int saved = errno; /* callers often report errno after this; keep it intact */
    char detail[sizeof last_msg - 64];
    detail[0] = '\0';
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(detail, sizeof detail, fmt, ap);
        va_end(ap);
    }
    if (detail[0])
        snprintf(last_msg, sizeof last_msg, "%s: %s: %s", mp_errname(code), mp_strerror(code),
                 detail);
    else
        snprintf(last_msg, sizeof last_msg, "%s: %s", mp_errname(code), mp_strerror(code));
    last_code = code;
    errno = saved;
    return code;
}
