/**
 * @file mpi_pool.h
 * @brief The Pool on MPI ranks (libmultiproc_mpi): mpi4py.futures' MPIPoolExecutor for
 * mp_pool.
 *
 * The same mp_pool calls (pool.h: apply, map, imap, imap_unordered, starmap, async
 * results, callbacks, close/join/terminate) and the same task functions, with workers
 * that are MPI ranks: set `opts.backend = mp_mpi_pool_backend()` and create the pool with
 * mp_pool_new. Task functions are found on the ranks the way the spawn start method
 * finds Process targets (object + offset): every rank runs the same binary.
 *
 * Two ways to launch, as mpi4py.futures:
 * - `mpiexec -n N ./prog`: rank 0 runs main and owns the pool; ranks 1..N-1 serve tasks.
 *   They never return into the program's code: call mp_mpi_pool_serve_if_worker() first
 *   thing in main (every rank must call it: it is collective).
 * - `./prog` started alone: the first mp_pool_new spawns `processes` ranks (0:
 *   mp_cpu_count()) running this same program (MPI_Comm_spawn); they enter main, and
 *   mp_mpi_pool_serve_if_worker() turns them into workers. They are kept for the next
 *   pools (spawned again only when a pool needs more, or one died) and end with the
 *   program.
 * One pool at a time uses the ranks: a second mp_pool_new while one lives fails with
 * MP_ESTATE.
 *
 * Python mapping: `MPIPoolExecutor(max_workers=N)` -> mp_pool_opts.processes = N with
 * this backend; `python -m mpi4py.futures prog.py` -> mpiexec with
 * mp_mpi_pool_serve_if_worker(); `initializer`/`initargs` as Pool's.
 *
 * What travels: the task function's location, the arguments and results as mp_values
 * (MessagePack), chunked as the local pool chunks them (a chunk is one MPI message; runs
 * of small chunks are batched into one, and while a rank's chunks run in under 100 us it
 * sends their results back together, up to 64 at a time). mp_pool_map_array sends its
 * elements as raw bytes instead: ranges of the array, about 4 per rank (at most 4 MiB
 * each), each carrying the element function's location, the context's bytes
 * (mp_pool_map_array_ctx) and its input elements; the output elements come back the same
 * way (no MessagePack, no shared arena). Handles to library objects (queues, locks,
 * shared memory: fds) cannot travel (MP_EUNSUPPORTED), nor can a map_array context
 * pointer; maxtasksperchild and task_time_limit are refused (MP_EUNSUPPORTED).
 *
 * Failures (see docs/distributed.md): a task's failure reaches the caller as its code
 * with the worker's message, which names the worker, its MPI rank, host and pid. A rank
 * that dies fails the chunk it was running with MP_EWORKERDIED (naming the rank, pid and
 * host), or, running a coalesced batch of quick chunks, the chunks of that batch it had
 * not answered (up to 64: their results may have died with it); chunks it held but had
 * not started go to the other ranks; no task is run twice; a rank is never
 * replaced; when every rank is gone the remaining tasks fail with MP_EWORKERDIED. A
 * death is seen at once on the master's host (a pidfd) and, on other hosts, when the rank
 * has been silent for heartbeat_limit seconds. A rank silent that long on the master's
 * host (stopped, or frozen) is declared lost the same way and then killed (SIGKILL
 * through its pidfd; the stderr line ends "it is on this host: killed"), as is one that
 * does not answer the program's end: a stopped process would keep the job alive; a rank
 * on another host cannot be killed and is left. Under a plain `mpiexec` Open MPI 4.1 then
 * ends the whole job about a second later (the master is sent SIGTERM): the master
 * reports the death (the failed get/map returns, and a line on stderr) before that; with
 * `mpiexec --enable-recovery` the job goes on and the pool goes on with the ranks left.
 * Once a rank was lost, the program's end (mp_mpi_finalize, or returning from main)
 * does not call MPI_Finalize, which would wait for it: the job ends within a bounded
 * time (docs/distributed.md, "The end of a job that lost a rank").
 *
 * Threads: each MPI pool runs a relay thread on the master (MPI on one side, the pool's
 * result thread on the other); MPI must give MPI_THREAD_MULTIPLE (mp_mpi_init asks).
 */
#ifndef MULTIPROC_MPI_POOL_H
#define MULTIPROC_MPI_POOL_H

#include "multiproc/mpi.h"
#include "multiproc/pool.h"

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/**
 * Call first thing in main, on every rank, before anything else uses MPI. Initialises
 * MPI (mp_mpi_init). On a rank that is a worker (ranks 1..N-1 under `mpiexec -n N`, or a
 * rank spawned by a pool) it serves pools until the master's end and then exits the
 * process with status 0: it never returns. On rank 0 (or a program started alone) it
 * returns 0, or MP_EMPI when MPI cannot start. On rank 0, end with mp_mpi_finalize() or
 * return from main (an exit handler tells the ranks to finish); calling MPI_Finalize
 * directly would leave the ranks serving.
 */
int mp_mpi_pool_serve_if_worker(int *argc, char ***argv);

/** Options of an MPI backend; all-zero means the defaults. */
typedef struct mp_mpi_pool_opts {
    /** Seconds a rank may stay silent (its heartbeats come every 0.2 s) before it is
     * declared lost and its tasks fail with MP_EWORKERDIED; 0: 10 s; MP_NO_LIMIT: never.
     * Ranks on the master's host are watched through their pid as well, at once, and one
     * declared lost for its silence is killed (a stopped process keeps the job alive). */
    double heartbeat_limit;
    /** Started alone: the MPI_Info of MPI_Comm_spawn (e.g. "host" or "hostfile" keys);
     * MPI_INFO_NULL (0-initialised: set it explicitly) means none. */
    MPI_Info spawn_info;
    /** Started alone: spawn even when the world has one process only (default); set
     * to refuse spawning (mp_pool_new then fails with MP_ESTATE). */
    int no_spawn;
} mp_mpi_pool_opts;

/** The MPI backend with the default options, for mp_pool_opts.backend. */
const mp_pool_backend *mp_mpi_pool_backend(void);

/**
 * An MPI backend with options (copied; spawn_info is duplicated). Free it with
 * mp_mpi_pool_backend_free after the pools that use it. NULL on error (MP_EINVAL).
 */
mp_pool_backend *mp_mpi_pool_backend_new(const mp_mpi_pool_opts *opts);
/** Release a backend made by mp_mpi_pool_backend_new. NULL is fine. */
void mp_mpi_pool_backend_free(mp_pool_backend *b);

/** Whether this program runs as `mpiexec -n N` with N > 1 (rank 0 and worker ranks);
 * false when it was started alone (its pools spawn their ranks). MP_ESTATE before
 * mp_mpi_pool_serve_if_worker. */
int mp_mpi_pool_launched(void);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
