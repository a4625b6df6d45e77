/**
 * @file mpi.h
 * @brief The MPI module: multiproc across machines on Open MPI (libmultiproc_mpi).
 *
 * Python counterpart: mpi4py (MPI.COMM_WORLD, comm.Get_rank/Get_size, and the value
 * messages and collectives of the seeds' mpi4py chapters) and mpi4py.futures.
 *
 * This module lives in its own library, `libmultiproc_mpi`, which holds the whole of
 * libmultiproc plus what is declared here: a program that uses MPI links
 * `-lmultiproc_mpi` (and Open MPI: build it with `mpicc`, or with the CMake target
 * `multiproc::multiproc_mpi`) instead of `-lmultiproc`. Programs that do not use MPI never
 * load libmpi.
 *
 * Errors: an MPI call that fails returns MP_EMPI with MPI's own message (MPI_Error_string)
 * in mp_last_error(); the library sets MPI_ERRORS_RETURN on the communicators it uses, so
 * an MPI failure is a return code, never an abort of the job by the library itself.
 */
#ifndef MULTIPROC_MPI_H
#define MULTIPROC_MPI_H

#include <mpi.h>
#include <stdbool.h>
#include <stddef.h>

#include "multiproc/error.h"
#include "multiproc/export.h"
#include "multiproc/value.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/** Initialise MPI (MPI_Init_thread asking for MPI_THREAD_MULTIPLE: the library's own
 * threads may call MPI) unless it already is; sets MPI_ERRORS_RETURN on MPI_COMM_WORLD.
 * Safe to call more than once. @p argc / @p argv may be NULL. Returns 0, or MP_EMPI
 * (MPI refused, or gave less than MPI_THREAD_MULTIPLE: the message names the level). */
int mp_mpi_init(int *argc, char ***argv);
/** Finalize MPI if mp_mpi_init initialised it and it is not finalized yet. Returns 0 or
 * MP_EMPI. Under mpiexec, once an MPI pool (mpi_pool.h) lost a rank, MPI_Finalize is not
 * called (it would wait for the lost rank): with --enable-recovery this returns 0 and
 * leaves MPI as it is (make no MPI call after it); under a plain mpiexec it waits for
 * Open MPI to end the job, then MPI_Abort: it does not return (docs/distributed.md). */
int mp_mpi_finalize(void);
/** This process's rank in @p comm, or MP_EMPI / MP_ESTATE (MPI not initialised). */
int mp_mpi_rank(MPI_Comm comm);
/** The number of processes in @p comm, or MP_EMPI / MP_ESTATE (MPI not initialised). */
int mp_mpi_size(MPI_Comm comm);

/* ---- Values across ranks (mpi4py's lowercase comm.send/recv/bcast/... for mp_value) ----
 *
 * | mpi4py                                | multiproc                                      |
 * |---------------------------------------|------------------------------------------------|
 * | comm.send(obj, dest, tag)             | mp_mpi_send(comm, v, dest, tag)                |
 * | obj = comm.recv(source, tag, status)  | mp_mpi_recv(comm, source, tag, &v, &status)    |
 * | comm.sendrecv(obj, dest, ..., source) | mp_mpi_sendrecv(comm, v, dest, stag, src, rtag, &v, &st) |
 * | req = comm.isend / comm.irecv         | mp_mpi_isend / mp_mpi_irecv                    |
 * | req.wait(status) / req.test()         | mp_mpi_wait / mp_mpi_test                      |
 * | comm.bcast / scatter / gather         | mp_mpi_bcast / mp_mpi_scatter / mp_mpi_gather  |
 * | comm.allgather / alltoall             | mp_mpi_allgather / mp_mpi_alltoall             |
 * | comm.reduce / allreduce (op=MPI.SUM)  | mp_mpi_reduce / mp_mpi_allreduce (MP_MPI_SUM)  |
 * | comm.reduce(op=MPI.Op.Create(f))      | mp_mpi_reduce_with / mp_mpi_allreduce_with     |
 * | comm.barrier()                        | mp_mpi_barrier                                 |
 * | comm.Create_cart / Get_coords / Shift | mp_mpi_cart_create / _coords / _shift          |
 * | comm.Send/Recv/Bcast/... (buffers)    | mp_mpi_array_* (MPI datatypes, no encoding)    |
 *
 * A value travels as its MessagePack encoding (mp_value_encode) in one MPI_BYTE message;
 * handles that carry fds cannot cross hosts (MP_EUNSUPPORTED), proxies can. Received bytes
 * are untrusted: a message that is not a value's encoding is MP_EPROTO, never a crash. A
 * message is at most INT_MAX bytes (MPI's int counts), and a collective moves at most
 * INT_MAX bytes in all to or from one rank: beyond, E2BIG. Plain arrays of numbers use the
 * mp_mpi_array_* functions below: MPI's own datatypes, no encoding.
 *
 * Collectives are called by every rank of @p comm, as in MPI. A bad argument found on one
 * rank only (the root's list has the wrong length, a value that cannot be encoded, a user
 * reduction that fails) is reported to every rank that depends on it, which all return
 * the same code: the rank at fault with its own message, the others with one naming it
 * ("mp_mpi_scatter: rank 0 failed (MP_EINVAL)"). A collective never leaves ranks waiting
 * for a message that will not come. A
 * NULL output or a root out of range is MP_EINVAL on the rank that passed it, before any
 * communication: pass the same root everywhere, as MPI requires.
 *
 * Thread safety: each call is safe from any thread (mp_mpi_init asks for
 * MPI_THREAD_MULTIPLE); as in MPI, two threads must not run collectives on the same
 * communicator at once, and a request is used by one thread at a time. */

/** What a receive matched: the sender's rank, the message's tag and its encoded size. */
typedef struct mp_mpi_status {
    int source; /**< the sender's rank in the communicator */
    int tag;    /**< the message's tag */
    size_t len; /**< bytes received (the value's encoded size) */
} mp_mpi_status;

/** Send @p v (borrowed) to rank @p dest with @p tag (>= 0), blocking until MPI has the
 * bytes (MPI_Send: may wait for the matching receive). @p dest may be MPI_PROC_NULL (a
 * no-op). Returns 0, MP_EINVAL (NULL value, negative tag), E2BIG, the encoder's error
 * (MP_EUNSUPPORTED for a handle that carries fds) or MP_EMPI. */
int mp_mpi_send(MPI_Comm comm, const mp_value *v, int dest, int tag);
/** Receive a value from @p source (a rank or MPI_ANY_SOURCE) with @p tag (or
 * MPI_ANY_TAG): *out is a new value (mp_value_free). @p status may be NULL; it reports
 * who sent it and with which tag. Any size is received (probe, then receive: MPI_Mprobe).
 * From MPI_PROC_NULL: *out is nil at once, status source MPI_PROC_NULL, tag MPI_ANY_TAG.
 * Returns 0, MP_EINVAL, MP_EPROTO (not a value's encoding; the message is consumed),
 * -ENOMEM or MP_EMPI. *out is NULL on failure. */
int mp_mpi_recv(MPI_Comm comm, int source, int tag, mp_value **out, mp_mpi_status *status);
/** Send @p v to @p dest and receive from @p source at once (no deadlock when two ranks
 * exchange): mpi4py's comm.sendrecv. Errors as mp_mpi_send and mp_mpi_recv. */
int mp_mpi_sendrecv(MPI_Comm comm, const mp_value *v, int dest, int sendtag, int source,
                    int recvtag, mp_value **out, mp_mpi_status *status);

/** A nonblocking send or receive in progress: finished by mp_mpi_wait, mp_mpi_test (when
 * it reports done) or mp_mpi_request_free, which free it. */
typedef struct mp_mpi_request mp_mpi_request;
/** Start sending @p v (encoded at once: the caller may free @p v on return). NULL with
 * mp_last_error_code() on failure (the send errors of mp_mpi_send). */
mp_mpi_request *mp_mpi_isend(MPI_Comm comm, const mp_value *v, int dest, int tag);
/**
 * Start receiving a value from @p source / @p tag (wildcards allowed). The size of a value
 * is not known in advance, so the receive is probe-based: mp_mpi_test looks for a matching
 * message (MPI_Improbe) and, once one is there, receives it (MPI_Imrecv); mp_mpi_wait
 * blocks for it (MPI_Mprobe + MPI_Mrecv). The message is matched at that moment, not when
 * mp_mpi_irecv is called: two pending irecvs with the same source and tag match messages
 * in the order they are tested or waited on. No size limit other than INT_MAX, no
 * preallocated buffer (mpi4py's irecv needs one for messages over 32 KiB). NULL with
 * MP_EINVAL / -ENOMEM on failure.
 */
mp_mpi_request *mp_mpi_irecv(MPI_Comm comm, int source, int tag);
/** Wait for @p req to finish and free it. For a receive, *out is the new value and
 * @p status (may be NULL) says who sent it; for a send, *out (may be NULL) is set to NULL.
 * Returns 0 or the error of the operation (MP_EPROTO, MP_EMPI, ...); @p req is freed
 * either way. MP_EINVAL for a NULL request (a receive also needs @p out). */
int mp_mpi_wait(mp_mpi_request *req, mp_value **out, mp_mpi_status *status);
/** Check @p req without blocking: 0 if not finished (req still valid), 1 if finished
 * (req freed; *out and @p status as mp_mpi_wait), a negative code if it failed (req
 * freed). */
int mp_mpi_test(mp_mpi_request *req, mp_value **out, mp_mpi_status *status);
/** Abandon @p req: a receive not yet matched is dropped (its message, if one comes, stays
 * for a later receive); a matched receive or a send in flight is completed first (this
 * may block until the peer takes part). NULL is fine. */
void mp_mpi_request_free(mp_mpi_request *req);

/** Block until every rank of @p comm has called it. Returns 0 or MP_EMPI. */
int mp_mpi_barrier(MPI_Comm comm);
/** Rank @p root's @p v (borrowed; ignored elsewhere, may be NULL there) to every rank:
 * *out is a new value on every rank, the root included (a copy). */
int mp_mpi_bcast(MPI_Comm comm, const mp_value *v, int root, mp_value **out);
/** Rank @p root's @p list (a list of exactly size items; ignored elsewhere) is split:
 * rank i gets a copy of item i in *out. A root list of another length or type is
 * MP_EINVAL on every rank. */
int mp_mpi_scatter(MPI_Comm comm, const mp_value *list, int root, mp_value **out);
/** Every rank's @p v to rank @p root, which gets a list of size items in rank order in
 * *out; the other ranks get NULL (Python's None) in *out. */
int mp_mpi_gather(MPI_Comm comm, const mp_value *v, int root, mp_value **out);
/** Every rank's @p v to every rank: *out is a list of size items in rank order. */
int mp_mpi_allgather(MPI_Comm comm, const mp_value *v, mp_value **out);
/** Each rank passes a list of size items; item j goes to rank j, and *out on rank i is the
 * list of every rank's item i in rank order. */
int mp_mpi_alltoall(MPI_Comm comm, const mp_value *list, mp_value **out);

/** The predefined reductions, as MPI's (and mpi4py's) MPI.SUM, MPI.PROD, MPI.MIN, MPI.MAX. */
typedef enum mp_mpi_op { MP_MPI_SUM, MP_MPI_PROD, MP_MPI_MIN, MP_MPI_MAX } mp_mpi_op;
/**
 * @p a op @p b as Python computes it on numbers, into a new value *out: int with int stays
 * int (MP_ERANGE where Python's int would outgrow 64 bits), a float on either side gives a
 * float (as in Python, 1 + 2.5 == 3.5), a bool counts as 0 or 1. MIN and MAX keep the
 * operand itself (min(1, 1.0) is 1, as mpi4py's `y if y < x else x`) and also order
 * strs, bytes and lists (mp_value_compare) when both are of that type; SUM also joins
 * two strs, two bytes or two lists as Python's + does. Anything else is MP_ETYPE naming
 * the types ("unsupported operand types for sum: 'str' and 'int'").
 */
int mp_mpi_op_apply(mp_mpi_op op, const mp_value *a, const mp_value *b, mp_value **out);
/** A user reduction: *out = a op b, a new value; return 0 or a negative code. Called on
 * the root only, on the ranks' values in rank order grouped as mpi4py groups them, a
 * binary tree: (v0 op v1) op (v2 op v3) for four ranks, ((v0 op v1) op v2) for three. As
 * MPI requires of an operation, it must be associative; it need not commute. */
typedef int (*mp_mpi_reduce_fn)(const mp_value *a, const mp_value *b, mp_value **out,
                                void *arg);
/** Reduce every rank's @p v with @p op to rank @p root: *out is the result there, NULL
 * on the other ranks. Ranks' values are gathered to the root and folded there in rank
 * order (grouped as mp_mpi_reduce_fn says).
 * An operation that fails (MP_ETYPE, MP_ERANGE) fails on the root. */
int mp_mpi_reduce(MPI_Comm comm, const mp_value *v, mp_mpi_op op, int root, mp_value **out);
/** mp_mpi_reduce with the result on every rank; a failure is returned by every rank. */
int mp_mpi_allreduce(MPI_Comm comm, const mp_value *v, mp_mpi_op op, mp_value **out);
/** mp_mpi_reduce with a user function (@p arg passed through; used on the root). */
int mp_mpi_reduce_with(MPI_Comm comm, const mp_value *v, mp_mpi_reduce_fn fn, void *arg,
                       int root, mp_value **out);
/** mp_mpi_allreduce with a user function: it runs on rank 0 of @p comm, whose @p fn and
 * @p arg are the ones used; the result (or its error code) reaches every rank. */
int mp_mpi_allreduce_with(MPI_Comm comm, const mp_value *v, mp_mpi_reduce_fn fn, void *arg,
                          mp_value **out);

/* ---- plain arrays of numbers: MPI's datatypes, no encoding (mpi4py's Send, Bcast, ...) --
 * @p type is an MPI datatype (MPI_INT, MPI_INT64_T, MPI_DOUBLE, ...); counts are size_t,
 * checked against MPI's int limit (E2BIG); errors are MP_EMPI with MPI's message. */

/** Send @p count items of @p type from @p buf (MPI_Send). */
int mp_mpi_array_send(MPI_Comm comm, const void *buf, size_t count, MPI_Datatype type,
                      int dest, int tag);
/** Receive at most @p count items into @p buf; returns the number received (>= 0), or
 * MP_ETOOSHORT if the message holds more than @p count (it is consumed), MP_EMPI. */
int mp_mpi_array_recv(MPI_Comm comm, void *buf, size_t count, MPI_Datatype type, int source,
                      int tag, mp_mpi_status *status);
/** @p count items of @p buf from @p root to every rank's @p buf (MPI_Bcast). */
int mp_mpi_array_bcast(MPI_Comm comm, void *buf, size_t count, MPI_Datatype type, int root);
/** The root's @p sendbuf holds size blocks of @p count items; rank i receives block i in
 * @p recvbuf (MPI_Scatter). @p sendbuf is ignored elsewhere. */
int mp_mpi_array_scatter(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                         MPI_Datatype type, int root);
/** Each rank's @p count items to the root's @p recvbuf, block i from rank i (MPI_Gather). */
int mp_mpi_array_gather(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                        MPI_Datatype type, int root);
/** mp_mpi_array_gather with the blocks on every rank (MPI_Allgather). */
int mp_mpi_array_allgather(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                           MPI_Datatype type);
/** Block j of @p sendbuf (@p count items each) goes to rank j; block i of @p recvbuf comes
 * from rank i (MPI_Alltoall). */
int mp_mpi_array_alltoall(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                          MPI_Datatype type);
/** Elementwise @p op of every rank's @p count items into the root's @p recvbuf
 * (MPI_Reduce; @p recvbuf ignored elsewhere). */
int mp_mpi_array_reduce(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                        MPI_Datatype type, mp_mpi_op op, int root);
/** mp_mpi_array_reduce with the result on every rank (MPI_Allreduce). */
int mp_mpi_array_allreduce(MPI_Comm comm, const void *sendbuf, void *recvbuf, size_t count,
                           MPI_Datatype type, mp_mpi_op op);

/* ---- Cartesian topology (mpi4py's comm.Create_cart, Get_coords, Shift) --------------- */

/** A grid of @p ndims dimensions (1..8) over @p comm: @p dims[i] processes along dimension
 * i (a 0 lets MPI choose, MPI_Dims_create), wrapping around where @p periods[i] (NULL: no
 * wrap-around). @p reorder lets MPI renumber the ranks. *out is the new communicator
 * (MPI_ERRORS_RETURN set; free it with MPI_Comm_free), or MPI_COMM_NULL on a rank left
 * out of a grid smaller than @p comm. Collective. Returns 0, MP_EINVAL (bad ndims or dims,
 * a grid larger than @p comm) or MP_EMPI. */
int mp_mpi_cart_create(MPI_Comm comm, int ndims, const int *dims, const bool *periods,
                       bool reorder, MPI_Comm *out);
/** The grid coordinates of @p rank in @p cart into @p coords (@p ndims entries). */
int mp_mpi_cart_coords(MPI_Comm cart, int rank, int ndims, int *coords);
/** The ranks @p disp steps before (*source) and after (*dest) this process along
 * @p direction; MPI_PROC_NULL past the edge of a non-periodic dimension (mpi4py's Shift,
 * which prints it as -2 under Open MPI). */
int mp_mpi_cart_shift(MPI_Comm cart, int direction, int disp, int *source, int *dest);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
