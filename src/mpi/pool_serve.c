/* A worker rank of the Pool on MPI: mp_mpi_pool_serve_if_worker and the serving loop.
 *
 * DESIGN: the rank's main thread serves one pool at a time: HELLO (run the initializer,
 * answer ID and READY), then DATA (frames appended to one byte stream, each TASK run by
 * the local pool's worker code, mp__wserve_msg, and its RESULT sent at once), until BYE
 * or STOP; then it waits for the next HELLO, until EXIT. It never blocks in MPI: every
 * wait is MPI_Improbe with a backoff (1 us doubling to 1 ms) so an idle rank does not
 * spin a core, and results go out with MPI_Isend, completed later, so two ranks'
 * large messages never wait on each other. Messages that arrive while a task runs are
 * taken at the next probe, between chunks. A second thread sends a heartbeat every
 * MP__MPI_HB s while a pool is served (the master's failure detector for other hosts).
 * Messages of another pool generation than the one being served are dropped. After
 * EXIT the rank answers and waits for FIN, which says whether to finalize MPI: not when
 * a rank was lost under --enable-recovery (MPI_Finalize would wait for it: pool_end.c). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/value.h"
#include "mpi/mpi_internal.h"
#include "mpi/pool_internal.h"
#include "process/core.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct pend {
    MPI_Request req;
    char *buf;
} pend;

typedef struct srv {
    MPI_Comm comm;
    int master;
    unsigned gen;   /* the pool being served; 0: none */
    mp__wserve *ws;
    mp__rx rx;
    pend *q;
    size_t nq, capq;
    bool exit;
    /* heartbeat thread */
    pthread_t hb;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool hb_on, hb_quit;
} srv;

static void idle_wait(unsigned *backoff)
{
    long ns = *backoff >= 10 ? 1000000L : 1000L << *backoff;
    if (*backoff < 10)
        (*backoff)++;
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* Complete what we can of the sends in flight. */
static void progress(srv *s)
{
    size_t k = 0;
    for (size_t i = 0; i < s->nq; i++) {
        int done = 0;
        if (MPI_Test(&s->q[i].req, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS)
            done = 1; /* the master is gone: nothing to wait for */
        if (done)
            free(s->q[i].buf);
        else
            s->q[k++] = s->q[i];
    }
    s->nq = k;
}

static int isend(srv *s, char *buf, size_t len, int kind)
{
    if (s->nq == s->capq) {
        size_t cap = s->capq ? 2 * s->capq : 16;
        pend *q = realloc(s->q, cap * sizeof *q);
        if (!q) {
            free(buf);
            return -ENOMEM;
        }
        s->q = q;
        s->capq = cap;
    }
    int rc = MPI_Isend(buf, (int)len, MPI_BYTE, s->master, MP__MPI_TAG(kind, s->gen), s->comm,
                       &s->q[s->nq].req);
    if (rc != MPI_SUCCESS) {
        free(buf);
        return mp__mpi_error(rc, "MPI_Isend to the pool's master");
    }
    s->q[s->nq++].buf = buf;
    return 0;
}

/* mp__wserve's send: one frame, one message (sent at once: a result held back would
 * die with the rank). */
static int send_frame(void *ctx, const mp__msg_hdr *h, const void *body, const int *fds)
{
    srv *s = ctx;
    (void)fds; /* a result holding handles cannot leave the host: decoding fails there */
    size_t len = sizeof *h + (size_t)h->len;
    char *buf = malloc(len ? len : 1);
    if (!buf)
        return -ENOMEM;
    mp__msg_hdr hh = *h;
    hh.nfds = 0;
    memcpy(buf, &hh, sizeof hh);
    if (h->len)
        memcpy(buf + sizeof hh, body, (size_t)h->len);
    int r = isend(s, buf, len, T_DATA);
    progress(s);
    return r;
}

/* ---- heartbeats ------------------------------------------------------------------ */

static void *hb_main(void *arg)
{
    srv *s = arg;
    pthread_mutex_lock(&s->mu);
    while (!s->hb_quit) {
        if (s->hb_on) {
            unsigned gen = s->gen;
            pthread_mutex_unlock(&s->mu);
            MPI_Send(NULL, 0, MPI_BYTE, s->master, MP__MPI_TAG(T_HB, gen), s->comm);
            pthread_mutex_lock(&s->mu);
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += (long)(MP__MPI_HB * 1e9);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&s->cv, &s->mu, &ts);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void hb_set(srv *s, bool on, unsigned gen)
{
    pthread_mutex_lock(&s->mu);
    s->hb_on = on;
    s->gen = gen;
    pthread_cond_signal(&s->cv);
    pthread_mutex_unlock(&s->mu);
}

/* ---- a pool's start and end -------------------------------------------------------- */

static void end_pool(srv *s)
{
    mp__wserve_free(s->ws);
    s->ws = NULL;
    mp__rx_free(&s->rx);
    hb_set(s, false, 0);
}

static void send_id(srv *s)
{
    char host[256] = "?", ident[256];
    gethostname(host, sizeof host - 1);
    mp__mpi_host_identity(ident, sizeof ident);
    mp_value *v = mp_value_pack("[i s s]", (int)getpid(), host, ident);
    char *enc = NULL;
    size_t len = 0;
    if (v && mp_value_encode(v, &enc, &len, NULL, 0, NULL) == 0)
        isend(s, enc, len, T_ID);
    mp_value_free(v);
}

static void hello(srv *s, const char *buf, size_t len)
{
    mp_value *v = NULL, *loc = NULL, *initargs = NULL;
    int64_t gen = 0;
    int pos = 0;
    double hb = 0;
    if (mp_value_decode(buf, len, NULL, 0, &v) < 0 ||
        mp_value_unpack(v, "[I i o o f]", &gen, &pos, &loc, &initargs, &hb) < 0) {
        mp_value_free(v);
        return; /* not a pool's greeting: the master's relay times out on us */
    }
    if (s->ws)
        end_pool(s);
    hb_set(s, true, (unsigned)gen);
    int rank = 0;
    MPI_Comm_rank(s->comm, &rank);
    char host[200] = "?", *name = NULL;
    gethostname(host, sizeof host - 1);
    if (asprintf(&name, "MPIPoolWorker-%d (rank %d on %s)", pos + 1, rank, host) > 0) {
        free(mp__proc_self.name);
        mp__proc_self.name = name;
    }
    send_id(s);
    s->ws = mp__wserve_new(send_frame, s);
    if (s->ws && mp__wserve_init(s->ws, loc, initargs) < 0) {
        /* INIT_FAIL was sent; the master's pool fails its creation and ends us */
    }
    mp_value_free(v);
}

/* ---- the loop --------------------------------------------------------------------- */

static void take(srv *s, MPI_Message *msg, MPI_Status *st)
{
    int count = 0;
    MPI_Get_count(st, MPI_BYTE, &count);
    int kind = MP__MPI_KIND(st->MPI_TAG);
    unsigned gen = MP__MPI_GEN(st->MPI_TAG);
    char *buf = malloc(count ? (size_t)count : 1);
    if (!buf) {
        char dummy;
        MPI_Mrecv(&dummy, 0, MPI_BYTE, msg, MPI_STATUS_IGNORE);
        return;
    }
    MPI_Mrecv(buf, count, MPI_BYTE, msg, MPI_STATUS_IGNORE);
    if (kind == T_EXIT) {
        s->exit = true;
    } else if (kind == T_HELLO) {
        hello(s, buf, (size_t)count);
    } else if (gen != s->gen || !s->ws) {
        /* a late message of a pool we no longer serve */
    } else if (kind == T_DATA) {
        mp__rx_push(&s->rx, buf, (size_t)count);
    } else if (kind == T_STOP) {
        end_pool(s);
    } else if (kind == T_BYE) {
        /* every result was sent before: the frames are all consumed */
        end_pool(s);
        char *ack = malloc(1);
        if (ack) {
            s->gen = gen;
            isend(s, ack, 0, T_BYE);
            s->gen = 0;
        }
    }
    free(buf);
}

/* After EXIT: the master's FIN; true when it says to leave without MPI_Finalize. */
static bool wait_fin(MPI_Comm comm, int master)
{
    unsigned backoff = 0;
    for (;;) {
        int flag = 0;
        MPI_Message msg;
        MPI_Status st;
        if (MPI_Improbe(master, MP__MPI_TAG(T_FIN, 0), comm, &flag, &msg, &st) != MPI_SUCCESS)
            return false; /* the master is unreachable */
        if (!flag) {
            idle_wait(&backoff);
            continue;
        }
        char b[1] = {0};
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        MPI_Mrecv(b, count > 0 ? 1 : 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        return count > 0 && b[0] == 1;
    }
}

/* Run the next whole frame, if one is buffered: true when one ran. */
static bool run_one(srv *s)
{
    if (!s->ws)
        return false;
    mp__msg m = {0};
    int got = mp__rx_next(&s->rx, &m);
    if (got <= 0)
        return false;
    mp__wserve_msg(s->ws, &m);
    mp__msg_clear(&m);
    return true;
}

int mp__mpi_serve(MPI_Comm comm, int master)
{
    srv s = {.comm = comm, .master = master};
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    pthread_mutex_init(&s.mu, NULL);
    pthread_cond_init(&s.cv, NULL);
    bool hb = pthread_create(&s.hb, NULL, hb_main, &s) == 0;
    unsigned backoff = 0;
    while (!s.exit) {
        progress(&s);
        int flag = 0;
        MPI_Message msg;
        MPI_Status st;
        if (MPI_Improbe(master, MPI_ANY_TAG, comm, &flag, &msg, &st) != MPI_SUCCESS)
            break; /* the master is unreachable */
        if (flag) {
            take(&s, &msg, &st);
            backoff = 0;
        } else if (run_one(&s)) {
            backoff = 0;
        } else {
            idle_wait(&backoff);
        }
    }
    end_pool(&s);
    pthread_mutex_lock(&s.mu);
    s.hb_quit = true;
    pthread_cond_signal(&s.cv);
    pthread_mutex_unlock(&s.mu);
    if (hb)
        pthread_join(s.hb, NULL);
    for (size_t i = 0; i < s.nq; i++) /* finish the last sends (the BYE answer) */
        if (MPI_Wait(&s.q[i].req, MPI_STATUS_IGNORE) == MPI_SUCCESS)
            free(s.q[i].buf);
    free(s.q);
    /* The last message: the master takes every message up to this one before it lets
     * the communicator go (a message left unreceived on a disconnected communicator
     * can break Open MPI's next spawn). */
    bool leave = false;
    if (s.exit) {
        MPI_Send(NULL, 0, MPI_BYTE, master, MP__MPI_TAG(T_EXIT, 0), comm);
        leave = wait_fin(comm, master);
    }
    pthread_mutex_destroy(&s.mu);
    pthread_cond_destroy(&s.cv);
    return leave;
}
