/* Blocking point-to-point messages of values: mp_mpi_send, mp_mpi_recv, mp_mpi_sendrecv.
 * DESIGN: a value is one MPI_BYTE message (comm_codec.c). recv matches with MPI_Mprobe and
 * receives that very message with MPI_Mrecv, so its size need not be known and another
 * thread's receive cannot take it in between. sendrecv cannot post a receive of unknown
 * size beside its send (MPI_Sendrecv needs the size), so it starts the send (MPI_Isend),
 * receives as recv does, then completes the send: two ranks exchanging never deadlock. */
#include "internal/common.h"
#include "mpi/comm_internal.h"
#include "mpi/mpi_internal.h"

#include <stdlib.h>

static int send_check(MPI_Comm comm, const mp_value *v, int tag, const char *what)
{
    int r = mp__mpi_comm_check(comm, what);
    if (r < 0)
        return r;
    if (!v)
        return mp__error(MP_EINVAL, "%s: NULL value", what);
    if (tag < 0)
        return mp__error(MP_EINVAL, "%s: tag %d (a send's tag is >= 0)", what, tag);
    return 0;
}

int mp_mpi_send(MPI_Comm comm, const mp_value *v, int dest, int tag)
{
    int r = send_check(comm, v, tag, "mp_mpi_send");
    if (r < 0)
        return r;
    char *buf;
    int len;
    if ((r = mp__mpi_encode(v, &buf, &len, "mp_mpi_send")) < 0)
        return r;
    int rc = MPI_Send(buf, len, MPI_BYTE, dest, tag, comm);
    mp_free(buf);
    return rc == MPI_SUCCESS ? 0 : mp__mpi_error(rc, "mp_mpi_send: MPI_Send");
}

/* The receive half shared by recv and sendrecv (arguments checked). */
static int recv_value(MPI_Comm comm, int source, int tag, mp_value **out,
                      mp_mpi_status *status, const char *what)
{
    MPI_Status st;
    char *buf;
    int len;
    if (source == MPI_PROC_NULL) { /* MPI's no-op receive: None from nobody */
        if (!(*out = mp_value_nil()))
            return mp_last_error_code();
        st.MPI_SOURCE = MPI_PROC_NULL;
        st.MPI_TAG = MPI_ANY_TAG;
        mp__mpi_status_set(status, &st, 0);
        return 0;
    }
    int r = mp__mpi_recv_bytes(comm, source, tag, &buf, &len, &st);
    if (r < 0)
        return mp__error(r, "%s: %s", what, mp__last_error_detail());
    r = mp__mpi_decode(buf, (size_t)len, st.MPI_SOURCE, what, out);
    free(buf);
    if (r == 0)
        mp__mpi_status_set(status, &st, (size_t)len);
    return r;
}

static int recv_check(MPI_Comm comm, int tag, mp_value **out, const char *what)
{
    if (!out)
        return mp__error(MP_EINVAL, "%s: NULL output", what);
    *out = NULL;
    int r = mp__mpi_comm_check(comm, what);
    if (r < 0)
        return r;
    if (tag < 0 && tag != MPI_ANY_TAG)
        return mp__error(MP_EINVAL, "%s: tag %d (>= 0 or MPI_ANY_TAG)", what, tag);
    return 0;
}

int mp_mpi_recv(MPI_Comm comm, int source, int tag, mp_value **out, mp_mpi_status *status)
{
    int r = recv_check(comm, tag, out, "mp_mpi_recv");
    return r < 0 ? r : recv_value(comm, source, tag, out, status, "mp_mpi_recv");
}

int mp_mpi_sendrecv(MPI_Comm comm, const mp_value *v, int dest, int sendtag, int source,
                    int recvtag, mp_value **out, mp_mpi_status *status)
{
    const char *what = "mp_mpi_sendrecv";
    int r = recv_check(comm, recvtag, out, what);
    if (r < 0 || (r = send_check(comm, v, sendtag, what)) < 0)
        return r;
    char *buf;
    int len;
    if ((r = mp__mpi_encode(v, &buf, &len, what)) < 0)
        return r;
    MPI_Request req;
    int rc = MPI_Isend(buf, len, MPI_BYTE, dest, sendtag, comm, &req);
    if (rc != MPI_SUCCESS) {
        mp_free(buf);
        return mp__mpi_error(rc, "mp_mpi_sendrecv: MPI_Isend");
    }
    r = recv_value(comm, source, recvtag, out, status, what);
    rc = MPI_Wait(&req, MPI_STATUS_IGNORE);
    mp_free(buf);
    if (rc != MPI_SUCCESS && r == 0) {
        mp_value_free(*out);
        *out = NULL;
        return mp__mpi_error(rc, "mp_mpi_sendrecv: MPI_Wait");
    }
    return r;
}
