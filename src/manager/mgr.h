/* Manager internals, shared by the files in src/manager.
 *
 *   protocol.c   request/reply encoding, the untrusted request decoder (fuzz target)
 *   server.c     listener, connection threads, object table, per-connection refs, GC
 *   types_data.c dict, list, Namespace, Value, Array
 *   types_sync.c Lock, RLock, Semaphore, BoundedSemaphore, Condition, Event, Barrier,
 *                Queue, JoinableQueue (blocking methods park on the object's condvar)
 *   usertypes.c  registered types: their functions as (object, offset) across exec
 *   proxy.c      the client side: proxies, the "proxy" kind
 *   shmchan.c    the shared-memory request channel of local connections
 *   liveness.c   TCP keepalive / user timeout: a silent peer ends a connection in bounded time
 *   manager.c    starting the server process, connecting, shutting down
 */
#ifndef MP_MANAGER_MGR_H
#define MP_MANAGER_MGR_H

#include "multiproc/connection.h"
#include "multiproc/manager.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define MGR_MAX_KEY 256
#define MGR_MAX_TYPES 64
#define MGR_ADDR_LEN 128
#define MGR_PEER_LIMIT_DEFAULT 30.0 /* seconds: mp_manager_opts.peer_limit 0 */

/* ---- protocol ----------------------------------------------------------------------- */

typedef struct mgr_request {
    mp_value *root;     /* owned: the decoded [method, id, args] */
    const char *method; /* borrowed from root */
    uint64_t id;
    const mp_value *args; /* borrowed from root: a list */
    bool has_handles;     /* the request may hold proxies (nested proxies seen) */
} mgr_request;

/* Decode an untrusted request: only proxies may appear as handles (the decoder refuses
 * any other kind before its import runs), the shape must be
 * [str, int >= 0, list]. 0 or MP_EPROTO with a message; on success req->root owned. */
int mp__mgr_parse_request(const void *buf, size_t len, mgr_request *req);
/* Encode a request / a reply: *buf (mp_free). Only proxies may travel (fds refused). A
 * failed reply's message is the detail alone (mp__last_error_detail()): the client puts
 * its own "NAME: description: " prefix on it. */
int mp__mgr_encode_request(const char *method, uint64_t id, const mp_value *args, char **buf,
                           size_t *len);
int mp__mgr_encode_reply(int code, const char *message, const mp_value *result, char **buf,
                         size_t *len);
/* Client side: decode a reply; 0 with *result (may be NULL), or the remote error code
 * with its message set as the last error. */
int mp__mgr_parse_reply(const void *buf, size_t len, mp_value **result);

/* ---- server ------------------------------------------------------------------------- */

typedef struct mp_manager_server mgr_server;
typedef struct mgr_conn mgr_conn;
typedef struct mgr_obj mgr_obj;

/* A waiter parked on an object (Condition, Barrier): lives on the waiting thread's stack. */
typedef struct mgr_waiter {
    struct mgr_waiter *next;
    int outcome; /* 0 waiting, 1 notified / passed, -1 broken */
} mgr_waiter;

typedef struct mgr_type mgr_type;

struct mgr_obj {
    uint64_t id;
    const mgr_type *type;
    long refs;    /* references held by connections */
    bool marked;  /* GC mark */
    mgr_obj *next; /* hash chain */
    pthread_cond_t cond; /* waiters on this object */
    mp_value *v;  /* dict / list / Namespace / Value / Array / Queue items */
    char typecode; /* Value, Array */
    int64_t count;   /* semaphore value, lock state, event flag, queue unfinished tasks */
    int64_t limit;   /* bounded semaphore max, queue maxsize, barrier parties */
    uint64_t owner;  /* lock holder: connection id (0: none) */
    int64_t depth;   /* RLock / Condition recursion */
    bool broken;     /* barrier */
    double timeout;  /* barrier default timeout (negative: none) */
    mgr_waiter *waiters; /* Condition / Barrier, FIFO */
    void *user;      /* registered type */
    const mp_manager_type *utype;
};

/* A method of a built-in type: runs with the server mutex held. May wait on o->cond via
 * mp__mgr_wait. Sets *result (NULL: None). 0 or a negative code with a message. */
typedef int (*mgr_method_fn)(mgr_conn *c, mgr_obj *o, const mp_value *args, mp_value **result);

typedef struct mgr_method {
    const char *name;
    mgr_method_fn fn;
} mgr_method;

struct mgr_type {
    const char *name;
    int (*init)(mgr_obj *o, const mp_value *args);
    void (*fini)(mgr_obj *o);
    char *(*repr)(mgr_obj *o);
    /* Release what connection c holds in o (locks) when c ends. */
    void (*conn_gone)(mgr_obj *o, uint64_t conn_id);
    const mgr_method *methods;
    size_t nmethods;
};

extern const mgr_type *const mp__mgr_builtin_types[];
extern const size_t mp__mgr_builtin_count;

/* Wait on o->cond with the server mutex until woken, up to deadline (mp__deadline;
 * negative: forever): 0 (woken: re-check), MP_ETIMEOUT, MP_EEOF (the client is gone) or
 * MP_ECLOSED (the server is stopping). */
int mp__mgr_wait(mgr_conn *c, mgr_obj *o, double deadline);
/* The id of the connection (owner identity for locks). */
uint64_t mp__mgr_conn_id(const mgr_conn *c);
/* Wake everyone parked on o. */
void mp__mgr_wake(mgr_obj *o);

/* Argument helpers for methods (messages name the method). */
int mp__mgr_nargs(const mp_value *args, size_t min, size_t max, const char *method);
const mp_value *mp__mgr_arg(const mp_value *args, size_t i); /* NULL past the end */
/* timeout argument: nil/absent -> -1 (forever), number >= 0 -> seconds. */
int mp__mgr_timeout_arg(const mp_value *args, size_t i, double *timeout, const char *method);
bool mp__mgr_bool_arg(const mp_value *args, size_t i, bool dflt);

/* True while the calling thread is a server connection thread: a proxy decoded there is
 * a plain reference (no connection of its own). */
extern _Thread_local bool mp__mgr_in_server;

/* Server configuration (also what travels to a spawned server). */
typedef struct mgr_config {
    char address[MGR_ADDR_LEN]; /* "" : fresh abstract name */
    unsigned char key[MGR_MAX_KEY];
    size_t keylen;
    size_t max_message;
    double handshake_limit;
    int max_connections;
    double peer_limit; /* seconds (> 0) or MP_NO_LIMIT: both ends of a TCP connection */
    const mp_manager_type *types;
    size_t ntypes;
    pid_t watch_pid; /* stop when this process ends (0: never) */
} mgr_config;

void mp__mgr_config_defaults(mgr_config *cfg, const mp_manager_opts *opts);
/* MP_EINVAL (with a message) for options no manager can start with. */
int mp__mgr_check_opts(const mp_manager_opts *opts);
mp_manager_server *mp__mgr_server_new(const mgr_config *cfg);
/* The control socket of a server process (adopted): a byte or EOF on it stops serving. */
void mp__mgr_server_set_ctl(mp_manager_server *s, int fd);

/* ---- a silent peer (liveness.c) ---------------------------------------------------- */

/* On a TCP socket: keepalive probes and TCP_USER_TIMEOUT so that a peer that stays
 * silent for about limit seconds ends the connection (a blocked read fails with
 * ETIMEDOUT); limit < 0 turns both off. Nothing for other sockets. Best effort: 0 or
 * an -errno, the last error untouched (callers go on without it). */
int mp__mgr_peer_limit_apply(int fd, double limit);
/* The option's value in seconds: 0 -> MGR_PEER_LIMIT_DEFAULT, negative -> MP_NO_LIMIT. */
double mp__mgr_peer_limit(double opt);
/* A server's limits from a ping / incref reply: an int (max_message, from an older
 * server) or [max_message, peer_limit]. *peer is left alone when the reply has none. */
void mp__mgr_reply_limits(const mp_value *v, size_t *max, double *peer);

/* ---- registered types across exec --------------------------------------------------- */
/* Describe types as a value ([[name, create, destroy, repr, [[mname, fn]...]]...],
 * each function as [path, offset, sym] or nil). */
int mp__mgr_types_encode(const mp_manager_type *types, size_t n, mp_value **out);
/* Rebuild them in a spawned server (malloc'd array, lives until exit). */
int mp__mgr_types_decode(const mp_value *v, mp_manager_type **types, size_t *n);

/* ---- proxies ------------------------------------------------------------------------ */

/* A proxy for (address, key, id, type, token); connects unless in a server thread. */
typedef struct mgr_ref {
    char address[MGR_ADDR_LEN];
    unsigned char key[MGR_MAX_KEY];
    size_t keylen;
    uint64_t id;
    uint64_t token;
    char type[32];
} mgr_ref;

/* The reference a proxy handle value stands for (NULL if v is not a proxy). */
const mgr_ref *mp__mgr_proxy_ref(const mp_value *v);
/* Connect to a manager (authenticated), within limit seconds (0 = no limit). */
int mp__mgr_connect(const char *address, const void *key, size_t keylen, double limit,
                    mp_connection **out);
/* The same for a manager known to have served (creating an object, a proxy's own
 * connection): a refused or reset connection means it is gone, MP_EEOF. */
int mp__mgr_reconnect(const char *address, const void *key, size_t keylen, double limit,
                      mp_connection **out);
/* One request/response on a connection. A request encoding to more than max bytes (the
 * server's max_message; 0: unknown) is refused here with -EMSGSIZE, never sent: the
 * server would close the connection on it. */
int mp__mgr_roundtrip(mp_connection *c, const char *address, size_t max, const char *method,
                      uint64_t id, const mp_value *args, mp_value **result);
/* A connected proxy for an object the connection already references. */
mp_proxy *mp__mgr_proxy_adopt(mp_connection *c, const mgr_ref *ref, size_t max_message);

/* The server side of the handshake on an accepted connection (src/listener.c). */
int mp__listener_handshake(const mp_listener *l, mp_connection *c);

#endif
