/* Task functions on the wire: where a function lives (object + offset, as Process
 * targets, src/process/target.c), in a compact form sent with each chunk, with small
 * caches on both sides so a hot loop of apply_async does not pay dladdr or
 * dl_iterate_phdr per task.
 *
 * DESIGN: the parent's cache is shared by every pool and thread (a mutex); the worker's
 * is used by its one thread. The calls' jobs take a shared copy of the location
 * (mp__fn_locate_shared: a lock-free list, never freed, one entry per task function),
 * not an allocation of their own each. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "pool/pool.h"
#include "process/proc.h"

#include <stdlib.h>
#include <string.h>

#define CACHE 16

static struct {
    void (*fn)(void);
    char *buf;
    size_t len;
} pcache[CACHE];
static unsigned pnext;
static pthread_mutex_t pmu = PTHREAD_MUTEX_INITIALIZER;

static int encode(const mp__target_loc *loc, char **buf, size_t *len)
{
    uint16_t pl = (uint16_t)strlen(loc->path), sl = (uint16_t)strlen(loc->sym);
    size_t n = 2 + pl + 2 + sl + 8;
    char *b = malloc(n);
    if (!b)
        return mp__error(-ENOMEM, "pool: out of memory");
    memcpy(b, &pl, 2);
    memcpy(b + 2, loc->path, pl);
    memcpy(b + 2 + pl, &sl, 2);
    memcpy(b + 4 + pl, loc->sym, sl);
    memcpy(b + 4 + pl + sl, &loc->offset, 8);
    *buf = b;
    *len = n;
    return 0;
}

int mp__fn_locate(void (*fn)(void), char **buf, size_t *len)
{
    pthread_mutex_lock(&pmu);
    for (unsigned i = 0; i < CACHE; i++)
        if (pcache[i].fn == fn && pcache[i].buf) {
            *buf = malloc(pcache[i].len);
            if (*buf)
                memcpy(*buf, pcache[i].buf, pcache[i].len);
            *len = pcache[i].len;
            pthread_mutex_unlock(&pmu);
            return *buf ? 0 : mp__error(-ENOMEM, "pool: out of memory");
        }
    pthread_mutex_unlock(&pmu);
    mp__target_loc *loc = malloc(sizeof *loc);
    if (!loc)
        return mp__error(-ENOMEM, "pool: out of memory");
    int r = mp__target_locate((mp_target_fn)(void *)fn, loc);
    if (r == 0)
        r = encode(loc, buf, len);
    free(loc);
    if (r < 0)
        return r;
    char *copy = malloc(*len);
    if (copy) {
        memcpy(copy, *buf, *len);
        pthread_mutex_lock(&pmu);
        unsigned i = pnext++ % CACHE;
        free(pcache[i].buf);
        pcache[i].fn = fn;
        pcache[i].buf = copy;
        pcache[i].len = *len;
        pthread_mutex_unlock(&pmu);
    }
    return 0;
}

/* Locations handed out shared (mp__fn_locate_shared): never freed, one per task
 * function the program submits (a race may add a second: harmless). Lock-free. */
typedef struct interned {
    struct interned *next;
    void (*fn)(void);
    size_t len;
    char buf[];
} interned;
static interned *_Atomic interned_head;
static _Thread_local interned *interned_last; /* this thread's last hit */

int mp__fn_locate_shared(void (*fn)(void), const char **buf, size_t *len)
{
    interned *e = interned_last;
    if (!e || e->fn != fn)
        for (e = atomic_load_explicit(&interned_head, memory_order_acquire); e; e = e->next)
            if (e->fn == fn)
                break;
    if (!e) {
        char *b = NULL;
        size_t n = 0;
        int r = mp__fn_locate(fn, &b, &n);
        if (r < 0)
            return r;
        e = malloc(sizeof *e + n);
        if (!e) {
            free(b);
            return mp__error(-ENOMEM, "pool: out of memory");
        }
        e->fn = fn;
        e->len = n;
        memcpy(e->buf, b, n);
        free(b);
        e->next = atomic_load_explicit(&interned_head, memory_order_relaxed);
        while (!atomic_compare_exchange_weak_explicit(&interned_head, &e->next, e,
                                                      memory_order_release,
                                                      memory_order_relaxed))
            ;
    }
    interned_last = e;
    *buf = e->buf;
    *len = e->len;
    return 0;
}

static struct {
    char *buf;
    size_t len;
    void (*fn)(void);
} wcache[CACHE];
static unsigned wnext;

static int parse(const char *buf, size_t len, mp__target_loc *loc, size_t *used)
{
    uint16_t pl, sl;
    if (len < 2)
        return MP_EPROTO;
    memcpy(&pl, buf, 2);
    if (len < 4u + pl || pl >= sizeof loc->path)
        return MP_EPROTO;
    memcpy(&sl, buf + 2 + pl, 2);
    if (len < 12u + pl + sl || sl >= sizeof loc->sym)
        return MP_EPROTO;
    memcpy(loc->path, buf + 2, pl);
    loc->path[pl] = '\0';
    memcpy(loc->sym, buf + 4 + pl, sl);
    loc->sym[sl] = '\0';
    memcpy(&loc->offset, buf + 4 + pl + sl, 8);
    *used = 12u + pl + sl;
    return 0;
}

int mp__fn_resolve(const char *buf, size_t len, void (**fn)(void), size_t *used)
{
    /* The cache first, by the location's bytes (their length from the two lengths):
     * a worker running many small tasks of one function parses nothing. */
    uint16_t pl, sl;
    if (len >= 4) {
        memcpy(&pl, buf, 2);
        if (len >= 4u + pl) {
            memcpy(&sl, buf + 2 + pl, 2);
            size_t n = 12u + pl + sl;
            for (unsigned i = 0; n <= len && i < CACHE; i++)
                if (wcache[i].buf && wcache[i].len == n && memcmp(wcache[i].buf, buf, n) == 0) {
                    *fn = wcache[i].fn;
                    *used = n;
                    return 0;
                }
        }
    }
    mp__target_loc *loc = malloc(sizeof *loc);
    if (!loc)
        return mp__error(-ENOMEM, "pool: out of memory");
    int r = parse(buf, len, loc, used);
    if (r < 0) {
        free(loc);
        return mp__error(MP_EPROTO, "pool: malformed task function location");
    }
    mp_target_fn t = NULL;
    r = mp__target_resolve(loc, &t);
    free(loc);
    if (r < 0)
        return r;
    *fn = (void (*)(void))(void *)t;
    char *copy = malloc(*used);
    if (copy) {
        memcpy(copy, buf, *used);
        unsigned i = wnext++ % CACHE;
        free(wcache[i].buf);
        wcache[i].buf = copy;
        wcache[i].len = *used;
        wcache[i].fn = *fn;
    }
    return 0;
}
