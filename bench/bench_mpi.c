/* The Pool on MPI ranks, one line per case (see bench/run.py):
 *   case<TAB>unit<TAB>multiproc_rate<TAB>floor_rate
 *
 * Run directly (as bench/run.py does), it runs itself as `mpiexec -n 3 bench_mpi --ranks`
 * (Open MPI's root and oversubscribe permissions given to that command only): rank 0
 * owns the pools, ranks 1 and 2 are the workers, all on this host. bench/py_mpi.py runs
 * the same cases with mpi4py.futures (`mpiexec -n 3 python3 -m mpi4py.futures`).
 *   mpi_pool_map_square_1m   map(square, 1M ints) on the 2 ranks, the best of the default
 *                            chunksize (125,000) and 10,000. Floor: raw MPI, rank 0
 *                            sends each rank half of an int64 array (MPI_Send), they
 *                            square it and send it back.
 *   mpi_pool_map_array_square_1m  the same through mp_pool_map_array (int64 in, int64
 *                            out, the default ranges: the element bytes travel in the MPI
 *                            messages). Same floor. (mpi4py has only the value path: its
 *                            column is its map's.)
 *   mpi_pool_apply_10k       10,000 apply_async(square, i), then get of each. Floor: raw
 *                            MPI, 10,000 8-byte requests round-robin to the 2 ranks (128
 *                            in flight per rank), each answered by a message.
 *   mpi_local_map_square_1m  the same three cases on the local pool (2 forked workers)
 *   mpi_local_map_array_square_1m  on the same host, with the same floors: the MPI
 *   mpi_local_apply_10k      pool's overhead against the local one is the ratio of the
 *                            rows.
 * Each rate is the best of several runs (REPS; 5 of each value map); pools are created
 * outside the clock. */
#define _GNU_SOURCE
#include "multiproc/mpi_pool.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* REPS: runs of the short cases (a few ms each) and of the floors, the best kept. The
 * first few runs of a new pool are slower (its buffers and the ranks' are faulted in and
 * grown: map_array's first five ran at 10-160M items/s, then 200-250M), and a short case
 * moves by 2x from run to run on this shared machine; 5 runs reported the warm-up. */
enum { M = 1000000, K = 10000, WIN = 128, REPS = 20 };

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

/* ---- the raw MPI floors (every rank takes part) -------------------------------------- */

static double floor_map(int rank, int reps)
{
    int half = M / 2;
    int64_t *a = malloc((size_t)M * sizeof *a);
    double best = 0;
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 0) {
            for (int i = 0; i < M; i++)
                a[i] = i;
            double t0 = now();
            MPI_Request rq[4];
            for (int w = 0; w < 2; w++) {
                MPI_Isend(a + w * half, half, MPI_INT64_T, w + 1, 1, MPI_COMM_WORLD, &rq[w]);
                MPI_Irecv(a + w * half, half, MPI_INT64_T, w + 1, 2, MPI_COMM_WORLD, &rq[2 + w]);
            }
            MPI_Waitall(4, rq, MPI_STATUSES_IGNORE);
            double t = now() - t0;
            if (a[M - 1] != (int64_t)(M - 1) * (M - 1))
                fprintf(stderr, "bench_mpi: raw map wrong\n");
            best = M / t > best ? M / t : best;
        } else {
            MPI_Recv(a, half, MPI_INT64_T, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
            for (int i = 0; i < half; i++)
                a[i] *= a[i];
            MPI_Send(a, half, MPI_INT64_T, 0, 2, MPI_COMM_WORLD);
        }
    }
    free(a);
    return best;
}

static double floor_apply(int rank, int reps)
{
    double best = 0;
    for (int r = 0; r < reps; r++) {
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 0) {
            double t0 = now();
            int out[2] = {0, 0}, bad = 0;
            int64_t x;
            MPI_Status st;
            for (int64_t i = 0; i < K; i++) {
                int w = (int)(i % 2);
                while (out[w] >= WIN) {
                    MPI_Recv(&x, 1, MPI_INT64_T, MPI_ANY_SOURCE, 2, MPI_COMM_WORLD, &st);
                    out[st.MPI_SOURCE - 1]--;
                }
                MPI_Send(&i, 1, MPI_INT64_T, w + 1, 1, MPI_COMM_WORLD);
                out[w]++;
            }
            while (out[0] + out[1] > 0) {
                MPI_Recv(&x, 1, MPI_INT64_T, MPI_ANY_SOURCE, 2, MPI_COMM_WORLD, &st);
                out[st.MPI_SOURCE - 1]--;
                bad += x < 0;
            }
            double t = now() - t0;
            if (bad)
                fprintf(stderr, "bench_mpi: raw answers wrong\n");
            best = K / t > best ? K / t : best;
        } else {
            for (int i = 0; i < K / 2; i++) {
                int64_t x;
                MPI_Recv(&x, 1, MPI_INT64_T, 0, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
                x *= x;
                MPI_Send(&x, 1, MPI_INT64_T, 0, 2, MPI_COMM_WORLD);
            }
        }
    }
    return best;
}

/* ---- the pools (rank 0) ---------------------------------------------------------------- */

static double pool_map(mp_pool *p, const mp_value *in, size_t chunksize, int reps)
{
    double best = 0;
    for (int r = 0; r < reps; r++) {
        mp_value *out = NULL;
        double t0 = now();
        int rc = mp_pool_map(p, square, in, chunksize, &out);
        double t = now() - t0;
        if (rc < 0 || mp_value_get_int(mp_value_list_get(out, M - 1)) != (int64_t)(M - 1) * (M - 1))
            fprintf(stderr, "bench_mpi: map failed: %s\n", mp_last_error());
        mp_value_free(out);
        best = M / t > best ? M / t : best;
    }
    return best;
}

int square_i64(const void *in, void *out, void *ctx)
{
    (void)ctx;
    int64_t x = *(const int64_t *)in;
    *(int64_t *)out = x * x;
    return 0;
}

static double pool_map_array(mp_pool *p, int reps)
{
    int64_t *in = malloc((size_t)M * sizeof *in), *out = malloc((size_t)M * sizeof *out);
    for (int i = 0; i < M; i++)
        in[i] = i;
    double best = 0;
    for (int r = 0; r < reps; r++) {
        out[M - 1] = 0;
        double t0 = now();
        int rc = mp_pool_map_array(p, square_i64, in, sizeof *in, out, sizeof *out, M, NULL, 0);
        double t = now() - t0;
        if (rc < 0 || out[M - 1] != (int64_t)(M - 1) * (M - 1))
            fprintf(stderr, "bench_mpi: map_array failed: %s\n", mp_last_error());
        best = M / t > best ? M / t : best;
    }
    free(in);
    free(out);
    return best;
}

static double pool_apply(mp_pool *p, int reps)
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
            fprintf(stderr, "bench_mpi: %d apply_async results wrong: %s\n", bad, mp_last_error());
        best = K / t > best ? K / t : best;
    }
    for (int i = 0; i < K; i++)
        mp_value_free(args[i]);
    free(args);
    free(rs);
    return best;
}

static void cases(mp_pool *p, const char *prefix, const mp_value *in, double fmap, double fapply)
{
    double a = pool_map(p, in, 0, 5), b = pool_map(p, in, 10000, 5);
    printf("%s_map_square_1m\titems/s\t%.1f\t%.1f\n", prefix, a > b ? a : b, fmap);
    printf("%s_map_array_square_1m\titems/s\t%.1f\t%.1f\n", prefix, pool_map_array(p, REPS), fmap);
    printf("%s_apply_10k\ttasks/s\t%.1f\t%.1f\n", prefix, pool_apply(p, REPS), fapply);
    fflush(stdout);
}

static int ranks_main(int argc, char **argv)
{
    if (mp_mpi_init(&argc, &argv) < 0) {
        fprintf(stderr, "bench_mpi: %s\n", mp_last_error());
        return 1;
    }
    int rank = mp_mpi_rank(MPI_COMM_WORLD);
    if (mp_mpi_size(MPI_COMM_WORLD) != 3) {
        fprintf(stderr, "bench_mpi: run with mpiexec -n 3\n");
        return 1;
    }
    double fmap = floor_map(rank, REPS), fapply = floor_apply(rank, REPS);
    if (mp_mpi_pool_serve_if_worker(&argc, &argv) < 0) { /* ranks 1, 2 serve from here */
        fprintf(stderr, "bench_mpi: %s\n", mp_last_error());
        return 1;
    }
    mp_value *in = mp_value_list();
    for (int i = 0; i < M; i++)
        mp_value_list_append(in, mp_value_int(i));
    mp_pool *p = mp_pool_new(&(mp_pool_opts){.processes = 2, .backend = mp_mpi_pool_backend()});
    if (!p) {
        fprintf(stderr, "bench_mpi: %s\n", mp_last_error());
        return 1;
    }
    cases(p, "mpi_pool", in, fmap, fapply);
    mp_pool_close(p);
    mp_pool_join(p, -1);
    mp_pool_free(p);
    p = mp_pool_new(&(mp_pool_opts){.processes = 2, .ctx = mp_get_context("fork")});
    if (p) {
        cases(p, "mpi_local", in, fmap, fapply);
        mp_pool_close(p);
        mp_pool_join(p, -1);
        mp_pool_free(p);
    }
    mp_value_free(in);
    return mp_mpi_finalize() < 0;
}

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--ranks") == 0)
        return ranks_main(argc, argv);
    /* Started directly: run the ranks under mpiexec, their output is ours. */
    char self[4096];
    ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
    if (k <= 0)
        return 1;
    self[k] = '\0';
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 1);
    execlp("mpiexec", "mpiexec", "-n", "3", self, "--ranks", (char *)NULL);
    perror("bench_mpi: mpiexec");
    return 1;
}
