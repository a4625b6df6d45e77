/* The Pool on MPI: the backend vtable (mp_mpi_pool_backend), the ranks a pool runs on
 * and mp_mpi_pool_serve_if_worker.
 *
 * DESIGN: two ways to have ranks. Under `mpiexec -n N` every rank calls
 * mp_mpi_pool_serve_if_worker, which duplicates MPI_COMM_WORLD (collective) into the
 * pools' communicator; ranks 1..N-1 serve (pool_serve.c) and rank 0 returns. One pool at
 * a time uses those ranks (a second one, while the first lives, fails with MP_ESTATE);
 * a rank that died is left out of later pools. Rank 0 tells the ranks to exit (EXIT) in
 * mp_mpi_finalize (its hook) or at exit. A program started alone (a world of one) spawns
 * its ranks per pool (MPI_Comm_spawn of /proc/self/exe, which enters main and serves
 * from mp_mpi_pool_serve_if_worker on the parent intercommunicator) and ends them when
 * the pool is freed (EXIT, then MPI_Comm_disconnect; MPI_Comm_free when one died).
 * State: g (below) is touched by the thread that creates and frees pools and by exit;
 * a pool's state by mp_pool_new / the result thread / mp_pool_free in turn. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "mpi/mpi_internal.h"
#include "mpi/pool_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static struct {
    bool ready;     /* serve_if_worker ran on rank 0 (or a lone program) */
    bool launched;  /* world size > 1 */
    MPI_Comm comm;  /* dup of MPI_COMM_WORLD (launched) */
    int size;
    bool busy;      /* a pool holds the world's ranks */
    bool *dead;     /* ranks that died in a pool */
    unsigned gen;
    bool exited;    /* EXIT was sent */
} g = {.comm = MPI_COMM_NULL};

typedef struct mpi_backend {
    mp_pool_backend vt;
    mp_mpi_pool_opts o;
    bool owned_info;
} mpi_backend;

typedef struct mstate {
    mp__relay *relay;
    MPI_Comm comm;
    bool spawned;
    int n;
} mstate;

void mp__mpi_host_identity(char *buf, size_t cap)
{
    char boot[64] = "", ns[64] = "";
    int fd = open("/proc/sys/kernel/random/boot_id", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t k = read(fd, boot, sizeof boot - 1);
        boot[k > 0 ? k : 0] = '\0';
        boot[strcspn(boot, "\n")] = '\0';
        close(fd);
    }
    ssize_t k = readlink("/proc/self/ns/pid", ns, sizeof ns - 1);
    ns[k > 0 ? k : 0] = '\0';
    snprintf(buf, cap, "%s %s", boot, ns);
}

/* ---- the end of the ranks (rank 0) -------------------------------------------------- */

static void send_exit(void)
{
    if (!g.launched || g.exited || g.comm == MPI_COMM_NULL)
        return;
    int down = 0;
    MPI_Finalized(&down);
    if (down)
        return;
    g.exited = true;
    for (int r = 1; r < g.size; r++)
        if (!g.dead || !g.dead[r])
            MPI_Send(NULL, 0, MPI_BYTE, r, MP__MPI_TAG(T_EXIT, 0), g.comm);
}

static void at_exit(void)
{
    send_exit();
    mp_mpi_finalize();
}

/* ---- start-up ---------------------------------------------------------------------- */

int mp_mpi_pool_serve_if_worker(int *argc, char ***argv)
{
    int r = mp_mpi_init(argc, argv);
    if (r < 0)
        return r;
    MPI_Comm parent = MPI_COMM_NULL;
    MPI_Comm_get_parent(&parent);
    if (parent != MPI_COMM_NULL) {
        /* spawned by a pool: serve it, then leave */
        mp__mpi_serve(parent, 0);
        MPI_Comm_disconnect(&parent);
        mp_mpi_finalize();
        exit(0);
    }
    if (g.ready)
        return 0;
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) {
        int rc = MPI_Comm_dup(MPI_COMM_WORLD, &g.comm);
        if (rc != MPI_SUCCESS)
            return mp__mpi_error(rc, "MPI_Comm_dup for the pool's ranks");
        MPI_Comm_set_errhandler(g.comm, MPI_ERRORS_RETURN);
        if (rank > 0) {
            mp__mpi_serve(g.comm, 0);
            MPI_Comm_free(&g.comm);
            mp_mpi_finalize();
            exit(0);
        }
        g.launched = true;
        g.size = size;
        g.dead = calloc((size_t)size, sizeof *g.dead);
    }
    g.ready = true;
    mp__mpi_finalize_hook = send_exit;
    atexit(at_exit);
    return 0;
}

int mp_mpi_pool_launched(void)
{
    if (!g.ready)
        return mp__error(MP_ESTATE, "mp_mpi_pool_launched: call mp_mpi_pool_serve_if_worker "
                                    "first");
    return g.launched;
}

/* ---- the vtable ---------------------------------------------------------------------- */

static int open_world(mstate *s, const mp_pool_opts *o, const mpi_backend *b)
{
    if (g.busy)
        return mp__error(MP_ESTATE, "MPI pool: the ranks of this mpiexec serve another pool "
                                    "(one pool at a time: free it first)");
    int *ranks = malloc((size_t)g.size * sizeof *ranks), n = 0;
    if (!ranks)
        return -ENOMEM;
    for (int r = 1; r < g.size; r++)
        if (!g.dead[r])
            ranks[n++] = r;
    if (o->processes > n || n == 0) {
        free(ranks);
        return mp__error(MP_EINVAL, "MPI pool: %d workers asked, this mpiexec has %d worker "
                                    "rank%s left (mpiexec -n N gives N-1)",
                         o->processes, n, n == 1 ? "" : "s");
    }
    if (o->processes > 0)
        n = o->processes;
    s->comm = g.comm;
    s->n = n;
    s->relay = mp__relay_new(g.comm, ranks, n, ++g.gen, b->o.heartbeat_limit);
    free(ranks);
    if (!s->relay)
        return mp_last_error_code();
    g.busy = true;
    return n;
}

static int spawn_ranks(mstate *s, const mp_pool_opts *o, const mpi_backend *b)
{
    int n = o->processes > 0 ? o->processes : mp_cpu_count();
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0)
        return mp__errno("MPI pool: finding this program to spawn it");
    exe[k] = '\0';
    int *errs = calloc((size_t)n, sizeof *errs);
    int *ranks = calloc((size_t)n, sizeof *ranks);
    if (!errs || !ranks) {
        free(errs);
        free(ranks);
        return -ENOMEM;
    }
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    int rc = MPI_Comm_spawn(exe, MPI_ARGV_NULL, n, b->o.spawn_info, 0, MPI_COMM_SELF, &s->comm,
                            errs);
    int bad = rc == MPI_SUCCESS ? MPI_SUCCESS : rc;
    for (int i = 0; rc == MPI_SUCCESS && i < n; i++)
        if (errs[i] != MPI_SUCCESS)
            bad = errs[i];
    free(errs);
    if (bad != MPI_SUCCESS) {
        free(ranks);
        return mp__mpi_error(bad, "MPI pool: MPI_Comm_spawn of the worker ranks");
    }
    MPI_Comm_set_errhandler(s->comm, MPI_ERRORS_RETURN);
    for (int i = 0; i < n; i++)
        ranks[i] = i;
    s->spawned = true;
    s->n = n;
    s->relay = mp__relay_new(s->comm, ranks, n, 1, b->o.heartbeat_limit);
    free(ranks);
    if (!s->relay) {
        int r = mp_last_error_code();
        MPI_Comm_free(&s->comm);
        return r;
    }
    return n;
}

static int be_open(const mp_pool_opts *o, void **state)
{
    const mpi_backend *b = (const mpi_backend *)o->backend;
    if (!g.ready) {
        int up = 0;
        MPI_Initialized(&up);
        int size = 1;
        if (up)
            MPI_Comm_size(MPI_COMM_WORLD, &size);
        if (size > 1)
            return mp__error(MP_ESTATE, "MPI pool: call mp_mpi_pool_serve_if_worker(&argc, "
                                        "&argv) first thing in main, on every rank");
        int r = mp_mpi_pool_serve_if_worker(NULL, NULL);
        if (r < 0)
            return r;
    }
    if (!g.launched && b->o.no_spawn)
        return mp__error(MP_ESTATE, "MPI pool: started alone and spawning is refused "
                                    "(no_spawn): run it under mpiexec -n N");
    mstate *s = mp__calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    int n = g.launched ? open_world(s, o, b) : spawn_ranks(s, o, b);
    if (n < 0) {
        free(s);
        return n;
    }
    *state = s;
    return n;
}

static int be_start(void *state, size_t i, const mp_value *boot, int *sock, int *sentinel)
{
    mstate *s = state;
    return mp__relay_start(s->relay, i, boot, sock, sentinel);
}

static void be_stop(void *state, size_t i) { mp__relay_stop(((mstate *)state)->relay, i); }

static void be_reap(void *state, size_t i, char *who, size_t wcap, char *how, size_t hcap)
{
    mp__relay_reap(((mstate *)state)->relay, i, who, wcap, how, hcap);
}

static void be_close(void *state)
{
    mstate *s = state;
    bool *dead = calloc((size_t)s->n, sizeof *dead);
    mp__relay_free(s->relay, dead);
    bool any_dead = false;
    for (int i = 0; i < s->n; i++)
        any_dead |= dead && dead[i];
    if (s->spawned) {
        for (int i = 0; i < s->n; i++)
            if (!dead || !dead[i])
                MPI_Send(NULL, 0, MPI_BYTE, i, MP__MPI_TAG(T_EXIT, 0), s->comm);
        if (any_dead)
            MPI_Comm_free(&s->comm);
        else
            MPI_Comm_disconnect(&s->comm);
    } else {
        /* world ranks: link i was rank i+1 of the ones left; mark the dead ones */
        int k = 0;
        for (int r = 1; r < g.size && k < s->n; r++) {
            if (g.dead[r])
                continue;
            if (dead && dead[k])
                g.dead[r] = true;
            k++;
        }
        g.busy = false;
    }
    free(dead);
    free(s);
}

static const mpi_backend default_backend = {
    .vt = {.name = "MPI",
           .prefix = "MPIPoolWorker",
           .open = be_open,
           .start = be_start,
           .stop = be_stop,
           .reap = be_reap,
           .close = be_close},
    .o = {.heartbeat_limit = 10.0, .spawn_info = MPI_INFO_NULL},
};

const mp_pool_backend *mp_mpi_pool_backend(void) { return &default_backend.vt; }

mp_pool_backend *mp_mpi_pool_backend_new(const mp_mpi_pool_opts *opts)
{
    mpi_backend *b = mp__calloc(1, sizeof *b);
    if (!b)
        return NULL;
    *b = default_backend;
    if (opts) {
        if (opts->heartbeat_limit != opts->heartbeat_limit) {
            free(b);
            mp__error(MP_EINVAL, "mp_mpi_pool_backend_new: heartbeat_limit is NaN");
            return NULL;
        }
        b->o = *opts;
        b->o.heartbeat_limit = opts->heartbeat_limit == 0 ? 10.0
                               : opts->heartbeat_limit < 0 ? 0 : opts->heartbeat_limit;
        if (opts->spawn_info != MPI_INFO_NULL && opts->spawn_info != 0) {
            MPI_Info_dup(opts->spawn_info, &b->o.spawn_info);
            b->owned_info = true;
        } else {
            b->o.spawn_info = MPI_INFO_NULL;
        }
    }
    return &b->vt;
}

void mp_mpi_pool_backend_free(mp_pool_backend *vt)
{
    mpi_backend *b = (mpi_backend *)vt;
    if (!b || vt == &default_backend.vt)
        return;
    if (b->owned_info)
        MPI_Info_free(&b->o.spawn_info);
    free(b);
}
