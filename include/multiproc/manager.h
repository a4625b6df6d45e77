/**
 * @file manager.h
 * @brief Managers: shared dicts, lists, namespaces, queues and sync objects owned by a
 *        server process and used through proxies, locally or over TCP.
 *
 * Python mapping (multiprocessing.managers):
 *   - `multiprocessing.Manager()` / `SyncManager().start()` -> mp_manager_new(&opts)
 *   - `BaseManager(address=, authkey=).connect()`            -> mp_manager_connect()
 *   - `m.shutdown()`, `m.address`, authkey                   -> mp_manager_shutdown,
 *                                                               mp_manager_address/_authkey
 *   - `BaseManager(...).get_server().serve_forever()`        -> mp_manager_server_new +
 *                                                               mp_manager_server_serve_forever
 *   - `m.dict()`, `m.list()`, `m.Namespace()`, `m.Value()`, `m.Array()`, `m.Queue()`,
 *     `m.JoinableQueue()`, `m.Lock()`, `m.RLock()`, `m.Semaphore()`,
 *     `m.BoundedSemaphore()`, `m.Condition()`, `m.Event()`, `m.Barrier()`
 *                                   -> mp_manager_create(m, "dict", args), or the wrappers
 *                                      mp_manager_dict(m, init) ... below
 *   - `proxy.method(*args)`        -> mp_proxy_call(p, "method", args_list, &result) or
 *                                     mp_proxy_callf(p, "method", &result, "[i s]", 1, "x")
 *   - `str(proxy)`                 -> mp_proxy_repr(p) (the referent's Python repr)
 *   - `BaseManager.register(typeid, callable)` -> mp_manager_opts.types (C constructor and
 *                                     a table of C methods, run inside the server)
 *   - exceptions from the referent -> error codes: KeyError / AttributeError MP_ENOTFOUND,
 *     IndexError MP_ERANGE, TypeError MP_ETYPE, ValueError MP_EINVAL, RuntimeError on a
 *     release MP_ENOTOWNER / MP_ESTATE, queue.Empty/Full MP_EEMPTY/MP_EFULL,
 *     BrokenBarrierError MP_EBROKEN, an unexposed method MP_EUNSUPPORTED; the message
 *     (mp_last_error) is Python's ("'Namespace' object has no attribute 'value'").
 *
 * Method names are Python's (`__getitem__`, `__setitem__`, `append`, `acquire`, ...); the
 * arguments are a list value, positional as in Python (`acquire(blocking, timeout)`,
 * `get(block, timeout)`; a nil timeout waits forever). Slices are the methods `getslice`,
 * `setslice`, `delslice` taking (start, stop, step) with nil for an omitted bound.
 * Every data type also has `__getvalue__` (a copy of the whole referent, Python's
 * `_getvalue()`) and `__repr__`.
 *
 * Beyond Python:
 *   - Data, never code: requests and replies are MessagePack values ([method, object id,
 *     args] and [0, result] or [error code, message]); a peer with the authkey can call
 *     only the methods listed per type, never make the server run code it names. The only
 *     library objects a request may carry are proxies (a handle of any other kind is
 *     refused before it is decoded).
 *   - Atomic dict updates in one request: `add` (d[k] += n, starting from a default),
 *     `setdefault`, `compare_and_set` (k, expected, new) -> bool, `pop` with a default.
 *   - References are counted per connection: a client that dies releases what only it
 *     referenced, and the Lock/RLock/Condition it held are released.
 *   - A server that dies makes every blocked and later call fail at once with MP_EEOF
 *     ("manager ... is gone"); a client that dies while parked in a blocking method is
 *     noticed and its wait dropped.
 *   - A malformed, truncated or hostile request gets an MP_EPROTO reply (or, if the
 *     framing itself is broken or over max_message, a closed connection); the server
 *     keeps serving others. A proxy knows the server's max_message and refuses a larger
 *     request itself with -EMSGSIZE, without sending it. Handshakes run on the connection's own thread (dropped after
 *     handshake_limit seconds when set), so a silent client never holds the accept path.
 *
 * Proxies are values: `mp_value_pack("[h]", &mp_kind_proxy, p)` puts one in a Process's
 * arguments (any start method), a queue item, a message on any connection (a proxy
 * carries no fd) or a managed container (nested proxies, printed as Python does:
 * `[<ListProxy object, typeid 'list' at 0x...>]`);
 * the receiver gets its own connected proxy (`mp_value_unpack(args, "[h]", &mp_kind_proxy,
 * &p)`). Keep your proxy until the receiver has its own (as in Python): the object lives
 * while some connection or some managed container refers to it.
 *
 * Thread safety: a proxy is used by one thread at a time (one connection per proxy, as
 * Python's proxies are per thread); different proxies may be used from different threads.
 * A blocking method (Lock.acquire, Queue.get, Event.wait, Condition.wait, Barrier.wait)
 * blocks only its own proxy: the server serves every connection on its own thread and
 * parks waiting requests.
 *
 * Fork behaviour: don't use a proxy in both parent and fork child (they would share one
 * connection); pass it in the child's arguments, which gives the child its own.
 */
#ifndef MULTIPROC_MANAGER_H
#define MULTIPROC_MANAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "multiproc/process.h"
#include "multiproc/value.h"

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/** A manager: the address and key of a server process (started or connected to). */
typedef struct mp_manager mp_manager;
/** A manager server run in the calling process (Python's Manager.get_server()). */
typedef struct mp_manager_server mp_manager_server;
/** A reference to an object a manager owns, with its own connection (Python's proxy). */
typedef struct mp_proxy mp_proxy;

/* ---- user-registered types -------------------------------------------------------- */

/** Build an object from the create arguments (a list value, or NULL when none). Set
 * *self. 0 or a negative code (the code travels to the client, as the create error). */
typedef int (*mp_manager_create_fn)(const mp_value *args, void **self);
/** A method: @p args is the argument list (borrowed); set *result (a new value, or leave
 * NULL for None). 0, or a negative code: then a str in *result is the error's message
 * (Python's exception text; the client's mp_last_error), else the message names the
 * method and the code. Runs in the server with every other request of the server
 * waiting: it must not block. */
typedef int (*mp_manager_method_fn)(void *self, const mp_value *args, mp_value **result);
/** Free an object when no proxy refers to it any more (may be NULL). */
typedef void (*mp_manager_destroy_fn)(void *self);
/** The object's repr (malloc'd), or NULL for "<name object at 0x...>" (may be NULL). */
typedef char *(*mp_manager_repr_fn)(void *self);

/** One method of a registered type: the name clients call and the function run. */
typedef struct mp_manager_method {
    const char *name;        /**< the method's name (what mp_proxy_call names) */
    mp_manager_method_fn fn; /**< runs in the server */
} mp_manager_method;

/**
 * A registered type (Python's BaseManager.register). The functions travel to a spawn or
 * forkserver server the way Process targets do (object + offset): they must live in the
 * program or in a library it loaded at start.
 */
typedef struct mp_manager_type {
    const char *name; /**< the typeid clients pass to mp_manager_create (< 32 bytes) */
    mp_manager_create_fn create;   /**< builds an object (required) */
    mp_manager_destroy_fn destroy; /**< frees one (NULL: nothing to free) */
    mp_manager_repr_fn repr;       /**< its repr (NULL: "<name object at 0x...>") */
    const mp_manager_method *methods; /**< the only methods clients can call */
    size_t nmethods;               /**< entries in methods */
} mp_manager_type;

/** Manager options; all-zero means the defaults. */
typedef struct mp_manager_opts {
    /** NULL: a fresh abstract Unix socket "@mp-manager-..." (nothing left on disk);
     * "/path", "host:port" (port 0 picks one), as mp_listener_opts. */
    const char *address;
    const void *authkey;   /**< NULL: this process's authkey (mp_current_process_authkey) */
    size_t authkey_len;    /**< at most 256 */
    mp_context *ctx;       /**< start method of the server process (NULL: default) */
    const mp_manager_type *types; /**< user types served besides the built-in ones */
    size_t ntypes;         /**< at most 64 */
    size_t max_message;    /**< largest request accepted, bytes; 0: 64 MiB */
    double handshake_limit; /**< seconds a client has to authenticate; 0: 20 s;
                                 MP_NO_LIMIT: none */
    int max_connections;   /**< 0: 1024; later connections are closed at once */
    /** Seconds a peer across TCP may stay silent (its host down, the link cut: no
     * answer to keepalive probes, data unacknowledged) before its connection ends;
     * 0: 30 s; MP_NO_LIMIT: none (the OS's defaults: a call waiting on a silent peer
     * may wait forever). The server uses it on its end of every TCP connection and
     * tells its clients, whose proxies use it on theirs: a call blocked on an
     * unreachable server then fails with MP_EEOF within about peer_limit + peer_limit/6
     * seconds, and the server drops an unreachable client (releasing its locks) as
     * it drops a dead one. Unix sockets need no limit (a dead peer's end closes). */
    double peer_limit;
} mp_manager_opts;

/**
 * Start a manager: a server process (started with opts->ctx) that owns the objects.
 * Returns once the server is listening. NULL on error (mp_last_error says why). The
 * server also stops when the process that started it exits.
 */
mp_manager *mp_manager_new(const mp_manager_opts *opts);
/**
 * Connect to a running manager (any process's, or a standalone server) by address and
 * authkey (NULL with length 0: this process's authkey, mp_current_process_authkey, as
 * Python's BaseManager). Checks the server answers within @p time_limit seconds (0: 20 s, MP_NO_LIMIT:
 * none, like the `..._limit` fields of options). NULL on error: -ECONNREFUSED / -ENOENT,
 * MP_EAUTH, MP_ETIMEOUT, MP_EINVAL (a NaN limit).
 */
mp_manager *mp_manager_connect(const char *address, const void *authkey, size_t authkey_len,
                               double time_limit);
/** The server's address (borrowed; for port 0 the port it picked). */
const char *mp_manager_address(const mp_manager *m);
/** The authkey (borrowed) and its length. */
const void *mp_manager_authkey(const mp_manager *m, size_t *len);
/** The server process's pid for a started manager, 0 for a connected one. */
pid_t mp_manager_pid(const mp_manager *m);
/**
 * Stop the server (Python's shutdown()): asks it to stop, then, for a started manager,
 * joins its process. Later proxy calls fail with MP_EEOF. 0; idempotent.
 */
int mp_manager_shutdown(mp_manager *m);
/** Free the handle; a started manager is shut down first. NULL is fine. */
void mp_manager_free(mp_manager *m);

/**
 * Create an object of type @p type ("dict", "list", "Namespace", "Value", "Array",
 * "Queue", "JoinableQueue", "Lock", "RLock", "Semaphore", "BoundedSemaphore",
 * "Condition", "Event", "Barrier", or a registered type) with the constructor arguments
 * @p args (a list, borrowed, NULL for none) as in Python: dict([map]), list([list]),
 * Value(typecode, value), Array(typecode, list), Queue([maxsize]), Semaphore([value]),
 * Barrier(parties). A new proxy (mp_proxy_free), NULL on error.
 */
mp_proxy *mp_manager_create(mp_manager *m, const char *type, const mp_value *args);
/** dict(init): init is a map (borrowed) or NULL. */
mp_proxy *mp_manager_dict(mp_manager *m, const mp_value *init);
/** list(init): init is a list (borrowed) or NULL. */
mp_proxy *mp_manager_list(mp_manager *m, const mp_value *init);
/** Namespace(): attributes set and read through the proxy. */
mp_proxy *mp_manager_namespace(mp_manager *m);
/** Lock() owned by the server. */
mp_proxy *mp_manager_lock(mp_manager *m);
/** RLock() owned by the server. */
mp_proxy *mp_manager_rlock(mp_manager *m);
/** Event() owned by the server. */
mp_proxy *mp_manager_event(mp_manager *m);
/** Condition() (over its own RLock) owned by the server. */
mp_proxy *mp_manager_condition(mp_manager *m);
/** Semaphore(value) owned by the server. */
mp_proxy *mp_manager_semaphore(mp_manager *m, int64_t value);
/** Queue(maxsize) owned by the server; 0: unbounded. */
mp_proxy *mp_manager_queue(mp_manager *m, int64_t maxsize);
/** Barrier(parties) owned by the server. */
mp_proxy *mp_manager_barrier(mp_manager *m, int64_t parties);

/* ---- standalone server -------------------------------------------------------------- */

/** A server in this process, listening (serve it with mp_manager_server_serve_forever).
 * opts->ctx is ignored. NULL on error. */
mp_manager_server *mp_manager_server_new(const mp_manager_opts *opts);
/** Its address (borrowed). */
const char *mp_manager_server_address(const mp_manager_server *s);
/** Its authkey (borrowed). */
const void *mp_manager_server_authkey(const mp_manager_server *s, size_t *len);
/**
 * Serve until a client calls mp_manager_shutdown or mp_manager_server_stop is called
 * (from another thread, or a signal handler: it only writes to a pipe). Every connection
 * is closed and every object freed before it returns 0; the server keeps listening
 * until mp_manager_server_free, so serve_forever may be called again. MP_EINTERRUPTED if a deferred
 * signal handler asked blocking calls to stop (also a clean stop).
 */
int mp_manager_server_serve_forever(mp_manager_server *s);
/** Ask serve_forever to return. Async-signal-safe. 0. */
int mp_manager_server_stop(mp_manager_server *s);
/** Free (stops listening, removes a socket file). NULL is fine. */
void mp_manager_server_free(mp_manager_server *s);

/* ---- proxies ------------------------------------------------------------------------- */

/** The "proxy" kind: proxies travel inside values (Process args, queues, containers). */
extern const mp_kind mp_kind_proxy;

/**
 * Call @p method on the referent with @p args (a list, borrowed; NULL: no arguments).
 * On success *result (if not NULL) is the new result value (nil for None;
 * mp_value_free). Errors: the referent's (see the mapping above, with its message),
 * MP_EEOF when the manager is gone, MP_EUNSUPPORTED for a value holding handles other
 * than proxies, connection errors.
 */
int mp_proxy_call(mp_proxy *p, const char *method, const mp_value *args, mp_value **result);
/** mp_proxy_call with the arguments built by mp_value_pack(@p fmt, ...), which must make
 * a list ("[i s]"); NULL fmt: no arguments. */
int mp_proxy_callf(mp_proxy *p, const char *method, mp_value **result, const char *fmt, ...);
/** The referent's repr, as Python's str(proxy) prints it (malloc'd, mp_free), or NULL
 * with the error in mp_last_error. */
char *mp_proxy_repr(mp_proxy *p);
/** The type name ("dict", ...), borrowed. */
const char *mp_proxy_type(const mp_proxy *p);
/** The server-side object id. */
uint64_t mp_proxy_id(const mp_proxy *p);
/** A new proxy to the same referent with its own connection (Python's copy of a proxy).
 * NULL on error. */
mp_proxy *mp_proxy_dup(const mp_proxy *p);
/** Close the proxy's connection and free it. NULL is fine. */
void mp_proxy_free(mp_proxy *p);

/* Short forms of common calls (values borrowed). */
/** p[key] = val */
int mp_proxy_setitem(mp_proxy *p, const mp_value *key, const mp_value *val);
/** *out = p[key] (new value); MP_ENOTFOUND (KeyError) / MP_ERANGE (IndexError). */
int mp_proxy_getitem(mp_proxy *p, const mp_value *key, mp_value **out);
/** len(p), or a negative code. */
int64_t mp_proxy_len(mp_proxy *p);
/** p.append(val) */
int mp_proxy_append(mp_proxy *p, const mp_value *val);
/** acquire(True, timeout): 0, MP_ETIMEOUT (negative timeout: forever). */
int mp_proxy_acquire(mp_proxy *p, double timeout);
/** release() */
int mp_proxy_release(mp_proxy *p);

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
