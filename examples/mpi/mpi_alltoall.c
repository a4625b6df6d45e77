/* All-to-all: block j of every rank's numbers goes to rank j (cookbook ch. 17). */
/* Run as `mpiexec -n 4 ./mpi_alltoall` (the cookbook runs 5 ranks). The cookbook uses
 * mpi4py's buffer form on numpy arrays; plain arrays of numbers go through MPI's own
 * datatypes with no encoding, here mp_mpi_array_alltoall on longs:
 *
 *     senddata = (rank + 1) * numpy.arange(size, dtype=int)
 *     recvdata = numpy.empty(size, dtype=int)
 *     comm.Alltoall(senddata, recvdata)
 *
 * Rank r receives r * [1, 2, 3, 4]; each array prints as numpy prints it. */
#include <stdio.h>

#include "multiproc/mpi.h"
#include "mpi_numpy_print.h"

int main(int argc, char **argv)
{
    if (mp_mpi_init(&argc, &argv) < 0) {
        fprintf(stderr, "mp_mpi_init: %s\n", mp_last_error());
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* whole lines: mpiexec merges the ranks' output */
    int rank = mp_mpi_rank(MPI_COMM_WORLD), size = mp_mpi_size(MPI_COMM_WORLD);
    long senddata[64], recvdata[64];
    if (size > 64)
        return 1;
    for (int i = 0; i < size; i++)
        senddata[i] = (long)(rank + 1) * i;
    int r = mp_mpi_array_alltoall(MPI_COMM_WORLD, senddata, recvdata, 1, MPI_LONG);
    if (r == 0) {
        char s[512], d[512];
        printf(" process %d sending %s receiving %s\n", rank,
               numpy_str(senddata, size, s, sizeof s), numpy_str(recvdata, size, d, sizeof d));
    } else {
        fprintf(stderr, "rank %d: %s\n", rank, mp_last_error());
    }
    return (mp_mpi_finalize() < 0 || r < 0);
}
