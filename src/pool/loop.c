/* The pool's result thread: sends chunks, reads results, sees workers die, enforces
 * time limits, replaces workers, runs callbacks.
 *
 * DESIGN: one thread per pool, one poll() over the eventfd (new work, close,
 * terminate, an iterator that freed window space), each worker's socket and each
 * worker's sentinel (its pidfd; the status connection under forkserver). Chunks are
 * pushed to a chosen worker (the least loaded; at most `window` chunks ahead; queued
 * runs of them go out in one sendmsg; a remote worker holds more: 4, or 256 when it
 * returns chunks quickly, so that several batches are on their way to it), so the parent always
 * knows which chunks a worker holds, in the order it runs them. A worker's death: first
 * every result it sent is read (the socket keeps them after it died), then its slot
 * names the chunk it was running (a remote worker's backend says how many chunks at the
 * head of its queue it held: 1, or the rest of a coalesced batch): those tasks fail
 * with MP_EWORKERDIED (MP_ETIMEOUT for the task that overran its limit), the chunks
 * behind go back to the front of the queue, a new worker takes the position.
 * Results: a chunk's values are decoded straight into the job (a map's result list to
 * be) or its iterator ring, their scalars from one block of values per chunk
 * (mp__vblock: one allocation, not one per value; the values are freed by the user's
 * thread, where this thread's per-thread value cache could never get them back).
 * Failed chunks (arguments that could not be encoded) are failed here, never sent.
 * A backend's worker gets a large chunk (64 KiB+) by pointer when its backend takes it
 * (a MSG_HANDED notice goes through the socket in its place: backend.c), and a
 * MSG_HANDED notice from it stands for a large block of results handed over the same
 * way (handle_handed).
 * Wake-ups: p->idle is set before the queue is looked at and cleared when poll
 * returns, so submitters write the eventfd only when this thread may sleep; a worker's
 * socket is read until a short read, not until EAGAIN; the jobs that finish while one
 * read's messages are handled wake their waiters once, at the end (a futex wake per
 * apply was 45% of this thread's time with 10,000 applies on MPI); runs of small
 * messages go to a worker copied into one buffer, one send (the kernel's cost per
 * piece of a sendmsg of 64 small tasks was a quarter of this thread's time). The
 * queue is taken whole under p->mu and assigned out of it (submitters do not wait
 * while this thread reads chunks they wrote); an answered chunk is kept for the next
 * calls (mp__chunk_done: the submitter allocates, this thread would free).
 * Shared state: p->pending, p->sources, p->state under p->mu (never held across user
 * code or syscalls that wait); workers (w[]) belong to this thread alone. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/sigutil.h"
#include "internal/value.h"
#include "pool/pool.h"

#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>


/* Chunks a worker may hold ahead: enough that it never waits for the parent between
 * short chunks, few enough that long tasks spread over the workers. A remote worker
 * (MPI) is farther away: more (4, or 256 when its chunks come back quickly), so that
 * the next chunks are on their way to it while it runs one and the parent decodes the
 * last one's results. */
static size_t window_of(const worker *w)
{
    return !w->fast ? (w->remote ? 4 : 2) : w->remote ? 256 : 32;
}

void mp__pool_wake(mp_pool *p)
{
    uint64_t one = 1;
    ssize_t r = write(p->wake_fd, &one, sizeof one);
    (void)r; /* EAGAIN: the counter is already non-zero, the thread will wake */
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void fail_chunk(chunk *c, int code, const char *msg, size_t special, int scode,
                       const char *smsg)
{
    for (size_t k = 0; k < c->count; k++)
        mp__job_complete_item(c->job, c->first + k, NULL, k == special ? scode : code,
                              k == special ? smsg : msg);
    mp__chunk_free(c);
}

static bool has_work(mp_pool *p)
{
    pthread_mutex_lock(&p->mu); /* submitters append to pending and sources under mu */
    bool queued = p->pending || p->sources;
    pthread_mutex_unlock(&p->mu);
    if (queued || atomic_load(&p->submitting))
        return true;
    for (int i = 0; i < p->processes; i++)
        if (p->w[i].ninflight)
            return true;
    return false;
}

/* ---- sending ------------------------------------------------------------------- */

/* The first `sent` bytes of the send queue went out: drop the whole messages. */
static void advance(worker *w, size_t sent)
{
    size_t done = 0;
    while (done < w->txn && sent >= w->txq[done]->len - w->txoff) {
        chunk *c = w->txq[done++];
        sent -= c->len - w->txoff;
        w->txoff = 0;
        if (!c->job)
            mp__chunk_free(c); /* a control message (the arena): no result comes */
    }
    memmove(w->txq, w->txq + done, (w->txn - done) * sizeof *w->txq);
    w->txn -= done;
    w->txoff += sent;
}

/* Small messages at the head of the send queue (no fds), copied into buf while they
 * fit: the bytes (0: fewer than two fit, send them as they are). The kernel's cost per
 * piece of a sendmsg is far above a copy of a small task's few dozen bytes. */
static size_t gather(const worker *w, char *buf, size_t cap)
{
    size_t len = 0, k = 0;
    for (; k < w->txn && !(k && w->txq[k]->nfds); k++) {
        const chunk *c = w->txq[k];
        size_t off = k ? 0 : w->txoff, n = c->len - off;
        if (n > cap - len)
            break;
        memcpy(buf + len, c->buf + off, n);
        len += n;
    }
    return k > 1 ? len : 0;
}

/* Send what the queue holds: a message with fds alone (they ride with its first byte),
 * runs of the others in one send (small ones copied together) or sendmsg. Stops when
 * the socket is full. */
static void flush(worker *w)
{
    char small[16384];
    while (w->txn) {
        chunk *c = w->txq[0];
        if (c->nfds && w->txoff == 0) {
            int r = mp__chan_send_some(w->sock, c->buf, c->len, &w->txoff, c->fds, c->nfds);
            if (r <= 0)
                return; /* full, or the worker is gone: its sentinel will tell */
            advance(w, 0);
            continue;
        }
        struct iovec iov[64];
        size_t k = 0, g = gather(w, small, sizeof small);
        if (g)
            iov[k++] = (struct iovec){.iov_base = small, .iov_len = g};
        else
            iov[k++] = (struct iovec){.iov_base = c->buf + w->txoff, .iov_len = c->len - w->txoff};
        while (!g && k < w->txn && k < MP__ARRAY_LEN(iov) && !w->txq[k]->nfds) {
            iov[k] = (struct iovec){.iov_base = w->txq[k]->buf, .iov_len = w->txq[k]->len};
            k++;
        }
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = k};
        ssize_t n = sendmsg(w->sock, &mh, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* full, or the worker is gone: its sentinel will tell */
        size_t want = 0;
        for (size_t i = 0; i < k; i++)
            want += iov[i].iov_len;
        advance(w, (size_t)n);
        if ((size_t)n < want)
            return; /* the socket is full: POLLOUT brings us back */
    }
}

/* Control messages not yet sent belong to the send queue alone. */
static void drop_control(worker *w)
{
    for (size_t k = 0; k < w->txn; k++)
        if (!w->txq[k]->job)
            mp__chunk_free(w->txq[k]);
    w->txn = 0;
}

static bool eligible(const mp_pool *p, const worker *w)
{
    return mp__worker_live(w) && w->sock >= 0 && !w->exiting && !w->killed_for_timeout &&
           w->ninflight < window_of(w) && w->txn + 1 < MP__ARRAY_LEN(w->txq) &&
           (!p->maxtasks || w->assigned < p->maxtasks);
}

/* Tell a worker about the current arena before its first range in it. */
static void send_arena(mp_pool *p, worker *w)
{
    chunk *a = calloc(1, sizeof *a);
    int fd = a ? mp__pool_fd_track(mp__dup_cloexec(p->arena_fd, 0)) : -1;
    a = fd >= 0 ? a : (free(a), NULL);
    if (a) {
        a->fds = malloc(sizeof(int));
        a->buf = malloc(sizeof(mp__msg_hdr));
    }
    if (!a || !a->fds || !a->buf) {
        if (fd >= 0)
            mp__pool_fd_close(fd);
        mp__chunk_free(a);
        return; /* the range fails in the worker: outside the arena */
    }
    a->fds[0] = fd;
    a->nfds = 1;
    mp__msg_hdr h = {.type = MSG_ARENA, .nfds = 1, .arg = p->arena_size};
    memcpy(a->buf, &h, sizeof h);
    a->len = sizeof h;
    w->txq[w->txn++] = a;
    w->arena_gen = p->arena_gen;
}

static void assign(mp_pool *p, worker *w, chunk *c)
{
    if (c->job->kind == JOB_ARRAY && w->arena_gen != p->arena_gen)
        send_arena(p, w);
    c->next = NULL;
    if (w->inflight_tail)
        w->inflight_tail->next = c;
    else
        w->inflight = c;
    w->inflight_tail = c;
    w->ninflight++;
    /* a backend's worker: a large chunk's bytes may go by pointer, a notice in their place */
    w->txq[w->txn++] = w->remote ? mp__pool_hand(p, (size_t)(w - p->w), c) : c;
    if (c->job->kind != JOB_ARRAY && p->maxtasks && ++w->assigned >= p->maxtasks)
        w->exiting = true; /* it exits after this one */
}

/* Fail the chunks that could not be encoded (a list in reverse order: in their order). */
static void fail_unsent(chunk *failed)
{
    chunk *rev = NULL;
    while (failed) {
        chunk *n = failed->next;
        failed->next = rev;
        rev = failed;
        failed = n;
    }
    while (rev) {
        chunk *n = rev->next;
        fail_chunk(rev, rev->fail_code, rev->fail_msg, SIZE_MAX, 0, NULL);
        rev = n;
    }
}

/* Assign queued chunks to workers with room. The queue is taken whole and what stays is
 * put back in front (only this thread takes from it; submitters append meanwhile): the
 * lock is not held while the chunks, written by other threads, are read. */
static void dispatch(mp_pool *p)
{
    chunk *failed = NULL;
    pthread_mutex_lock(&p->mu);
    chunk *q = p->pending, *q_tail = p->pending_tail;
    p->pending = p->pending_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (q) {
        if (q->fail_code) { /* never sent: failed below */
            chunk *c = q;
            q = c->next;
            c->next = failed;
            failed = c;
            continue;
        }
        worker *best = NULL;
        for (int i = 0; i < p->processes; i++) {
            worker *w = &p->w[i];
            if (eligible(p, w) && (!best || w->ninflight < best->ninflight))
                best = w;
        }
        if (!best)
            break;
        chunk *c = q;
        q = c->next;
        if (c->next)
            __builtin_prefetch(c->next);
        bool arr = c->job->kind == JOB_ARRAY; /* the arena's fields are under mu */
        if (arr)
            pthread_mutex_lock(&p->mu);
        assign(p, best, c);
        if (arr)
            pthread_mutex_unlock(&p->mu);
    }
    if (q) { /* no worker has room: back in front of what was queued meanwhile */
        pthread_mutex_lock(&p->mu);
        q_tail->next = p->pending;
        p->pending = q;
        if (!p->pending_tail)
            p->pending_tail = q_tail;
        pthread_mutex_unlock(&p->mu);
    }
    fail_unsent(failed);
    for (int i = 0; i < p->processes; i++)
        if (p->w[i].txn)
            flush(&p->w[i]);
}

/* Put chunks back at the front of the queue, in their order. */
static void requeue(mp_pool *p, chunk *first, chunk *last)
{
    if (!first)
        return;
    pthread_mutex_lock(&p->mu);
    last->next = p->pending;
    p->pending = first;
    if (!p->pending_tail)
        p->pending_tail = last;
    pthread_mutex_unlock(&p->mu);
}

/* ---- results ------------------------------------------------------------------- */

/* The failures after the results: each failed item's value (nil) is dropped and the
 * item completed with its code and message. */
static void read_errors(chunk *c, const char *b, size_t len, bool *failed, mp_value **vs)
{
    size_t off = 0;
    while (off + 12 <= len) {
        uint32_t idx, ml;
        int32_t code;
        memcpy(&idx, b + off, 4);
        memcpy(&code, b + off + 4, 4);
        memcpy(&ml, b + off + 8, 4);
        if (off + 12 + ml > len || idx >= c->count || code >= 0)
            break;
        off += 12 + ml;
        if (failed[idx])
            continue; /* named twice: the first one counts */
        failed[idx] = true;
        mp_value_free(vs[idx]);
        vs[idx] = NULL;
        char *m = strndup(b + off - ml, ml);
        mp__job_complete_item(c->job, c->first + idx, NULL, code, m ? m : "task failed");
        free(m);
    }
}

/* The count of the MessagePack array at the start of b (its header's length in *hl), or
 * SIZE_MAX when b does not start with one. */
static size_t array_count(const uint8_t *b, size_t len, size_t *hl)
{
    if (len >= 1 && b[0] >= 0x90 && b[0] <= 0x9f) {
        *hl = 1;
        return b[0] & 0x0fu;
    }
    if (len >= 3 && b[0] == 0xdc) {
        *hl = 3;
        return (size_t)b[1] << 8 | b[2];
    }
    if (len >= 5 && b[0] == 0xdd) {
        *hl = 5;
        return (size_t)b[1] << 24 | (size_t)b[2] << 16 | (size_t)b[3] << 8 | b[4];
    }
    return SIZE_MAX;
}

/* The chunk's results, decoded into vs[0, count): without fds item by item, their
 * scalars in one block of values (one allocation for the chunk, not one per value; the
 * block goes when its last value is freed, whoever frees it); with fds (handles) through
 * a decoded list. On failure nothing is left in vs. */
static int decode_results(chunk *c, mp__msg *m, size_t elen, mp_value **vs)
{
    if (m->nfds) {
        mp_value *list = NULL;
        int r = mp_value_decode(m->body, elen, m->fds, m->nfds, &list);
        m->nfds = 0;
        if (r < 0)
            return r;
        if (list->type != MP_LIST || list->u.list.len != c->count) {
            mp_value_free(list);
            return mp__error(MP_EPROTO, "pool: a result of the wrong shape");
        }
        memcpy(vs, list->u.list.items, c->count * sizeof *vs);
        list->u.list.len = 0; /* the values moved to vs */
        mp_value_free(list);
        return 0;
    }
    const uint8_t *b = (const uint8_t *)m->body, *end = b + elen;
    size_t hl = 0;
    if (array_count(b, elen, &hl) != c->count)
        return mp__error(MP_EPROTO, "pool: a result of the wrong shape");
    b += hl;
    mp__vblock *blk = mp__vblock_new(c->count);
    int r = 0;
    size_t k = 0;
    for (; k < c->count && r == 0; k++) {
        int64_t x;
        size_t used = mp__unpack_int(b, (size_t)(end - b), &x); /* ints first: the usual */
        mp_value *v = used ? mp__vblock_take(blk, MP_INT) : NULL;
        if (v) {
            v->u.i = x;
            vs[k] = v;
        } else {
            r = mp__value_decode_next_in(b, (size_t)(end - b), blk, &used, &vs[k]);
        }
        b += used;
    }
    if (r == 0 && b != end)
        r = mp__error(MP_EPROTO, "pool: trailing bytes after the results");
    if (r < 0)
        for (size_t i = 0; i < k; i++) {
            mp_value_free(vs[i]);
            vs[i] = NULL;
        }
    mp__vblock_done(blk);
    return r;
}

static int take_results(chunk *c, mp__msg *m)
{
    if (c->job->kind == JOB_ARRAY) {
        int code = (int)(int64_t)m->h.arg;
        if (!code && c->job->array_out && mp__array_take(c, m) < 0) /* a backend's range */
            return mp_last_error_code();
        char *msg = code ? strndup(m->body, (size_t)m->h.len) : NULL;
        mp__job_complete_item(c->job, c->first, NULL, code, msg);
        free(msg);
        return 0;
    }
    size_t elen = (size_t)m->h.arg;
    if (elen > m->h.len)
        return mp__error(MP_EPROTO, "pool: bad result message");
    job *j = c->job;
    /* apply/map: straight into the job's array (the map's result list to be); iterators
     * go through a scratch array to their ring slots. */
    mp_value **vs = j->ring ? malloc(c->count * sizeof *vs) : j->vals + c->first;
    bool *failed = calloc(c->count, 1);
    int r = vs && failed ? decode_results(c, m, elen, vs) : -ENOMEM;
    if (r < 0) {
        if (j->ring)
            free(vs);
        free(failed);
        return r;
    }
    bool ring = j->ring;
    /* The failures first: when every item of the chunk failed, the last may finish the
     * job and free it; the job is touched again only for items still to count. */
    read_errors(c, m->body + elen, (size_t)m->h.len - elen, failed, vs);
    size_t ok = 0;
    for (size_t k = 0; k < c->count; k++)
        ok += !failed[k];
    if (ok && ring)
        mp__job_complete_ring(j, c->first, vs, failed, c->count);
    else if (ok)
        mp__job_complete_vals(j, ok); /* one count for the chunk: it may finish the job */
    if (ring)
        free(vs);
    free(failed);
    return 0;
}

static int handle_msg(mp_pool *p, worker *w, mp__msg *m)
{
    if (m->h.type == MSG_READY) {
        w->ready = true;
        return 0;
    }
    if (m->h.type == MSG_INIT_FAIL && m->h.len >= 4) {
        int32_t code;
        memcpy(&code, m->body, 4);
        pthread_mutex_lock(&p->mu);
        if (!p->broken_code) {
            p->broken_code = code < 0 ? code : MP_EINVAL;
            snprintf(p->broken_msg, sizeof p->broken_msg, "pool initializer failed: %.*s",
                     (int)(m->h.len - 4), m->body + 4);
        }
        pthread_mutex_unlock(&p->mu);
        return 0;
    }
    chunk *c = w->inflight;
    if (m->h.type != MSG_RESULT || !c || c->id != m->h.id)
        return mp__error(MP_EPROTO, "pool: unexpected message %u from a worker", m->h.type);
    w->inflight = c->next;
    if (!w->inflight)
        w->inflight_tail = NULL;
    w->ninflight--;
    int r = take_results(c, m);
    if (r < 0) {
        fail_chunk(c, r, mp__last_error_detail(), SIZE_MAX, 0, NULL);
        return r;
    }
    /* A chunk that came back quickly lets this worker hold more ahead. */
    uint64_t t = now_ns();
    w->fast = t - w->last_result_ns < 1000000;
    w->last_result_ns = t;
    mp__chunk_done(p, c);
    return 0;
}

/* A MSG_HANDED notice from a backend's worker: the frames it stands for were handed over
 * by pointer (a map's results, megabytes: not copied through the socket twice). */
static int handle_handed(mp_pool *p, worker *w)
{
    char *buf = NULL;
    size_t len = 0, off = 0;
    int r = mp__pool_take(p, (size_t)(w - p->w), &buf, &len);
    while (r == 0 && off < len) {
        mp__msg m = {0};
        if (len - off < sizeof m.h)
            r = mp__error(MP_EPROTO, "pool: a handed message ends inside a header");
        if (r < 0)
            break;
        memcpy(&m.h, buf + off, sizeof m.h);
        off += sizeof m.h;
        if (m.h.nfds || m.h.len > len - off || MSG_TYPE(m.h.type) == MSG_HANDED) {
            r = mp__error(MP_EPROTO, "pool: a malformed handed message");
            break;
        }
        m.body = buf + off;
        off += (size_t)m.h.len;
        r = handle_msg(p, w, &m);
    }
    mp__big_free(buf);
    return r;
}

/* Handle every whole message buffered; a malformed one kills the worker. */
static void drain_msgs(mp_pool *p, worker *w)
{
    mp__pool_notify_hold();
    for (;;) {
        mp__msg m = {0};
        int got = mp__rx_next(&w->rx, &m);
        if (got == 0)
            break;
        int r = got < 0                      ? got
                : m.h.type == MSG_HANDED ? handle_handed(p, w)
                                         : handle_msg(p, w, &m);
        mp__msg_clear(&m);
        if (r < 0) {
            mp__worker_kill(p, (size_t)(w - p->w));
            w->eof = true;
            break;
        }
    }
    mp__pool_notify(); /* the jobs finished above, and a READY or a worker killed */
    mp__pool_notify_release();
    mp__chunk_spent_flush(p);
}

static void read_worker(mp_pool *p, worker *w)
{
    /* Until a read comes back short (the socket is then most likely drained: poll says
     * if more came since), not until EAGAIN: a recvmsg saved per wake-up. */
    for (int rounds = 0; rounds < 8; rounds++) {
        int r = mp__rx_fill(&w->rx, w->sock, true);
        if (r <= 0) {
            if (r != -EAGAIN)
                w->eof = true;
            break;
        }
        if (w->rx.short_read)
            break;
    }
    drain_msgs(p, w);
}

/* ---- deaths and replacements ------------------------------------------------------ */

static void fail_pending(mp_pool *p, int code, const char *msg)
{
    pthread_mutex_lock(&p->mu);
    chunk *c = p->pending;
    p->pending = p->pending_tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (c) {
        chunk *n = c->next;
        if (c->fail_code)
            fail_chunk(c, c->fail_code, c->fail_msg, SIZE_MAX, 0, NULL);
        else
            fail_chunk(c, code, msg, SIZE_MAX, 0, NULL);
        c = n;
    }
}

static void replace(mp_pool *p, size_t i)
{
    pthread_mutex_lock(&p->mu);
    bool want = !p->broken_code && p->state == 0;
    bool closing = !p->broken_code && p->state == 1;
    pthread_mutex_unlock(&p->mu);
    if (!want && !(closing && has_work(p)))
        return;
    int r = mp__pool_start_worker(p, i);
    if (r < 0) {
        pthread_mutex_lock(&p->mu);
        bool any = false;
        for (int k = 0; k < p->processes; k++)
            any |= mp__worker_live(&p->w[k]);
        if (!any && !p->broken_code) {
            p->broken_code = r;
            snprintf(p->broken_msg, sizeof p->broken_msg, "pool: cannot start a worker: %s",
                     mp__last_error_detail());
        }
        pthread_mutex_unlock(&p->mu);
    }
}

static void handle_death(mp_pool *p, size_t i)
{
    worker *w = &p->w[i];
    while (mp__rx_fill(&w->rx, w->sock, true) == 1)
        drain_msgs(p, w);
    drain_msgs(p, w);
    /* A remote worker has no slot we can read: it runs its chunks in order, so the one
     * at the head of its queue is the one it was running (or had just finished); or the
     * backend says how many at the head it may have run (a batch whose results it held
     * back): those fail, none runs twice. */
    uint64_t running = w->remote ? 0
                                 : atomic_load_explicit(&p->slots[i].chunk, memory_order_acquire);
    bool remote = w->remote; /* reaping clears w */
    size_t held = remote && p->backend->held ? p->backend->held(p->be_state, i) : 1;
    char who[160], what[160];
    bool timed = w->killed_for_timeout;
    size_t titem = w->timed_item;
    double tlimit = w->timed_limit;
    chunk *c = w->inflight;
    drop_control(w);
    w->inflight = w->inflight_tail = NULL;
    w->ninflight = w->txn = 0;
    mp__pool_reap_describe(p, i, who, sizeof who, what, sizeof what);
    chunk *back = NULL, *back_tail = NULL;
    for (size_t k = 0; c; k++) {
        chunk *n = c->next;
        if (remote ? k < held : c->id == running) {
            char msg[1024], tmsg[1024];
            char fn[256];
            mp__fn_label(c->job->fnloc, c->job->fnloc_len, fn, sizeof fn);
            size_t lo = c->first, hi = c->first + c->count - 1;
            const char *unit = "items";
            if (c->job->kind == JOB_ARRAY) /* its items are ranges: name the elements */
                unit = mp__array_elements(c, &lo, &hi);
            if (held > 1)
                snprintf(msg, sizeof msg,
                         "pool worker %s %s while running a batch of %zu chunks that held %s "
                         "(%s %zu-%zu of the call)",
                         who, what, held, fn, unit, lo, hi);
            else
                snprintf(msg, sizeof msg,
                         "pool worker %s %s while running %s (%s %zu-%zu of the call)",
                         who, timed ? "was killed for a time limit" : what, fn, unit, lo, hi);
            snprintf(tmsg, sizeof tmsg,
                     "task %s (item %zu) exceeded its time limit of %g s: worker %s "
                     "was killed and replaced",
                     fn, c->first + titem, tlimit, who);
            fail_chunk(c, MP_EWORKERDIED, msg, timed ? titem : SIZE_MAX, MP_ETIMEOUT, tmsg);
        } else {
            c->next = NULL;
            if (back_tail)
                back_tail->next = c;
            else
                back = c;
            back_tail = c;
        }
        c = n;
    }
    requeue(p, back, back_tail);
    mp__pool_notify();
    replace(p, i);
    if (p->broken_code)
        fail_pending(p, p->broken_code, p->broken_msg);
}

/* ---- time limits ---------------------------------------------------------------- */

/* Kill workers whose task overran; the ms until the next deadline (-1: none). */
static int check_limits(mp_pool *p)
{
    uint64_t now = now_ns();
    int64_t next = -1;
    for (int i = 0; i < p->processes; i++) {
        worker *w = &p->w[i];
        chunk *c = w->inflight;
        if (!w->proc || !c || c->job->time_limit <= 0 || w->killed_for_timeout)
            continue;
        uint64_t limit = (uint64_t)(c->job->time_limit * 1e9);
        uint64_t left = limit;
        if (atomic_load_explicit(&p->slots[i].chunk, memory_order_acquire) == c->id) {
            uint64_t item = atomic_load_explicit(&p->slots[i].item, memory_order_acquire);
            uint64_t start = atomic_load_explicit(&p->slots[i].start_ns, memory_order_relaxed);
            if (now >= start + limit) {
                w->killed_for_timeout = true;
                w->timed_item = (size_t)item;
                w->timed_limit = c->job->time_limit;
                mp__worker_kill(p, (size_t)i);
                continue;
            }
            left = start + limit - now;
        }
        int64_t ms = (int64_t)(left / 1000000) + 1;
        if (next < 0 || ms < next)
            next = ms;
    }
    return next > INT32_MAX ? INT32_MAX : (int)next;
}

/* ---- the loop -------------------------------------------------------------------- */

static void terminate_all(mp_pool *p)
{
    for (int i = 0; i < p->processes; i++)
        mp__worker_terminate(p, (size_t)i);
    for (int i = 0; i < p->processes; i++) {
        worker *w = &p->w[i];
        if (!mp__worker_live(w) && w->sock < 0)
            continue;
        chunk *c = w->inflight;
        drop_control(w);
        w->inflight = w->inflight_tail = NULL;
        w->ninflight = w->txn = 0;
        int code;
        mp__pool_reap_worker(p, (size_t)i, &code);
        while (c) {
            chunk *n = c->next;
            fail_chunk(c, MP_ECLOSED, "the pool was terminated", SIZE_MAX, 0, NULL);
            c = n;
        }
    }
    fail_pending(p, MP_ECLOSED, "the pool was terminated");
    pthread_mutex_lock(&p->mu);
    job *s = p->sources;
    p->sources = NULL;
    pthread_mutex_unlock(&p->mu);
    while (s) {
        job *next = s->next_src;
        mp__job_end_source(s, MP_ECLOSED, "the pool was terminated");
        mp__job_unref(s); /* the list's reference */
        s = next;
    }
    mp__pool_notify();
}

static void pump_sources(mp_pool *p)
{
    pthread_mutex_lock(&p->mu);
    job *s = p->sources;
    pthread_mutex_unlock(&p->mu);
    for (; s; s = s->next_src)
        mp__job_pump_source(p, s);
    /* Drop the ones that ended (only this thread removes; submitters push in front).
     * The list holds a reference of its own: a job that ended may have no other. */
    job *ended = NULL;
    pthread_mutex_lock(&p->mu);
    for (job **pp = &p->sources; *pp;) {
        job *j = *pp;
        if (atomic_load(&j->source_done)) {
            *pp = j->next_src;
            j->next_src = ended;
            ended = j;
        } else {
            pp = &j->next_src;
        }
    }
    pthread_mutex_unlock(&p->mu);
    while (ended) {
        job *next = ended->next_src;
        mp__job_unref(ended);
        ended = next;
    }
}

/* Terminated: map calls still encoding queue the rest of their chunks (as failed ones,
 * see mp__pool_enqueue); wait for them (they never wait on the pool) and fail what they
 * queued, so that every item of every call ends. */
static void finish_submissions(mp_pool *p)
{
    while (atomic_load(&p->submitting)) {
        struct pollfd pf = {.fd = p->wake_fd, .events = POLLIN};
        if (poll(&pf, 1, 100) > 0) {
            uint64_t v;
            ssize_t k = read(p->wake_fd, &v, sizeof v);
            (void)k;
        }
        fail_pending(p, MP_ECLOSED, "the pool was terminated");
    }
    fail_pending(p, MP_ECLOSED, "the pool was terminated");
    mp__pool_notify();
}

/* Closed and idle: let the workers go (end of file on their socket). */
static bool wind_down(mp_pool *p)
{
    bool alive = false;
    for (int i = 0; i < p->processes; i++) {
        worker *w = &p->w[i];
        if (!mp__worker_live(w))
            continue;
        alive = true;
        if (!w->shut) {
            shutdown(w->sock, SHUT_WR);
            w->shut = true;
            w->exiting = true;
        }
    }
    return alive;
}

/* First the workers: mp_pool_new waits for this. */
static bool start_workers(mp_pool *p)
{
    int r = mp__pool_start_all(p);
    if (r < 0) {
        p->start_code = r;
        snprintf(p->start_msg, sizeof p->start_msg, "%s", mp__last_error_detail());
    }
    atomic_store(&p->started, r < 0 ? -1 : 1);
    mp__pool_notify();
    return r == 0;
}

void *mp__pool_thread(void *arg)
{
    mp_pool *p = arg;
    mp__block_signals_in_thread(); /* created with every signal blocked; marks it internal */
    if (!start_workers(p))
        return NULL;
    struct pollfd *pf = calloc(1 + 2 * (size_t)p->processes, sizeof *pf);
    for (;;) {
        atomic_store(&p->idle, 1); /* from here on we look at the queue before poll */
        pthread_mutex_lock(&p->mu);
        int state = p->state;
        pthread_mutex_unlock(&p->mu);
        if (state == 2 || !pf) {
            terminate_all(p);
            finish_submissions(p);
            break;
        }
        pump_sources(p);
        dispatch(p);
        if (state == 1 && !has_work(p) && !wind_down(p))
            break;
        int timeout = check_limits(p);
        size_t n = 0;
        pf[n++] = (struct pollfd){.fd = p->wake_fd, .events = POLLIN};
        for (int i = 0; i < p->processes; i++) {
            worker *w = &p->w[i];
            bool live = mp__worker_live(w);
            pf[n++] = (struct pollfd){
                .fd = live && !w->eof ? w->sock : -1,
                .events = (short)(POLLIN | (w->txn ? POLLOUT : 0))};
            pf[n++] = (struct pollfd){.fd = live ? mp__worker_sentinel(w) : -1,
                                      .events = POLLIN};
        }
        int r = poll(pf, n, timeout);
        atomic_store(&p->idle, 0);
        if (r < 0 && errno != EINTR) {
            terminate_all(p); /* cannot wait any more: fail what is left, never hang it */
            finish_submissions(p);
            break;
        }
        if (r <= 0)
            continue;
        if (pf[0].revents) {
            uint64_t v;
            ssize_t k = read(p->wake_fd, &v, sizeof v);
            (void)k;
        }
        for (int i = 0; i < p->processes; i++) {
            worker *w = &p->w[i];
            short rs = pf[1 + 2 * i].revents, ds = pf[2 + 2 * i].revents;
            if (!mp__worker_live(w))
                continue;
            if (rs & (POLLIN | POLLHUP | POLLERR))
                read_worker(p, w);
            if (rs & POLLOUT)
                flush(w);
            if (ds)
                handle_death(p, (size_t)i);
        }
    }
    free(pf);
    atomic_store(&p->thread_done, 1);
    mp__pool_notify();
    return NULL;
}
