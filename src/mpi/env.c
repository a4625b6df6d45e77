/* The MPI module's start and end: MPI_Init_thread / MPI_Finalize, rank and size, and the
 * one translation of an MPI error code into the library's error model (mp__mpi_error).
 * The module is built into libmultiproc_mpi only (CMakeLists.txt), never into libmultiproc. */
#include "multiproc/mpi.h"

#include "internal/common.h"
#include "mpi/mpi_internal.h"

#include <stdbool.h>

static bool g_we_initialised, g_left_unfinalized;
int (*mp__mpi_finalize_hook)(void);

int mp__mpi_error(int rc, const char *what)
{
    char msg[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, msg, &len) != MPI_SUCCESS)
        len = snprintf(msg, sizeof msg, "MPI error %d", rc);
    return mp__error(MP_EMPI, "%s: %.*s", what, len, msg);
}

int mp__mpi_check_ready(void)
{
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (!up || down)
        return mp__error(MP_ESTATE, "MPI is %s (call mp_mpi_init first)",
                         down ? "already finalized" : "not initialised");
    return 0;
}

int mp_mpi_init(int *argc, char ***argv)
{
    int up = 0, down = 0, provided = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    if (down)
        return mp__error(MP_ESTATE, "mp_mpi_init: MPI is already finalized");
    if (!up) {
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
        if (rc != MPI_SUCCESS)
            return mp__mpi_error(rc, "MPI_Init_thread");
        g_we_initialised = true;
    } else {
        MPI_Query_thread(&provided);
    }
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    if (provided < MPI_THREAD_MULTIPLE)
        return mp__error(MP_EMPI, "mp_mpi_init: MPI gives thread level %d, the library needs "
                                  "MPI_THREAD_MULTIPLE (%d)", provided, MPI_THREAD_MULTIPLE);
    return 0;
}

int mp_mpi_finalize(void)
{
    int down = 0;
    MPI_Finalized(&down);
    if (!g_we_initialised || down || g_left_unfinalized)
        return 0;
    if (mp__mpi_finalize_hook && mp__mpi_finalize_hook() > 0) {
        g_left_unfinalized = true; /* MPI_Finalize would wait for a lost rank */
        return 0;
    }
    int rc = MPI_Finalize();
    return rc == MPI_SUCCESS ? 0 : mp__mpi_error(rc, "MPI_Finalize");
}

int mp_mpi_rank(MPI_Comm comm)
{
    int r = mp__mpi_check_ready(), rank = 0;
    if (r < 0)
        return r;
    int rc = MPI_Comm_rank(comm, &rank);
    return rc == MPI_SUCCESS ? rank : mp__mpi_error(rc, "MPI_Comm_rank");
}

int mp_mpi_size(MPI_Comm comm)
{
    int r = mp__mpi_check_ready(), size = 0;
    if (r < 0)
        return r;
    int rc = MPI_Comm_size(comm, &size);
    return rc == MPI_SUCCESS ? size : mp__mpi_error(rc, "MPI_Comm_size");
}
