/* Broadcast: rank 0's value 100 reaches every rank (cookbook ch. 14). */
/* Run as `mpiexec -n 4 ./mpi_bcast` (the cookbook runs 10 ranks). In Python:
 *
 *     variable_to_share = 100 if rank == 0 else None
 *     variable_to_share = comm.bcast(variable_to_share, root=0)
 *
 * mp_mpi_bcast reads the value on the root only and gives every rank its own copy. */
#include <stdio.h>

#include "multiproc/mpi.h"

int main(int argc, char **argv)
{
    if (mp_mpi_init(&argc, &argv) < 0) {
        fprintf(stderr, "mp_mpi_init: %s\n", mp_last_error());
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* whole lines: mpiexec merges the ranks' output */
    int rank = mp_mpi_rank(MPI_COMM_WORLD);
    mp_value *variable_to_share = rank == 0 ? mp_value_int(100) : NULL, *shared = NULL;
    int r = mp_mpi_bcast(MPI_COMM_WORLD, variable_to_share, 0, &shared);
    if (r == 0)
        printf("process = %d variable shared  = %lld \n", rank,
               (long long)mp_value_get_int(shared));
    else
        fprintf(stderr, "rank %d: %s\n", rank, mp_last_error());
    mp_value_free(shared);
    mp_value_free(variable_to_share);
    return (mp_mpi_finalize() < 0 || r < 0);
}
