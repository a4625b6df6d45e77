/**
 * @file process.h
 * @brief Run a C function in another process (Python's multiprocessing.Process).
 *
 * CONTRACT DRAFT: the process module's owner completes the documentation; the
 * signatures below are what other modules and tests build on.
 */
#ifndef MULTIPROC_PROCESS_H
#define MULTIPROC_PROCESS_H

#include <stdbool.h>
#include <sys/types.h>

#include "multiproc/value.h"

#ifdef __cplusplus
extern "C" {
#endif

/**
 * A process target. Runs in the child with the arguments decoded there (handles
 * imported and usable). Its return value is the child's exit code (0..255).
 */
typedef int (*mp_target_fn)(mp_value *args);

/** Start methods. */
typedef enum mp_start_method {
    MP_START_DEFAULT = 0, /**< the program's default (set_start_method, else fork) */
    MP_START_FORK,
    MP_START_SPAWN,
    MP_START_FORKSERVER
} mp_start_method;

typedef struct mp_context mp_context;

/** The context for a start method ("fork", "spawn", "forkserver", or NULL for the
 * default). Contexts are static: never freed. NULL with MP_EINVAL for an unknown name. */
mp_context *mp_get_context(const char *method);
/** Set the default start method once; MP_ESTATE if already set (unless force). */
int mp_set_start_method(const char *method, bool force);
/** Name of the default start method ("fork", ...). */
const char *mp_get_start_method(void);
/** Name of a context's start method. */
const char *mp_context_method(const mp_context *ctx);

typedef struct mp_process mp_process;

/** Options; all-zero means defaults. */
typedef struct mp_process_opts {
    mp_target_fn target;  /**< required */
    const mp_value *args; /**< copied at start (NULL: nil) */
    const char *name;     /**< NULL: "Process-N" */
    bool daemon;
    mp_context *ctx;      /**< NULL: default context */
} mp_process_opts;

/** A new, unstarted process object (free with mp_process_free). NULL on error. */
mp_process *mp_process_new(const mp_process_opts *opts);
int mp_process_start(mp_process *p);
/** Wait until the process ends or the timeout passes (negative: forever). 0 or
 * MP_ETIMEOUT; MP_EPROCESS for an unstarted process or self. */
int mp_process_join(mp_process *p, double timeout);
bool mp_process_is_alive(mp_process *p);
int mp_process_terminate(mp_process *p); /**< SIGTERM */
int mp_process_kill(mp_process *p);      /**< SIGKILL */
/** Exit code: sets *code and returns 0 when finished; MP_ESTATE while running or
 * unstarted (Python's None). Negative *code: killed by that signal. */
int mp_process_exitcode(const mp_process *p, int *code);
pid_t mp_process_pid(const mp_process *p);
const char *mp_process_name(const mp_process *p);
/** A pidfd that becomes readable when the process ends (for mp_wait / poll), or -1. */
int mp_process_sentinel(const mp_process *p);
/** Release resources; MP_ESTATE if still running. */
int mp_process_close(mp_process *p);
/** Free the object (a running child is not killed, but is no longer tracked). */
void mp_process_free(mp_process *p);

/* ---- this process ------------------------------------------------------------------ */
/** Name of the calling process: "MainProcess" in the main program, the Process name
 * in a child. Static storage. */
const char *mp_current_process_name(void);
/** pid of the process that started this one through multiproc, or 0 in MainProcess. */
pid_t mp_parent_process_pid(void);
/** Number of usable CPUs (the affinity mask), at least 1. */
int mp_cpu_count(void);

#ifdef __cplusplus
}
#endif
#endif
