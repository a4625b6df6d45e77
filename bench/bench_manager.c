/* Manager benchmarks: multiproc vs the raw floor (a socketpair request/response to a
 * server process doing a hash-table operation). Prints
 * case<TAB>unit<TAB>multiproc_rate<TAB>floor_rate. See bench/py_manager.py.
 *
 *   manager_dict_ops          one client, alternating d[k] = v and d[k]
 *   manager_dict_ops_4clients four client processes on one dict (aggregate)
 *   manager_start             start a manager, one operation, shut it down */
#define _GNU_SOURCE
#include "multiproc/manager.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

#define BEST_OF_3(rate, expr)                                                           \
    do {                                                                                 \
        rate = 0;                                                                        \
        for (int run_ = 0; run_ < 3; run_++) {                                           \
            double r_ = (expr);                                                          \
            if (r_ > rate)                                                               \
                rate = r_;                                                               \
        }                                                                                \
    } while (0)

static void die(const char *what)
{
    fprintf(stderr, "bench_manager: %s: %s\n", what, mp_last_error());
    exit(1);
}

static void reap_ok(pid_t pid)
{
    int st;
    if (waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bench child failed\n");
        exit(1);
    }
}

/* ---- multiproc ----------------------------------------------------------------------- */

/* n operations on d: set and get alternately, keys cycling over 100. */
static void dict_ops(mp_proxy *d, long n, int salt)
{
    for (long i = 0; i < n; i += 2) {
        int key = (int)(i % 100) + salt * 1000;
        if (mp_proxy_callf(d, "__setitem__", NULL, "[i i]", key, (int)i) < 0)
            die("set");
        mp_value *v;
        if (mp_proxy_callf(d, "__getitem__", &v, "[i]", key) < 0)
            die("get");
        mp_value_free(v);
    }
}

static double dict_ops_mp(mp_manager *m, long n)
{
    mp_proxy *d = mp_manager_dict(m, NULL);
    if (!d)
        die("dict");
    double t = now();
    dict_ops(d, n, 0);
    double rate = (double)n / (now() - t);
    mp_proxy_free(d);
    return rate;
}

static double dict_ops_4_mp(mp_manager *m, long n)
{
    mp_proxy *d = mp_manager_dict(m, NULL);
    if (!d)
        die("dict");
    int go[2];
    if (pipe(go) < 0)
        exit(1);
    pid_t pids[4];
    for (int c = 0; c < 4; c++) {
        pids[c] = fork();
        if (pids[c] == 0) {
            mp_proxy *mine = mp_proxy_dup(d); /* its own connection, not the parent's */
            char b;
            if (!mine || read(go[0], &b, 1) != 1)
                _exit(1);
            dict_ops(mine, n, c);
            mp_proxy_free(mine);
            _exit(0);
        }
    }
    usleep(200000); /* let the children connect before the clock starts */
    double t = now();
    if (write(go[1], "gggg", 4) != 4)
        exit(1);
    for (int c = 0; c < 4; c++)
        reap_ok(pids[c]);
    double rate = 4.0 * (double)n / (now() - t);
    close(go[0]);
    close(go[1]);
    mp_proxy_free(d);
    return rate;
}

static double start_mp(long n)
{
    double t = now();
    for (long i = 0; i < n; i++) {
        mp_manager *m = mp_manager_new(NULL);
        mp_proxy *d = m ? mp_manager_dict(m, NULL) : NULL;
        if (!d || mp_proxy_callf(d, "__setitem__", NULL, "[s i]", "a", 1) < 0)
            die("start");
        mp_proxy_free(d);
        mp_manager_free(m);
    }
    return (double)n / (now() - t);
}

/* ---- the floor: raw request/response to a hash table in a server process -------------- */

typedef struct req {
    int32_t op; /* 1 set, 2 get, 0 stop */
    int32_t key;
    int64_t val;
} req;

#define TABLE 4096
static int64_t table_key[TABLE], table_val[TABLE];
static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;

static int64_t table_op(const req *r)
{
    pthread_mutex_lock(&table_mu);
    uint32_t h = (uint32_t)r->key * 2654435761u % TABLE;
    while (table_key[h] && table_key[h] != r->key + 1)
        h = (h + 1) % TABLE;
    int64_t out = 0;
    if (r->op == 1) {
        table_key[h] = r->key + 1;
        table_val[h] = r->val;
    } else {
        out = table_val[h];
    }
    pthread_mutex_unlock(&table_mu);
    return out;
}

static void *serve_fd(void *arg)
{
    int fd = (int)(intptr_t)arg;
    req r;
    while (read(fd, &r, sizeof r) == sizeof r && r.op) {
        int64_t out = table_op(&r);
        if (write(fd, &out, sizeof out) != sizeof out)
            break;
    }
    return NULL;
}

/* A server process with one thread per client socket (as the manager serves). */
static pid_t floor_server(int nclients, int *client_fds)
{
    int server_fds[8];
    for (int c = 0; c < nclients; c++) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
            exit(1);
        client_fds[c] = sv[0];
        server_fds[c] = sv[1];
    }
    pid_t pid = fork();
    if (pid == 0) {
        pthread_t t[8];
        for (int c = 0; c < nclients; c++) {
            close(client_fds[c]);
            pthread_create(&t[c], NULL, serve_fd, (void *)(intptr_t)server_fds[c]);
        }
        for (int c = 0; c < nclients; c++)
            pthread_join(t[c], NULL);
        _exit(0);
    }
    for (int c = 0; c < nclients; c++)
        close(server_fds[c]);
    return pid;
}

static void floor_ops(int fd, long n, int salt)
{
    for (long i = 0; i < n; i++) {
        req r = {(int32_t)(i % 2 ? 2 : 1), (int32_t)(i / 2 % 100 + salt * 1000), i};
        int64_t out;
        if (write(fd, &r, sizeof r) != sizeof r || read(fd, &out, sizeof out) != sizeof out)
            exit(1);
    }
}

static void floor_stop(int fd)
{
    req r = {0, 0, 0};
    if (write(fd, &r, sizeof r) != sizeof r)
        exit(1);
    close(fd);
}

static double dict_ops_floor(long n)
{
    int fd;
    pid_t pid = floor_server(1, &fd);
    double t = now();
    floor_ops(fd, n, 0);
    double rate = (double)n / (now() - t);
    floor_stop(fd);
    reap_ok(pid);
    return rate;
}

static double dict_ops_4_floor(long n)
{
    int fds[4];
    pid_t server = floor_server(4, fds);
    int go[2];
    if (pipe(go) < 0)
        exit(1);
    pid_t pids[4];
    for (int c = 0; c < 4; c++) {
        pids[c] = fork();
        if (pids[c] == 0) {
            char b;
            if (read(go[0], &b, 1) != 1)
                _exit(1);
            floor_ops(fds[c], n, c);
            _exit(0);
        }
    }
    usleep(200000);
    double t = now();
    if (write(go[1], "gggg", 4) != 4)
        exit(1);
    for (int c = 0; c < 4; c++)
        reap_ok(pids[c]);
    double rate = 4.0 * (double)n / (now() - t);
    for (int c = 0; c < 4; c++)
        floor_stop(fds[c]);
    reap_ok(server);
    close(go[0]);
    close(go[1]);
    return rate;
}

static double start_floor(long n)
{
    double t = now();
    for (long i = 0; i < n; i++) {
        int fd;
        pid_t pid = floor_server(1, &fd);
        floor_ops(fd, 1, 0);
        floor_stop(fd);
        reap_ok(pid);
    }
    return (double)n / (now() - t);
}

int main(void)
{
    double mp, fl;
    mp_manager *m = mp_manager_new(NULL);
    if (!m)
        die("manager");
    BEST_OF_3(mp, dict_ops_mp(m, 40000));
    BEST_OF_3(fl, dict_ops_floor(40000));
    printf("manager_dict_ops\tops/s\t%.0f\t%.0f\n", mp, fl);
    fflush(stdout);
    BEST_OF_3(mp, dict_ops_4_mp(m, 20000));
    BEST_OF_3(fl, dict_ops_4_floor(20000));
    printf("manager_dict_ops_4clients\tops/s\t%.0f\t%.0f\n", mp, fl);
    fflush(stdout);
    mp_manager_free(m);
    BEST_OF_3(mp, start_mp(20));
    BEST_OF_3(fl, start_floor(200));
    printf("manager_start\tops/s\t%.1f\t%.1f\n", mp, fl);
    return 0;
}
