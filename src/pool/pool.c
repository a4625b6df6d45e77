/* The pool object: creation, workers' start and reaping, close/terminate/join/free.
 *
 * DESIGN: mp_pool_new starts the result thread (loop.c) and waits while that thread
 * starts every worker and waits for each one's READY (so a failing initializer fails
 * the creation). The result thread owns the workers: it alone starts them (so it is
 * every worker's parent thread, which PR_SET_PDEATHSIG follows: a pool created by a
 * thread that then exits keeps its workers), replaces, reaps, sends and reads. Other threads talk to it through p->mu (submission queue,
 * state) and the eventfd p->wake_fd. Lock order: p->mu, then nothing (the result thread
 * never calls user code while holding it). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "multiproc/signals.h"
#include "pool/pool.h"
#include "process/proc.h"

#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *worker_prefix(mp_context *ctx)
{
    const char *m = mp_context_method(ctx);
    if (m && strcmp(m, "spawn") == 0)
        return "SpawnPoolWorker";
    if (m && strcmp(m, "forkserver") == 0)
        return "ForkServerPoolWorker";
    return "ForkPoolWorker";
}

int mp__pool_start_worker(mp_pool *p, size_t i)
{
    if (p->backend)
        return mp__pool_start_remote(p, i);
    worker *w = &p->w[i];
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return mp__errno("pool: socketpair for a worker");
    mp__pool_fd_track(sv[0]);
    mp__pool_fd_track(sv[1]);
    mp__worker_ctl ctl = {.sock = sv[1], .slots_fd = p->slots_fd};
    mp_value *loc = p->initloc ? mp_value_bytes(p->initloc, p->initloc_len) : mp_value_nil();
    const char *method = mp_context_method(p->ctx);
    int parent = method && strcmp(method, "forkserver") == 0 ? 0 : (int)getpid();
    mp_value *args = mp_value_pack("[h i i i f o O i]", &mp__pool_worker_kind, &ctl, (int)i,
                                   p->processes, (int)p->maxtasks, p->time_limit, loc,
                                   p->initargs, parent);
    int r = args ? 0 : mp_last_error_code();
    mp_process *proc = NULL;
    if (r == 0) {
        mp_process_opts po = {.target = mp__pool_worker_main, .args = args, .daemon = true,
                              .ctx = p->ctx};
        proc = mp_process_new(&po);
        r = proc ? mp__process_rename(proc, p->prefix) : mp_last_error_code();
    }
    atomic_store(&p->slots[i].chunk, 0);
    if (r == 0)
        r = mp_process_start(proc);
    mp_value_free(args);
    mp__pool_fd_close(sv[1]);
    if (r < 0) {
        mp_process_free(proc);
        mp__pool_fd_close(sv[0]);
        return r;
    }
    mp__set_nonblock(sv[0], true);
    memset(w, 0, sizeof *w);
    w->proc = proc;
    w->sock = sv[0];
    w->pid = mp_process_pid(proc);
    return 0;
}

void mp__pool_reap_worker(mp_pool *p, size_t i, int *exitcode)
{
    worker *w = &p->w[i];
    *exitcode = 255;
    if (w->proc) {
        if (mp_process_join(w->proc, 5.0) == MP_ETIMEOUT) {
            mp_process_kill(w->proc);
            mp_process_join(w->proc, -1);
        }
        mp_process_exitcode(w->proc, exitcode);
        mp_process_free(w->proc);
    }
    if (w->sock >= 0)
        mp__pool_fd_close(w->sock);
    if (w->remote) {
        if (w->sentinel >= 0)
            mp__pool_fd_close(w->sentinel);
        w->sentinel = -1;
        w->remote = false;
        w->gone = true;
        *exitcode = 0;
    }
    mp__rx_free(&w->rx);
    w->proc = NULL;
    w->sock = -1;
}

/* What an exit code means, for messages: "killed by signal 9 (SIGKILL)". */
void mp__pool_describe_exit(int code, char *buf, size_t cap)
{
    if (code < 0) {
        const char *n = mp_signal_name(-code);
        snprintf(buf, cap, "killed by signal %d (%s)", -code, n ? n : "?");
    } else {
        snprintf(buf, cap, "exited with status %d", code);
    }
}

static bool terminating(mp_pool *p)
{
    pthread_mutex_lock(&p->mu);
    bool t = p->state == 2;
    pthread_mutex_unlock(&p->mu);
    return t;
}

static int await_ready(mp_pool *p, size_t i)
{
    worker *w = &p->w[i];
    for (;;) {
        mp__msg m = {0};
        int got = mp__rx_next(&w->rx, &m);
        if (got < 0)
            return got;
        if (got == 1) {
            int r = 0;
            if (m.h.type == MSG_READY) {
                w->ready = true;
            } else if (m.h.type == MSG_INIT_FAIL && m.h.len >= 4) {
                int32_t code;
                memcpy(&code, m.body, 4);
                r = mp__error(code < 0 ? code : MP_EINVAL, "pool initializer failed: %.*s",
                              (int)(m.h.len - 4), m.body + 4);
            } else {
                r = mp__error(MP_EPROTO, "pool: unexpected message %u from a new worker",
                              m.h.type);
            }
            mp__msg_clear(&m);
            return r;
        }
        struct pollfd pf[3] = {{.fd = w->sock, .events = POLLIN},
                               {.fd = mp__worker_sentinel(w), .events = POLLIN},
                               {.fd = p->wake_fd, .events = POLLIN}};
        int pr = poll(pf, 3, -1);
        if (pr < 0 && errno == EINTR)
            continue;
        if (pf[2].revents && terminating(p))
            return mp__error(MP_EINTERRUPTED, "pool creation was interrupted");
        if (pf[0].revents) {
            int f = mp__rx_fill(&w->rx, w->sock, true);
            if (f == 1 || f == -EAGAIN)
                continue;
        } else if (!pf[1].revents) {
            continue;
        }
        /* Gone before READY: no initializer message came. */
        char who[160], what[160];
        mp__pool_reap_describe(p, i, who, sizeof who, what, sizeof what);
        return mp__error(MP_EWORKERDIED, "pool worker %s %s while starting", who, what);
    }
}

int mp__pool_start_all(mp_pool *p)
{
    int r = 0;
    for (int i = 0; r == 0 && i < p->processes; i++)
        r = mp__pool_start_worker(p, (size_t)i);
    for (int i = 0; r == 0 && i < p->processes; i++)
        r = await_ready(p, (size_t)i);
    return r;
}

static int setup(mp_pool *p, const mp_pool_opts *o)
{
    p->processes = o->processes > 0 ? o->processes : mp_cpu_count();
    p->slots_fd = p->wake_fd = p->arena_fd = -1;
    p->initializer = o->initializer;
    p->maxtasks = o->maxtasksperchild;
    p->ctx = o->ctx;
    p->prefix = worker_prefix(o->ctx);
    p->time_limit = o->task_time_limit > 0 ? o->task_time_limit : 0; /* <0, 0: none */
    pthread_mutex_init(&p->mu, NULL);
    pthread_mutex_init(&p->array_mu, NULL);
    pthread_mutex_init(&p->cache_mu, NULL);
    if (isnan(o->task_time_limit) || o->processes < 0)
        return mp__error(MP_EINVAL, "pool: processes must not be negative, task_time_limit "
                                    "not NaN");
    if (o->backend) {
        int r = mp__pool_open_backend(p, o);
        if (r < 0)
            return r;
    }
    if (o->initializer) {
        int r = mp__fn_locate((void (*)(void))(void *)o->initializer, &p->initloc,
                              &p->initloc_len);
        if (r < 0)
            return r;
    }
    p->initargs = o->initargs ? mp_value_copy(o->initargs) : mp_value_nil();
    p->w = mp__calloc((size_t)p->processes, sizeof *p->w);
    if (!p->initargs || !p->w)
        return -ENOMEM;
    for (int i = 0; i < p->processes; i++)
        p->w[i].sock = p->w[i].sentinel = -1;
    size_t sz = (size_t)p->processes * sizeof(mp__slot);
    p->slots_fd = mp__pool_fd_track(memfd_create("multiproc-pool-slots", MFD_CLOEXEC));
    if (p->slots_fd < 0 || ftruncate(p->slots_fd, (off_t)sz) < 0)
        return mp__errno("pool: shared slots");
    p->slots = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED, p->slots_fd, 0);
    if (p->slots == MAP_FAILED) {
        p->slots = NULL;
        return mp__errno("pool: mapping shared slots");
    }
    p->wake_fd = mp__pool_fd_track(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (p->wake_fd < 0)
        return mp__errno("pool: eventfd");
    return 0;
}

static void destroy(mp_pool *p)
{
    for (int i = 0; p->w && i < p->processes; i++)
        if (mp__worker_live(&p->w[i]) || p->w[i].sock >= 0) {
            int code;
            mp__worker_kill(p, (size_t)i);
            mp__pool_reap_worker(p, (size_t)i, &code);
        }
    if (p->backend)
        p->backend->close(p->be_state);
    chunk *c = p->pending;
    while (c) {
        chunk *n = c->next;
        mp__chunk_free(c);
        c = n;
    }
    free(p->w);
    if (p->slots)
        munmap(p->slots, (size_t)p->processes * sizeof(mp__slot));
    if (p->slots_fd >= 0)
        mp__pool_fd_close(p->slots_fd);
    if (p->wake_fd >= 0)
        mp__pool_fd_close(p->wake_fd);
    if (p->arena)
        munmap(p->arena, p->arena_size);
    if (p->arena_fd >= 0)
        mp__pool_fd_close(p->arena_fd);
    mp_value_free(p->initargs);
    free(p->initloc);
    pthread_mutex_destroy(&p->mu);
    pthread_mutex_destroy(&p->array_mu);
    mp__chunk_cache_free(p);
    pthread_mutex_destroy(&p->cache_mu);
    free(p);
    mp__big_trim(); /* the large blocks kept for the next messages (the backend is closed) */
}

static bool started(void *arg) { return atomic_load(&((mp_pool *)arg)->started) != 0; }

/* Wait for the result thread to start the workers. A signal handler that interrupts
 * the wait stops the creation (the thread gives up, the caller gets its code). */
static int await_started(mp_pool *p)
{
    int r = mp__pool_wait_until(started, p, -1);
    if (r < 0) {
        pthread_mutex_lock(&p->mu);
        p->state = 2;
        pthread_mutex_unlock(&p->mu);
        mp__pool_wake(p);
        while (mp__pool_wait_until(started, p, -1) < 0)
            ;
        return r;
    }
    if (atomic_load(&p->started) > 0)
        return 0;
    return mp__error(p->start_code, "%s", p->start_msg);
}

mp_pool *mp_pool_new(const mp_pool_opts *opts)
{
    mp_pool_opts defaults = {0};
    const mp_pool_opts *o = opts ? opts : &defaults;
    mp_pool *p = mp__calloc(1, sizeof *p);
    if (!p)
        return NULL;
    int r = setup(p, o);
    if (r == 0) {
        /* The result thread takes no signals: deferred handlers run in the user's
         * threads, in their blocking calls. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int e = pthread_create(&p->thread, NULL, mp__pool_thread, p);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (e)
            r = mp__error(-e, "pool: starting the result thread");
        else
            p->thread_started = true;
    }
    if (r == 0)
        r = await_started(p);
    if (r < 0) {
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", mp__last_error_detail());
        if (p->thread_started)
            pthread_join(p->thread, NULL);
        destroy(p);
        mp__error(r, "%s", msg);
        return NULL;
    }
    return p;
}

int mp_pool_processes(const mp_pool *p) { return p ? p->processes : 0; }

static int set_state(mp_pool *p, int state)
{
    if (!p)
        return mp__error(MP_EINVAL, "pool: NULL pool");
    pthread_mutex_lock(&p->mu);
    if (p->state < state)
        p->state = state;
    pthread_mutex_unlock(&p->mu);
    mp__pool_wake(p);
    return 0;
}

int mp_pool_close(mp_pool *p) { return set_state(p, 1); }
int mp_pool_terminate(mp_pool *p) { return set_state(p, 2); }

static bool thread_done(void *arg) { return atomic_load(&((mp_pool *)arg)->thread_done); }

int mp_pool_join(mp_pool *p, double timeout)
{
    if (!p)
        return mp__error(MP_EINVAL, "pool: NULL pool");
    pthread_mutex_lock(&p->mu);
    int state = p->state;
    pthread_mutex_unlock(&p->mu);
    if (state == 0)
        return mp__error(MP_ESTATE, "Pool is still running (close or terminate it first)");
    if (p->joined)
        return 0;
    int r = mp__pool_wait_until(thread_done, p, mp__deadline(timeout));
    if (r < 0)
        return r == MP_ETIMEOUT ? mp__error(r, "pool: join timed out") : r;
    pthread_mutex_lock(&p->mu);
    if (!p->joined && p->thread_started) {
        pthread_join(p->thread, NULL);
        p->joined = true;
    }
    pthread_mutex_unlock(&p->mu);
    return 0;
}

void mp_pool_free(mp_pool *p)
{
    if (!p)
        return;
    if (p->thread_started && !p->joined) {
        /* Pending work is abandoned: its results fail with MP_ECLOSED. */
        mp_pool_terminate(p);
        while (mp_pool_join(p, -1) == MP_EINTERRUPTED)
            ;
    }
    destroy(p);
}
