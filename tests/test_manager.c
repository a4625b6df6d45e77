/* Managers: start/shutdown under every start method, connect by address + authkey,
 * every shared type's methods and Python reprs, atomic dict updates, proxies passed to
 * children and nested in containers, registered types (also in spawn/forkserver
 * servers), blocking methods that park without stalling others, 64 concurrent clients,
 * per-connection references (a killed client releases what it held), a killed server
 * (blocked and later calls fail at once), hostile and truncated requests, no leaks. */
#include "test_util.h"

#include "multiproc/manager.h"
#include "multiproc/pool.h"
#include "multiproc/signals.h"

#include "internal/fdpass.h"
#include "manager/mgr.h"
#include "manager/shmchan.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/uio.h>

static const char *const methods[] = {"fork", "spawn", "forkserver"};

/* ---- helpers ----------------------------------------------------------------------- */

/* repr of a proxy's referent, in a static buffer. */
static const char *prepr(mp_proxy *p)
{
    static char buf[4096];
    char *r = mp_proxy_repr(p);
    snprintf(buf, sizeof buf, "%s", r ? r : "(null)");
    mp_free(r);
    return buf;
}

/* repr of a call's result ("ERR <name>" on failure), in a static buffer. */
static const char *callr(mp_proxy *p, const char *method, const char *fmt, ...)
{
    static char buf[4096];
    mp_value *args = NULL;
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        extern mp_value *mp__value_vpack(const char *fmt, va_list ap);
        args = mp__value_vpack(fmt, ap);
        va_end(ap);
    }
    mp_value *res = NULL;
    int r = mp_proxy_call(p, method, args, &res);
    mp_value_free(args);
    if (r < 0)
        snprintf(buf, sizeof buf, "ERR %s", mp_errname(r));
    else
        snprintf(buf, sizeof buf, "%s", mpt_repr(res));
    mp_value_free(res);
    return buf;
}

/* The server's object and connection counts (its debug_info method). */
static int server_counts(mp_manager *m, int64_t *objects, int *conns)
{
    mp_connection *c;
    size_t klen;
    const void *key = mp_manager_authkey(m, &klen);
    mp_client_opts co = {.authkey = key, .authkey_len = klen};
    c = mp_client(mp_manager_address(m), &co);
    if (!c)
        return mp_last_error_code();
    int r;
    mp_value *req = mp_value_pack("[s i []]", "debug_info", 0);
    char *buf;
    size_t len;
    r = mp_value_encode(req, &buf, &len, NULL, 0, NULL);
    mp_value_free(req);
    if (r == 0)
        r = mp_connection_send_bytes(c, buf, 0, len);
    mp_free(buf);
    mp_value *rep = NULL;
    if (r == 0)
        r = mp_connection_recv(c, &rep);
    if (r == 0 && mp_value_unpack(rep, "[i {s:I s:i}]", &(int){0}, "objects", objects,
                                  "connections", conns) < 0)
        r = -1;
    mp_value_free(rep);
    mp_connection_free(c);
    if (r == 0)
        *conns -= 1; /* this connection */
    return r;
}

/* Wait (up to 10 s) until the server holds `objects` objects; returns the last count. */
static int64_t wait_objects(mp_manager *m, int64_t want)
{
    int64_t n = -1;
    int conns;
    for (double end = mpt_now() + 10; mpt_now() < end; usleep(2000))
        if (server_counts(m, &n, &conns) == 0 && n == want)
            break;
    return n;
}

/* ---- core --------------------------------------------------------------------------- */

static void test_start_shutdown(void)
{
    for (size_t i = 0; i < 3; i++) {
        mp_manager_opts o = {.ctx = mp_get_context(methods[i])};
        mp_manager *m = mp_manager_new(&o);
        CHECK(m != NULL);
        if (!m) {
            fprintf(stderr, "%s: %s\n", methods[i], mp_last_error());
            continue;
        }
        CHECK(mp_manager_address(m)[0] == '@');
        size_t klen;
        CHECK(mp_manager_authkey(m, &klen) != NULL);
        CHECK_INT(klen, 32);
        CHECK(mp_manager_pid(m) > 0);
        mp_proxy *d = mp_manager_dict(m, NULL);
        CHECK(d != NULL);
        CHECK_OK(mp_proxy_callf(d, "__setitem__", NULL, "[i s]", 1, "one"));
        CHECK_STR(prepr(d), "{1: 'one'}");
        CHECK_OK(mp_manager_shutdown(m));
        CHECK_OK(mp_manager_shutdown(m)); /* idempotent */
        /* The server is gone: the proxy fails at once with a clear code. */
        CHECK_ERR(mp_proxy_callf(d, "__len__", NULL, NULL), MP_EEOF);
        CHECK_CONTAINS(mp_last_error(), "is gone");
        mp_proxy_free(d);
        mp_manager_free(m);
    }
}

static void test_connect_tcp(void)
{
    mp_manager_opts o = {.address = "127.0.0.1:0", .authkey = "secret", .authkey_len = 6};
    mp_manager *m = mp_manager_new(&o);
    CHECK(m != NULL);
    if (!m)
        return;
    char addr[128]; /* a copy: it is used after the manager is freed */
    snprintf(addr, sizeof addr, "%s", mp_manager_address(m));
    CHECK(strncmp(addr, "127.0.0.1:", 10) == 0 && strcmp(addr, "127.0.0.1:0") != 0);
    mp_manager *c = mp_manager_connect(addr, "secret", 6, 5);
    CHECK(c != NULL);
    mp_proxy *l = mp_manager_list(c, NULL);
    CHECK(l != NULL);
    CHECK_OK(mp_proxy_callf(l, "append", NULL, "[s]", "x"));
    CHECK_STR(prepr(l), "['x']");
    /* A wrong key is refused. */
    CHECK(mp_manager_connect(addr, "wrong", 5, 5) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EAUTH);
    mp_proxy_free(l);
    mp_manager_free(c);
    mp_manager_free(m);
    /* Nothing listens there any more. */
    CHECK(mp_manager_connect(addr, "secret", 6, 5) == NULL);
}

static void *serve_thread(void *arg)
{
    return (void *)(intptr_t)mp_manager_server_serve_forever(arg);
}

/* A server in this process (Python's get_server().serve_forever()) on a Unix path: a
 * client's shutdown ends serve_forever with 0, so does mp_manager_server_stop. */
static void test_standalone_server(void)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/mp-mgr-test-%d.sock", (int)getpid());
    mp_manager_opts o = {.address = path, .authkey = "k", .authkey_len = 1};
    mp_manager_server *s = mp_manager_server_new(&o);
    CHECK(s != NULL);
    if (!s)
        return;
    CHECK_STR(mp_manager_server_address(s), path);
    size_t klen;
    CHECK(memcmp(mp_manager_server_authkey(s, &klen), "k", 1) == 0 && klen == 1);
    pthread_t t;
    pthread_create(&t, NULL, serve_thread, s);
    mp_manager *m = mp_manager_connect(path, "k", 1, 5);
    CHECK(m != NULL);
    CHECK_INT(mp_manager_pid(m), 0);
    mp_proxy *d = mp_manager_dict(m, NULL);
    CHECK_OK(mp_proxy_callf(d, "__setitem__", NULL, "[s s]", "where", "in-process"));
    CHECK_STR(prepr(d), "{'where': 'in-process'}");
    CHECK_OK(mp_manager_shutdown(m)); /* a client stops the server */
    void *rc;
    pthread_join(t, &rc);
    CHECK_INT((intptr_t)rc, 0);
    CHECK_ERR(mp_proxy_callf(d, "__len__", NULL, NULL), MP_EEOF);
    mp_proxy_free(d);
    mp_manager_free(m);
    /* Served again, and stopped by mp_manager_server_stop this time. */
    pthread_create(&t, NULL, serve_thread, s);
    m = mp_manager_connect(path, "k", 1, 5);
    CHECK(m != NULL);
    CHECK_OK(mp_manager_server_stop(s));
    pthread_join(t, &rc);
    CHECK_INT((intptr_t)rc, 0);
    mp_manager_free(m);
    mp_manager_server_free(s);
    CHECK(access(path, F_OK) != 0); /* the socket file is removed */
}

static void test_bad_opts(void)
{
    char big[300];
    memset(big, 'k', sizeof big);
    mp_manager_opts o = {.authkey = big, .authkey_len = sizeof big};
    CHECK(mp_manager_new(&o) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    mp_manager_type t = {.name = "dict", .create = NULL};
    mp_manager_opts o2 = {.types = &t, .ntypes = 1};
    CHECK(mp_manager_new(&o2) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    mp_manager_opts o3 = {.address = "/nonexistent-dir/x.sock"};
    CHECK(mp_manager_new(&o3) == NULL);
    CHECK_CONTAINS(mp_last_error(), "nonexistent-dir");
    CHECK_PREFIX_ONCE(mp_last_error(), mp_last_error_code()); /* the server's, re-reported */
    CHECK(mp_manager_connect("@no-such-manager-here", "k", 1, 2) == NULL);
    CHECK_INT(mp_last_error_code(), -ECONNREFUSED);
    CHECK(mp_manager_create(NULL, "dict", NULL) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    mp_manager_free(NULL);
    mp_proxy_free(NULL);
    CHECK_ERR(mp_proxy_call(NULL, "x", NULL, NULL), MP_EINVAL);
}


/* ---- data types ------------------------------------------------------------------------ */

static mp_manager *mgr;

static void test_dict(void)
{
    mp_value *init = mp_value_pack("{s:i}", "name", 1);
    mp_proxy *d = mp_manager_dict(mgr, init);
    mp_value_free(init);
    CHECK(d != NULL);
    CHECK_STR(mp_proxy_type(d), "dict");
    CHECK_STR(callr(d, "__setitem__", "[i s]", 1, "1"), "None");
    CHECK_STR(callr(d, "__setitem__", "[s i]", "2", 2), "None");
    CHECK_STR(callr(d, "__setitem__", "[f n]", 0.25), "None");
    CHECK_STR(prepr(d), "{'name': 1, 1: '1', '2': 2, 0.25: None}");
    CHECK_STR(callr(d, "__getitem__", "[i]", 1), "'1'");
    CHECK_STR(callr(d, "__getitem__", "[f]", 1.0), "'1'"); /* 1 == 1.0 as in Python */
    CHECK_STR(callr(d, "__getitem__", "[s]", "nope"), "ERR MP_ENOTFOUND");
    CHECK_CONTAINS(mp_last_error(), "'nope'");
    CHECK_STR(callr(d, "__contains__", "[s]", "2"), "True");
    CHECK_STR(callr(d, "__contains__", "[i]", 2), "False");
    CHECK_INT(mp_proxy_len(d), 4);
    CHECK_STR(callr(d, "get", "[s]", "zz"), "None");
    CHECK_STR(callr(d, "get", "[s i]", "zz", 7), "7");
    CHECK_STR(callr(d, "keys", NULL), "['name', 1, '2', 0.25]");
    CHECK_STR(callr(d, "values", NULL), "[1, '1', 2, None]");
    CHECK_STR(callr(d, "items", NULL), "[['name', 1], [1, '1'], ['2', 2], [0.25, None]]");
    CHECK_STR(callr(d, "__delitem__", "[s]", "name"), "None");
    CHECK_STR(callr(d, "__delitem__", "[s]", "name"), "ERR MP_ENOTFOUND");
    CHECK_STR(callr(d, "pop", "[i]", 1), "'1'");
    CHECK_STR(callr(d, "pop", "[i]", 1), "ERR MP_ENOTFOUND");
    CHECK_STR(callr(d, "pop", "[i s]", 1, "dflt"), "'dflt'");
    CHECK_STR(callr(d, "popitem", NULL), "[0.25, None]");
    CHECK_STR(callr(d, "setdefault", "[s i]", "k", 5), "5");
    CHECK_STR(callr(d, "setdefault", "[s i]", "k", 6), "5");
    CHECK_STR(callr(d, "update", "[{s:i s:i}]", "a", 1, "k", 9), "None");
    CHECK_STR(callr(d, "update", "[[[s i]]]", "b", 2), "None");
    CHECK_STR(callr(d, "update", "[[[s]]]", "b"), "ERR MP_EINVAL");
    CHECK_STR(callr(d, "copy", NULL), "{'2': 2, 'k': 9, 'a': 1, 'b': 2}");
    /* Atomic read-modify-write in one request. */
    CHECK_STR(callr(d, "add", "[s i]", "n", 5), "5");
    CHECK_STR(callr(d, "add", "[s i]", "n", -2), "3");
    CHECK_STR(callr(d, "add", "[s f]", "n", 0.5), "3.5");
    CHECK_STR(callr(d, "add", "[s i i]", "m", 1, 100), "101");
    CHECK_STR(callr(d, "add", "[i i]", 2, 1), "1");
    CHECK_STR(callr(d, "add", "[s i]", "2", 1), "3");
    CHECK_STR(callr(d, "__setitem__", "[s s]", "t", "x"), "None");
    CHECK_STR(callr(d, "add", "[s i]", "t", 1), "ERR MP_ETYPE");
    CHECK_STR(callr(d, "compare_and_set", "[s s s]", "t", "x", "y"), "True");
    CHECK_STR(callr(d, "compare_and_set", "[s s s]", "t", "x", "z"), "False");
    CHECK_STR(callr(d, "compare_and_set", "[s s s]", "missing", "x", "z"), "False");
    CHECK_STR(callr(d, "__getitem__", "[s]", "t"), "'y'");
    CHECK_STR(callr(d, "clear", NULL), "None");
    CHECK_STR(prepr(d), "{}");
    CHECK_STR(callr(d, "popitem", NULL), "ERR MP_ENOTFOUND");
    /* Many keys: the index survives deletions. */
    for (int i = 0; i < 100; i++)
        CHECK_OK(mp_proxy_callf(d, "__setitem__", NULL, "[i i]", i, i * i));
    for (int i = 0; i < 100; i += 2)
        CHECK_OK(mp_proxy_callf(d, "__delitem__", NULL, "[i]", i));
    CHECK_INT(mp_proxy_len(d), 50);
    CHECK_STR(callr(d, "__getitem__", "[i]", 99), "9801");
    CHECK_STR(callr(d, "__getitem__", "[i]", 98), "ERR MP_ENOTFOUND");
    CHECK_STR(callr(d, "no_such_method", NULL), "ERR MP_EUNSUPPORTED");
    CHECK_CONTAINS(mp_last_error(), "no_such_method");
    CHECK_STR(callr(d, "__getitem__", NULL), "ERR MP_ETYPE");
    mp_proxy_free(d);
}

static void test_list(void)
{
    mp_value *init = mp_value_list();
    for (int i = 0; i < 10; i++)
        mp_value_list_append(init, mp_value_int(i));
    mp_proxy *l = mp_manager_list(mgr, init);
    mp_value_free(init);
    CHECK(l != NULL);
    CHECK_STR(callr(l, "reverse", NULL), "None");
    CHECK_STR(prepr(l), "[9, 8, 7, 6, 5, 4, 3, 2, 1, 0]");
    CHECK_STR(callr(l, "__getitem__", "[i]", -1), "0");
    CHECK_STR(callr(l, "__getitem__", "[i]", 10), "ERR MP_ERANGE");
    CHECK_CONTAINS(mp_last_error(), "list index out of range");
    CHECK_STR(callr(l, "getslice", "[i i n]", 2, 5), "[7, 6, 5]");
    CHECK_STR(callr(l, "getslice", "[n n i]", -3), "[0, 3, 6, 9]");
    CHECK_STR(callr(l, "getslice", "[i n n]", -2), "[1, 0]");
    CHECK_STR(callr(l, "getslice", "[n n i]", 0), "ERR MP_EINVAL");
    CHECK_STR(callr(l, "sort", NULL), "None");
    CHECK_STR(prepr(l), "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]");
    CHECK_STR(callr(l, "delslice", "[i i n]", 1, 3), "None");
    CHECK_STR(prepr(l), "[0, 3, 4, 5, 6, 7, 8, 9]");
    CHECK_STR(callr(l, "delslice", "[n n i]", 2), "None");
    CHECK_STR(prepr(l), "[3, 5, 7, 9]");
    CHECK_STR(callr(l, "setslice", "[i i n [s s s]]", 1, 2, "a", "b", "c"), "None");
    CHECK_STR(prepr(l), "[3, 'a', 'b', 'c', 7, 9]");
    CHECK_STR(callr(l, "setslice", "[n n i [i i i]]", 2, 0, 1, 2), "None");
    CHECK_STR(prepr(l), "[0, 'a', 1, 'c', 2, 9]");
    CHECK_STR(callr(l, "setslice", "[n n i [i]]", 2, 0), "ERR MP_EINVAL");
    CHECK_CONTAINS(mp_last_error(), "extended slice of size 3");
    CHECK_STR(callr(l, "__setitem__", "[i s]", 0, "z"), "None");
    CHECK_STR(callr(l, "__delitem__", "[i]", -1), "None");
    CHECK_STR(callr(l, "insert", "[i s]", 1, "ins"), "None");
    CHECK_STR(callr(l, "insert", "[i s]", -100, "first"), "None");
    CHECK_STR(callr(l, "insert", "[i s]", 100, "last"), "None");
    CHECK_STR(prepr(l), "['first', 'z', 'ins', 'a', 1, 'c', 2, 'last']");
    CHECK_STR(callr(l, "pop", NULL), "'last'");
    CHECK_STR(callr(l, "pop", "[i]", 0), "'first'");
    CHECK_STR(callr(l, "remove", "[s]", "a"), "None");
    CHECK_STR(callr(l, "remove", "[s]", "a"), "ERR MP_EINVAL");
    CHECK_CONTAINS(mp_last_error(), "list.remove(x): x not in list");
    CHECK_STR(callr(l, "extend", "[[i i]]", 1, 1), "None");
    CHECK_STR(callr(l, "count", "[i]", 1), "3");
    CHECK_STR(callr(l, "index", "[s]", "c"), "3");
    CHECK_STR(callr(l, "index", "[i i]", 1, 3), "5");
    CHECK_STR(callr(l, "index", "[s]", "q"), "ERR MP_EINVAL");
    CHECK_CONTAINS(mp_last_error(), "'q' is not in list");
    CHECK_STR(callr(l, "__contains__", "[s]", "ins"), "True");
    CHECK_INT(mp_proxy_len(l), 7);
    CHECK_STR(callr(l, "sort", "[b]", 1), "None"); /* reverse; str after ints */
    CHECK_STR(prepr(l), "['z', 'ins', 'c', 2, 1, 1, 1]");
    mp_proxy *e = mp_manager_list(mgr, NULL);
    CHECK_STR(callr(e, "pop", NULL), "ERR MP_ERANGE");
    CHECK_CONTAINS(mp_last_error(), "pop from empty list");
    mp_proxy_free(e);
    mp_proxy_free(l);
}

static void test_namespace_value_array(void)
{
    mp_proxy *ns = mp_manager_namespace(mgr);
    CHECK_STR(callr(ns, "__getattr__", "[s]", "value"), "ERR MP_ENOTFOUND");
    CHECK_CONTAINS(mp_last_error(), "'Namespace' object has no attribute 'value'");
    CHECK_STR(callr(ns, "__setattr__", "[s i]", "x", 10), "None");
    CHECK_STR(callr(ns, "__setattr__", "[s s]", "y", "hello"), "None");
    CHECK_STR(callr(ns, "__setattr__", "[s f]", "_z", 12.3), "None");
    CHECK_STR(prepr(ns), "Namespace(x=10, y='hello')");
    CHECK_STR(callr(ns, "__getattr__", "[s]", "y"), "'hello'");
    CHECK_STR(callr(ns, "__delattr__", "[s]", "y"), "None");
    CHECK_STR(callr(ns, "__setattr__", "[i i]", 1, 1), "ERR MP_ETYPE");
    mp_proxy_free(ns);

    mp_value *args = mp_value_pack("[s i]", "i", 5);
    mp_proxy *v = mp_manager_create(mgr, "Value", args);
    mp_value_free(args);
    CHECK_STR(prepr(v), "Value('i', 5)");
    CHECK_STR(callr(v, "set", "[i]", 7), "None");
    CHECK_STR(callr(v, "get", NULL), "7");
    mp_proxy_free(v);

    args = mp_value_pack("[s [i i i]]", "d", 1, 2, 3);
    mp_proxy *a = mp_manager_create(mgr, "Array", args);
    mp_value_free(args);
    CHECK(a != NULL);
    CHECK_STR(prepr(a), "array('d', [1.0, 2.0, 3.0])");
    CHECK_STR(callr(a, "__setitem__", "[i i]", 0, 9), "None");
    CHECK_STR(callr(a, "__setitem__", "[i s]", 0, "x"), "ERR MP_ETYPE");
    CHECK_STR(callr(a, "__getitem__", "[i]", 0), "9.0");
    CHECK_STR(callr(a, "__len__", NULL), "3");
    mp_proxy_free(a);
    args = mp_value_pack("[s i]", "i", 3);
    a = mp_manager_create(mgr, "Array", args);
    mp_value_free(args);
    CHECK_STR(prepr(a), "array('i', [0, 0, 0])");
    CHECK_STR(callr(a, "__setitem__", "[i f]", 0, 1.5), "ERR MP_ETYPE");
    mp_proxy_free(a);
    args = mp_value_pack("[s i]", "x", 3);
    CHECK(mp_manager_create(mgr, "Array", args) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EINVAL);
    mp_value_free(args);
    CHECK(mp_manager_create(mgr, "NoSuchType", NULL) == NULL);
    CHECK_INT(mp_last_error_code(), MP_ENOTFOUND);
    CHECK_CONTAINS(mp_last_error(), "NoSuchType");
}

/* ---- sync types ------------------------------------------------------------------------- */

static void test_locks(void)
{
    mp_proxy *l = mp_manager_lock(mgr), *l2 = mp_proxy_dup(l);
    CHECK(l && l2);
    CHECK_OK(mp_proxy_acquire(l, -1));
    CHECK_STR(prepr(l), prepr(l2));
    CHECK_CONTAINS(prepr(l), "<locked _thread.lock object at 0x");
    CHECK_ERR(mp_proxy_acquire(l2, 0.05), MP_ETIMEOUT);
    CHECK_STR(callr(l2, "acquire", "[b]", 0), "False");
    CHECK_STR(callr(l2, "acquire", "[b f]", 0, 1.0), "ERR MP_EINVAL");
    CHECK_OK(mp_proxy_release(l2)); /* a Lock may be released by anyone, as in Python */
    CHECK_ERR(mp_proxy_release(l), MP_ESTATE);
    CHECK_CONTAINS(mp_last_error(), "release unlocked lock");
    mp_proxy_free(l2);
    mp_proxy_free(l);

    mp_proxy *r = mp_manager_rlock(mgr), *r2 = mp_proxy_dup(r);
    CHECK_OK(mp_proxy_acquire(r, -1));
    CHECK_OK(mp_proxy_acquire(r, -1));
    CHECK_ERR(mp_proxy_acquire(r2, 0), MP_ETIMEOUT);
    CHECK_ERR(mp_proxy_release(r2), MP_ENOTOWNER);
    CHECK_CONTAINS(mp_last_error(), "cannot release un-acquired lock");
    CHECK_OK(mp_proxy_release(r));
    CHECK_ERR(mp_proxy_acquire(r2, 0), MP_ETIMEOUT);
    CHECK_OK(mp_proxy_release(r));
    CHECK_OK(mp_proxy_acquire(r2, 0));
    /* The holder's connection ends: its RLock is released. */
    mp_proxy_free(r2);
    CHECK_OK(mp_proxy_acquire(r, 5));
    CHECK_OK(mp_proxy_release(r));
    mp_proxy_free(r);

    mp_proxy *s = mp_manager_semaphore(mgr, 2);
    CHECK_STR(callr(s, "acquire", NULL), "True");
    CHECK_STR(callr(s, "acquire", NULL), "True");
    CHECK_STR(callr(s, "acquire", "[b f]", 1, 0.05), "False");
    CHECK_STR(callr(s, "get_value", NULL), "0");
    CHECK_STR(callr(s, "release", NULL), "None");
    CHECK_CONTAINS(prepr(s), ": value=1>");
    mp_proxy_free(s);
    mp_value *one = mp_value_pack("[i]", 1);
    mp_proxy *b = mp_manager_create(mgr, "BoundedSemaphore", one);
    mp_value_free(one);
    CHECK_STR(callr(b, "release", NULL), "ERR MP_EINVAL");
    CHECK_CONTAINS(mp_last_error(), "Semaphore released too many times");
    mp_proxy_free(b);
}

/* A thread that makes one call on its own proxy and records the result. */
typedef struct caller {
    mp_proxy *p;
    const char *method;
    mp_value *args;
    int rc;
    char result[256];
    pthread_t t;
    _Atomic pid_t tid;
} caller;

static void *caller_main(void *arg)
{
    caller *c = arg;
    c->tid = gettid();
    mp_value *res = NULL;
    c->rc = mp_proxy_call(c->p, c->method, c->args, &res);
    snprintf(c->result, sizeof c->result, "%s", c->rc < 0 ? mp_errname(c->rc) : "");
    if (c->rc == 0) {
        char *r = mp_value_repr(res);
        snprintf(c->result, sizeof c->result, "%s", r ? r : "?");
        mp_free(r);
    }
    mp_value_free(res);
    return NULL;
}

static void caller_start(caller *c, mp_proxy *p, const char *method, mp_value *args)
{
    memset(c, 0, sizeof *c);
    c->p = p;
    c->method = method;
    c->args = args;
    pthread_create(&c->t, NULL, caller_main, c);
}

static void caller_join(caller *c)
{
    pthread_join(c->t, NULL);
    mp_value_free(c->args);
}

/* Wait until an object reports n waiters through a method (Barrier.n_waiting...). */
static bool wait_for_repr(mp_proxy *p, const char *needle)
{
    for (double end = mpt_now() + 10; mpt_now() < end; usleep(1000))
        if (strstr(prepr(p), needle))
            return true;
    return false;
}

static void test_blocking_does_not_stall(void)
{
    mp_proxy *ev = mp_manager_event(mgr), *ev2 = mp_proxy_dup(ev);
    mp_proxy *d = mp_manager_dict(mgr, NULL);
    caller w;
    caller_start(&w, ev2, "wait", NULL);
    /* The waiter is parked: other clients are served meanwhile. */
    double t0 = mpt_now();
    for (int i = 0; i < 100; i++)
        CHECK_OK(mp_proxy_callf(d, "__setitem__", NULL, "[i i]", i, i));
    CHECK(mpt_now() - t0 < 5);
    CHECK_STR(callr(ev, "is_set", NULL), "False");
    CHECK_STR(callr(ev, "wait", "[f]", 0.02), "False");
    CHECK_STR(callr(ev, "set", NULL), "None");
    caller_join(&w);
    CHECK_INT(w.rc, 0);
    CHECK_STR(w.result, "True");
    CHECK_CONTAINS(prepr(ev), ": set>");
    mp_proxy_free(ev2);
    mp_proxy_free(ev);
    mp_proxy_free(d);
}

static void test_condition(void)
{
    mp_proxy *c = mp_manager_condition(mgr), *c2 = mp_proxy_dup(c);
    CHECK_STR(callr(c, "wait", NULL), "ERR MP_ENOTOWNER");
    CHECK_STR(callr(c, "notify", NULL), "ERR MP_ENOTOWNER");
    CHECK_OK(mp_proxy_acquire(c, -1));
    CHECK_STR(callr(c, "wait", "[f]", 0.02), "False"); /* timed out, lock taken back */
    CHECK_OK(mp_proxy_release(c));
    /* c2 waits; c notifies under the lock. */
    CHECK_OK(mp_proxy_acquire(c2, -1));
    caller w;
    caller_start(&w, c2, "wait", mp_value_pack("[f]", 10.0));
    CHECK(wait_for_repr(c, ", 1)>"));
    CHECK_OK(mp_proxy_acquire(c, -1)); /* the waiter released it */
    CHECK_STR(callr(c, "notify", NULL), "None");
    CHECK_OK(mp_proxy_release(c));
    caller_join(&w);
    CHECK_STR(w.result, "True");
    CHECK_OK(mp_proxy_release(c2)); /* wait took the lock back for c2 */
    mp_proxy_free(c2);
    mp_proxy_free(c);
}

static void test_barrier(void)
{
    mp_proxy *b[3];
    b[0] = mp_manager_barrier(mgr, 3);
    b[1] = mp_proxy_dup(b[0]);
    b[2] = mp_proxy_dup(b[0]);
    caller w[2];
    caller_start(&w[0], b[1], "wait", NULL);
    caller_start(&w[1], b[2], "wait", NULL);
    CHECK(wait_for_repr(b[0], "waiters=2/3"));
    CHECK_STR(callr(b[0], "n_waiting", NULL), "2");
    CHECK_STR(callr(b[0], "wait", NULL), "2");
    caller_join(&w[0]);
    caller_join(&w[1]);
    CHECK(strcmp(w[0].result, w[1].result) != 0);
    CHECK(strcmp(w[0].result, "0") == 0 || strcmp(w[0].result, "1") == 0);
    /* A timed-out wait breaks the barrier for everyone. */
    CHECK_STR(callr(b[0], "wait", "[f]", 0.02), "ERR MP_EBROKEN");
    CHECK_STR(callr(b[1], "broken", NULL), "True");
    CHECK_STR(callr(b[1], "wait", NULL), "ERR MP_EBROKEN");
    CHECK_STR(callr(b[1], "reset", NULL), "None");
    CHECK_STR(callr(b[1], "broken", NULL), "False");
    CHECK_STR(callr(b[1], "parties", NULL), "3");
    mp_value *act = mp_value_pack("[i s]", 2, "print");
    CHECK(mp_manager_create(mgr, "Barrier", act) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EUNSUPPORTED);
    mp_value_free(act);
    for (int i = 0; i < 3; i++)
        mp_proxy_free(b[i]);
}

static void test_queue(void)
{
    mp_proxy *q = mp_manager_queue(mgr, 2), *q2 = mp_proxy_dup(q);
    CHECK_STR(callr(q, "empty", NULL), "True");
    CHECK_STR(callr(q, "put", "[i]", 1), "None");
    CHECK_STR(callr(q, "put", "[s]", "two"), "None");
    CHECK_STR(callr(q, "full", NULL), "True");
    CHECK_STR(callr(q, "put", "[i b n]", 3, 0), "ERR MP_EFULL");
    CHECK_STR(callr(q, "put", "[i b f]", 3, 1, 0.02), "ERR MP_EFULL");
    CHECK_STR(callr(q, "qsize", NULL), "2");
    CHECK_STR(callr(q, "get", NULL), "1");
    CHECK_STR(callr(q, "get_nowait", NULL), "'two'");
    CHECK_STR(callr(q, "get_nowait", NULL), "ERR MP_EEMPTY");
    CHECK_CONTAINS(mp_last_error(), "no item to take without waiting");
    CHECK_STR(callr(q, "get", "[b f]", 1, 0.02), "ERR MP_EEMPTY");
    CHECK_CONTAINS(mp_last_error(), "queue still empty after 0.02 s");
    /* A parked get is woken by another client's put. */
    caller w;
    caller_start(&w, q2, "get", NULL);
    CHECK_STR(callr(q, "put", "[[i i]]", 4, 5), "None");
    caller_join(&w);
    CHECK_STR(w.result, "[4, 5]");
    CHECK_STR(callr(q, "task_done", NULL), "None");
    CHECK_STR(callr(q, "task_done", NULL), "None");
    CHECK_STR(callr(q, "task_done", NULL), "None"); /* three items put, three done */
    CHECK_STR(callr(q, "join", NULL), "None");
    CHECK_STR(callr(q, "task_done", NULL), "ERR MP_EINVAL");
    mp_proxy_free(q2);
    mp_proxy_free(q);

    mp_proxy *j = mp_manager_create(mgr, "JoinableQueue", NULL), *j2 = mp_proxy_dup(j);
    CHECK_STR(callr(j, "put", "[i]", 1), "None");
    caller_start(&w, j2, "join", NULL);
    CHECK_STR(callr(j, "get", NULL), "1");
    CHECK_STR(callr(j, "task_done", NULL), "None");
    caller_join(&w);
    CHECK_INT(w.rc, 0);
    CHECK_STR(callr(j, "task_done", NULL), "ERR MP_EINVAL");
    mp_proxy_free(j2);
    mp_proxy_free(j);
}

/* ---- proxies as values ---------------------------------------------------------------- */

/* Runs a child under `method` with args and returns its exit code (-100 if it failed to
 * start or join). */
static int run_child(const char *method, mp_target_fn target, mp_value *args)
{
    mp_process_opts o = {.target = target, .args = args, .ctx = mp_get_context(method)};
    mp_process *p = mp_process_new(&o);
    mp_value_free(args);
    int code = -100;
    if (p && mp_process_start(p) == 0 && mp_process_join(p, 30) == 0)
        mp_process_exitcode(p, &code);
    mp_process_free(p);
    return code;
}

/* A child: d[k] = v and d['count'] += 1 (atomically), on the proxy in its arguments. */
static int child_set(mp_value *args)
{
    mp_proxy *d = NULL;
    int64_t k, v;
    if (mp_value_unpack(args, "[h I I]", &mp_kind_proxy, &d, &k, &v) < 0)
        return 2;
    if (mp_proxy_callf(d, "__setitem__", NULL, "[I I]", k, v) < 0)
        return 3;
    return mp_proxy_callf(d, "add", NULL, "[s i]", "count", 1) < 0 ? 4 : 0;
}

static void test_proxy_in_process_args(void)
{
    mp_proxy *d = mp_manager_dict(mgr, NULL);
    for (size_t i = 0; i < 3; i++)
        for (int k = 0; k < 2; k++)
            CHECK_INT(run_child(methods[i], child_set,
                                mp_value_pack("[h i i]", &mp_kind_proxy, d, (int)(i * 2 + k),
                                              (int)(i * 2 + k) * 2)),
                      0);
    CHECK_STR(prepr(d), "{0: 0, 'count': 6, 1: 2, 2: 4, 3: 6, 4: 8, 5: 10}");
    mp_proxy_free(d);
}

/* A child: takes a proxy out of the queue (or connection) in its args, appends a mark. */
static int child_from_queue(mp_value *args)
{
    mp_queue *q = NULL;
    mp_value *item = NULL;
    mp_proxy *l = NULL;
    if (mp_value_unpack(args, "[h]", &mp_kind_queue, &q) < 0 || mp_queue_get(q, &item, 20) < 0 ||
        mp_value_unpack(item, "[h s]", &mp_kind_proxy, &l, &(const char *){NULL}) < 0)
        return 2;
    int r = mp_proxy_callf(l, "append", NULL, "[s]", mp_value_get_str(mp_value_list_get(item, 1), NULL));
    mp_value_free(item);
    return r < 0 ? 3 : 0;
}

static int child_from_conn(mp_value *args)
{
    mp_connection *c = NULL;
    mp_value *item = NULL;
    mp_proxy *l = NULL;
    if (mp_value_unpack(args, "[h]", &mp_kind_connection, &c) < 0 || mp_connection_recv(c, &item) < 0 ||
        mp_value_unpack(item, "[h s]", &mp_kind_proxy, &l, &(const char *){NULL}) < 0)
        return 2;
    int r = mp_proxy_callf(l, "append", NULL, "[s]", mp_value_get_str(mp_value_list_get(item, 1), NULL));
    mp_value_free(item);
    return r < 0 ? 3 : 0;
}

static void test_proxy_through_queue_and_connection(void)
{
    mp_proxy *l = mp_manager_list(mgr, NULL);
    for (size_t i = 0; i < 3; i++) {
        mp_queue *q = mp_queue_new(NULL);
        mp_value *item = mp_value_pack("[h s]", &mp_kind_proxy, l, methods[i]);
        CHECK_OK(mp_queue_put(q, item, -1));
        mp_value_free(item);
        CHECK_INT(run_child(methods[i], child_from_queue, mp_value_pack("[h]", &mp_kind_queue, q)), 0);
        mp_queue_free(q);

        mp_connection *r, *w;
        CHECK_OK(mp_pipe(false, &r, &w));
        char mark[32];
        snprintf(mark, sizeof mark, "%s-conn", methods[i]);
        item = mp_value_pack("[h s]", &mp_kind_proxy, l, mark);
        CHECK_OK(mp_connection_send(w, item));
        mp_value_free(item);
        CHECK_INT(run_child(methods[i], child_from_conn, mp_value_pack("[h]", &mp_kind_connection, r)), 0);
        mp_connection_free(r);
        mp_connection_free(w);
    }
    CHECK_STR(prepr(l), "['fork', 'fork-conn', 'spawn', 'spawn-conn', 'forkserver', "
                        "'forkserver-conn']");
    mp_proxy_free(l);
}

/* A pool task: d.add('hits', 1) and d[i] = i * i through the proxy in its argument. */
static int task_with_proxy(const mp_value *arg, mp_value **result)
{
    mp_proxy *d = NULL;
    int64_t i;
    if (mp_value_unpack(arg, "[h I]", &mp_kind_proxy, &d, &i) < 0)
        return mp_last_error_code();
    int r = mp_proxy_callf(d, "__setitem__", NULL, "[I I]", i, i * i);
    if (r == 0)
        r = mp_proxy_callf(d, "add", result, "[s i]", "hits", 1);
    return r;
}

static void test_proxy_in_pool_tasks(void)
{
    for (size_t m = 0; m < 2; m++) { /* fork, spawn */
        mp_proxy *d = mp_manager_dict(mgr, NULL);
        mp_pool_opts o = {.processes = 2, .ctx = mp_get_context(methods[m])};
        mp_pool *pool = mp_pool_new(&o);
        CHECK(pool != NULL);
        mp_value *items = mp_value_list();
        for (int i = 0; i < 6; i++)
            mp_value_list_append(items, mp_value_pack("[h i]", &mp_kind_proxy, d, i));
        mp_value *out = NULL;
        CHECK_OK(mp_pool_map(pool, task_with_proxy, items, 1, &out));
        mp_value_free(out);
        mp_value_free(items);
        CHECK_OK(mp_pool_close(pool));
        CHECK_OK(mp_pool_join(pool, 30));
        mp_pool_free(pool);
        CHECK_STR(callr(d, "__getitem__", "[s]", "hits"), "6");
        CHECK_STR(callr(d, "__getitem__", "[i]", 5), "25");
        CHECK_INT(mp_proxy_len(d), 7);
        mp_proxy_free(d);
    }
}

static void test_nested_proxies(void)
{
    int64_t base = 0;
    CHECK_INT(wait_objects(mgr, 0), 0); /* earlier tests' objects are gone */
    mp_proxy *a = mp_manager_list(mgr, NULL), *b = mp_manager_list(mgr, NULL);
    mp_value *pb = mp_value_pack("[h]", &mp_kind_proxy, b);
    CHECK_OK(mp_proxy_call(a, "append", pb, NULL));
    mp_value_free(pb);
    CHECK_CONTAINS(prepr(a), "[<ListProxy object, typeid 'list' at 0x");
    CHECK_STR(prepr(b), "[]");
    CHECK_OK(mp_proxy_callf(b, "append", NULL, "[s]", "hello"));
    /* a[0] is a proxy of its own to b's referent. */
    mp_value *inner = NULL;
    CHECK_OK(mp_proxy_callf(a, "__getitem__", &inner, "[i]", 0));
    mp_proxy *a0 = NULL;
    CHECK_OK(mp_value_unpack(inner, "h", &mp_kind_proxy, &a0));
    CHECK_STR(prepr(a0), "['hello']");
    /* b's own proxy goes away: a still holds the list, and changes through a[0] show. */
    mp_proxy_free(b);
    CHECK_OK(mp_proxy_callf(a0, "append", NULL, "[s]", "world"));
    mp_value_free(inner);
    CHECK_INT(wait_objects(mgr, base + 2), base + 2);
    CHECK_OK(mp_proxy_callf(a, "__getitem__", &inner, "[i]", 0));
    CHECK_OK(mp_value_unpack(inner, "h", &mp_kind_proxy, &a0));
    CHECK_STR(prepr(a0), "['hello', 'world']");
    mp_value_free(inner);
    /* A dict holding a proxy, and a child using it through the dict. */
    mp_proxy *d = mp_manager_dict(mgr, NULL);
    CHECK_OK(mp_proxy_callf(d, "__setitem__", NULL, "[s h]", "inner", &mp_kind_proxy, a));
    CHECK_CONTAINS(prepr(d), "{'inner': <ListProxy object, typeid 'list' at 0x");
    mp_proxy_free(a);
    CHECK_INT(wait_objects(mgr, base + 3), base + 3);
    CHECK_OK(mp_proxy_callf(d, "__delitem__", NULL, "[s]", "inner"));
    /* Nothing refers to the two lists any more: freed. */
    CHECK_INT(wait_objects(mgr, base + 1), base + 1);
    /* pop hands out the only reference to a list: the reply keeps it alive until the
     * receiver holds a proxy of its own. */
    mp_proxy *e = mp_manager_list(mgr, NULL);
    CHECK_OK(mp_proxy_callf(d, "__setitem__", NULL, "[s h]", "e", &mp_kind_proxy, e));
    mp_proxy_free(e);
    CHECK_OK(mp_proxy_callf(d, "pop", &inner, "[s]", "e"));
    CHECK_OK(mp_value_unpack(inner, "h", &mp_kind_proxy, &a0));
    CHECK_OK(mp_proxy_callf(d, "__len__", NULL, NULL)); /* another request, another collection */
    CHECK_OK(mp_proxy_callf(a0, "append", NULL, "[s]", "popped"));
    CHECK_STR(prepr(a0), "['popped']");
    mp_value_free(inner);
    CHECK_INT(wait_objects(mgr, base + 1), base + 1);
    mp_proxy_free(d);
    CHECK_INT(wait_objects(mgr, base), base);
}

/* ---- registered types ------------------------------------------------------------------- */

static int counter_create(const mp_value *args, void **self)
{
    int64_t *n = malloc(sizeof *n);
    if (!n)
        return -ENOMEM;
    *n = args && mp_value_len(args) ? mp_value_get_int(mp_value_list_get(args, 0)) : 0;
    *self = n;
    return 0;
}

static int counter_incr(void *self, const mp_value *args, mp_value **result)
{
    int64_t *n = self;
    *n += mp_value_len(args) ? mp_value_get_int(mp_value_list_get(args, 0)) : 1;
    *result = mp_value_int(*n);
    return 0;
}

static int counter_fail(void *self, const mp_value *args, mp_value **result)
{
    (void)self, (void)args;
    *result = mp_value_str("counters never fail, except here");
    return MP_EINVAL;
}

static char *counter_repr(void *self)
{
    char *s = malloc(32);
    if (s)
        snprintf(s, 32, "Counter(%lld)", (long long)*(int64_t *)self);
    return s;
}

static int child_incr(mp_value *args)
{
    mp_proxy *c = NULL;
    if (mp_value_unpack(args, "[h]", &mp_kind_proxy, &c) < 0)
        return 2;
    return mp_proxy_callf(c, "incr", NULL, "[i]", 100) < 0 ? 3 : 0;
}

static const mp_manager_method counter_methods[] = {{"incr", counter_incr},
                                                    {"fail", counter_fail}};
static const mp_manager_type counter_type = {.name = "Counter",
                                             .create = counter_create,
                                             .destroy = free,
                                             .repr = counter_repr,
                                             .methods = counter_methods,
                                             .nmethods = 2};

static void test_registered_types(void)
{
    for (size_t i = 0; i < 3; i++) {
        mp_manager_opts o = {.ctx = mp_get_context(methods[i]), .types = &counter_type, .ntypes = 1};
        mp_manager *m = mp_manager_new(&o);
        CHECK(m != NULL);
        if (!m)
            continue;
        mp_value *args = mp_value_pack("[i]", 40);
        mp_proxy *c = mp_manager_create(m, "Counter", args);
        mp_value_free(args);
        CHECK(c != NULL);
        CHECK_STR(callr(c, "incr", NULL), "41");
        CHECK_STR(callr(c, "incr", "[i]", 1), "42");
        CHECK_STR(prepr(c), "Counter(42)");
        CHECK_STR(callr(c, "fail", NULL), "ERR MP_EINVAL");
        CHECK_CONTAINS(mp_last_error(), "counters never fail, except here");
        CHECK_STR(callr(c, "system", "[s]", "rm -rf /"), "ERR MP_EUNSUPPORTED");
        CHECK_CONTAINS(mp_last_error(), "'Counter' object exposes no method 'system'");
        /* A child uses the registered object through its own proxy. */
        CHECK_INT(run_child(methods[i], child_incr, mp_value_pack("[h]", &mp_kind_proxy, c)), 0);
        CHECK_STR(prepr(c), "Counter(142)");
        mp_proxy_free(c);
        mp_manager_free(m);
    }
}

/* ---- a side dies --------------------------------------------------------------------------- */

static void test_server_dies(void)
{
    mp_manager *m = mp_manager_new(NULL);
    CHECK(m != NULL);
    if (!m)
        return;
    mp_proxy *ev = mp_manager_event(m), *ev2 = mp_proxy_dup(ev);
    caller w;
    caller_start(&w, ev2, "wait", NULL);
    CHECK(wait_for_repr(ev, ": unset>")); /* served; the waiter parks meanwhile */
    usleep(20000);
    double t0 = mpt_now();
    CHECK_OK(kill(mp_manager_pid(m), SIGKILL));
    caller_join(&w);
    CHECK_INT(w.rc, MP_EEOF); /* the blocked call fails at once */
    CHECK(mpt_now() - t0 < 2);
    CHECK_ERR(mp_proxy_callf(ev, "set", NULL, NULL), MP_EEOF); /* and so does a later one */
    CHECK_CONTAINS(mp_last_error(), "is gone");
    CHECK(mp_manager_dict(m, NULL) == NULL);
    CHECK_INT(mp_last_error_code(), MP_EEOF);
    mp_proxy_free(ev2);
    mp_proxy_free(ev);
    mp_manager_free(m);
}

/* A child that takes the lock, makes a dict of its own, parks in Queue.get and is
 * killed there by the parent. */
static int child_hold_and_park(mp_value *args)
{
    mp_proxy *lock = NULL, *q = NULL;
    const char *addr;
    const void *key;
    size_t klen;
    if (mp_value_unpack(args, "[h h s y#]", &mp_kind_proxy, &lock, &mp_kind_proxy, &q, &addr,
                        &key, &klen) < 0)
        return 2;
    mp_manager *m = mp_manager_connect(addr, key, klen, 5);
    mp_proxy *mine = m ? mp_manager_dict(m, NULL) : NULL;
    if (!mine || mp_proxy_acquire(lock, 5) < 0)
        return 3;
    mp_proxy_callf(q, "get", NULL, NULL); /* parks until killed */
    return 4;
}

static void test_client_dies(void)
{
    CHECK_INT(wait_objects(mgr, 0), 0);
    mp_proxy *lock = mp_manager_lock(mgr), *q = mp_manager_queue(mgr, 0);
    size_t klen;
    const void *key = mp_manager_authkey(mgr, &klen);
    mp_value *args = mp_value_pack("[h h s y#]", &mp_kind_proxy, lock, &mp_kind_proxy, q,
                                   mp_manager_address(mgr), key, klen);
    mp_process_opts o = {.target = child_hold_and_park, .args = args};
    mp_process *p = mp_process_new(&o);
    mp_value_free(args);
    CHECK_OK(mp_process_start(p));
    /* The child holds the lock, its own dict, and a parked get. */
    CHECK(wait_for_repr(lock, "<locked"));
    CHECK_INT(wait_objects(mgr, 3), 3);
    CHECK_OK(mp_process_kill(p));
    CHECK_OK(mp_process_join(p, 10));
    mp_process_free(p);
    /* Its lock is released, its dict freed, and its parked get dropped: the item put now
     * is not lost to a dead reader. */
    CHECK_OK(mp_proxy_acquire(lock, 5));
    CHECK_INT(wait_objects(mgr, 2), 2);
    CHECK_STR(callr(q, "put", "[s]", "item"), "None");
    CHECK_STR(callr(q, "get", "[b f]", 1, 5.0), "'item'");
    CHECK_OK(mp_proxy_release(lock));
    mp_proxy_free(lock);
    mp_proxy_free(q);
    CHECK_INT(wait_objects(mgr, 0), 0);
}

/* ---- the shared-memory channel of local clients -------------------------------------- */

/* How many connections of the server use the shared-memory channel. */
static int server_channels(mp_manager *m)
{
    size_t klen;
    const void *key = mp_manager_authkey(m, &klen);
    mp_client_opts co = {.authkey = key, .authkey_len = klen};
    mp_connection *c = mp_client(mp_manager_address(m), &co);
    if (!c)
        return -1;
    mp_value *req = mp_value_pack("[s i []]", "debug_info", 0), *rep = NULL;
    char *buf;
    size_t len;
    int r = mp_value_encode(req, &buf, &len, NULL, 0, NULL);
    mp_value_free(req);
    if (r == 0)
        r = mp_connection_send_bytes(c, buf, 0, len);
    mp_free(buf);
    if (r == 0)
        r = mp_connection_recv(c, &rep);
    int n = -1;
    const mp_value *map = r == 0 ? mp_value_list_get(rep, 1) : NULL;
    for (size_t i = 0; map && i < mp_value_len(map); i++)
        if (strcmp(mp_value_get_str(mp_value_map_key(map, i), NULL), "channels") == 0)
            n = (int)mp_value_get_int(mp_value_map_val(map, i));
    mp_value_free(rep);
    mp_connection_free(c);
    return n;
}

static void test_shm_channel(void)
{
    mp_manager *m = mp_manager_new(NULL);
    CHECK(m != NULL);
    if (!m)
        return;
    mp_proxy *d = mp_manager_dict(m, NULL);
    CHECK_STR(callr(d, "__setitem__", "[i i]", 1, 2), "None"); /* the first call: socket */
    CHECK_INT(server_channels(m), 0);
    CHECK_STR(callr(d, "__getitem__", "[i]", 1), "2"); /* the second asks for the channel */
    CHECK_INT(server_channels(m), 1);
    CHECK_STR(callr(d, "__contains__", "[i]", 1), "True");
    /* A request larger than the slot goes on the socket; so does a reply larger than
     * the slot to a small request; small calls go on through the slot afterwards. */
    size_t n = 200000;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = 0;
    CHECK_OK(mp_proxy_callf(d, "__setitem__", NULL, "[s s]", "big", big));
    mp_value *v = NULL;
    CHECK_OK(mp_proxy_callf(d, "__getitem__", &v, "[s]", "big"));
    size_t got = 0;
    CHECK(mp_value_get_str(v, &got) && got == n);
    mp_value_free(v);
    free(big);
    CHECK_STR(callr(d, "__len__", NULL), "2");
    CHECK_OK(mp_proxy_callf(d, "pop", NULL, "[s]", "big"));
    CHECK_STR(callr(d, "get", "[s]", "big"), "None");
    CHECK_STR(callr(d, "__len__", NULL), "1");
    CHECK_INT(server_channels(m), 1);
    mp_proxy_free(d);
    mp_manager_free(m);
    /* A TCP client never asks for one. */
    mp_manager_opts o = {.address = "127.0.0.1:0"};
    m = mp_manager_new(&o);
    CHECK(m != NULL);
    if (!m)
        return;
    d = mp_manager_dict(m, NULL);
    for (int i = 0; i < 3; i++)
        CHECK_STR(callr(d, "__setitem__", "[i i]", i, i), "None");
    CHECK_STR(prepr(d), "{0: 0, 1: 1, 2: 2}");
    CHECK_INT(server_channels(m), 0);
    mp_proxy_free(d);
    mp_manager_free(m);
}

typedef struct shm_caller {
    mp_proxy *p;
    _Atomic pid_t tid;
    int rc;
    char msg[256];
    pthread_t t;
} shm_caller;

static void *shm_caller_main(void *arg)
{
    shm_caller *c = arg;
    c->tid = gettid();
    c->rc = mp_proxy_callf(c->p, "wait", NULL, NULL);
    snprintf(c->msg, sizeof c->msg, "%s", mp_last_error());
    return NULL;
}

/* The server is SIGKILLed while a client sleeps in a call through the shared-memory
 * channel (and another spins or sleeps between calls): both fail at once with
 * MP_EEOF, later calls too. */
static void test_server_dies_in_shm_call(void)
{
    mp_manager *m = mp_manager_new(NULL);
    CHECK(m != NULL);
    if (!m)
        return;
    mp_proxy *ev = mp_manager_event(m), *ev2 = mp_proxy_dup(ev);
    CHECK_STR(callr(ev2, "is_set", NULL), "False"); /* ev2's next call goes by the slot */
    shm_caller w = {.p = ev2};
    pthread_create(&w.t, NULL, shm_caller_main, &w);
    while (w.tid == 0)
        sched_yield();
    CHECK_OK(mpt_wait_blocked(getpid(), w.tid, "poll", 10));
    CHECK_INT(server_channels(m), 1);
    CHECK_STR(callr(ev, "is_set", NULL), "False");
    CHECK_STR(callr(ev, "is_set", NULL), "False");
    CHECK_INT(server_channels(m), 2);
    double t0 = mpt_now();
    CHECK_OK(kill(mp_manager_pid(m), SIGKILL));
    pthread_join(w.t, NULL);
    CHECK_INT(w.rc, MP_EEOF);
    CHECK_CONTAINS(w.msg, "is gone");
    CHECK(mpt_now() - t0 < 2);
    CHECK_ERR(mp_proxy_callf(ev, "set", NULL, NULL), MP_EEOF);
    CHECK_CONTAINS(mp_last_error(), "is gone");
    CHECK_ERR(mp_proxy_callf(ev2, "set", NULL, NULL), MP_EEOF);
    mp_proxy_free(ev2);
    mp_proxy_free(ev);
    mp_manager_free(m);
}

/* A child that takes the lock (by the slot), makes a dict of its own and hammers the
 * shared dict through the slot until it is killed, mid-request more often than not. */
static int child_hammer(mp_value *args)
{
    mp_proxy *lock = NULL, *d = NULL;
    const char *addr;
    const void *key;
    size_t klen;
    if (mp_value_unpack(args, "[h h s y#]", &mp_kind_proxy, &lock, &mp_kind_proxy, &d, &addr,
                        &key, &klen) < 0)
        return 2;
    mp_manager *m = mp_manager_connect(addr, key, klen, 5);
    mp_proxy *mine = m ? mp_manager_dict(m, NULL) : NULL;
    if (!mine || mp_proxy_callf(lock, "locked", NULL, NULL) < 0 || mp_proxy_acquire(lock, 5) < 0)
        return 3;
    for (int64_t i = 0;; i++)
        if (mp_proxy_callf(d, "__setitem__", NULL, "[s I]", "n", i) < 0 ||
            mp_proxy_callf(d, "get", NULL, "[s]", "n") < 0)
            return 4;
}

static void test_client_killed_mid_shm_request(void)
{
    CHECK_INT(wait_objects(mgr, 0), 0);
    mp_proxy *lock = mp_manager_lock(mgr), *d = mp_manager_dict(mgr, NULL);
    size_t klen;
    const void *key = mp_manager_authkey(mgr, &klen);
    mp_value *args = mp_value_pack("[h h s y#]", &mp_kind_proxy, lock, &mp_kind_proxy, d,
                                   mp_manager_address(mgr), key, klen);
    mp_process_opts o = {.target = child_hammer, .args = args};
    mp_process *p = mp_process_new(&o);
    mp_value_free(args);
    CHECK_OK(mp_process_start(p));
    CHECK(wait_for_repr(lock, "<locked"));
    CHECK_INT(wait_objects(mgr, 3), 3);
    CHECK(wait_for_repr(d, "{'n': "));
    CHECK(server_channels(mgr) >= 2); /* the child's lock and dict proxies */
    CHECK_OK(mp_process_kill(p));
    CHECK_OK(mp_process_join(p, 10));
    int code = 0;
    CHECK_OK(mp_process_exitcode(p, &code));
    CHECK_INT(code, -SIGKILL);
    mp_process_free(p);
    /* The server goes on serving; the dead client's lock, dict and connections are gone. */
    CHECK_OK(mp_proxy_acquire(lock, 5));
    CHECK_INT(wait_objects(mgr, 2), 2);
    CHECK_STR(callr(d, "__setitem__", "[s i]", "n", -1), "None");
    CHECK_STR(prepr(d), "{'n': -1}");
    CHECK_OK(mp_proxy_release(lock));
    mp_proxy_free(lock);
    mp_proxy_free(d);
    CHECK_INT(wait_objects(mgr, 0), 0);
}

/* A signal handler that asks the blocking call to stop. */
static int stop_handler(int sig, void *arg)
{
    (void)sig;
    (void)arg;
    return 1;
}

typedef struct kicker {
    pthread_t target;
    pid_t tid;
    int rc;
} kicker;

/* Send SIGUSR1 to the target thread once it sleeps in poll. */
static void *kicker_main(void *arg)
{
    kicker *k = arg;
    k->rc = mpt_wait_blocked(getpid(), k->tid, "poll", 10);
    pthread_kill(k->target, SIGUSR1);
    return NULL;
}

/* A call through the slot interrupted by a handler returns MP_EINTERRUPTED; its reply,
 * still on its way, is dropped by the next call (which gets its own). */
static void test_interrupted_shm_call(void)
{
    mp_proxy *q = mp_manager_queue(mgr, 0), *q2 = mp_proxy_dup(q);
    CHECK_STR(callr(q, "qsize", NULL), "0");
    CHECK_STR(callr(q, "qsize", NULL), "0"); /* the channel is set up: the get goes by the slot */
    CHECK_OK(mp_signal_set_handler(SIGUSR1, stop_handler, NULL));
    kicker k = {.target = pthread_self(), .tid = gettid()};
    pthread_t t;
    pthread_create(&t, NULL, kicker_main, &k);
    CHECK_ERR(mp_proxy_callf(q, "get", NULL, NULL), MP_EINTERRUPTED);
    pthread_join(t, NULL);
    CHECK_INT(k.rc, 0);
    CHECK_OK(mp_signal_set_default(SIGUSR1));
    /* The next call waits for the interrupted get's reply and drops it before it sends
     * its own request (else it would take that reply for its own, and its request
     * written over the slot while the get is parked would be lost). */
    caller w;
    caller_start(&w, q, "qsize", NULL);
    while (w.tid == 0)
        sched_yield();
    CHECK_OK(mpt_wait_blocked(getpid(), w.tid, "poll", 10));
    CHECK_STR(callr(q2, "put", "[s]", "a"), "None"); /* the interrupted get takes it */
    caller_join(&w);
    CHECK_INT(w.rc, 0);
    CHECK_STR(w.result, "0"); /* not 'a' */
    CHECK_STR(callr(q2, "put", "[s]", "b"), "None");
    CHECK_STR(callr(q, "get", NULL), "'b'");
    CHECK_STR(callr(q, "qsize", NULL), "0");
    mp_proxy_free(q2);
    mp_proxy_free(q);
}

/* A client that scribbles on its channel: the segment cannot be resized under the
 * server, and a request length past the slot closes that client's connection while the
 * server keeps serving the others. */
static void test_hostile_shm_client(void)
{
    mp_proxy *d = mp_manager_dict(mgr, NULL);
    CHECK_STR(callr(d, "__setitem__", "[i i]", 1, 1), "None");
    size_t klen;
    const void *key = mp_manager_authkey(mgr, &klen);
    mp_client_opts co = {.authkey = key, .authkey_len = klen};
    mp_connection *c = mp_client(mp_manager_address(mgr), &co);
    CHECK(c != NULL);
    if (!c)
        return;
    mp_value *req = mp_value_pack("[s i []]", "shm", 0), *rep = NULL;
    char *buf;
    size_t len;
    CHECK_OK(mp_value_encode(req, &buf, &len, NULL, 0, NULL));
    mp_value_free(req);
    CHECK_OK(mp_connection_send_bytes(c, buf, 0, len));
    mp_free(buf);
    CHECK_OK(mp_connection_recv(c, &rep));
    CHECK_STR(mpt_repr(rep), "[0, 65280]");
    mp_value_free(rep);
    char b;
    struct iovec iov = {&b, 1};
    int fds[3] = {-1, -1, -1};
    size_t nfds = 0;
    CHECK_INT(mp__recvmsg_fds(mp_connection_fileno(c), &iov, 1, fds, 3, &nfds, 0, NULL), 1);
    CHECK_INT(nfds, 3);
    if (nfds == 3) {
        CHECK(ftruncate(fds[0], 4096) < 0 && errno == EPERM); /* sealed */
        struct mgr_shm *m =
            mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0);
        CHECK(m != MAP_FAILED);
        if (m != MAP_FAILED) {
            m->len = 0xffffffffu;
            atomic_store(&m->state, 1);
            uint64_t one = 1;
            CHECK_INT(write(fds[1], &one, sizeof one), 8);
            void *r;
            CHECK_ERR(mp_connection_recv_bytes(c, 0, &r, &len), MP_EEOF); /* closed */
            munmap(m, sizeof *m);
        }
    }
    for (size_t i = 0; i < nfds; i++)
        close(fds[i]);
    mp_connection_free(c);
    CHECK_STR(callr(d, "__getitem__", "[i]", 1), "1"); /* the others are still served */
    CHECK_STR(callr(d, "__len__", NULL), "1");
    mp_proxy_free(d);
}

/* A child that starts a manager, reports the server's pid and dies at once without
 * shutting it down. */
static int child_start_and_die(mp_value *args)
{
    mp_connection *w = NULL;
    if (mp_value_unpack(args, "[h]", &mp_kind_connection, &w) < 0)
        return 2;
    mp_manager *m = mp_manager_new(NULL);
    mp_value *pid = mp_value_int(m ? mp_manager_pid(m) : -1);
    mp_connection_send(w, pid);
    _exit(0); /* no atexit, no shutdown */
}

/* True once pid has ended (gone, or a zombie nobody reaps). */
static bool ended(pid_t pid)
{
    char path[64], buf[256];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return true;
    char *r = fgets(buf, sizeof buf, f);
    fclose(f);
    const char *paren = r ? strrchr(buf, ')') : NULL;
    return !paren || paren[2] == 'Z' || paren[2] == 'X';
}

static void test_starter_dies(void)
{
    mp_connection *r, *w;
    CHECK_OK(mp_pipe(false, &r, &w));
    CHECK_INT(run_child("fork", child_start_and_die, mp_value_pack("[h]", &mp_kind_connection, w)), 0);
    mp_value *v = NULL;
    CHECK_OK(mp_connection_recv(r, &v));
    pid_t server = (pid_t)mp_value_get_int(v);
    mp_value_free(v);
    CHECK(server > 0);
    double end = mpt_now() + 10;
    while (server > 0 && !ended(server) && mpt_now() < end)
        usleep(5000);
    CHECK(server > 0 && ended(server)); /* the server noticed and stopped */
    mp_connection_free(r);
    mp_connection_free(w);
}

/* ---- hostile peers ------------------------------------------------------------------------- */

static mp_connection *raw_client(mp_manager *m)
{
    size_t klen;
    const void *key = mp_manager_authkey(m, &klen);
    mp_client_opts co = {.authkey = key, .authkey_len = klen};
    return mp_client(mp_manager_address(m), &co);
}

/* Send raw bytes as one request; the reply's code (0 for success), or the receive error
 * (MP_EEOF: the server closed the connection). */
static int raw_call(mp_connection *c, const void *req, size_t len)
{
    int r = mp_connection_send_bytes(c, req, 0, len);
    mp_value *rep = NULL;
    if (r == 0)
        r = mp_connection_recv(c, &rep);
    int64_t code = 0;
    if (r == 0 && mp_value_unpack(rep, "[I o]", &code, &(mp_value *){NULL}) < 0)
        code = -99999;
    mp_value_free(rep);
    return r < 0 ? r : (int)code;
}

#define RAW(c, lit) raw_call((c), (lit), sizeof(lit) - 1)

static void test_hostile_requests(void)
{
    mp_proxy *d = mp_manager_dict(mgr, NULL);
    mp_connection *c = raw_client(mgr);
    CHECK(c != NULL);
    CHECK_INT(RAW(c, "\x93\xa4ping\x00\x90"), 0);
    CHECK_INT(RAW(c, "\xc1"), MP_EPROTO);                    /* never-used byte */
    CHECK_INT(RAW(c, "\x93\xa4ping"), MP_EPROTO);            /* truncated */
    CHECK_INT(RAW(c, "\x93\x01\x02\x03"), MP_EPROTO);        /* wrong shape */
    CHECK_INT(RAW(c, "\x93\xa4ping\xff\x90"), MP_EPROTO);    /* negative id */
    CHECK_INT(RAW(c, "\x93\xa4ping\x00\x91\xd4\x05\x00"), MP_EPROTO); /* unknown ext */
    /* A queue handle (it would carry an fd): refused before any import runs. */
    CHECK_INT(RAW(c, "\x93\xa4ping\x00\x91\xc7\x0b\x01\x93\xa5queue\xc4\x00\x91\x00"), MP_EPROTO);
    mp_connection *c2 = raw_client(mgr);
    mp_value *rep = NULL;
    CHECK_OK(mp_connection_send_bytes(c2, "\x93\xa4ping\x00\x91\xc7\x0b\x01\x93\xa5queue\xc4\x00\x91\x00", 0, 22));
    CHECK_OK(mp_connection_recv(c2, &rep));
    CHECK_CONTAINS(mpt_repr(rep), "a 'queue' handle is not accepted here (only 'proxy')");
    mp_value_free(rep);
    mp_connection_free(c2);
    /* Another object's id, one this connection holds no reference to. */
    char req[64];
    int n = snprintf(req, sizeof req, "\x93\xa7__len__\xcf%c%c%c%c%c%c%c%c\x90", 0, 0, 0, 0, 0,
                     0, 0, (char)mp_proxy_id(d));
    (void)n;
    CHECK_INT(raw_call(c, req, 1 + 8 + 9 + 1), MP_ENOTFOUND);
    CHECK_INT(RAW(c, "\x93\xa6" "decref\x00\x91\x01"), MP_ENOTFOUND);
    CHECK_INT(RAW(c, "\x93\xa6incref\x00\x92\x01\x05"), MP_ENOTFOUND); /* wrong token */
    /* Deep nesting. */
    static char deep[200000];
    memcpy(deep, "\x93\xa4ping\x00", 7);
    memset(deep + 7, 0x91, sizeof deep - 8);
    deep[sizeof deep - 1] = 0;
    CHECK_INT(raw_call(c, deep, sizeof deep), MP_EPROTO);
    memset(deep + 7, 0xd4, 1); /* and with an ext byte in front */
    CHECK_INT(raw_call(c, deep, sizeof deep), MP_EPROTO);
    /* The connection and the server still serve. */
    CHECK_INT(RAW(c, "\x93\xa4ping\x00\x90"), 0);
    CHECK_OK(mp_proxy_callf(d, "__setitem__", NULL, "[i i]", 1, 2));
    CHECK_STR(prepr(d), "{1: 2}");
    mp_connection_free(c);
    mp_proxy_free(d);
}

/* Peak virtual memory of a process, kB. */
static long vm_peak(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmPeak: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static void test_max_message(void)
{
    mp_manager_opts o = {.max_message = 4096};
    mp_manager *m = mp_manager_new(&o);
    CHECK(m != NULL);
    if (!m)
        return;
    mp_proxy *l = mp_manager_list(m, NULL);
    /* A proxy refuses to send a request over the manager's maximum, with a clear code. */
    static char big[8192];
    memset(big, 'x', sizeof big - 1);
    CHECK_ERR(mp_proxy_callf(l, "append", NULL, "[s]", big), -EMSGSIZE);
    CHECK_CONTAINS(mp_last_error(), "4096");
    CHECK_OK(mp_proxy_callf(l, "append", NULL, "[s]", "small"));
    /* A raw peer announcing 1 GB is cut off without the server reading or allocating it. */
    mp_connection *c = raw_client(m);
    uint32_t hdr[3] = {htonl(0xffffffffu), htonl(0), htonl(1u << 30)};
    CHECK_INT(write(mp_connection_fileno(c), hdr, sizeof hdr), (int)sizeof hdr);
    void *buf;
    size_t len;
    CHECK_ERR(mp_connection_recv_bytes(c, 0, &buf, &len), MP_EEOF);
    mp_connection_free(c);
    /* A short request whose array header claims 2^27 items allocates nothing large. */
    long before = vm_peak(mp_manager_pid(m));
    c = raw_client(m);
    CHECK_INT(RAW(c, "\x93\xa4ping\x00\xdd\x08\x00\x00\x00\xd4\x01\x00"), MP_EPROTO);
    long after = vm_peak(mp_manager_pid(m));
    CHECK(before > 0 && after - before < 1 << 20); /* < 1 GB (kB) */
    if (getenv("MPT_VERBOSE") || after - before >= 1 << 20)
        fprintf(stderr, "VmPeak %ld -> %ld kB\n", before, after);
    mp_connection_free(c);
    CHECK_STR(prepr(l), "['small']");
    mp_proxy_free(l);
    mp_manager_free(m);
}

static void test_silent_client(void)
{
    mp_manager_opts o = {.handshake_limit = 0.3};
    mp_manager *m = mp_manager_new(&o);
    CHECK(m != NULL);
    if (!m)
        return;
    /* Silent peers that never answer the challenge. */
    mp_client_opts none = {0};
    mp_connection *silent[4];
    for (int i = 0; i < 4; i++)
        silent[i] = mp_client(mp_manager_address(m), &none);
    /* They do not hold the accept path: a real client is served at once. */
    double t0 = mpt_now();
    mp_proxy *d = mp_manager_dict(m, NULL);
    CHECK(d != NULL);
    CHECK(mpt_now() - t0 < 1.0); /* held by the four in turn, it would take 1.2 s */
    /* And after handshake_limit they are dropped. */
    for (int i = 0; i < 4; i++) {
        CHECK(silent[i] != NULL);
        CHECK_INT(mp_connection_poll(silent[i], 5), 1);
        void *buf;
        size_t len;
        int r = mp_connection_recv_bytes(silent[i], 0, &buf, &len); /* the challenge */
        if (r == 0) {
            mp_free(buf);
            r = mp_connection_recv_bytes(silent[i], 0, &buf, &len);
        }
        CHECK_INT(r, MP_EEOF);
        mp_connection_free(silent[i]);
    }
    CHECK(mpt_now() - t0 < 5);
    /* A peer answering the challenge with a 1 GB message is cut off at once, unread
     * (by the main manager, whose handshake_limit is the default 20 s). */
    mp_connection *big = mp_client(mp_manager_address(mgr), &none);
    void *chal;
    size_t clen;
    CHECK_OK(mp_connection_recv_bytes(big, 0, &chal, &clen));
    mp_free(chal);
    uint32_t hdr = htonl(1u << 30);
    t0 = mpt_now();
    CHECK_INT(write(mp_connection_fileno(big), &hdr, sizeof hdr), (int)sizeof hdr);
    CHECK_INT(mp_connection_poll(big, 5), 1);
    CHECK_ERR(mp_connection_recv_bytes(big, 0, &chal, &clen), MP_EEOF);
    CHECK(mpt_now() - t0 < 5); /* long before handshake_limit */
    mp_connection_free(big);
    mp_proxy_free(d);
    mp_manager_free(m);
}

/* ---- many clients ---------------------------------------------------------------------------- */

typedef struct client_arg {
    mp_proxy *d, *b;
    int rc;
    pthread_t t;
} client_arg;

static void *client_main(void *arg)
{
    client_arg *a = arg;
    /* All 64 wait at one barrier: only a server serving them all at once lets them pass. */
    a->rc = mp_proxy_callf(a->b, "wait", NULL, "[f]", 30.0);
    for (int i = 0; a->rc == 0 && i < 50; i++)
        a->rc = mp_proxy_callf(a->d, "add", NULL, "[s i]", "n", 1);
    return NULL;
}

static void test_64_clients(void)
{
    enum { N = 64 };
    mp_proxy *d = mp_manager_dict(mgr, NULL), *b = mp_manager_barrier(mgr, N);
    client_arg a[N];
    for (int i = 0; i < N; i++) {
        a[i].d = mp_proxy_dup(d);
        a[i].b = mp_proxy_dup(b);
        CHECK(a[i].d && a[i].b);
    }
    for (int i = 0; i < N; i++)
        pthread_create(&a[i].t, NULL, client_main, &a[i]);
    for (int i = 0; i < N; i++) {
        pthread_join(a[i].t, NULL);
        CHECK_INT(a[i].rc, 0);
        mp_proxy_free(a[i].d);
        mp_proxy_free(a[i].b);
    }
    CHECK_STR(prepr(d), "{'n': 3200}");
    mp_proxy_free(b);
    mp_proxy_free(d);
}

/* ---- bad arguments ---------------------------------------------------------------------------- */

/* A proxy carries no fd, so a value holding one encodes without an fd array (a byte
 * buffer is all it needs); a lock, which carries fds, still needs one. */
static void test_proxy_encodes_without_fd_array(void)
{
    mp_proxy *d = mp_manager_dict(mgr, NULL);
    mp_value *v = mp_value_pack("[h i]", &mp_kind_proxy, d, 7);
    char *buf;
    size_t len;
    CHECK_OK(mp_value_encode(v, &buf, &len, NULL, 0, NULL));
    mp_value *back = NULL;
    CHECK_OK(mp_value_decode(buf, len, NULL, 0, &back));
    mp_proxy *p = NULL;
    int64_t seven = 0;
    CHECK_OK(mp_value_unpack(back, "[h I]", &mp_kind_proxy, &p, &seven));
    CHECK_INT(seven, 7);
    CHECK_OK(mp_proxy_callf(p, "__setitem__", NULL, "[s i]", "k", 1));
    CHECK_STR(prepr(d), "{'k': 1}");
    mp_value_free(back);
    mp_free(buf);
    mp_value_free(v);
    mp_proxy_free(d);

    mp_lock *lock = mp_lock_new();
    v = mp_value_pack("[h]", &mp_kind_lock, lock);
    CHECK_ERR(mp_value_encode(v, &buf, &len, NULL, 0, NULL), MP_EUNSUPPORTED);
    CHECK_CONTAINS(mp_last_error(), "'lock' handle (with 1 fds) but no fd array was given");
    mp_value_free(v);
    mp_lock_free(lock);
}

static void test_null_args(void)
{
    double t0 = mpt_now();
    CHECK_NULL_ERR(mp_manager_connect(NULL, NULL, 0, 0), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_connect("@x", NULL, 5, 0), MP_EINVAL);
    CHECK_ERR(mp_manager_shutdown(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_create(NULL, NULL, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_create(mgr, NULL, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_dict(NULL, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_list(NULL, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_namespace(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_lock(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_rlock(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_event(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_condition(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_semaphore(NULL, 0), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_queue(NULL, 0), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_barrier(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_manager_server_serve_forever(NULL), MP_EINVAL);
    CHECK_ERR(mp_manager_server_stop(NULL), MP_EINVAL);
    CHECK_ERR(mp_proxy_call(NULL, NULL, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_proxy_callf(NULL, NULL, NULL, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_proxy_repr(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_proxy_dup(NULL), MP_EINVAL);
    CHECK_ERR(mp_proxy_setitem(NULL, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_proxy_getitem(NULL, NULL, NULL), MP_EINVAL);
    CHECK_INT(mp_proxy_len(NULL), MP_EINVAL);
    CHECK_ERR(mp_proxy_append(NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_proxy_acquire(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_proxy_release(NULL), MP_EINVAL);
    CHECK_STR(mp_manager_address(NULL), "");
    CHECK_STR(mp_manager_server_address(NULL), "");
    CHECK_STR(mp_proxy_type(NULL), "");
    CHECK_INT(mp_proxy_id(NULL), 0);
    CHECK_INT(mp_manager_pid(NULL), 0);
    size_t len = 7;
    CHECK(mp_manager_authkey(NULL, &len) == NULL && len == 0);
    CHECK(mp_manager_server_authkey(NULL, &len) == NULL && len == 0);
    mp_manager_server_free(NULL);
    CHECK(mpt_now() - t0 < 1);
}

/* What a client sends is decoded with memory bounded by its size, and no handle but a
 * proxy is imported from it (fuzz/fuzz_manager.c fuzzes the same decoder). */
static void test_hostile_request_decoder(void)
{
    mgr_request req;
    /* 10 bytes announcing a map of 943,208,504 entries (and an ext byte, which made the
     * request go through msgpack-c's unpacker: it asked for tens of GiB at once). */
    static const unsigned char huge_map[] = {0x93, 0xa1, 'm', 0x01, 0xdf, 0x38, 0x38, 0x38,
                                             0x38, 0xd4};
    CHECK_INT(mp__mgr_parse_request(huge_map, sizeof huge_map, &req), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "map longer than the input");

    mp_lock *lock = mp_lock_new();
    mp_value *v = mp_value_pack("[s i [h]]", "append", 3, &mp_kind_lock, lock);
    char *buf;
    size_t len, nfds;
    int fds[8];
    CHECK_INT(mp_value_encode(v, &buf, &len, fds, 8, &nfds), 0);
    CHECK_INT(mp__mgr_parse_request(buf, len, &req), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "a 'lock' handle is not accepted here (only 'proxy')");
    CHECK_INT(mp__mgr_parse_request(buf, len - 1, &req), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "truncated input");
    mp_free(buf);
    mp_value_free(v);
    mp_lock_free(lock);
}

int main(int argc, char **argv)
{
    CHECK_OK(mp_forkserver_ensure_running()); /* holds an fd for the program's life */
    CHECK(mp_signal_wakeup_fd() >= 0); /* the handlers' wake-up pipe, also for life */
    mgr = mp_manager_new(NULL);
    CHECK(mgr != NULL);
    RUN_IF(argc, argv, test_start_shutdown);
    RUN_IF(argc, argv, test_connect_tcp);
    RUN_IF(argc, argv, test_standalone_server);
    RUN_IF(argc, argv, test_bad_opts);
    RUN_IF(argc, argv, test_dict);
    RUN_IF(argc, argv, test_list);
    RUN_IF(argc, argv, test_namespace_value_array);
    RUN_IF(argc, argv, test_locks);
    RUN_IF(argc, argv, test_blocking_does_not_stall);
    RUN_IF(argc, argv, test_condition);
    RUN_IF(argc, argv, test_barrier);
    RUN_IF(argc, argv, test_queue);
    RUN_IF(argc, argv, test_proxy_in_process_args);
    RUN_IF(argc, argv, test_proxy_through_queue_and_connection);
    RUN_IF(argc, argv, test_proxy_in_pool_tasks);
    RUN_IF(argc, argv, test_nested_proxies);
    RUN_IF(argc, argv, test_registered_types);
    RUN_IF(argc, argv, test_server_dies);
    RUN_IF(argc, argv, test_client_dies);
    RUN_IF(argc, argv, test_starter_dies);
    RUN_IF(argc, argv, test_shm_channel);
    RUN_IF(argc, argv, test_server_dies_in_shm_call);
    RUN_IF(argc, argv, test_client_killed_mid_shm_request);
    RUN_IF(argc, argv, test_interrupted_shm_call);
    RUN_IF(argc, argv, test_hostile_shm_client);
    RUN_IF(argc, argv, test_hostile_requests);
    RUN_IF(argc, argv, test_max_message);
    RUN_IF(argc, argv, test_silent_client);
    RUN_IF(argc, argv, test_64_clients);
    RUN_IF(argc, argv, test_proxy_encodes_without_fd_array);
    RUN_IF(argc, argv, test_null_args);
    RUN_IF(argc, argv, test_hostile_request_decoder);
    mp_manager_free(mgr);
    return mpt_done();
}
