/* Topologies: the 4 ranks as a 2 x 2 grid, then a torus, with each one's neighbours (ch. 19). */
/* Run as `mpiexec -n 4 ./mpi_topology`. The cookbook's "how to optimise communication"
 * builds a Cartesian topology and asks each rank for its coordinates and its neighbours:
 *
 *     cart = comm.Create_cart((rows, cols), periods=(False, False), reorder=True)
 *     row, col = cart.Get_coords(cart.rank)
 *     up, down = cart.Shift(0, 1)
 *     left, right = cart.Shift(1, 1)
 *
 * Past the edge of a grid there is no neighbour: MPI_PROC_NULL, which mpi4py prints as
 * -2 under Open MPI (the cookbook, run on another MPI, shows -1). With periods=(True, True)
 * the grid wraps around into a torus and every rank has four neighbours. */
#include <math.h>
#include <stdio.h>

#include "multiproc/mpi.h"

static int show(int rank, int rows, int cols, bool periodic)
{
    bool periods[2] = { periodic, periodic };
    int dims[2] = { rows, cols }, coords[2], up, down, left, right;
    MPI_Comm cart;
    int r = mp_mpi_cart_create(MPI_COMM_WORLD, 2, dims, periods, true, &cart);
    if (r < 0)
        return r;
    if (cart == MPI_COMM_NULL) /* a rank the grid leaves out */
        return mp_mpi_barrier(MPI_COMM_WORLD);
    int me = mp_mpi_rank(cart);
    if ((r = mp_mpi_cart_coords(cart, me, 2, coords)) == 0 &&
        (r = mp_mpi_cart_shift(cart, 0, 1, &up, &down)) == 0 &&
        (r = mp_mpi_cart_shift(cart, 1, 1, &left, &right)) == 0)
        printf("Process = %d row = %d column = %d ----> neighbour_processes[UP] = %d "
               "neighbour_processes[DOWN] = %d neighbour_processes[LEFT] =%d "
               "neighbour_processes[RIGHT]=%d\n",
               rank, coords[0], coords[1], up, down, left, right);
    MPI_Comm_free(&cart);
    return r < 0 ? r : mp_mpi_barrier(MPI_COMM_WORLD);
}

int main(int argc, char **argv)
{
    if (mp_mpi_init(&argc, &argv) < 0) {
        fprintf(stderr, "mp_mpi_init: %s\n", mp_last_error());
        return 1;
    }
    setvbuf(stdout, NULL, _IOLBF, 0); /* whole lines: mpiexec merges the ranks' output */
    int rank = mp_mpi_rank(MPI_COMM_WORLD), size = mp_mpi_size(MPI_COMM_WORLD);
    /* the cookbook's shape: floor(sqrt(size)) rows, as many columns as fit */
    int rows = (int)floor(sqrt(size)), cols = size / rows, r = 0;
    for (int periodic = 0; periodic < 2 && r == 0; periodic++) {
        if (rank == 0)
            printf("Building a %d x %d %s topology:\n", rows, cols, periodic ? "torus" : "grid");
        r = show(rank, rows, cols, periodic);
    }
    if (r < 0)
        fprintf(stderr, "rank %d: %s\n", rank, mp_last_error());
    return (mp_mpi_finalize() < 0 || r < 0);
}
