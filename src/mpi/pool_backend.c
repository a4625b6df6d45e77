/* The Pool on MPI: the backend vtable (mp_mpi_pool_backend), the ranks a pool runs on
 * and mp_mpi_pool_serve_if_worker.
 *
 * DESIGN: two groups of ranks. Under `mpiexec -n N` every rank calls
 * mp_mpi_pool_serve_if_worker, which duplicates MPI_COMM_WORLD (collective) into the
 * pools' communicator; ranks 1..N-1 serve (pool_serve.c) and rank 0 returns. A program
 * started alone (a world of one) spawns a group when its first pool needs one
 * (MPI_Comm_spawn of /proc/self/exe, which enters main and serves from
 * mp_mpi_pool_serve_if_worker on the parent intercommunicator) and keeps it for the
 * next pools: it is replaced only when a pool needs more ranks or one of it died (Open
 * MPI then ends them all). Spawning once per program, not per pool, is also what keeps
 * clear of Open MPI 4.1's singleton spawn, which here hangs or crashes now and then
 * when called again and again. One pool at a time uses the ranks (a second one, while
 * the first lives, fails with MP_ESTATE); a rank that died is left out of later pools.
 * Rank 0 tells the ranks to exit (EXIT, then takes every message up to their last) in
 * mp_mpi_finalize (its hook) or at exit; when a rank of the world was lost, MPI_Finalize
 * is not called (pool_end.c). The pidfds of ranks on this host that pools found are kept
 * until then (one per rank): a rank that does not answer the end and whose process lives
 * (stopped) is killed through it, or it would keep the job alive.
 * State: g under g_mu (pools may be created and freed from any thread; the second of
 * two at once gets MP_ESTATE); a pool's state by mp_pool_new / the result thread /
 * mp_pool_free in turn. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "mpi/mpi_internal.h"
#include "mpi/pool_internal.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* The ranks pools run on: the world's ranks 1..N-1 (mpiexec), or a group this program
 * spawned (kept between pools: one spawn per program, not one per pool). */
typedef struct group {
    MPI_Comm comm;
    int size;    /* ranks in the group (world: N; spawned: the remote group's size) */
    int first;   /* the first worker rank: 1 in the world, 0 in a spawned group */
    bool *dead;  /* [size]: ranks that died in a pool */
    int *pidfd;  /* [size] or NULL: pidfds of ranks on this host (-1: none), from pools */
    bool spawned;
} group;

static struct {
    bool ready;     /* serve_if_worker ran on rank 0 (or a lone program) */
    bool launched;  /* world size > 1 */
    group world;    /* launched */
    group sp;       /* started alone: the spawned group, if any */
    bool busy;      /* a pool holds the ranks */
    unsigned gen;
    double hb_limit; /* the last pool's heartbeat limit (0: none): silence at the end */
} g = {.hb_limit = 10.0, .world = {.comm = MPI_COMM_NULL}, .sp = {.comm = MPI_COMM_NULL}};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

typedef struct mpi_backend {
    mp_pool_backend vt;
    mp_mpi_pool_opts o;
    bool owned_info;
} mpi_backend;

typedef struct mstate {
    mp__relay *relay;
    group *grp;
    int *ranks; /* worker i's rank in grp */
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
    /* and its name: a rank that Open MPI places on another node is not the master's to
     * watch or kill, even on one kernel (namespaces, containers: the test "hosts") */
    char name[64] = "";
    gethostname(name, sizeof name - 1);
    snprintf(buf, cap, "%s %s %s", boot, ns, name);
}

int mp__mpi_testsome(MPI_Request *scratch, int *idx, size_t n, MPI_Request *first,
                     size_t stride)
{
    char *p = (char *)first;
    for (size_t i = 0; i < n; i++)
        memcpy(&scratch[i], p + i * stride, sizeof *scratch);
    int outc = 0;
    int rc = MPI_Testsome((int)n, scratch, &outc, idx, MPI_STATUSES_IGNORE);
    if (rc != MPI_SUCCESS)
        return -1;
    for (size_t i = 0; i < n; i++)
        memcpy(p + i * stride, &scratch[i], sizeof *scratch);
    return 0;
}

/* ---- the end of the ranks (rank 0) -------------------------------------------------- */

/* Keep the pidfds a pool's relay found (n workers, worker i on rank ranks[i]). */
static void keep_pidfds(group *gr, const int *ranks, const int *pidfds, int n)
{
    if (!gr->pidfd && (gr->pidfd = malloc((size_t)gr->size * sizeof *gr->pidfd)))
        for (int r = 0; r < gr->size; r++)
            gr->pidfd[r] = -1;
    for (int i = 0; i < n; i++) {
        if (pidfds[i] < 0)
            continue;
        if (gr->pidfd && gr->pidfd[ranks[i]] < 0)
            gr->pidfd[ranks[i]] = pidfds[i];
        else
            mp__close(pidfds[i]);
    }
}

static void drop_pidfds(group *gr)
{
    for (int r = 0; gr->pidfd && r < gr->size; r++)
        if (gr->pidfd[r] >= 0)
            mp__close(gr->pidfd[r]);
    free(gr->pidfd);
    gr->pidfd = NULL;
}

/* Rank r did not answer the end: when it is on this host and its process lives (stopped,
 * or hung), kill it (a stopped process keeps the job alive); what the line says of it. */
static const char *kill_lost(group *gr, int r)
{
    int fd = gr->pidfd ? gr->pidfd[r] : -1;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    if (fd < 0)
        return "";
    if (poll(&pf, 1, 0) > 0)
        return " (its process had ended)";
    return mp__pidfd_send_signal(fd, SIGKILL) == 0 ? "; it is on this host: killed" : "";
}

/* Tell the group's live ranks to exit (EXIT), and take every message they send up to
 * their last (their EXIT): a message left unreceived on a communicator that is let go
 * can break Open MPI's next spawn. A rank that neither answers nor sends anything (a
 * busy rank's heartbeats go on) for the heartbeat limit is lost: marked dead, with a
 * line on stderr. Then FIN to those that answered: finalize, or (fin_leave, called with
 * whether a rank is lost) leave without MPI_Finalize. */
static void exit_group(group *gr, bool (*fin_leave)(const group *))
{
    int want = 0;
    bool *waiting = calloc((size_t)gr->size, sizeof *waiting);
    double *heard = calloc((size_t)gr->size, sizeof *heard);
    if (!waiting || !heard) {
        free(waiting);
        free(heard);
        return;
    }
    for (int r = gr->first; r < gr->size; r++)
        if (!gr->dead[r]) {
            MPI_Send(NULL, 0, MPI_BYTE, r, MP__MPI_TAG(T_EXIT, 0), gr->comm);
            waiting[r] = true;
            heard[r] = mp__now();
            want++;
        }
    unsigned backoff = 0;
    while (want > 0) {
        int flag = 0;
        MPI_Message msg;
        MPI_Status st;
        if (MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, gr->comm, &flag, &msg, &st) != MPI_SUCCESS)
            break;
        if (!flag) {
            double now = mp__now();
            for (int r = gr->first; g.hb_limit > 0 && r < gr->size; r++)
                if (waiting[r] && now - heard[r] > g.hb_limit) {
                    fprintf(stderr, "multiproc: MPI pool: rank %d did not answer the end of "
                                    "the program (nothing heard for %g s): lost%s\n",
                            r, g.hb_limit, kill_lost(gr, r));
                    waiting[r] = false;
                    gr->dead[r] = true;
                    want--;
                }
            struct timespec ts = {0, backoff >= 10 ? 1000000L : 1000L << backoff};
            backoff += backoff < 10;
            nanosleep(&ts, NULL);
            continue;
        }
        backoff = 0;
        int count = 0, src = st.MPI_SOURCE;
        MPI_Get_count(&st, MPI_BYTE, &count);
        char *buf = malloc(count > 0 ? (size_t)count : 1);
        char dummy;
        MPI_Mrecv(buf ? buf : &dummy, buf ? count : 0, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
        free(buf);
        if (src < 0 || src >= gr->size || !waiting[src])
            continue;
        heard[src] = mp__now();
        if (MP__MPI_KIND(st.MPI_TAG) == T_EXIT) {
            waiting[src] = false;
            want--;
        }
    }
    const char one = 1;
    bool leave = fin_leave && fin_leave(gr);
    for (int r = gr->first; r < gr->size; r++) {
        if (gr->dead[r] || waiting[r])
            continue;
        if (leave) /* it exits at once, and so may we: known to have arrived */
            MPI_Ssend(&one, 1, MPI_BYTE, r, MP__MPI_TAG(T_FIN, 0), gr->comm);
        else
            MPI_Send(NULL, 0, MPI_BYTE, r, MP__MPI_TAG(T_FIN, 0), gr->comm);
    }
    free(waiting);
    free(heard);
}

static bool any_dead(const group *gr)
{
    for (int r = 0; r < gr->size; r++)
        if (gr->dead[r])
            return true;
    return false;
}

/* FIN's choice for the world's ranks: leave without MPI_Finalize when a rank was lost
 * and mpiexec runs with --enable-recovery (pool_end.c). */
static bool lost_under_recovery(const group *gr)
{
    return any_dead(gr) && mp__mpi_recovery();
}

/* End a spawned group: exit, let the communicator go, wait for the processes. */
static void retire_spawned(void)
{
    group *gr = &g.sp;
    if (gr->comm == MPI_COMM_NULL)
        return;
    exit_group(gr, NULL);
    if (any_dead(gr))
        MPI_Comm_free(&gr->comm);
    else
        MPI_Comm_disconnect(&gr->comm);
    gr->comm = MPI_COMM_NULL;
    drop_pidfds(gr);
    free(gr->dead);
    gr->dead = NULL;
}

/* mp_mpi_finalize's hook: 1 when MPI_Finalize must not be called (a rank was lost). */
static int send_exit(void)
{
    int down = 0, skip = 0;
    MPI_Finalized(&down);
    if (down)
        return 0;
    pthread_mutex_lock(&g_mu);
    retire_spawned();
    if (g.launched && g.world.comm != MPI_COMM_NULL) {
        /* under --enable-recovery the others leave without MPI_Finalize too */
        exit_group(&g.world, lost_under_recovery);
        drop_pidfds(&g.world);
        MPI_Comm_free(&g.world.comm);
        g.world.comm = MPI_COMM_NULL;
        if (any_dead(&g.world))
            skip = mp__mpi_end_lost(g.world.dead, g.world.first, g.world.size);
    }
    pthread_mutex_unlock(&g_mu);
    return skip;
}

static void at_exit(void)
{
    mp_mpi_finalize(); /* runs send_exit first (its hook), when the library initialised MPI */
    send_exit();       /* else: the ranks leave all the same (a no-op after the above) */
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
        MPI_Comm comm;
        int rc = MPI_Comm_dup(MPI_COMM_WORLD, &comm);
        if (rc != MPI_SUCCESS)
            return mp__mpi_error(rc, "MPI_Comm_dup for the pool's ranks");
        MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
        if (rank > 0) {
            if (mp__mpi_serve(comm, 0) > 0) {
                fflush(NULL); /* a rank was lost: MPI_Finalize would wait for it */
                exit(0);
            }
            MPI_Comm_free(&comm);
            mp_mpi_finalize();
            exit(0);
        }
        g.world = (group){.comm = comm, .size = size, .first = 1,
                          .dead = calloc((size_t)size, sizeof(bool))};
        if (!g.world.dead)
            return -ENOMEM;
        g.launched = true;
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

/* Workers for a pool from group gr: n of its live ranks (n 0: all of them). */
static int take_ranks(mstate *s, group *gr, int n, const mpi_backend *b)
{
    int *ranks = malloc((size_t)gr->size * sizeof *ranks), left = 0;
    if (!ranks)
        return -ENOMEM;
    for (int r = gr->first; r < gr->size; r++)
        if (!gr->dead[r])
            ranks[left++] = r;
    if (n > left || left == 0) {
        free(ranks);
        return mp__error(MP_EINVAL, "MPI pool: %d workers asked, this mpiexec has %d worker "
                                    "rank%s left (mpiexec -n N gives N-1)",
                         n, left, left == 1 ? "" : "s");
    }
    s->n = n ? n : left;
    s->ranks = ranks;
    s->grp = gr;
    g.hb_limit = b->o.heartbeat_limit;
    s->relay = mp__relay_new(gr->comm, ranks, s->n, ++g.gen, b->o.heartbeat_limit);
    return s->relay ? s->n : mp_last_error_code();
}

/* Started alone: a spawned group of at least n live ranks (spawned now unless the last
 * one still has them). */
static int spawn_group(int n, const mpi_backend *b)
{
    group *gr = &g.sp;
    /* Open MPI ends every rank of a spawned job when one dies: a group with a dead rank
     * is replaced whole */
    int live = 0;
    for (int r = 0; gr->comm != MPI_COMM_NULL && r < gr->size; r++)
        live += gr->dead[r] ? -gr->size : 1;
    if (gr->comm != MPI_COMM_NULL && live >= n)
        return 0;
    retire_spawned();
    char exe[PATH_MAX];
    ssize_t k = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (k <= 0)
        return mp__errno("MPI pool: finding this program to spawn it");
    exe[k] = '\0';
    int *errs = calloc((size_t)n, sizeof *errs);
    bool *dead = calloc((size_t)n, sizeof *dead);
    if (!errs || !dead) {
        free(errs);
        free(dead);
        return -ENOMEM;
    }
    MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
    MPI_Comm comm = MPI_COMM_NULL;
    int rc = MPI_Comm_spawn(exe, MPI_ARGV_NULL, n, b->o.spawn_info, 0, MPI_COMM_SELF, &comm, errs);
    int bad = rc;
    for (int i = 0; rc == MPI_SUCCESS && i < n; i++)
        if (errs[i] != MPI_SUCCESS)
            bad = errs[i];
    free(errs);
    if (bad != MPI_SUCCESS) {
        free(dead);
        if (comm != MPI_COMM_NULL)
            MPI_Comm_free(&comm);
        return mp__mpi_error(bad, "MPI pool: MPI_Comm_spawn of the worker ranks");
    }
    MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN);
    *gr = (group){.comm = comm, .size = n, .first = 0, .dead = dead, .spawned = true};
    return 0;
}

static int open_locked(const mp_pool_opts *o, void **state);

static int be_open(const mp_pool_opts *o, void **state)
{
    pthread_mutex_lock(&g_mu);
    int r = open_locked(o, state);
    pthread_mutex_unlock(&g_mu);
    return r;
}

static int open_locked(const mp_pool_opts *o, void **state)
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
    if (g.busy)
        return mp__error(MP_ESTATE, "MPI pool: the ranks serve another pool (one pool at a "
                                    "time: free it first)");
    if (!g.launched && b->o.no_spawn)
        return mp__error(MP_ESTATE, "MPI pool: started alone and spawning is refused "
                                    "(no_spawn): run it under mpiexec -n N");
    mstate *s = mp__calloc(1, sizeof *s);
    if (!s)
        return -ENOMEM;
    int n;
    if (g.launched) {
        n = take_ranks(s, &g.world, o->processes, b);
    } else {
        int want = o->processes > 0 ? o->processes : mp_cpu_count();
        n = spawn_group(want, b);
        if (n == 0)
            n = take_ranks(s, &g.sp, want, b);
    }
    if (n < 0) {
        mp__relay_free(s->relay, NULL, NULL);
        free(s->ranks);
        free(s);
        return n;
    }
    g.busy = true;
    *state = s;
    return n;
}

static int be_start(void *state, size_t i, const mp_value *boot, int *sock, int *sentinel)
{
    mstate *s = state;
    return mp__relay_start(s->relay, i, boot, sock, sentinel);
}

static void be_stop(void *state, size_t i) { mp__relay_stop(((mstate *)state)->relay, i); }

static size_t be_held(void *state, size_t i)
{
    return mp__relay_held(((mstate *)state)->relay, i);
}

static int be_give(void *state, size_t i, mp__txbuf *t)
{
    return mp__relay_give(((mstate *)state)->relay, i, t);
}

static int be_take(void *state, size_t i, char **buf, size_t *len)
{
    return mp__relay_take(((mstate *)state)->relay, i, buf, len);
}

static void be_reap(void *state, size_t i, char *who, size_t wcap, char *how, size_t hcap)
{
    mp__relay_reap(((mstate *)state)->relay, i, who, wcap, how, hcap);
}

static void be_close(void *state)
{
    mstate *s = state;
    bool *dead = calloc((size_t)s->n, sizeof *dead);
    int *pidfds = dead ? malloc((size_t)s->n * sizeof *pidfds) : NULL;
    mp__relay_free(s->relay, dead, pidfds);
    pthread_mutex_lock(&g_mu);
    for (int i = 0; dead && i < s->n; i++)
        if (dead[i])
            s->grp->dead[s->ranks[i]] = true;
    if (pidfds) /* the end may need them (a rank that stops later: exit_group) */
        keep_pidfds(s->grp, s->ranks, pidfds, s->n);
    free(pidfds);
    g.busy = false;
    pthread_mutex_unlock(&g_mu);
    free(dead);
    free(s->ranks);
    free(s);
}

static const mpi_backend default_backend = {
    .vt = {.name = "MPI",
           .prefix = "MPIPoolWorker",
           .open = be_open,
           .start = be_start,
           .stop = be_stop,
           .reap = be_reap,
           .held = be_held,
           .give = be_give,
           .take = be_take,
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
