/* The same Pool code on MPI ranks: mpi4py.futures' MPIPoolExecutor for mp_pool.
 *
 * Python (mpi4py 3.1.4):
 *
 *     from mpi4py.futures import MPIPoolExecutor
 *     def square(x):
 *         return x * x
 *     if __name__ == '__main__':
 *         with MPIPoolExecutor(max_workers=2) as executor:
 *             print('Squares :', list(executor.map(square, range(10))))
 *             print('Apply   :', executor.submit(square, 12).result())
 *
 * runs unchanged as `python3 prog.py` (it spawns 2 worker ranks) and as
 * `mpiexec -n 3 python3 -m mpi4py.futures prog.py` (ranks 1 and 2 serve). So does this
 * program: `./pool_mpi` alone spawns its 2 ranks (MPI_Comm_spawn); `mpiexec -n 3
 * ./pool_mpi` uses ranks 1 and 2; with the same output:
 *
 *     Workers : 2
 *     Squares : [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
 *     Apply   : 144
 *     Pairs   : [3, 7, 11]
 *     Unordered sum: 285
 *     Failure : MP_ERANGE (square: 13 is too big)
 *
 * Only rank 0 prints: the worker ranks never return from mp_mpi_pool_serve_if_worker.
 * Where MPI cannot spawn (e.g. run as root without Open MPI's permission), the program
 * says so on stderr and uses a local pool: the same calls, the same output. */
#include <stdio.h>
#include <string.h>

#include "multiproc.h"
#include "multiproc/mpi_pool.h"

int square(const mp_value *x, mp_value **result)
{
    int64_t v = mp_value_get_int(x);
    if (v > 12)
        return mp_task_fail(MP_ERANGE, "square: %lld is too big", (long long)v);
    *result = mp_value_int(v * v);
    return 0;
}

/* starmap: each item is an argument list [a, b] */
int add(const mp_value *args, mp_value **result)
{
    int a, b;
    int r = mp_value_unpack(args, "[i i]", &a, &b);
    if (r < 0)
        return r;
    *result = mp_value_int(a + b);
    return 0;
}

static void print_value(const char *label, const mp_value *v)
{
    char *repr = mp_value_repr(v);
    printf("%s: %s\n", label, repr);
    mp_free(repr);
}

int main(int argc, char **argv)
{
    /* first thing: ranks other than 0 serve tasks here and never return */
    if (mp_mpi_pool_serve_if_worker(&argc, &argv) < 0) {
        fprintf(stderr, "MPI: %s\n", mp_last_error());
        return 1;
    }
    mp_pool *pool = mp_pool_new(&(mp_pool_opts){.processes = 2,
                                                .backend = mp_mpi_pool_backend()});
    if (!pool) {
        fprintf(stderr, "no MPI pool (%s): using a local pool\n", mp_last_error());
        pool = mp_pool_new(&(mp_pool_opts){.processes = 2});
    }
    if (!pool) {
        fprintf(stderr, "pool: %s\n", mp_last_error());
        return 1;
    }
    printf("Workers : %d\n", mp_pool_processes(pool));

    mp_value *inputs = mp_value_list(), *out = NULL;
    for (int i = 0; i < 10; i++)
        mp_value_list_append(inputs, mp_value_int(i));
    if (mp_pool_map(pool, square, inputs, 0, &out) == 0)
        print_value("Squares ", out);
    mp_value_free(out);

    mp_value *twelve = mp_value_int(12);
    out = NULL;
    if (mp_pool_apply(pool, square, twelve, &out) == 0)
        print_value("Apply   ", out);
    mp_value_free(out);

    mp_value *pairs = mp_value_pack("[[i i] [i i] [i i]]", 1, 2, 3, 4, 5, 6);
    out = NULL;
    if (mp_pool_starmap(pool, add, pairs, 0, &out) == 0)
        print_value("Pairs   ", out);
    mp_value_free(out);

    /* results as they complete, in any order: their sum is the same */
    mp_pool_iter *it = mp_pool_imap_unordered(pool, square, inputs, 2);
    int64_t sum = 0;
    mp_value *v = NULL;
    while (mp_pool_iter_next(it, MP_NO_LIMIT, &v) == 1) {
        sum += mp_value_get_int(v);
        mp_value_free(v);
    }
    mp_pool_iter_free(it);
    printf("Unordered sum: %lld\n", (long long)sum);

    /* a task's failure comes back as its code and message (plus the worker that ran it:
     * its name, MPI rank, host and pid, in mp_last_error()) */
    mp_value *thirteen = mp_value_int(13);
    out = NULL;
    int code = mp_pool_apply(pool, square, thirteen, &out);
    const char *msg = strstr(mp_last_error(), "square:");
    printf("Failure : %s (%.*s)\n", mp_errname(code), msg ? (int)strcspn(msg, "(") - 1 : 0,
           msg ? msg : "");

    mp_pool_close(pool);
    mp_pool_join(pool, MP_NO_LIMIT);
    mp_pool_free(pool);
    mp_value_free(thirteen);
    mp_value_free(pairs);
    mp_value_free(twelve);
    mp_value_free(inputs);
    return mp_mpi_finalize() < 0;
}
