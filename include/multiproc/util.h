/**
 * @file util.h
 * @brief Finalizers, after-fork hooks, the temporary directory and is_exiting
 *        (Python's multiprocessing.util).
 *
 * Python mapping:
 * - `Finalize(obj, callback, args, exitpriority=p)` -> mp_finalize(obj, fn, arg, p):
 *   an id; `f()` -> mp_finalizer_run(id), `f.cancel()` -> mp_finalizer_cancel(id),
 *   `f.still_active()` -> mp_finalizer_active(id). Without an exit priority
 *   (MP_FINALIZE_NO_EXIT, Python's None) it runs only when its object is freed.
 * - The weakref that runs a Finalize when `obj` is garbage-collected -> the owner of
 *   `obj` calls mp_finalize_object(obj) when it frees it (C has no garbage collector).
 * - `_run_finalizers(minpriority)` -> mp_run_finalizers(); at exit the library runs
 *   those with priority >= 0, then terminates daemons and joins children, then the
 *   rest (as util._exit_function).
 * - `register_after_fork(obj, func)` -> mp_register_after_fork(obj, fn).
 * - `get_temp_dir()` -> mp_get_temp_dir(); `is_exiting()` -> mp_is_exiting().
 *
 * Order (as Python): finalizers run highest exit priority first; among equal
 * priorities, the one created last runs first. Each runs at most once.
 *
 * Children: every child the library starts forgets its parent's finalizers before its
 * target runs (Python clears the registry in _bootstrap) and runs the after-fork
 * callbacks (a fork child has its parent's; a spawn or forkserver child has only those
 * registered in the program's constructors).
 *
 * Thread safety: every function may be called from any thread; callbacks run on the
 * calling (or exiting) thread, outside the registry's lock, so they may register or
 * cancel finalizers.
 */
#ifndef MULTIPROC_UTIL_H
#define MULTIPROC_UTIL_H

#include <limits.h>
#include <stdbool.h>
#include <stdint.h>

#include "multiproc/error.h"

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/** A finalizer or after-fork callback. */
typedef void (*mp_finalize_fn)(void *arg);

/** exitpriority=None: the finalizer never runs at exit, only when its object is freed
 * (mp_finalize_object) or when called (mp_finalizer_run). */
#define MP_FINALIZE_NO_EXIT INT_MIN
/** mp_run_finalizers(MP_FINALIZE_ALL): every finalizer that has an exit priority. */
#define MP_FINALIZE_ALL (INT_MIN + 1)

/** A finalizer's id (0: none). Ids are never reused, so a spent one is simply inactive. */
typedef uint64_t mp_finalizer;

/**
 * Register fn(arg) to run once: when @p obj is freed (mp_finalize_object(obj); @p obj
 * may be NULL), when called (mp_finalizer_run), or at exit if @p exitpriority is not
 * MP_FINALIZE_NO_EXIT. Returns its id, or 0 on error (MP_EINVAL without fn or with
 * neither an object nor an exit priority, as Python's "Without object, exitpriority
 * cannot be None"; -ENOMEM).
 */
mp_finalizer mp_finalize(void *obj, mp_finalize_fn fn, void *arg, int exitpriority);
/** Run it now if still active (Python's f()): 1 if it ran, 0 if it had run or was
 * cancelled. */
int mp_finalizer_run(mp_finalizer f);
/** Cancel it (it will not run). Nothing for a spent id. */
void mp_finalizer_cancel(mp_finalizer f);
/** True while it has neither run nor been cancelled. */
bool mp_finalizer_active(mp_finalizer f);
/** @p obj is being freed: run its active finalizers (the newest first). Returns how
 * many ran. */
int mp_finalize_object(const void *obj);
/**
 * Run the active finalizers whose exit priority is >= @p minpriority (MP_FINALIZE_ALL:
 * every one with an exit priority), highest first, newest first among equals. Returns
 * how many ran.
 */
int mp_run_finalizers(int minpriority);

/**
 * Call fn(obj) in every child the library starts, before its target runs (Python's
 * register_after_fork), in registration order. 0, MP_EINVAL without fn, -ENOMEM.
 */
int mp_register_after_fork(void *obj, mp_finalize_fn fn);

/**
 * A private temporary directory ("mp-XXXXXX" under $TMPDIR, else /tmp), made on first
 * use and removed with its contents when this process exits (a finalizer with exit
 * priority -100, as Python's). Fork children share their parent's; spawn and
 * forkserver children make their own. Static storage; NULL on error (mp_last_error).
 */
const char *mp_get_temp_dir(void);

/** True while the process is exiting: from the start of the library's at-exit steps
 * (Python's util.is_exiting()). */
bool mp_is_exiting(void);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
