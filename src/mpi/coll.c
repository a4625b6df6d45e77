/* Collectives of values: barrier, bcast, scatter, gather, allgather, alltoall.
 * DESIGN: each value is encoded on its own rank (comm_codec.c); the ranks first exchange
 * the byte counts as int64 (MPI_Bcast / Scatter / Allgather / Alltoall), then the bytes
 * (MPI_Bcast / Scatterv / Gatherv / Allgatherv / Alltoallv). A count below zero is an error
 * code in place of a count: a rank that cannot take part (a root list of the wrong length,
 * a value that cannot be encoded) still joins the count exchange and tells the others, and
 * every rank that would have waited on it returns that code instead of starting the byte
 * exchange. So a bad argument on one rank is an error everywhere, never a hang. The byte
 * exchange uses MPI's int counts and displacements: at most INT_MAX bytes to or from one
 * rank in all (E2BIG, decided from counts every rank involved can see). A rank that cannot
 * allocate the buffer for bytes the others are already committed to sending it ends the job
 * (MPI_Abort): returning would leave them waiting in the collective forever. */
#include "internal/common.h"
#include "mpi/comm_internal.h"
#include "mpi/mpi_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

int mp_mpi_barrier(MPI_Comm comm)
{
    int r = mp__mpi_comm_check(comm, "mp_mpi_barrier");
    if (r < 0)
        return r;
    int rc = MPI_Barrier(comm);
    return rc == MPI_SUCCESS ? 0 : mp__mpi_error(rc, "mp_mpi_barrier: MPI_Barrier");
}

/* Checks shared by the collectives: MPI up, comm usable, out given, root in range.
 * Sets *rank / *size. */
static int coll_check(MPI_Comm comm, int root, mp_value **out, int *rank, int *size,
                      const char *what)
{
    int r = mp__mpi_comm_shape(comm, out, rank, size, what);
    if (r < 0)
        return r;
    if (root < -1 || root >= *size)
        return mp__error(MP_EINVAL, "%s: root %d is not a rank of a communicator of size %d",
                         what, root, *size);
    return 0;
}

int mp__mpi_bcast_or_error(MPI_Comm comm, const mp_value *v, int err, int root,
                           mp_value **out, const char *what)
{
    int rank, size;
    int r = coll_check(comm, root, out, &rank, &size, what);
    if (r < 0)
        return r;
    char *buf = NULL;
    int len = 0;
    int64_t head = err;
    if (rank == root && err == 0) {
        head = (r = mp__mpi_encode(v, &buf, &len, what)) < 0 ? r : len;
    }
    int rc = MPI_Bcast(&head, 1, MPI_INT64_T, root, comm);
    if (rc != MPI_SUCCESS) {
        mp_free(buf);
        return mp__mpi_error(rc, what);
    }
    if (head < 0) /* the root failed: it keeps its own message, the others name it */
        return rank == root ? (int)head : mp__mpi_peer_failed((int)head, root, what);
    if (rank != root && !(buf = malloc(head > 0 ? (size_t)head : 1)))
        MPI_Abort(comm, 1); /* the root is committed to the byte broadcast (DESIGN) */
    rc = MPI_Bcast(buf, (int)head, MPI_BYTE, root, comm);
    if (rc == MPI_SUCCESS)
        r = mp__mpi_decode(buf, (size_t)head, root, what, out);
    else
        r = mp__mpi_error(rc, what);
    if (rank == root)
        mp_free(buf);
    else
        free(buf);
    return r;
}

int mp_mpi_bcast(MPI_Comm comm, const mp_value *v, int root, mp_value **out)
{
    if (root < 0)
        return mp__error(MP_EINVAL, "mp_mpi_bcast: root %d", root);
    return mp__mpi_bcast_or_error(comm, v, 0, root, out, "mp_mpi_bcast");
}

/* A list of exactly @p size items, or MP_EINVAL naming it. */
static int check_list(const mp_value *list, int size, const char *what)
{
    if (mp_value_type(list) != MP_LIST)
        return mp__error(MP_EINVAL, "%s: expected a list of %d items, got %s", what, size,
                         list ? mp_type_name(mp_value_type(list)) : "NULL");
    if (mp_value_len(list) != (size_t)size)
        return mp__error(MP_EINVAL, "%s: expected a list of %d items (one per rank), got %zu",
                         what, size, mp_value_len(list));
    return 0;
}

int mp_mpi_scatter(MPI_Comm comm, const mp_value *list, int root, mp_value **out)
{
    const char *what = "mp_mpi_scatter";
    int rank, size;
    int r = root < 0 ? mp__error(MP_EINVAL, "%s: root %d", what, root)
                     : coll_check(comm, root, out, &rank, &size, what);
    if (r < 0)
        return r;
    char *buf = NULL;
    int *counts = NULL, *displs = NULL;
    int64_t *heads = NULL, head = 0;
    if (rank == root) {
        counts = calloc((size_t)size, sizeof *counts);
        displs = calloc((size_t)size, sizeof *displs);
        heads = calloc((size_t)size, sizeof *heads);
        r = counts && displs && heads ? check_list(list, size, what) : mp__error(-ENOMEM, "%s", what);
        if (r == 0)
            r = mp__mpi_encode_items(list, size, &buf, counts, displs, what);
        for (int i = 0; heads && i < size; i++)
            heads[i] = r < 0 ? r : counts[i];
        if (!heads) { /* the others must still hear of it: send the failure to each */
            free(counts);
            free(displs);
            counts = displs = NULL;
        }
    }
    int rc = heads || rank != root
                 ? MPI_Scatter(heads, 1, MPI_INT64_T, &head, 1, MPI_INT64_T, root, comm)
                 : MPI_ERR_NO_MEM;
    char *mine = NULL;
    if (rc == MPI_SUCCESS && head >= 0) {
        mine = malloc(head > 0 ? (size_t)head : 1);
        rc = MPI_Scatterv(buf, counts, displs, MPI_BYTE, mine, mine ? (int)head : 0, MPI_BYTE,
                          root, comm);
        if (!mine && rc == MPI_SUCCESS)
            r = mp__error(-ENOMEM, "%s: a %lld-byte item", what, (long long)head);
    }
    if (rc != MPI_SUCCESS)
        r = mp__mpi_error(rc, what);
    else if (head < 0 && rank != root)
        r = mp__mpi_peer_failed((int)head, root, what);
    else if (r == 0)
        r = mp__mpi_decode(mine, (size_t)head, root, what, out);
    free(mine);
    free(buf);
    free(counts);
    free(displs);
    free(heads);
    return r;
}
