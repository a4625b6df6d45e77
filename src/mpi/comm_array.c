/* Plain arrays of numbers across ranks: MPI's own datatypes, no encoding (mpi4py's
 * uppercase Send, Recv, Bcast, Scatter, Gather, Allgather, Alltoall, Reduce, Allreduce on
 * buffers). Each call is the MPI call with the library's checks and error model: size_t
 * counts checked against MPI's int, MP_EMPI with MPI's message, and a receive that would
 * overflow the caller's buffer is MP_ETOOSHORT (MPI would report truncation). */
#include "internal/common.h"
#include "mpi/comm_internal.h"
#include "mpi/mpi_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>

static int array_check(MPI_Comm comm, size_t count, int blocks, const char *what)
{
    int r = mp__mpi_comm_check(comm, what);
    if (r < 0)
        return r;
    if (count > (size_t)INT_MAX / (size_t)(blocks > 0 ? blocks : 1))
        return mp__error(-E2BIG, "%s: %zu items (MPI counts are ints)", what, count);
    return 0;
}

static int comm_size(MPI_Comm comm)
{
    int size = 1;
    MPI_Comm_size(comm, &size);
    return size;
}

static int done(int rc, const char *what)
{
    return rc == MPI_SUCCESS ? 0 : mp__mpi_error(rc, what);
}

static MPI_Op to_mpi_op(mp_mpi_op op)
{
    switch (op) {
    case MP_MPI_SUM: return MPI_SUM;
    case MP_MPI_PROD: return MPI_PROD;
    case MP_MPI_MIN: return MPI_MIN;
    case MP_MPI_MAX: return MPI_MAX;
    }
    return MPI_OP_NULL;
}

int mp_mpi_array_send(MPI_Comm comm, const void *buf, size_t count, MPI_Datatype type,
                      int dest, int tag)
{
    int r = array_check(comm, count, 1, "mp_mpi_array_send");
    if (r < 0)
        return r;
    return done(MPI_Send(buf, (int)count, type, dest, tag, comm), "mp_mpi_array_send");
}

int mp_mpi_array_recv(MPI_Comm comm, void *buf, size_t count, MPI_Datatype type, int source,
                      int tag, mp_mpi_status *status)
{
    const char *what = "mp_mpi_array_recv";
    int r = array_check(comm, count, 1, what);
    if (r < 0)
        return r;
    MPI_Message msg;
    MPI_Status st;
    int n = 0, bytes = 0, tsize = 0;
    int rc = MPI_Mprobe(source, tag, comm, &msg, &st);
    if (rc != MPI_SUCCESS)
        return mp__mpi_error(rc, what);
    MPI_Get_count(&st, type, &n);
    MPI_Get_count(&st, MPI_BYTE, &bytes);
    MPI_Type_size(type, &tsize);
    if (n == MPI_UNDEFINED || n > (int)count) { /* take it off the queue, then refuse it */
        void *sink = malloc(bytes > 0 ? (size_t)bytes : 1);
        MPI_Mrecv(sink, sink ? bytes : 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        free(sink);
        if (n == MPI_UNDEFINED)
            return mp__error(MP_EPROTO, "%s: a %d-byte message is not a whole number of "
                                        "%d-byte items", what, bytes, tsize);
        return mp__error(MP_ETOOSHORT, "%s: the message holds %d items, the buffer %zu",
                         what, n, count);
    }
    rc = MPI_Mrecv(buf, n, type, &msg, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS)
        return mp__mpi_error(rc, what);
    mp__mpi_status_set(status, &st, (size_t)bytes);
    return n;
}

int mp_mpi_array_bcast(MPI_Comm comm, void *buf, size_t count, MPI_Datatype type, int root)
{
    int r = array_check(comm, count, 1, "mp_mpi_array_bcast");
    return r < 0 ? r : done(MPI_Bcast(buf, (int)count, type, root, comm), "mp_mpi_array_bcast");
}

int mp_mpi_array_scatter(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                         MPI_Datatype type, int root)
{
    const char *what = "mp_mpi_array_scatter";
    int r = mp__mpi_comm_check(comm, what);
    if (r < 0 || (r = array_check(comm, count, comm_size(comm), what)) < 0)
        return r;
    int n = (int)count;
    return done(MPI_Scatter(sendbuf, n, type, recvbuf, n, type, root, comm), what);
}

int mp_mpi_array_gather(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                        MPI_Datatype type, int root)
{
    const char *what = "mp_mpi_array_gather";
    int r = mp__mpi_comm_check(comm, what);
    if (r < 0 || (r = array_check(comm, count, comm_size(comm), what)) < 0)
        return r;
    int n = (int)count;
    return done(MPI_Gather(sendbuf, n, type, recvbuf, n, type, root, comm), what);
}

int mp_mpi_array_allgather(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                           MPI_Datatype type)
{
    const char *what = "mp_mpi_array_allgather";
    int r = mp__mpi_comm_check(comm, what);
    if (r < 0 || (r = array_check(comm, count, comm_size(comm), what)) < 0)
        return r;
    int n = (int)count;
    return done(MPI_Allgather(sendbuf, n, type, recvbuf, n, type, comm), what);
}

int mp_mpi_array_alltoall(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                          MPI_Datatype type)
{
    const char *what = "mp_mpi_array_alltoall";
    int r = mp__mpi_comm_check(comm, what);
    if (r < 0 || (r = array_check(comm, count, comm_size(comm), what)) < 0)
        return r;
    int n = (int)count;
    return done(MPI_Alltoall(sendbuf, n, type, recvbuf, n, type, comm), what);
}

int mp_mpi_array_reduce(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                        MPI_Datatype type, mp_mpi_op op, int root)
{
    const char *what = "mp_mpi_array_reduce";
    int r = array_check(comm, count, 1, what);
    if (r < 0)
        return r;
    if (to_mpi_op(op) == MPI_OP_NULL)
        return mp__error(MP_EINVAL, "%s: unknown operation %d", what, (int)op);
    return done(MPI_Reduce(sendbuf, recvbuf, (int)count, type, to_mpi_op(op), root, comm), what);
}

int mp_mpi_array_allreduce(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                           MPI_Datatype type, mp_mpi_op op)
{
    const char *what = "mp_mpi_array_allreduce";
    int r = array_check(comm, count, 1, what);
    if (r < 0)
        return r;
    if (to_mpi_op(op) == MPI_OP_NULL)
        return mp__error(MP_EINVAL, "%s: unknown operation %d", what, (int)op);
    return done(MPI_Allreduce(sendbuf, recvbuf, (int)count, type, to_mpi_op(op), comm), what);
}
