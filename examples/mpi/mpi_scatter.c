/* Scatter: item i of rank 0's list [1, 2, 3, 4] goes to rank i (cookbook ch. 15). */
/* Run as `mpiexec -n 4 ./mpi_scatter`. The cookbook scatters [1..10] over 10 ranks; the
 * list must hold one item per rank (mpi4py raises otherwise, mp_mpi_scatter returns
 * MP_EINVAL on every rank), so here it is [1, 2, 3, 4]. In Python:
 *
 *     array_to_share = [1, 2, 3, 4] if rank == 0 else None
 *     recvbuf = comm.scatter(array_to_share, root=0)
 */
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
    mp_value *array_to_share = rank == 0 ? mp_value_pack("[i i i i]", 1, 2, 3, 4) : NULL;
    mp_value *recvbuf = NULL;
    int r = mp_mpi_scatter(MPI_COMM_WORLD, array_to_share, 0, &recvbuf);
    if (r == 0)
        printf("process = %d recvbuf = %lld \n", rank, (long long)mp_value_get_int(recvbuf));
    else
        fprintf(stderr, "rank %d: %s\n", rank, mp_last_error());
    mp_value_free(recvbuf);
    mp_value_free(array_to_share);
    return (mp_mpi_finalize() < 0 || r < 0);
}
