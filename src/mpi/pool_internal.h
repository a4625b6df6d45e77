/* Private contract of the Pool on MPI (src/mpi/pool*.c):
 *   pool_backend.c  the backend vtable, the world's ranks (mpiexec) or spawned ones
 *   pool_relay.c    the master's relay thread: pool sockets <-> MPI messages
 *   pool_serve.c    a worker rank: mp_mpi_pool_serve_if_worker and its serving loop
 *   pool_end.c      the end of a program whose pool lost ranks (no MPI_Finalize)
 *
 * Messages on the pool's communicator (a dup of MPI_COMM_WORLD under mpiexec, the
 * intercommunicator of a spawn), tag = kind | generation << 4 (a pool's generation, so a
 * late message of a pool that ended is never taken by the next one):
 *   HELLO m->r  MessagePack [generation, position, init location|nil, initargs, hb s]
 *   ID    r->m  [pid, host, boot id + pid namespace + host name]: may it be watched
 *               (and killed) through a pidfd
 *   DATA  both  the local pool's framed messages (src/pool/pool.h), several per message;
 *               m->r: a batch, whose results the rank sends one message per frame
 *   DATAC m->r  a coalesced batch (the rank's tasks are quick): the rank may hold the
 *               results of its frames and send them together (at the batch's end, or at
 *               64 KiB, or once the first waited 1 ms), so a rank that dies in it fails
 *               every task of it not answered yet (mp__relay_held)
 *   BYE   m->r  the pool is done with the rank (no more DATA); the rank answers BYE
 *   STOP  m->r  terminate: drop the queued chunks; no answer
 *   HB    r->m  heartbeat, every MP__MPI_HB seconds while the rank serves a pool
 *   EXIT  both  (generation 0) m->r leave; r->m the answer, after the rank's last message
 *   FIN   m->r  (generation 0) after every live rank answered EXIT: finalize MPI and exit;
 *               with one byte 1 (a rank was lost, under --enable-recovery): exit without
 *               MPI_Finalize, which would wait for the lost rank (sent synchronously) */
#ifndef MP_MPI_POOL_INTERNAL_H
#define MP_MPI_POOL_INTERNAL_H

#include "multiproc/mpi_pool.h"
#include "pool/pool.h"

#include <mpi.h>
#include <stdbool.h>

enum { T_HELLO = 1, T_ID, T_DATA, T_BYE, T_STOP, T_HB, T_EXIT, T_FIN, T_DATAC };
#define MP__MPI_TAG(kind, gen) ((int)((kind) | ((unsigned)(gen) & 0xfffffu) << 4))
#define MP__MPI_KIND(tag) ((tag) & 0xf)
#define MP__MPI_GEN(tag) ((unsigned)(tag) >> 4)
#define MP__MPI_HB 0.2

/* MPI_Testsome over n requests lying `stride` bytes apart from *first (scratch and idx:
 * n slots each); a completed request is set to MPI_REQUEST_NULL in place. 0, or -1 when
 * MPI failed (the peer is gone: treat every send as done). */
int mp__mpi_testsome(MPI_Request *scratch, int *idx, size_t n, MPI_Request *first,
                     size_t stride);

/* This host's identity for pidfd watching: "boot_id pid-namespace hostname". */
void mp__mpi_host_identity(char *buf, size_t cap);

/* The relay of one pool (pool_relay.c). */
typedef struct mp__relay mp__relay;
/* Start the relay thread for n workers on comm, ranks[i] being worker i's rank. */
mp__relay *mp__relay_new(MPI_Comm comm, const int *ranks, int n, unsigned gen,
                         double hb_limit);
/* Worker i: send HELLO with boot; *sock and *sentinel are the pool's ends. */
int mp__relay_start(mp__relay *r, size_t i, const mp_value *boot, int *sock, int *sentinel);
void mp__relay_stop(mp__relay *r, size_t i);
/* Worker i died: how many of the oldest chunks sent to it it may have run without their
 * results coming back (the rest of a coalesced batch; else 1: the one it was running). */
size_t mp__relay_held(mp__relay *r, size_t i);
/* Large messages by pointer (the backend's give and take, src/pool/pool.h): worker i's
 * next message, sent at the MSG_HANDED notice the pool writes next (0, -ENOMEM); the
 * block a MSG_HANDED notice from the relay stands for (0, -1 when none). */
int mp__relay_give(mp__relay *r, size_t i, mp__txbuf *t);
int mp__relay_take(mp__relay *r, size_t i, char **buf, size_t *len);
void mp__relay_reap(mp__relay *r, size_t i, char *who, size_t wcap, char *how, size_t hcap);
/* Stop the thread; dead[i] tells which ranks died, pidfds[i] gets the pidfd of rank i
 * when it is on this host (else -1; the caller closes them); both may be NULL. Frees r. */
void mp__relay_free(mp__relay *r, bool *dead, int *pidfds);

/* A worker rank's loop (pool_serve.c): serve pools sent by `master` on comm until EXIT.
 * Returns 1 when the rank must leave without MPI_Finalize, else 0. */
int mp__mpi_serve(MPI_Comm comm, int master);

/* The end of a program whose pool lost ranks (pool_end.c). */
/* Whether mpiexec runs with --enable-recovery (OMPI_MCA_orte_enable_recovery). */
bool mp__mpi_recovery(void);
/* Seconds the master waits, under a plain mpiexec, for Open MPI to end the job. */
double mp__mpi_end_limit(void);
/* Report the ranks r in [first, size) with dead[r]; flush stdio. With recovery, return 1
 * (the caller does not finalize); else wait up to mp__mpi_end_limit() for Open MPI to end
 * the job, then MPI_Abort: it does not return. */
int mp__mpi_end_lost(const bool *dead, int first, int size);

#endif
