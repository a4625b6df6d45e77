/* Hello world from every MPI rank (cookbook ch. 11). */
/* Run as `mpiexec -n 4 ./mpi_hello`; each rank prints its rank, as the Python
 *
 *     from mpi4py import MPI
 *     comm = MPI.COMM_WORLD
 *     rank = comm.Get_rank()
 *     print("hello world from process ", rank)
 *
 * prints "hello world from process  0" ... (print puts a space between its arguments).
 * The ranks print in no fixed order. */
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
    printf("hello world from process  %d\n", rank);
    return mp_mpi_finalize() < 0;
}
