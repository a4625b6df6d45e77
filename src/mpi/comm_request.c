/* Nonblocking messages of values: mp_mpi_isend, mp_mpi_irecv and their request.
 * DESIGN: isend encodes at once and starts MPI_Isend on the request's own buffer (freed when
 * the request completes). irecv cannot post MPI_Irecv: a value's size is unknown until its
 * message is there. So it is probe-based: the request keeps (source, tag) and matches a
 * message when it is tested (MPI_Improbe, then MPI_Imrecv on exactly that message) or
 * waited on (MPI_Mprobe + MPI_Mrecv). Matched probes take the message for this request
 * only, so threads and other receives cannot steal it in between. The price: matching
 * happens at test/wait time, not at irecv time (documented in mpi.h). */
#include "internal/common.h"
#include "mpi/comm_internal.h"
#include "mpi/mpi_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>

enum req_state { REQ_SEND, REQ_UNMATCHED, REQ_RECEIVING, REQ_NULL_SOURCE };

struct mp_mpi_request {
    enum req_state state;
    MPI_Comm comm;
    int source, tag;
    MPI_Request req;
    MPI_Status matched; /* receive: the probe's status (source, tag, count) */
    char *buf;          /* send: the encoding (mp_free); receive: the bytes (free) */
    int len;
};

static void request_release(mp_mpi_request *q)
{
    if (q->state == REQ_SEND)
        mp_free(q->buf);
    else
        free(q->buf);
    free(q);
}

mp_mpi_request *mp_mpi_isend(MPI_Comm comm, const mp_value *v, int dest, int tag)
{
    const char *what = "mp_mpi_isend";
    if (mp__mpi_comm_check(comm, what) < 0)
        return NULL;
    if (tag < 0) {
        mp__error(MP_EINVAL, "%s: tag %d (a send's tag is >= 0)", what, tag);
        return NULL;
    }
    mp_mpi_request *q = calloc(1, sizeof *q);
    if (!q) {
        mp__error(-ENOMEM, "%s", what);
        return NULL;
    }
    q->state = REQ_SEND;
    if (mp__mpi_encode(v, &q->buf, &q->len, what) < 0) {
        free(q);
        return NULL;
    }
    int rc = MPI_Isend(q->buf, q->len, MPI_BYTE, dest, tag, comm, &q->req);
    if (rc != MPI_SUCCESS) {
        mp__mpi_error(rc, "mp_mpi_isend: MPI_Isend");
        request_release(q);
        return NULL;
    }
    return q;
}

mp_mpi_request *mp_mpi_irecv(MPI_Comm comm, int source, int tag)
{
    const char *what = "mp_mpi_irecv";
    if (mp__mpi_comm_check(comm, what) < 0)
        return NULL;
    if (tag < 0 && tag != MPI_ANY_TAG) {
        mp__error(MP_EINVAL, "%s: tag %d (>= 0 or MPI_ANY_TAG)", what, tag);
        return NULL;
    }
    mp_mpi_request *q = calloc(1, sizeof *q);
    if (!q) {
        mp__error(-ENOMEM, "%s", what);
        return NULL;
    }
    q->state = source == MPI_PROC_NULL ? REQ_NULL_SOURCE : REQ_UNMATCHED;
    q->comm = comm;
    q->source = source;
    q->tag = tag;
    q->req = MPI_REQUEST_NULL;
    return q;
}

/* The matched message is received: decode it into *out and free the request. */
static int recv_finish(mp_mpi_request *q, mp_value **out, mp_mpi_status *status,
                       const char *what)
{
    int r;
    if (q->state == REQ_NULL_SOURCE) {
        r = (*out = mp_value_nil()) ? 0 : mp_last_error_code();
        q->matched.MPI_SOURCE = MPI_PROC_NULL;
        q->matched.MPI_TAG = MPI_ANY_TAG;
    } else {
        r = mp__mpi_decode(q->buf, (size_t)q->len, q->matched.MPI_SOURCE, what, out);
    }
    if (r == 0)
        mp__mpi_status_set(status, &q->matched, (size_t)q->len);
    request_release(q);
    return r;
}

/* Start receiving the message a probe matched (MPI_Imrecv into a buffer of its size). */
static int recv_start(mp_mpi_request *q, MPI_Message *msg, const char *what)
{
    int n = 0;
    MPI_Get_count(&q->matched, MPI_BYTE, &n);
    q->buf = malloc(n > 0 ? (size_t)n : 1);
    if (!q->buf) {
        MPI_Mrecv(NULL, 0, MPI_BYTE, msg, MPI_STATUS_IGNORE); /* drops it */
        return mp__error(-ENOMEM, "%s: a %d-byte message", what, n);
    }
    q->len = n;
    int rc = MPI_Imrecv(q->buf, n, MPI_BYTE, msg, &q->req);
    if (rc != MPI_SUCCESS)
        return mp__mpi_error(rc, "MPI_Imrecv");
    q->state = REQ_RECEIVING;
    return 0;
}

int mp_mpi_wait(mp_mpi_request *req, mp_value **out, mp_mpi_status *status)
{
    const char *what = "mp_mpi_wait";
    if (!req)
        return mp__error(MP_EINVAL, "%s: NULL request", what);
    if (out)
        *out = NULL;
    if (req->state == REQ_SEND) {
        int rc = MPI_Wait(&req->req, MPI_STATUS_IGNORE);
        request_release(req);
        return rc == MPI_SUCCESS ? 0 : mp__mpi_error(rc, "mp_mpi_wait: MPI_Wait");
    }
    if (!out) {
        mp_mpi_request_free(req);
        return mp__error(MP_EINVAL, "%s: a receive needs an output", what);
    }
    int r = 0, rc = MPI_SUCCESS;
    if (req->state == REQ_UNMATCHED) {
        r = mp__mpi_recv_bytes(req->comm, req->source, req->tag, &req->buf, &req->len,
                               &req->matched);
    } else if (req->state == REQ_RECEIVING) {
        rc = MPI_Wait(&req->req, MPI_STATUS_IGNORE);
    }
    if (r < 0 || rc != MPI_SUCCESS) {
        if (rc != MPI_SUCCESS)
            r = mp__mpi_error(rc, "mp_mpi_wait: MPI_Wait");
        else
            r = mp__error(r, "%s: %s", what, mp__last_error_detail());
        request_release(req);
        return r;
    }
    return recv_finish(req, out, status, what);
}

int mp_mpi_test(mp_mpi_request *req, mp_value **out, mp_mpi_status *status)
{
    const char *what = "mp_mpi_test";
    if (!req)
        return mp__error(MP_EINVAL, "%s: NULL request", what);
    if (req->state != REQ_SEND && !out)
        return mp__error(MP_EINVAL, "%s: a receive needs an output", what);
    if (out)
        *out = NULL;
    int flag = 0, rc = MPI_SUCCESS, r = 0;
    if (req->state == REQ_UNMATCHED) {
        MPI_Message msg;
        rc = MPI_Improbe(req->source, req->tag, req->comm, &flag, &msg, &req->matched);
        if (rc == MPI_SUCCESS && !flag)
            return 0;
        if (rc == MPI_SUCCESS && (r = recv_start(req, &msg, what)) < 0) {
            request_release(req);
            return r;
        }
    }
    if (rc == MPI_SUCCESS && req->state != REQ_NULL_SOURCE) {
        rc = MPI_Test(&req->req, &flag, MPI_STATUS_IGNORE);
        if (rc == MPI_SUCCESS && !flag)
            return 0;
    }
    if (rc != MPI_SUCCESS) {
        r = mp__mpi_error(rc, "mp_mpi_test");
        request_release(req);
        return r;
    }
    if (req->state == REQ_SEND) {
        request_release(req);
        return 1;
    }
    r = recv_finish(req, out, status, what);
    return r < 0 ? r : 1;
}

void mp_mpi_request_free(mp_mpi_request *req)
{
    if (!req)
        return;
    if (req->state == REQ_SEND || req->state == REQ_RECEIVING)
        MPI_Wait(&req->req, MPI_STATUS_IGNORE);
    request_release(req);
}
