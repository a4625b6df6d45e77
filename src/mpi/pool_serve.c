/* A worker rank of the Pool on MPI: mp_mpi_pool_serve_if_worker and the serving loop.
 *
 * DESIGN: the rank's main thread serves one pool at a time: HELLO (run the initializer,
 * answer ID and READY), then DATA or DATAC batches (frames received straight into one
 * byte stream, each TASK run by the local pool's worker code, mp__wserve_msg), until BYE
 * or STOP; then it waits for the next HELLO, until EXIT. A RESULT of a DATA batch is
 * sent at once (the master fails only the chunk a dead rank was running); the results of
 * a DATAC batch (quick chunks: the master fails all of it that is not answered when the
 * rank dies) are held and sent together at the batch's end, at 64 KiB, or once the
 * first is 1 ms old (looked at between chunks); a large result's block (64 KiB+: a
 * map's) is a kept one (src/pool/bigbuf.c: no fresh pages per result), given back
 * once sent. Each result message says whether the
 * last chunk was quick (DATAC) or not (DATA): the master coalesces the next batches or
 * stops. It never blocks in MPI: every wait is MPI_Improbe with a backoff (1 us
 * doubling to 16 us within 2 ms of a quick chunk, else to 256 us, to 1 ms after 0.1 s
 * without work) so an idle rank does not spin a core, and results go out with
 * MPI_Isend, completed later (MPI_Testsome), so two ranks' large messages never wait on
 * each other. Buffered frames run in bursts (64, or 200 us) between probes: under
 * oversubscription Open MPI yields the processor in every call that finds nothing, not
 * to be paid per quick task. Messages that arrive while a task runs are taken at the
 * next probe, between chunks (a STOP after a burst). A second thread sends a heartbeat every
 * MP__MPI_HB s while a pool is served (the master's failure detector for other hosts).
 * Messages of another pool generation than the one being served are dropped. After
 * EXIT the rank answers and waits for FIN, which says whether to finalize MPI: not when
 * a rank was lost under --enable-recovery (MPI_Finalize would wait for it: pool_end.c). */
#define _GNU_SOURCE
#include "internal/buf.h"
#include "internal/common.h"
#include "internal/value.h"
#include "mpi/mpi_internal.h"
#include "mpi/pool_internal.h"
#include "process/core.h"

#include <malloc.h>
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

#define HOLD_BYTES 65536 /* results held back in a coalesced batch: at most this much */
#define HOLD_AGE 0.001   /* s: or the first of them this old (looked at between tasks) */
#define QUICK_CHUNK 100e-6 /* s: a chunk that ran this fast asks for coalesced batches */
#define BURST_FRAMES 64    /* frames run between two probes for messages, at most, */
#define BURST_TIME 200e-6  /* s: or until this long has passed */
#define QUICK_IDLE 0.002   /* s: this soon after work, probe at least every 16 us */

/* A batch (one DATA or DATAC message): its frames not run yet. */
typedef struct sbatch {
    size_t left;
    bool coal;
} sbatch;

typedef struct srv {
    MPI_Comm comm;
    int master;
    unsigned gen;   /* the pool being served; 0: none */
    mp__wserve *ws;
    mp__rx rx;
    pend *q;
    MPI_Request *rq; /* scratch for progress, capq long */
    int *ri;
    size_t nq, capq;
    bool exit;
    /* the batches received, oldest first, and the results held back (DATAC) */
    sbatch *bq;
    size_t bq_head, bq_n, bq_cap;
    mp__buf out;
    double out_since;
    bool quick; /* the last chunk ran in under QUICK_CHUNK */
    /* heartbeat thread */
    pthread_t hb;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool hb_on, hb_quit;
} srv;

/* Wait before the next probe: 1 us doubling to 16 us within 2 ms of the last message or
 * chunk when that chunk was quick (a stream of quick tasks: the next batch is on its
 * way), to 256 us within 0.1 s (a map's next chunks come soon), then to 1 ms. */
static void idle_wait(unsigned *backoff, double since, bool quick)
{
    double idle = mp__now() - since;
    unsigned cap = quick && idle < QUICK_IDLE ? 4 : idle < 0.1 ? 8 : 10;
    *backoff = *backoff > cap ? cap : *backoff;
    long ns = 1000L << *backoff;
    if (*backoff < cap)
        (*backoff)++;
    struct timespec ts = {0, ns};
    nanosleep(&ts, NULL);
}

/* Complete what we can of the sends in flight: one MPI_Testsome (each MPI call that
 * finds nothing to do may yield the processor when Open MPI runs oversubscribed). */
static void progress(srv *s)
{
    if (!s->nq)
        return;
    bool failed = mp__mpi_testsome(s->rq, s->ri, s->nq, &s->q[0].req, sizeof *s->q) < 0;
    size_t k = 0;
    for (size_t i = 0; i < s->nq; i++) {
        if (failed || s->q[i].req == MPI_REQUEST_NULL)
            mp__big_free(s->q[i].buf); /* sent, or the master is gone: kept if large */
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
        MPI_Request *rq = q ? realloc(s->rq, cap * sizeof *rq) : NULL;
        int *ri = rq ? realloc(s->ri, cap * sizeof *ri) : NULL;
        if (q)
            s->q = q;
        if (rq)
            s->rq = rq;
        if (!ri) {
            free(buf);
            return -ENOMEM;
        }
        s->ri = ri;
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

/* Send the results held, in one message. */
static int flush_out(srv *s)
{
    if (!s->out.len)
        return 0;
    size_t len = 0;
    char *buf = mp__buf_take(&s->out, &len);
    if (!buf)
        return mp_last_error_code();
    int r = isend(s, buf, len, s->quick ? T_DATAC : T_DATA);
    progress(s);
    return r;
}

/* mp__wserve's send: the frame joins the results held; frame_done sends them when the
 * batch allows no more holding (a plain DATA batch: at once, since a result held back
 * would die with the rank and the master fails only the chunk it was running). */
static int send_frame(void *ctx, const mp__msg_hdr *h, const void *body, const int *fds)
{
    srv *s = ctx;
    (void)fds; /* a result holding handles cannot leave the host: decoding fails there */
    mp__msg_hdr hh = *h;
    hh.nfds = 0;
    if (!s->out.len)
        s->out_since = mp__now();
    size_t need = sizeof hh + (size_t)h->len;
    if (!s->out.data && need >= MP__HAND_BYTES) { /* a kept block: no fresh pages per result */
        char *b = mp__big_alloc(need + 1);
        if (b) {
            b[0] = '\0';
            s->out = (mp__buf){.data = b, .cap = malloc_usable_size(b)};
        }
    }
    if (mp__buf_reserve(&s->out, sizeof hh + (size_t)h->len) < 0 || mp__buf_append(&s->out, &hh, sizeof hh) < 0 ||
        (h->len && mp__buf_append(&s->out, body, (size_t)h->len) < 0)) {
        mp__buf_free(&s->out); /* its frames are lost: the master sees a protocol error */
        return -ENOMEM;
    }
    return 0;
}

/* A batch arrived with nframes frames. */
static void batch_in(srv *s, size_t nframes, bool coal)
{
    if (s->bq_head + s->bq_n == s->bq_cap && s->bq_head) {
        memmove(s->bq, s->bq + s->bq_head, s->bq_n * sizeof *s->bq);
        s->bq_head = 0;
    }
    if (s->bq_head + s->bq_n == s->bq_cap) {
        size_t cap = s->bq_cap ? 2 * s->bq_cap : 16;
        sbatch *q = realloc(s->bq, cap * sizeof *q);
        if (!q)
            coal = false; /* not tracked: its results go out one by one */
        else {
            s->bq = q;
            s->bq_cap = cap;
        }
    }
    if (coal && nframes > 1 && s->bq_head + s->bq_n < s->bq_cap)
        s->bq[s->bq_head + s->bq_n++] = (sbatch){.left = nframes, .coal = true};
    else if (s->bq_head + s->bq_n < s->bq_cap)
        s->bq[s->bq_head + s->bq_n++] = (sbatch){.left = nframes, .coal = false};
}

/* A frame was run: send the results held unless its batch is coalesced, goes on, and
 * what is held is small and young. */
static void frame_done(srv *s, double now)
{
    bool hold = false;
    if (s->bq_n) {
        sbatch *b = &s->bq[s->bq_head];
        hold = b->coal && b->left > 1;
        if (--b->left == 0) {
            s->bq_head++;
            s->bq_n--;
        }
    }
    if (!hold || s->out.len >= HOLD_BYTES || now - s->out_since >= HOLD_AGE)
        flush_out(s);
}

static size_t count_frames(const char *b, size_t n)
{
    size_t k = 0, off = 0;
    while (n - off >= sizeof(mp__msg_hdr)) {
        mp__msg_hdr h;
        memcpy(&h, b + off, sizeof h);
        k++;
        if (n - off - sizeof h < h.len)
            break;
        off += sizeof h + (size_t)h.len;
    }
    return k;
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
    mp__buf_free(&s->out);
    s->bq_head = s->bq_n = 0;
    mp__wserve_free(s->ws);
    s->ws = NULL;
    mp__rx_free(&s->rx);
    mp__big_trim();
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
    flush_out(s); /* READY or INIT_FAIL */
    mp_value_free(v);
}

/* ---- the loop --------------------------------------------------------------------- */

static void take(srv *s, MPI_Message *msg, MPI_Status *st)
{
    int count = 0;
    MPI_Get_count(st, MPI_BYTE, &count);
    int kind = MP__MPI_KIND(st->MPI_TAG);
    unsigned gen = MP__MPI_GEN(st->MPI_TAG);
    if ((kind == T_DATA || kind == T_DATAC) && gen == s->gen && s->ws && count > 0) {
        /* frames: received straight into the byte stream they join */
        char *tail = mp__rx_tail(&s->rx, (size_t)count);
        if (tail) {
            MPI_Mrecv(tail, count, MPI_BYTE, msg, MPI_STATUS_IGNORE);
            batch_in(s, count_frames(tail, (size_t)count), kind == T_DATAC);
            mp__rx_commit(&s->rx, (size_t)count);
            return;
        }
    }
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
    } else if (kind == T_DATA || kind == T_DATAC) {
        if (mp__rx_push(&s->rx, buf, (size_t)count) == 0)
            batch_in(s, count_frames(buf, (size_t)count), kind == T_DATAC);
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
            idle_wait(&backoff, 0, false);
            continue;
        }
        char b[1] = {0};
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        MPI_Mrecv(b, count > 0 ? 1 : 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        return count > 0 && b[0] == 1;
    }
}

/* Run the whole frames buffered, a burst of them (each probe for messages that finds
 * none may yield the processor: not one per quick task): true when one ran. */
static bool run_some(srv *s)
{
    double start = 0, t1 = 0;
    for (int k = 0; k < BURST_FRAMES && s->ws && t1 - start < BURST_TIME; k++) {
        mp__msg m = {0};
        if (mp__rx_next(&s->rx, &m) <= 0)
            return k > 0;
        double t0 = k ? t1 : mp__now(); /* the last one's end: one clock read per frame */
        start = k ? start : t0;
        mp__wserve_msg(s->ws, &m);
        mp__msg_clear(&m);
        t1 = mp__now();
        s->quick = t1 - t0 < QUICK_CHUNK;
        frame_done(s, t1);
    }
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
    double active = mp__now(); /* the last message or chunk */
    while (!s.exit) {
        progress(&s);
        int flag = 0;
        MPI_Message msg;
        MPI_Status st;
        if (MPI_Improbe(master, MPI_ANY_TAG, comm, &flag, &msg, &st) != MPI_SUCCESS)
            break; /* the master is unreachable */
        if (flag || run_some(&s)) {
            if (flag)
                take(&s, &msg, &st);
            backoff = 0;
            active = 0;
        } else {
            if (active == 0)
                active = mp__now();
            idle_wait(&backoff, active, s.quick);
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
    free(s.rq);
    free(s.ri);
    free(s.bq);
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
