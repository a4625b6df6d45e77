/* The MPI module's start-up, run under `mpiexec -n 4` (CMakeLists.txt: tests/mpi/).
 * Before mp_mpi_init the rank/size calls are MP_ESTATE with a message, after it every
 * rank sees its own rank and a size of 4; init twice is harmless; finalize works. */
#include "multiproc/mpi.h"
#include "test_util.h"

static void test_before_init(void)
{
    CHECK_ERR(mp_mpi_rank(MPI_COMM_WORLD), MP_ESTATE);
    CHECK_CONTAINS(mp_last_error(), "not initialised");
    CHECK_ERR(mp_mpi_size(MPI_COMM_WORLD), MP_ESTATE);
}

static void test_rank_size(void)
{
    int rank = mp_mpi_rank(MPI_COMM_WORLD), size = mp_mpi_size(MPI_COMM_WORLD);
    CHECK_INT(size, 4);
    CHECK(rank >= 0 && rank < 4);
    /* every rank sees a distinct rank: their sum over the world is 0+1+2+3 */
    int sum = 0;
    CHECK_INT(MPI_Allreduce(&rank, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD), MPI_SUCCESS);
    CHECK_INT(sum, 6);
    CHECK_OK(mp_mpi_init(NULL, NULL)); /* a second init is harmless */
}

static void test_mpi_error_message(void)
{
    /* MPI_ERRORS_RETURN is set: a bad rank is an MP_EMPI return with MPI's message */
    CHECK_ERR(mp_mpi_rank(MPI_COMM_NULL), MP_EMPI);
    CHECK_CONTAINS(mp_last_error(), "MPI_Comm_rank");
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_before_init);
    if (mp_mpi_init(&argc, &argv) < 0) {
        fprintf(stderr, "mp_mpi_init: %s\n", mp_last_error());
        return 1;
    }
    RUN_IF(argc, argv, test_rank_size);
    RUN_IF(argc, argv, test_mpi_error_message);
    CHECK_OK(mp_mpi_finalize());
    CHECK_ERR(mp_mpi_init(NULL, NULL), MP_ESTATE);
    return mpt_done();
}
