/* Process pools against the raw-syscall floor, one line per case:
 *   case<TAB>unit<TAB>multiproc_rate<TAB>floor_rate   (see bench/run.py)
 *
 * Cases (bench/py_pool.py runs the same with Python's multiprocessing.Pool, fork):
 *   pool_create               Pool(2), one task, close + join. Floor: fork 2 workers on
 *                             socketpairs, one 8-byte request and answer, EOF, waitpid.
 *   pool_map_square_1m        map(square, 1M ints) through values (the input list is built
 *                             before the clock starts, as Python's range exists before).
 *   pool_map_array_square_1m  the same through mp_pool_map_array (int64 in, int64 out).
 *   pool_imap_1m              imap(square, 1M ints, chunksize 1000), every result taken.
 *                             Floor of these three: 2 forked workers squaring halves of a
 *                             shared array (fork + wait included), per item.
 *   pool_apply_async_10k      10,000 apply_async(square, i) then get of each. Floor: 2
 *                             forked workers on socketpairs, 10,000 8-byte requests
 *                             pipelined round-robin (128 in flight per worker), every
 *                             answer read.
 * The pools have 2 workers (fork) and are created outside the clock except in pool_create. */
#define _GNU_SOURCE
#include "multiproc/pool.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
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

int square(const mp_value *arg, mp_value **out)
{
    int64_t x = mp_value_get_int(arg);
    *out = mp_value_int(x * x);
    return 0;
}

int square_i64(const void *in, void *out, void *ctx)
{
    (void)ctx;
    int64_t x = *(const int64_t *)in;
    *(int64_t *)out = x * x;
    return 0;
}

static mp_pool *pool2(void)
{
    mp_pool *p = mp_pool_new(&(mp_pool_opts){.processes = 2, .ctx = mp_get_context("fork")});
    if (!p) {
        fprintf(stderr, "bench_pool: %s\n", mp_last_error());
        exit(1);
    }
    return p;
}

/* ---- pool_create ---------------------------------------------------------------------- */

static double create_mp(double seconds, int min)
{
    int n = 0;
    double t0 = now(), t;
    mp_value *seven = mp_value_int(7);
    do {
        mp_pool *p = pool2();
        mp_value *out = NULL;
        if (mp_pool_apply(p, square, seven, &out) < 0 || mp_value_get_int(out) != 49)
            fprintf(stderr, "bench_pool: apply failed: %s\n", mp_last_error());
        mp_value_free(out);
        mp_pool_close(p);
        mp_pool_join(p, -1);
        mp_pool_free(p);
        n++;
        t = now() - t0;
    } while (t < seconds || n < min);
    mp_value_free(seven);
    return n / t;
}

static void raw_worker(int fd)
{
    int64_t x;
    while (read(fd, &x, sizeof x) == sizeof x) {
        x *= x;
        if (write(fd, &x, sizeof x) != sizeof x)
            break;
    }
    _exit(0);
}

/* Fork 2 raw workers on socketpairs: their pids and the parent's ends. */
static void raw_start(pid_t pids[2], int fds[2])
{
    for (int i = 0; i < 2; i++) {
        int sv[2];
        socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
        pids[i] = fork();
        if (pids[i] == 0) {
            close(sv[0]);
            for (int k = 0; k < i; k++)
                close(fds[k]);
            raw_worker(sv[1]);
        }
        close(sv[1]);
        fds[i] = sv[0];
    }
}

static void raw_stop(pid_t pids[2], int fds[2])
{
    for (int i = 0; i < 2; i++)
        close(fds[i]);
    for (int i = 0; i < 2; i++)
        waitpid(pids[i], NULL, 0);
}

static double create_floor(double seconds, int min)
{
    int n = 0;
    double t0 = now(), t;
    do {
        pid_t pids[2];
        int fds[2];
        raw_start(pids, fds);
        int64_t x = 7;
        if (write(fds[0], &x, sizeof x) != sizeof x || read(fds[0], &x, sizeof x) != sizeof x ||
            x != 49)
            fprintf(stderr, "bench_pool: raw worker failed\n");
        raw_stop(pids, fds);
        n++;
        t = now() - t0;
    } while (t < seconds || n < min);
    return n / t;
}

/* ---- maps of 1M ------------------------------------------------------------------------ */

enum { M = 1000000 };

static double map_values(mp_pool *p, const mp_value *in, int reps)
{
    double best = 0;
    for (int r = 0; r < reps; r++) {
        mp_value *out = NULL;
        double t0 = now();
        int rc = mp_pool_map(p, square, in, 0, &out);
        double t = now() - t0;
        if (rc < 0 || mp_value_get_int(mp_value_list_get(out, M - 1)) != (int64_t)(M - 1) * (M - 1))
            fprintf(stderr, "bench_pool: map failed: %s\n", mp_last_error());
        mp_value_free(out);
        best = M / t > best ? M / t : best;
    }
    return best;
}

static double map_array(mp_pool *p, int reps)
{
    int64_t *in = malloc(M * sizeof *in), *out = malloc(M * sizeof *out);
    for (int i = 0; i < M; i++)
        in[i] = i;
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        int rc = mp_pool_map_array(p, square_i64, in, sizeof *in, out, sizeof *out, M, NULL, 0);
        double t = now() - t0;
        if (rc < 0 || out[M - 1] != (int64_t)(M - 1) * (M - 1))
            fprintf(stderr, "bench_pool: map_array failed: %s\n", mp_last_error());
        best = M / t > best ? M / t : best;
    }
    free(in);
    free(out);
    return best;
}

static double imap_values(mp_pool *p, const mp_value *in, int reps)
{
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        mp_pool_iter *it = mp_pool_imap(p, square, in, 1000);
        mp_value *v;
        int64_t last = -1;
        size_t got = 0;
        while (mp_pool_iter_next(it, -1, &v) == 1) {
            last = mp_value_get_int(v);
            mp_value_free(v);
            got++;
        }
        mp_pool_iter_free(it);
        double t = now() - t0;
        if (got != M || last != (int64_t)(M - 1) * (M - 1))
            fprintf(stderr, "bench_pool: imap failed: %s\n", mp_last_error());
        best = M / t > best ? M / t : best;
    }
    return best;
}

/* Two forked workers square the halves of a shared array in place. */
static double map_floor(int reps)
{
    int64_t *a = mmap(NULL, M * sizeof *a, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                      -1, 0);
    double best = 0;
    for (int r = 0; r < reps; r++) {
        for (int i = 0; i < M; i++)
            a[i] = i;
        double t0 = now();
        pid_t pids[2];
        for (int w = 0; w < 2; w++) {
            pids[w] = fork();
            if (pids[w] == 0) {
                for (int i = w * (M / 2); i < (w + 1) * (M / 2); i++)
                    a[i] *= a[i];
                _exit(0);
            }
        }
        for (int w = 0; w < 2; w++)
            waitpid(pids[w], NULL, 0);
        double t = now() - t0;
        if (a[M - 1] != (int64_t)(M - 1) * (M - 1))
            fprintf(stderr, "bench_pool: floor map wrong\n");
        best = M / t > best ? M / t : best;
    }
    munmap(a, M * sizeof *a);
    return best;
}

/* ---- apply_async of 10k ---------------------------------------------------------------- */

enum { K = 10000 };

static double apply_async_mp(mp_pool *p, int reps)
{
    mp_pool_result **rs = malloc(K * sizeof *rs);
    mp_value **args = malloc(K * sizeof *args);
    for (int i = 0; i < K; i++)
        args[i] = mp_value_int(i);
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        for (int i = 0; i < K; i++)
            rs[i] = mp_pool_apply_async(p, square, args[i], NULL);
        int bad = 0;
        for (int i = 0; i < K; i++) {
            const mp_value *v = NULL;
            bad += mp_pool_result_get(rs[i], -1, &v) < 0 || mp_value_get_int(v) != (int64_t)i * i;
            mp_pool_result_free(rs[i]);
        }
        double t = now() - t0;
        if (bad)
            fprintf(stderr, "bench_pool: %d apply_async results wrong\n", bad);
        best = K / t > best ? K / t : best;
    }
    for (int i = 0; i < K; i++)
        mp_value_free(args[i]);
    free(args);
    free(rs);
    return best;
}

static double apply_floor(int reps)
{
    pid_t pids[2];
    int fds[2];
    raw_start(pids, fds);
    double best = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now();
        /* Pipelined in batches of 128 requests per worker (a Unix socket holds only a
         * few hundred small messages), then their answers. */
        int bad = 0;
        for (int64_t b = 0; b < K; b += 256) {
            int64_t end = b + 256 < K ? b + 256 : K;
            for (int64_t i = b; i < end; i++)
                if (write(fds[i % 2], &i, sizeof i) != sizeof i)
                    fprintf(stderr, "bench_pool: raw write failed\n");
            for (int64_t i = b; i < end; i++) {
                int64_t x = 0;
                bad += read(fds[i % 2], &x, sizeof x) != sizeof x || x != i * i;
            }
        }
        double t = now() - t0;
        if (bad)
            fprintf(stderr, "bench_pool: %d raw answers wrong\n", bad);
        best = K / t > best ? K / t : best;
    }
    raw_stop(pids, fds);
    return best;
}

int main(void)
{
    printf("pool_create\tops/s\t%.1f\t%.1f\n", create_mp(1.0, 20), create_floor(1.0, 20));
    fflush(stdout);
    mp_pool *p = pool2();
    mp_value *in = mp_value_list();
    for (int i = 0; i < M; i++)
        mp_value_list_append(in, mp_value_int(i));
    double floor = map_floor(5);
    printf("pool_map_square_1m\titems/s\t%.1f\t%.1f\n", map_values(p, in, 5), floor);
    printf("pool_map_array_square_1m\titems/s\t%.1f\t%.1f\n", map_array(p, 5), floor);
    printf("pool_imap_1m\titems/s\t%.1f\t%.1f\n", imap_values(p, in, 3), floor);
    printf("pool_apply_async_10k\ttasks/s\t%.1f\t%.1f\n", apply_async_mp(p, 5), apply_floor(5));
    mp_value_free(in);
    mp_pool_close(p);
    mp_pool_join(p, -1);
    mp_pool_free(p);
    return 0;
}
