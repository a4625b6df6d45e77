/* A manager server and its clients on different "hosts" (network namespaces), for
 * tests/mpi/test_netns_manager.sh. One program, one mode per role:
 *
 *   serve ADDR KEY [PEER_LIMIT [PUB LOCAL]]  a standalone server listening at ADDR
 *                      (serve_forever on a thread); the main thread connects to it as a
 *                      client and creates the shared objects: root = {'d': dict, 'l': list
 *                      holding a dict (nested), 'e': Event, 'q': Queue, 'k': Lock}; prints
 *                      "root <hex>" (root's proxy, encoded) and "serving"; when a client
 *                      shuts the server down, "stopped". Root is made through a connection
 *                      to PUB, the objects in it through one to LOCAL (both default to the
 *                      server's address): with ADDR 0.0.0.0:port, PUB the address others
 *                      reach and LOCAL 127.0.0.1:port, the nested proxies carry an address
 *                      that means nothing on other hosts.
 *   work ADDR KEY ROOT ID N TOKENS   N rounds of atomic updates through nested proxies:
 *                      d.add('count', 1), a compare-and-set loop on d['cas'], the inner
 *                      dict's add('hits', 1), l.append, d.setdefault('first', ID), and
 *                      d.pop('tok<i>', None) for every token: prints "started" once it
 *                      holds the proxies, then "popped <n> retries <compare-and-set retries>".
 *   check ADDR KEY ROOT CLIENTS N TOKENS   the final values (exit 1 if wrong)
 *   wait ADDR KEY ROOT           e.wait() with no timeout: "waiting", then
 *                      "result <code name> <seconds> <message>" and the same for a later
 *                      call ("again ...")
 *   later ADDR KEY ROOT          connects e's proxy, prints "ready", reads a line from stdin,
 *                      then calls e.is_set(): "result ..."
 *   hold ADDR KEY ROOT           k.acquire(), "holding", then q.get() (blocks)
 *   acquire ADDR KEY ROOT LIMIT  k.acquire(True, LIMIT): "acquired <seconds>" or "result ..."
 *   set ADDR KEY ROOT            e.set() (clear: e.clear())
 *   badkey ADDR                  connect with a wrong key: "result <code name>"
 *   shutdown ADDR KEY            ask the server to stop
 *
 * Exit codes: 0 done, 1 a wrong value, 2 an unexpected error (printed). */
#include "multiproc.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int die(const char *what)
{
    printf("error %s: %s %s\n", what, mp_errname(mp_last_error_code()), mp_last_error());
    fflush(stdout);
    exit(2);
}

static void result(const char *tag, int r, double t0)
{
    printf("%s %s %.2f %s\n", tag, r < 0 ? mp_errname(r) : "OK", now() - t0,
           r < 0 ? mp_last_error() : "");
    fflush(stdout);
}

static mp_manager *connect_to(const char *addr, const char *key)
{
    mp_manager *m = mp_manager_connect(addr, key, strlen(key), 10);
    if (!m)
        die("connect");
    return m;
}

/* ---- root: a dict of proxies, travelling as hex ---------------------------------------- */

static char *to_hex(const mp_value *v)
{
    char *buf;
    size_t len, nfds = 0;
    int fds[1];
    if (mp_value_encode(v, &buf, &len, fds, 0, &nfds) < 0)
        die("encode");
    char *hex = malloc(len * 2 + 1);
    for (size_t i = 0; i < len; i++)
        sprintf(hex + 2 * i, "%02x", (unsigned char)buf[i]);
    hex[len * 2] = 0;
    mp_free(buf);
    return hex;
}

static mp_proxy *root_from_hex(const char *hex, mp_value **holder)
{
    size_t len = strlen(hex) / 2;
    unsigned char *buf = malloc(len ? len : 1);
    for (size_t i = 0; i < len; i++)
        sscanf(hex + 2 * i, "%2hhx", &buf[i]);
    mp_value *v = NULL;
    if (mp_value_decode(buf, len, NULL, 0, &v) < 0)
        die("decode root");
    free(buf);
    mp_proxy *p = NULL;
    if (mp_value_unpack(v, "h", &mp_kind_proxy, &p) < 0)
        die("root");
    *holder = v;
    return p;
}

/* root[name]: a proxy (nested) kept alive by the value in *holder */
static mp_proxy *item(mp_proxy *root, const char *name, mp_value **holder)
{
    mp_proxy *p = NULL;
    if (mp_proxy_callf(root, "__getitem__", holder, "[s]", name) < 0 ||
        mp_value_unpack(*holder, "h", &mp_kind_proxy, &p) < 0)
        die(name);
    return p;
}

/* ---- serve ------------------------------------------------------------------------------ */

static void *serve_thread(void *s)
{
    int r = mp_manager_server_serve_forever(s);
    return (void *)(intptr_t)r;
}

static int serve(const char *addr, const char *key, double peer_limit, const char *pub,
                 const char *local)
{
    mp_manager_opts o = {.address = addr,
                         .authkey = key,
                         .authkey_len = strlen(key),
                         .peer_limit = peer_limit};
    mp_manager_server *s = mp_manager_server_new(&o);
    if (!s)
        die("server");
    pthread_t t;
    pthread_create(&t, NULL, serve_thread, s);
    mp_manager *m = connect_to(local ? local : mp_manager_server_address(s), key);
    mp_manager *mpub = connect_to(pub ? pub : mp_manager_server_address(s), key);
    mp_value *init = mp_value_pack("{s:i s:i}", "count", 0, "cas", 0);
    for (int i = 0; i < 100; i++) {
        char k[16];
        snprintf(k, sizeof k, "tok%d", i);
        mp_value_map_set_str(init, k, mp_value_int(i));
    }
    mp_proxy *d = mp_manager_dict(m, init), *l = mp_manager_list(m, NULL);
    mp_value_free(init);
    init = mp_value_pack("{s:i}", "hits", 0);
    mp_proxy *inner = mp_manager_dict(m, init), *e = mp_manager_event(m);
    mp_proxy *q = mp_manager_queue(m, 0), *k = mp_manager_lock(m);
    mp_value_free(init);
    mp_proxy *root = mp_manager_dict(mpub, NULL);
    if (!d || !l || !inner || !e || !q || !k || !root ||
        mp_proxy_callf(l, "append", NULL, "[h]", &mp_kind_proxy, inner) < 0 ||
        mp_proxy_callf(root, "update", NULL, "[{s:h s:h s:h s:h s:h}]", "d", &mp_kind_proxy, d,
                       "l", &mp_kind_proxy, l, "e", &mp_kind_proxy, e, "q", &mp_kind_proxy, q,
                       "k", &mp_kind_proxy, k) < 0)
        die("create");
    mp_value *rv = mp_value_pack("h", &mp_kind_proxy, root);
    char *hex = to_hex(rv);
    mp_value_free(rv);
    printf("root %s\nserving %s\n", hex, mp_manager_server_address(s));
    fflush(stdout);
    free(hex);
    void *ret;
    pthread_join(t, &ret);
    printf("stopped %d\n", (int)(intptr_t)ret);
    fflush(stdout);
    mp_proxy *all[] = {d, l, inner, e, q, k, root};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        mp_proxy_free(all[i]);
    mp_manager_free(mpub);
    mp_manager_free(m);
    mp_manager_server_free(s);
    return 0;
}

/* ---- clients ---------------------------------------------------------------------------- */

static int work(mp_proxy *root, int id, int n, int tokens)
{
    mp_value *hd = NULL, *hl = NULL, *hi = NULL;
    mp_proxy *d = item(root, "d", &hd), *l = item(root, "l", &hl), *inner = NULL;
    if (mp_proxy_callf(l, "__getitem__", &hi, "[i]", 0) < 0 ||
        mp_value_unpack(hi, "h", &mp_kind_proxy, &inner) < 0)
        die("l[0]");
    printf("started\n");
    int retries = 0, popped = 0;
    for (int i = 0; i < n; i++) {
        if (mp_proxy_callf(d, "add", NULL, "[s i]", "count", 1) < 0 ||
            mp_proxy_callf(inner, "add", NULL, "[s i]", "hits", 1) < 0 ||
            mp_proxy_callf(l, "append", NULL, "[i]", id * 100000 + i) < 0)
            die("add");
        for (;;) { /* read, then compare-and-set: lost updates would show in the total */
            mp_value *v = NULL, *ok = NULL;
            if (mp_proxy_callf(d, "__getitem__", &v, "[s]", "cas") < 0 ||
                mp_proxy_callf(d, "compare_and_set", &ok, "[s I I]", "cas", mp_value_get_int(v),
                               mp_value_get_int(v) + 1) < 0)
                die("compare_and_set");
            bool done = mp_value_get_bool(ok);
            mp_value_free(v);
            mp_value_free(ok);
            if (done)
                break;
            retries++;
        }
        mp_value *first = NULL;
        if (mp_proxy_callf(d, "setdefault", &first, "[s i]", "first", id) < 0)
            die("setdefault");
        mp_value_free(first);
    }
    for (int t = 0; t < tokens; t++) {
        char k[16];
        mp_value *v = NULL;
        snprintf(k, sizeof k, "tok%d", t);
        if (mp_proxy_callf(d, "pop", &v, "[s n]", k) < 0)
            die("pop");
        popped += mp_value_type(v) != MP_NIL;
        mp_value_free(v);
    }
    printf("popped %d retries %d\n", popped, retries);
    mp_value_free(hi);
    mp_value_free(hl);
    mp_value_free(hd);
    return 0;
}

static int64_t get_int(mp_proxy *p, const char *key)
{
    mp_value *v = NULL;
    if (mp_proxy_callf(p, "__getitem__", &v, "[s]", key) < 0)
        die(key);
    int64_t n = mp_value_get_int(v);
    mp_value_free(v);
    return n;
}

static int check(mp_proxy *root, int clients, int n, int tokens)
{
    mp_value *hd = NULL, *hl = NULL, *hi = NULL;
    mp_proxy *d = item(root, "d", &hd), *l = item(root, "l", &hl), *inner = NULL;
    if (mp_proxy_callf(l, "__getitem__", &hi, "[i]", 0) < 0 ||
        mp_value_unpack(hi, "h", &mp_kind_proxy, &inner) < 0)
        die("l[0]");
    int64_t count = get_int(d, "count"), cas = get_int(d, "cas"), hits = get_int(inner, "hits");
    int64_t first = get_int(d, "first"), len = mp_proxy_len(l), dlen = mp_proxy_len(d);
    printf("count=%lld cas=%lld hits=%lld len(l)=%lld first=%lld len(d)=%lld\n",
           (long long)count, (long long)cas, (long long)hits, (long long)len, (long long)first,
           (long long)dlen);
    int64_t want = (int64_t)clients * n;
    /* count, cas, first and the tokens the clients did not pop (100 - tokens) */
    bool ok = count == want && cas == want && hits == want && len == 1 + want && first >= 1 &&
              first <= clients && dlen == 3 + (100 - tokens);
    mp_value_free(hi);
    mp_value_free(hl);
    mp_value_free(hd);
    return ok ? 0 : 1;
}

static int wait_event(mp_proxy *root)
{
    mp_value *he = NULL;
    mp_proxy *e = item(root, "e", &he);
    if (mp_proxy_callf(e, "is_set", NULL, NULL) < 0)
        die("is_set");
    printf("waiting\n");
    fflush(stdout);
    double t0 = now();
    result("result", mp_proxy_callf(e, "wait", NULL, NULL), t0);
    t0 = now();
    result("again", mp_proxy_callf(e, "is_set", NULL, NULL), t0);
    mp_value_free(he);
    return 0;
}

static int later(mp_proxy *root)
{
    mp_value *he = NULL;
    mp_proxy *e = item(root, "e", &he);
    if (mp_proxy_callf(e, "is_set", NULL, NULL) < 0)
        die("is_set");
    printf("ready\n");
    fflush(stdout);
    char line[16];
    if (!fgets(line, sizeof line, stdin))
        return 2;
    double t0 = now();
    result("result", mp_proxy_callf(e, "is_set", NULL, NULL), t0);
    mp_value_free(he);
    return 0;
}

static int hold(mp_proxy *root)
{
    mp_value *hk = NULL, *hq = NULL;
    mp_proxy *k = item(root, "k", &hk), *q = item(root, "q", &hq);
    if (mp_proxy_acquire(k, -1) < 0)
        die("acquire");
    printf("holding\n");
    fflush(stdout);
    double t0 = now();
    result("result", mp_proxy_callf(q, "get", NULL, NULL), t0);
    mp_value_free(hq);
    mp_value_free(hk);
    return 0;
}

static int acquire(mp_proxy *root, double limit)
{
    mp_value *hk = NULL;
    mp_proxy *k = item(root, "k", &hk);
    double t0 = now();
    int r = mp_proxy_acquire(k, limit);
    if (r == 0)
        printf("acquired %.2f\n", now() - t0);
    else
        result("result", r, t0);
    fflush(stdout);
    mp_value_free(hk);
    return 0;
}

static int set_event(mp_proxy *root, const char *method)
{
    mp_value *he = NULL;
    mp_proxy *e = item(root, "e", &he);
    if (mp_proxy_callf(e, method, NULL, NULL) < 0)
        die(method);
    mp_value_free(he);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *mode = argc > 1 ? argv[1] : "";
    if (strcmp(mode, "serve") == 0 && argc >= 4)
        return serve(argv[2], argv[3], argc > 4 ? atof(argv[4]) : 0, argc > 6 ? argv[5] : NULL,
                     argc > 6 ? argv[6] : NULL);
    if (strcmp(mode, "badkey") == 0 && argc >= 3) {
        double t0 = now();
        mp_manager *m = mp_manager_connect(argv[2], "not the key", 11, 10);
        result("result", m ? 0 : mp_last_error_code(), t0);
        mp_manager_free(m);
        return 0;
    }
    if (argc < 4) {
        fprintf(stderr, "usage: see the comment atop tests/helper_mgr_net.c\n");
        return 2;
    }
    mp_manager *m = connect_to(argv[2], argv[3]);
    if (strcmp(mode, "shutdown") == 0) {
        int r = mp_manager_shutdown(m);
        mp_manager_free(m);
        return r < 0 ? 2 : 0;
    }
    if (argc < 5)
        return 2;
    mp_value *holder = NULL;
    mp_proxy *root = root_from_hex(argv[4], &holder);
    int rc = 2;
    if (strcmp(mode, "work") == 0 && argc >= 8)
        rc = work(root, atoi(argv[5]), atoi(argv[6]), atoi(argv[7]));
    else if (strcmp(mode, "check") == 0 && argc >= 8)
        rc = check(root, atoi(argv[5]), atoi(argv[6]), atoi(argv[7]));
    else if (strcmp(mode, "wait") == 0)
        rc = wait_event(root);
    else if (strcmp(mode, "later") == 0)
        rc = later(root);
    else if (strcmp(mode, "hold") == 0)
        rc = hold(root);
    else if (strcmp(mode, "acquire") == 0 && argc >= 6)
        rc = acquire(root, atof(argv[5]));
    else if (strcmp(mode, "set") == 0 || strcmp(mode, "clear") == 0)
        rc = set_event(root, mode);
    mp_value_free(holder);
    mp_manager_free(m);
    return rc;
}
