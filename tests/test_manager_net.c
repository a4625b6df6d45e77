/* A manager's TCP connections and a silent peer (mp_manager_opts.peer_limit; the
 * several-hosts test, tests/mpi/test_netns_manager.sh, cuts a real link).
 *
 * Here on one host: both ends of a proxy's TCP connection run TCP's keepalive timer,
 * due within peer_limit / 2 seconds (the client takes the limit the server tells it,
 * not its own default), as /proc/net/tcp shows (the "tr" column is 2 while a keepalive
 * timer is pending); with MP_NO_LIMIT neither end has one; a NaN limit is MP_EINVAL. */
#include "test_util.h"

#include <pthread.h>

/* The timers of the established TCP connections with an end on @p port: for each, tr
 * (0 none, 1 retransmit, 2 keepalive, ...) and when (in 1/100 s). Returns the count. */
static int tcp_timers(int port, int *tr, long *when, int max)
{
    FILE *f = fopen("/proc/net/tcp", "r");
    if (!f)
        return -1;
    char line[512];
    int n = 0;
    if (!fgets(line, sizeof line, f)) { /* the header */
        fclose(f);
        return -1;
    }
    while (n < max && fgets(line, sizeof line, f)) {
        unsigned lport, rport, st, t;
        unsigned long w;
        if (sscanf(line, " %*d: %*x:%x %*x:%x %x %*x:%*x %x:%lx", &lport, &rport, &st, &t, &w) != 5)
            continue;
        if (st != 1 || (lport != (unsigned)port && rport != (unsigned)port))
            continue;
        tr[n] = (int)t;
        when[n] = (long)w;
        n++;
    }
    fclose(f);
    return n;
}

static void *serve_thread(void *arg)
{
    return (void *)(intptr_t)mp_manager_server_serve_forever(arg);
}

/* tcp_timers once the two ends of the one connection on @p port are idle: no
 * retransmit or loss-probe timer (tr 1) left from the last exchange (the reply's ACK
 * may be delayed), polled for up to 5 s. The count of connections. */
static int idle_timers(int port, int *tr, long *when)
{
    double end = mpt_now() + 5;
    int n;
    do { /* a bounded poll of an observable state */
        n = tcp_timers(port, tr, when, 4);
        if (n == 2 && tr[0] != 1 && tr[1] != 1)
            break;
        struct timespec ts = {0, 2000000};
        nanosleep(&ts, NULL);
    } while (mpt_now() < end);
    return n;
}

/* A server on 127.0.0.1 with @p limit, one proxy: its connection's two ends' timers. */
static int proxy_timers(double limit, int *tr, long *when)
{
    mp_manager_opts o = {.address = "127.0.0.1:0", .authkey = "k", .authkey_len = 1,
                         .peer_limit = limit};
    mp_manager_server *s = mp_manager_server_new(&o);
    CHECK(s != NULL);
    if (!s)
        return -1;
    pthread_t t;
    pthread_create(&t, NULL, serve_thread, s);
    int port = atoi(strrchr(mp_manager_server_address(s), ':') + 1), n = -1;
    mp_manager *m = mp_manager_connect(mp_manager_server_address(s), "k", 1, 5);
    mp_proxy *d = m ? mp_manager_dict(m, NULL) : NULL;
    CHECK(d != NULL);
    if (d) {
        CHECK_OK(mp_proxy_callf(d, "__setitem__", NULL, "[s i]", "a", 1));
        /* the proxy's connection is the only one left open (connect's ping closed) */
        n = idle_timers(port, tr, when);
        CHECK_INT(n, 2);
    }
    mp_proxy_free(d);
    if (m)
        CHECK_OK(mp_manager_shutdown(m));
    else
        mp_manager_server_stop(s);
    mp_manager_free(m);
    pthread_join(t, NULL);
    mp_manager_server_free(s);
    return n;
}

static void test_keepalive_both_ends(void)
{
    int tr[4] = {0};
    long when[4] = {0};
    if (proxy_timers(5, tr, when) != 2)
        return;
    for (int i = 0; i < 2; i++) {
        CHECK_INT(tr[i], 2);           /* a keepalive timer... */
        CHECK(when[i] <= 250);         /* ...due within 5 / 2 s: the server's limit */
    }
}

static void test_no_limit(void)
{
    int tr[4] = {-1, -1};
    long when[4] = {0};
    if (proxy_timers(MP_NO_LIMIT, tr, when) != 2)
        return;
    CHECK_INT(tr[0], 0);
    CHECK_INT(tr[1], 0);
}

static void test_bad_limit(void)
{
    mp_manager_opts o = {.address = "127.0.0.1:0", .peer_limit = NAN};
    CHECK_NULL_ERR(mp_manager_server_new(&o), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "peer_limit");
    CHECK_NULL_ERR(mp_manager_new(&o), MP_EINVAL);
}

/* A started manager (a server process) gets the limit too. */
static void test_started_manager(void)
{
    mp_manager_opts o = {.address = "127.0.0.1:0", .authkey = "k", .authkey_len = 1,
                         .peer_limit = 4};
    mp_manager *m = mp_manager_new(&o);
    CHECK(m != NULL);
    if (!m)
        return;
    int port = atoi(strrchr(mp_manager_address(m), ':') + 1), tr[4] = {0};
    long when[4] = {0};
    mp_proxy *l = mp_manager_list(m, NULL);
    CHECK_OK(mp_proxy_callf(l, "append", NULL, "[i]", 7));
    CHECK_INT(idle_timers(port, tr, when), 2);
    CHECK(tr[0] == 2 && tr[1] == 2 && when[0] <= 200 && when[1] <= 200);
    mp_proxy_free(l);
    mp_manager_free(m);
}

int main(void)
{
    RUN(test_keepalive_both_ends);
    RUN(test_no_limit);
    RUN(test_bad_limit);
    RUN(test_started_manager);
    return mpt_done();
}
