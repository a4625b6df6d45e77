/* Starting a manager's server process, connecting to one, shutting it down.
 *
 * DESIGN: mp_manager_new starts a daemon Process (any start method) whose target builds
 * a server from the configuration in its arguments (address, authkey, limits, the
 * registered types as code locations) and reports [0, address] or [code, message] on a
 * one-way pipe; the parent waits for that report, so the manager is listening when
 * mp_manager_new returns. The server watches the starting process's pidfd and stops
 * when it ends. The report pipe is a socket pair that stays open as a control socket:
 * mp_manager_shutdown stops its own server with one byte there (no connection and
 * handshake to make on the way out). Each proxy opens its own connection; the manager handle itself keeps
 * none, so a manager object is only an address, a key and maybe a process. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "manager/mgr.h"
#include "multiproc/process.h"
#include "multiproc/log.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

struct mp_manager {
    char address[MGR_ADDR_LEN];
    unsigned char key[MGR_MAX_KEY];
    size_t keylen;
    mp_process *proc; /* NULL for a connected manager */
    mp_connection *ctl; /* our end of the server process's control socket (or NULL) */
    size_t max_message; /* the server's (0: unknown) */
    bool shut;
};

void mp__mgr_types_free(mp_manager_type *types, size_t n);

#define START_LIMIT 60.0 /* seconds for a server process to report (spawn under load) */

/* ---- the server process ---------------------------------------------------------------- */

static int report(mp_connection *c, int code, const char *what)
{
    mp_value *v = code < 0 ? mp_value_pack("[i s]", code, what) : mp_value_pack("[i s]", 0, what);
    int r = v ? mp_connection_send(c, v) : mp_last_error_code();
    mp_value_free(v);
    return r;
}

static int config_from_args(const mp_value *args, mgr_config *cfg, const mp_value **types,
                            mp_connection **conn)
{
    const char *addr;
    const void *key;
    size_t keylen;
    int64_t maxmsg, maxconn, watch;
    double hs, peer;
    void *handle = NULL;
    memset(cfg, 0, sizeof *cfg);
    if (mp_value_unpack(args, "[s y# I f f I I h o]", &addr, &key, &keylen, &maxmsg, &hs, &peer,
                        &maxconn, &watch, &mp_kind_connection, &handle, types) < 0)
        return mp_last_error_code();
    *conn = handle;
    if (keylen > sizeof cfg->key || strlen(addr) >= sizeof cfg->address)
        return mp__error(MP_EPROTO, "manager: bad start arguments");
    snprintf(cfg->address, sizeof cfg->address, "%s", addr);
    memcpy(cfg->key, key, keylen);
    cfg->keylen = keylen;
    cfg->max_message = (size_t)maxmsg;
    cfg->handshake_limit = hs;
    cfg->peer_limit = peer;
    cfg->max_connections = (int)maxconn;
    cfg->watch_pid = (pid_t)watch;
    return 0;
}

static int manager_main(mp_value *args)
{
    mgr_config cfg;
    const mp_value *tdesc = NULL;
    mp_connection *conn = NULL;
    mp_value *a = mp_value_list_get(args, 0);
    if (config_from_args(a ? a : args, &cfg, &tdesc, &conn) < 0)
        mp_process_fail("manager: %s", mp_last_error());
    mp_manager_type *types = NULL;
    size_t ntypes = 0;
    if (mp__mgr_types_decode(tdesc, &types, &ntypes) < 0) {
        report(conn, mp_last_error_code(), mp__last_error_detail());
        return 1;
    }
    cfg.types = types;
    cfg.ntypes = ntypes;
    mp_manager_server *s = mp__mgr_server_new(&cfg);
    explicit_bzero(cfg.key, sizeof cfg.key);
    if (!s) {
        report(conn, mp_last_error_code(), mp__last_error_detail());
        mp__mgr_types_free(types, ntypes);
        return 1;
    }
    mp_log(MP_LOG_INFO, "manager serving at '%s'", mp_manager_server_address(s));
    report(conn, 0, mp_manager_server_address(s));
    /* The report socket stays open as the control socket: a byte from the starting
     * process (mp_manager_shutdown) stops the server without a connection. */
    int ctl = fcntl(mp_connection_fileno(conn), F_DUPFD_CLOEXEC, 3);
    if (ctl >= 0)
        mp__mgr_server_set_ctl(s, ctl);
    mp_connection_close(conn);
    int r = mp_manager_server_serve_forever(s);
    mp_manager_server_free(s);
    mp__mgr_types_free(types, ntypes);
    return r < 0 ? 1 : 0;
}

/* ---- starting --------------------------------------------------------------------------- */

static mp_manager *manager_alloc(const char *address, const void *key, size_t keylen)
{
    if (!address || strlen(address) >= MGR_ADDR_LEN || keylen > MGR_MAX_KEY || (!key && keylen)) {
        mp__error(MP_EINVAL, "manager: bad address or authkey (at most %d bytes)", MGR_MAX_KEY);
        return NULL;
    }
    mp_manager *m = mp__calloc(1, sizeof *m);
    if (!m)
        return NULL;
    snprintf(m->address, sizeof m->address, "%s", address);
    if (keylen)
        memcpy(m->key, key, keylen);
    m->keylen = keylen;
    return m;
}

static mp_value *start_args(const mgr_config *cfg, mp_connection *w, const mp_manager_opts *o)
{
    mp_value *types = NULL;
    if (o && o->ntypes) {
        if (mp__mgr_types_encode(o->types, o->ntypes, &types) < 0)
            return NULL;
    } else if (!(types = mp_value_nil())) {
        return NULL;
    }
    mp_value *inner = mp_value_pack("[s y# I f f I I h o]", cfg->address, cfg->key, cfg->keylen,
                                    (int64_t)cfg->max_message, cfg->handshake_limit,
                                    cfg->peer_limit,
                                    (int64_t)cfg->max_connections, (int64_t)getpid(),
                                    &mp_kind_connection, w, types);
    return inner ? mp_value_pack("[o]", inner) : NULL;
}

/* Wait for the child's report: 0 and the address, or its error. */
static int await_report(mp_connection *r, mp_process *p, char *address, size_t n)
{
    double deadline = mp__deadline(START_LIMIT);
    for (;;) {
        int ready = mp_connection_poll(r, 0.05);
        if (ready < 0)
            return ready;
        if (ready)
            break;
        if (!mp_process_is_alive(p))
            return mp__error(MP_EPROCESS, "the manager process ended before serving");
        if (mp__now() > deadline)
            return mp__error(MP_ETIMEOUT, "the manager process did not report in %g s",
                             START_LIMIT);
    }
    mp_value *v;
    int code = mp_connection_recv(r, &v);
    if (code == MP_EEOF)
        return mp__error(MP_EPROCESS, "the manager process ended before serving");
    if (code < 0)
        return code;
    int64_t c;
    const char *s;
    if (mp_value_unpack(v, "[I s]", &c, &s) < 0)
        code = mp__error(MP_EPROTO, "manager: bad report from the server process");
    else if (c < 0)
        code = mp__error((int)c, "%s", s);
    else
        snprintf(address, n, "%s", s);
    mp_value_free(v);
    return code;
}

static int start_server(mp_manager *m, const mgr_config *cfg, const mp_manager_opts *opts)
{
    static atomic_int counter;
    mp_connection *r, *w;
    int code = mp_pipe(true, &r, &w);
    if (code < 0)
        return code;
    mp_value *args = start_args(cfg, w, opts);
    if (!args) {
        code = mp_last_error_code();
        mp_connection_free(r);
        mp_connection_free(w);
        return code;
    }
    char name[32];
    snprintf(name, sizeof name, "SyncManager-%d", atomic_fetch_add(&counter, 1) + 1);
    mp_process_opts po = {.target = manager_main,
                          .args = args,
                          .name = name,
                          .daemon = true,
                          .ctx = opts ? opts->ctx : NULL};
    m->proc = mp_process_new(&po);
    mp_value_free(args);
    code = m->proc ? mp_process_start(m->proc) : mp_last_error_code();
    mp_connection_free(w);
    if (code == 0)
        code = await_report(r, m->proc, m->address, sizeof m->address);
    if (code == 0)
        m->ctl = r;
    else
        mp_connection_free(r);
    if (code < 0 && m->proc) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mp__last_error_detail());
        if (mp_process_pid(m->proc) > 0) {
            mp_process_kill(m->proc);
            mp_process_join(m->proc, -1);
        }
        mp_process_free(m->proc);
        m->proc = NULL;
        mp__error(code, "%s", msg);
    }
    return code;
}

mp_manager *mp_manager_new(const mp_manager_opts *opts)
{
    if (mp__mgr_check_opts(opts) < 0)
        return NULL;
    mgr_config cfg;
    mp__mgr_config_defaults(&cfg, opts);
    mp_manager *m = manager_alloc("", cfg.key, cfg.keylen);
    if (!m)
        return NULL;
    if (start_server(m, &cfg, opts) < 0) {
        explicit_bzero(&cfg, sizeof cfg);
        free(m);
        return NULL;
    }
    m->max_message = cfg.max_message;
    explicit_bzero(&cfg, sizeof cfg);
    return m;
}

mp_manager *mp_manager_connect(const char *address, const void *authkey, size_t authkey_len,
                               double time_limit)
{
    if (!authkey && !authkey_len) /* Python's default: current_process().authkey */
        authkey = mp_current_process_authkey(&authkey_len);
    mp_manager *m = manager_alloc(address, authkey, authkey_len);
    if (!m)
        return NULL;
    mp_connection *c;
    int r = mp__mgr_connect(address, authkey, authkey_len, time_limit, &c);
    if (r == 0) {
        mp_value *lim = NULL;
        double peer = 0;
        r = mp__mgr_roundtrip(c, address, 0, "ping", 0, NULL, &lim);
        mp_connection_free(c);
        mp__mgr_reply_limits(lim, &m->max_message, &peer);
        mp_value_free(lim);
    }
    if (r < 0) {
        free(m);
        return NULL;
    }
    m->shut = false;
    return m;
}

const char *mp_manager_address(const mp_manager *m) { return m ? m->address : ""; }

const void *mp_manager_authkey(const mp_manager *m, size_t *len)
{
    if (len)
        *len = m ? m->keylen : 0;
    return m ? m->key : NULL;
}

pid_t mp_manager_pid(const mp_manager *m) { return m && m->proc ? mp_process_pid(m->proc) : 0; }

int mp_manager_shutdown(mp_manager *m)
{
    if (!m)
        return mp__error(MP_EINVAL, "mp_manager_shutdown: NULL manager");
    if (m->shut)
        return 0;
    m->shut = true;
    if (m->proc)
        mp_log(MP_LOG_INFO, "sending shutdown message to manager");
    /* Our own server process stops on a byte on its control socket (no connection, no
     * handshake); any other manager on a "shutdown" request. */
    if (!m->ctl || send(mp_connection_fileno(m->ctl), "s", 1, MSG_NOSIGNAL) != 1) {
        mp_connection *c;
        if (mp__mgr_connect(m->address, m->key, m->keylen, 5.0, &c) == 0) {
            mp__mgr_roundtrip(c, m->address, 0, "shutdown", 0, NULL, NULL);
            mp_connection_free(c);
        }
    }
    if (m->proc) {
        if (mp_process_join(m->proc, 5.0) == MP_ETIMEOUT) {
            mp_process_terminate(m->proc);
            if (mp_process_join(m->proc, 2.0) == MP_ETIMEOUT) {
                mp_process_kill(m->proc);
                mp_process_join(m->proc, -1);
            }
        }
    }
    mp_connection_free(m->ctl);
    m->ctl = NULL;
    return 0;
}

void mp_manager_free(mp_manager *m)
{
    if (!m)
        return;
    if (m->proc) {
        mp_manager_shutdown(m);
        mp_process_free(m->proc);
    }
    explicit_bzero(m->key, sizeof m->key);
    free(m);
}

/* ---- creating objects --------------------------------------------------------------------- */

mp_proxy *mp_manager_create(mp_manager *m, const char *type, const mp_value *args)
{
    if (!m || !type) {
        mp__error(MP_EINVAL, "mp_manager_create: NULL %s", m ? "type" : "manager");
        return NULL;
    }
    if (strlen(type) >= sizeof((mgr_ref *)0)->type) {
        mp__error(MP_ENOTFOUND, "manager has no type '%.40s...'", type);
        return NULL;
    }
    if (args && mp_value_type(args) != MP_LIST) {
        mp__error(MP_ETYPE, "mp_manager_create: the arguments must be a list");
        return NULL;
    }
    mp_connection *c;
    if (mp__mgr_reconnect(m->address, m->key, m->keylen, 20.0, &c) < 0)
        return NULL;
    mp_value *cargs = args ? mp_value_pack("[s O]", type, args) : mp_value_pack("[s]", type);
    mp_value *res = NULL;
    int r = cargs ? mp__mgr_roundtrip(c, m->address, m->max_message, "create", 0, cargs, &res)
                  : mp_last_error_code();
    mp_value_free(cargs);
    int64_t id = 0, token = 0, max = 0;
    double peer = MGR_PEER_LIMIT_DEFAULT;
    if (r == 0 && (mp_value_len(res) == 4 /* an older server's has no peer limit */
                       ? mp_value_unpack(res, "[I I I f]", &id, &token, &max, &peer)
                       : mp_value_unpack(res, "[I I I]", &id, &token, &max)) < 0)
        r = mp__error(MP_EPROTO, "create: bad reply");
    mp_value_free(res);
    if (r == 0)
        mp__mgr_peer_limit_apply(mp_connection_fileno(c), peer);
    if (r < 0) {
        mp_connection_free(c);
        return NULL;
    }
    mgr_ref ref;
    memset(&ref, 0, sizeof ref);
    snprintf(ref.address, sizeof ref.address, "%s", m->address);
    memcpy(ref.key, m->key, m->keylen);
    ref.keylen = m->keylen;
    ref.id = (uint64_t)id;
    ref.token = (uint64_t)token;
    snprintf(ref.type, sizeof ref.type, "%s", type);
    mp_proxy *p = mp__mgr_proxy_adopt(c, &ref, max > 0 ? (size_t)max : 0);
    explicit_bzero(&ref, sizeof ref);
    return p;
}

static mp_proxy *create_with(mp_manager *m, const char *type, const mp_value *init)
{
    mp_value *args = init ? mp_value_pack("[O]", init) : NULL;
    if (init && !args)
        return NULL;
    mp_proxy *p = mp_manager_create(m, type, args);
    mp_value_free(args);
    return p;
}

static mp_proxy *create_int(mp_manager *m, const char *type, int64_t n)
{
    mp_value *args = mp_value_pack("[I]", n);
    if (!args)
        return NULL;
    mp_proxy *p = mp_manager_create(m, type, args);
    mp_value_free(args);
    return p;
}

mp_proxy *mp_manager_dict(mp_manager *m, const mp_value *init) { return create_with(m, "dict", init); }
mp_proxy *mp_manager_list(mp_manager *m, const mp_value *init) { return create_with(m, "list", init); }
mp_proxy *mp_manager_namespace(mp_manager *m) { return mp_manager_create(m, "Namespace", NULL); }
mp_proxy *mp_manager_lock(mp_manager *m) { return mp_manager_create(m, "Lock", NULL); }
mp_proxy *mp_manager_rlock(mp_manager *m) { return mp_manager_create(m, "RLock", NULL); }
mp_proxy *mp_manager_event(mp_manager *m) { return mp_manager_create(m, "Event", NULL); }
mp_proxy *mp_manager_condition(mp_manager *m) { return mp_manager_create(m, "Condition", NULL); }
mp_proxy *mp_manager_semaphore(mp_manager *m, int64_t v) { return create_int(m, "Semaphore", v); }
mp_proxy *mp_manager_queue(mp_manager *m, int64_t n) { return create_int(m, "Queue", n); }
mp_proxy *mp_manager_barrier(mp_manager *m, int64_t n) { return create_int(m, "Barrier", n); }
