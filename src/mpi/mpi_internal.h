/* Private parts of the MPI module (src/mpi/), shared by its files. */
#ifndef MP_MPI_INTERNAL_H
#define MP_MPI_INTERNAL_H

#include <mpi.h>

/* Record an MPI failure: MP_EMPI with "what: MPI's message". Returns MP_EMPI. */
int mp__mpi_error(int rc, const char *what);
/* 0 when MPI is initialised and not finalized, else MP_ESTATE with a message. */
int mp__mpi_check_ready(void);
/* Run by mp_mpi_finalize before MPI_Finalize (the Pool on MPI sets it: its ranks must
 * be told to leave first, MPI_Finalize waits for them). It returns 1 when MPI_Finalize
 * must not be called (a rank was lost: it would wait for it forever; then
 * mp_mpi_finalize returns 0 and leaves MPI as it is), else 0. NULL: none. */
extern int (*mp__mpi_finalize_hook)(void);

#endif
