/* Collectives of values where every rank sends: gather, allgather, alltoall.
 * DESIGN: as coll.c. gather exchanges the byte counts with MPI_Allgather (not MPI_Gather)
 * so that every rank sees every count: all of them then agree, without another round,
 * whether some rank failed (a negative count is its error code) or the total would pass
 * INT_MAX, and all skip the byte exchange together. alltoall exchanges counts with
 * MPI_Alltoall, then agrees with one MPI_Allreduce(MPI_MINLOC) on (worst code, its rank):
 * a rank only sees the counts sent to it, and must not start MPI_Alltoallv when another
 * rank will not. A rank that cannot allocate its count arrays (a few bytes per rank) or its
 * receive buffer once the others are committed to the byte exchange ends the job with
 * MPI_Abort: returning would leave the other ranks waiting in the exchange forever. */
#include "internal/common.h"
#include "mpi/comm_internal.h"
#include "mpi/mpi_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* Decode @p size pieces of @p buf (from ranks 0..size-1) into a new list. */
static int decode_list(const char *buf, int size, const int *counts, const int *displs,
                       mp_value **out, const char *what)
{
    mp_value *list = mp_value_list();
    int r = list ? 0 : mp_last_error_code();
    for (int i = 0; r == 0 && i < size; i++) {
        mp_value *item;
        r = mp__mpi_decode(buf + displs[i], (size_t)counts[i], i, what, &item);
        if (r == 0)
            r = mp_value_list_append(list, item);
    }
    if (r < 0)
        mp_value_free(list);
    else
        *out = list;
    return r;
}

/* From the int64 counts every rank sent: the int counts and offsets for the byte exchange,
 * or the first failure (a rank's own code, or E2BIG past INT_MAX in all). */
static int plan(const int64_t *heads, int size, int me, int *counts, int *displs,
                size_t *total, const char *what)
{
    *total = 0;
    for (int i = 0; i < size; i++) {
        if (heads[i] < 0)
            return i == me ? (int)heads[i] : mp__mpi_peer_failed((int)heads[i], i, what);
        counts[i] = (int)heads[i];
        displs[i] = (int)*total;
        *total += (size_t)heads[i];
        if (*total > INT_MAX)
            return mp__error(-E2BIG, "%s: over %d bytes to one rank", what, INT_MAX);
    }
    return 0;
}

int mp__mpi_gather(MPI_Comm comm, const mp_value *v, int root, mp_value **out,
                   const char *what)
{
    int rank, size;
    int r = mp__mpi_comm_shape(comm, out, &rank, &size, what);
    if (r < 0)
        return r;
    if (root < -1 || root >= size)
        return mp__error(MP_EINVAL, "%s: root %d is not a rank of a communicator of size %d",
                         what, root, size);
    char *mine = NULL, *buf = NULL;
    int len = 0;
    int64_t head = (r = mp__mpi_encode(v, &mine, &len, what)) < 0 ? r : len;
    int64_t *heads = malloc((size_t)size * sizeof *heads);
    int *counts = malloc((size_t)size * sizeof *counts);
    int *displs = malloc((size_t)size * sizeof *displs);
    if (!heads || !counts || !displs) { /* cannot even take part: MPI aborts the job */
        MPI_Abort(comm, 1);
    }
    int rc = MPI_Allgather(&head, 1, MPI_INT64_T, heads, 1, MPI_INT64_T, comm);
    size_t total = 0;
    if (rc == MPI_SUCCESS && (r = plan(heads, size, rank, counts, displs, &total, what)) == 0) {
        bool receives = root < 0 || rank == root;
        if (receives && !(buf = malloc(total ? total : 1)))
            MPI_Abort(comm, 1);
        if (root < 0)
            rc = MPI_Allgatherv(mine, len, MPI_BYTE, buf, counts, displs, MPI_BYTE, comm);
        else
            rc = MPI_Gatherv(mine, len, MPI_BYTE, buf, counts, displs, MPI_BYTE, root, comm);
        if (rc == MPI_SUCCESS && receives)
            r = decode_list(buf, size, counts, displs, out, what);
    }
    if (rc != MPI_SUCCESS)
        r = mp__mpi_error(rc, what);
    mp_free(mine);
    free(buf);
    free(heads);
    free(counts);
    free(displs);
    return r;
}

int mp_mpi_gather(MPI_Comm comm, const mp_value *v, int root, mp_value **out)
{
    if (root < 0)
        return mp__error(MP_EINVAL, "mp_mpi_gather: root %d", root);
    return mp__mpi_gather(comm, v, root, out, "mp_mpi_gather");
}

int mp_mpi_allgather(MPI_Comm comm, const mp_value *v, mp_value **out)
{
    return mp__mpi_gather(comm, v, -1, out, "mp_mpi_allgather");
}

/* This rank's items of an alltoall, encoded: *buf (free), counts and offsets; 0 or a code. */
static int alltoall_encode(const mp_value *list, int size, char **buf, int *counts,
                           int *displs, const char *what)
{
    if (mp_value_type(list) != MP_LIST || mp_value_len(list) != (size_t)size)
        return mp__error(MP_EINVAL, "%s: expected a list of %d items (one per rank), got %s"
                                    " of length %zu", what, size,
                         list ? mp_type_name(mp_value_type(list)) : "NULL", mp_value_len(list));
    return mp__mpi_encode_items(list, size, buf, counts, displs, what);
}

int mp_mpi_alltoall(MPI_Comm comm, const mp_value *list, mp_value **out)
{
    const char *what = "mp_mpi_alltoall";
    int rank, size;
    int r = mp__mpi_comm_shape(comm, out, &rank, &size, what);
    if (r < 0)
        return r;
    size_t n = (size_t)size;
    int *sc = calloc(n, sizeof *sc), *sd = calloc(n, sizeof *sd);
    int *rcnt = calloc(n, sizeof *rcnt), *rd = calloc(n, sizeof *rd);
    int64_t *sh = calloc(n, sizeof *sh), *rh = calloc(n, sizeof *rh);
    if (!sc || !sd || !rcnt || !rd || !sh || !rh)
        MPI_Abort(comm, 1);
    char *sbuf = NULL, *rbuf = NULL;
    r = alltoall_encode(list, size, &sbuf, sc, sd, what);
    for (int i = 0; i < size; i++)
        sh[i] = r < 0 ? r : sc[i];
    int rc = MPI_Alltoall(sh, 1, MPI_INT64_T, rh, 1, MPI_INT64_T, comm);
    size_t total = 0;
    if (rc == MPI_SUCCESS && r == 0)
        r = plan(rh, size, rank, rcnt, rd, &total, what);
    /* agree: the lowest code and the lowest rank that has it */
    struct { int code, rank; } local = { r, rank }, worst;
    if (rc == MPI_SUCCESS)
        rc = MPI_Allreduce(&local, &worst, 1, MPI_2INT, MPI_MINLOC, comm);
    if (rc == MPI_SUCCESS && worst.code < 0 && r == 0)
        r = mp__mpi_peer_failed(worst.code, worst.rank, what);
    if (rc == MPI_SUCCESS && worst.code == 0) {
        if (!(rbuf = malloc(total ? total : 1)))
            MPI_Abort(comm, 1);
        rc = MPI_Alltoallv(sbuf, sc, sd, MPI_BYTE, rbuf, rcnt, rd, MPI_BYTE, comm);
        if (rc == MPI_SUCCESS)
            r = decode_list(rbuf, size, rcnt, rd, out, what);
    }
    if (rc != MPI_SUCCESS)
        r = mp__mpi_error(rc, what);
    free(sbuf);
    free(rbuf);
    free(sc);
    free(sd);
    free(rcnt);
    free(rd);
    free(sh);
    free(rh);
    return r;
}
