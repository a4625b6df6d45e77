/* A Cartesian topology over a communicator: mp_mpi_cart_create, _coords, _shift (mpi4py's
 * comm.Create_cart, Get_coords, Shift), MPI_Cart_* with argument checks and the library's
 * error model; the new communicator returns errors (MPI_ERRORS_RETURN) like the others. */
#include "internal/common.h"
#include "mpi/comm_internal.h"
#include "mpi/mpi_internal.h"

#define CART_MAX_DIMS 8

int mp_mpi_cart_create(MPI_Comm comm, int ndims, const int *dims, const bool *periods,
                       bool reorder, MPI_Comm *out)
{
    const char *what = "mp_mpi_cart_create";
    if (!out)
        return mp__error(MP_EINVAL, "%s: NULL output", what);
    *out = MPI_COMM_NULL;
    int r = mp__mpi_comm_check(comm, what), size = 0;
    if (r < 0)
        return r;
    if (ndims < 1 || ndims > CART_MAX_DIMS || !dims)
        return mp__error(MP_EINVAL, "%s: %d dimensions (1 to %d, with their sizes)", what,
                         ndims, CART_MAX_DIMS);
    int d[CART_MAX_DIMS], p[CART_MAX_DIMS], rc = MPI_Comm_size(comm, &size);
    if (rc != MPI_SUCCESS)
        return mp__mpi_error(rc, what);
    long long cells = 1;
    bool choose = false;
    for (int i = 0; i < ndims; i++) {
        if (dims[i] < 0)
            return mp__error(MP_EINVAL, "%s: dimension %d has size %d", what, i, dims[i]);
        d[i] = dims[i];
        p[i] = periods && periods[i];
        choose |= dims[i] == 0;
        cells *= dims[i] ? dims[i] : 1;
        if (cells > size)
            return mp__error(MP_EINVAL, "%s: the grid needs more than the communicator's %d "
                                        "processes", what, size);
    }
    if (choose && size % cells != 0)
        return mp__error(MP_EINVAL, "%s: %d processes do not divide into the given sizes",
                         what, size);
    if (choose && (rc = MPI_Dims_create(size, ndims, d)) != MPI_SUCCESS)
        return mp__mpi_error(rc, "mp_mpi_cart_create: MPI_Dims_create");
    rc = MPI_Cart_create(comm, ndims, d, p, reorder, out);
    if (rc != MPI_SUCCESS)
        return mp__mpi_error(rc, "mp_mpi_cart_create: MPI_Cart_create");
    if (*out != MPI_COMM_NULL)
        MPI_Comm_set_errhandler(*out, MPI_ERRORS_RETURN);
    return 0;
}

int mp_mpi_cart_coords(MPI_Comm cart, int rank, int ndims, int *coords)
{
    const char *what = "mp_mpi_cart_coords";
    int r = mp__mpi_comm_check(cart, what);
    if (r < 0)
        return r;
    if (!coords || ndims < 1)
        return mp__error(MP_EINVAL, "%s: no room for the coordinates", what);
    int rc = MPI_Cart_coords(cart, rank, ndims, coords);
    return rc == MPI_SUCCESS ? 0 : mp__mpi_error(rc, "mp_mpi_cart_coords: MPI_Cart_coords");
}

int mp_mpi_cart_shift(MPI_Comm cart, int direction, int disp, int *source, int *dest)
{
    const char *what = "mp_mpi_cart_shift";
    int r = mp__mpi_comm_check(cart, what);
    if (r < 0)
        return r;
    if (!source || !dest)
        return mp__error(MP_EINVAL, "%s: NULL output", what);
    int rc = MPI_Cart_shift(cart, direction, disp, source, dest);
    return rc == MPI_SUCCESS ? 0 : mp__mpi_error(rc, "mp_mpi_cart_shift: MPI_Cart_shift");
}
