/* The manager server: owns the objects, serves every connection on its own thread.
 *
 * DESIGN
 * - Threads: the thread calling serve_forever accepts (raw accept4 on the listener's
 *   fd: the HMAC handshake runs on the new connection's own thread, bounded by
 *   handshake_limit when set, so a silent client never holds the accept path). Each
 *   connection gets a detached thread that reads a request, dispatches it and writes
 *   the reply, one at a time: from and to the socket, or, once a local client asked for
 *   it ("shm"), through the connection's shared-memory slot (shmchan.c), the socket
 *   still watched for the client's end.
 * - Shared state: the object table, every object and every connection's reference
 *   list are guarded by one server mutex `mu`, held while a method runs. A blocking
 *   method (Lock.acquire, Queue.get, Event.wait, ...) parks on its object's condvar,
 *   which releases `mu`: other connections go on being served. Parked waits wake at
 *   least every 100 ms to notice a client that hung up or a server that is stopping.
 * - References: each connection counts the references it holds per object id; create
 *   and incref add one, decref drops one, and a connection that ends (the client died
 *   or closed) drops all of its own and releases the locks it held. An object whose
 *   count reaches zero is freed, unless a live object's contents hold a proxy to it
 *   (nested proxies): then a mark pass from the referenced objects decides.
 * - Stopping: a "shutdown" request, mp_manager_server_stop, the watched parent's end
 *   or a byte (or EOF) on the starting process's control socket wakes the accept loop
 *   through a pipe / pidfd / that socket; it shuts every connection's socket
 *   down (their reads return EOF), wakes every parked wait, waits for the connection
 *   threads to finish and frees the objects.
 * Lock order: mu only (the handshake and socket I/O run without it).
 */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/iwait.h"
#include "internal/sigutil.h"
#include "internal/value.h"
#include "manager/mgr.h"
#include "manager/shmchan.h"
#include "multiproc/process.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BUCKETS 1024
#define WAIT_SLICE 0.1

_Thread_local bool mp__mgr_in_server;

typedef struct conn_ref {
    uint64_t id;
    long n;
} conn_ref;

struct mgr_conn {
    mgr_server *srv;
    mp_connection *conn;
    int fd;
    uint64_t id;
    conn_ref *refs;
    size_t nrefs, cap;
    uint64_t *lent; /* references taken for proxies in the last reply (see lend) */
    size_t nlent, lentcap;
    mgr_chan chan;      /* the shared-memory channel of a local client (shmchan.c) */
    int chan_fds[3];    /* set up by a "shm" request: to send after its reply */
    mgr_conn *prev, *next;
};

struct mp_manager_server {
    mgr_config cfg;
    mp_listener *listener;
    uint64_t token;
    pthread_mutex_t mu;
    pthread_cond_t idle; /* signalled when a connection thread ends */
    mgr_obj *objs[BUCKETS];
    size_t nobjs;
    uint64_t next_obj, next_conn;
    mgr_conn *conns;
    int nconns;
    bool stopping;
    bool nested; /* some request carried a proxy: freeing needs a mark pass */
    size_t kept; /* objects no connection references, alive only through a container */
    int stop_r, stop_w;
    int watch; /* pidfd of the process whose end stops the server (-1: none) */
    int ctl;   /* the starting process's control socket: a byte or EOF stops (-1: none) */
};

/* ---- objects ------------------------------------------------------------------------- */

static mgr_obj *obj_find(mgr_server *s, uint64_t id)
{
    for (mgr_obj *o = s->objs[id % BUCKETS]; o; o = o->next)
        if (o->id == id)
            return o;
    return NULL;
}

static void obj_unlink(mgr_server *s, mgr_obj *o)
{
    mgr_obj **pp = &s->objs[o->id % BUCKETS];
    while (*pp && *pp != o)
        pp = &(*pp)->next;
    if (*pp)
        *pp = o->next;
    s->nobjs--;
}

static void obj_destroy(mgr_obj *o)
{
    if (o->type && o->type->fini)
        o->type->fini(o);
    if (o->utype && o->utype->destroy && o->user)
        o->utype->destroy(o->user);
    mp_value_free(o->v);
    pthread_cond_destroy(&o->cond);
    free(o);
}

static int cond_init_monotonic(pthread_cond_t *c)
{
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    int r = pthread_cond_init(c, &a);
    pthread_condattr_destroy(&a);
    return -r;
}

static const mgr_type *builtin_type(const char *name)
{
    for (size_t i = 0; i < mp__mgr_builtin_count; i++)
        if (strcmp(mp__mgr_builtin_types[i]->name, name) == 0)
            return mp__mgr_builtin_types[i];
    return NULL;
}

static const mp_manager_type *user_type(mgr_server *s, const char *name)
{
    for (size_t i = 0; i < s->cfg.ntypes; i++)
        if (s->cfg.types[i].name && strcmp(s->cfg.types[i].name, name) == 0)
            return &s->cfg.types[i];
    return NULL;
}

static int obj_create(mgr_server *s, const char *type, const mp_value *args, mgr_obj **out)
{
    const mgr_type *bt = builtin_type(type);
    const mp_manager_type *ut = bt ? NULL : user_type(s, type);
    if (!bt && !ut)
        return mp__error(MP_ENOTFOUND, "manager has no type '%s'", type);
    mgr_obj *o = mp__calloc(1, sizeof *o);
    if (!o)
        return mp_last_error_code();
    if (cond_init_monotonic(&o->cond) < 0) {
        free(o);
        return mp__error(-ENOMEM, "condition variable");
    }
    o->type = bt;
    o->utype = ut;
    int r = 0;
    if (bt && bt->init)
        r = bt->init(o, args);
    else if (ut && ut->create) {
        r = ut->create(args, &o->user);
        if (r < 0)
            r = mp__error(r, "%s(): %s", type, mp_strerror(r));
    }
    if (r < 0) {
        obj_destroy(o);
        return r;
    }
    o->id = ++s->next_obj;
    o->next = s->objs[o->id % BUCKETS];
    s->objs[o->id % BUCKETS] = o;
    s->nobjs++;
    *out = o;
    return 0;
}

/* Mark o and every object of ours a proxy inside it refers to. */
static void mark_value(mgr_server *s, const mp_value *v, int depth);

static void mark_obj(mgr_server *s, mgr_obj *o)
{
    if (o->marked)
        return;
    o->marked = true;
    mark_value(s, o->v, 0);
}

static void mark_value(mgr_server *s, const mp_value *v, int depth)
{
    if (!v || depth > 600)
        return;
    switch (mp_value_type(v)) {
    case MP_LIST:
        for (size_t i = 0; i < mp_value_len(v); i++)
            mark_value(s, mp_value_list_get(v, i), depth + 1);
        break;
    case MP_MAP:
        for (size_t i = 0; i < mp_value_len(v); i++) {
            mark_value(s, mp_value_map_key(v, i), depth + 1);
            mark_value(s, mp_value_map_val(v, i), depth + 1);
        }
        break;
    case MP_HANDLE: {
        const mgr_ref *ref = mp__mgr_proxy_ref(v);
        mgr_obj *o = ref && ref->token == s->token ? obj_find(s, ref->id) : NULL;
        if (o)
            mark_obj(s, o);
        break;
    }
    default:
        break;
    }
}

/* Free every object nobody can reach any more. Freeing may drop nested proxies, so the
 * pass repeats only through the mark, which already accounts for them. */
static void collect(mgr_server *s)
{
    if (s->nested) {
        for (size_t b = 0; b < BUCKETS; b++)
            for (mgr_obj *o = s->objs[b]; o; o = o->next)
                o->marked = false;
        for (size_t b = 0; b < BUCKETS; b++)
            for (mgr_obj *o = s->objs[b]; o; o = o->next)
                if (o->refs > 0)
                    mark_obj(s, o);
    }
    s->kept = 0;
    for (size_t b = 0; b < BUCKETS; b++) {
        mgr_obj **pp = &s->objs[b];
        while (*pp) {
            mgr_obj *o = *pp;
            if (o->refs <= 0 && !(s->nested && o->marked)) {
                *pp = o->next;
                s->nobjs--;
                obj_destroy(o);
            } else {
                s->kept += o->refs <= 0;
                pp = &o->next;
            }
        }
    }
}

/* ---- references per connection ------------------------------------------------------- */

static conn_ref *ref_find(mgr_conn *c, uint64_t id)
{
    for (size_t i = 0; i < c->nrefs; i++)
        if (c->refs[i].id == id)
            return &c->refs[i];
    return NULL;
}

static int ref_add(mgr_conn *c, mgr_obj *o)
{
    conn_ref *r = ref_find(c, o->id);
    if (!r) {
        if (c->nrefs == c->cap) {
            size_t cap = c->cap ? c->cap * 2 : 4;
            conn_ref *n = realloc(c->refs, cap * sizeof *n);
            if (!n)
                return mp__error(-ENOMEM, "reference table");
            c->refs = n;
            c->cap = cap;
        }
        r = &c->refs[c->nrefs++];
        r->id = o->id;
        r->n = 0;
    }
    r->n++;
    o->refs++;
    return 0;
}

static int ref_drop(mgr_conn *c, uint64_t id)
{
    conn_ref *r = ref_find(c, id);
    if (!r)
        return mp__error(MP_ENOTFOUND, "this connection holds no reference to object %llu",
                         (unsigned long long)id);
    mgr_obj *o = obj_find(c->srv, id);
    if (o)
        o->refs--;
    if (--r->n == 0)
        *r = c->refs[--c->nrefs];
    if (o && o->refs <= 0)
        collect(c->srv);
    return 0;
}

/* A reply that carries proxies (a nested list's a[0], d.pop(k)) holds a reference to
 * each of their objects for this connection until its next request: by then the client
 * has decoded the reply and each proxy has taken a reference of its own (or, dropped
 * with the reply, needs none), so no collection in between can free the object. */
static void lend(mgr_conn *c, const mp_value *v, int depth)
{
    if (!v || depth > 600)
        return;
    size_t n = mp_value_len(v);
    switch (mp_value_type(v)) {
    case MP_LIST:
        for (size_t i = 0; i < n; i++)
            lend(c, mp_value_list_get(v, i), depth + 1);
        return;
    case MP_MAP:
        for (size_t i = 0; i < n; i++) {
            lend(c, mp_value_map_key(v, i), depth + 1);
            lend(c, mp_value_map_val(v, i), depth + 1);
        }
        return;
    case MP_HANDLE:
        break;
    default:
        return;
    }
    const mgr_ref *ref = mp__mgr_proxy_ref(v);
    mgr_obj *o = ref && ref->token == c->srv->token ? obj_find(c->srv, ref->id) : NULL;
    if (!o)
        return;
    if (c->nlent == c->lentcap) {
        size_t cap = c->lentcap ? c->lentcap * 2 : 4;
        uint64_t *l = realloc(c->lent, cap * sizeof *l);
        if (!l)
            return;
        c->lent = l;
        c->lentcap = cap;
    }
    if (ref_add(c, o) == 0)
        c->lent[c->nlent++] = o->id;
}

static void unlend(mgr_conn *c)
{
    size_t n = c->nlent;
    c->nlent = 0;
    for (size_t i = 0; i < n; i++)
        ref_drop(c, c->lent[i]);
}

/* The connection ended: release its locks and references. */
static void conn_release_all(mgr_conn *c)
{
    mgr_server *s = c->srv;
    for (size_t i = 0; i < c->nrefs; i++) {
        mgr_obj *o = obj_find(s, c->refs[i].id);
        if (!o)
            continue;
        if (o->type && o->type->conn_gone)
            o->type->conn_gone(o, c->id);
        o->refs -= c->refs[i].n;
    }
    bool any = c->nrefs > 0;
    c->nrefs = 0;
    if (any)
        collect(s);
}

/* ---- waiting --------------------------------------------------------------------------- */

uint64_t mp__mgr_conn_id(const mgr_conn *c) { return c->id; }

void mp__mgr_wake(mgr_obj *o) { pthread_cond_broadcast(&o->cond); }

static bool client_gone(mgr_conn *c)
{
    struct pollfd p = {c->fd, POLLRDHUP, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR | POLLNVAL));
}

int mp__mgr_wait(mgr_conn *c, mgr_obj *o, double deadline)
{
    mgr_server *s = c->srv;
    if (s->stopping)
        return mp__error(MP_ECLOSED, "the manager is shutting down");
    double until = mp__now() + WAIT_SLICE;
    if (deadline >= 0 && deadline < until)
        until = deadline;
    struct timespec ts;
    mp__deadline_ts(until, &ts);
    pthread_cond_timedwait(&o->cond, &s->mu, &ts);
    if (s->stopping)
        return mp__error(MP_ECLOSED, "the manager is shutting down");
    if (client_gone(c))
        return mp__error(MP_EEOF, "the client went away");
    if (deadline >= 0 && mp__now() >= deadline)
        return MP_ETIMEOUT; /* callers report a timeout as False, not as an error */
    return 0;
}

/* ---- dispatch -------------------------------------------------------------------------- */

static int server_create(mgr_conn *c, const mp_value *args, mp_value **result)
{
    const char *type;
    const mp_value *cargs = NULL;
    if (mp__mgr_nargs(args, 1, 2, "create") < 0)
        return mp_last_error_code();
    type = mp_value_get_str(mp__mgr_arg(args, 0), NULL);
    if (!type)
        return mp__error(MP_ETYPE, "create: the type name must be a str");
    cargs = mp__mgr_arg(args, 1);
    if (cargs && mp_value_type(cargs) == MP_NIL)
        cargs = NULL;
    if (cargs && mp_value_type(cargs) != MP_LIST)
        return mp__error(MP_ETYPE, "create: the arguments must be a list");
    mgr_obj *o = NULL;
    int r = obj_create(c->srv, type, cargs, &o);
    if (r < 0)
        return r;
    if (ref_add(c, o) < 0) {
        collect(c->srv);
        return mp_last_error_code();
    }
    *result = mp_value_pack("[I I I f]", (int64_t)o->id, (int64_t)c->srv->token,
                            (int64_t)c->srv->cfg.max_message, c->srv->cfg.peer_limit);
    return *result ? 0 : mp_last_error_code();
}

/* What a client needs to know of the server: [max_message, peer_limit] (the reply to
 * ping and incref; create's reply carries them after the object's id and token). */
static mp_value *limits(const mgr_server *s)
{
    return mp_value_pack("[I f]", (int64_t)s->cfg.max_message, s->cfg.peer_limit);
}

static int server_incref(mgr_conn *c, const mp_value *args, mp_value **result)
{
    int64_t id, token;
    if (mp_value_unpack(args, "[I I]", &id, &token) < 0)
        return mp__error(MP_ETYPE, "incref: expected [object id, token]");
    mgr_obj *o = obj_find(c->srv, (uint64_t)id);
    if ((uint64_t)token != c->srv->token || !o)
        return mp__error(MP_ENOTFOUND, "the manager has no object %lld (it was freed, or "
                                       "the proxy is from another manager)",
                         (long long)id);
    if (ref_add(c, o) < 0)
        return mp_last_error_code();
    *result = limits(c->srv);
    return *result ? 0 : mp_last_error_code();
}

/* A local client asks for the shared-memory channel: made here, its fds sent after the
 * reply (conn_main); the reply tells the slot size. */
static int server_shm(mgr_conn *c, mp_value **result)
{
    if (c->chan.shm || c->chan_fds[0] >= 0)
        return mp__error(MP_ESTATE, "shm: this connection has its channel already");
    if (!mp__mgr_chan_local(c->fd))
        return mp__error(MP_EUNSUPPORTED, "shm: only for a local (Unix socket) client");
    int r = mp__mgr_chan_create(&c->chan, c->chan_fds);
    if (r < 0)
        return r;
    *result = mp_value_int((int64_t)mp__mgr_chan_slot());
    return *result ? 0 : mp_last_error_code();
}

static int server_method(mgr_conn *c, const char *method, const mp_value *args,
                         mp_value **result, bool *stop)
{
    if (strcmp(method, "create") == 0)
        return server_create(c, args, result);
    if (strcmp(method, "incref") == 0)
        return server_incref(c, args, result);
    if (strcmp(method, "decref") == 0) {
        int64_t id;
        if (mp_value_unpack(args, "[I]", &id) < 0)
            return mp__error(MP_ETYPE, "decref: expected [object id]");
        return ref_drop(c, (uint64_t)id);
    }
    if (strcmp(method, "ping") == 0) { /* the reply tells the server's limits */
        *result = limits(c->srv);
        return *result ? 0 : mp_last_error_code();
    }
    if (strcmp(method, "shm") == 0)
        return server_shm(c, result);
    if (strcmp(method, "shutdown") == 0) {
        *stop = true;
        return 0;
    }
    if (strcmp(method, "debug_info") == 0) {
        int chans = 0;
        for (mgr_conn *k = c->srv->conns; k; k = k->next)
            chans += k->chan.shm != NULL;
        *result = mp_value_pack("{s:I s:i s:i}", "objects", (int64_t)c->srv->nobjs,
                                "connections", c->srv->nconns, "channels", chans);
        return *result ? 0 : mp_last_error_code();
    }
    return mp__error(MP_EUNSUPPORTED, "the manager has no method '%s'", method);
}

static int user_method(mgr_obj *o, const char *method, const mp_value *args, mp_value **result)
{
    const mp_manager_type *t = o->utype;
    if (strcmp(method, "__repr__") == 0) {
        char *s = t->repr ? t->repr(o->user) : NULL;
        if (!s)
            s = mp__strdup_printf("<%s object at %p>", t->name, (void *)o);
        *result = s ? mp_value_str(s) : NULL;
        free(s);
        return *result ? 0 : mp__error(-ENOMEM, "repr");
    }
    for (size_t i = 0; i < t->nmethods; i++)
        if (t->methods[i].name && strcmp(t->methods[i].name, method) == 0) {
            int r = t->methods[i].fn(o->user, args, result);
            if (r < 0) {
                /* a str result is the error's message (Python's exception text) */
                const char *msg = mp_value_get_str(*result, NULL);
                if (msg)
                    mp__error(r, "%s", msg);
                else if (mp_last_error_code() != r)
                    mp__error(r, "%s.%s(): %s", t->name, method, mp_strerror(r));
                mp_value_free(*result);
                *result = NULL;
            }
            return r;
        }
    return mp__error(MP_EUNSUPPORTED, "'%s' object exposes no method '%s'", t->name, method);
}

static int object_method(mgr_conn *c, const mgr_request *req, mp_value **result)
{
    mgr_obj *o = obj_find(c->srv, req->id);
    if (!o || !ref_find(c, req->id))
        return mp__error(MP_ENOTFOUND, "no object %llu referenced by this connection",
                         (unsigned long long)req->id);
    if (o->utype)
        return user_method(o, req->method, req->args, result);
    const mgr_type *t = o->type;
    if (strcmp(req->method, "__repr__") == 0) {
        char *s = t->repr(o);
        *result = s ? mp_value_str(s) : NULL;
        free(s);
        return *result ? 0 : mp__error(-ENOMEM, "repr");
    }
    for (size_t i = 0; i < t->nmethods; i++)
        if (strcmp(t->methods[i].name, req->method) == 0)
            return t->methods[i].fn(c, o, req->args, result);
    return mp__error(MP_EUNSUPPORTED, "'%s' object has no exposed method '%s'", t->name,
                     req->method);
}

/* Handle one request; returns the encoded reply (*out, mp_free). The reply is encoded
 * under the mutex: a result may borrow proxies that live inside a managed container. */
static int handle(mgr_conn *c, const void *buf, size_t len, char **out, size_t *outlen,
                  bool *stop)
{
    mgr_request req;
    mp_value *result = NULL;
    int r = mp__mgr_parse_request(buf, len, &req);
    if (r < 0)
        return mp__mgr_encode_reply(r, mp__last_error_detail(), NULL, out, outlen);
    mgr_server *s = c->srv;
    pthread_mutex_lock(&s->mu);
    if (req.has_handles)
        s->nested = true;
    unlend(c);
    r = req.id == 0 ? server_method(c, req.method, req.args, &result, stop)
                    : object_method(c, &req, &result);
    if (r >= 0 && result && s->nested)
        lend(c, result, 0);
    if (s->kept > 0 && req.id != 0) /* the call may have dropped a container's last proxy */
        collect(s);
    int e = mp__mgr_encode_reply(r, r < 0 ? mp__last_error_detail() : NULL, result, out,
                                 outlen);
    if (e < 0 && r >= 0) /* the result cannot travel: say why instead */
        e = mp__mgr_encode_reply(e, mp__last_error_detail(), NULL, out, outlen);
    mp_value_free(result);
    pthread_mutex_unlock(&s->mu);
    mp_value_free(req.root);
    return e;
}

/* ---- connections ------------------------------------------------------------------------ */

static void conn_end(mgr_conn *c)
{
    mgr_server *s = c->srv;
    pthread_mutex_lock(&s->mu);
    conn_release_all(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    s->nconns--;
    pthread_cond_broadcast(&s->idle);
    pthread_mutex_unlock(&s->mu);
    mp_connection_free(c->conn);
    mp__mgr_chan_close(&c->chan);
    if (c->chan_fds[0] >= 0)
        mp__close(c->chan_fds[0]);
    free(c->refs);
    free(c->lent);
    free(c);
}

static void request_stop(mgr_server *s)
{
    char b = 1;
    if (write(s->stop_w, &b, 1) < 0) {
        /* the pipe is full: a stop is already pending */
    }
}

/* Send the channel's fds after the reply to "shm"; a failure leaves the socket path. */
static void pass_chan(mgr_conn *c)
{
    if (c->chan_fds[0] < 0)
        return;
    if (mp__mgr_chan_send_fds(c->fd, c->chan_fds) < 0)
        mp__mgr_chan_close(&c->chan);
    mp__close(c->chan_fds[0]); /* the segment: mapped; the eventfds are the channel's */
    c->chan_fds[0] = -1;
}

/* The next request: from the channel's slot once there is one, else the socket. */
static int next_request(mgr_conn *c, void **buf, size_t *len, bool *from_slot)
{
    *from_slot = false;
    size_t max = c->srv->cfg.max_message;
    if (c->chan.shm)
        return mp__mgr_chan_next(&c->chan, c->conn, max, buf, len, from_slot);
    return mp_connection_recv_bytes(c->conn, max, buf, len);
}

static void *conn_main(void *arg)
{
    mgr_conn *c = arg;
    mgr_server *s = c->srv;
    mp__block_signals_in_thread();
    mp__mgr_in_server = true;
    int r = mp__listener_handshake(s->listener, c->conn);
    while (r == 0) {
        void *buf;
        size_t len;
        bool slot;
        if (next_request(c, &buf, &len, &slot) < 0)
            break;
        char *out = NULL;
        size_t outlen = 0;
        bool stop = false;
        r = handle(c, buf, len, &out, &outlen, &stop);
        mp_free(buf);
        if (r == 0)
            r = slot ? mp__mgr_chan_reply(&c->chan, c->conn, out, outlen)
                     : mp_connection_send_bytes(c->conn, out, 0, outlen);
        mp_free(out);
        if (r == 0)
            pass_chan(c);
        if (stop)
            request_stop(s);
    }
    conn_end(c);
    return NULL;
}

static void accept_one(mgr_server *s)
{
    int fd = accept4(mp_listener_fileno(s->listener), NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (fd < 0)
        return; /* EAGAIN (another wake-up took it), ECONNABORTED, EMFILE: keep serving */
    mp__set_nonblock(fd, false);
    mp__mgr_peer_limit_apply(fd, s->cfg.peer_limit); /* best effort: TCP only */
    pthread_mutex_lock(&s->mu);
    bool full = s->nconns >= s->cfg.max_connections || s->stopping;
    pthread_mutex_unlock(&s->mu);
    mgr_conn *c = full ? NULL : calloc(1, sizeof *c);
    mp_connection *conn = c ? mp_connection_from_fd(fd, true, true) : NULL;
    if (!conn) {
        free(c);
        mp__close(fd);
        return;
    }
    c->srv = s;
    c->conn = conn;
    c->fd = fd;
    c->chan = (mgr_chan)MGR_CHAN_NONE;
    c->chan_fds[0] = c->chan_fds[1] = c->chan_fds[2] = -1;
    pthread_attr_t a;
    pthread_attr_init(&a);
    pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&a, 1 << 20);
    pthread_mutex_lock(&s->mu);
    c->id = ++s->next_conn;
    c->next = s->conns;
    if (s->conns)
        s->conns->prev = c;
    s->conns = c;
    s->nconns++;
    pthread_t t;
    int e = pthread_create(&t, &a, conn_main, c);
    pthread_mutex_unlock(&s->mu);
    pthread_attr_destroy(&a);
    if (e != 0)
        conn_end(c);
}

/* ---- the server ------------------------------------------------------------------------- */

static void default_address(char *out, size_t n)
{
    static _Atomic unsigned counter;
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof rnd, 0) < 0)
        rnd = (uint32_t)mp__now();
    snprintf(out, n, "@mp-manager-%d-%u-%08x", (int)getpid(), counter++, rnd);
}

void mp__mgr_config_defaults(mgr_config *cfg, const mp_manager_opts *opts)
{
    static const mp_manager_opts none;
    if (!opts)
        opts = &none;
    memset(cfg, 0, sizeof *cfg);
    if (opts->address)
        snprintf(cfg->address, sizeof cfg->address, "%s", opts->address);
    if (opts->authkey && opts->authkey_len <= MGR_MAX_KEY) {
        memcpy(cfg->key, opts->authkey, opts->authkey_len);
        cfg->keylen = opts->authkey_len;
    } else { /* Python's default: current_process().authkey */
        const void *k = mp_current_process_authkey(&cfg->keylen);
        if (cfg->keylen > MGR_MAX_KEY)
            cfg->keylen = MGR_MAX_KEY;
        memcpy(cfg->key, k, cfg->keylen);
    }
    cfg->max_message = opts->max_message ? opts->max_message : (size_t)64 << 20;
    cfg->handshake_limit = opts->handshake_limit; /* 0: the listener's default; < 0: none */
    cfg->max_connections = opts->max_connections > 0 ? opts->max_connections : 1024;
    cfg->peer_limit = mp__mgr_peer_limit(opts->peer_limit);
    cfg->types = opts->types;
    cfg->ntypes = opts->ntypes;
}

int mp__mgr_check_opts(const mp_manager_opts *opts)
{
    if (!opts)
        return 0;
    if (opts->authkey && opts->authkey_len > MGR_MAX_KEY)
        return mp__error(MP_EINVAL, "manager: authkey of %zu bytes (at most %d)",
                         opts->authkey_len, MGR_MAX_KEY);
    if (mp__limit_check(opts->handshake_limit, "manager: handshake_limit") < 0 ||
        mp__limit_check(opts->peer_limit, "manager: peer_limit") < 0)
        return mp_last_error_code();
    if (opts->address && strlen(opts->address) >= MGR_ADDR_LEN)
        return mp__error(MP_EINVAL, "manager: address too long");
    if (opts->ntypes > MGR_MAX_TYPES || (opts->ntypes && !opts->types))
        return mp__error(MP_EINVAL, "manager: %zu types (at most %d, and a table)",
                         opts->ntypes, MGR_MAX_TYPES);
    for (size_t i = 0; i < opts->ntypes; i++) {
        const mp_manager_type *t = &opts->types[i];
        if (!t->name || !t->name[0] || strlen(t->name) >= 32 || !t->create ||
            (t->nmethods && !t->methods))
            return mp__error(MP_EINVAL, "manager: type %zu needs a name (< 32 bytes), a "
                                        "create function and its method table", i);
        if (builtin_type(t->name))
            return mp__error(MP_EINVAL, "manager: type '%s' is built in", t->name);
        for (size_t j = 0; j < t->nmethods; j++)
            if (!t->methods[j].name || !t->methods[j].fn)
                return mp__error(MP_EINVAL, "manager: type '%s' method %zu needs a name "
                                            "and a function", t->name, j);
    }
    return 0;
}


mp_manager_server *mp__mgr_server_new(const mgr_config *cfg)
{
    mgr_server *s = mp__calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cfg = *cfg;
    s->stop_r = s->stop_w = -1;
    s->watch = -1;
    s->ctl = -1;
    /* Opened now, while the starting process waits for our report: opened later (in
     * serve_forever), a parent that returned and exited at once would be gone already
     * and the server would serve forever (seen in test_api_sweep under load). */
    if (cfg->watch_pid > 0 && (s->watch = mp__pidfd_open(cfg->watch_pid)) < 0) {
        mp__error(s->watch, "manager: watching process %d (the process that started it)",
                  (int)cfg->watch_pid);
        free(s);
        return NULL;
    }
    if (!s->cfg.address[0])
        default_address(s->cfg.address, sizeof s->cfg.address);
    if (getrandom(&s->token, sizeof s->token, 0) != sizeof s->token)
        s->token = (uint64_t)getpid() << 32 ^ (uint64_t)(mp__now() * 1e9);
    s->token &= INT64_MAX; /* travels as a MessagePack int */
    int p[2];
    if (mp__pipe(p) < 0) {
        mp__errno("manager: stop pipe");
        if (s->watch >= 0)
            mp__close(s->watch);
        free(s);
        return NULL;
    }
    s->stop_r = p[0];
    s->stop_w = p[1];
    mp__set_nonblock(s->stop_w, true);
    mp__set_nonblock(s->stop_r, true);
    pthread_mutex_init(&s->mu, NULL);
    cond_init_monotonic(&s->idle);
    mp_listener_opts lo = {.address = s->cfg.address,
                           .backlog = 128,
                           .authkey = s->cfg.key,
                           .authkey_len = s->cfg.keylen,
                           .handshake_limit = s->cfg.handshake_limit};
    s->listener = mp_listener_new(&lo);
    if (!s->listener) {
        int code = mp_last_error_code();
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mp__last_error_detail());
        mp_manager_server_free(s);
        mp__error(code, "manager: %s", msg);
        return NULL;
    }
    snprintf(s->cfg.address, sizeof s->cfg.address, "%s", mp_listener_address(s->listener));
    return s;
}

mp_manager_server *mp_manager_server_new(const mp_manager_opts *opts)
{
    if (mp__mgr_check_opts(opts) < 0)
        return NULL;
    mgr_config cfg;
    mp__mgr_config_defaults(&cfg, opts);
    return mp__mgr_server_new(&cfg);
}

void mp__mgr_server_set_ctl(mp_manager_server *s, int fd) { s->ctl = fd; }

const char *mp_manager_server_address(const mp_manager_server *s)
{
    return s ? s->cfg.address : "";
}

const void *mp_manager_server_authkey(const mp_manager_server *s, size_t *len)
{
    if (len)
        *len = s ? s->cfg.keylen : 0;
    return s ? s->cfg.key : NULL;
}

int mp_manager_server_stop(mp_manager_server *s)
{
    if (!s)
        return mp__error(MP_EINVAL, "mp_manager_server_stop: NULL server");
    char b = 1;
    ssize_t n = write(s->stop_w, &b, 1);
    (void)n;
    return 0;
}

/* Close every connection, wake every waiter, wait for the threads, free everything. */
static void drain(mgr_server *s)
{
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    for (mgr_conn *c = s->conns; c; c = c->next)
        shutdown(c->fd, SHUT_RDWR);
    for (size_t b = 0; b < BUCKETS; b++)
        for (mgr_obj *o = s->objs[b]; o; o = o->next)
            pthread_cond_broadcast(&o->cond);
    while (s->nconns > 0)
        pthread_cond_wait(&s->idle, &s->mu);
    for (size_t b = 0; b < BUCKETS; b++)
        while (s->objs[b]) {
            mgr_obj *o = s->objs[b];
            obj_unlink(s, o);
            obj_destroy(o);
        }
    s->stopping = false;
    pthread_mutex_unlock(&s->mu);
    /* The listener stays open until mp_manager_server_free: a later serve_forever serves
     * whoever connected meanwhile. */
}

int mp_manager_server_serve_forever(mp_manager_server *s)
{
    if (!s || !s->listener)
        return mp__error(MP_EINVAL, "mp_manager_server_serve_forever: no server");
    int watch = s->watch, code = 0;
    for (;;) {
        struct pollfd p[4] = {{mp_listener_fileno(s->listener), POLLIN, 0},
                              {s->stop_r, POLLIN, 0},
                              {watch, POLLIN, 0},
                              {s->ctl, POLLIN, 0}};
        int n = mp__iwait_poll(p, 4, -1); /* negative fds are ignored */
        if (n < 0) {
            code = n == MP_EINTERRUPTED ? n : mp__error(n, "manager: poll");
            break;
        }
        if (p[1].revents || p[2].revents || p[3].revents)
            break;
        if (p[0].revents & POLLIN)
            accept_one(s);
    }
    char b[64];
    while (read(s->stop_r, b, sizeof b) > 0) /* drained: a later serve_forever serves */
        ;
    drain(s);
    return code;
}

void mp_manager_server_free(mp_manager_server *s)
{
    if (!s)
        return;
    if (s->listener) {
        pthread_mutex_lock(&s->mu);
        int n = s->nconns;
        pthread_mutex_unlock(&s->mu);
        if (n > 0 || s->nobjs > 0)
            drain(s);
        mp_listener_free(s->listener);
    }
    if (s->watch >= 0)
        mp__close(s->watch);
    if (s->ctl >= 0)
        mp__close(s->ctl);
    if (s->stop_r >= 0) {
        mp__close(s->stop_r);
        mp__close(s->stop_w);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->idle);
    }
    explicit_bzero(s->cfg.key, sizeof s->cfg.key);
    free(s);
}
