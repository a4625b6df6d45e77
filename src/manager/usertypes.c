/* Registered types travelling to a server started with spawn or forkserver.
 *
 * A type's functions are described the way Process targets are (src/process/target.c:
 * the containing object's link-map name + offset + symbol), so a fresh exec of the
 * program finds the same code; never by a name a client could choose. Under fork the
 * same description resolves to the same addresses. */
#include "internal/common.h"
#include "manager/mgr.h"
#include "process/proc.h"

#include <stdlib.h>
#include <string.h>

typedef void (*any_fn)(void);

static mp_value *fn_desc(any_fn fn)
{
    if (!fn)
        return mp_value_nil();
    mp__target_loc *loc = malloc(sizeof *loc);
    if (!loc) {
        mp__error(-ENOMEM, "describing a function");
        return NULL;
    }
    mp_value *v = NULL;
    if (mp__target_locate((mp_target_fn)fn, loc) == 0)
        v = mp_value_pack("[s I s]", loc->path, (int64_t)loc->offset, loc->sym);
    free(loc);
    return v;
}

static int fn_resolve(const mp_value *v, any_fn *fn)
{
    *fn = NULL;
    if (mp_value_type(v) == MP_NIL)
        return 0;
    const char *path, *sym;
    int64_t off;
    if (mp_value_unpack(v, "[s I s]", &path, &off, &sym) < 0 ||
        strlen(path) >= sizeof((mp__target_loc *)0)->path ||
        strlen(sym) >= sizeof((mp__target_loc *)0)->sym)
        return mp__error(MP_EPROTO, "manager types: bad function description");
    mp__target_loc *loc = calloc(1, sizeof *loc);
    if (!loc)
        return mp__error(-ENOMEM, "resolving a function");
    strcpy(loc->path, path);
    strcpy(loc->sym, sym);
    loc->offset = (uint64_t)off;
    mp_target_fn t;
    int r = mp__target_resolve(loc, &t);
    free(loc);
    if (r == 0)
        *fn = (any_fn)t;
    return r;
}

static mp_value *type_desc(const mp_manager_type *t)
{
    mp_value *methods = mp_value_list();
    for (size_t j = 0; methods && j < t->nmethods; j++) {
        mp_value *m = mp_value_pack("[s o]", t->methods[j].name,
                                    fn_desc((any_fn)t->methods[j].fn));
        if (!m || mp_value_list_append(methods, m) < 0) {
            mp_value_free(methods);
            return NULL;
        }
    }
    if (!methods)
        return NULL;
    return mp_value_pack("[s o o o o]", t->name, fn_desc((any_fn)t->create),
                         fn_desc((any_fn)t->destroy), fn_desc((any_fn)t->repr), methods);
}

int mp__mgr_types_encode(const mp_manager_type *types, size_t n, mp_value **out)
{
    mp_value *l = mp_value_list();
    for (size_t i = 0; l && i < n; i++) {
        mp_value *d = type_desc(&types[i]);
        if (!d || mp_value_list_append(l, d) < 0) {
            mp_value_free(l);
            return mp_last_error_code();
        }
    }
    *out = l;
    return l ? 0 : mp_last_error_code();
}

static int decode_one(const mp_value *d, mp_manager_type *t)
{
    const char *name;
    mp_value *create, *destroy, *repr, *methods;
    if (mp_value_unpack(d, "[s o o o o]", &name, &create, &destroy, &repr, &methods) < 0 ||
        mp_value_type(methods) != MP_LIST)
        return mp__error(MP_EPROTO, "manager types: bad type description");
    any_fn f;
    t->name = strdup(name);
    if (!t->name)
        return mp__error(-ENOMEM, "manager types");
    if (fn_resolve(create, &f) < 0)
        return mp_last_error_code();
    t->create = (mp_manager_create_fn)f;
    if (fn_resolve(destroy, &f) < 0)
        return mp_last_error_code();
    t->destroy = (mp_manager_destroy_fn)f;
    if (fn_resolve(repr, &f) < 0)
        return mp_last_error_code();
    t->repr = (mp_manager_repr_fn)f;
    size_t n = mp_value_len(methods);
    mp_manager_method *ms = calloc(n ? n : 1, sizeof *ms);
    if (!ms)
        return mp__error(-ENOMEM, "manager types");
    t->methods = ms;
    t->nmethods = n;
    for (size_t j = 0; j < n; j++) {
        const char *mname;
        mp_value *fd;
        if (mp_value_unpack(mp_value_list_get(methods, j), "[s o]", &mname, &fd) < 0)
            return mp__error(MP_EPROTO, "manager types: bad method description");
        ms[j].name = strdup(mname);
        if (!ms[j].name || fn_resolve(fd, &f) < 0)
            return ms[j].name ? mp_last_error_code() : mp__error(-ENOMEM, "manager types");
        ms[j].fn = (mp_manager_method_fn)f;
    }
    if (!t->create)
        return mp__error(MP_EPROTO, "manager types: '%s' has no create function", name);
    return 0;
}

void mp__mgr_types_free(mp_manager_type *types, size_t n);
void mp__mgr_types_free(mp_manager_type *types, size_t n)
{
    for (size_t i = 0; types && i < n; i++) {
        for (size_t j = 0; types[i].methods && j < types[i].nmethods; j++)
            free((char *)types[i].methods[j].name);
        free((mp_manager_method *)types[i].methods);
        free((char *)types[i].name);
    }
    free(types);
}

int mp__mgr_types_decode(const mp_value *v, mp_manager_type **types, size_t *n)
{
    *types = NULL;
    *n = 0;
    if (mp_value_type(v) == MP_NIL)
        return 0;
    size_t count = mp_value_len(v);
    if (mp_value_type(v) != MP_LIST || count > MGR_MAX_TYPES)
        return mp__error(MP_EPROTO, "manager types: expected a list");
    mp_manager_type *t = calloc(count ? count : 1, sizeof *t);
    if (!t)
        return mp__error(-ENOMEM, "manager types");
    for (size_t i = 0; i < count; i++)
        if (decode_one(mp_value_list_get(v, i), &t[i]) < 0) {
            int code = mp_last_error_code();
            mp__mgr_types_free(t, count);
            return code;
        }
    *types = t;
    *n = count;
    return 0;
}
