/* Pickle benchmarks: the pickle codec and a C server answering Python clients.
 * Prints: case<TAB>unit<TAB>multiproc_rate<TAB>floor_rate (higher is better).
 *
 * pickle_roundtrip: a list of 100 mixed small items (ints, floats, short strs, None,
 *   bools, small tuples and dicts), mp_value_pickle + mp_value_unpickle + free.
 *   floor: the same value through our MessagePack codec (encode + decode + free), the
 *   codec multiproc programs use between themselves.
 * py_conn_objects: a Python multiprocessing.connection Client (conn_objects_client.py)
 *   sends a small dict and waits for it back; here a C server with the pickle codec
 *   echoes it (recv + send). The rate is the Python client's round trips per second.
 *   floor: the same exchange with a C client (pickle codec both ends). */
#define _GNU_SOURCE
#include <multiproc.h>

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SECONDS 0.3 /* per round; the best of ROUNDS rounds counts */
#define ROUNDS 3

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double best_rate(void (*one)(void))
{
    double best = 0;
    for (int i = 0; i < 1000; i++) /* warm up */
        one();
    for (int r = 0; r < ROUNDS; r++) {
        long n = 0;
        double t0 = now(), t;
        do {
            for (int i = 0; i < 100; i++)
                one();
            n += 100;
            t = now();
        } while (t - t0 < SECONDS);
        if (n / (t - t0) > best)
            best = n / (t - t0);
    }
    return best;
}

/* ---- pickle_roundtrip --------------------------------------------------------------- */

static mp_value *mixed; /* the same items as py_pickle.py's MIXED */

static mp_value *make_mixed(void)
{
    mp_value *l = mp_value_list();
    for (int i = 0; i < 10; i++) {
        mp_value_list_append(l, mp_value_int(i));
        mp_value_list_append(l, mp_value_int(i * 100000));
        mp_value_list_append(l, mp_value_float(i * 1.5));
        mp_value_list_append(l, mp_value_str("name"));
        mp_value_list_append(l, mp_value_pack("s", i % 2 ? "short text" : "a little longer text"));
        mp_value_list_append(l, mp_value_nil());
        mp_value_list_append(l, mp_value_bool(i % 2));
        mp_value_list_append(l, mp_value_pack("[i i]", i, i + 1));
        mp_value_list_append(l, mp_value_pack("{s i s f}", "id", i, "score", i * 0.5));
        mp_value_list_append(l, mp_value_bytes("\x01\x02\x03", 3));
    }
    return l;
}

static void pickle_one(void)
{
    char *buf;
    size_t len;
    mp_value *back = NULL;
    if (mp_value_pickle(mixed, 4, &buf, &len) < 0 || mp_value_unpickle(buf, len, &back) < 0)
        abort();
    mp_free(buf);
    mp_value_free(back);
}

static void msgpack_one(void)
{
    char *buf;
    size_t len;
    mp_value *back = NULL;
    if (mp_value_encode(mixed, &buf, &len, NULL, 0, NULL) < 0 ||
        mp_value_decode(buf, len, NULL, 0, &back) < 0)
        abort();
    mp_free(buf);
    mp_value_free(back);
}

/* ---- py_conn_objects ------------------------------------------------------------------ */

static void echo(mp_connection *c)
{
    mp_value *v = NULL;
    while (mp_connection_recv(c, &v) == 0) {
        mp_connection_send(c, v);
        mp_value_free(v);
    }
}

static mp_listener *pickle_listener(void)
{
    mp_listener_opts o = {.codec = MP_CODEC_PICKLE};
    return mp_listener_new(&o);
}

/* The Python client's rate against our server. */
static double python_client_rate(void)
{
    mp_listener *l = pickle_listener();
    char here[1024], script[1100], secs[32];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(script, sizeof script, "%s/conn_objects_client.py", dirname(here));
    snprintf(secs, sizeof secs, "%g", SECONDS);
    const char *argv[] = {"python3", script, mp_listener_address(l), secs, NULL};
    mp_subprocess_opts so = {.out = MP_STDIO_PIPE};
    mp_popen *py = mp_popen_start(argv, &so);
    mp_connection *c = NULL;
    if (!py || mp_listener_accept(l, 30, &c) < 0) {
        fprintf(stderr, "bench_pickle: %s\n", mp_last_error());
        exit(1);
    }
    echo(c);
    mp_connection_free(c);
    const char *line = NULL;
    double rate = 0;
    if (mp_popen_readline(py, &line, NULL, 30) == 0)
        rate = atof(line);
    mp_popen_wait(py, 30, NULL);
    mp_popen_free(py);
    mp_listener_free(l);
    return rate;
}

/* The same exchange from a C client in a child process. */
static double c_client_rate(void)
{
    mp_listener *l = pickle_listener();
    int fd[2];
    if (!l || pipe(fd) < 0)
        exit(1);
    pid_t pid = fork();
    if (pid == 0) {
        mp_client_opts o = {.codec = MP_CODEC_PICKLE};
        mp_connection *c = mp_client(mp_listener_address(l), &o);
        mp_value *msg = mp_value_pack("{s i s s s [f f f] s b}", "id", 7, "name", "item",
                                      "values", 1.5, 2.5, 3.5, "ok", 1);
        double best = 0;
        for (int r = 0; r < ROUNDS; r++) {
            long n = 0;
            double t0 = now(), t;
            do {
                mp_value *back = NULL;
                if (mp_connection_send(c, msg) < 0 || mp_connection_recv(c, &back) < 0)
                    _exit(1);
                mp_value_free(back);
                n++;
                t = now();
            } while (t - t0 < SECONDS);
            best = n / (t - t0) > best ? n / (t - t0) : best;
        }
        if (write(fd[1], &best, sizeof best) != sizeof best)
            _exit(1);
        _exit(0);
    }
    mp_connection *c = NULL;
    if (mp_listener_accept(l, 30, &c) < 0)
        exit(1);
    echo(c);
    mp_connection_free(c);
    double rate = 0;
    if (read(fd[0], &rate, sizeof rate) != sizeof rate)
        rate = 0;
    waitpid(pid, NULL, 0);
    close(fd[0]);
    close(fd[1]);
    mp_listener_free(l);
    return rate;
}

int main(void)
{
    mixed = make_mixed();
    double p = best_rate(pickle_one), m = best_rate(msgpack_one);
    printf("pickle_roundtrip\tops/s\t%.1f\t%.1f\n", p, m);
    fflush(stdout);
    printf("py_conn_objects\tround trips/s\t%.1f\t%.1f\n", python_client_rate(), c_client_rate());
    mp_value_free(mixed);
    return 0;
}
