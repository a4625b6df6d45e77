/* mp_pool_map_array on a backend's workers (MPI ranks): the elements travel in the
 * messages, as raw bytes.
 *
 * DESIGN: a backend's worker shares no memory with us, so each range (MSG_ARRAY |
 * MSG_INLINE) carries the function's location, the context's bytes and its input
 * elements, copied once from the caller's array into the chunk's message (a kept block:
 * src/pool/bigbuf.c); the worker
 * calls fn on them in place and answers with the output elements (MSG_RESULT, arg 0),
 * which the result thread copies straight into the caller's array (mp__array_take); a
 * failing element answers with its code and message instead, as in the arena path. No
 * MessagePack, no arena, no new message type: the relay carries these frames as any
 * (src/mpi/pool_relay.c: a frame of 64 KiB+ passes between the result thread and the
 * relay by pointer, both ways).
 * Ranges are queued as they are built (the first is on its way while the next is
 * copied), about 4 per worker, at most CHUNK_BYTES each way (a large array pipelines:
 * a rank computes one range while the next travels). Ranges of one call and their
 * failures go through the job as the arena path's do (lowest range's failure wins; a
 * dead worker fails the ranges it held with MP_EWORKERDIED). Calls need no lock: each
 * has its own buffers. */
#include "internal/common.h"
#include "pool/pool.h"

#include <stdlib.h>
#include <string.h>

#define CHUNK_BYTES ((size_t)4 << 20) /* a range's elements, at most (unless one is larger) */
#define MAX_RANGE ((size_t)256 << 20) /* a range whatever the chunksize: an MPI message
                                          counts its bytes in an int */

static size_t round16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Range k of the call: [task][fn location][pad][context][pad][elements][pad], each part
 * 16-byte aligned from the frame's start (the frame's length too, so that the next frame
 * in the worker's stream is aligned as well). */
static chunk *range_msg(job *j, size_t k, size_t cs, const char *in, size_t in_size,
                        const void *ctx, size_t ctx_len)
{
    size_t hs = sizeof(mp__msg_hdr);
    mp__array_task t = {.in_size = in_size, .out_size = j->array_out_size, .first = k * cs,
                        .context = ctx_len, .context_rel = MP__CTX_INLINE};
    t.count = j->array_n - t.first < cs ? j->array_n - t.first : cs;
    t.out_off = round16(hs + sizeof t + j->fnloc_len) - hs;
    t.in_off = round16(hs + t.out_off + ctx_len) - hs;
    size_t bytes = t.count * in_size, len = round16(hs + t.in_off + bytes);
    chunk *c = mp__calloc(1, sizeof *c);
    char *b = c ? mp__big_alloc(len) : NULL; /* let go of by mp__txbuf_unref, on MPI */
    if (!b) {
        free(c);
        mp__error(-ENOMEM, "pool_map_array: out of memory for a range of %zu bytes", len);
        return NULL;
    }
    mp__msg_hdr h = {.type = MSG_ARRAY | MSG_INLINE, .len = len - hs, .arg = t.count};
    char *body = b + hs;
    memset(body, 0, t.in_off); /* the pads: no stray bytes on the wire */
    memcpy(b, &h, hs);
    memcpy(body, &t, sizeof t);
    memcpy(body + sizeof t, j->fnloc, j->fnloc_len);
    if (ctx_len)
        memcpy(body + t.out_off, ctx, ctx_len);
    memcpy(body + t.in_off, in + t.first * in_size, bytes);
    memset(body + t.in_off + bytes, 0, len - hs - t.in_off - bytes);
    c->job = j;
    c->first = k;
    c->count = 1;
    c->buf = b;
    c->len = len;
    return c;
}

/* Queue the ranges as they are built (ENQ_BEGIN, ENQ_CONT, ENQ_END as a map's parts):
 * 0, or the refusal of the first (nothing queued then). Out of memory once begun, the
 * ranges left fail through a spare chunk. */
static int queue_ranges(mp_pool *p, job *j, size_t cs, size_t nranges, const char *in,
                        size_t in_size, const void *ctx, size_t ctx_len)
{
    chunk *spare = nranges > 1 ? mp__calloc(1, sizeof *spare) : NULL;
    if (nranges > 1 && !spare)
        return -ENOMEM;
    for (size_t k = 0; k < nranges; k++) {
        bool end = k + 1 == nranges;
        chunk *c = range_msg(j, k, cs, in, in_size, ctx, ctx_len);
        if (!c && k == 0) {
            mp__chunk_free(spare);
            return -ENOMEM;
        }
        if (!c) { /* fail the rest and end the call */
            c = spare;
            spare = NULL;
            c->job = j;
            c->first = k;
            c->count = nranges - k;
            mp__chunk_fail(c, -ENOMEM, "pool_map_array: out of memory for a range");
            end = true;
        }
        int flags = k ? ENQ_CONT | (end ? ENQ_END : 0) : end ? 0 : ENQ_BEGIN;
        int r = mp__pool_enqueue(p, c, c, flags);
        if (r < 0) { /* only the first can be refused */
            mp__chunk_free(c);
            mp__chunk_free(spare);
            return r;
        }
        if (end)
            break;
    }
    mp__chunk_free(spare);
    return 0;
}

static bool job_done(void *arg) { return atomic_load(&((job *)arg)->done); }

int mp__array_remote(mp_pool *p, mp_array_fn fn, const void *in, size_t in_size, void *out,
                     size_t out_size, size_t n, const void *ctx, size_t ctx_len,
                     size_t chunksize)
{
    size_t big = in_size > out_size ? in_size : out_size;
    if (big > MAX_RANGE || ctx_len > MAX_RANGE)
        return mp__error(MP_EINVAL,
                         "pool_map_array: elements (%zu bytes) or a context (%zu bytes) over "
                         "256 MiB cannot travel to %s workers",
                         big, ctx_len, p->backend->name);
    size_t per = (size_t)p->processes * 4;
    size_t cs = chunksize ? chunksize : (n + per - 1) / per;
    size_t most = CHUNK_BYTES / big ? CHUNK_BYTES / big : 1;
    if (!chunksize && cs > most)
        cs = most;
    if (cs > MAX_RANGE / big)
        cs = MAX_RANGE / big;
    size_t nranges = (n + cs - 1) / cs;
    job *j = mp__job_new(p, JOB_ARRAY, nranges, nranges, false);
    if (!j)
        return mp__error(-ENOMEM, "pool_map_array: out of memory");
    int r = mp__fn_locate((void (*)(void))(void *)fn, &j->fnloc, &j->fnloc_len);
    j->array_out = out;
    j->array_n = n;
    j->array_out_size = out_size;
    j->chunksize = cs;
    if (r == 0)
        r = queue_ranges(p, j, cs, nranges, in, in_size, ctx, ctx_len);
    if (r < 0) {
        mp__job_unref(j); /* never queued: the pool's reference too */
        mp__job_unref(j);
        return r;
    }
    /* The caller's arrays are ours until every range is back: wait even through signals. */
    while (mp__pool_wait_until(job_done, j, -1) == MP_EINTERRUPTED)
        ;
    r = j->first_code ? mp__error(j->first_code, "%s", j->first_msg ? j->first_msg : "") : 0;
    mp__job_unref(j);
    return r;
}

int mp__array_take(chunk *c, const mp__msg *m)
{
    job *j = c->job;
    size_t first = c->first * j->chunksize;
    size_t count = j->array_n - first < j->chunksize ? j->array_n - first : j->chunksize;
    if (c->count != 1 || first >= j->array_n || m->h.len != count * j->array_out_size)
        return mp__error(MP_EPROTO, "pool_map_array: range %zu came back with %llu bytes, "
                                    "not %zu",
                         c->first, (unsigned long long)m->h.len, count * j->array_out_size);
    memcpy(j->array_out + first * j->array_out_size, m->body, (size_t)m->h.len);
    return 0;
}

const char *mp__array_elements(const chunk *c, size_t *lo, size_t *hi)
{
    const job *j = c->job;
    size_t cs = j->chunksize ? j->chunksize : 1;
    *lo = c->first * cs;
    *hi = (c->first + c->count) * cs;
    *hi = (*hi < j->array_n ? *hi : j->array_n) - 1;
    return "elements";
}
