/* The Pool on MPI ranks under `mpiexec -n 4` (CMakeLists.txt): rank 0 owns the pools,
 * ranks 1-3 serve them (mp_mpi_pool_serve_if_worker). Every call's results are compared
 * with the local pool's (fork workers) on the same inputs; task failures carry their code
 * and the worker's message naming its rank and host; initializers; close/join/terminate
 * and a new pool after each; what the backend refuses; no fds or zombies left. */
#include "multiproc/mpi_pool.h"
#include "internal/common.h"
#include "test_util.h"

#include <pthread.h>
#include <fcntl.h>
#include <stdatomic.h>

/* ---- tasks (found on the ranks by object + offset: the same binary) ------------------ */

int task_square(const mp_value *arg, mp_value **out)
{
    int64_t x = mp_value_get_int(arg);
    *out = mp_value_int(x * x);
    return 0;
}

int task_add(const mp_value *arg, mp_value **out)
{
    int a, b;
    int r = mp_value_unpack(arg, "[i i]", &a, &b);
    if (r < 0)
        return r;
    *out = mp_value_int(a + b);
    return 0;
}

int task_fail_on_3(const mp_value *arg, mp_value **out)
{
    int64_t x = mp_value_get_int(arg);
    if (x == 3)
        return mp_task_fail(MP_ERANGE, "ValueError: bad input %lld", (long long)x);
    *out = mp_value_int(x);
    return 0;
}

/* A structured result: strings, floats, nested lists and maps travel as they are. */
int task_shape(const mp_value *arg, mp_value **out)
{
    int64_t x = mp_value_get_int(arg);
    char s[32];
    snprintf(s, sizeof s, "item-%lld", (long long)x);
    *out = mp_value_pack("{s:s s:f s:[i i] s:n}", "name", s, "half", x / 2.0, "pair", (int)x,
                         (int)-x, "none");
    return 0;
}

static int g_init_value;
int init_set(const mp_value *args)
{
    g_init_value = (int)mp_value_get_int(args);
    return 0;
}

int init_fail(const mp_value *args)
{
    (void)args;
    return mp_task_fail(-EPERM, "initializer refused");
}

int task_init_value(const mp_value *arg, mp_value **out)
{
    *out = mp_value_int(g_init_value + mp_value_get_int(arg));
    return 0;
}

/* Sleeps arg milliseconds, returns arg. */
int task_sleep_ms(const mp_value *arg, mp_value **out)
{
    int64_t ms = mp_value_get_int(arg);
    usleep((useconds_t)ms * 1000);
    *out = mp_value_int(ms);
    return 0;
}

/* Dies (SIGKILL) on item 10, else returns its argument after a moment. */
int task_die_on_10(const mp_value *arg, mp_value **out)
{
    int64_t x = mp_value_get_int(arg);
    const char *how = getenv("MPT_DIE");
    if (x == 10 && how && strcmp(how, "exit") == 0)
        _exit(3);
    if (x == 10 && how && strcmp(how, "stop") == 0)
        raise(SIGSTOP);
    if (x == 10)
        raise(SIGKILL);
    usleep(2000);
    *out = mp_value_int(x);
    return 0;
}

/* arg [x, log path, k]: appends "x\n" to the log (every run of a task leaves a line),
 * dies (SIGKILL) when x == k, else returns x at once (a quick task: its rank gets
 * coalesced batches). */
int task_log_die(const mp_value *arg, mp_value **out)
{
    int x = 0, k = 0;
    const char *path = NULL;
    int r = mp_value_unpack(arg, "[i s i]", &x, &path, &k);
    if (r < 0)
        return r;
    int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
    if (fd < 0)
        return mp_task_fail(-errno, "cannot open the log");
    char line[32];
    int n = snprintf(line, sizeof line, "%d\n", x);
    ssize_t w = write(fd, line, (size_t)n);
    close(fd);
    if (w != n)
        return mp_task_fail(-EIO, "cannot write the log");
    if (x == k)
        raise(SIGKILL);
    *out = mp_value_int(x);
    return 0;
}

int task_pid(const mp_value *arg, mp_value **out)
{
    (void)arg;
    *out = mp_value_int(getpid());
    return 0;
}

/* The network namespace of the process running the task (a "host" of netns.sh). */
int task_netns(const mp_value *arg, mp_value **out)
{
    (void)arg;
    char ns[64] = "";
    ssize_t k = readlink("/proc/self/ns/net", ns, sizeof ns - 1);
    ns[k > 0 ? k : 0] = '\0';
    *out = mp_value_str(ns);
    return 0;
}

int array_copy(const void *in, void *out, void *ctx)
{
    (void)ctx;
    memcpy(out, in, sizeof(int));
    return 0;
}

/* ---- helpers ------------------------------------------------------------------------- */

/* Under mpiexec -n 4: 0 (every rank: 3); started alone: spawn 3. */
static int g_spawn;
static int g_expect = 3; /* workers of a default pool; 0: any */
static mp_pool *mpi_pool(int n)
{
    mp_pool_opts o = {.processes = n ? n : g_spawn ? 3 : 0, .backend = mp_mpi_pool_backend()};
    return mp_pool_new(&o);
}

static mp_pool *local_pool(int n)
{
    mp_pool_opts o = {.processes = n};
    return mp_pool_new(&o);
}

static mp_value *range(int n)
{
    mp_value *l = mp_value_list();
    for (int i = 0; i < n; i++)
        mp_value_list_append(l, mp_value_int(i));
    return l;
}

static void end_pool(mp_pool *p)
{
    CHECK_OK(mp_pool_close(p));
    CHECK_OK(mp_pool_join(p, 60));
    mp_pool_free(p);
}

/* Drain an iterator into a list. */
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

static int cmp_int(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* A list of ints, sorted (imap_unordered's results). */
static mp_value *sorted(mp_value *l)
{
    size_t n = mp_value_len(l);
    int64_t *a = calloc(n ? n : 1, sizeof *a);
    for (size_t i = 0; i < n; i++)
        a[i] = mp_value_get_int(mp_value_list_get(l, i));
    qsort(a, n, sizeof *a, cmp_int);
    mp_value *s = mp_value_list();
    for (size_t i = 0; i < n; i++)
        mp_value_list_append(s, mp_value_int(a[i]));
    free(a);
    mp_value_free(l);
    return s;
}

static atomic_int g_callbacks;
static void on_result(const mp_value *v, void *ud)
{
    (void)v;
    (void)ud;
    atomic_fetch_add(&g_callbacks, 1);
}

/* Every call of the API on pool p, its results in one list. */
static mp_value *every_call(mp_pool *p)
{
    mp_value *all = mp_value_list(), *items = range(1000), *v = NULL;
    mp_value *x = mp_value_int(12);
    CHECK_OK(mp_pool_apply(p, task_square, x, &v));
    mp_value_list_append(all, v);
    mp_pool_call_opts co = {.callback = on_result};
    mp_pool_result *ar = mp_pool_apply_async(p, task_shape, x, &co);
    const mp_value *got = NULL;
    CHECK(ar != NULL);
    CHECK_OK(mp_pool_result_get(ar, 60, &got));
    mp_value_list_append(all, mp_value_copy(got));
    mp_pool_result_free(ar);
    size_t chunks[] = {0, 1, 7, 1000};
    for (size_t k = 0; k < MP__ARRAY_LEN(chunks); k++) {
        v = NULL;
        CHECK_OK(mp_pool_map(p, task_square, items, chunks[k], &v));
        mp_value_list_append(all, v);
    }
    mp_pool_result *mr = mp_pool_map_async(p, task_shape, items, &co);
    CHECK(mr != NULL);
    CHECK_OK(mp_pool_result_get(mr, 60, &got));
    mp_value_list_append(all, mp_value_copy(got));
    mp_pool_result_free(mr);
    mp_value *pairs = mp_value_list();
    for (int i = 0; i < 300; i++)
        mp_value_list_append(pairs, mp_value_pack("[i i]", i, 1000 - i));
    v = NULL;
    CHECK_OK(mp_pool_starmap(p, task_add, pairs, 0, &v));
    mp_value_list_append(all, v);
    mp_pool_call_opts so = {.chunksize = 13, .callback = on_result};
    mp_pool_result *sr = mp_pool_starmap_async(p, task_add, pairs, &so);
    CHECK_OK(mp_pool_result_get(sr, 60, &got));
    mp_value_list_append(all, mp_value_copy(got));
    mp_pool_result_free(sr);
    mp_value_list_append(all, drain(mp_pool_imap(p, task_square, items, 0)));
    mp_value_list_append(all, drain(mp_pool_imap(p, task_square, items, 25)));
    mp_value_list_append(all, sorted(drain(mp_pool_imap_unordered(p, task_square, items, 3))));
    mp_value_free(pairs);
    mp_value_free(items);
    mp_value_free(x);
    return all;
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_every_call_equals_local(void)
{
    atomic_store(&g_callbacks, 0);
    mp_pool *lp = local_pool(3);
    CHECK(lp != NULL);
    mp_value *want = every_call(lp);
    end_pool(lp);
    CHECK_INT(atomic_load(&g_callbacks), 3);
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    if (!p)
        return;
    if (g_expect)
        CHECK_INT(mp_pool_processes(p), g_expect); /* mpiexec -n 4: ranks 1-3 */
    mp_value *got = every_call(p);
    end_pool(p);
    CHECK_INT(atomic_load(&g_callbacks), 6);
    CHECK(mp_value_equal(got, want));
    if (!mp_value_equal(got, want))
        fprintf(stderr, "MPI pool: %.300s\nlocal:    %.300s\n", mpt_repr(got), mpt_repr(want));
    mp_value_free(got);
    mp_value_free(want);
}

static void test_task_error_names_rank(void)
{
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    mp_value *items = range(10), *v = NULL;
    CHECK_ERR(mp_pool_map(p, task_fail_on_3, items, 2, &v), MP_ERANGE);
    char host[256] = "";
    gethostname(host, sizeof host - 1);
    const char *m = mp_last_error();
    if (getenv("MPT_VERBOSE"))
        fprintf(stderr, "message: %s\n", m);
    CHECK_CONTAINS(m, "ValueError: bad input 3");
    CHECK_CONTAINS(m, "MPIPoolWorker-");
    CHECK_CONTAINS(m, "(rank ");
    CHECK_CONTAINS(m, host);
    CHECK_CONTAINS(m, "task_fail_on_3");
    /* the other items completed: map_async gives each */
    mp_pool_call_opts co = {.chunksize = 2};
    mp_pool_result *r = mp_pool_map_async(p, task_fail_on_3, items, &co);
    CHECK_OK(mp_pool_result_wait(r, 60));
    CHECK_INT(mp_pool_result_successful(r), 0);
    for (size_t i = 0; i < 10; i++) {
        const mp_value *it = NULL;
        if (i == 3) {
            CHECK_ERR(mp_pool_result_item(r, i, &it), MP_ERANGE);
        } else {
            CHECK_OK(mp_pool_result_item(r, i, &it));
            CHECK_INT(mp_value_get_int(it), (int64_t)i);
        }
    }
    mp_pool_result_free(r);
    /* the same through imap: the failing item's code, then the rest */
    mp_pool_iter *it = mp_pool_imap(p, task_fail_on_3, items, 1);
    int codes[10];
    for (int i = 0; i < 10; i++) {
        v = NULL;
        codes[i] = mp_pool_iter_next(it, 60, &v);
        mp_value_free(v);
    }
    mp_pool_iter_free(it);
    CHECK_INT(codes[3], MP_ERANGE);
    CHECK_INT(codes[9], 1);
    mp_value_free(items);
    end_pool(p);
}

static void test_initializer(void)
{
    mp_value *ia = mp_value_int(1000);
    mp_pool_opts o = {.backend = mp_mpi_pool_backend(), .initializer = init_set, .initargs = ia,
                      .processes = 3};
    mp_pool *p = mp_pool_new(&o);
    CHECK(p != NULL);
    mp_value *items = range(6), *v = NULL;
    CHECK_OK(mp_pool_map(p, task_init_value, items, 1, &v));
    CHECK_STR(mpt_repr(v), "[1000, 1001, 1002, 1003, 1004, 1005]");
    mp_value_free(v);
    end_pool(p);
    /* a failing initializer fails the creation with its code and message */
    mp_pool_opts f = {.backend = mp_mpi_pool_backend(), .initializer = init_fail,
                      .processes = 3};
    CHECK_NULL_ERR(mp_pool_new(&f), -EPERM);
    CHECK_CONTAINS(mp_last_error(), "initializer refused");
    CHECK_CONTAINS(mp_last_error(), "MPIPoolWorker-");
    /* and the ranks serve the next pool */
    p = mpi_pool(2);
    CHECK(p != NULL);
    CHECK_INT(mp_pool_processes(p), 2);
    v = NULL;
    CHECK_OK(mp_pool_map(p, task_square, items, 0, &v));
    CHECK_STR(mpt_repr(v), "[0, 1, 4, 9, 16, 25]");
    mp_value_free(v);
    end_pool(p);
    mp_value_free(items);
    mp_value_free(ia);
}

static void test_terminate_then_new_pool(void)
{
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    mp_value *ms = mp_value_list();
    for (int i = 0; i < 30; i++)
        mp_value_list_append(ms, mp_value_int(20));
    mp_pool_call_opts co = {.chunksize = 1};
    mp_pool_result *r = mp_pool_map_async(p, task_sleep_ms, ms, &co);
    double t0 = mpt_now();
    CHECK_OK(mp_pool_terminate(p));
    CHECK_OK(mp_pool_join(p, 30));
    CHECK(mpt_now() - t0 < 5);
    CHECK_OK(mp_pool_result_wait(r, 10));
    const mp_value *got = NULL;
    int code = mp_pool_result_get(r, 0, &got);
    CHECK(code == 0 || code == MP_ECLOSED); /* the work may have finished first */
    mp_pool_result_free(r);
    mp_pool_free(p);
    /* the ranks dropped that pool's work and serve a new one */
    p = mpi_pool(0);
    CHECK(p != NULL);
    mp_value *items = range(50), *v = NULL;
    CHECK_OK(mp_pool_map(p, task_square, items, 0, &v));
    CHECK_INT(mp_value_get_int(mp_value_list_get(v, 49)), 49 * 49);
    mp_value_free(v);
    /* close waits for the work; join before close is refused */
    CHECK_ERR(mp_pool_join(p, 1), MP_ESTATE);
    mp_pool_result *r2 = mp_pool_map_async(p, task_sleep_ms, ms, &co);
    CHECK_OK(mp_pool_close(p));
    CHECK_NULL_ERR(mp_pool_apply_async(p, task_square, items, NULL), MP_ESTATE);
    CHECK_OK(mp_pool_join(p, 60));
    CHECK_OK(mp_pool_result_get(r2, 0, &got));
    CHECK_INT(mp_value_len(got), 30);
    mp_pool_result_free(r2);
    mp_pool_free(p);
    mp_value_free(items);
    mp_value_free(ms);
}

/* Tasks submitted from several threads at once. */
static mp_pool *g_shared;
static void *submitter(void *arg)
{
    intptr_t base = (intptr_t)arg;
    int bad = 0;
    for (int i = 0; i < 200; i++) {
        mp_value *x = mp_value_int(base + i), *v = NULL;
        if (mp_pool_apply(g_shared, task_square, x, &v) < 0 ||
            mp_value_get_int(v) != (base + i) * (base + i))
            bad++;
        mp_value_free(v);
        mp_value_free(x);
    }
    return (void *)(intptr_t)bad;
}

static void test_threads_submit(void)
{
    g_shared = mpi_pool(0);
    CHECK(g_shared != NULL);
    pthread_t th[4];
    for (intptr_t t = 0; t < 4; t++)
        pthread_create(&th[t], NULL, submitter, (void *)(t * 1000));
    for (int t = 0; t < 4; t++) {
        void *bad = NULL;
        pthread_join(th[t], &bad);
        CHECK_INT((intptr_t)bad, 0);
    }
    end_pool(g_shared);
}

static void test_refused(void)
{
    mp_pool_opts o = {.backend = mp_mpi_pool_backend(), .maxtasksperchild = 2};
    CHECK_NULL_ERR(mp_pool_new(&o), MP_EUNSUPPORTED);
    CHECK_CONTAINS(mp_last_error(), "maxtasksperchild");
    mp_pool_opts t = {.backend = mp_mpi_pool_backend(), .task_time_limit = 1};
    CHECK_NULL_ERR(mp_pool_new(&t), MP_EUNSUPPORTED);
    mp_pool_opts big = {.backend = mp_mpi_pool_backend(), .processes = 4};
    CHECK_NULL_ERR(mp_pool_new(&big), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "3 worker ranks left");
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    /* one pool at a time on the world's ranks */
    CHECK_NULL_ERR(mpi_pool(0), MP_ESTATE);
    /* a handle cannot travel to a rank */
    mp_queue *q = mp_queue_new(NULL);
    mp_value *h = mp_value_handle(&mp_kind_queue, q);
    mp_value *out = NULL;
    CHECK_ERR(mp_pool_apply(p, task_square, h, &out), MP_EUNSUPPORTED);
    CHECK_CONTAINS(mp_last_error(), "cannot travel to MPI workers");
    mp_value_free(h);
    mp_queue_free(q);
    /* map_array's elements travel (test_mpi_pool_array.c), a context pointer cannot */
    static int ctx = 1;
    int in[4] = {1, 2, 3, 4}, res[4];
    CHECK_ERR(mp_pool_map_array(p, array_copy, in, sizeof(int), res, sizeof(int), 4, &ctx, 0),
              MP_EUNSUPPORTED);
    CHECK_CONTAINS(mp_last_error(), "a context pointer cannot reach MPI workers");
    end_pool(p);
}

static void test_many_pools_no_leak(void)
{
    for (int k = 0; k < 5; k++) {
        mp_pool *p = mpi_pool(0);
        CHECK(p != NULL);
        mp_value *v = NULL, *x = mp_value_int(k);
        CHECK_OK(mp_pool_apply(p, task_square, x, &v));
        CHECK_INT(mp_value_get_int(v), k * k);
        mp_value_free(v);
        mp_value_free(x);
        if (k % 2)
            end_pool(p);
        else
            mp_pool_free(p); /* free without close: terminated */
    }
}

/* A rank SIGKILLed mid-map (run by test_mpi_pool_modes.sh: under `mpiexec
 * --enable-recovery` the job goes on; under a plain mpiexec Open MPI ends it soon after,
 * so the script checks the report printed before). */
static void test_rank_killed(void)
{
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    int n_workers = mp_pool_processes(p);
    mp_value *items = range(60);
    mp_pool_call_opts co = {.chunksize = 1};
    double t0 = mpt_now();
    mp_pool_result *r = mp_pool_map_async(p, task_die_on_10, items, &co);
    CHECK_OK(mp_pool_result_wait(r, 30));
    printf("map returned after %.2f s\n", mpt_now() - t0);
    const mp_value *got = NULL;
    int code = mp_pool_result_get(r, 0, &got);
    printf("map: %s: %s\n", mp_errname(code), mp_last_error());
    fflush(stdout);
    CHECK_INT(code, MP_EWORKERDIED);
    CHECK_CONTAINS(mp_last_error(), "MPI rank");
    CHECK_CONTAINS(mp_last_error(), "died");
    CHECK_CONTAINS(mp_last_error(), "task_die_on_10");
    int ok = 0, died = 0;
    for (size_t i = 0; i < 60; i++) {
        const mp_value *v = NULL;
        int c = mp_pool_result_item(r, i, &v);
        if (c == 0 && mp_value_get_int(v) == (int64_t)i)
            ok++;
        else if (c == MP_EWORKERDIED)
            died++;
    }
    if (g_spawn) {
        /* Open MPI ends the other ranks of a spawned job when one dies: every task not
         * done by then fails with MP_EWORKERDIED, none hangs */
        CHECK(died >= 1);
        CHECK_INT(ok + died, 60);
        mp_pool_result_free(r);
        mp_pool_free(p);
        mp_value_free(items);
        p = mpi_pool(2); /* a new pool spawns new ranks */
        CHECK(p != NULL);
        mp_value *v = NULL, *few = range(20);
        CHECK_OK(mp_pool_map(p, task_square, few, 1, &v));
        CHECK_INT(mp_value_get_int(mp_value_list_get(v, 19)), 361);
        mp_value_free(v);
        mp_value_free(few);
        end_pool(p);
        return;
    }
    CHECK_INT(died, 1); /* chunksize 1: the task that killed its rank, only */
    CHECK_INT(ok, 59);
    mp_pool_result_free(r);
    /* the pool goes on with the ranks left */
    mp_value *v = NULL, *few = range(20);
    CHECK_OK(mp_pool_map(p, task_square, few, 1, &v));
    CHECK_INT(mp_value_get_int(mp_value_list_get(v, 19)), 361);
    mp_value_free(v);
    end_pool(p);
    /* a new pool leaves the dead rank out */
    int before = n_workers;
    p = mpi_pool(0);
    CHECK(p != NULL);
    CHECK_INT(mp_pool_processes(p), before - 1);
    v = NULL;
    CHECK_OK(mp_pool_map(p, task_square, few, 0, &v));
    CHECK_INT(mp_value_get_int(mp_value_list_get(v, 3)), 9);
    mp_value_free(v);
    end_pool(p);
    mp_value_free(few);
    mp_value_free(items);
}

/* A rank killed in a coalesced batch (quick tasks: the rank holds their results and
 * sends them together; run by test_mpi_pool_modes.sh under mpiexec --enable-recovery):
 * the tasks of that batch not answered yet fail with MP_EWORKERDIED, at most a batch
 * (64), and only those: every other item has its value; and no task runs twice (the
 * held ones are not sent to another rank), as the log of every run shows. */
static void test_batch_killed(void)
{
    enum { N = 4000, K = 3000 };
    char path[] = "/tmp/mpt_batch_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    close(fd);
    mp_value *items = mp_value_list();
    for (int i = 0; i < N; i++)
        mp_value_list_append(items, mp_value_pack("[i s i]", i, path, K));
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    mp_pool_call_opts co = {.chunksize = 1};
    mp_pool_result *r = mp_pool_map_async(p, task_log_die, items, &co);
    CHECK_OK(mp_pool_result_wait(r, 30));
    const mp_value *got = NULL;
    int code = mp_pool_result_get(r, 0, &got);
    printf("map: %s: %s\n", mp_errname(code), mp_last_error());
    CHECK_INT(code, MP_EWORKERDIED);
    CHECK_CONTAINS(mp_last_error(), "MPI rank");
    CHECK_CONTAINS(mp_last_error(), "died");
    static int runs[N];
    memset(runs, 0, sizeof runs);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL);
    int x, twice = 0;
    while (f && fscanf(f, "%d", &x) == 1)
        if (x >= 0 && x < N)
            twice += runs[x]++ > 0;
    if (f)
        fclose(f);
    unlink(path);
    int ok = 0, died = 0, wrong = 0;
    for (int i = 0; i < N; i++) {
        const mp_value *v = NULL;
        int c = mp_pool_result_item(r, (size_t)i, &v);
        if (c == 0 && mp_value_get_int(v) == i && runs[i] == 1)
            ok++;
        else if (c == MP_EWORKERDIED)
            died++;
        else
            wrong++;
    }
    const mp_value *v = NULL;
    printf("batch_killed: %d ok, %d failed with MP_EWORKERDIED, %d run twice\n", ok, died,
           twice);
    fflush(stdout);
    CHECK_INT(mp_pool_result_item(r, K, &v), MP_EWORKERDIED);
    CHECK_INT(twice, 0);
    CHECK_INT(wrong, 0);
    CHECK(died >= 1 && died <= 64);
    CHECK_INT(ok + died, N);
    mp_pool_result_free(r);
    /* the pool goes on with the ranks left */
    mp_value *few = range(20), *sq = NULL;
    CHECK_OK(mp_pool_map(p, task_square, few, 1, &sq));
    CHECK_INT(mp_value_get_int(mp_value_list_get(sq, 19)), 361);
    mp_value_free(sq);
    mp_value_free(few);
    end_pool(p);
    mp_value_free(items);
}

/* A rank that stops answering (SIGSTOP: its pid lives, its heartbeats stop) is declared
 * lost after heartbeat_limit: its task fails, the others have their values, and the
 * master kills it (same host: a stopped process would keep the job alive). Run by
 * test_mpi_pool_modes.sh under --enable-recovery (the job then ends at once with status
 * 0) and under a plain mpiexec (Open MPI ends the job a second after the kill: the
 * script checks what was printed before). */
static void test_rank_silent(void)
{
    mp_pool_backend *be = mp_mpi_pool_backend_new(&(mp_mpi_pool_opts){.heartbeat_limit = 1});
    CHECK(be != NULL);
    mp_pool_opts o = {.backend = be};
    mp_pool *p = mp_pool_new(&o);
    CHECK(p != NULL);
    mp_value *items = range(30);
    mp_pool_call_opts co = {.chunksize = 1};
    double t0 = mpt_now();
    mp_pool_result *r = mp_pool_map_async(p, task_die_on_10, items, &co);
    CHECK_OK(mp_pool_result_wait(r, 30));
    double took = mpt_now() - t0;
    const mp_value *got = NULL;
    int code = mp_pool_result_get(r, 0, &got);
    int ok = 0, died = 0;
    for (size_t i = 0; i < 30; i++) {
        const mp_value *v = NULL;
        int c = mp_pool_result_item(r, i, &v);
        ok += c == 0 && mp_value_get_int(v) == (int64_t)i;
        died += c == MP_EWORKERDIED;
    }
    printf("map: %s after %.2f s: %s\nsilent: %d ok, %d failed with MP_EWORKERDIED\n",
           mp_errname(code), took, mp_last_error(), ok, died);
    fflush(stdout);
    CHECK_INT(code, MP_EWORKERDIED);
    CHECK_CONTAINS(mp_last_error(), "stopped answering");
    CHECK(took >= 1 && took < 10);
    CHECK_INT(died, 1);
    CHECK_INT(ok, 29);
    mp_pool_result_free(r);
    end_pool(p);
    mp_mpi_pool_backend_free(be);
    mp_value_free(items);
}

/* A rank killed while no pool runs (run by test_mpi_pool_modes.sh under --enable-recovery):
 * nobody watches it then; the program's end finds it silent for the last pool's
 * heartbeat limit (1 s), reports it lost and ends without MPI_Finalize. With MPT_DIE=stop
 * the rank is stopped (SIGSTOP) instead: the end kills it (same host), or the stopped
 * process would keep the job alive. */
static void test_rank_killed_idle(void)
{
    mp_pool_backend *be = mp_mpi_pool_backend_new(&(mp_mpi_pool_opts){.heartbeat_limit = 1});
    mp_pool_opts o = {.processes = 1, .backend = be};
    mp_pool *p = mp_pool_new(&o);
    CHECK(p != NULL);
    mp_value *x = mp_value_int(0), *v = NULL;
    CHECK_OK(mp_pool_apply(p, task_pid, x, &v));
    int pid = v ? (int)mp_value_get_int(v) : 0;
    end_pool(p);
    mp_mpi_pool_backend_free(be);
    const char *how = getenv("MPT_DIE");
    CHECK(pid > 0 && kill(pid, how && strcmp(how, "stop") == 0 ? SIGSTOP : SIGKILL) == 0);
    mp_value_free(v);
    mp_value_free(x);
}

/* Ranks on other "hosts" (test_netns_pool.sh: one rank per network namespace, TCP
 * between them): every call equals the local pool's, and the tasks ran in the other
 * namespaces. */
static void test_hosts(void)
{
    mp_pool *p = mpi_pool(0);
    CHECK(p != NULL);
    int n = mp_pool_processes(p);
    mp_value *items = range(4 * n), *v = NULL;
    CHECK_OK(mp_pool_map(p, task_netns, items, 1, &v));
    mp_value *mine = NULL;
    task_netns(NULL, &mine);
    int other = 0;
    for (size_t i = 0; i < mp_value_len(v); i++)
        other += !mp_value_equal(mp_value_list_get(v, i), mine);
    printf("tasks run outside the master's namespace: %d of %zu\n", other, mp_value_len(v));
    CHECK_INT(other, 4 * n);
    mp_value_free(v);
    mp_value_free(mine);
    mp_value_free(items);
    end_pool(p);
}

/* MPI's profiling interface: this program's MPI_Send is the library's. While
 * g_slow_send is set, the sending thread (on the master: the pool's thread greeting its
 * ranks) stays 300 ms after each send, so each rank's answer to its HELLO is there before
 * the library goes on. Not a synchronisation: it only widens the window of a race. */
static atomic_int g_slow_send;

int MPI_Send(const void *buf, int count, MPI_Datatype type, int dest, int tag, MPI_Comm comm)
{
    int rc = PMPI_Send(buf, count, type, dest, tag, comm);
    if (atomic_load(&g_slow_send)) {
        struct timespec ts = {0, 300000000};
        nanosleep(&ts, NULL);
    }
    return rc;
}

/* A rank that answers its HELLO at once: the pool starts (the relay dropped the answers
 * of a link not set up yet, and the pool's creation waited for ever). */
static void test_quick_answer(void)
{
    atomic_store(&g_slow_send, 1);
    mp_pool *p = mpi_pool(0);
    atomic_store(&g_slow_send, 0);
    CHECK(p != NULL);
    if (!p)
        return;
    mp_value *x = mp_value_int(7), *v = NULL;
    CHECK_OK(mp_pool_apply(p, task_square, x, &v));
    CHECK_INT(mp_value_get_int(v), 49);
    mp_value_free(v);
    mp_value_free(x);
    end_pool(p);
}

/* The end of a run in which a rank died (under mpiexec --enable-recovery): the library
 * does not call MPI_Finalize then (it would wait for the dead rank: now and then on one
 * host, always across hosts); mp_mpi_finalize returns 0 and the program ends, and
 * test_mpi_pool_modes.sh checks the job ended within a bound. */
static int done_after_death(void)
{
    int rc = mpt_done();
    printf("finalizing\n");
    fflush(stdout);
    printf("mp_mpi_finalize: %d\n", mp_mpi_finalize());
    return rc;
}

/* A first pool opens MPI's connections to the ranks (fds kept by MPI), and the library
 * keeps the pidfds of the ranks on this host (the end kills a stopped one): not leaks of
 * the tests that follow. */
static void warm(void)
{
    mp_pool *p = mpi_pool(0);
    mp_value *x = mp_value_int(1), *v = NULL;
    CHECK_OK(mp_pool_apply(p, task_square, x, &v));
    mp_value_free(v);
    mp_value_free(x);
    end_pool(p);
}

int main(int argc, char **argv)
{
    int r = mp_mpi_pool_serve_if_worker(&argc, &argv);
    if (r < 0) {
        fprintf(stderr, "serve_if_worker: %s\n", mp_last_error());
        return 1;
    }
    /* only rank 0 gets here */
    if (argc > 1 && strcmp(argv[1], "spawn") == 0) {
        /* started alone: the first pool spawns 3 ranks (MPI_Comm_spawn), kept for the
         * next pools; its MPI connections stay open (not a leak of ours) */
        g_spawn = 1;
        CHECK_INT(mp_mpi_pool_launched(), 0);
        for (int k = 0; k < (argc > 2 && strcmp(argv[2], "loop") == 0 ? 20 : 1); k++)
            end_pool(mpi_pool(0));
        RUN(test_every_call_equals_local);
        RUN(test_task_error_names_rank);
        RUN(test_initializer);
        RUN(test_terminate_then_new_pool);
        if (argc > 2 && strcmp(argv[2], "rank_killed") == 0) {
            /* no fd check: a new spawned group has new MPI connections */
            mpt_current = "test_rank_killed";
            test_rank_killed();
        }
        CHECK_OK(mp_mpi_finalize());
        return mpt_done();
    }
    if (argc > 1 && strcmp(argv[1], "hosts") == 0) {
        warm();
        RUN(test_hosts);
        g_expect = 0; /* as many ranks as mpiexec gave */
        RUN(test_every_call_equals_local);
        RUN(test_task_error_names_rank);
        CHECK_OK(mp_mpi_finalize());
        return mpt_done();
    }
    if (argc > 1 && strcmp(argv[1], "quick_answer") == 0) {
        warm();
        RUN(test_quick_answer);
        CHECK_OK(mp_mpi_finalize());
        return mpt_done();
    }
    if (argc > 1 && strcmp(argv[1], "rank_silent") == 0) {
        warm();
        RUN(test_rank_silent);
        return done_after_death();
    }
    if (argc > 1 && strcmp(argv[1], "rank_killed_hosts") == 0) {
        g_expect = 0; /* mpiexec -n 3 across namespaces: 2 workers */
        mpt_current = "test_rank_killed"; /* no fd check: MPI closes its TCP link to the dead */
        test_rank_killed();
        printf("%s test_rank_killed\n", mpt_failures ? "FAIL" : "ok  ");
        fflush(stdout);
        CHECK_OK(mp_mpi_finalize());
        return mpt_done();
    }
    if (argc > 1 && strcmp(argv[1], "rank_killed") == 0) {
        warm();
        RUN(test_rank_killed);
        return done_after_death();
    }
    if (argc > 1 && strcmp(argv[1], "batch_killed") == 0) {
        warm();
        RUN(test_batch_killed);
        return done_after_death();
    }
    if (argc > 1 && strcmp(argv[1], "rank_killed_idle") == 0) {
        warm();
        RUN(test_rank_killed_idle);
        return done_after_death();
    }
    CHECK_INT(mp_mpi_pool_launched(), 1);
    warm();
    RUN_IF(argc, argv, test_every_call_equals_local);
    RUN_IF(argc, argv, test_task_error_names_rank);
    RUN_IF(argc, argv, test_initializer);
    RUN_IF(argc, argv, test_terminate_then_new_pool);
    RUN_IF(argc, argv, test_threads_submit);
    RUN_IF(argc, argv, test_refused);
    RUN_IF(argc, argv, test_many_pools_no_leak);
    CHECK_OK(mp_mpi_finalize());
    return mpt_done();
}
