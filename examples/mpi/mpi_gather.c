/* Gather: each rank's (rank+1)**2 is collected on rank 0 (cookbook ch. 16). */
/* Run as `mpiexec -n 4 ./mpi_gather` (the cookbook runs 5 ranks). In Python:
 *
 *     data = comm.gather((rank + 1) ** 2, root=0)    # [1, 4, 9, 16] on rank 0, else None
 *
 * mp_mpi_gather gives the root a list in rank order and the other ranks NULL. */
#include <stdio.h>

#include "multiproc/mpi.h"

int main(int argc, char **argv)
{
    if (mp_mpi_init(&argc, &argv) < 0) {
        fprintf(stderr, "mp_mpi_init: %s\n", mp_last_error());
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* whole lines: mpiexec merges the ranks' output */
    int rank = mp_mpi_rank(MPI_COMM_WORLD), size = mp_mpi_size(MPI_COMM_WORLD);
    mp_value *mine = mp_value_int((rank + 1) * (rank + 1)), *data = NULL;
    int r = mp_mpi_gather(MPI_COMM_WORLD, mine, 0, &data);
    if (r < 0)
        fprintf(stderr, "rank %d: %s\n", rank, mp_last_error());
    if (r == 0 && rank == 0) {
        printf("rank = %d ...receiving data to other process\n", rank);
        for (int i = 1; i < size; i++)
            printf(" process %d receiving %lld from process %d\n", rank,
                   (long long)mp_value_get_int(mp_value_list_get(data, (size_t)i)), i);
    }
    mp_value_free(data);
    mp_value_free(mine);
    return (mp_mpi_finalize() < 0 || r < 0);
}
