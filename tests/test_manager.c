/* Managers: start/shutdown under every start method, connect by address + authkey,
 * every shared type's methods and Python reprs, atomic dict updates, proxies passed to
 * children and nested in containers, registered types (also in spawn/forkserver
 * servers), blocking methods that park without stalling others, 64 concurrent clients,
 * per-connection references (a killed client releases what it held), a killed server
 * (blocked and later calls fail at once), hostile and truncated requests, no leaks. */
#include "test_util.h"

#include "multiproc/manager.h"

#include "manager/mgr.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>

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
} caller;

static void *caller_main(void *arg)
{
    caller *c = arg;
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
    CHECK_STR(callr(q, "get", "[b f]", 1, 0.02), "ERR MP_EEMPTY");
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

/* What a client sends is decoded with memory bounded by its size, and no handle but a
 * proxy is imported from it (fuzz/fuzz_manager.c fuzzes the same decoder). */
static void test_hostile_requests(void)
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
    CHECK_CONTAINS(mp_last_error(), "a 'lock' handle cannot travel here (only 'proxy')");
    CHECK_INT(mp__mgr_parse_request(buf, len - 1, &req), MP_EPROTO);
    CHECK_CONTAINS(mp_last_error(), "truncated input");
    mp_free(buf);
    mp_value_free(v);
    mp_lock_free(lock);
}

int main(int argc, char **argv)
{
    CHECK_OK(mp_forkserver_ensure_running()); /* holds an fd for the program's life */
    mgr = mp_manager_new(NULL);
    CHECK(mgr != NULL);
    RUN_IF(argc, argv, test_start_shutdown);
    RUN_IF(argc, argv, test_connect_tcp);
    RUN_IF(argc, argv, test_bad_opts);
    RUN_IF(argc, argv, test_dict);
    RUN_IF(argc, argv, test_list);
    RUN_IF(argc, argv, test_namespace_value_array);
    RUN_IF(argc, argv, test_locks);
    RUN_IF(argc, argv, test_blocking_does_not_stall);
    RUN_IF(argc, argv, test_condition);
    RUN_IF(argc, argv, test_barrier);
    RUN_IF(argc, argv, test_queue);
    RUN_IF(argc, argv, test_hostile_requests);
    mp_manager_free(mgr);
    return mpt_done();
}
