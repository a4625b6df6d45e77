/* Proxies: the client side of a manager.
 *
 * DESIGN: a proxy owns one authenticated connection to the server, on which it holds a
 * reference to its object, and is used by one thread at a time: a call sends
 * [method, id, args] and waits for the reply. A proxy travels as a value of kind
 * "proxy" (address, authkey, object id, server token, type name; no fds); importing one
 * connects and takes a reference of its own, except inside a server thread, where a
 * proxy stored in a container is only a reference (mp__mgr_in_server). A server that
 * dies closes the socket: the blocked or next call gets MP_EEOF. A call interrupted by
 * a signal handler leaves its reply pending; the next call reads and drops it first.
 * On a local (Unix socket) connection the proxy's second call asks for the
 * shared-memory channel (shmchan.c) and later calls go through its slot when they fit;
 * the socket stays open, so a server's death is still noticed at once.
 * A proxy in a reply (a nested proxy read out of a container) carries the address its
 * storer used, which may mean nothing here ("127.0.0.1:50000" stored by a client on the
 * server's host, "0.0.0.0:50000" by the server's own): when it belongs to the server
 * that sent the reply (the same token), it takes the address this proxy reached that
 * server by (reply_via, set on the calling thread while the reply is decoded). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/value.h"
#include "manager/mgr.h"
#include "manager/shmchan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The proxy whose reply is being decoded on this thread (see the DESIGN note). */
static _Thread_local const mgr_ref *reply_via;

struct mp_proxy {
    mgr_ref ref;
    mp_connection *conn; /* NULL: a server-side reference, or the connection failed */
    int conn_err;        /* why conn is NULL in a client (0: server-side reference) */
    size_t max_message;  /* the server's largest request (0: unknown) */
    bool pending;        /* an interrupted call's reply is still on its way */
    bool pending_slot;   /* ... in the channel's slot */
    bool pending_fds;    /* ... followed by the channel's fds (an interrupted set-up) */
    mgr_chan chan;       /* shared-memory channel of a local connection (shmchan.c) */
    bool chan_tried;
    unsigned long ncalls;
};

int mp__mgr_connect(const char *address, const void *key, size_t keylen, double limit,
                    mp_connection **out)
{
    mp_client_opts co = {.authkey = key, .authkey_len = keylen, .time_limit = limit};
    *out = mp_client(address, &co);
    if (!*out)
        return mp_last_error_code();
    /* until the server tells its own limit (liveness.c) */
    mp__mgr_peer_limit_apply(mp_connection_fileno(*out), MGR_PEER_LIMIT_DEFAULT);
    return 0;
}

static int gone(const char *address, int code)
{
    return mp__error(MP_EEOF, "the manager at '%s' is gone (%s)", address, mp_strerror(code));
}

int mp__mgr_reconnect(const char *address, const void *key, size_t keylen, double limit,
                      mp_connection **out)
{
    int r = mp__mgr_connect(address, key, keylen, limit, out);
    if (r == -ECONNREFUSED || r == -ENOENT || r == -ECONNRESET || r == -EPIPE || r == MP_EEOF)
        return gone(address, r);
    return r;
}

/* A connection TCP gave up on: the peer stayed silent past the peer limit (liveness.c)
 * or its host or network is unreachable. */
static bool unreachable(int code)
{
    return code == -ETIMEDOUT || code == -EHOSTUNREACH || code == -ENETUNREACH ||
           code == -EHOSTDOWN || code == -ENETDOWN;
}

static int lost(const char *address, int code)
{
    if (unreachable(code))
        return mp__error(MP_EEOF, "the manager at '%s' is unreachable (%s)", address,
                         mp_strerror(code));
    return gone(address, code);
}

static int recv_reply(mp_connection *c, const char *address, void **buf, size_t *len)
{
    int r = mp_connection_recv_bytes(c, 0, buf, len);
    if (r == MP_EEOF || r == -ECONNRESET || r == -EPIPE || r == MP_ECLOSED || unreachable(r))
        return lost(address, r);
    return r;
}

/* Encode a request, refusing one over the server's max (0: unknown). */
static int encode_checked(const char *method, uint64_t id, const mp_value *args, size_t max,
                          char **buf, size_t *len)
{
    int r = mp__mgr_encode_request(method, id, args, buf, len);
    if (r < 0)
        return r;
    if (max && *len > max) {
        mp_free(*buf);
        return mp__error(-EMSGSIZE, "%s: a request of %zu bytes is over the manager's "
                                    "max_message of %zu bytes (not sent)",
                         method, *len, max);
    }
    return 0;
}

static int send_request(mp_connection *c, const char *address, const char *buf, size_t len)
{
    int r = mp_connection_send_bytes(c, buf, 0, len);
    if (r == MP_EEOF || r == -ECONNRESET || r == -EPIPE || r == MP_ECLOSED || unreachable(r))
        return lost(address, r);
    return r;
}

static int finish(void *rep, size_t len, mp_value **result)
{
    int r = mp__mgr_parse_reply(rep, len, result);
    mp_free(rep);
    return r;
}

int mp__mgr_roundtrip(mp_connection *c, const char *address, size_t max, const char *method,
                      uint64_t id, const mp_value *args, mp_value **result)
{
    char *buf;
    size_t len;
    int r = encode_checked(method, id, args, max, &buf, &len);
    if (r < 0)
        return r;
    r = send_request(c, address, buf, len);
    mp_free(buf);
    if (r < 0)
        return r;
    void *rep;
    r = recv_reply(c, address, &rep, &len);
    return r < 0 ? r : finish(rep, len, result);
}

/* Wait for the reply to a request put in the channel's slot. */
static int chan_reply(mp_proxy *p, void **rep, size_t *len)
{
    int r = mp__mgr_chan_await(&p->chan, p->conn, rep, len);
    if (r == MP_EEOF || r == -ECONNRESET || r == -EPIPE || r == MP_ECLOSED || unreachable(r))
        return lost(p->ref.address, r);
    if (r < 0 && r != MP_EINTERRUPTED && mp_last_error_code() != r)
        return mp__error(r, "manager channel: waiting for the reply");
    return r;
}

/* One call through the proxy: the slot when the request fits, else the socket. */
static int proxy_roundtrip(mp_proxy *p, const char *method, const mp_value *args,
                           mp_value **result)
{
    if (!p->chan.shm) {
        int r = mp__mgr_roundtrip(p->conn, p->ref.address, p->max_message, method, p->ref.id,
                                  args, result);
        if (r == MP_EINTERRUPTED)
            p->pending = true;
        return r;
    }
    char *buf;
    size_t len;
    int r = encode_checked(method, p->ref.id, args, p->max_message, &buf, &len);
    if (r < 0)
        return r;
    bool slot = mp__mgr_chan_send(&p->chan, buf, len) == 0;
    if (!slot)
        r = send_request(p->conn, p->ref.address, buf, len);
    mp_free(buf);
    if (r < 0)
        return r;
    void *rep;
    r = slot ? chan_reply(p, &rep, &len) : recv_reply(p->conn, p->ref.address, &rep, &len);
    if (r == MP_EINTERRUPTED) {
        p->pending = true;
        p->pending_slot = slot;
    }
    return r < 0 ? r : finish(rep, len, result);
}

static mp_proxy *proxy_alloc(const mgr_ref *ref)
{
    mp_proxy *p = mp__calloc(1, sizeof *p);
    if (p) {
        p->ref = *ref;
        p->chan = (mgr_chan)MGR_CHAN_NONE;
    }
    return p;
}

mp_proxy *mp__mgr_proxy_adopt(mp_connection *c, const mgr_ref *ref, size_t max_message)
{
    mp_proxy *p = proxy_alloc(ref);
    if (p) {
        p->conn = c;
        p->max_message = max_message;
    }
    else
        mp_connection_free(c);
    return p;
}

/* Connect and take a reference to the object. */
static int proxy_connect(mp_proxy *p)
{
    mp_connection *c;
    int r = mp__mgr_reconnect(p->ref.address, p->ref.key, p->ref.keylen, 20.0, &c);
    if (r < 0)
        return r;
    mp_value *args = mp_value_pack("[I I]", (int64_t)p->ref.id, (int64_t)p->ref.token);
    mp_value *lim = NULL;
    r = args ? mp__mgr_roundtrip(c, p->ref.address, 0, "incref", 0, args, &lim)
             : mp_last_error_code();
    mp_value_free(args);
    if (r < 0) {
        mp_connection_free(c);
        return r;
    }
    double peer = MGR_PEER_LIMIT_DEFAULT;
    p->max_message = 0;
    mp__mgr_reply_limits(lim, &p->max_message, &peer);
    mp_value_free(lim);
    mp__mgr_peer_limit_apply(mp_connection_fileno(c), peer);
    p->conn = c;
    p->conn_err = 0;
    return 0;
}

static int ensure_connected(mp_proxy *p)
{
    if (p->conn)
        return 0;
    if (p->conn_err == 0 && mp__mgr_in_server)
        return mp__error(MP_ESTATE, "a proxy stored in a manager cannot be called there");
    int r = proxy_connect(p);
    if (r < 0)
        p->conn_err = r;
    return r;
}

/* Drop the reply of a call that a signal handler interrupted. */
static int drain_pending(mp_proxy *p)
{
    if (!p->pending)
        return 0;
    void *buf;
    size_t len;
    int r = p->pending_slot ? chan_reply(p, &buf, &len)
                            : recv_reply(p->conn, p->ref.address, &buf, &len);
    if (r < 0)
        return r;
    mp_free(buf);
    p->pending = p->pending_slot = false;
    if (p->pending_fds) {
        p->pending_fds = false;
        if (mp__mgr_chan_recv(&p->chan, mp_connection_fileno(p->conn)) < 0)
            p->chan = (mgr_chan)MGR_CHAN_NONE; /* the socket carries everything */
    }
    return 0;
}

/* A proxy's second call on a local connection asks for the shared-memory channel (a
 * proxy used once pays nothing for it). Any failure but the server's end leaves the
 * socket path. */
static int chan_setup(mp_proxy *p)
{
    p->chan_tried = true;
    int fd = mp_connection_fileno(p->conn);
    if (getenv("MP_MANAGER_NO_SHM") || !mp__mgr_chan_local(fd))
        return 0;
    mp_value *res = NULL;
    int r = mp__mgr_roundtrip(p->conn, p->ref.address, 0, "shm", 0, NULL, &res);
    mp_value_free(res);
    if (r == MP_EINTERRUPTED) {
        p->pending = p->pending_fds = true;
        return r;
    }
    if (r == MP_EEOF)
        return r;
    if (r == 0 && mp__mgr_chan_recv(&p->chan, fd) < 0)
        p->chan = (mgr_chan)MGR_CHAN_NONE;
    return 0;
}

int mp_proxy_call(mp_proxy *p, const char *method, const mp_value *args, mp_value **result)
{
    if (result)
        *result = NULL;
    if (!p || !method)
        return mp__error(MP_EINVAL, "mp_proxy_call: NULL %s", p ? "method" : "proxy");
    int r = ensure_connected(p);
    if (r < 0)
        return r;
    r = drain_pending(p);
    if (r < 0)
        return r;
    if (!p->chan_tried && p->ncalls++ >= 1 && (r = chan_setup(p)) < 0)
        return r;
    mp_value *res = NULL;
    const mgr_ref *was = reply_via;
    reply_via = &p->ref;
    r = proxy_roundtrip(p, method, args, &res);
    reply_via = was;
    if (result)
        *result = res;
    else
        mp_value_free(res);
    return r;
}

int mp_proxy_callf(mp_proxy *p, const char *method, mp_value **result, const char *fmt, ...)
{
    if (result)
        *result = NULL;
    mp_value *args = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        args = mp__value_vpack(fmt, ap);
        va_end(ap);
        if (!args)
            return mp_last_error_code();
        if (mp_value_type(args) != MP_LIST) {
            mp_value_free(args);
            return mp__error(MP_EINVAL, "mp_proxy_callf: the format must build a list");
        }
    }
    int r = mp_proxy_call(p, method, args, result);
    mp_value_free(args);
    return r;
}

char *mp_proxy_repr(mp_proxy *p)
{
    mp_value *v;
    if (mp_proxy_call(p, "__repr__", NULL, &v) < 0)
        return NULL;
    size_t len;
    const char *s = mp_value_get_str(v, &len);
    char *out = s ? malloc(len + 1) : NULL;
    if (out)
        memcpy(out, s, len + 1);
    else
        mp__error(s ? -ENOMEM : MP_EPROTO, "repr: %s", s ? "out of memory" : "not a str");
    mp_value_free(v);
    return out;
}

const char *mp_proxy_type(const mp_proxy *p) { return p ? p->ref.type : ""; }
uint64_t mp_proxy_id(const mp_proxy *p) { return p ? p->ref.id : 0; }

mp_proxy *mp_proxy_dup(const mp_proxy *p)
{
    if (!p) {
        mp__error(MP_EINVAL, "mp_proxy_dup: NULL proxy");
        return NULL;
    }
    mp_proxy *q = proxy_alloc(&p->ref);
    if (q && proxy_connect(q) < 0) {
        free(q);
        return NULL;
    }
    return q;
}

void mp_proxy_free(mp_proxy *p)
{
    if (!p)
        return;
    mp__mgr_chan_close(&p->chan);
    mp_connection_free(p->conn); /* the server drops this connection's references */
    explicit_bzero(p->ref.key, sizeof p->ref.key);
    free(p);
}

/* ---- short forms ------------------------------------------------------------------------- */

int mp_proxy_setitem(mp_proxy *p, const mp_value *key, const mp_value *val)
{
    if (!key || !val)
        return mp__error(MP_EINVAL, "mp_proxy_setitem: NULL %s", key ? "value" : "key");
    return mp_proxy_callf(p, "__setitem__", NULL, "[O O]", key, val);
}

int mp_proxy_getitem(mp_proxy *p, const mp_value *key, mp_value **out)
{
    if (!key || !out)
        return mp__error(MP_EINVAL, "mp_proxy_getitem: NULL %s", key ? "output" : "key");
    return mp_proxy_callf(p, "__getitem__", out, "[O]", key);
}

int64_t mp_proxy_len(mp_proxy *p)
{
    mp_value *v;
    int r = mp_proxy_call(p, "__len__", NULL, &v);
    if (r < 0)
        return r;
    int64_t n = mp_value_get_int(v);
    mp_value_free(v);
    return n;
}

int mp_proxy_append(mp_proxy *p, const mp_value *val)
{
    if (!val)
        return mp__error(MP_EINVAL, "mp_proxy_append: NULL value");
    return mp_proxy_callf(p, "append", NULL, "[O]", val);
}

int mp_proxy_acquire(mp_proxy *p, double timeout)
{
    mp_value *v;
    int r = timeout < 0 ? mp_proxy_callf(p, "acquire", &v, "[b n]", 1)
                        : mp_proxy_callf(p, "acquire", &v, "[b f]", 1, timeout);
    if (r < 0)
        return r;
    bool ok = mp_value_get_bool(v);
    mp_value_free(v);
    return ok ? 0 : mp__error(MP_ETIMEOUT, "acquire: timed out after %g s", timeout);
}

int mp_proxy_release(mp_proxy *p) { return mp_proxy_call(p, "release", NULL, NULL); }

/* ---- the kind ---------------------------------------------------------------------------- */

static int proxy_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    (void)fds;
    mp_proxy *p = obj;
    *nfds = 0;
    mp_value *v = mp_value_pack("[s y# I I s]", p->ref.address, p->ref.key, p->ref.keylen,
                                (int64_t)p->ref.id, (int64_t)p->ref.token, p->ref.type);
    if (!v)
        return mp_last_error_code();
    char *buf;
    int r = mp_value_encode(v, &buf, len, NULL, 0, NULL);
    mp_value_free(v);
    if (r < 0)
        return r;
    *data = malloc(*len ? *len : 1);
    if (!*data) {
        mp_free(buf);
        return mp__error(-ENOMEM, "exporting a proxy");
    }
    memcpy(*data, buf, *len);
    mp_free(buf);
    return 0;
}

static int parse_ref(const void *data, size_t len, mgr_ref *ref)
{
    mp_value *v;
    if (mp_value_decode(data, len, NULL, 0, &v) < 0)
        return mp__error(MP_EPROTO, "proxy: %s", mp__last_error_detail());
    const char *addr, *type;
    const void *key;
    size_t keylen;
    int64_t id, token;
    int r = mp_value_unpack(v, "[s y# I I s]", &addr, &key, &keylen, &id, &token, &type);
    if (r == 0 && (strlen(addr) >= sizeof ref->address || keylen > sizeof ref->key ||
                   strlen(type) >= sizeof ref->type || id <= 0))
        r = -1;
    if (r == 0) {
        memset(ref, 0, sizeof *ref);
        strcpy(ref->address, addr);
        memcpy(ref->key, key, keylen);
        ref->keylen = keylen;
        ref->id = (uint64_t)id;
        ref->token = (uint64_t)token;
        strcpy(ref->type, type);
    }
    mp_value_free(v);
    return r < 0 ? mp__error(MP_EPROTO, "proxy: malformed description") : 0;
}

static int proxy_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    for (size_t i = 0; i < nfds; i++)
        mp__close(fds[i]);
    if (nfds)
        return mp__error(MP_EPROTO, "proxy: unexpected fds");
    mgr_ref ref;
    int r = parse_ref(data, len, &ref);
    if (r < 0)
        return r;
    if (reply_via && ref.token == reply_via->token) /* the replying server's own object */
        memcpy(ref.address, reply_via->address, sizeof ref.address);
    mp_proxy *p = proxy_alloc(&ref);
    if (!p)
        return mp_last_error_code();
    /* Connect now so the receiver holds its own reference as early as possible; if the
     * manager cannot be reached, the proxy's calls report why (the value still decodes). */
    if (!mp__mgr_in_server && proxy_connect(p) < 0)
        p->conn_err = mp_last_error_code();
    *obj = p;
    return 0;
}

static void proxy_release(void *obj) { mp_proxy_free(obj); }

const mp_kind mp_kind_proxy = {"proxy", proxy_export, proxy_import, proxy_release};

/* Python's proxy class for each typeid (AutoProxy[typeid] for the others). */
static const char *proxy_class(const char *type)
{
    static const char *const map[][2] = {
        {"dict", "DictProxy"},       {"list", "ListProxy"},         {"Namespace", "NamespaceProxy"},
        {"Value", "ValueProxy"},     {"Array", "ArrayProxy"},       {"Lock", "AcquirerProxy"},
        {"RLock", "AcquirerProxy"},  {"Semaphore", "AcquirerProxy"}, {"BoundedSemaphore", "AcquirerProxy"},
        {"Condition", "ConditionProxy"}, {"Event", "EventProxy"},   {"Barrier", "BarrierProxy"}};
    for (size_t i = 0; i < sizeof map / sizeof map[0]; i++)
        if (strcmp(map[i][0], type) == 0)
            return map[i][1];
    return NULL;
}

/* How a proxy prints inside a container: "<ListProxy object, typeid 'list' at 0x...>". */
static void proxy_repr(const void *obj, char *out, size_t n)
{
    const mp_proxy *p = obj;
    const char *cls = proxy_class(p->ref.type);
    if (cls)
        snprintf(out, n, "<%s object, typeid '%s' at %p>", cls, p->ref.type, obj);
    else
        snprintf(out, n, "<AutoProxy[%s] object, typeid '%s' at %p>", p->ref.type, p->ref.type,
                 obj);
}

__attribute__((constructor(200))) static void proxy_register(void)
{
    mp_kind_register(&mp_kind_proxy);
    mp__kind_set_repr(&mp_kind_proxy, proxy_repr);
}

const mgr_ref *mp__mgr_proxy_ref(const mp_value *v)
{
    const mp_kind *k = NULL;
    mp_proxy *p = mp_value_get_handle(v, &k);
    return p && k == &mp_kind_proxy ? &p->ref : NULL;
}
