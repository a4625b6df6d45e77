/**
 * @file mpi.h
 * @brief The MPI module: multiproc across machines on Open MPI (libmultiproc_mpi).
 *
 * Python counterpart: mpi4py (MPI.COMM_WORLD, comm.Get_rank/Get_size, and the value
 * messages and collectives of the seeds' mpi4py chapters) and mpi4py.futures.
 *
 * This module lives in its own library, `libmultiproc_mpi`, which holds the whole of
 * libmultiproc plus what is declared here: a program that uses MPI links
 * `-lmultiproc_mpi` (and Open MPI: build it with `mpicc`, or with the CMake target
 * `multiproc::multiproc_mpi`) instead of `-lmultiproc`. Programs that do not use MPI never
 * load libmpi.
 *
 * Errors: an MPI call that fails returns MP_EMPI with MPI's own message (MPI_Error_string)
 * in mp_last_error(); the library sets MPI_ERRORS_RETURN on the communicators it uses, so
 * an MPI failure is a return code, never an abort of the job by the library itself.
 */
#ifndef MULTIPROC_MPI_H
#define MULTIPROC_MPI_H

#include <mpi.h>

#include "multiproc/error.h"
#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/** Initialise MPI (MPI_Init_thread asking for MPI_THREAD_MULTIPLE: the library's own
 * threads may call MPI) unless it already is; sets MPI_ERRORS_RETURN on MPI_COMM_WORLD.
 * Safe to call more than once. @p argc / @p argv may be NULL. Returns 0, or MP_EMPI
 * (MPI refused, or gave less than MPI_THREAD_MULTIPLE: the message names the level). */
int mp_mpi_init(int *argc, char ***argv);
/** Finalize MPI if mp_mpi_init initialised it and it is not finalized yet. Returns 0 or MP_EMPI. */
int mp_mpi_finalize(void);
/** This process's rank in @p comm, or MP_EMPI / MP_ESTATE (MPI not initialised). */
int mp_mpi_rank(MPI_Comm comm);
/** The number of processes in @p comm, or MP_EMPI / MP_ESTATE (MPI not initialised). */
int mp_mpi_size(MPI_Comm comm);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
