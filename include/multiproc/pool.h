/**
 * @file pool.h
 * @brief Process pools (Python's multiprocessing.Pool), that survive dying workers.
 *
 * Python mapping:
 * - `Pool(processes, initializer, initargs, maxtasksperchild, context)` -> mp_pool_new()
 *   with an mp_pool_opts. Worker names are `ForkPoolWorker-N`, `SpawnPoolWorker-N`,
 *   `ForkServerPoolWorker-N` (N counts this process's children, as Python's).
 * - `apply`, `apply_async`, `map`, `map_async`, `starmap`, `starmap_async`, `imap`,
 *   `imap_unordered` -> mp_pool_*; `AsyncResult.get/wait/ready/successful` ->
 *   mp_pool_result_*; `close`, `terminate`, `join` -> mp_pool_close/terminate/join.
 * - A task is a plain C function (mp_task_fn) that takes the argument value and sets a
 *   result value, or fails by returning a negative code (mp_task_fail sets the message).
 *   Python's re-raised exception with its remote traceback -> that code, with the
 *   worker's message plus the task, worker name and pid in mp_last_error().
 * - starmap: C has no `*args`; the function gets each argument tuple as a list value
 *   (read it with mp_value_unpack).
 * - maxtasksperchild counts tasks as Python does: one chunk of a map is one task.
 *
 * Tasks travel the way Process targets do (object + offset, see process.h), so they
 * work under every start method. Arguments and results are mp_values (MessagePack);
 * handles to library objects may travel in arguments: their fds go over the worker's
 * Unix socket as SCM_RIGHTS.
 *
 * Beyond Python:
 * - A worker that dies (SIGKILL, a crash, abort(), exit() inside a task) never hangs
 *   the pool: each task of the chunk it was running fails with MP_EWORKERDIED (the
 *   message names the worker, its pid and the signal or exit status), chunks it had
 *   received but not started run on another worker, the worker is replaced.
 * - task_time_limit: a task running longer has its worker killed and replaced; the task
 *   fails with MP_ETIMEOUT (the other tasks of its chunk with MP_EWORKERDIED).
 * - An initializer that fails makes mp_pool_new fail with its code and message (a
 *   replacement worker whose initializer fails breaks the pool: its pending and later
 *   tasks fail with that code) — Python restarts such workers forever.
 * - mp_pool_imap_source reads an input of any length from a callback, only as fast as
 *   the results are consumed (at most `window` items read but not yet returned).
 * - mp_pool_wait_any waits for the first of many results (concurrent.futures'
 *   wait(FIRST_COMPLETED)).
 * - mp_pool_map_array maps a C function over an array of fixed-size elements through
 *   shared memory, with no per-item encoding.
 *
 * Threads: each pool runs one thread in the parent (the result thread) that sends
 * tasks, reads results, watches the workers' pidfds and replaces dead workers.
 * **Callbacks, error callbacks and mp_pool_imap_source's input callback run on that
 * thread**, one at a time, as Python's; they must be quick and must not wait for a
 * result of the same pool (they may submit new work). Every other function may be
 * called from any thread at once: tasks may be submitted from several threads.
 *
 * Fork behaviour: a pool belongs to the process that created it; a forked child must
 * not use its parent's pool (it has no result thread there).
 */
#ifndef MULTIPROC_POOL_H
#define MULTIPROC_POOL_H

#include <stdbool.h>
#include <stddef.h>

#include "multiproc/process.h"
#include "multiproc/value.h"

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/**
 * A task: runs in a worker with the argument decoded there (borrowed, valid during the
 * call). On success it returns 0 and sets *result to a new value (adopted by the pool;
 * leaving it NULL means nil). On failure it returns a negative code (an MP_E* code or
 * -errno); the message is what mp_task_fail (or any failing multiproc call) recorded.
 */
typedef int (*mp_task_fn)(const mp_value *arg, mp_value **result);

/** An initializer: runs once in each worker before its first task. 0, or a negative
 * code (message through mp_task_fail) that fails the pool's creation. */
typedef int (*mp_pool_init_fn)(const mp_value *args);

/** Record a task's (or initializer's) failure message; returns @p code, so a task can
 * `return mp_task_fail(MP_EINVAL, "bad input %d", x);`. */
int mp_task_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/** A pool (opaque). */
typedef struct mp_pool mp_pool;

/** Where a pool's workers run (opaque). NULL: local processes started with the pool's
 * context. libmultiproc_mpi's mp_mpi_pool_backend() runs them as MPI ranks
 * (multiproc/mpi_pool.h): the same calls and task functions, other limits. */
typedef struct mp_pool_backend mp_pool_backend;

/** Options; all-zero (or NULL) means the defaults. */
typedef struct mp_pool_opts {
    int processes;               /**< workers; 0: mp_cpu_count() */
    mp_pool_init_fn initializer; /**< NULL: none */
    const mp_value *initargs;    /**< copied (NULL: nil); handles stay borrowed and must
                                      outlive the pool (replacement workers get them too) */
    unsigned maxtasksperchild;   /**< 0: unlimited; else a worker is replaced after this
                                      many tasks (chunks) */
    mp_context *ctx;             /**< NULL: the default context */
    double task_time_limit;      /**< seconds a task may run; 0 or MP_NO_LIMIT: no limit */
    /** NULL: local worker processes; else where the workers run (e.g.
     * mp_mpi_pool_backend() of libmultiproc_mpi). A backend may refuse options it cannot
     * honour (MP_EUNSUPPORTED): the MPI one refuses maxtasksperchild and task_time_limit. */
    const mp_pool_backend *backend;
} mp_pool_opts;

/**
 * Start the workers and wait until each ran its initializer. NULL on failure with the
 * code in mp_last_error_code(): the initializer's code (message: its message, the worker
 * name and pid), MP_EINVAL for bad options, errors of starting processes.
 */
mp_pool *mp_pool_new(const mp_pool_opts *opts);

/** Per-call options of the asynchronous calls; all-zero means the defaults. */
typedef struct mp_pool_call_opts {
    size_t chunksize; /**< items per task; 0: Python's rule (len / (4 * processes), rounded
                           up) for map/starmap, 1 for imap */
    /** Called on the result thread with the result (borrowed) when the call succeeds. */
    void (*callback)(const mp_value *result, void *userdata);
    /** Called on the result thread with the first failure's code and message. */
    void (*error_callback)(int code, const char *message, void *userdata);
    void *userdata;           /**< passed to callback and error_callback */
    double task_time_limit; /**< seconds; 0: the pool's limit; MP_NO_LIMIT: none */
} mp_pool_call_opts;

/** An asynchronous result (Python's AsyncResult / MapResult). */
typedef struct mp_pool_result mp_pool_result;

/**
 * fn(arg) in a worker; waits for it. On success *out is a new value (mp_value_free).
 * Errors: the task's code (message from the worker), MP_EWORKERDIED, MP_ETIMEOUT (time
 * limit), MP_ESTATE (pool closed: "Pool not running"), MP_EINTERRUPTED, MP_EINVAL.
 */
int mp_pool_apply(mp_pool *p, mp_task_fn fn, const mp_value *arg, mp_value **out);
/** fn(arg) without waiting; NULL on error (codes as mp_pool_apply's submission
 * errors). The argument is encoded before the call returns. */
mp_pool_result *mp_pool_apply_async(mp_pool *p, mp_task_fn fn, const mp_value *arg,
                                    const mp_pool_call_opts *opts);
/**
 * fn over each item of the list @p items, in chunks of @p chunksize (0: Python's rule);
 * *out is a new list of the results in order. If tasks fail, the code and message of
 * the lowest-index failure (use mp_pool_map_async + mp_pool_result_item for each).
 * MP_ETYPE if @p items is not a list.
 */
int mp_pool_map(mp_pool *p, mp_task_fn fn, const mp_value *items, size_t chunksize,
                mp_value **out);
/** map without waiting: the result's value is the list of results. The input is
 * encoded before the call returns, chunk by chunk, each chunk queued as soon as it is
 * encoded (the workers start on the first while the rest are encoded). An item that
 * cannot be encoded (nested too deep, a handle that cannot be exported, more than 128
 * fds in a chunk) does not fail the call: the items of its chunk fail with that code
 * and a message naming them ("pool: encoding task arguments (items 2-3): ..."), given
 * by mp_pool_result_get / mp_pool_result_item as Python's map_async raises such errors
 * from get(); the other chunks run. The same holds for map, starmap and the imap
 * calls (next returns the code for each such item); apply_async refuses such an
 * argument itself (NULL). */
mp_pool_result *mp_pool_map_async(mp_pool *p, mp_task_fn fn, const mp_value *items,
                                  const mp_pool_call_opts *opts);
/** map where each item is an argument list (MP_ETYPE otherwise); fn gets the list. */
int mp_pool_starmap(mp_pool *p, mp_task_fn fn, const mp_value *items, size_t chunksize,
                    mp_value **out);
/** starmap without waiting: the result's value is the list of results. */
mp_pool_result *mp_pool_starmap_async(mp_pool *p, mp_task_fn fn, const mp_value *items,
                                      const mp_pool_call_opts *opts);

/**
 * Wait until the result is ready (timeout in seconds: negative forever, 0 poll) and give
 * its value: *out is borrowed, valid until mp_pool_result_free (copy it to keep it).
 * Returns 0, the task's failure code (message in mp_last_error()), MP_ETIMEOUT when not
 * ready in time, MP_EINTERRUPTED.
 */
int mp_pool_result_get(mp_pool_result *r, double timeout, const mp_value **out);
/** Wait until ready: 0, MP_ETIMEOUT, MP_EINTERRUPTED. */
int mp_pool_result_wait(mp_pool_result *r, double timeout);
/** Whether the call has completed. */
bool mp_pool_result_ready(const mp_pool_result *r);
/** 1 if it completed successfully, 0 if it failed, MP_ESTATE if not ready (Python's
 * ValueError). */
int mp_pool_result_successful(const mp_pool_result *r);
/** Number of tasks (items) of the call. */
size_t mp_pool_result_len(const mp_pool_result *r);
/**
 * Item @p i of a completed map (or the single result of apply: i = 0): 0 with *out
 * (borrowed), or that item's failure code with its message in mp_last_error().
 * MP_ESTATE if not ready, MP_ERANGE past the end.
 */
int mp_pool_result_item(const mp_pool_result *r, size_t i, const mp_value **out);
/**
 * Wait for the first of @p n results to be ready: its index, MP_ETIMEOUT,
 * MP_EINTERRUPTED, MP_EINVAL (no results / NULL entries).
 */
int mp_pool_wait_any(mp_pool_result *const *results, size_t n, double timeout);
/** Release a result. Work still running completes in the background; its callbacks
 * still run. NULL is fine. */
void mp_pool_result_free(mp_pool_result *r);

/** The results of imap / imap_unordered, in order or as they complete. */
typedef struct mp_pool_iter mp_pool_iter;

/** imap: fn over the list, results in input order (chunksize 0 means 1, as Python). */
mp_pool_iter *mp_pool_imap(mp_pool *p, mp_task_fn fn, const mp_value *items, size_t chunksize);
/** imap_unordered: results as they complete. */
mp_pool_iter *mp_pool_imap_unordered(mp_pool *p, mp_task_fn fn, const mp_value *items,
                                     size_t chunksize);

/**
 * An input read on demand: store the next item in *item (a new value, adopted) and return
 * 1, return 0 at the end, or a negative code (the remaining results then end with it).
 * Runs on the pool's result thread.
 */
typedef int (*mp_pool_source_fn)(void *userdata, mp_value **item);

/** Options of mp_pool_imap_source; all-zero means the defaults. */
typedef struct mp_pool_imap_opts {
    size_t chunksize; /**< 0: 1 */
    size_t window;    /**< most items read but not yet returned by next; 0: 64 chunks'
                           worth (at least 2 per worker) */
    bool unordered;   /**< results as they complete */
} mp_pool_imap_opts;

/** imap over an input of any length from @p source, read only as results are taken. */
mp_pool_iter *mp_pool_imap_source(mp_pool *p, mp_task_fn fn, mp_pool_source_fn source,
                                  void *userdata, const mp_pool_imap_opts *opts);
/**
 * The next result: 1 with *out (a new value, mp_value_free), 0 when every item has been
 * returned (Python's StopIteration), or a negative code: that item's failure (the next
 * call goes on with the next item), the source's error, MP_ETIMEOUT (nothing in time:
 * call again), MP_EINTERRUPTED.
 */
int mp_pool_iter_next(mp_pool_iter *it, double timeout, mp_value **out);
/** Release an iterator; tasks still running complete in the background. NULL is fine. */
void mp_pool_iter_free(mp_pool_iter *it);

/** An element function of mp_pool_map_array: reads *in, writes *out; 0 or a code. */
typedef int (*mp_array_fn)(const void *in, void *out, void *context);
/**
 * The typed path: out[i] = fn(in[i]) for @p n elements, in workers, with no encoding. On
 * local workers through one shared mapping (workers get index ranges); on a backend's
 * workers (MPI ranks: mpi_pool.h) each range's element bytes travel in its message and
 * its output elements come back in the result (fn is found there as task functions
 * are). fn gets pointers to one input and one output element and the @p context pointer
 * (which must point into memory the workers see: under fork, anything of the parent;
 * under spawn/forkserver only NULL or static data of the program; on a backend only
 * NULL, else MP_EUNSUPPORTED: pass the context's bytes with mp_pool_map_array_ctx).
 * A non-zero return of fn fails the call with that code (a positive one as MP_EINVAL)
 * and the message "element I failed with RC (in WORKER, pid P)" of the lowest range
 * that failed. @p chunksize 0: the elements are split evenly, a few ranges per worker
 * (on a backend about 4 per worker, at most 4 MiB each). Returns 0, fn's code,
 * MP_EWORKERDIED (a worker died: the message names it), MP_EINVAL, MP_EUNSUPPORTED.
 */
int mp_pool_map_array(mp_pool *p, mp_array_fn fn, const void *in, size_t in_size, void *out,
                      size_t out_size, size_t n, void *context, size_t chunksize);
/**
 * mp_pool_map_array with the context given as bytes, which reach every worker (local
 * ones under any start method, and a backend's: they travel with each range): fn gets
 * a pointer to a 16-byte aligned copy of the @p context_size bytes at @p context (NULL
 * when the size is 0). The copy may be shared by the workers of one host: fn must not
 * write to it.
 */
int mp_pool_map_array_ctx(mp_pool *p, mp_array_fn fn, const void *in, size_t in_size,
                          void *out, size_t out_size, size_t n, const void *context,
                          size_t context_size, size_t chunksize);

/** No more tasks: workers exit when the submitted work is done. Idempotent. */
int mp_pool_close(mp_pool *p);
/** Stop now: workers are killed; pending results fail with MP_ECLOSED. */
int mp_pool_terminate(mp_pool *p);
/** Wait for the workers to exit (after close or terminate, else MP_ESTATE "Pool is still
 * running"). 0, MP_ETIMEOUT, MP_EINTERRUPTED. */
int mp_pool_join(mp_pool *p, double timeout);
/** The number of worker processes. */
int mp_pool_processes(const mp_pool *p);
/** Free the pool: terminates it first if it has not been joined (pending results fail
 * with MP_ECLOSED; results and iterators stay valid until freed). NULL is fine. */
void mp_pool_free(mp_pool *p);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
