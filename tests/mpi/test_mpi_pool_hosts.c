/* The MPI pool with its ranks on other hosts. Run by ctest as `mpiexec -n 4` (one host)
 * and by tests/mpi/test_netns_pool_hosts.sh with one rank per network namespace ("host").
 *
 * Rank 0 owns an MPI pool (the other ranks serve it) and a local pool; map, imap,
 * imap_unordered, starmap and apply_async give the same results on both. A task reports
 * the address of the host it ran on: with MPT_EXPECT_WORKER_ADDRS="a b ..." the workers
 * must have run on exactly those hosts, none on the master's.
 *
 * Started as `mpiexec -n 1` the pools spawn their 2 ranks (MPI_Comm_spawn), which take
 * the hostfile's free slots: on the other hosts.
 *
 * `test_mpi_pool_hosts kill <addr>`: a map whose tasks block on the host at <addr> (each
 * prints "blocked on <addr> pid <pid>"); the test script cuts that host off (or kills
 * the rank); the map must fail with MP_EWORKERDIED within the heartbeat limit (2 s): the
 * master prints "result <code> <seconds> <message>", then "master done" unflushed, and
 * returns from main without mp_mpi_finalize (the library's exit handler ends MPI). */
#include <arpa/inet.h>
#include <ifaddrs.h>
#include <net/if.h>

#include "multiproc/mpi_pool.h"
#include "test_util.h"

static void my_addr(char *out, size_t n)
{
    struct ifaddrs *ifa = NULL;
    snprintf(out, n, "-");
    if (getifaddrs(&ifa) < 0)
        return;
    for (struct ifaddrs *i = ifa; i; i = i->ifa_next)
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && !(i->ifa_flags & IFF_LOOPBACK)) {
            inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)i->ifa_addr)->sin_addr, out,
                      (socklen_t)n);
            break;
        }
    freeifaddrs(ifa);
}

/* ---- tasks (the same binary on every rank) --------------------------------------------- */

int task_cube(const mp_value *arg, mp_value **out)
{
    int64_t x = mp_value_get_int(arg);
    *out = mp_value_pack("{s:I s:s}", "cube", x * x * x, "tag", x % 2 ? "odd" : "even");
    return 0;
}

int task_mul(const mp_value *arg, mp_value **out)
{
    int64_t a, b;
    int r = mp_value_unpack(arg, "[I I]", &a, &b);
    if (r < 0)
        return r;
    *out = mp_value_int(a * b);
    return 0;
}

int task_where(const mp_value *arg, mp_value **out)
{
    (void)arg;
    char a[64];
    my_addr(a, sizeof a);
    *out = mp_value_str(a);
    return 0;
}

/* arg: [i, victim address]: blocks (until killed) on the victim's host */
int task_block_on(const mp_value *arg, mp_value **out)
{
    int64_t i;
    const char *victim;
    int r = mp_value_unpack(arg, "[I s]", &i, &victim);
    if (r < 0)
        return r;
    char a[64];
    my_addr(a, sizeof a);
    if (strcmp(a, victim) == 0) {
        printf("blocked on %s pid %d\n", a, (int)getpid());
        fflush(stdout);
        for (;;)
            pause();
    }
    *out = mp_value_int(i);
    return 0;
}

/* ---- helpers ---------------------------------------------------------------------------- */

static int nworkers;

static mp_pool *mpi_pool(double heartbeat)
{
    static mp_pool_backend *b;
    if (!b) {
        mp_mpi_pool_opts mo = {.heartbeat_limit = heartbeat};
        b = mp_mpi_pool_backend_new(&mo);
    }
    mp_pool_opts o = {.processes = nworkers, .backend = b};
    return mp_pool_new(&o);
}

static mp_value *range(int n)
{
    mp_value *l = mp_value_list();
    for (int i = 0; i < n; i++)
        mp_value_list_append(l, mp_value_int(i));
    return l;
}

static mp_value *drain(mp_pool_iter *it)
{
    mp_value *l = mp_value_list(), *v = NULL;
    int r;
    while ((r = mp_pool_iter_next(it, 60, &v)) == 1)
        mp_value_list_append(l, v);
    CHECK_INT(r, 0);
    mp_pool_iter_free(it);
    return l;
}

static int cmp_value(const void *a, const void *b)
{
    return mp_value_compare(*(mp_value *const *)a, *(mp_value *const *)b);
}

/* the list's items, sorted (imap_unordered's order is the pool's) */
static char *sorted_repr(const mp_value *l)
{
    size_t n = mp_value_len(l);
    mp_value **items = calloc(n ? n : 1, sizeof *items);
    for (size_t i = 0; i < n; i++)
        items[i] = mp_value_list_get(l, i);
    qsort(items, n, sizeof *items, cmp_value);
    mp_value *s = mp_value_list();
    for (size_t i = 0; i < n; i++)
        mp_value_list_append(s, mp_value_copy(items[i]));
    free(items);
    char *r = mp_value_repr(s);
    mp_value_free(s);
    return r;
}

/* every call on pool p: a repr of all the results */
static char *results(mp_pool *p)
{
    mp_value *items = range(60), *pairs = mp_value_list(), *all = mp_value_list(), *v = NULL;
    for (int i = 0; i < 20; i++)
        mp_value_list_append(pairs, mp_value_pack("[i i]", i, 100 - i));
    for (size_t cs = 0; cs < 8; cs += 7) { /* chunksize 0 (the pool's choice) and 7 */
        CHECK_OK(mp_pool_map(p, task_cube, items, cs, &v));
        mp_value_list_append(all, v);
    }
    mp_value_list_append(all, drain(mp_pool_imap(p, task_cube, items, 3)));
    mp_value *u = drain(mp_pool_imap_unordered(p, task_mul, pairs, 2));
    char *su = sorted_repr(u);
    mp_value_list_append(all, mp_value_str(su));
    mp_free(su);
    mp_value_free(u);
    CHECK_OK(mp_pool_starmap(p, task_mul, pairs, 4, &v));
    mp_value_list_append(all, v);
    mp_value *x = mp_value_int(12);
    mp_pool_result *ar = mp_pool_apply_async(p, task_cube, x, NULL);
    CHECK(ar != NULL);
    if (ar) {
        const mp_value *cv = NULL;
        CHECK_OK(mp_pool_result_get(ar, 60, &cv));
        mp_value_list_append(all, cv ? mp_value_copy(cv) : mp_value_nil());
        mp_pool_result_free(ar);
    }
    mp_value_free(x);
    char *r = mp_value_repr(all);
    mp_value_free(all);
    mp_value_free(pairs);
    mp_value_free(items);
    return r;
}

static void end_pool(mp_pool *p)
{
    CHECK_OK(mp_pool_close(p));
    CHECK_OK(mp_pool_join(p, 60));
    mp_pool_free(p);
}

/* ---- tests ------------------------------------------------------------------------------ */

static void test_same_results(void)
{
    mp_pool_opts lo = {.processes = 2};
    mp_pool *local = mp_pool_new(&lo), *remote = mpi_pool(0);
    CHECK(local && remote);
    if (!local || !remote)
        return;
    char *a = results(local), *b = results(remote);
    CHECK_STR(b, a);
    mp_free(a);
    mp_free(b);
    end_pool(local);
    end_pool(remote);
}

static void test_workers_hosts(void)
{
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    if (!p)
        return;
    mp_value *items = range(8 * nworkers), *v = NULL;
    CHECK_OK(mp_pool_map(p, task_where, items, 1, &v));
    /* the distinct addresses, sorted */
    char *where = sorted_repr(v), master[64], set[512] = "";
    my_addr(master, sizeof master);
    size_t n = mp_value_len(v);
    mp_value **it = calloc(n ? n : 1, sizeof *it);
    for (size_t i = 0; i < n; i++)
        it[i] = mp_value_list_get(v, i);
    qsort(it, n, sizeof *it, cmp_value);
    for (size_t i = 0; i < n; i++) {
        const char *s = mp_value_get_str(it[i], NULL);
        if (i && mp_value_equal(it[i], it[i - 1]))
            continue;
        size_t len = strlen(set);
        snprintf(set + len, sizeof set - len, "%s%s", len ? " " : "", s ? s : "?");
    }
    free(it);
    printf("master on %s, tasks ran on: %s\n", master, set);
    const char *expect = getenv("MPT_EXPECT_WORKER_ADDRS");
    if (expect) {
        CHECK_STR(set, expect);
        CHECK(strstr(set, master) == NULL);
    }
    mp_free(where);
    mp_value_free(v);
    mp_value_free(items);
    end_pool(p);
}

static int kill_mode(const char *victim)
{
    mp_pool *p = mpi_pool(2);
    if (!p) {
        printf("error pool %s\n", mp_last_error());
        return 2;
    }
    mp_value *items = mp_value_list(), *v = NULL;
    for (int i = 0; i < 4 * nworkers; i++)
        mp_value_list_append(items, mp_value_pack("[i s]", i, victim));
    double t0 = mpt_now();
    int r = mp_pool_map(p, task_block_on, items, 1, &v);
    printf("result %s %.2f %s\n", r < 0 ? mp_errname(r) : "OK", mpt_now() - t0,
           r < 0 ? mp_last_error() : "");
    fflush(stdout);
    mp_value_free(v);
    mp_value_free(items);
    mp_pool_terminate(p);
    mp_pool_free(p);
    /* left in stdout's buffer: the library's end flushes it, whatever ends the job */
    printf("master done");
    return 0; /* the library's exit handler ends MPI */
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (mp_mpi_pool_serve_if_worker(&argc, &argv) < 0) {
        fprintf(stderr, "serve_if_worker: %s\n", mp_last_error());
        return 1;
    }
    nworkers = mp_mpi_size(MPI_COMM_WORLD) - 1;
    if (nworkers == 0) /* started alone (`mpiexec -n 1`): the pools spawn 2 ranks */
        nworkers = 2;
    if (argc > 2 && strcmp(argv[1], "kill") == 0)
        return kill_mode(argv[2]);
    /* a first pool opens MPI's connections (kept until finalize; in spawn mode the
     * spawned ranks too), before the tests' fd leak checks count */
    mp_pool *warm = mpi_pool(0);
    mp_value *x = mp_value_int(2), *v = NULL;
    CHECK_OK(mp_pool_apply(warm, task_cube, x, &v));
    mp_value_free(v);
    mp_value_free(x);
    end_pool(warm);
    RUN(test_same_results);
    RUN(test_workers_hosts);
    mp_mpi_finalize();
    return mpt_done();
}
