/**
 * @file error.h
 * @brief The error model shared by every multiproc module.
 *
 * A failure is reported in one of two shapes:
 * - a constructor (a function returning a new handle: `mp_queue_new`, `mp_popen_start`,
 *   `mp_client`, ...) returns NULL, and the code is in mp_last_error_code();
 * - every other fallible function returns `int`: 0 (or a non-negative count) on success
 *   and the negative code on failure (also in mp_last_error_code()).
 *
 * A code is either `-errno` for an operating-system error (`-ENOENT`, `-EACCES`, ...) or
 * one of the `MP_E*` library codes below, which sit far below any errno value so the two
 * ranges never collide.
 *
 * Besides the code, the failing function stores a detailed, human-readable message
 * in a thread-local buffer (the missing program's path, the child's exit status, the
 * peer's address). `mp_last_error()` returns it; it stays valid until the same
 * thread's next failing multiproc call. Only failures set the code and the message: a
 * call that succeeds leaves them as they were, so read them right after the failing
 * call (or mp_clear_error() first).
 *
 * Python mapping: where Python raises an exception, multiproc returns its code:
 * TimeoutExpired -> MP_ETIMEOUT, CalledProcessError -> MP_ECHILDFAIL,
 * EOFError -> MP_EEOF, BufferTooShort -> MP_ETOOSHORT,
 * AuthenticationError -> MP_EAUTH, ProcessError -> MP_EPROCESS.
 *
 * Thread safety: every function here is safe from any thread; the message is per thread.
 */
#ifndef MULTIPROC_ERROR_H
#define MULTIPROC_ERROR_H

#include <stddef.h>

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/**
 * "No limit" for a time-limit field in an options struct (`..._limit`) or a limit argument.
 * The one timing rule of the library: a negative time always means "forever"; 0 in a
 * function's `double timeout` argument polls, and 0 in an options field means that field's
 * default (written beside each field: "no limit" for most, 20 s for a handshake, so an
 * unauthenticated peer never holds a slot forever unless asked). NaN is MP_EINVAL.
 */
#define MP_NO_LIMIT (-1.0)

/**
 * The library's own error codes: X(NAME, value, description).
 * Values start at -10000 so they never overlap `-errno`.
 */
#define MP_ERRORS(X)                                                                \
    X(MP_ETIMEOUT, -10001, "operation timed out")                                   \
    X(MP_ECHILDFAIL, -10002, "child process exited with a non-zero status")        \
    X(MP_EEOF, -10003, "end of file: the other end is closed")                     \
    X(MP_ETOOSHORT, -10004, "buffer too short for the message")                    \
    X(MP_EAUTH, -10005, "authentication failed")                                   \
    X(MP_EPROCESS, -10006, "invalid operation on a process")                       \
    X(MP_EINTERRUPTED, -10007, "interrupted by a signal handler")                  \
    X(MP_EWORKERDIED, -10008, "worker process died")                               \
    X(MP_EOWNERDEAD, -10009, "previous owner died while holding the lock")         \
    X(MP_EBROKEN, -10010, "barrier is broken")                                     \
    X(MP_EFULL, -10011, "queue is full")                                           \
    X(MP_EEMPTY, -10012, "queue is empty")                                         \
    X(MP_ECLOSED, -10013, "object is closed")                                      \
    X(MP_EPROTO, -10014, "malformed message")                                      \
    X(MP_ETYPE, -10015, "value has the wrong type")                                \
    X(MP_ESTATE, -10016, "operation not valid in the object's current state")      \
    X(MP_ENOTFOUND, -10017, "not found")                                           \
    X(MP_EUNSUPPORTED, -10018, "not supported")                                    \
    X(MP_EINVAL, -10019, "invalid argument")                                       \
    X(MP_ENOTOWNER, -10020, "not the owner of the lock")                           \
    X(MP_ERANGE, -10021, "value out of range")                                     \
    X(MP_EMPI, -10022, "an MPI call failed")

/** Library error codes (all negative). */
enum mp_error {
    MP_OK = 0,
/** @cond internal */
#define MP__ERROR_ENUM(name, value, text) name = value,
/** @endcond */
    MP_ERRORS(MP__ERROR_ENUM)
#undef MP__ERROR_ENUM
};

/**
 * Text describing @p code: the library's description for MP_E* codes,
 * strerror(-code) for OS codes, "success" for 0. Never NULL; static storage.
 */
const char *mp_strerror(int code);

/**
 * Symbolic name of @p code: "MP_ETIMEOUT", "ENOENT", "OK"; "EUNKNOWN" for a code
 * outside both ranges. Never NULL; static storage.
 */
const char *mp_errname(int code);

/**
 * The detailed message of this thread's last failure (e.g. "ENOENT: no such file
 * or directory: exec 'nosuchprog'"). Empty string when none. Owned by the library,
 * valid until this thread's next failing call.
 */
const char *mp_last_error(void);

/** The code of this thread's last failure, 0 if none: where a constructor that returned
 * NULL puts its code (-ENOMEM, MP_EINVAL, ...). */
int mp_last_error_code(void);

/** Forget this thread's last failure. */
void mp_clear_error(void);

/** Free memory allocated and returned by the library (buffers, strings). NULL is fine. */
void mp_free(void *p);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
