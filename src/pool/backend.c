/* Workers that are not local processes: a backend (mp_pool_opts.backend) starts them and
 * gives each a stream socket and a sentinel fd; this file is the loop's one view of a
 * worker, local or not (liveness, sentinel, kill, terminate, reaping with a description).
 *
 * Large messages (MP__HAND_BYTES+) go by pointer when the backend can take them (give,
 * take): the socket carries a MSG_HANDED notice in their place, so their order among the
 * small messages on the same socket is what it would be; a handed chunk's bytes are
 * shared with the backend (mp__txbuf, counted references), since the chunk goes to
 * another worker if this one dies while the backend may still be sending them.
 *
 * DESIGN: called on the result thread alone (the owner of w[]), except mp__pool_open_backend
 * (mp_pool_new's thread, before the result thread starts); mp__txbuf_unref from any
 * thread (the last reference, the chunk's or the backend's, frees). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "pool/pool.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int mp__pool_open_backend(mp_pool *p, const mp_pool_opts *o)
{
    const mp_pool_backend *b = o->backend;
    if (o->maxtasksperchild || o->task_time_limit > 0)
        return mp__error(MP_EUNSUPPORTED,
                         "pool: the %s backend cannot honour %s (its workers are not "
                         "replaced or watched per task)",
                         b->name, o->maxtasksperchild ? "maxtasksperchild" : "task_time_limit");
    int n = b->open(o, &p->be_state);
    if (n < 0)
        return n;
    p->backend = b;
    p->processes = n;
    p->prefix = b->prefix;
    return 0;
}

int mp__pool_start_remote(mp_pool *p, size_t i)
{
    worker *w = &p->w[i];
    if (w->gone)
        return mp__error(MP_EWORKERDIED, "pool: %s workers are not replaced",
                         p->backend->name);
    mp_value *loc = p->initloc ? mp_value_bytes(p->initloc, p->initloc_len) : mp_value_nil();
    mp_value *boot = mp_value_pack("[i o O]", (int)i, loc, p->initargs);
    if (!boot)
        return mp_last_error_code();
    int sock = -1, sentinel = -1;
    int r = p->backend->start(p->be_state, i, boot, &sock, &sentinel);
    mp_value_free(boot);
    if (r < 0)
        return r;
    memset(w, 0, sizeof *w);
    w->remote = true;
    w->sock = mp__pool_fd_track(sock);
    w->sentinel = mp__pool_fd_track(sentinel);
    mp__set_nonblock(sock, true);
    return 0;
}

void mp__txbuf_unref(mp__txbuf *t)
{
    if (t && atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) {
        mp__big_free(t->data);
        free(t);
    }
}

chunk *mp__pool_hand(mp_pool *p, size_t i, chunk *c)
{
    if (!p->backend->give || c->len < MP__HAND_BYTES || c->nfds || !c->buf)
        return c;
    if (!c->tb) { /* the chunk's reference; buf stays where it is, owned by tb */
        c->tb = malloc(sizeof *c->tb);
        if (!c->tb)
            return c;
        *c->tb = (mp__txbuf){.refs = 1, .data = c->buf, .len = c->len};
    }
    chunk *n = calloc(1, sizeof *n);
    char *b = n ? malloc(sizeof(mp__msg_hdr)) : NULL;
    if (!b) {
        free(n);
        return c;
    }
    atomic_fetch_add_explicit(&c->tb->refs, 1, memory_order_relaxed); /* the backend's */
    if (p->backend->give(p->be_state, i, c->tb) < 0) {
        atomic_fetch_sub_explicit(&c->tb->refs, 1, memory_order_relaxed);
        free(b);
        free(n);
        return c;
    }
    mp__msg_hdr h = {.type = MSG_HANDED, .id = c->id};
    memcpy(b, &h, sizeof h);
    n->buf = b; /* a control message (no job): freed once written, or at the worker's end */
    n->len = sizeof h;
    return n;
}

int mp__pool_take(mp_pool *p, size_t i, char **buf, size_t *len)
{
    if (!p->backend->take || p->backend->take(p->be_state, i, buf, len) < 0)
        return mp__error(MP_EPROTO, "pool: a handed message from %s worker %zu is missing",
                         p->backend->name, i + 1);
    return 0;
}

int mp__worker_sentinel(const worker *w)
{
    if (w->proc)
        return mp_process_sentinel(w->proc);
    return w->remote ? w->sentinel : -1;
}

void mp__worker_kill(mp_pool *p, size_t i)
{
    worker *w = &p->w[i];
    if (w->proc)
        mp_process_kill(w->proc);
    else if (w->remote)
        p->backend->stop(p->be_state, i);
}

void mp__worker_terminate(mp_pool *p, size_t i)
{
    worker *w = &p->w[i];
    if (w->proc)
        mp_process_terminate(w->proc);
    else if (w->remote)
        p->backend->stop(p->be_state, i);
}

void mp__pool_reap_describe(mp_pool *p, size_t i, char *who, size_t wcap, char *how,
                            size_t hcap)
{
    worker *w = &p->w[i];
    if (w->remote) {
        p->backend->reap(p->be_state, i, who, wcap, how, hcap);
        int code;
        mp__pool_reap_worker(p, i, &code);
        return;
    }
    const char *name = w->proc ? mp_process_name(w->proc) : NULL;
    snprintf(who, wcap, "%s (pid %d)", name ? name : "?", (int)w->pid);
    int code;
    mp__pool_reap_worker(p, i, &code);
    mp__pool_describe_exit(code, how, hcap);
}
