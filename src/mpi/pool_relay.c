/* The master's relay of a Pool on MPI: the pool's result thread talks to each worker
 * rank through a local socket (the local pool's framed messages, unchanged); this thread
 * carries those bytes to and from the ranks as MPI messages and watches the ranks.
 *
 * DESIGN: one thread per pool. Its loop: ppoll over a wake eventfd, the relay's end of
 * each rank's socket and the pidfd of each rank on this host, with a timeout that is 0
 * after any activity and backs off while chunks are out (2 us doubling to 16 us within
 * 2 ms of the last activity while a rank says its chunks are quick, else to 256 us), and
 * 50 ms when nothing is out (then only the socket or the wake fd can bring work); then
 * every MPI message that arrived (MPI_Improbe/MPI_Mrecv on ANY_SOURCE), then the sends in
 * flight (MPI_Isend, tested with one MPI_Testsome: never a blocking send, so a rank that
 * is itself sending a large result cannot deadlock with us), then the failure detector.
 * Whole frames read from a socket go as one message (a batch, DATA), or, while the rank
 * says its chunks are quick (it tags its results DATAC when the last chunk ran in under
 * 100 us), as coalesced batches of at most 64 tasks (DATAC) whose results the rank may
 * hold and send together. Each link keeps the batches in flight (tasks not answered
 * yet, coalesced or not): when the rank dies, mp__relay_held tells the pool's loop how
 * many chunks at the head of its queue fail (the rest of a coalesced batch, whose
 * results may have died with it; else the one chunk it was running), so no task is run
 * twice. Large messages (MP__HAND_BYTES, 64 KiB+: a map's chunks and results) do not
 * cross the socket: the result thread hands a chunk's block over by pointer (give: the
 * link's `given` queue, the block's bytes shared with the pool's chunk, which goes to
 * another rank if this one dies) and writes a MSG_HANDED notice in its place in the
 * stream, at which this thread sends the block as it is; a large message from a rank
 * goes into the link's `taken` queue, a notice in its place on the socket, and the
 * result thread takes it there (take). The notices keep the order of large and small
 * messages on each link exactly as through the socket; no byte is copied on the way
 * (it was twice in the kernel each way: 3-4 ms per 8 MB here); the blocks received are
 * kept ones (src/pool/bigbuf.c), given back by the result thread. What is handed and never
 * named (the pool closed its end first) or never taken is let go of when the socket
 * ends or at mp__relay_free; a block sent to a rank that died is kept, with MPI's
 * request, for the life of the process (orphan). Other large reads from the socket
 * (64 KiB+ of frames) are sent in the buffer they were read in. A rank's messages are
 * written to its socket with a blocking write (the result thread always reads). A rank is declared
 * dead when its pidfd fires (after a short grace in which its last messages are still
 * taken, so results it sent before dying are not lost), or when nothing came from it for
 * hb_limit seconds while it held work or was starting; then its sentinel eventfd is
 * written, one line goes to stderr (under a plain mpiexec Open MPI ends the job soon
 * after), and the pool's loop fails the chunks it held (mp__relay_held); a rank on this
 * host declared lost for silence (stopped, frozen) is then killed through its pidfd, as
 * the line says: else its process would keep the job alive. mp__relay_free hands the
 * pidfds to pool_backend.c, which keeps them for the program's end.
 * A second thread, the guard, declares a rank on this host dead when its pidfd has been
 * readable for GUARD_LIMIT and the relay has not: the relay can be stuck inside an MPI
 * call for a second or more while Open MPI handles the lost connection (guard_main).
 * Shared state: links' state, batches in flight and the handed queues under r->mu (the
 * result thread starts, stops and reaps links, asks for the count held, gives and
 * takes); everything else belongs to the relay thread.
 *
 * Where an apply's time goes on the master (bench_mpi's 10,000 apply_async + get, 2
 * ranks on one 2-core host, perf and strace on rank 0; Dec 3): an MPI message each way
 * carries 53-59 tasks, a round of this loop handles 35-65, so MPI and this thread cost
 * little per task (0.03 socket reads and writes, 0.02 ppoll). The master's CPU time
 * was 2.2-4.1 us per task (threads: submitter 36%, result thread 49%, relay 15%), most
 * of it in the pool, not here: the result thread woke the waiter (futex) once per task
 * (1.1 futex calls per task; 45% of its time), freed chunks the submitter had allocated
 * (glibc then served each new one slowly from its arena: half the submitter's time),
 * and wrote runs of 64 small tasks with one sendmsg of 64 pieces (16%). Those fixed
 * (pool/loop.c, pool/submit.c): 0.75-1.4 us per task, 0.03 futex calls; what is left is
 * spread over encoding and allocating a job per call (submitter), decoding and
 * completing results (result thread), and the socket hop both ways (about a fifth of
 * the master's time: this thread's reads, writes, ppoll and Open MPI's yield in probes
 * that find nothing, and the result thread's side of the socket). Next: the result
 * thread driving MPI itself for this backend (no socket, no second thread). */
#define _GNU_SOURCE
#include "internal/buf.h"
#include "internal/common.h"
#include "mpi/mpi_internal.h"
#include "mpi/pool_internal.h"

#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DYING_GRACE 0.05 /* s: messages of a rank whose pid ended are still taken */
#define GUARD_TICK 0.02   /* s: how often the guard thread looks at the ranks' pidfds */
#define GUARD_LIMIT 0.2   /* s: a pid ended this long ago and still not declared: the guard does */
#define BATCH_TASKS 64    /* tasks at most in a coalesced batch */
#define STEAL_BYTES 65536 /* frames this large go to MPI in the buffer they were read in */
#define QUICK_IDLE 0.002  /* s: this soon after activity, look at least every 16 us */

enum lstate { L_FREE, L_STARTING, L_SERVING, L_BYE, L_DONE, L_DEAD };

typedef struct pend {
    MPI_Request req;
    char *buf;     /* the block to free once sent, or */
    mp__txbuf *tb; /* the pool's block to let go of (handed by pointer) */
    int link;
} pend;

/* A large message handed over by pointer: from the pool (tb), sent at its MSG_HANDED
 * notice in the socket's stream; or to the pool (buf, len), taken at the notice written
 * in its place. */
typedef struct handed {
    struct handed *next;
    mp__txbuf *tb;
    char *buf;
    size_t len;
} handed;

typedef struct hqueue {
    handed *head, *tail;
} hqueue;

/* A batch sent to a rank: its tasks whose results have not come back yet. */
typedef struct batch {
    long left;
    bool coal; /* coalesced (T_DATAC): the rank sends its results together */
} batch;

typedef struct rlink {
    int rank;
    enum lstate st;
    int sock;     /* the relay's end; -1 when closed */
    int sentinel; /* eventfd we write; the pool holds a dup */
    int pidfd;
    pid_t pid;
    char host[128];
    bool eof, stop_req, reaped;
    double last_seen, dying_since;
    double guard_seen; /* the guard's: when it first found the pidfd readable (under mu) */
    long out; /* TASK frames sent whose RESULT has not come back */
    /* the batches in flight, oldest first (under mu: mp__relay_held reads them) */
    batch *bq;
    size_t bq_head, bq_n, bq_cap;
    bool quick; /* the rank's last chunk was quick (it says so): coalesce its batches */
    mp__rx rx;
    mp__buf back; /* frames from the rank not yet written to the socket (one write per round) */
    hqueue given, taken; /* handed messages (under mu): from the pool; to the pool */
    char how[192];
} rlink;

struct mp__relay {
    MPI_Comm comm;
    unsigned gen;
    double hb_limit;
    int n;
    rlink *l;
    int *by_rank; /* rank -> rlink index (-1) */
    int nranks;
    int wake;     /* eventfd */
    pthread_mutex_t mu;
    pthread_t th, guard;
    bool th_started, guard_started;
    pthread_cond_t guard_cv; /* under mu: wakes the guard to quit */
    _Atomic int quit;
    pend *q;
    MPI_Request *rq; /* scratch for progress, capq long */
    int *ri;
    size_t nq, capq;
    char ident[256];
};

static void wake(mp__relay *r)
{
    uint64_t one = 1;
    ssize_t w = write(r->wake, &one, sizeof one);
    (void)w;
}

static void signal_sentinel(rlink *l)
{
    uint64_t one = 1;
    ssize_t w = write(l->sentinel, &one, sizeof one);
    (void)w;
}

/* ---- sending ----------------------------------------------------------------------- */

/* Buffers of sends to a rank that died: MPI may still hold them (a request freed with
 * MPI_Request_free is not known to be done), so they are kept, reachable, for the life
 * of the process. Small: at most the chunks in flight to ranks that died. */
static struct orphan {
    struct orphan *next;
} *g_orphans;
static pthread_mutex_t g_orphans_mu = PTHREAD_MUTEX_INITIALIZER;

static void orphan(MPI_Request *req, char *buf, mp__txbuf *tb)
{
    MPI_Request_free(req);
    /* the list's link lives in a small block of its own: buf stays untouched (a handed
     * block keeps the reference we hold: the pool's chunk may still be sent elsewhere) */
    void *keep = tb ? (void *)tb : (void *)buf;
    struct orphan *o = malloc(sizeof *o + sizeof keep);
    if (!o)
        return; /* lost: a leak, not a fault */
    memcpy(o + 1, &keep, sizeof keep);
    pthread_mutex_lock(&g_orphans_mu);
    o->next = g_orphans;
    g_orphans = o;
    pthread_mutex_unlock(&g_orphans_mu);
}

/* Complete what we can of the sends in flight (one MPI_Testsome: each MPI call that
 * finds nothing to do may yield the processor when Open MPI runs oversubscribed). */
static void progress(mp__relay *r)
{
    size_t k = 0;
    for (size_t i = 0; i < r->nq; i++) {
        rlink *l = &r->l[r->q[i].link];
        if (l->st == L_DEAD)
            orphan(&r->q[i].req, r->q[i].buf, r->q[i].tb); /* never completes */
        else
            r->q[k++] = r->q[i];
    }
    r->nq = k;
    if (!k)
        return;
    bool failed = mp__mpi_testsome(r->rq, r->ri, r->nq, &r->q[0].req, sizeof *r->q) < 0;
    k = 0;
    for (size_t i = 0; i < r->nq; i++) {
        if (failed || r->q[i].req == MPI_REQUEST_NULL) {
            free(r->q[i].buf);
            mp__txbuf_unref(r->q[i].tb);
        } else
            r->q[k++] = r->q[i];
    }
    r->nq = k;
}

/* Send len bytes at data, in the block buf or the pool's tb (adopted: freed, or our
 * reference let go of, once sent), to rlink i's rank. */
static int send_at(mp__relay *r, int i, int kind, char *buf, mp__txbuf *tb, const char *data,
                   size_t len)
{
    if (r->nq == r->capq) {
        size_t cap = r->capq ? 2 * r->capq : 32;
        pend *q = realloc(r->q, cap * sizeof *q);
        MPI_Request *rq = q ? realloc(r->rq, cap * sizeof *rq) : NULL;
        int *ri = rq ? realloc(r->ri, cap * sizeof *ri) : NULL;
        if (q)
            r->q = q;
        if (rq)
            r->rq = rq;
        if (!ri) {
            free(buf);
            mp__txbuf_unref(tb);
            return -ENOMEM;
        }
        r->ri = ri;
        r->capq = cap;
    }
    int rc = MPI_Isend(data, (int)len, MPI_BYTE, r->l[i].rank, MP__MPI_TAG(kind, r->gen),
                       r->comm, &r->q[r->nq].req);
    if (rc != MPI_SUCCESS) {
        free(buf);
        mp__txbuf_unref(tb);
        return mp__mpi_error(rc, "MPI_Isend to a pool rank");
    }
    r->q[r->nq].buf = buf;
    r->q[r->nq].tb = tb;
    r->q[r->nq++].link = i;
    return 0;
}

static int send_to(mp__relay *r, int i, int kind, char *buf, size_t len)
{
    return send_at(r, i, kind, buf, NULL, buf, len);
}

/* ---- messages handed over by pointer ------------------------------------------------ */

static int hq_push(mp__relay *r, hqueue *q, mp__txbuf *tb, char *buf, size_t len)
{
    handed *h = malloc(sizeof *h);
    if (!h)
        return -ENOMEM;
    *h = (handed){.tb = tb, .buf = buf, .len = len};
    pthread_mutex_lock(&r->mu);
    if (q->tail)
        q->tail->next = h;
    else
        q->head = h;
    q->tail = h;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

/* The oldest (NULL: none); the caller frees the node. */
static handed *hq_pop(mp__relay *r, hqueue *q)
{
    pthread_mutex_lock(&r->mu);
    handed *h = q->head;
    if (h) {
        q->head = h->next;
        if (!q->head)
            q->tail = NULL;
    }
    pthread_mutex_unlock(&r->mu);
    return h;
}

/* Let go of what is left: nobody will send it or take it (the pool closed its end of
 * the socket: no notice comes; the relay's end). */
static void hq_drop(mp__relay *r, hqueue *q)
{
    pthread_mutex_lock(&r->mu);
    handed *h = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&r->mu);
    while (h) {
        handed *n = h->next;
        mp__txbuf_unref(h->tb);
        free(h->buf);
        free(h);
        h = n;
    }
}

/* ---- batches in flight ------------------------------------------------------------ */

static void batch_push(mp__relay *r, rlink *l, long tasks, bool coal)
{
    if (tasks <= 0)
        return;
    pthread_mutex_lock(&r->mu);
    if (l->bq_head + l->bq_n == l->bq_cap && l->bq_head) {
        memmove(l->bq, l->bq + l->bq_head, l->bq_n * sizeof *l->bq);
        l->bq_head = 0;
    }
    if (l->bq_head + l->bq_n == l->bq_cap) {
        size_t cap = l->bq_cap ? 2 * l->bq_cap : 16;
        batch *q = realloc(l->bq, cap * sizeof *q);
        if (q) {
            l->bq = q;
            l->bq_cap = cap;
        }
    }
    if (l->bq_head + l->bq_n < l->bq_cap)
        l->bq[l->bq_head + l->bq_n++] = (batch){.left = tasks, .coal = coal};
    pthread_mutex_unlock(&r->mu);
}

/* k results came back: they answer the oldest batches' tasks, in order. */
static void batch_answered(mp__relay *r, rlink *l, long k)
{
    pthread_mutex_lock(&r->mu);
    while (k > 0 && l->bq_n) {
        batch *b = &l->bq[l->bq_head];
        long t = k < b->left ? k : b->left;
        b->left -= t;
        k -= t;
        if (b->left == 0) {
            l->bq_head++;
            l->bq_n--;
        }
    }
    pthread_mutex_unlock(&r->mu);
}

/* ---- deaths ------------------------------------------------------------------------- */

/* Rank i is lost: it died (its pidfd fired), or it was silent (kill: end it through its
 * pidfd, when it is on this host, once the line is out and the pool told: a stopped or
 * hung process would keep the job alive, under --enable-recovery for ever). */
static void declare_dead(mp__relay *r, int i, const char *how, bool kill)
{
    rlink *l = &r->l[i];
    pthread_mutex_lock(&r->mu);
    if (l->st == L_DEAD || l->st == L_DONE || l->st == L_FREE) {
        pthread_mutex_unlock(&r->mu);
        return;
    }
    l->st = L_DEAD;
    snprintf(l->how, sizeof l->how, "%s", how);
    bool reaped = l->reaped;
    kill = kill && l->pidfd >= 0;
    pthread_mutex_unlock(&r->mu);
    /* (l->out belongs to the relay thread: the guard thread, which may call this while
     * the relay is stuck inside MPI, prints whenever the pool still holds the link) */
    bool relay = pthread_equal(pthread_self(), r->th);
    if ((relay && l->out > 0) || !reaped)
        fprintf(stderr,
                "multiproc: MPI pool: worker rank %d (pid %d on %s) %s; the tasks it was "
                "running fail with MP_EWORKERDIED%s\n",
                l->rank, (int)l->pid, l->host, how,
                kill ? "; it is on this host: killed" : "");
    signal_sentinel(l);
    if (kill)
        mp__pidfd_send_signal(l->pidfd, SIGKILL); /* no pid-reuse race */
}

static void watch(mp__relay *r)
{
    double now = mp__now();
    for (int i = 0; i < r->n; i++) {
        rlink *l = &r->l[i];
        /* The pool's thread sets a link up (mp__relay_start) under mu: read it under mu. */
        pthread_mutex_lock(&r->mu);
        bool live = l->st == L_STARTING || l->st == L_SERVING || l->st == L_BYE;
        bool dying = live && l->dying_since > 0 && now - l->dying_since > DYING_GRACE;
        bool waiting = l->st != L_SERVING || l->out > 0;
        bool silent = live && l->dying_since == 0 && r->hb_limit > 0 && waiting &&
                      now - l->last_seen > r->hb_limit;
        pthread_mutex_unlock(&r->mu);
        if (dying) {
            declare_dead(r, i, "died (its process ended)", false);
        } else if (silent) {
            char how[128];
            snprintf(how, sizeof how, "stopped answering (nothing heard for %g s)", r->hb_limit);
            declare_dead(r, i, how, true);
        }
    }
}

/* ---- from the pool (sockets) to the ranks ------------------------------------------ */

/* The length of the whole frames at the start of rx, up to max tasks (and how many are
 * tasks: frames that a result answers). */
static size_t whole_frames(const mp__rx *rx, long max, long *tasks)
{
    size_t off = rx->off, end = rx->b.len;
    while (end - off >= sizeof(mp__msg_hdr) && *tasks < max) {
        mp__msg_hdr h;
        memcpy(&h, rx->b.data + off, sizeof h);
        if (end - off - sizeof h < h.len || MSG_TYPE(h.type) == MSG_HANDED)
            break;
        if (MSG_TYPE(h.type) == MSG_TASK || MSG_TYPE(h.type) == MSG_ARRAY)
            (*tasks)++;
        off += sizeof h + (size_t)h.len;
    }
    return off - rx->off;
}

/* The frames of a handed block that a result answers. */
static long count_tasks(const char *b, size_t n)
{
    long k = 0;
    size_t off = 0;
    while (n - off >= sizeof(mp__msg_hdr)) {
        mp__msg_hdr h;
        memcpy(&h, b + off, sizeof h);
        if (MSG_TYPE(h.type) == MSG_TASK || MSG_TYPE(h.type) == MSG_ARRAY)
            k++;
        if (n - off - sizeof h < h.len)
            break;
        off += sizeof h + (size_t)h.len;
    }
    return k;
}

/* A MSG_HANDED notice at the head of what was read: the message the pool handed over
 * in its place goes now, as a batch of its own, from the pool's block (no copy). */
static bool handed_to_rank(mp__relay *r, int i)
{
    rlink *l = &r->l[i];
    mp__msg_hdr h;
    if (l->rx.b.len - l->rx.off < sizeof h)
        return false;
    memcpy(&h, l->rx.b.data + l->rx.off, sizeof h);
    if (MSG_TYPE(h.type) != MSG_HANDED)
        return false;
    l->rx.off += sizeof h + (h.len <= l->rx.b.len - l->rx.off - sizeof h ? (size_t)h.len : 0);
    handed *m = hq_pop(r, &l->given);
    if (!m)
        return true; /* (never: the pool hands the block over before the notice) */
    long tasks = count_tasks(m->tb->data, m->tb->len);
    pthread_mutex_lock(&r->mu); /* the guard thread may declare the rank dead */
    bool gone = l->st == L_DEAD || l->st == L_DONE;
    pthread_mutex_unlock(&r->mu);
    if (gone)
        mp__txbuf_unref(m->tb);
    else if (send_at(r, i, T_DATA, NULL, m->tb, m->tb->data, m->tb->len) == 0) {
        l->out += tasks;
        batch_push(r, l, tasks, false);
    }
    free(m);
    return true;
}

/* Send the whole frames read from the pool's socket: one message (T_DATA), or, when the
 * rank's tasks are quick, batches of up to BATCH_TASKS tasks (T_DATAC) whose results the
 * rank sends back together; at a MSG_HANDED notice, the message handed over. */
static void to_rank(mp__relay *r, int i)
{
    rlink *l = &r->l[i];
    bool quick = l->quick;
    while (l->rx.off < l->rx.b.len) {
        if (handed_to_rank(r, i))
            continue;
        long tasks = 0;
        size_t n = whole_frames(&l->rx, quick ? BATCH_TASKS : LONG_MAX, &tasks);
        if (!n)
            return;
        bool coal = quick && tasks > 1;
        if (l->st == L_DEAD || l->st == L_DONE) {
            l->rx.off += n;
            continue;
        }
        int kind = coal ? T_DATAC : T_DATA, rc = -ENOMEM;
        if (n >= STEAL_BYTES && l->rx.off + n == l->rx.b.len) {
            /* all that was read, and large (a map's chunks): the reading buffer itself
             * goes, rather than a copy; the next read takes a new one */
            char *base = l->rx.b.data;
            size_t off = l->rx.off;
            memset(&l->rx.b, 0, sizeof l->rx.b);
            l->rx.off = 0;
            rc = send_at(r, i, kind, base, NULL, base + off, n);
        } else {
            char *buf = malloc(n);
            if (buf) {
                memcpy(buf, l->rx.b.data + l->rx.off, n);
                rc = send_to(r, i, kind, buf, n);
            }
            l->rx.off += n;
        }
        if (rc == 0) {
            l->out += tasks;
            batch_push(r, l, tasks, coal);
        }
    }
}

static bool from_pool(mp__relay *r, int i)
{
    rlink *l = &r->l[i];
    bool any = false;
    for (int rounds = 0; rounds < 16; rounds++) {
        int f = mp__rx_fill(&l->rx, l->sock, true);
        if (f == 0 || (f < 0 && f != -EAGAIN)) {
            l->eof = true;
            break;
        }
        if (f == -EAGAIN)
            break;
        any = true;
        if (l->rx.short_read)
            break; /* most likely drained: ppoll says if more came (a recvmsg saved) */
    }
    to_rank(r, i);
    if (l->eof) /* the pool writes no more notices: what it handed over and never named goes */
        hq_drop(r, &l->given);
    if (l->eof && l->st == L_SERVING) {
        /* the pool closed its side: it is done with this rank */
        char *b = malloc(1);
        if (b && send_to(r, i, T_BYE, b, 0) == 0) {
            pthread_mutex_lock(&r->mu);
            l->st = L_BYE;
            pthread_mutex_unlock(&r->mu);
            l->last_seen = mp__now();
        }
    }
    return any;
}

/* ---- from the ranks to the pool ---------------------------------------------------- */

static void write_all(rlink *l, const char *b, size_t n)
{
    while (n && l->sock >= 0) {
        ssize_t w = send(l->sock, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return; /* the pool closed its end: nobody wants these */
        b += w;
        n -= (size_t)w;
    }
}

static long count_results(const char *b, size_t n)
{
    long k = 0;
    size_t off = 0;
    while (n - off >= sizeof(mp__msg_hdr)) {
        mp__msg_hdr h;
        memcpy(&h, b + off, sizeof h);
        if (MSG_TYPE(h.type) == MSG_RESULT)
            k++;
        if (n - off - sizeof h < h.len)
            break;
        off += sizeof h + (size_t)h.len;
    }
    return k;
}

static void got_id(mp__relay *r, rlink *l, const char *b, size_t n)
{
    mp_value *v = NULL;
    int pid = 0;
    const char *host = NULL, *ident = NULL;
    if (mp_value_decode(b, n, NULL, 0, &v) < 0 || mp_value_unpack(v, "[i s s]", &pid, &host, &ident) < 0) {
        mp_value_free(v);
        return;
    }
    pthread_mutex_lock(&r->mu); /* the guard thread reads pidfd (and then pid, host) */
    l->pid = pid;
    snprintf(l->host, sizeof l->host, "%s", host);
    if (strcmp(ident, r->ident) == 0 && l->pidfd < 0)
        l->pidfd = mp__pidfd_open(pid); /* same kernel, pid namespace and name */
    pthread_mutex_unlock(&r->mu);
    mp_value_free(v);
}

static void flush_back(rlink *l)
{
    if (l->back.len)
        write_all(l, l->back.data, l->back.len);
    l->back.len = 0;
}

/* A large message from the rank (a map's results) goes to the pool by pointer: a notice
 * in its place in the socket's stream, after the frames before it, written at once (the
 * result thread takes the message in while we receive the next). */
static int hand_back(mp__relay *r, rlink *l, char *buf, size_t len)
{
    if (hq_push(r, &l->taken, NULL, buf, len) < 0)
        return -ENOMEM;
    mp__msg_hdr h = {.type = MSG_HANDED};
    if (mp__buf_append(&l->back, &h, sizeof h) < 0) {
        flush_back(l); /* out of memory: the frames before it, then the notice */
        write_all(l, (const char *)&h, sizeof h);
    }
    flush_back(l);
    return 0;
}

/* Every message that arrived; a rank's frames go to its socket in one write. */
static bool from_ranks(mp__relay *r)
{
    bool any = false;
    for (int k = 0; k < 256; k++) {
        int flag = 0;
        MPI_Message msg;
        MPI_Status st;
        if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, r->comm, &flag, &msg, &st) != MPI_SUCCESS ||
            !flag)
            break;
        any = true;
        int count = 0;
        MPI_Get_count(&st, MPI_BYTE, &count);
        char *buf = mp__big_alloc(count ? (size_t)count : 1); /* a kept block, when large */
        char dummy;
        MPI_Mrecv(buf ? buf : &dummy, buf ? count : 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        int src = st.MPI_SOURCE, kind = MP__MPI_KIND(st.MPI_TAG);
        int i = src >= 0 && src < r->nranks ? r->by_rank[src] : -1;
        if (!buf || i < 0 || (MP__MPI_GEN(st.MPI_TAG) != r->gen && kind != T_HB)) {
            free(buf);
            continue; /* another pool's, or a late one */
        }
        rlink *l = &r->l[i];
        l->last_seen = mp__now();
        if (l->st == L_DEAD || l->st == L_FREE) {
            free(buf);
            continue;
        }
        if (kind == T_ID) {
            got_id(r, l, buf, (size_t)count);
        } else if (kind == T_DATA || kind == T_DATAC) {
            long k = count_results(buf, (size_t)count);
            if (k > 0) {
                l->out -= k;
                l->quick = kind == T_DATAC;
                batch_answered(r, l, k);
            }
            if (l->st == L_STARTING) {
                pthread_mutex_lock(&r->mu);
                l->st = L_SERVING;
                pthread_mutex_unlock(&r->mu);
            }
            if (count >= MP__HAND_BYTES && hand_back(r, l, buf, (size_t)count) == 0) {
                buf = NULL; /* the pool's now */
            } else if (count >= STEAL_BYTES) {
                flush_back(l); /* large (a map's results): written as they are, in order */
                write_all(l, buf, (size_t)count);
            } else if (mp__buf_append(&l->back, buf, (size_t)count) < 0) {
                flush_back(l); /* out of memory: the frames before it, then this one */
                write_all(l, buf, (size_t)count);
            }
            if (l->back.len >= (1u << 20))
                flush_back(l);
        } else if (kind == T_BYE) {
            flush_back(l);
            pthread_mutex_lock(&r->mu);
            l->st = L_DONE;
            snprintf(l->how, sizeof l->how, "left the pool");
            pthread_mutex_unlock(&r->mu);
            signal_sentinel(l);
        }
        free(buf);
    }
    for (int i = 0; i < r->n; i++)
        flush_back(&r->l[i]);
    return any;
}

/* ---- the thread ------------------------------------------------------------------- */

static void handle_stops(mp__relay *r)
{
    for (int i = 0; i < r->n; i++) {
        rlink *l = &r->l[i];
        pthread_mutex_lock(&r->mu);
        bool stop = l->stop_req && (l->st == L_STARTING || l->st == L_SERVING || l->st == L_BYE);
        if (stop) {
            l->stop_req = false;
            l->st = L_DONE;
            snprintf(l->how, sizeof l->how, "was stopped (terminate)");
        }
        pthread_mutex_unlock(&r->mu);
        if (stop) {
            char *b = malloc(1);
            if (b)
                send_to(r, i, T_STOP, b, 0);
            signal_sentinel(l);
        }
    }
}

static void *relay_main(void *arg)
{
    mp__relay *r = arg;
    struct pollfd *pf = calloc(1 + 2 * (size_t)r->n, sizeof *pf);
    int *who = calloc(1 + 2 * (size_t)r->n, sizeof *who);
    unsigned backoff = 0;
    double last_act = 0;
    while (pf && who && !atomic_load(&r->quit)) {
        size_t np = 0;
        bool busy = false, quick = false;
        pf[np] = (struct pollfd){.fd = r->wake, .events = POLLIN};
        who[np++] = -1;
        pthread_mutex_lock(&r->mu);
        for (int i = 0; i < r->n; i++) {
            rlink *l = &r->l[i];
            bool live = l->st == L_STARTING || l->st == L_SERVING || l->st == L_BYE;
            busy |= live && (l->st != L_SERVING || l->out > 0);
            quick |= live && l->out > 0 && l->quick;
            if (l->sock >= 0 && !l->eof && l->st != L_FREE) {
                pf[np] = (struct pollfd){.fd = l->sock, .events = POLLIN};
                who[np++] = i;
            }
            if (live && l->pidfd >= 0 && l->dying_since == 0) {
                pf[np] = (struct pollfd){.fd = l->pidfd, .events = POLLIN};
                who[np++] = -2 - i;
            }
        }
        pthread_mutex_unlock(&r->mu);
        /* chunks out: 0 after activity, then 2 us doubling to 16 us within QUICK_IDLE of
         * the last activity while a rank says its chunks are quick (a stream of quick
         * tasks), else to 256 us (a result waits for our next look: that is its
         * latency; long tasks are not polled for often); nothing out: the fds bring work */
        if (backoff > 4 && quick && mp__now() - last_act < QUICK_IDLE)
            backoff = 4;
        long ns = !busy ? 50000000L : backoff ? 1000L << backoff : 0;
        struct timespec ts = {ns / 1000000000L, ns % 1000000000L};
        int pr = ppoll(pf, np, &ts, NULL);
        bool act = false;
        for (size_t k = 0; pr > 0 && k < np; k++) {
            if (!pf[k].revents)
                continue;
            if (who[k] == -1) {
                uint64_t v;
                ssize_t rd = read(r->wake, &v, sizeof v);
                (void)rd;
            } else if (who[k] >= 0) {
                act |= from_pool(r, who[k]);
            } else {
                r->l[-2 - who[k]].dying_since = mp__now();
            }
        }
        handle_stops(r);
        act |= from_ranks(r);
        progress(r);
        watch(r);
        if (act)
            last_act = mp__now();
        backoff = act ? 0 : backoff < 8 ? backoff + 1 : backoff;
    }
    free(pf);
    free(who);
    return NULL;
}

/* The guard: a rank on this host whose process ended is declared dead even while the
 * relay thread is stuck inside an MPI call. Seen here: Open MPI's TCP transport, finding
 * the dead rank's connection closed inside our MPI_Improbe, prints a help message and
 * sleeps until the launcher took it, which under a plain mpiexec tearing the job down
 * lasted past the job's end (about 1 s): the death was never reported. The relay still
 * declares deaths itself after DYING_GRACE, taking the rank's last messages first; the
 * guard steps in only GUARD_LIMIT after the process ended. */
static bool guard_due(rlink *l, double now)
{
    bool live = l->st == L_STARTING || l->st == L_SERVING || l->st == L_BYE;
    if (!live || l->pidfd < 0)
        return false;
    struct pollfd pf = {.fd = l->pidfd, .events = POLLIN};
    if (poll(&pf, 1, 0) != 1)
        return false;
    if (l->guard_seen == 0)
        l->guard_seen = now;
    return now - l->guard_seen > GUARD_LIMIT;
}

static void *guard_main(void *arg)
{
    mp__relay *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!atomic_load(&r->quit)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_nsec += (long)(GUARD_TICK * 1e9);
        ts.tv_sec += ts.tv_nsec / 1000000000L;
        ts.tv_nsec %= 1000000000L;
        pthread_cond_timedwait(&r->guard_cv, &r->mu, &ts);
        double now = mp__now();
        for (int i = 0; i < r->n && !atomic_load(&r->quit); i++) {
            if (!guard_due(&r->l[i], now))
                continue;
            pthread_mutex_unlock(&r->mu);
            declare_dead(r, i, "died (its process ended)", false);
            pthread_mutex_lock(&r->mu);
        }
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* ---- the pool's side ---------------------------------------------------------------- */

mp__relay *mp__relay_new(MPI_Comm comm, const int *ranks, int n, unsigned gen, double hb_limit)
{
    mp__relay *r = mp__calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->comm = comm;
    r->gen = gen;
    r->hb_limit = hb_limit;
    r->n = n;
    r->wake = -1;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->guard_cv, &ca);
    pthread_condattr_destroy(&ca);
    mp__mpi_host_identity(r->ident, sizeof r->ident);
    int maxrank = 0;
    for (int i = 0; i < n; i++)
        maxrank = ranks[i] > maxrank ? ranks[i] : maxrank;
    r->nranks = maxrank + 1;
    r->l = mp__calloc((size_t)n, sizeof *r->l);
    r->by_rank = mp__calloc((size_t)r->nranks, sizeof *r->by_rank);
    r->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (!r->l || !r->by_rank || r->wake < 0) {
        mp__relay_free(r, NULL, NULL);
        mp__error(-ENOMEM, "MPI pool: cannot set up the relay");
        return NULL;
    }
    for (int i = 0; i < r->nranks; i++)
        r->by_rank[i] = -1;
    for (int i = 0; i < n; i++) {
        r->l[i] = (rlink){.rank = ranks[i], .sock = -1, .sentinel = -1, .pidfd = -1};
        snprintf(r->l[i].host, sizeof r->l[i].host, "?");
        r->by_rank[ranks[i]] = i;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    int e = pthread_create(&r->th, NULL, relay_main, r);
    if (!e) {
        r->th_started = true;
        e = pthread_create(&r->guard, NULL, guard_main, r);
        r->guard_started = !e;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (e) {
        mp__relay_free(r, NULL, NULL);
        mp__error(-e, "MPI pool: cannot start the relay's threads");
        return NULL;
    }
    return r;
}

int mp__relay_start(mp__relay *r, size_t i, const mp_value *boot, int *sock, int *sentinel)
{
    rlink *l = &r->l[i];
    mp_value *loc = NULL, *initargs = NULL;
    int pos = 0;
    if (mp_value_unpack(boot, "[i o o]", &pos, &loc, &initargs) < 0)
        return mp_last_error_code();
    mp_value *hello = mp_value_pack("[I i O O f]", (int64_t)r->gen, pos, loc, initargs,
                                    MP__MPI_HB);
    char *enc = NULL;
    size_t len = 0;
    int rc = hello ? mp_value_encode(hello, &enc, &len, NULL, 0, NULL) : mp_last_error_code();
    mp_value_free(hello);
    if (rc < 0)
        return rc;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        free(enc);
        return mp__errno("MPI pool: socketpair");
    }
    /* Room for whole chunks both ways: the relay's blocking write of a large result
     * then rarely waits for the result thread (4 MiB is Linux's usual wmem_max). */
    int big = 4 << 20;
    for (int k = 0; k < 2; k++) {
        setsockopt(sv[k], SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
        setsockopt(sv[k], SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    }
    int ev = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    int evdup = ev >= 0 ? mp__dup_cloexec(ev, 0) : -1;
    if (evdup < 0) {
        free(enc);
        mp__close(sv[0]);
        mp__close(sv[1]);
        if (ev >= 0)
            mp__close(ev);
        return mp__errno("MPI pool: eventfd");
    }
    /* The link is set up before the HELLO goes: the relay drops what comes from a link
     * not started, and a rank may answer (ID, READY) before MPI_Send returns here; the
     * READY lost, the pool's creation waited for ever (the rank's heartbeats kept the
     * link from being found silent). */
    pthread_mutex_lock(&r->mu);
    l->sock = sv[1];
    l->sentinel = ev;
    l->eof = false;
    l->out = 0;
    l->bq_head = l->bq_n = 0;
    l->quick = false;
    l->last_seen = mp__now();
    l->st = L_STARTING;
    pthread_mutex_unlock(&r->mu);
    wake(r);
    /* The HELLO goes from this thread (MPI_THREAD_MULTIPLE); the rank answers the relay. */
    rc = MPI_Send(enc, (int)len, MPI_BYTE, l->rank, MP__MPI_TAG(T_HELLO, r->gen), r->comm);
    free(enc);
    if (rc != MPI_SUCCESS) {
        /* the link's fds stay with it (the relay may be polling them): mp__relay_free */
        pthread_mutex_lock(&r->mu);
        l->st = L_DONE;
        snprintf(l->how, sizeof l->how, "could not be greeted");
        pthread_mutex_unlock(&r->mu);
        mp__close(sv[0]);
        mp__close(evdup);
        return mp__mpi_error(rc, "MPI pool: greeting a rank");
    }
    *sock = sv[0];
    *sentinel = evdup;
    return 0;
}

void mp__relay_stop(mp__relay *r, size_t i)
{
    pthread_mutex_lock(&r->mu);
    r->l[i].stop_req = true;
    pthread_mutex_unlock(&r->mu);
    wake(r);
}

void mp__relay_reap(mp__relay *r, size_t i, char *who, size_t wcap, char *how, size_t hcap)
{
    rlink *l = &r->l[i];
    pthread_mutex_lock(&r->mu);
    l->reaped = true;
    if (l->st == L_STARTING || l->st == L_SERVING || l->st == L_BYE) {
        l->st = L_DONE; /* the pool let go of it (its creation failed, or a protocol error) */
        snprintf(l->how, sizeof l->how, "was let go");
    }
    snprintf(who, wcap, "MPIPoolWorker-%zu (MPI rank %d, pid %d on %s)", i + 1, l->rank,
             (int)l->pid, l->host);
    snprintf(how, hcap, "%s", l->how[0] ? l->how : "ended");
    pthread_mutex_unlock(&r->mu);
}

int mp__relay_give(mp__relay *r, size_t i, mp__txbuf *t)
{
    return hq_push(r, &r->l[i].given, t, NULL, 0);
}

int mp__relay_take(mp__relay *r, size_t i, char **buf, size_t *len)
{
    handed *h = hq_pop(r, &r->l[i].taken);
    if (!h)
        return -1;
    *buf = h->buf;
    *len = h->len;
    free(h);
    return 0;
}

size_t mp__relay_held(mp__relay *r, size_t i)
{
    rlink *l = &r->l[i];
    pthread_mutex_lock(&r->mu);
    size_t n = l->bq_n && l->bq[l->bq_head].coal ? (size_t)l->bq[l->bq_head].left : 1;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void mp__relay_free(mp__relay *r, bool *dead, int *pidfds)
{
    if (!r)
        return;
    atomic_store(&r->quit, 1);
    if (r->guard_started) {
        pthread_mutex_lock(&r->mu);
        pthread_cond_broadcast(&r->guard_cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->guard, NULL);
    }
    if (r->th_started) {
        wake(r);
        pthread_join(r->th, NULL);
    }
    for (size_t k = 0; k < r->nq; k++) {
        rlink *l = &r->l[r->q[k].link];
        if (l->st != L_DEAD && MPI_Wait(&r->q[k].req, MPI_STATUS_IGNORE) == MPI_SUCCESS) {
            free(r->q[k].buf);
            mp__txbuf_unref(r->q[k].tb);
        } else if (l->st == L_DEAD) {
            orphan(&r->q[k].req, r->q[k].buf, r->q[k].tb);
        }
    }
    free(r->q);
    free(r->rq);
    free(r->ri);
    for (int i = 0; r->l && i < r->n; i++) {
        rlink *l = &r->l[i];
        if (dead)
            dead[i] = l->st == L_DEAD;
        if (l->sock >= 0)
            mp__close(l->sock);
        if (l->sentinel >= 0)
            mp__close(l->sentinel);
        if (pidfds)
            pidfds[i] = l->pidfd;
        else if (l->pidfd >= 0)
            mp__close(l->pidfd);
        mp__rx_free(&l->rx);
        mp__buf_free(&l->back);
        hq_drop(r, &l->given);
        hq_drop(r, &l->taken);
        free(l->bq);
    }
    free(r->l);
    free(r->by_rank);
    if (r->wake >= 0)
        mp__close(r->wake);
    pthread_cond_destroy(&r->guard_cv);
    pthread_mutex_destroy(&r->mu);
    free(r);
}
