/* The predefined reductions on values (mp_mpi_op_apply): SUM, PROD, MIN and MAX computed
 * as Python computes them on the same data (mpi4py applies `x + y`, `x * y`,
 * `y if y < x else x`, `y if y > x else x` to the objects). */
#include "internal/common.h"
#include "mpi/comm_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char *op_name(mp_mpi_op op)
{
    static const char *names[] = { "sum", "product", "min", "max" };
    return (unsigned)op < 4 ? names[op] : "?";
}

static bool is_number(const mp_value *v)
{
    mp_type t = mp_value_type(v);
    return t == MP_INT || t == MP_FLOAT || t == MP_BOOL;
}

/* An int or a bool (True is 1), as Python's int. */
static int64_t as_int(const mp_value *v)
{
    return mp_value_type(v) == MP_BOOL ? mp_value_get_bool(v) : mp_value_get_int(v);
}

static double as_float(const mp_value *v)
{
    return mp_value_type(v) == MP_FLOAT ? mp_value_get_float(v) : (double)as_int(v);
}

static int type_error(mp_mpi_op op, const mp_value *a, const mp_value *b)
{
    return mp__error(MP_ETYPE, "unsupported operand types for %s: '%s' and '%s'", op_name(op),
                     mp_type_name(mp_value_type(a)), mp_type_name(mp_value_type(b)));
}

static int arith(mp_mpi_op op, const mp_value *a, const mp_value *b, mp_value **out)
{
    if (mp_value_type(a) == MP_FLOAT || mp_value_type(b) == MP_FLOAT) {
        double x = as_float(a), y = as_float(b);
        *out = mp_value_float(op == MP_MPI_SUM ? x + y : x * y);
    } else {
        int64_t x = as_int(a), y = as_int(b), z;
        bool over = op == MP_MPI_SUM ? __builtin_add_overflow(x, y, &z)
                                     : __builtin_mul_overflow(x, y, &z);
        if (over)
            return mp__error(MP_ERANGE, "%s of %lld and %lld does not fit a 64-bit int",
                             op_name(op), (long long)x, (long long)y);
        *out = mp_value_int(z);
    }
    return *out ? 0 : mp_last_error_code();
}

/* str + str, bytes + bytes, list + list, as Python's + joins them. */
static int join(const mp_value *a, const mp_value *b, mp_value **out)
{
    mp_type t = mp_value_type(a);
    if (t == MP_LIST) {
        mp_value *l = mp_value_copy(a);
        int r = l ? 0 : mp_last_error_code();
        for (size_t i = 0; r == 0 && i < mp_value_len(b); i++)
            r = mp_value_list_append(l, mp_value_copy(mp_value_list_get(b, i)));
        if (r < 0)
            mp_value_free(l);
        *out = r < 0 ? NULL : l;
        return r;
    }
    size_t na, nb;
    const char *x = t == MP_STR ? mp_value_get_str(a, &na) : mp_value_get_bytes(a, &na);
    const char *y = t == MP_STR ? mp_value_get_str(b, &nb) : mp_value_get_bytes(b, &nb);
    char *cat = malloc(na + nb + 1);
    if (!cat)
        return mp__error(-ENOMEM, "joining %zu and %zu bytes", na, nb);
    memcpy(cat, x, na);
    memcpy(cat + na, y, nb);
    *out = t == MP_STR ? mp_value_strn(cat, na + nb) : mp_value_bytes(cat, na + nb);
    free(cat);
    return *out ? 0 : mp_last_error_code();
}

/* Python orders numbers with numbers, and str, bytes, lists among their own type. */
static bool orderable(const mp_value *a, const mp_value *b)
{
    mp_type t = mp_value_type(a);
    if (is_number(a) || is_number(b))
        return is_number(a) && is_number(b);
    return t == mp_value_type(b) && (t == MP_STR || t == MP_BYTES || t == MP_LIST);
}

int mp_mpi_op_apply(mp_mpi_op op, const mp_value *a, const mp_value *b, mp_value **out)
{
    if (!out)
        return mp__error(MP_EINVAL, "mp_mpi_op_apply: NULL output");
    *out = NULL;
    if (!a || !b)
        return mp__error(MP_EINVAL, "mp_mpi_op_apply: NULL operand");
    switch (op) {
    case MP_MPI_SUM:
    case MP_MPI_PROD:
        if (is_number(a) && is_number(b))
            return arith(op, a, b, out);
        mp_type t = mp_value_type(a);
        if (op == MP_MPI_SUM && t == mp_value_type(b) &&
            (t == MP_STR || t == MP_BYTES || t == MP_LIST))
            return join(a, b, out);
        return type_error(op, a, b);
    case MP_MPI_MIN:
    case MP_MPI_MAX: {
        if (!orderable(a, b))
            return type_error(op, a, b);
        int c = mp_value_compare(b, a);
        bool take_b = op == MP_MPI_MIN ? c < 0 : c > 0;
        *out = mp_value_copy(take_b ? b : a);
        return *out ? 0 : mp_last_error_code();
    }
    }
    return mp__error(MP_EINVAL, "mp_mpi_op_apply: unknown operation %d", (int)op);
}
