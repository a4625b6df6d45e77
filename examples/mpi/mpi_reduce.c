/* Reduction: rank 0 gets the elementwise sum of every rank's numbers (cookbook ch. 18). */
/* Run as `mpiexec -n 4 ./mpi_reduce` (the cookbook runs 3 ranks with 3 numbers each; here
 * 4 and 4). As in the cookbook, the arrays are numbers in MPI's own datatypes, reduced by
 * MPI itself (mp_mpi_array_reduce with MP_MPI_SUM):
 *
 *     senddata = (rank + 1) * numpy.arange(size, dtype=int)
 *     comm.Reduce(senddata, recvdata, root=0, op=MPI.SUM)   # [ 0 10 20 30] on rank 0
 *
 * Then the same on values, as mpi4py's lowercase comm.allreduce does on Python objects:
 * ints and a float mix as Python's + mixes them, and a C function of our own (here a
 * non-commutative one that pairs its operands) folds the ranks' values in rank order. */
#include <stdio.h>
#include <string.h>

#include "multiproc/mpi.h"
#include "mpi_numpy_print.h"

static int pair(const mp_value *a, const mp_value *b, mp_value **out, void *arg)
{
    (void)arg;
    *out = mp_value_pack("[O O]", a, b);
    return *out ? 0 : mp_last_error_code();
}

static int values(int rank)
{
    /* rank 2 contributes 2.5, the others their rank: 0 + 1 + 2.5 + 3 */
    mp_value *v = rank == 2 ? mp_value_float(2.5) : mp_value_int(rank), *sum = NULL, *tree = NULL;
    int r = mp_mpi_allreduce(MPI_COMM_WORLD, v, MP_MPI_SUM, &sum);
    if (r == 0)
        r = mp_mpi_reduce_with(MPI_COMM_WORLD, v, pair, NULL, 0, &tree);
    if (r == 0 && rank == 0) {
        char *s = mp_value_repr(sum), *t = mp_value_repr(tree);
        printf("allreduce of values, op=SUM: %s\n", s);
        printf("reduce with a function of our own: %s\n", t);
        mp_free(s);
        mp_free(t);
    }
    mp_value_free(sum);
    mp_value_free(tree);
    mp_value_free(v);
    return r;
}

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
    memset(recvdata, 0, sizeof recvdata);
    for (int i = 0; i < size; i++)
        senddata[i] = (long)(rank + 1) * i;
    char s[512], d[512];
    printf("process %d sending %s \n", rank, numpy_str(senddata, size, s, sizeof s));
    int r = mp_mpi_array_reduce(MPI_COMM_WORLD, senddata, recvdata, (size_t)size, MPI_LONG,
                                MP_MPI_SUM, 0);
    if (r == 0)
        printf("on task %d after Reduce:    data =  %s\n", rank,
               numpy_str(recvdata, size, d, sizeof d));
    if (r == 0)
        r = values(rank);
    if (r < 0)
        fprintf(stderr, "rank %d: %s\n", rank, mp_last_error());
    return (mp_mpi_finalize() < 0 || r < 0);
}
