/* mp_pool_map_array on MPI ranks under `mpiexec -n 4` (CMakeLists.txt): rank 0 owns the
 * pools, ranks 1-3 serve them. The elements travel in the MPI messages: the results
 * equal the local pool's (fork workers) for element sizes of 8, 3 and 24 bytes, with n
 * not a multiple of the ranges; a failing element fails the call with the local pool's
 * code and message (naming the rank); n = 0; the context as bytes; a context pointer is
 * refused. Mode "rank_killed" (test_mpi_pool_array_modes.sh, under mpiexec
 * --enable-recovery): a rank dying in a range fails the call with MP_EWORKERDIED naming
 * it, and the pool goes on with the ranks left. Mode "hosts" (test_netns_pool_array.sh:
 * `mpiexec -n 3` across network namespaces, TCP between them): the ranges ran in the
 * other namespaces, and the results still equal the local pool's. */
#include "multiproc/mpi_pool.h"
#include "internal/common.h"
#include "test_util.h"

#include <signal.h>
#include <stdint.h>
#include <sys/stat.h>

/* ---- element functions (found on the ranks by object + offset: the same binary) ----- */

int el_square(const void *in, void *out, void *ctx)
{
    (void)ctx;
    int64_t x;
    memcpy(&x, in, sizeof x);
    x *= x;
    memcpy(out, &x, sizeof x);
    return 0;
}

/* 3-byte elements: each byte + its index in the element, reversed. */
int el_rgb(const void *in, void *out, void *ctx)
{
    (void)ctx;
    const unsigned char *a = in;
    unsigned char *b = out;
    b[0] = (unsigned char)(a[2] + 2);
    b[1] = (unsigned char)(a[1] + 1);
    b[2] = a[0];
    return 0;
}

/* 24-byte elements (3 doubles) to 8 bytes: a dot product with the context (3 doubles),
 * or with (1, 1, 1) when there is none. */
typedef struct vec3 {
    double x, y, z;
} vec3;
int el_dot(const void *in, void *out, void *ctx)
{
    const vec3 *v = in, one = {1, 1, 1};
    const vec3 *w = ctx ? ctx : &one;
    double d = v->x * w->x + v->y * w->y + v->z * w->z;
    memcpy(out, &d, sizeof d);
    return 0;
}

/* Fails on the element equal to 777 (-ERANGE), or 778 (a positive 5: MP_EINVAL). */
int el_fail(const void *in, void *out, void *ctx)
{
    (void)ctx;
    int64_t x;
    memcpy(&x, in, sizeof x);
    if (x == 777)
        return -ERANGE;
    if (x == 778)
        return 5;
    memcpy(out, &x, sizeof x);
    return 0;
}

/* Dies (SIGKILL) on the element equal to 5000. */
int el_die(const void *in, void *out, void *ctx)
{
    (void)ctx;
    int64_t x;
    memcpy(&x, in, sizeof x);
    if (x == 5000)
        raise(SIGKILL);
    memcpy(out, &x, sizeof x);
    return 0;
}

/* The network namespace (its inode) of the process running it, whatever the input. */
int el_netns(const void *in, void *out, void *ctx)
{
    (void)in;
    (void)ctx;
    struct stat st;
    int64_t ino = stat("/proc/self/ns/net", &st) == 0 ? (int64_t)st.st_ino : -1;
    memcpy(out, &ino, sizeof ino);
    return 0;
}

int task_echo(const mp_value *arg, mp_value **out)
{
    *out = mp_value_copy(arg);
    return *out ? 0 : mp_last_error_code();
}

/* ---- helpers ------------------------------------------------------------------------- */

static mp_pool *mpi_pool(int n)
{
    return mp_pool_new(&(mp_pool_opts){.processes = n, .backend = mp_mpi_pool_backend()});
}

static void end_pool(mp_pool *p)
{
    CHECK_OK(mp_pool_close(p));
    CHECK_OK(mp_pool_join(p, 60));
    mp_pool_free(p);
}

/* fn over n elements on both pools (and chunksize cs on the MPI one): equal outputs. */
static void same_as_local(mp_pool *mpi, mp_pool *local, mp_array_fn fn, const void *in,
                          size_t in_size, size_t out_size, size_t n, const void *ctx,
                          size_t ctx_len, size_t cs)
{
    char *a = malloc(n * out_size + 1), *b = malloc(n * out_size + 1);
    memset(a, 0xa5, n * out_size + 1);
    memset(b, 0x5a, n * out_size + 1);
    CHECK_OK(mp_pool_map_array_ctx(mpi, fn, in, in_size, a, out_size, n, ctx, ctx_len, cs));
    CHECK_OK(mp_pool_map_array_ctx(local, fn, in, in_size, b, out_size, n, ctx, ctx_len, 0));
    CHECK(memcmp(a, b, n * out_size) == 0);
    CHECK_INT((unsigned char)a[n * out_size], 0xa5); /* nothing written past the end */
    free(a);
    free(b);
}

static mp_pool *g_local; /* fork workers, one per test (its arena is not a leak) */

static mp_pool *local_pool(void)
{
    return mp_pool_new(&(mp_pool_opts){.processes = 2, .ctx = mp_get_context("fork")});
}

/* ---- tests --------------------------------------------------------------------------- */

static int g_expect = 3; /* workers of a default pool (0: as many as mpiexec gave) */

static void test_results_equal_local(void)
{
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    if (g_expect)
        CHECK_INT(mp_pool_processes(p), g_expect);
    g_local = local_pool();
    /* int64 squares: 1M (the default ranges), and n not a multiple of the chunksize */
    enum { M = 1000000 };
    int64_t *in = malloc(M * sizeof *in), *out = calloc(M, sizeof *out);
    for (int64_t i = 0; i < M; i++)
        in[i] = i - 1000;
    CHECK_OK(mp_pool_map_array(p, el_square, in, sizeof *in, out, sizeof *out, M, NULL, 0));
    int bad = 0;
    for (int64_t i = 0; i < M; i++)
        bad += out[i] != (i - 1000) * (i - 1000);
    CHECK_INT(bad, 0);
    same_as_local(p, g_local, el_square, in, 8, 8, 1001, NULL, 0, 7);
    same_as_local(p, g_local, el_square, in, 8, 8, 1, NULL, 0, 0);
    same_as_local(p, g_local, el_square, in, 8, 8, 13, NULL, 0, 100); /* one range */
    /* 3-byte elements (odd sizes: nothing is aligned) */
    enum { R = 100003 };
    unsigned char *rgb = malloc(3 * R);
    for (int i = 0; i < 3 * R; i++)
        rgb[i] = (unsigned char)(i * 7 + 3);
    same_as_local(p, g_local, el_rgb, rgb, 3, 3, R, NULL, 0, 0);
    same_as_local(p, g_local, el_rgb, rgb, 3, 3, R, NULL, 0, 4999);
    /* 24-byte elements to 8 bytes, with and without a context (as bytes) */
    enum { V = 50001 };
    vec3 *v = malloc(V * sizeof *v);
    for (int i = 0; i < V; i++)
        v[i] = (vec3){i, 0.5 * i, -0.25 * i};
    vec3 w = {2, -1, 4};
    same_as_local(p, g_local, el_dot, v, sizeof *v, 8, V, NULL, 0, 0);
    same_as_local(p, g_local, el_dot, v, sizeof *v, 8, V, &w, sizeof w, 0);
    same_as_local(p, g_local, el_dot, v, sizeof *v, 8, V, &w, sizeof w, 333);
    double d = 0;
    CHECK_OK(mp_pool_map_array_ctx(p, el_dot, &v[10], sizeof *v, &d, 8, 1, &w, sizeof w, 0));
    CHECK(d == 2 * 10 - 0.5 * 10 + 4 * -0.25 * 10);
    /* n = 0: nothing runs, nothing is written */
    out[0] = 42;
    CHECK_OK(mp_pool_map_array(p, el_square, in, sizeof *in, out, sizeof *out, 0, NULL, 0));
    CHECK_OK(mp_pool_map_array(p, el_square, NULL, 0, NULL, 0, 0, NULL, 0));
    CHECK_INT(out[0], 42);
    /* a small call after the empty ones */
    CHECK_OK(mp_pool_map_array(p, el_square, in, sizeof *in, out, sizeof *out, 5, NULL, 0));
    CHECK_INT(out[4], 996 * 996);
    free(in);
    free(out);
    free(rgb);
    free(v);
    end_pool(p);
    mp_pool_free(g_local);
}

/* A failing element: the local pool's code and message ("element I failed with RC (in
 * WORKER, pid P)"), the worker being the rank. */
static void test_element_error(void)
{
    mp_pool *p = mpi_pool(0);
    g_local = local_pool();
    enum { N = 3000 };
    int64_t *in = malloc(N * sizeof *in), *out = calloc(N, sizeof *out);
    for (int i = 0; i < N; i++)
        in[i] = i;
    char local_msg[512];
    CHECK_ERR(mp_pool_map_array(g_local, el_fail, in, 8, out, 8, N, NULL, 0), -ERANGE);
    snprintf(local_msg, sizeof local_msg, "%s", mp_last_error());
    CHECK_ERR(mp_pool_map_array(p, el_fail, in, 8, out, 8, N, NULL, 0), -ERANGE);
    CHECK_CONTAINS(mp_last_error(), "element 777 failed with -34 (in MPIPoolWorker-");
    CHECK_CONTAINS(mp_last_error(), "(rank ");
    CHECK_CONTAINS(local_msg, "element 777 failed with -34 (in ForkPoolWorker-");
    /* a positive code: MP_EINVAL, as locally; the lowest range's failure wins */
    in[777] = 0;
    CHECK_ERR(mp_pool_map_array(g_local, el_fail, in, 8, out, 8, N, NULL, 0), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "element 778 failed with 5 (in ");
    CHECK_ERR(mp_pool_map_array(p, el_fail, in, 8, out, 8, N, NULL, 1), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "element 778 failed with 5 (in MPIPoolWorker-");
    in[2999] = 777;
    CHECK_ERR(mp_pool_map_array(p, el_fail, in, 8, out, 8, N, NULL, 10), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "element 778 failed");
    /* the pool goes on */
    in[778] = 3;
    in[2999] = 9;
    CHECK_OK(mp_pool_map_array(p, el_fail, in, 8, out, 8, N, NULL, 0));
    CHECK_INT(out[2999], 9);
    free(in);
    free(out);
    end_pool(p);
    mp_pool_free(g_local);
}

/* Value tasks in flight beside map_array calls: the frames of both share the ranks'
 * streams (an array range then starts where a value chunk ended, unaligned: the rank
 * copies it aligned), and each call gets its own results. */
static void test_mixed_with_values(void)
{
    mp_pool *p = mpi_pool(0);
    mp_value *items = mp_value_list();
    for (int i = 0; i < 300; i++) {
        char s[8];
        snprintf(s, sizeof s, "s%d", i % 7 == 0 ? i : 1); /* strings of several lengths */
        mp_value_list_append(items, mp_value_str(s));
    }
    enum { N = 30001 };
    vec3 *v = malloc(N * sizeof *v);
    double *d = malloc(N * sizeof *d);
    for (int i = 0; i < N; i++)
        v[i] = (vec3){i, 1, -1};
    vec3 w = {1, 3, 5};
    for (int round = 0; round < 3; round++) {
        mp_pool_result *r = mp_pool_map_async(p, task_echo, items,
                                              &(mp_pool_call_opts){.chunksize = 1});
        CHECK_OK(mp_pool_map_array_ctx(p, el_dot, v, sizeof *v, d, 8, N, &w, sizeof w, 101));
        int bad = 0;
        for (int i = 0; i < N; i++)
            bad += d[i] != i - 2.0;
        CHECK_INT(bad, 0);
        const mp_value *got = NULL;
        CHECK_OK(mp_pool_result_get(r, 60, &got));
        CHECK(mp_value_equal(got, items));
        mp_pool_result_free(r);
    }
    free(v);
    free(d);
    mp_value_free(items);
    end_pool(p);
}

/* What cannot travel: a context pointer (its bytes can, with _ctx). */
static void test_refused(void)
{
    mp_pool *p = mpi_pool(0);
    static vec3 w = {1, 2, 3};
    vec3 v = {1, 1, 1};
    double d = 0;
    CHECK_ERR(mp_pool_map_array(p, el_dot, &v, sizeof v, &d, 8, 1, &w, 0), MP_EUNSUPPORTED);
    CHECK_CONTAINS(mp_last_error(), "a context pointer cannot reach MPI workers");
    CHECK_CONTAINS(mp_last_error(), "mp_pool_map_array_ctx");
    CHECK_OK(mp_pool_map_array_ctx(p, el_dot, &v, sizeof v, &d, 8, 1, &w, sizeof w, 0));
    CHECK(d == 6);
    CHECK_ERR(mp_pool_map_array_ctx(p, el_dot, &v, sizeof v, &d, 8, 1, NULL, 8, 0), MP_EINVAL);
    end_pool(p);
}

/* Across "hosts": every range ran outside the master's network namespace. */
static void test_hosts(void)
{
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    enum { N = 8 };
    int64_t in[N] = {0}, ns[N], mine = 0;
    CHECK_OK(mp_pool_map_array(p, el_netns, in, 8, ns, 8, N, NULL, 1));
    el_netns(NULL, &mine, NULL);
    int other = 0;
    for (int i = 0; i < N; i++)
        other += ns[i] != mine && ns[i] > 0;
    printf("ranges run outside the master's namespace: %d of %d\n", other, N);
    CHECK_INT(other, N);
    end_pool(p);
}

/* A rank SIGKILLed in a range (run by test_mpi_pool_array_modes.sh under mpiexec
 * --enable-recovery): MP_EWORKERDIED naming the rank, no hang; the pool goes on. */
static void test_rank_killed(void)
{
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    enum { N = 20000 };
    int64_t *in = malloc(N * sizeof *in), *out = calloc(N, sizeof *out);
    for (int i = 0; i < N; i++)
        in[i] = i;
    double t0 = mpt_now();
    int code = mp_pool_map_array(p, el_die, in, 8, out, 8, N, NULL, 0);
    printf("map_array returned after %.2f s\n", mpt_now() - t0);
    printf("map_array: %s: %s\n", mp_errname(code), mp_last_error());
    fflush(stdout);
    CHECK_INT(code, MP_EWORKERDIED);
    CHECK_CONTAINS(mp_last_error(), "MPI rank");
    CHECK_CONTAINS(mp_last_error(), "died");
    CHECK_CONTAINS(mp_last_error(), "el_die (elements 3334-5000 of the call)");
    /* the pool goes on with the ranks left */
    in[5000] = 1;
    memset(out, 0, N * sizeof *out);
    CHECK_OK(mp_pool_map_array(p, el_die, in, 8, out, 8, N, NULL, 0));
    CHECK_INT(out[N - 1], N - 1);
    CHECK_INT(out[5000], 1);
    end_pool(p);
    free(in);
    free(out);
}

int main(int argc, char **argv)
{
    int r = mp_mpi_pool_serve_if_worker(&argc, &argv);
    if (r < 0) {
        fprintf(stderr, "serve_if_worker: %s\n", mp_last_error());
        return 1;
    }
    /* only rank 0 gets here */
    if (argc > 1 && strcmp(argv[1], "rank_killed") == 0) {
        mpt_current = "test_rank_killed"; /* no fd check: MPI's links to the dead rank */
        test_rank_killed();
        printf("%s test_rank_killed\n", mpt_failures ? "FAIL" : "ok  ");
        int rc = mpt_done();
        printf("mp_mpi_finalize: %d\n", mp_mpi_finalize());
        return rc;
    }
    /* a first pool opens MPI's connections to the ranks (fds kept by MPI) */
    end_pool(mpi_pool(0));
    if (argc > 1 && strcmp(argv[1], "hosts") == 0) {
        g_expect = 0;
        RUN(test_hosts);
        RUN(test_results_equal_local);
        RUN(test_element_error);
        CHECK_OK(mp_mpi_finalize());
        return mpt_done();
    }
    RUN_IF(argc, argv, test_results_equal_local);
    RUN_IF(argc, argv, test_element_error);
    RUN_IF(argc, argv, test_mixed_with_values);
    RUN_IF(argc, argv, test_refused);
    CHECK_OK(mp_mpi_finalize());
    return mpt_done();
}
