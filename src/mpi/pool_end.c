/* The end of a program under mpiexec whose Pool on MPI lost ranks (mp_mpi_finalize's
 * hook, via pool_backend.c's send_exit).
 *
 * DESIGN: Open MPI 4.1's MPI_Finalize waits for every rank of the job, the lost ones
 * too: for a rank whose host is unreachable, or that is stopped, forever; for a dead
 * rank under --enable-recovery, now and then on one host and every time across hosts.
 * So once a rank was lost the master never calls it; what it does instead depends on
 * how mpiexec treats a lost process, which no MPI call tells: the mpiexec option
 * --enable-recovery reaches the ranks as OMPI_MCA_orte_enable_recovery=1.
 * - With recovery the job goes on until every process has ended: the survivors were
 *   told to leave without MPI_Finalize (pool_serve.c), and the master leaves the same
 *   way (mp_mpi_finalize returns 0 without finalizing, the program ends as it means to).
 *   mpiexec then ends at once (status 0: Open MPI's, whatever the ranks' statuses);
 *   for an unreachable host it waits for the keepalive (below), or, in 3 runs of 5
 *   here, longer.
 * - Without, any process that ends without MPI_Finalize, or MPI_Abort, makes mpiexec
 *   kill the job; but a kill order to an unreachable host's daemon waits for TCP to give
 *   up on it (977 s here), while an idle link to it is found dead by the
 *   out-of-band keepalive (oob_tcp_keepalive_time + probes * intvl: 300 + 9 * 20 s by
 *   default), after which mpiexec ends the job by itself. So the master waits, idle,
 *   for that bound (read from OMPI_MCA_oob_tcp_keepalive_* when given on mpiexec's
 *   command line) and a margin (END_LIMIT): a lost rank that died makes Open MPI end
 *   the job within about a second, an unreachable host within the keepalive bound;
 *   only a rank whose host is still reachable (a stopped process on another host: one
 *   on this host was killed when declared lost) is left then, and MPI_Abort ends that
 *   job at once.
 * Stdout and stderr are flushed before anything that may end the process. */
#include "internal/common.h"
#include "mpi/mpi_internal.h"
#include "mpi/pool_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

/* The wait before MPI_Abort: the keepalive bound, plus a tenth of it and 5 s (Open MPI
 * noticed a cut host 2-3 s after a 3 s bound, 12 s after the default 480 s one). */
#define END_LIMIT(bound) (1.1 * (bound) + 5.0)

bool mp__mpi_recovery(void)
{
    const char *v = getenv("OMPI_MCA_orte_enable_recovery");
    if (!v)
        return false;
    static const char *const yes[] = {"1", "t", "true", "y", "yes", "enabled"};
    for (size_t i = 0; i < sizeof yes / sizeof *yes; i++)
        if (strcasecmp(v, yes[i]) == 0)
            return true;
    return false;
}

static double mca_number(const char *name, double dflt)
{
    const char *v = getenv(name);
    char *end = NULL;
    double d = v ? strtod(v, &end) : dflt;
    return v && end != v ? d : dflt;
}

double mp__mpi_end_limit(void)
{
    double t = mca_number("OMPI_MCA_oob_tcp_keepalive_time", 300);
    double intvl = mca_number("OMPI_MCA_oob_tcp_keepalive_intvl", 20);
    double probes = mca_number("OMPI_MCA_oob_tcp_keepalive_probes", 9);
    if (t <= 0) /* no keepalive: Open MPI never finds an idle link dead */
        return END_LIMIT(0);
    return END_LIMIT(t + (intvl > 0 ? intvl : 0) * (probes > 0 ? probes : 0));
}

int mp__mpi_end_lost(const bool *dead, int first, int size)
{
    char ranks[256] = "";
    int n = 0;
    for (int r = first; r < size; r++) {
        if (!dead[r])
            continue;
        size_t len = strlen(ranks);
        if (len < sizeof ranks - 16)
            snprintf(ranks + len, sizeof ranks - len, "%s%d", n ? ", " : "", r);
        n++;
    }
    fflush(NULL); /* the program's results are out before anything below */
    if (mp__mpi_recovery()) {
        fprintf(stderr,
                "multiproc: MPI pool: rank%s %s %s lost, and MPI_Finalize would wait for "
                "%s: the program and the other ranks end without it (mpiexec "
                "--enable-recovery)\n",
                n == 1 ? "" : "s", ranks, n == 1 ? "was" : "were", n == 1 ? "it" : "them");
        return 1;
    }
    double limit = mp__mpi_end_limit();
    fprintf(stderr,
            "multiproc: MPI pool: rank%s %s %s lost, and MPI_Finalize would wait for %s "
            "forever: waiting for Open MPI to end the job (it does once it finds the "
            "loss), at most %.0f s, then MPI_Abort\n",
            n == 1 ? "" : "s", ranks, n == 1 ? "was" : "were", n == 1 ? "it" : "them", limit);
    double deadline = mp__now() + limit;
    for (double now = mp__now(); now < deadline; now = mp__now()) {
        double left = deadline - now > 0.5 ? 0.5 : deadline - now;
        struct timespec ts = {(time_t)left, (long)((left - (double)(time_t)left) * 1e9)};
        nanosleep(&ts, NULL);
    }
    fprintf(stderr, "multiproc: MPI pool: the job still runs %.0f s later: ending it with "
                    "MPI_Abort\n", limit);
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1; /* not reached */
}
