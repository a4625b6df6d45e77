/* The worker process of a pool.
 *
 * DESIGN: one thread. It runs the initializer, says READY, then reads messages from its
 * socket in order and answers each chunk with one RESULT message, in the order the
 * chunks came, sent as soon as the chunk ends (a result held back would die with the
 * worker if a later task crashed it). A chunk streams: each argument is decoded when
 * its task starts (an int into a scratch value lent to the task: no allocation) and each
 * result encoded and freed when it ends. Before a chunk starts it writes the chunk's id (and, with a time limit,
 * the index and start time of each task) into its slot in the shared slots mapping, so
 * the parent knows exactly what it was running if it dies. End of file on the socket
 * (the parent closed its end, or died) makes it exit 0; so does reaching
 * maxtasksperchild after sending the last result. Under fork it first closes the
 * parent's pool fds it inherited (fdset.c), else the parent's end of its own socket
 * (and of the workers started before it) would keep that EOF from ever coming; and
 * it asks for SIGKILL when its parent dies (PR_SET_PDEATHSIG, fork and spawn, where
 * the parent is the pool's result thread), the backstop for fds it could not know. */
#define _GNU_SOURCE
#include "internal/buf.h"
#include "internal/common.h"
#include "internal/value.h"
#include "pool/pool.h"
#include "process/proc.h"

#include <link.h>
#include <sys/prctl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* ---- the control handle: socket + slots memfd ------------------------------------- */

static int ctl_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    mp__worker_ctl *c = obj;
    *data = malloc(1);
    if (!*data)
        return -ENOMEM;
    *len = 1;
    fds[0] = c->sock;
    fds[1] = c->slots_fd;
    *nfds = 2;
    return 0;
}

static int ctl_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    (void)data;
    (void)len;
    mp__worker_ctl *c = nfds == 2 ? malloc(sizeof *c) : NULL;
    if (!c) {
        for (size_t i = 0; i < nfds; i++)
            mp__close(fds[i]);
        return mp__error(MP_EPROTO, "bad pool worker handle (%zu fds)", nfds);
    }
    c->sock = fds[0];
    c->slots_fd = fds[1];
    *obj = c;
    return 0;
}

static void ctl_release(void *obj)
{
    mp__worker_ctl *c = obj;
    mp__close(c->sock);
    mp__close(c->slots_fd);
    free(c);
}

const mp_kind mp__pool_worker_kind = {
    .name = "pool.worker",
    .export_obj = ctl_export,
    .import_obj = ctl_import,
    .release_obj = ctl_release,
};

__attribute__((constructor(200))) static void ctl_register(void)
{
    mp_kind_register(&mp__pool_worker_kind);
}

/* ---- task failure messages --------------------------------------------------------- */

int mp_task_fail(int code, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt ? fmt : "", ap);
    va_end(ap);
    if (code >= 0)
        code = MP_EINVAL;
    return mp__error(code, "%s", buf);
}

/* ---- the worker's state ---------------------------------------------------------- */

typedef struct wstate {
    int sock;
    mp__wsend_fn send; /* NULL: mp__chan_send on sock */
    void *send_ctx;
    mp__slot own_slot; /* a backend's worker: nobody reads its slot */
    mp__slot *slot;
    bool timed; /* a time limit exists: publish each task's start */
    mp__rx rx;
    char *arena;
    size_t arena_size;
} wstate;

static int ws_send(wstate *ws, const mp__msg_hdr *h, const void *body, const int *fds)
{
    if (ws->send)
        return ws->send(ws->send_ctx, h, body, fds);
    return mp__chan_send(ws->sock, h, body, fds);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* "message (task f in ForkPoolWorker-1, pid 42)" */
static char *fail_text(int code, const char *fn_name)
{
    const char *m = mp_last_error_code() == code ? mp__last_error_detail() : "";
    char *s = NULL;
    int n = m[0] ? asprintf(&s, "%s (task %s in %s, pid %d)", m, fn_name,
                            mp_current_process_name(), (int)getpid())
                 : asprintf(&s, "task %s failed in %s, pid %d", fn_name,
                            mp_current_process_name(), (int)getpid());
    return n < 0 ? NULL : s;
}

/* One failed task's record appended to e: u32 index, i32 code, u32 length, message. The
 * whole record or nothing (an allocation failure drops it; the task still reads nil). */
static void err_add(mp__buf *e, uint32_t idx, int32_t code, const char *msg)
{
    uint32_t ml = msg ? (uint32_t)strlen(msg) : 0;
    if (e->failed || mp__buf_reserve(e, 12 + (size_t)ml) < 0)
        return;
    mp__buf_append(e, &idx, 4);
    mp__buf_append(e, &code, 4);
    mp__buf_append(e, &ml, 4);
    mp__buf_append(e, msg, ml);
}

void mp__fn_label(const char *loc, size_t len, char *out, size_t cap)
{
    /* u16 path len, path, u16 sym len, sym, ... (checked by mp__fn_resolve) */
    uint16_t pl, sl;
    memcpy(&pl, loc, 2);
    if (len >= 4u + pl) {
        memcpy(&sl, loc + 2 + pl, 2);
        if (sl && len >= 4u + pl + sl) {
            snprintf(out, cap, "%.*s", (int)sl, loc + 4 + pl);
            return;
        }
        if (!sl && len >= 12u + pl) {
            /* No symbol (a program linked without -rdynamic): object+offset. */
            uint64_t off;
            memcpy(&off, loc + 4 + pl, 8);
            const char *path = loc + 2, *base = path;
            for (size_t i = 0; i < pl; i++)
                if (path[i] == '/')
                    base = path + i + 1;
            if (base == path + pl) /* the main program */
                snprintf(out, cap, "%s+0x%llx", program_invocation_short_name,
                         (unsigned long long)off);
            else
                snprintf(out, cap, "%.*s+0x%llx", (int)(path + pl - base), base,
                         (unsigned long long)off);
            return;
        }
    }
    snprintf(out, cap, "(unnamed)");
}

static int send_result(wstate *ws, uint64_t id, size_t n, mp_value *results, mp__buf *e)
{
    int fds[MP__POOL_MAX_FDS];
    size_t nfds = 0;
    char *enc = NULL;
    size_t elen = 0;
    int r = mp_value_encode(results, &enc, &elen, fds, MP__POOL_MAX_FDS, &nfds);
    if (r < 0) {
        /* A result that cannot travel fails every task of the chunk, with why. */
        char *m = fail_text(r, "(result encoding)");
        mp_value_free(results);
        results = mp_value_list();
        mp__buf e2 = {0};
        for (size_t k = 0; k < n; k++) {
            mp_value_list_append(results, mp_value_nil());
            err_add(&e2, (uint32_t)k, r, m);
        }
        free(m);
        mp__buf_free(e);
        *e = e2;
        nfds = 0;
        r = mp_value_encode(results, &enc, &elen, NULL, 0, NULL);
        if (r < 0)
            return r;
    }
    char *body = malloc(elen + e->len + 1);
    if (!body) {
        free(enc);
        return -ENOMEM;
    }
    memcpy(body, enc, elen);
    if (e->len)
        memcpy(body + elen, e->data, e->len);
    free(enc);
    mp__msg_hdr h = {.type = MSG_RESULT, .nfds = (uint32_t)nfds, .len = elen + e->len,
                     .id = id, .arg = elen};
    r = ws_send(ws, &h, body, fds);
    free(body);
    mp_value_free(results);
    return r;
}

/* ---- a chunk's arguments and results, one at a time --------------------------------- */

/* The arguments: decoded from the message one by one as the tasks need them (the
 * common case, no fds: no list of the whole chunk is ever built), or taken from the
 * decoded list when fds came with them (handles). */
typedef struct argsrc {
    mp_value *list;
    const char *p, *end;
    mp_value scratch; /* an int argument, lent to the task without an allocation */
} argsrc;

static int args_open(argsrc *a, mp__msg *m, size_t used, size_t n)
{
    const uint8_t *p = (const uint8_t *)m->body + used, *end = (const uint8_t *)m->body + m->h.len;
    size_t count = SIZE_MAX;
    if (m->nfds) {
        int r = mp_value_decode(p, (size_t)(end - p), m->fds, m->nfds, &a->list);
        m->nfds = 0; /* adopted */
        if (r < 0)
            return r;
        count = a->list->type == MP_LIST ? a->list->u.list.len : SIZE_MAX;
    } else if (end - p >= 1 && p[0] >= 0x90 && p[0] <= 0x9f) {
        count = p[0] & 0x0fu;
        p += 1;
    } else if (end - p >= 3 && p[0] == 0xdc) {
        count = (size_t)p[1] << 8 | p[2];
        p += 3;
    } else if (end - p >= 5 && p[0] == 0xdd) {
        count = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
        p += 5;
    }
    if (count != n)
        return mp__error(MP_EPROTO, "pool: a chunk of %zu tasks held something else", n);
    a->p = (const char *)p;
    a->end = (const char *)end;
    return 0;
}

/* Argument k: borrowed from the list, or decoded (then *owned, free it after). */
static int args_next(argsrc *a, size_t k, mp_value **arg, bool *owned)
{
    if (a->list) {
        *arg = a->list->u.list.items[k];
        *owned = false;
        return 0;
    }
    int64_t x;
    size_t used = mp__unpack_int((const unsigned char *)a->p, (size_t)(a->end - a->p), &x);
    if (used) {
        a->scratch = (mp_value){.type = MP_INT, .u.i = x};
        a->p += used;
        *arg = &a->scratch;
        *owned = false;
        return 0;
    }
    int r = mp__value_decode_next(a->p, (size_t)(a->end - a->p), &used, arg);
    if (r < 0)
        return r;
    a->p += used;
    *owned = true;
    return 0;
}

/* The results: encoded as they come, each value freed at once (its memory is reused by
 * the next), under a MessagePack array header for all n. A result holding handles needs
 * the fds: from then on they are kept as a list, encoded with the fds at the end. */
typedef struct results {
    mp__buf enc;
    size_t count;
    mp_value *list;
} results;

static int results_open(results *rs, size_t n)
{
    uint8_t h[5] = {0xdd, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8), (uint8_t)n};
    return mp__buf_append(&rs->enc, h, sizeof h);
}

/* Switch to a list: the results so far, decoded back. */
static int results_to_list(results *rs)
{
    uint32_t be = __builtin_bswap32((uint32_t)rs->count);
    memcpy(rs->enc.data + 1, &be, 4);
    int r = mp_value_decode(rs->enc.data, rs->enc.len, NULL, 0, &rs->list);
    mp__buf_free(&rs->enc);
    return r;
}

static int results_add(results *rs, mp_value *v)
{
    if (!rs->list && v->type == MP_INT && rs->enc.cap - rs->enc.len > 10) { /* the usual */
        rs->enc.len += mp__pack_int(v->u.i, (unsigned char *)rs->enc.data + rs->enc.len);
        rs->count++;
        mp_value_free(v);
        return 0;
    }
    while (!rs->list) {
        size_t n = 0;
        int r = mp__buf_reserve(&rs->enc, 64);
        if (r == 0)
            r = mp__value_encode_into(v, rs->enc.data + rs->enc.len, rs->enc.cap - rs->enc.len - 1,
                                      &n);
        if (r == 0) {
            rs->enc.len += n;
            rs->count++;
            mp_value_free(v);
            return 0;
        }
        if (r == MP_ETOOSHORT) {
            if ((r = mp__buf_reserve(&rs->enc, rs->enc.cap)) < 0)
                break;
            continue;
        }
        if ((r = results_to_list(rs)) < 0) /* handles (or an error encode reports) */
            break;
    }
    if (!rs->list) {
        mp_value_free(v);
        return -ENOMEM;
    }
    rs->count++;
    return mp_value_list_append(rs->list, v);
}

static int send_encoded(wstate *ws, uint64_t id, results *rs, mp__buf *e)
{
    size_t elen = rs->enc.len;
    if (e->len && mp__buf_append(&rs->enc, e->data, e->len) < 0)
        return -ENOMEM;
    mp__msg_hdr h = {.type = MSG_RESULT, .len = rs->enc.len, .id = id, .arg = elen};
    int r = ws_send(ws, &h, rs->enc.data, NULL);
    mp__buf_free(&rs->enc);
    return r;
}

static void run_tasks(wstate *ws, mp__msg *m, mp_task_fn fn, argsrc *a, size_t n,
                      results *rs, mp__buf *e)
{
    atomic_store_explicit(&ws->slot->item, 0, memory_order_relaxed);
    atomic_store_explicit(&ws->slot->start_ns, now_ns(), memory_order_relaxed);
    atomic_store_explicit(&ws->slot->chunk, m->h.id, memory_order_release);
    bool timed = ws->timed || (m->h.type & MSG_TIMED);
    for (size_t k = 0; k < n; k++) {
        if (timed && k) {
            atomic_store_explicit(&ws->slot->start_ns, now_ns(), memory_order_relaxed);
            atomic_store_explicit(&ws->slot->item, k, memory_order_release);
        }
        mp_value *arg = NULL, *res = NULL;
        bool owned = false;
        mp_clear_error();
        int rc = args_next(a, k, &arg, &owned);
        if (rc == 0)
            rc = fn(arg, &res);
        if (owned)
            mp_value_free(arg);
        if (rc < 0) {
            mp_value_free(res);
            res = NULL;
            char label[256]; /* the function's name: only for a failure's text */
            mp__fn_label(m->body, m->h.len, label, sizeof label);
            char *t = fail_text(rc, label);
            err_add(e, (uint32_t)k, rc, t);
            free(t);
        }
        results_add(rs, res ? res : mp_value_nil());
    }
}

static int run_chunk(wstate *ws, mp__msg *m)
{
    void (*fnp)(void) = NULL;
    size_t used = 0;
    int r = mp__fn_resolve(m->body, m->h.len, &fnp, &used);
    size_t n = (size_t)m->h.arg;
    mp__buf e = {0};
    argsrc a = {0};
    results rs = {0};
    if (r == 0)
        r = args_open(&a, m, used, n);
    if (results_open(&rs, n) < 0) {
        mp_value_free(a.list);
        return -ENOMEM;
    }
    if (r < 0) {
        char label[256];
        mp__fn_label(m->body, m->h.len, label, sizeof label);
        char *t = fail_text(r, label);
        for (size_t k = 0; k < n; k++) {
            results_add(&rs, mp_value_nil());
            err_add(&e, (uint32_t)k, r, t);
        }
        free(t);
    } else {
        run_tasks(ws, m, (mp_task_fn)(void *)fnp, &a, n, &rs, &e);
    }
    mp_value_free(a.list);
    if (rs.list)
        r = send_result(ws, m->h.id, n, rs.list, &e); /* frees the list */
    else
        r = send_encoded(ws, m->h.id, &rs, &e);
    mp__buf_free(&e);
    atomic_store_explicit(&ws->slot->chunk, 0, memory_order_release);
    return r;
}

/* ---- the typed path -------------------------------------------------------------- */

static int map_arena(wstate *ws, mp__msg *m)
{
    if (m->nfds != 1)
        return MP_EPROTO;
    if (ws->arena)
        munmap(ws->arena, ws->arena_size);
    ws->arena_size = (size_t)m->h.arg;
    ws->arena = mmap(NULL, ws->arena_size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fds[0], 0);
    mp__close(m->fds[0]);
    m->nfds = 0;
    if (ws->arena == MAP_FAILED) {
        ws->arena = NULL;
        return -errno;
    }
    return 0;
}

static int base_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    *(uintptr_t *)data = (uintptr_t)info->dlpi_addr;
    return 1; /* the first entry is the main program */
}

static void *main_base(void)
{
    uintptr_t b = 0;
    dl_iterate_phdr(base_cb, &b);
    return (void *)b;
}

/* A range's arrays and context, and what of them is ours to free. */
typedef struct aview {
    const char *in;
    char *out;
    void *ctx;
    char *own_in, *own_out, *own_ctx;
} aview;

/* p itself when 16-byte aligned (the sender lays frames out so), else a copy in *own. */
static char *aligned(char *p, size_t n, char **own)
{
    if (((uintptr_t)p & 15u) == 0)
        return p;
    *own = malloc(n ? n : 1);
    if (*own)
        memcpy(*own, p, n);
    return *own;
}

/* The range's elements in the message (MSG_INLINE: a backend's worker); its output in a
 * buffer of ours, sent back as the result. */
static int view_inline(mp__msg *m, const mp__array_task *t, size_t loc_end, aview *v)
{
    size_t len = (size_t)m->h.len;
    if (t->context_rel != MP__CTX_INLINE || t->out_off < loc_end || t->out_off > len ||
        t->context > len - t->out_off || t->in_off < t->out_off + t->context ||
        t->in_off > len || !t->in_size || !t->out_size ||
        t->count > (len - t->in_off) / t->in_size || t->count > SIZE_MAX / t->out_size)
        return MP_EPROTO;
    v->ctx = t->context ? aligned(m->body + t->out_off, (size_t)t->context, &v->own_ctx) : NULL;
    v->in = aligned(m->body + t->in_off, (size_t)(t->count * t->in_size), &v->own_in);
    v->out = v->own_out = mp__big_alloc(t->count * t->out_size); /* a kept block, if large */
    return !v->in || !v->out || (t->context && !v->ctx) ? -ENOMEM : 0;
}

static int view_arena(wstate *ws, const mp__array_task *t, aview *v)
{
    if (!ws->arena || t->in_off + (t->first + t->count) * t->in_size > ws->arena_size ||
        t->out_off + (t->first + t->count) * t->out_size > ws->arena_size ||
        (t->context_rel == MP__CTX_ARENA && t->context >= ws->arena_size))
        return MP_EPROTO;
    v->in = ws->arena + t->in_off + t->first * t->in_size;
    v->out = ws->arena + t->out_off + t->first * t->out_size;
    v->ctx = (void *)(uintptr_t)t->context;
    if (t->context_rel == MP__CTX_MAIN)
        v->ctx = (char *)main_base() + t->context;
    else if (t->context_rel == MP__CTX_ARENA)
        v->ctx = ws->arena + t->context;
    return 0;
}

static int run_array(wstate *ws, mp__msg *m)
{
    mp__array_task t;
    int code = 0;
    char msg[512] = "";
    void (*fnp)(void) = NULL;
    size_t used = 0;
    aview v = {0};
    bool inl = m->h.type & MSG_INLINE;
    if (m->h.len < sizeof t)
        return MP_EPROTO;
    memcpy(&t, m->body, sizeof t);
    int r = mp__fn_resolve(m->body + sizeof t, m->h.len - sizeof t, &fnp, &used);
    if (r == 0)
        r = inl ? view_inline(m, &t, sizeof t + used, &v) : view_arena(ws, &t, &v);
    if (r < 0) {
        code = r;
        snprintf(msg, sizeof msg, "%s",
                 r == -ENOMEM     ? "pool: out of memory for an array range"
                 : r != MP_EPROTO ? mp__last_error_detail()
                 : inl            ? "pool: a malformed array range"
                                  : "pool: array range outside the shared arena");
    } else {
        mp_array_fn fn = (mp_array_fn)(void *)fnp;
        atomic_store_explicit(&ws->slot->start_ns, now_ns(), memory_order_relaxed);
        atomic_store_explicit(&ws->slot->chunk, m->h.id, memory_order_release);
        for (uint64_t k = 0; k < t.count; k++) {
            int rc = fn(v.in + k * t.in_size, v.out + k * t.out_size, v.ctx);
            if (rc) {
                code = rc < 0 ? rc : MP_EINVAL;
                snprintf(msg, sizeof msg, "element %llu failed with %d (in %s, pid %d)",
                         (unsigned long long)(t.first + k), rc, mp_current_process_name(),
                         (int)getpid());
                break;
            }
        }
    }
    mp__msg_hdr h = {.type = MSG_RESULT, .len = strlen(msg), .id = m->h.id,
                     .arg = (uint64_t)(int64_t)code};
    const void *body = msg;
    if (inl && code == 0) { /* the output elements go back */
        h.len = t.count * t.out_size;
        body = v.out;
    }
    r = ws_send(ws, &h, body, NULL);
    atomic_store_explicit(&ws->slot->chunk, 0, memory_order_release);
    free(v.own_in);
    mp__big_free(v.own_out);
    free(v.own_ctx);
    return r;
}

/* ---- main ------------------------------------------------------------------------ */

static int run_init(wstate *ws, const mp_value *loc, const mp_value *initargs)
{
    size_t len = 0;
    const char *b = mp_value_get_bytes(loc, &len);
    int r = 0;
    char label[256] = "initializer";
    if (b) {
        void (*fnp)(void) = NULL;
        size_t used;
        mp__fn_label(b, len, label, sizeof label);
        r = mp__fn_resolve(b, len, &fnp, &used);
        if (r == 0) {
            mp_clear_error();
            r = ((mp_pool_init_fn)(void *)fnp)(initargs);
            if (r > 0)
                r = MP_EINVAL;
        }
    }
    if (r == 0) {
        uint32_t pid = (uint32_t)getpid();
        mp__msg_hdr h = {.type = MSG_READY, .len = sizeof pid};
        return ws_send(ws, &h, &pid, NULL);
    }
    char *t = fail_text(r, label);
    int32_t code = r;
    size_t tl = t ? strlen(t) : 0;
    char *body = malloc(4 + tl);
    if (body) {
        memcpy(body, &code, 4);
        memcpy(body + 4, t, tl);
        mp__msg_hdr h = {.type = MSG_INIT_FAIL, .len = 4 + tl};
        ws_send(ws, &h, body, NULL);
    }
    free(body);
    free(t);
    return r;
}

/* Die with the parent; false if it is already gone (we were reparented before). */
static bool follow_parent(int parent)
{
    if (parent <= 0)
        return true; /* forkserver: our parent is the server, not the pool's owner */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    return getppid() == (pid_t)parent;
}

int mp__pool_worker_main(mp_value *args)
{
    mp__worker_ctl *ctl = NULL;
    int pos = 0, nslots = 0, maxtasks = 0, parent = 0;
    double limit = 0;
    mp_value *loc = NULL, *initargs = NULL;
    if (mp_value_unpack(args, "[h i i i f o o i]", &mp__pool_worker_kind, (void **)&ctl, &pos,
                        &nslots, &maxtasks, &limit, &loc, &initargs, &parent) < 0 ||
        pos < 0 || pos >= nslots)
        return 3;
    mp__pool_fd_close_inherited(ctl->sock, ctl->slots_fd);
    if (!follow_parent(parent))
        return 4;
    /* The result thread that started us blocks every signal; a worker takes them. */
    sigset_t none;
    sigemptyset(&none);
    pthread_sigmask(SIG_SETMASK, &none, NULL);
    wstate ws = {.sock = ctl->sock, .timed = limit > 0};
    mp__slot *slots = mmap(NULL, (size_t)nslots * sizeof(mp__slot), PROT_READ | PROT_WRITE,
                           MAP_SHARED, ctl->slots_fd, 0);
    if (slots == MAP_FAILED)
        return 3;
    ws.slot = &slots[pos];
    if (run_init(&ws, loc, initargs) < 0)
        return 1;
    int done = 0, r = 0;
    for (;;) {
        mp__msg m = {0};
        int got = mp__rx_next(&ws.rx, &m);
        if (got < 0)
            break;
        if (got == 0) {
            int f = mp__rx_fill(&ws.rx, ws.sock, false);
            if (f <= 0)
                break; /* EOF: the pool is done with us (or gone) */
            continue;
        }
        uint32_t type = MSG_TYPE(m.h.type);
        if (type == MSG_TASK || type == MSG_ARRAY) {
            r = type == MSG_TASK ? run_chunk(&ws, &m) : run_array(&ws, &m);
            done += type == MSG_TASK; /* as the parent counts towards maxtasks */
        } else if (type == MSG_ARENA) {
            r = map_arena(&ws, &m);
        }
        mp__msg_clear(&m);
        if (r < 0 || (maxtasks && done >= maxtasks && type == MSG_TASK))
            break;
    }
    mp__rx_free(&ws.rx);
    return r < 0 ? 2 : 0;
}

/* ---- a backend's worker: the same loop pieces, messages through a send function ---- */

struct mp__wserve {
    wstate ws;
};

mp__wserve *mp__wserve_new(mp__wsend_fn send, void *ctx)
{
    mp__wserve *w = mp__calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->ws.sock = -1;
    w->ws.send = send;
    w->ws.send_ctx = ctx;
    w->ws.slot = &w->ws.own_slot;
    return w;
}

int mp__wserve_init(mp__wserve *w, const mp_value *loc, const mp_value *initargs)
{
    return run_init(&w->ws, loc, initargs);
}

int mp__wserve_msg(mp__wserve *w, mp__msg *m)
{
    uint32_t type = MSG_TYPE(m->h.type);
    if (type == MSG_TASK)
        return run_chunk(&w->ws, m);
    if (type == MSG_ARRAY) /* with its elements (MSG_INLINE): there is no arena here */
        return run_array(&w->ws, m);
    return mp__error(MP_EPROTO, "pool: message %u cannot reach a %s worker", type, "remote");
}

void mp__wserve_free(mp__wserve *w)
{
    if (!w)
        return;
    mp__rx_free(&w->ws.rx);
    free(w);
}
