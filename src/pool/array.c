/* mp_pool_map_array: a C function over fixed-size elements, through shared memory (a
 * backend's workers, which share none with us: array_msg.c).
 *
 * DESIGN: the pool keeps one shared arena (a memfd, grown by replacement when a call
 * needs more; workers map each generation once, told by an ARENA message that carries
 * the fd). A call copies the input into the arena, sends each worker index ranges
 * (MSG_ARRAY: offsets and sizes, no data), waits, and copies the output back. One call
 * at a time per pool (array_mu) since the arena is one buffer; the ranges ride the same
 * queue, slots and death handling as value tasks. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "pool/pool.h"

#include <dlfcn.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define ARENA_ALIGN ((size_t)2 << 20)

static size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

/* Make the arena at least `need` bytes (a new memfd when it grows). */
static int ensure_arena(mp_pool *p, size_t need)
{
    if (p->arena && p->arena_size >= need)
        return 0;
    size_t size = round_up(need, ARENA_ALIGN);
    int fd = mp__pool_fd_track(memfd_create("multiproc-pool-arena", MFD_CLOEXEC));
    if (fd < 0)
        return mp__errno("pool: memfd for the shared arena");
    if (ftruncate(fd, (off_t)size) < 0) {
        int r = mp__errno("pool: sizing the shared arena to %zu bytes", size);
        mp__pool_fd_close(fd);
        return r;
    }
    void *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) {
        int r = mp__errno("pool: mapping the shared arena");
        mp__pool_fd_close(fd);
        return r;
    }
    pthread_mutex_lock(&p->mu);
    void *old = p->arena;
    size_t old_size = p->arena_size;
    int old_fd = p->arena_fd;
    p->arena = m;
    p->arena_size = size;
    p->arena_fd = fd;
    p->arena_gen++;
    pthread_mutex_unlock(&p->mu);
    /* No range of ours is in flight (array_mu), so nothing reads the old one. */
    if (old)
        munmap(old, old_size);
    if (old_fd >= 0)
        mp__pool_fd_close(old_fd);
    return 0;
}

static chunk *range_chunk(job *j, const mp__array_task *t, size_t idx)
{
    chunk *c = mp__calloc(1, sizeof *c);
    size_t len = sizeof(mp__msg_hdr) + sizeof *t + j->fnloc_len;
    char *b = c ? malloc(len) : NULL;
    if (!b) {
        free(c);
        mp__error(-ENOMEM, "pool: out of memory");
        return NULL;
    }
    mp__msg_hdr h = {.type = MSG_ARRAY, .len = len - sizeof h, .arg = t->count};
    memcpy(b, &h, sizeof h);
    memcpy(b + sizeof h, t, sizeof *t);
    memcpy(b + sizeof h + sizeof *t, j->fnloc, j->fnloc_len);
    c->job = j;
    c->first = idx;
    c->count = 1;
    c->buf = b;
    c->len = len;
    return c;
}

/* The context pointer as a worker can use it: as is under fork; under spawn and
 * forkserver (a new exec, laid out anew) an offset into the main program's image. */
static int place_context(mp_pool *p, void *ctx, mp__array_task *t)
{
    t->context = (uint64_t)(uintptr_t)ctx;
    t->context_rel = MP__CTX_PTR;
    const char *m = mp_context_method(p->ctx);
    if (!ctx || !m || strcmp(m, "fork") == 0)
        return 0;
    Dl_info info;
    struct link_map *lm = NULL;
    if (!dladdr1(ctx, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm || (lm->l_name && lm->l_name[0]))
        return mp__error(MP_EINVAL,
                         "pool_map_array: under %s the context must be NULL or point into the "
                         "program's static data (%p is not)",
                         m, ctx);
    t->context = (uint64_t)((uintptr_t)ctx - (uintptr_t)lm->l_addr);
    t->context_rel = MP__CTX_MAIN;
    return 0;
}

static bool job_done(void *arg) { return atomic_load(&((job *)arg)->done); }

static void free_chunks(chunk *c)
{
    while (c) {
        chunk *nx = c->next;
        mp__chunk_free(c);
        c = nx;
    }
}

/* Queue the ranges built (first..last, adopted) and wait for every one (through signals):
 * 0 or the failure of the lowest range. */
static int array_run(mp_pool *p, job *j, chunk *first, chunk *last)
{
    int r = mp__pool_enqueue(p, first, last, 0);
    if (r < 0) {
        free_chunks(first);
        return r;
    }
    /* The arrays are ours until every range is back: wait even through signals. */
    while ((r = mp__pool_wait_until(job_done, j, -1)) == MP_EINTERRUPTED)
        ;
    if (j->first_code)
        return mp__error(j->first_code, "%s", j->first_msg ? j->first_msg : "");
    return 0;
}

static int run_ranges(mp_pool *p, job *j, mp__array_task base, size_t n, size_t cs,
                      size_t nranges)
{
    chunk *first = NULL, *last = NULL;
    for (size_t k = 0; k < nranges; k++) {
        mp__array_task t = base;
        t.first = k * cs;
        t.count = n - t.first < cs ? n - t.first : cs;
        chunk *c = range_chunk(j, &t, k);
        if (!c) {
            free_chunks(first);
            return -ENOMEM;
        }
        if (last)
            last->next = c;
        else
            first = c;
        last = c;
    }
    return array_run(p, j, first, last);
}

/* The local pool's map_array: through the arena; the context as a pointer (ctx_len 0) or
 * as bytes copied behind the arrays. */
static int map_local(mp_pool *p, mp_array_fn fn, const void *in, size_t in_size, void *out,
                     size_t out_size, size_t n, const void *context, size_t ctx_len,
                     bool ctx_bytes, size_t chunksize)
{
    size_t cs = chunksize ? chunksize : (n + (size_t)p->processes * 2 - 1) /
                                            ((size_t)p->processes * 2);
    size_t nranges = (n + cs - 1) / cs;
    size_t in_bytes = round_up(n * in_size, 64), out_bytes = n * out_size;
    size_t ctx_off = in_bytes + round_up(out_bytes, 64);
    pthread_mutex_lock(&p->array_mu);
    int r = ensure_arena(p, ctx_off + ctx_len);
    job *j = r == 0 ? mp__job_new(p, JOB_ARRAY, nranges, nranges, false) : NULL;
    if (r == 0 && !j)
        r = -ENOMEM;
    if (r == 0)
        r = mp__fn_locate((void (*)(void))(void *)fn, &j->fnloc, &j->fnloc_len);
    if (r == 0) {
        j->time_limit = p->time_limit;
        j->array_n = n;
        j->chunksize = cs;
        memcpy(p->arena, in, n * in_size);
        mp__array_task base = {.in_off = 0, .out_off = in_bytes, .in_size = in_size,
                               .out_size = out_size};
        if (ctx_bytes) {
            if (ctx_len)
                memcpy((char *)p->arena + ctx_off, context, ctx_len);
            base.context = ctx_len ? ctx_off : 0;
            base.context_rel = ctx_len ? MP__CTX_ARENA : MP__CTX_PTR;
        } else {
            r = place_context(p, (void *)context, &base);
        }
        if (r == 0)
            r = run_ranges(p, j, base, n, cs, nranges);
        if (r < 0 && !atomic_load(&j->done))
            mp__job_unref(j); /* never queued: the pool's reference too */
        else if (r == 0)
            memcpy(out, (char *)p->arena + in_bytes, out_bytes);
    }
    if (j)
        mp__job_unref(j);
    pthread_mutex_unlock(&p->array_mu);
    return r;
}

static int map_array(mp_pool *p, mp_array_fn fn, const void *in, size_t in_size, void *out,
                     size_t out_size, size_t n, const void *context, size_t ctx_len,
                     bool ctx_bytes, size_t chunksize)
{
    if (!p || !fn || (n && (!in || !out || !in_size || !out_size)) || (ctx_len && !context))
        return mp__error(MP_EINVAL, "pool_map_array: NULL pool, function or buffers, a "
                                    "zero element size, or a NULL context with a size");
    if (p->backend && context && !ctx_bytes)
        return mp__error(MP_EUNSUPPORTED,
                         "pool_map_array: a context pointer cannot reach %s workers (pass "
                         "NULL, or the context's bytes with mp_pool_map_array_ctx)",
                         p->backend->name);
    if (n == 0)
        return 0;
    if (in_size > SIZE_MAX / n || out_size > SIZE_MAX / n)
        return mp__error(MP_EINVAL, "pool_map_array: %zu elements overflow", n);
    if (p->backend)
        return mp__array_remote(p, fn, in, in_size, out, out_size, n, context, ctx_len,
                                chunksize);
    return map_local(p, fn, in, in_size, out, out_size, n, context, ctx_len, ctx_bytes,
                     chunksize);
}

int mp_pool_map_array(mp_pool *p, mp_array_fn fn, const void *in, size_t in_size, void *out,
                      size_t out_size, size_t n, void *context, size_t chunksize)
{
    return map_array(p, fn, in, in_size, out, out_size, n, context, 0, false, chunksize);
}

int mp_pool_map_array_ctx(mp_pool *p, mp_array_fn fn, const void *in, size_t in_size,
                          void *out, size_t out_size, size_t n, const void *context,
                          size_t context_size, size_t chunksize)
{
    return map_array(p, fn, in, in_size, out, out_size, n, context, context_size, true,
                     chunksize);
}
