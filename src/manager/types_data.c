/* Managed data types: dict, list, Namespace, Value, Array.
 *
 * Methods run in the server with its mutex held (see server.c). A value a request hands
 * over to be stored is *taken* out of the request (mp__mgr_take_arg), not copied, so a
 * proxy inside it stays owned by the container; results are copies, encoded before the
 * mutex is released. Messages are Python's str() of the exception it would raise. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/value.h"
#include "manager/mgr.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- argument helpers ---------------------------------------------------------------- */

int mp__mgr_nargs(const mp_value *args, size_t min, size_t max, const char *method)
{
    size_t n = mp_value_len(args);
    if (n < min || n > max) {
        if (min == max)
            return mp__error(MP_ETYPE, "%s() takes %zu argument%s (%zu given)", method, min,
                             min == 1 ? "" : "s", n);
        return mp__error(MP_ETYPE, "%s() takes from %zu to %zu arguments (%zu given)", method,
                         min, max, n);
    }
    return 0;
}

const mp_value *mp__mgr_arg(const mp_value *args, size_t i)
{
    return i < mp_value_len(args) ? mp_value_list_get(args, i) : NULL;
}

/* Take item i out of the request's argument list (it becomes nil there): the caller
 * owns it. The request is the server's own decoded copy. */
static mp_value *take_arg(const mp_value *args, size_t i)
{
    mp_value *nil = mp_value_nil();
    if (!nil)
        return NULL;
    mp_value *l = (mp_value *)args;
    mp_value *v = l->u.list.items[i];
    l->u.list.items[i] = nil;
    return v;
}

int mp__mgr_timeout_arg(const mp_value *args, size_t i, double *timeout, const char *method)
{
    const mp_value *v = mp__mgr_arg(args, i);
    *timeout = -1;
    if (!v || mp_value_type(v) == MP_NIL)
        return 0;
    if (mp_value_type(v) != MP_INT && mp_value_type(v) != MP_FLOAT)
        return mp__error(MP_ETYPE, "%s(): timeout must be a number or None", method);
    double t = mp_value_get_float(v);
    if (isnan(t))
        return mp__error(MP_EINVAL, "%s(): timeout is NaN", method);
    *timeout = t < 0 ? 0 : t; /* Python treats a negative timeout as "don't wait" */
    return 0;
}

bool mp__mgr_bool_arg(const mp_value *args, size_t i, bool dflt)
{
    const mp_value *v = mp__mgr_arg(args, i);
    switch (mp_value_type(v)) {
    case MP_BOOL:
        return mp_value_get_bool(v);
    case MP_INT:
        return mp_value_get_int(v) != 0;
    case MP_NIL:
        return v ? false : dflt;
    default:
        return v ? true : dflt;
    }
}

static int copy_out(const mp_value *v, mp_value **result)
{
    *result = v ? mp_value_copy(v) : mp_value_nil();
    return *result ? 0 : mp_last_error_code();
}

static int set_result(mp_value *v, mp_value **result)
{
    *result = v;
    return v ? 0 : mp_last_error_code();
}

static int key_error(const mp_value *key)
{
    char *r = mp_value_repr(key);
    int code = mp__error(MP_ENOTFOUND, "%s", r ? r : "?");
    mp_free(r);
    return code;
}

static char *repr_value(const mp_value *v)
{
    char *r = mp_value_repr(v);
    char *s = r ? strdup(r) : NULL;
    mp_free(r);
    return s;
}

/* Move every entry of map src (owned, freed) into map dst. */
static int merge_map(mp_value *dst, mp_value *src)
{
    int r = 0;
    for (size_t i = 0; i < src->u.map.len; i++) {
        mp_value *k = src->u.map.keys[i], *v = src->u.map.vals[i];
        src->u.map.keys[i] = src->u.map.vals[i] = NULL;
        if (r == 0)
            r = mp_value_map_set(dst, k, v);
        else {
            mp_value_free(k);
            mp_value_free(v);
        }
    }
    src->u.map.len = 0;
    mp_value_free(src);
    return r;
}

/* ---- dict ------------------------------------------------------------------------------ */

static int dict_init(mgr_obj *o, const mp_value *args)
{
    if (mp__mgr_nargs(args, 0, 1, "dict") < 0)
        return mp_last_error_code();
    o->v = mp_value_map();
    if (!o->v)
        return mp_last_error_code();
    const mp_value *init = mp__mgr_arg(args, 0);
    if (!init || mp_value_type(init) == MP_NIL)
        return 0;
    if (mp_value_type(init) != MP_MAP)
        return mp__error(MP_ETYPE, "dict(): expected a map, got %s",
                         mp_type_name(mp_value_type(init)));
    return merge_map(o->v, take_arg(args, 0));
}

static void data_fini(mgr_obj *o) { (void)o; }
static char *data_repr(mgr_obj *o) { return repr_value(o->v); }

static int d_getitem(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 1, 1, "__getitem__") < 0)
        return mp_last_error_code();
    const mp_value *v = mp_value_map_get(o->v, mp__mgr_arg(a, 0));
    return v ? copy_out(v, res) : key_error(mp__mgr_arg(a, 0));
}

static int d_setitem(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 2, 2, "__setitem__") < 0)
        return mp_last_error_code();
    return mp_value_map_set(o->v, take_arg(a, 0), take_arg(a, 1));
}

static int d_delitem(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 1, 1, "__delitem__") < 0)
        return mp_last_error_code();
    long e = mp__value_map_index(o->v, mp__mgr_arg(a, 0));
    return e < 0 ? key_error(mp__mgr_arg(a, 0)) : mp__value_map_remove(o->v, (size_t)e, NULL, NULL);
}

static int d_contains(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 1, 1, "__contains__") < 0)
        return mp_last_error_code();
    return set_result(mp_value_bool(mp_value_map_get(o->v, mp__mgr_arg(a, 0)) != NULL), res);
}

static int any_len(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 0, 0, "__len__") < 0)
        return mp_last_error_code();
    return set_result(mp_value_int((int64_t)mp_value_len(o->v)), res);
}

static int d_get(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 1, 2, "get") < 0)
        return mp_last_error_code();
    const mp_value *v = mp_value_map_get(o->v, mp__mgr_arg(a, 0));
    return copy_out(v ? v : mp__mgr_arg(a, 1), res);
}

/* keys / values / items as lists (Python's views, materialised). */
static int d_view(mgr_obj *o, int which, mp_value **res)
{
    mp_value *l = mp_value_list();
    for (size_t i = 0; l && i < mp_value_len(o->v); i++) {
        const mp_value *k = mp_value_map_key(o->v, i), *v = mp_value_map_val(o->v, i);
        mp_value *item = which == 0   ? mp_value_copy(k)
                         : which == 1 ? mp_value_copy(v)
                                      : mp_value_pack("[O O]", k, v);
        if (!item || mp_value_list_append(l, item) < 0) {
            mp_value_free(l);
            l = NULL;
        }
    }
    return set_result(l, res);
}

static int d_keys(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return d_view(o, 0, res);
}
static int d_values(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return d_view(o, 1, res);
}
static int d_items(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return d_view(o, 2, res);
}

static int d_update(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 1, 1, "update") < 0)
        return mp_last_error_code();
    const mp_value *src = mp__mgr_arg(a, 0);
    if (mp_value_type(src) == MP_MAP)
        return merge_map(o->v, take_arg(a, 0));
    if (mp_value_type(src) != MP_LIST)
        return mp__error(MP_ETYPE, "update(): expected a map or a list of [key, value] pairs");
    for (size_t i = 0; i < mp_value_len(src); i++) {
        mp_value *pair = mp_value_list_get(src, i);
        if (mp_value_type(pair) != MP_LIST || mp_value_len(pair) != 2)
            return mp__error(MP_EINVAL, "dictionary update sequence element #%zu has length "
                                        "%zu; 2 is required", i, mp_value_len(pair));
    }
    for (size_t i = 0; i < mp_value_len(src); i++) {
        mp_value *pair = mp_value_list_get(src, i);
        int r = mp_value_map_set(o->v, take_arg(pair, 0), take_arg(pair, 1));
        if (r < 0)
            return r;
    }
    return 0;
}

static int d_pop(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 1, 2, "pop") < 0)
        return mp_last_error_code();
    long e = mp__value_map_index(o->v, mp__mgr_arg(a, 0));
    if (e < 0)
        return mp_value_len(a) == 2 ? copy_out(mp__mgr_arg(a, 1), res)
                                    : key_error(mp__mgr_arg(a, 0));
    return mp__value_map_remove(o->v, (size_t)e, NULL, res);
}

static int d_popitem(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    size_t n = mp_value_len(o->v);
    if (n == 0)
        return mp__error(MP_ENOTFOUND, "'popitem(): dictionary is empty'");
    mp_value *k, *v;
    mp__value_map_remove(o->v, n - 1, &k, &v);
    mp_value *pair = mp_value_list();
    if (!pair || mp_value_list_append(pair, k) < 0 || mp_value_list_append(pair, v) < 0) {
        mp_value_free(pair);
        return mp_last_error_code();
    }
    *res = pair;
    return 0;
}

static int d_setdefault(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 1, 2, "setdefault") < 0)
        return mp_last_error_code();
    const mp_value *v = mp_value_map_get(o->v, mp__mgr_arg(a, 0));
    if (v)
        return copy_out(v, res);
    mp_value *dflt = mp_value_len(a) == 2 ? take_arg(a, 1) : mp_value_nil();
    int r = copy_out(dflt, res);
    if (r < 0) {
        mp_value_free(dflt);
        return r;
    }
    return mp_value_map_set(o->v, take_arg(a, 0), dflt);
}

static int d_clear(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a, (void)res;
    while (mp_value_len(o->v))
        mp__value_map_remove(o->v, mp_value_len(o->v) - 1, NULL, NULL);
    return 0;
}

static int any_getvalue(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return copy_out(o->v, res);
}

/* add(key, delta[, start=0]): d[key] = d.get(key, start) + delta in one request. */
static int d_add(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 2, 3, "add") < 0)
        return mp_last_error_code();
    const mp_value *cur = mp_value_map_get(o->v, mp__mgr_arg(a, 0));
    const mp_value *delta = mp__mgr_arg(a, 1);
    if (!cur)
        cur = mp__mgr_arg(a, 2);
    mp_type ct = cur ? mp_value_type(cur) : MP_INT, dt = mp_value_type(delta);
    if ((ct != MP_INT && ct != MP_FLOAT) || (dt != MP_INT && dt != MP_FLOAT))
        return mp__error(MP_ETYPE, "add(): unsupported operand type(s) for +=: '%s' and '%s'",
                         mp_type_name(ct), mp_type_name(dt));
    mp_value *sum;
    if (ct == MP_INT && dt == MP_INT) {
        int64_t x = cur ? mp_value_get_int(cur) : 0, s;
        if (__builtin_add_overflow(x, mp_value_get_int(delta), &s))
            return mp__error(MP_ERANGE, "add(): the sum does not fit 64 bits");
        sum = mp_value_int(s);
    } else {
        sum = mp_value_float(mp_value_get_float(cur) + mp_value_get_float(delta));
    }
    if (!sum || copy_out(sum, res) < 0) {
        mp_value_free(sum);
        return mp_last_error_code();
    }
    return mp_value_map_set(o->v, take_arg(a, 0), sum);
}

/* compare_and_set(key, expected, new) -> True if d[key] == expected and was replaced. */
static int d_cas(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 3, 3, "compare_and_set") < 0)
        return mp_last_error_code();
    const mp_value *cur = mp_value_map_get(o->v, mp__mgr_arg(a, 0));
    bool ok = cur && mp_value_equal(cur, mp__mgr_arg(a, 1));
    if (ok) {
        int r = mp_value_map_set(o->v, take_arg(a, 0), take_arg(a, 2));
        if (r < 0)
            return r;
    }
    return set_result(mp_value_bool(ok), res);
}

static const mgr_method dict_methods[] = {
    {"__getitem__", d_getitem}, {"__setitem__", d_setitem}, {"__delitem__", d_delitem},
    {"__contains__", d_contains}, {"__len__", any_len},     {"get", d_get},
    {"keys", d_keys},           {"values", d_values},      {"items", d_items},
    {"update", d_update},       {"pop", d_pop},            {"popitem", d_popitem},
    {"setdefault", d_setdefault}, {"clear", d_clear},      {"copy", any_getvalue},
    {"__getvalue__", any_getvalue}, {"add", d_add},        {"compare_and_set", d_cas},
};

const mgr_type mp__mgr_dict_type = {"dict", dict_init, data_fini, data_repr, NULL, dict_methods,
                                    MP__ARRAY_LEN(dict_methods)};

/* ---- list ------------------------------------------------------------------------------ */

static int list_insert(mp_value *l, size_t i, mp_value *item)
{
    size_t n = l->u.list.len;
    int r = mp_value_list_append(l, item);
    if (r < 0)
        return r;
    if (i < n) {
        memmove(l->u.list.items + i + 1, l->u.list.items + i, (n - i) * sizeof(mp_value *));
        l->u.list.items[i] = item;
    }
    return 0;
}

static mp_value *list_remove(mp_value *l, size_t i)
{
    mp_value *v = l->u.list.items[i];
    memmove(l->u.list.items + i, l->u.list.items + i + 1,
            (l->u.list.len - i - 1) * sizeof(mp_value *));
    l->u.list.len--;
    return v;
}

static int list_init(mgr_obj *o, const mp_value *args)
{
    if (mp__mgr_nargs(args, 0, 1, "list") < 0)
        return mp_last_error_code();
    const mp_value *init = mp__mgr_arg(args, 0);
    if (init && mp_value_type(init) != MP_NIL && mp_value_type(init) != MP_LIST)
        return mp__error(MP_ETYPE, "list(): expected a list, got %s",
                         mp_type_name(mp_value_type(init)));
    o->v = init && mp_value_type(init) == MP_LIST ? take_arg(args, 0) : mp_value_list();
    return o->v ? 0 : mp_last_error_code();
}

/* An index argument, negative from the end; MP_ERANGE outside [0, len). */
static int index_arg(const mp_value *a, size_t i, size_t len, size_t *out, const char *what)
{
    const mp_value *v = mp__mgr_arg(a, i);
    if (mp_value_type(v) != MP_INT)
        return mp__error(MP_ETYPE, "list indices must be integers, not %s",
                         mp_type_name(mp_value_type(v)));
    int64_t k = mp_value_get_int(v);
    if (k < 0)
        k += (int64_t)len;
    if (k < 0 || (uint64_t)k >= len)
        return mp__error(MP_ERANGE, "%s", what);
    *out = (size_t)k;
    return 0;
}

static int l_getitem(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    size_t i;
    if (mp__mgr_nargs(a, 1, 1, "__getitem__") < 0 ||
        index_arg(a, 0, mp_value_len(o->v), &i, "list index out of range") < 0)
        return mp_last_error_code();
    return copy_out(mp_value_list_get(o->v, i), res);
}

static int l_setitem(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    size_t i;
    if (mp__mgr_nargs(a, 2, 2, "__setitem__") < 0 ||
        index_arg(a, 0, mp_value_len(o->v), &i, "list assignment index out of range") < 0)
        return mp_last_error_code();
    mp_value *v = take_arg(a, 1);
    if (!v)
        return mp_last_error_code();
    mp_value_free(o->v->u.list.items[i]);
    o->v->u.list.items[i] = v;
    return 0;
}

static int l_delitem(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    size_t i;
    if (mp__mgr_nargs(a, 1, 1, "__delitem__") < 0 ||
        index_arg(a, 0, mp_value_len(o->v), &i, "list assignment index out of range") < 0)
        return mp_last_error_code();
    mp_value_free(list_remove(o->v, i));
    return 0;
}

/* Python's slice.indices(len): start, stop, step and the slice length. */
typedef struct slice {
    int64_t start, stop, step, n;
} slice;

static int slice_bound(const mp_value *v, int64_t dflt, int64_t *out)
{
    if (!v || mp_value_type(v) == MP_NIL) {
        *out = dflt;
        return 0;
    }
    if (mp_value_type(v) != MP_INT)
        return mp__error(MP_ETYPE, "slice indices must be integers or None");
    *out = mp_value_get_int(v);
    return 0;
}

static void slice_adjust(int64_t *x, int64_t len, int64_t step)
{
    if (*x < 0) {
        *x += len;
        if (*x < 0)
            *x = step < 0 ? -1 : 0;
    } else if (*x >= len) {
        *x = step < 0 ? len - 1 : len;
    }
}

static int slice_args(const mp_value *a, size_t len, slice *s)
{
    if (slice_bound(mp__mgr_arg(a, 2), 1, &s->step) < 0)
        return mp_last_error_code();
    if (s->step == 0)
        return mp__error(MP_EINVAL, "slice step cannot be zero");
    if (s->step < -INT64_MAX)
        s->step = -INT64_MAX;
    if (slice_bound(mp__mgr_arg(a, 0), s->step < 0 ? INT64_MAX : 0, &s->start) < 0 ||
        slice_bound(mp__mgr_arg(a, 1), s->step < 0 ? INT64_MIN : INT64_MAX, &s->stop) < 0)
        return mp_last_error_code();
    int64_t n = (int64_t)len;
    slice_adjust(&s->start, n, s->step);
    slice_adjust(&s->stop, n, s->step);
    if (s->step < 0)
        s->n = s->stop < s->start ? (s->start - s->stop - 1) / (-s->step) + 1 : 0;
    else
        s->n = s->start < s->stop ? (s->stop - s->start - 1) / s->step + 1 : 0;
    return 0;
}

static int l_getslice(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    slice s;
    if (mp__mgr_nargs(a, 0, 3, "getslice") < 0 || slice_args(a, mp_value_len(o->v), &s) < 0)
        return mp_last_error_code();
    mp_value *l = mp_value_list();
    for (int64_t k = 0, i = s.start; l && k < s.n; k++, i += s.step)
        if (mp_value_list_append(l, mp_value_copy(mp_value_list_get(o->v, (size_t)i))) < 0) {
            mp_value_free(l);
            l = NULL;
        }
    return set_result(l, res);
}

static int l_delslice(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    slice s;
    if (mp__mgr_nargs(a, 0, 3, "delslice") < 0 || slice_args(a, mp_value_len(o->v), &s) < 0)
        return mp_last_error_code();
    /* Remove from the highest index down so earlier indices stay valid. */
    for (int64_t k = 0; k < s.n; k++) {
        int64_t i = s.step > 0 ? s.start + (s.n - 1 - k) * s.step : s.start + k * s.step;
        mp_value_free(list_remove(o->v, (size_t)i));
    }
    return 0;
}

static int l_setslice(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    slice s;
    if (mp__mgr_nargs(a, 4, 4, "setslice") < 0 || slice_args(a, mp_value_len(o->v), &s) < 0)
        return mp_last_error_code();
    const mp_value *items = mp__mgr_arg(a, 3);
    if (mp_value_type(items) != MP_LIST)
        return mp__error(MP_ETYPE, "can only assign a list to a slice");
    size_t m = mp_value_len(items);
    if (s.step != 1 && (int64_t)m != s.n)
        return mp__error(MP_EINVAL, "attempt to assign sequence of size %zu to extended "
                                    "slice of size %lld", m, (long long)s.n);
    if (s.step == 1) {
        int64_t stop = s.stop < s.start ? s.start : s.stop;
        for (int64_t i = stop - 1; i >= s.start; i--)
            mp_value_free(list_remove(o->v, (size_t)i));
        for (size_t k = 0; k < m; k++) {
            int r = list_insert(o->v, (size_t)s.start + k, take_arg(items, k));
            if (r < 0)
                return r;
        }
        return 0;
    }
    for (int64_t k = 0, i = s.start; k < s.n; k++, i += s.step) {
        mp_value_free(o->v->u.list.items[i]);
        o->v->u.list.items[i] = take_arg(items, (size_t)k);
    }
    return 0;
}

static int l_append(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 1, 1, "append") < 0)
        return mp_last_error_code();
    return mp_value_list_append(o->v, take_arg(a, 0));
}

static int l_extend(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 1, 1, "extend") < 0)
        return mp_last_error_code();
    const mp_value *items = mp__mgr_arg(a, 0);
    if (mp_value_type(items) != MP_LIST)
        return mp__error(MP_ETYPE, "extend(): expected a list, got %s",
                         mp_type_name(mp_value_type(items)));
    for (size_t k = 0; k < mp_value_len(items); k++) {
        int r = mp_value_list_append(o->v, take_arg(items, k));
        if (r < 0)
            return r;
    }
    return 0;
}

static int l_insert(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 2, 2, "insert") < 0)
        return mp_last_error_code();
    const mp_value *iv = mp__mgr_arg(a, 0);
    if (mp_value_type(iv) != MP_INT)
        return mp__error(MP_ETYPE, "insert(): the index must be an integer");
    int64_t n = (int64_t)mp_value_len(o->v), i = mp_value_get_int(iv);
    if (i < 0)
        i = i + n < 0 ? 0 : i + n;
    if (i > n)
        i = n;
    return list_insert(o->v, (size_t)i, take_arg(a, 1));
}

static int l_pop(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    size_t n = mp_value_len(o->v), i = n ? n - 1 : 0;
    if (mp__mgr_nargs(a, 0, 1, "pop") < 0)
        return mp_last_error_code();
    if (n == 0)
        return mp__error(MP_ERANGE, "pop from empty list");
    if (mp_value_len(a) == 1 && index_arg(a, 0, n, &i, "pop index out of range") < 0)
        return mp_last_error_code();
    *res = list_remove(o->v, i);
    return 0;
}

static long find(const mp_value *l, const mp_value *x, size_t from, size_t to)
{
    for (size_t i = from; i < to && i < mp_value_len(l); i++)
        if (mp_value_equal(mp_value_list_get(l, i), x))
            return (long)i;
    return -1;
}

static int l_remove(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 1, 1, "remove") < 0)
        return mp_last_error_code();
    long i = find(o->v, mp__mgr_arg(a, 0), 0, mp_value_len(o->v));
    if (i < 0)
        return mp__error(MP_EINVAL, "list.remove(x): x not in list");
    mp_value_free(list_remove(o->v, (size_t)i));
    return 0;
}

static int l_index(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 1, 3, "index") < 0)
        return mp_last_error_code();
    int64_t n = (int64_t)mp_value_len(o->v), start, stop;
    if (slice_bound(mp__mgr_arg(a, 1), 0, &start) < 0 ||
        slice_bound(mp__mgr_arg(a, 2), INT64_MAX, &stop) < 0)
        return mp_last_error_code();
    slice_adjust(&start, n, 1);
    slice_adjust(&stop, n, 1);
    int r;
    long i = find(o->v, mp__mgr_arg(a, 0), (size_t)start, (size_t)(stop < start ? start : stop));
    if (i < 0) {
        char *rep = mp_value_repr(mp__mgr_arg(a, 0));
        r = mp__error(MP_EINVAL, "%s is not in list", rep ? rep : "?");
        mp_free(rep);
        return r;
    }
    return set_result(mp_value_int(i), res);
}

static int l_count(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 1, 1, "count") < 0)
        return mp_last_error_code();
    int64_t n = 0;
    for (size_t i = 0; i < mp_value_len(o->v); i++)
        n += mp_value_equal(mp_value_list_get(o->v, i), mp__mgr_arg(a, 0));
    return set_result(mp_value_int(n), res);
}

static int l_reverse(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a, (void)res;
    mp_value **it = o->v->u.list.items;
    for (size_t i = 0, j = o->v->u.list.len; i + 1 < j; i++, j--) {
        mp_value *t = it[i];
        it[i] = it[j - 1];
        it[j - 1] = t;
    }
    return 0;
}

/* A stable merge sort (Python's sort is stable: 1 and 1.0 keep their order). */
static void merge_sort(mp_value **v, mp_value **tmp, size_t n, bool rev)
{
    if (n < 2)
        return;
    size_t h = n / 2;
    merge_sort(v, tmp, h, rev);
    merge_sort(v + h, tmp, n - h, rev);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) {
        int cmp = mp_value_compare(v[j], v[i]);
        bool take_right = rev ? cmp > 0 : cmp < 0;
        tmp[k++] = take_right ? v[j++] : v[i++];
    }
    while (i < h)
        tmp[k++] = v[i++];
    while (j < n)
        tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof *v);
}

static int l_sort(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 0, 1, "sort") < 0)
        return mp_last_error_code();
    size_t n = o->v->u.list.len;
    mp_value **tmp = n ? malloc(n * sizeof *tmp) : NULL;
    if (n && !tmp)
        return mp__error(-ENOMEM, "sort of %zu items", n);
    merge_sort(o->v->u.list.items, tmp, n, mp__mgr_bool_arg(a, 0, false));
    free(tmp);
    return 0;
}

static int l_contains(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    if (mp__mgr_nargs(a, 1, 1, "__contains__") < 0)
        return mp_last_error_code();
    return set_result(mp_value_bool(find(o->v, mp__mgr_arg(a, 0), 0, mp_value_len(o->v)) >= 0),
                      res);
}

static const mgr_method list_methods[] = {
    {"__getitem__", l_getitem}, {"__setitem__", l_setitem}, {"__delitem__", l_delitem},
    {"getslice", l_getslice},   {"setslice", l_setslice},   {"delslice", l_delslice},
    {"append", l_append},       {"extend", l_extend},       {"__iadd__", l_extend},
    {"insert", l_insert},       {"pop", l_pop},             {"remove", l_remove},
    {"index", l_index},         {"count", l_count},         {"reverse", l_reverse},
    {"sort", l_sort},           {"__len__", any_len},       {"__contains__", l_contains},
    {"__getvalue__", any_getvalue}, {"copy", any_getvalue},
};

const mgr_type mp__mgr_list_type = {"list", list_init, data_fini, data_repr, NULL, list_methods,
                                    MP__ARRAY_LEN(list_methods)};

/* ---- Namespace ---------------------------------------------------------------------------- */

static int ns_init(mgr_obj *o, const mp_value *args)
{
    if (mp__mgr_nargs(args, 0, 1, "Namespace") < 0)
        return mp_last_error_code();
    return dict_init(o, args);
}

static const char *name_arg(const mp_value *a, const char *method)
{
    const char *s = mp_value_get_str(mp__mgr_arg(a, 0), NULL);
    if (!s)
        mp__error(MP_ETYPE, "%s(): attribute name must be string", method);
    return s;
}

static int ns_getattr(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    const char *name;
    if (mp__mgr_nargs(a, 1, 1, "__getattr__") < 0 || !(name = name_arg(a, "__getattr__")))
        return mp_last_error_code();
    const mp_value *v = mp_value_map_get_str(o->v, name);
    if (!v)
        return mp__error(MP_ENOTFOUND, "'Namespace' object has no attribute '%s'", name);
    return copy_out(v, res);
}

static int ns_setattr(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 2, 2, "__setattr__") < 0 || !name_arg(a, "__setattr__"))
        return mp_last_error_code();
    return mp_value_map_set(o->v, take_arg(a, 0), take_arg(a, 1));
}

static int ns_delattr(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    const char *name;
    if (mp__mgr_nargs(a, 1, 1, "__delattr__") < 0 || !(name = name_arg(a, "__delattr__")))
        return mp_last_error_code();
    long e = mp__value_map_index(o->v, mp__mgr_arg(a, 0));
    if (e < 0)
        return mp__error(MP_ENOTFOUND, "'Namespace' object has no attribute '%s'", name);
    return mp__value_map_remove(o->v, (size_t)e, NULL, NULL);
}

static int cmp_str(const void *x, const void *y)
{
    return strcmp(*(char *const *)x, *(char *const *)y);
}

/* Namespace(x=10, y='hello'): public names, sorted, as Python's Namespace.__repr__. */
static char *ns_repr(mgr_obj *o)
{
    size_t n = mp_value_len(o->v), k = 0;
    char **parts = calloc(n ? n : 1, sizeof *parts);
    if (!parts)
        return NULL;
    size_t total = 16;
    for (size_t i = 0; i < n; i++) {
        const char *name = mp_value_get_str(mp_value_map_key(o->v, i), NULL);
        if (!name || name[0] == '_')
            continue;
        char *r = mp_value_repr(mp_value_map_val(o->v, i));
        parts[k] = mp__strdup_printf("%s=%s", name, r ? r : "?");
        mp_free(r);
        if (parts[k])
            total += strlen(parts[k++]) + 2;
    }
    qsort(parts, k, sizeof *parts, cmp_str);
    char *s = malloc(total);
    if (s) {
        strcpy(s, "Namespace(");
        for (size_t i = 0; i < k; i++) {
            if (i)
                strcat(s, ", ");
            strcat(s, parts[i]);
        }
        strcat(s, ")");
    }
    for (size_t i = 0; i < k; i++)
        free(parts[i]);
    free(parts);
    return s;
}

static const mgr_method ns_methods[] = {
    {"__getattr__", ns_getattr}, {"__setattr__", ns_setattr}, {"__delattr__", ns_delattr},
    {"__getvalue__", any_getvalue},
};

const mgr_type mp__mgr_namespace_type = {"Namespace", ns_init, data_fini, ns_repr, NULL,
                                         ns_methods, MP__ARRAY_LEN(ns_methods)};

/* ---- Value ---------------------------------------------------------------------------------- */

static int typecode_arg(const mp_value *args, char *out, const char *what)
{
    size_t len;
    const char *tc = mp_value_get_str(mp__mgr_arg(args, 0), &len);
    if (!tc || len != 1)
        return mp__error(MP_ETYPE, "%s(): the typecode must be a one-character str", what);
    *out = tc[0];
    return 0;
}

static int value_init(mgr_obj *o, const mp_value *args)
{
    if (mp__mgr_nargs(args, 2, 3, "Value") < 0 || typecode_arg(args, &o->typecode, "Value") < 0)
        return mp_last_error_code();
    o->v = take_arg(args, 1);
    return o->v ? 0 : mp_last_error_code();
}

static int v_get(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return copy_out(o->v, res);
}

static int v_set(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 1, 1, "set") < 0)
        return mp_last_error_code();
    mp_value *v = take_arg(a, 0);
    if (!v)
        return mp_last_error_code();
    mp_value_free(o->v);
    o->v = v;
    return 0;
}

static char *value_repr(mgr_obj *o)
{
    char *r = mp_value_repr(o->v);
    char *s = mp__strdup_printf("Value('%c', %s)", o->typecode, r ? r : "?");
    mp_free(r);
    return s;
}

static const mgr_method value_methods[] = {
    {"get", v_get}, {"set", v_set}, {"__getvalue__", v_get},
};

const mgr_type mp__mgr_value_type = {"Value", value_init, data_fini, value_repr, NULL,
                                     value_methods, MP__ARRAY_LEN(value_methods)};

/* ---- Array ---------------------------------------------------------------------------------- */

static bool int_code(char t) { return strchr("bBhHiIlLqQ", t) != NULL; }
static bool float_code(char t) { return t == 'f' || t == 'd'; }

/* Coerce an item to the array's type (in place): ints for integer codes, floats for f/d. */
static int coerce(char tc, mp_value **item)
{
    mp_type t = mp_value_type(*item);
    if (int_code(tc)) {
        if (t == MP_INT)
            return 0;
        if (t == MP_BOOL) {
            mp_value *n = mp_value_int(mp_value_get_bool(*item));
            if (!n)
                return mp_last_error_code();
            mp_value_free(*item);
            *item = n;
            return 0;
        }
        return mp__error(MP_ETYPE, "'%s' object cannot be interpreted as an integer",
                         mp_type_name(t));
    }
    if (t == MP_FLOAT)
        return 0;
    if (t != MP_INT)
        return mp__error(MP_ETYPE, "must be real number, not %s", mp_type_name(t));
    mp_value *f = mp_value_float(mp_value_get_float(*item));
    if (!f)
        return mp_last_error_code();
    mp_value_free(*item);
    *item = f;
    return 0;
}

static int array_init(mgr_obj *o, const mp_value *args)
{
    if (mp__mgr_nargs(args, 2, 3, "Array") < 0 || typecode_arg(args, &o->typecode, "Array") < 0)
        return mp_last_error_code();
    if (!int_code(o->typecode) && !float_code(o->typecode))
        return mp__error(MP_EINVAL, "bad typecode (must be b, B, h, H, i, I, l, L, q, Q, f or d)");
    const mp_value *init = mp__mgr_arg(args, 1);
    if (mp_value_type(init) == MP_INT) { /* a size: zeros */
        int64_t n = mp_value_get_int(init);
        if (n < 0 || n > (1 << 24))
            return mp__error(MP_EINVAL, "Array(): size %lld out of range", (long long)n);
        o->v = mp_value_list();
        for (int64_t i = 0; o->v && i < n; i++)
            if (mp_value_list_append(o->v, int_code(o->typecode) ? mp_value_int(0)
                                                               : mp_value_float(0)) < 0)
                return mp_last_error_code();
        return o->v ? 0 : mp_last_error_code();
    }
    if (mp_value_type(init) != MP_LIST)
        return mp__error(MP_ETYPE, "Array(): expected a list or a size");
    o->v = take_arg(args, 1);
    for (size_t i = 0; o->v && i < o->v->u.list.len; i++)
        if (coerce(o->typecode, &o->v->u.list.items[i]) < 0)
            return mp_last_error_code();
    return o->v ? 0 : mp_last_error_code();
}

static int a_setitem(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    size_t i;
    if (mp__mgr_nargs(a, 2, 2, "__setitem__") < 0 ||
        index_arg(a, 0, mp_value_len(o->v), &i, "array assignment index out of range") < 0)
        return mp_last_error_code();
    mp_value *v = take_arg(a, 1);
    int r = v ? coerce(o->typecode, &v) : mp_last_error_code();
    if (r < 0) {
        mp_value_free(v);
        return r;
    }
    mp_value_free(o->v->u.list.items[i]);
    o->v->u.list.items[i] = v;
    return 0;
}

static int a_getitem(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c;
    size_t i;
    if (mp__mgr_nargs(a, 1, 1, "__getitem__") < 0 ||
        index_arg(a, 0, mp_value_len(o->v), &i, "array index out of range") < 0)
        return mp_last_error_code();
    return copy_out(mp_value_list_get(o->v, i), res);
}

static char *array_repr(mgr_obj *o)
{
    if (mp_value_len(o->v) == 0)
        return mp__strdup_printf("array('%c')", o->typecode);
    char *r = mp_value_repr(o->v);
    char *s = mp__strdup_printf("array('%c', %s)", o->typecode, r ? r : "?");
    mp_free(r);
    return s;
}

static const mgr_method array_methods[] = {
    {"__len__", any_len},         {"__getitem__", a_getitem}, {"__setitem__", a_setitem},
    {"getslice", l_getslice},     {"__getvalue__", any_getvalue},
};

const mgr_type mp__mgr_array_type = {"Array", array_init, data_fini, array_repr, NULL,
                                     array_methods, MP__ARRAY_LEN(array_methods)};
