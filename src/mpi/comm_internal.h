/* Private parts of the values-across-ranks files (p2p.c, comm_*.c, coll*.c): how a value
 * becomes one MPI_BYTE message and back, and the checks every call makes first. */
#ifndef MP_MPI_COMM_INTERNAL_H
#define MP_MPI_COMM_INTERNAL_H

#include "multiproc/mpi.h"

#include <stdint.h>

/* MPI is up, @p comm is not MPI_COMM_NULL: 0, or MP_ESTATE / MP_EINVAL naming @p what. */
int mp__mpi_comm_check(MPI_Comm comm, const char *what);
/* mp__mpi_comm_check, then *out = NULL (out must not be NULL: MP_EINVAL) and this
 * process's rank and the size of comm. Returns 0 or the error. */
int mp__mpi_comm_shape(MPI_Comm comm, mp_value **out, int *rank, int *size, const char *what);
/* Encode @p v for a message: *buf (mp_free; non-NULL even when empty) and *len <= INT_MAX.
 * 0, MP_EINVAL (NULL value), E2BIG or the encoder's code, each naming @p what. */
int mp__mpi_encode(const mp_value *v, char **buf, int *len, const char *what);
/* Encode the first @p n items of @p list one after the other into *buf (free), their sizes
 * in @p counts and offsets in @p displs (E2BIG past INT_MAX in all). 0 or the first code. */
int mp__mpi_encode_items(const mp_value *list, int n, char **buf, int *counts, int *displs,
                         const char *what);
/* Decode received bytes (untrusted) into *out: 0 or the decoder's code (MP_EPROTO for a
 * message that is not a value), the message naming @p what and the sender @p from. */
int mp__mpi_decode(const char *buf, size_t len, int from, const char *what, mp_value **out);
/* Probe for a message from @p source / @p tag and receive it whole (MPI_Mprobe +
 * MPI_Mrecv): *buf (mp_free), *len, and its status. 0, -ENOMEM or MP_EMPI. */
int mp__mpi_recv_bytes(MPI_Comm comm, int source, int tag, char **buf, int *len,
                       MPI_Status *status);
/* Fill a public status from MPI's one. */
void mp__mpi_status_set(mp_mpi_status *out, const MPI_Status *st, size_t len);
/* Record that rank @p rank of a collective failed with @p code (negative): returns
 * @p code with a message "what: rank N failed: NAME". */
int mp__mpi_peer_failed(int code, int rank, const char *what);
/* Broadcast from @p root either @p v or, when @p err < 0, the failure @p err (every rank
 * then returns @p err; the root keeps its own message). *out is a new value elsewhere and
 * a copy on the root. */
int mp__mpi_bcast_or_error(MPI_Comm comm, const mp_value *v, int err, int root,
                           mp_value **out, const char *what);
/* Gather every rank's @p v to @p root (@p root < 0: to every rank) as a list in rank
 * order: mp_mpi_gather / mp_mpi_allgather. */
int mp__mpi_gather(MPI_Comm comm, const mp_value *v, int root, mp_value **out,
                   const char *what);

#endif
