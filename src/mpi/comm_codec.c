/* Values as MPI messages: a value is its MessagePack encoding (mp_value_encode, no fds) sent
 * as one MPI_BYTE message; a receive probes first (MPI_Mprobe: the matched message is
 * taken by this thread only) so a message of any size is received whole, then decodes it
 * as untrusted input. Also the argument checks and error messages the other files share. */
#include "internal/common.h"
#include "mpi/comm_internal.h"
#include "mpi/mpi_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

int mp__mpi_comm_check(MPI_Comm comm, const char *what)
{
    int r = mp__mpi_check_ready();
    if (r < 0)
        return mp__error(r, "%s: %s", what, mp__last_error_detail());
    if (comm == MPI_COMM_NULL)
        return mp__error(MP_EINVAL, "%s: the communicator is MPI_COMM_NULL", what);
    if (!comm) /* a zeroed handle: no communicator at all (MPI might not catch it) */
        return mp__error(MP_EINVAL, "%s: the communicator is a zeroed handle", what);
    return 0;
}

int mp__mpi_comm_shape(MPI_Comm comm, mp_value **out, int *rank, int *size, const char *what)
{
    if (!out)
        return mp__error(MP_EINVAL, "%s: NULL output", what);
    *out = NULL;
    int r = mp__mpi_comm_check(comm, what);
    if (r < 0)
        return r;
    int rc = MPI_Comm_rank(comm, rank);
    if (rc == MPI_SUCCESS)
        rc = MPI_Comm_size(comm, size);
    return rc == MPI_SUCCESS ? 0 : mp__mpi_error(rc, what);
}

int mp__mpi_encode(const mp_value *v, char **buf, int *len, const char *what)
{
    *buf = NULL;
    *len = 0;
    if (!v)
        return mp__error(MP_EINVAL, "%s: NULL value", what);
    char *b = NULL;
    size_t n = 0, nfds = 0;
    int r = mp_value_encode(v, &b, &n, NULL, 0, &nfds);
    if (r < 0)
        return mp__error(r, "%s: %s", what, mp__last_error_detail());
    if (n > INT_MAX) {
        mp_free(b);
        return mp__error(-E2BIG, "%s: the value encodes to %zu bytes, over MPI's limit of "
                                 "%d for one message", what, n, INT_MAX);
    }
    *buf = b;
    *len = (int)n;
    return 0;
}

int mp__mpi_decode(const char *buf, size_t len, int from, const char *what, mp_value **out)
{
    int r = mp_value_decode(buf, len, NULL, 0, out);
    if (r < 0)
        return mp__error(r, "%s: the %zu-byte message from rank %d is not a value: %s", what,
                         len, from, mp__last_error_detail());
    return 0;
}

int mp__mpi_recv_bytes(MPI_Comm comm, int source, int tag, char **buf, int *len,
                       MPI_Status *status)
{
    MPI_Message msg;
    int n = 0;
    *buf = NULL;
    *len = 0;
    int rc = MPI_Mprobe(source, tag, comm, &msg, status);
    if (rc != MPI_SUCCESS)
        return mp__mpi_error(rc, "MPI_Mprobe");
    MPI_Get_count(status, MPI_BYTE, &n);
    char *b = malloc(n > 0 ? (size_t)n : 1);
    if (!b) {
        MPI_Mrecv(NULL, 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE); /* drops it (truncated) */
        return mp__error(-ENOMEM, "receiving a %d-byte message", n);
    }
    rc = MPI_Mrecv(b, n, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) {
        free(b);
        return mp__mpi_error(rc, "MPI_Mrecv");
    }
    *buf = b;
    *len = n;
    return 0;
}

void mp__mpi_status_set(mp_mpi_status *out, const MPI_Status *st, size_t len)
{
    if (!out)
        return;
    out->source = st->MPI_SOURCE;
    out->tag = st->MPI_TAG;
    out->len = len;
}

int mp__mpi_peer_failed(int code, int rank, const char *what)
{
    return mp__error(code, "%s: rank %d failed (%s)", what, rank, mp_errname(code));
}

/* Encode the @p n items of @p list one after the other into *buf, their sizes in
 * @p counts and offsets in @p displs. 0 or the code of the first failure. */
int mp__mpi_encode_items(const mp_value *list, int n, char **buf, int *counts, int *displs,
                          const char *what)
{
    size_t total = 0;
    char **parts = calloc((size_t)n, sizeof *parts);
    int r = parts ? 0 : mp__error(-ENOMEM, "%s", what);
    for (int i = 0; r == 0 && i < n; i++) {
        r = mp__mpi_encode(mp_value_list_get(list, (size_t)i), &parts[i], &counts[i], what);
        displs[i] = (int)total;
        total += r == 0 ? (size_t)counts[i] : 0;
        if (r == 0 && total > INT_MAX)
            r = mp__error(-E2BIG, "%s: the items encode to over %d bytes", what, INT_MAX);
    }
    if (r == 0 && !(*buf = malloc(total ? total : 1)))
        r = mp__error(-ENOMEM, "%s: %zu bytes", what, total);
    for (int i = 0; i < n && parts; i++) {
        if (r == 0)
            memcpy(*buf + displs[i], parts[i], (size_t)counts[i]);
        mp_free(parts[i]);
    }
    free(parts);
    return r;
}
