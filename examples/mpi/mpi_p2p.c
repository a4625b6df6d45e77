/* Point-to-point: rank 0 sends an int to rank 2, rank 1 a str to rank 3 (cookbook ch. 12). */
/* Run as `mpiexec -n 4 ./mpi_p2p`. The cookbook runs 9 ranks and sends to ranks 4 and 8;
 * with 4 ranks the receivers are 2 and 3. In Python with mpi4py:
 *
 *     if rank == 0:
 *         comm.send(10000000, dest=2)
 *     if rank == 2:
 *         data = comm.recv(source=0)      # 10000000
 *
 * Here the values are mp_values: an int and a str travel the same way, and the receiver
 * gets back what was sent. Lines print in no fixed order across ranks. */
#include <stdio.h>

#include "multiproc/mpi.h"

static int send_to(mp_value *v, int dest)
{
    int r = mp_mpi_send(MPI_COMM_WORLD, v, dest, 0);
    mp_value_free(v);
    return r;
}

static int recv_from(int source, const char *label)
{
    mp_value *data;
    if (mp_mpi_recv(MPI_COMM_WORLD, source, MPI_ANY_TAG, &data, NULL) < 0)
        return -1;
    /* Python's "%s" of an int or a str prints it bare */
    if (mp_value_type(data) == MP_STR)
        printf("%s received is = %s\n", label, mp_value_get_str(data, NULL));
    else
        printf("%s received is = %lld\n", label, (long long)mp_value_get_int(data));
    mp_value_free(data);
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
    if (rank == 0) {
        r = send_to(mp_value_int(10000000), 2);
        printf("sending data 10000000 to process  2\n");
    } else if (rank == 1) {
        r = send_to(mp_value_str("hello"), 3);
        printf("sending data hello :to process  3\n");
    } else if (rank == 2) {
        r = recv_from(0, "data");
    } else if (rank == 3) {
        r = recv_from(1, "data1");
    }
    if (r < 0)
        fprintf(stderr, "rank %d: %s\n", rank, mp_last_error());
    return (mp_mpi_finalize() < 0 || r < 0);
}
