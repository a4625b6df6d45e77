/* Waiting on results and taking items from iterators.
 *
 * DESIGN: the result thread publishes with release stores (an item's state, a job's
 * done flag) and then bumps mp__pool_seq; readers here load with acquire and sleep on
 * mp__pool_seq (mp__pool_wait_until: a futex wait that runs pending deferred signal
 * handlers when a signal interrupts it); a reader whose item is already there does not
 * register as a waiter at all. An iterator is used by one thread at a time: it alone
 * advances `consumed` (and take_slot, its ring position: a 64-bit division per item
 * was a third of next's time), and next hands over the ring slot's value (no copy). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "pool/pool.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static bool job_done(void *arg)
{
    return atomic_load_explicit(&((job *)arg)->done, memory_order_acquire);
}

int mp_pool_result_wait(mp_pool_result *r, double timeout)
{
    if (!r)
        return mp__error(MP_EINVAL, "pool: NULL result");
    int e = mp__pool_wait_until(job_done, r->j, mp__deadline(timeout));
    if (e == MP_ETIMEOUT)
        return mp__error(e, "pool: the result is not ready");
    return e;
}

int mp_pool_result_get(mp_pool_result *r, double timeout, const mp_value **out)
{
    if (!r || !out)
        return mp__error(MP_EINVAL, "pool: NULL result or output pointer");
    int e = mp_pool_result_wait(r, timeout);
    if (e < 0)
        return e;
    job *j = r->j;
    if (j->first_code)
        return mp__error(j->first_code, "%s", j->first_msg ? j->first_msg : "");
    *out = j->value;
    return 0;
}

bool mp_pool_result_ready(const mp_pool_result *r) { return r && job_done(r->j); }

int mp_pool_result_successful(const mp_pool_result *r)
{
    if (!r)
        return mp__error(MP_EINVAL, "pool: NULL result");
    if (!job_done(r->j))
        return mp__error(MP_ESTATE, "the result is not ready");
    return r->j->first_code == 0;
}

size_t mp_pool_result_len(const mp_pool_result *r) { return r ? r->j->n : 0; }

int mp_pool_result_item(const mp_pool_result *r, size_t i, const mp_value **out)
{
    if (!r || !out)
        return mp__error(MP_EINVAL, "pool: NULL result or output pointer");
    job *j = r->j;
    if (!job_done(j))
        return mp__error(MP_ESTATE, "the result is not ready");
    if (i >= j->n || j->kind == JOB_ARRAY)
        return mp__error(MP_ERANGE, "pool: item %zu of a call of %zu", i, j->n);
    if (j->codes && j->codes[i])
        return mp__error(j->codes[i], "%s", j->msgs[i] ? j->msgs[i] : "");
    /* A map's values live in its result list now; apply's single one is the value. */
    const mp_value *lst = j->kind == JOB_MAP ? j->value : NULL;
    *out = lst ? mp_value_list_get(lst, i) : j->kind == JOB_APPLY ? j->value : NULL;
    if (!*out && j->kind != JOB_APPLY)
        return mp__error(-ENOMEM, "pool: the map's result list could not be built");
    return 0;
}

typedef struct any {
    mp_pool_result *const *rs;
    size_t n;
    int found;
} any;

static bool any_done(void *arg)
{
    any *a = arg;
    for (size_t i = 0; i < a->n; i++)
        if (job_done(a->rs[i]->j)) {
            a->found = (int)i;
            return true;
        }
    return false;
}

int mp_pool_wait_any(mp_pool_result *const *results, size_t n, double timeout)
{
    if (!results || !n)
        return mp__error(MP_EINVAL, "pool: wait_any needs results");
    for (size_t i = 0; i < n; i++)
        if (!results[i])
            return mp__error(MP_EINVAL, "pool: wait_any: result %zu is NULL", i);
    any a = {.rs = results, .n = n, .found = -1};
    int e = mp__pool_wait_until(any_done, &a, mp__deadline(timeout));
    if (e == MP_ETIMEOUT)
        return mp__error(e, "pool: none of %zu results is ready", n);
    return e < 0 ? e : a.found;
}

void mp_pool_result_free(mp_pool_result *r)
{
    if (!r)
        return;
    job *j = r->j;
    if (r != &j->handle)
        free(r);
    mp__job_unref(j);
}

/* ---- iterators ----------------------------------------------------------------------- */

static bool at_end(job *j, size_t c)
{
    if (j->source)
        return atomic_load_explicit(&j->source_done, memory_order_acquire) && c == j->n;
    return c == j->n;
}

static bool next_ready(void *arg)
{
    job *j = arg;
    size_t c = atomic_load(&j->consumed);
    if (at_end(j, c))
        return true;
    return atomic_load_explicit(&j->items[j->take_slot].state, memory_order_acquire) == 1;
}

int mp_pool_iter_next(mp_pool_iter *it, double timeout, mp_value **out)
{
    if (!it || !out)
        return mp__error(MP_EINVAL, "pool: NULL iterator or output pointer");
    job *j = it->j;
    if (!next_ready(j)) { /* else no need to register as a waiter */
        int e = mp__pool_wait_until(next_ready, j, mp__deadline(timeout));
        if (e < 0)
            return e == MP_ETIMEOUT ? mp__error(e, "pool: no result in time") : e;
    }
    size_t c = atomic_load(&j->consumed);
    if (at_end(j, c)) {
        if (j->source_code) {
            int code = j->source_code;
            j->source_code = 0;
            return mp__error(code, "%s", j->source_msg ? j->source_msg : "");
        }
        return 0;
    }
    item *s = &j->items[j->take_slot];
    if (++j->take_slot >= j->cap)
        j->take_slot = 0;
    int code = s->code;
    mp_value *v = code ? NULL : s->u.v;
    if (code) {
        mp__error(code, "%s", s->u.msg ? s->u.msg : mp_strerror(code));
        free(s->u.msg);
    }
    s->u.v = NULL;
    s->code = 0;
    atomic_store_explicit(&s->state, 0, memory_order_release);
    /* The source pump reads `consumed` then `stalled`, we write them in the other order:
     * both sides need the full fence (Dekker), so that store is sequentially consistent;
     * without a source, a release store is enough. */
    if (j->source)
        atomic_store(&j->consumed, c + 1);
    else
        atomic_store_explicit(&j->consumed, c + 1, memory_order_release);
    if (j->source && atomic_exchange(&j->stalled, 0)) {
        uint64_t one = 1;
        ssize_t w = write(j->wake_fd, &one, sizeof one);
        (void)w;
    }
    if (code) {
        mp_value_free(v);
        return code;
    }
    *out = v ? v : mp_value_nil();
    return 1;
}

void mp_pool_iter_free(mp_pool_iter *it)
{
    if (!it)
        return;
    job *j = it->j;
    /* A source-fed job nobody reads would wait forever on its window: end it. */
    if (j->source)
        atomic_store(&j->abandoned, 1);
    if (j->source && j->wake_fd >= 0) {
        uint64_t one = 1;
        ssize_t w = write(j->wake_fd, &one, sizeof one);
        (void)w;
    }
    mp__job_unref(j);
    free(it);
}
