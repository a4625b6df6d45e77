/* Avoiding deadlock: ranks 1 and 3 swap values with one sendrecv each (cookbook ch. 13). */
/* Run as `mpiexec -n 4 ./mpi_deadlock`. Two ranks that both call a blocking receive
 * first, then send, wait for each other forever; the cookbook's way out is mpi4py's
 * comm.sendrecv, which sends and receives at once (with 9 ranks, between 1 and 5; here
 * between 1 and 3):
 *
 *     data_received = comm.sendrecv("a", dest=3, source=3)    # on rank 1: 'b'
 *
 * mp_mpi_sendrecv starts the send without blocking, receives, then finishes the send, so
 * neither rank waits on the other whatever the size of the values. */
#include <stdio.h>

#include "multiproc/mpi.h"

static int swap(int rank, const char *mine, int peer, const char *colon)
{
    mp_value *v = mp_value_str(mine), *got = NULL;
    int r = mp_mpi_sendrecv(MPI_COMM_WORLD, v, peer, 0, peer, 0, &got, NULL);
    mp_value_free(v);
    if (r < 0) {
        fprintf(stderr, "rank %d: %s\n", rank, mp_last_error());
        return r;
    }
    printf("sending data %s %sto process %d\n", mine, colon, peer);
    printf("data received is = %s\n", mp_value_get_str(got, NULL));
    mp_value_free(got);
    return 0;
}

int main(int argc, char **argv)
{
    if (mp_mpi_init(&argc, &argv) < 0) {
        fprintf(stderr, "mp_mpi_init: %s\n", mp_last_error());
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* whole lines: mpiexec merges the ranks' output */
    int rank = mp_mpi_rank(MPI_COMM_WORLD), r = 0;
    printf("my rank is :  %d\n", rank);
    if (rank == 1)
        r = swap(rank, "a", 3, "");
    else if (rank == 3)
        r = swap(rank, "b", 1, ":");
    return (mp_mpi_finalize() < 0 || r < 0);
}
