/* Process-shared queues: creating, attaching and freeing one, its sizes, and the
 * "queue" kind that passes it to other processes (the memfd travels). How the queue
 * works inside: see q.h. */
#define _GNU_SOURCE
#include "queue/q.h"

#include "internal/value.h"

#include <stdlib.h>
#include <string.h>

static mp_queue *attach(mp__shm *shm)
{
    mp_queue *q = mp__calloc(1, sizeof *q);
    if (!q) {
        mp__shm_release(shm);
        return NULL;
    }
    q->shm = *shm;
    q->s = shm->addr;
    q->ring = (unsigned char *)shm->addr + Q_HDR;
    q->mask = q->s->capacity - 1;
    q->slot = Q_NO_SLOT;
    /* The consumers' view of the tail (take.c): only where the head's item count has 40
     * bits or more, so a stale view cannot pass for a fresh one. */
    if (64 - q->s->posbits >= 40)
        q->tail_cache_max = q->s->capacity / 8; /* as many items as it holds (word records) */
    return q;
}

mp_queue *mp_queue_new(const mp_queue_opts *opts)
{
    static const mp_queue_opts defaults;
    if (!opts)
        opts = &defaults;
    uint64_t cap = opts->capacity ? opts->capacity : Q_DEFAULT_CAP;
    if (cap > ((uint64_t)1 << 40)) {
        mp__error(MP_EINVAL, "queue capacity %zu is too large", opts->capacity);
        return NULL;
    }
    uint64_t pow2 = 4096;
    while (pow2 < cap)
        pow2 <<= 1;
    mp__shm shm;
    if (mp__shm_create(&shm, Q_HDR + pow2, "mp-queue") < 0)
        return NULL;
    struct qshared *s = shm.addr;
    s->capacity = pow2;
    s->posbits = (uint32_t)__builtin_ctzll(pow2) + 1; /* positions modulo 2 * capacity */
    s->maxsize = opts->maxsize;
    s->joinable = opts->joinable;
    s->dead_tasks_done = opts->dead_tasks_done;
    if (mp__rf_init(&s->lock) < 0 || mp__rf_init(&s->wlock) < 0 ||
        mp__rf_init(&s->rlock) < 0) {
        mp__shm_release(&shm);
        return NULL;
    }
    s->version = Q_VERSION;
    atomic_thread_fence(memory_order_seq_cst);
    s->magic = Q_MAGIC;
    return attach(&shm);
}

mp_queue *mp_simple_queue_new(void) { return mp_queue_new(NULL); }

mp_queue *mp_joinable_queue_new(const mp_queue_opts *opts)
{
    mp_queue_opts o = opts ? *opts : (mp_queue_opts){0};
    o.joinable = true;
    return mp_queue_new(&o);
}

void mp_queue_free(mp_queue *q)
{
    if (!q)
        return;
    mp__shm_release(&q->shm);
    free(q);
}

int mp_queue_close(mp_queue *q)
{
    if (q)
        q->closed = true;
    return 0;
}

bool mp_queue_closed(const mp_queue *q) { return !q || q->closed; }

int mp__q_check_open_slow(const mp_queue *q)
{
    if (!q)
        return mp__error(MP_EINVAL, "queue is NULL");
    if (q->closed)
        return mp__error(MP_ECLOSED, "queue is closed");
    return 0;
}

size_t mp_queue_qsize(const mp_queue *q)
{
    if (!q)
        return 0;
    const struct qshared *s = q->s;
    /* Head first: the tail only moves forward, so the difference is never negative. */
    uint64_t h = atomic_load_explicit(&s->headw, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&s->tailw, memory_order_acquire);
    return (size_t)(items_between(s, h, t) +
                    atomic_load_explicit(&s->active_pub, memory_order_acquire));
}

bool mp_queue_empty(const mp_queue *q) { return mp_queue_qsize(q) == 0; }

bool mp_queue_full(const mp_queue *q)
{
    return q && q->s->maxsize && mp_queue_qsize(q) >= q->s->maxsize;
}

size_t mp_queue_maxsize(const mp_queue *q) { return q ? (size_t)q->s->maxsize : 0; }

static int queue_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    mp_queue *q = obj;
    *data = malloc(1);
    if (!*data)
        return mp__error(-ENOMEM, "exporting a queue");
    *len = 0;
    fds[0] = q->shm.fd;
    *nfds = 1;
    return 0;
}

static int queue_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    (void)data;
    (void)len;
    if (nfds != 1) {
        for (size_t i = 0; i < nfds; i++)
            mp__close(fds[i]);
        return mp__error(MP_EPROTO, "bad queue handle (%zu fds)", nfds);
    }
    mp__shm shm;
    int code = mp__shm_attach(&shm, fds[0], Q_HDR + 4096);
    if (code < 0)
        return code;
    struct qshared *s = shm.addr;
    if (s->magic != Q_MAGIC || s->version != Q_VERSION || shm.size != Q_HDR + s->capacity ||
        s->posbits != (uint32_t)__builtin_ctzll(s->capacity) + 1) {
        mp__shm_release(&shm);
        return mp__error(MP_EPROTO, "shared segment is not a queue");
    }
    mp_queue *q = attach(&shm);
    if (!q)
        return -ENOMEM;
    *obj = q;
    return 0;
}

static void queue_release(void *obj) { mp_queue_free(obj); }

const mp_kind mp_kind_queue = {
    .name = "queue",
    .export_obj = queue_export,
    .import_obj = queue_import,
    .release_obj = queue_release,
};

__attribute__((constructor(200))) static void queue_register(void)
{
    mp_kind_register(&mp_kind_queue);
}
