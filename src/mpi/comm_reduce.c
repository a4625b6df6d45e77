/* Reductions of values across ranks: mp_mpi_reduce, mp_mpi_allreduce and their user-function
 * forms. DESIGN: the values are gathered to the root (coll_exchange.c) and folded there
 * in rank order, grouped as mpi4py's reduction tree groups them ((v0 op v1) op (v2 op v3)
 * for four ranks), so a user function need not commute and runs in one process only; allreduce reduces to rank 0 and broadcasts the result, or
 * the fold's error code so that every rank returns it (mp__mpi_bcast_or_error). mpi4py does
 * the same work for objects (its lowercase reduce gathers pickles). */
#include "internal/common.h"
#include "mpi/comm_internal.h"

#include <errno.h>
#include <stdlib.h>

typedef struct folder {
    mp_mpi_op op;
    mp_mpi_reduce_fn fn; /* NULL: the predefined op */
    void *arg;
} folder;

static int fold_pair(const folder *f, const mp_value *a, const mp_value *b, mp_value **out)
{
    if (!f->fn)
        return mp_mpi_op_apply(f->op, a, b, out);
    *out = NULL;
    int r = f->fn(a, b, out, f->arg);
    if (r < 0) {
        mp_value_free(*out);
        *out = NULL;
        return r;
    }
    if (!*out)
        return mp__error(MP_EINVAL, "the reduction function returned 0 without a value");
    return 0;
}

/* Fold the gathered @p list into *out as mpi4py's tree does, in rank order: at step
 * mask = 1, 2, 4, ... item i (a multiple of 2 * mask) becomes item i op item i + mask, so
 * four values give (v0 op v1) op (v2 op v3). */
static int fold(const folder *f, const mp_value *list, mp_value **out, const char *what)
{
    size_t n = mp_value_len(list);
    mp_value **acc = calloc(n, sizeof *acc);
    int r = acc ? 0 : mp__error(-ENOMEM, "%s", what);
    for (size_t i = 0; r == 0 && i < n; i++)
        if (!(acc[i] = mp_value_copy(mp_value_list_get(list, i))))
            r = mp_last_error_code();
    for (size_t mask = 1; r == 0 && mask < n; mask <<= 1) {
        for (size_t i = 0; r == 0 && i + mask < n; i += 2 * mask) {
            mp_value *next;
            r = fold_pair(f, acc[i], acc[i + mask], &next);
            if (r < 0) {
                r = mp__error(r, "%s: folding in rank %zu's value: %s", what, i + mask,
                              mp__last_error_detail());
                break;
            }
            mp_value_free(acc[i]);
            acc[i] = next;
        }
    }
    if (r == 0) {
        *out = acc[0];
        acc[0] = NULL;
    }
    for (size_t i = 0; acc && i < n; i++)
        mp_value_free(acc[i]);
    free(acc);
    return r;
}

static int reduce(MPI_Comm comm, const mp_value *v, const folder *f, int root, bool all,
                  mp_value **out, const char *what)
{
    if (!out)
        return mp__error(MP_EINVAL, "%s: NULL output", what);
    *out = NULL;
    if (!all && root < 0)
        return mp__error(MP_EINVAL, "%s: root %d", what, root);
    if (!f->fn && (unsigned)f->op > MP_MPI_MAX)
        return mp__error(MP_EINVAL, "%s: unknown operation %d", what, (int)f->op);
    mp_value *list = NULL, *res = NULL;
    int r = mp__mpi_gather(comm, v, root, &list, what);
    if (r < 0)
        return r;
    if (list)
        r = fold(f, list, &res, what);
    mp_value_free(list);
    if (!all) {
        *out = res;
        return r;
    }
    r = mp__mpi_bcast_or_error(comm, res, r, root, out, what);
    mp_value_free(res);
    return r;
}

int mp_mpi_reduce(MPI_Comm comm, const mp_value *v, mp_mpi_op op, int root, mp_value **out)
{
    folder f = { op, NULL, NULL };
    return reduce(comm, v, &f, root, false, out, "mp_mpi_reduce");
}

int mp_mpi_allreduce(MPI_Comm comm, const mp_value *v, mp_mpi_op op, mp_value **out)
{
    folder f = { op, NULL, NULL };
    return reduce(comm, v, &f, 0, true, out, "mp_mpi_allreduce");
}

int mp_mpi_reduce_with(MPI_Comm comm, const mp_value *v, mp_mpi_reduce_fn fn, void *arg,
                       int root, mp_value **out)
{
    if (!fn)
        return mp__error(MP_EINVAL, "mp_mpi_reduce_with: NULL function");
    folder f = { MP_MPI_SUM, fn, arg };
    return reduce(comm, v, &f, root, false, out, "mp_mpi_reduce_with");
}

int mp_mpi_allreduce_with(MPI_Comm comm, const mp_value *v, mp_mpi_reduce_fn fn, void *arg,
                          mp_value **out)
{
    if (!fn)
        return mp__error(MP_EINVAL, "mp_mpi_allreduce_with: NULL function");
    folder f = { MP_MPI_SUM, fn, arg };
    return reduce(comm, v, &f, 0, true, out, "mp_mpi_allreduce_with");
}
