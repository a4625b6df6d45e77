/* Jansson-style format strings: mp_value_pack builds a value, mp_value_unpack reads
 * one. The format is walked once, left to right, consuming varargs as it goes. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/value.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static void skip_separators(const char **f)
{
    while (**f == ' ' || **f == '\t' || **f == '\n' || **f == ',' || **f == ':')
        (*f)++;
}

/* A '#' right after s/y means a length argument follows. */
static bool take_hash(const char **f)
{
    if (**f != '#')
        return false;
    (*f)++;
    return true;
}

static int bad_format(const char *fmt, const char *at, const char *why)
{
    return mp__error(MP_EINVAL, "format \"%s\" at offset %d: %s", fmt, (int)(at - fmt), why);
}

/* ---- pack ----------------------------------------------------------------------- */

typedef struct packer {
    const char *fmt, *f;
    va_list ap;
} packer;

static int pack_item(packer *p, mp_value **out);

/* Items until `close`, added to the container *out. */
static int pack_items(packer *p, char close, mp_value *c)
{
    for (;;) {
        skip_separators(&p->f);
        if (*p->f == close) {
            p->f++;
            return 0;
        }
        if (!*p->f)
            return bad_format(p->fmt, p->f, close == ']' ? "missing ']'" : "missing '}'");
        mp_value *a = NULL, *b = NULL;
        int r = pack_item(p, &a);
        if (r < 0)
            return r;
        if (c->type == MP_LIST) {
            if ((r = mp_value_list_append(c, a)) < 0)
                return r;
            continue;
        }
        skip_separators(&p->f);
        if (*p->f == '}' || !*p->f) {
            mp_value_free(a);
            return bad_format(p->fmt, p->f, "map key without a value");
        }
        if ((r = pack_item(p, &b)) < 0) {
            mp_value_free(a);
            return r;
        }
        if ((r = mp_value_map_set(c, a, b)) < 0)
            return r;
    }
}

static mp_value *pack_string(packer *p)
{
    const char *s = va_arg(p->ap, const char *);
    if (take_hash(&p->f)) {
        size_t n = va_arg(p->ap, size_t);
        return mp_value_strn(s, n);
    }
    return s ? mp_value_str(s) : mp_value_nil();
}

static int pack_item(packer *p, mp_value **out)
{
    skip_separators(&p->f);
    const char *at = p->f;
    char c = *p->f++;
    mp_value *v = NULL;
    switch (c) {
    case 'n': v = mp_value_nil(); break;
    case 'b': v = mp_value_bool(va_arg(p->ap, int) != 0); break;
    case 'i': v = mp_value_int(va_arg(p->ap, int)); break;
    case 'I': v = mp_value_int(va_arg(p->ap, int64_t)); break;
    case 'f': v = mp_value_float(va_arg(p->ap, double)); break;
    case 's': v = pack_string(p); break;
    case 'y': {
        if (!take_hash(&p->f))
            return bad_format(p->fmt, at, "'y' needs '#' and a length");
        const void *data = va_arg(p->ap, const void *);
        size_t n = va_arg(p->ap, size_t);
        v = mp_value_bytes(data, n);
        break;
    }
    case 'o':
    case 'O': {
        mp_value *arg = va_arg(p->ap, mp_value *);
        if (!arg)
            return mp__error(MP_EINVAL, "format \"%s\": NULL value for '%c'", p->fmt, c);
        v = c == 'o' ? arg : mp_value_copy(arg);
        break;
    }
    case 'h': {
        const mp_kind *k = va_arg(p->ap, const mp_kind *);
        v = mp_value_handle(k, va_arg(p->ap, void *));
        break;
    }
    case '[':
    case '{': {
        v = c == '[' ? mp_value_list() : mp_value_map();
        int r = v ? pack_items(p, c == '[' ? ']' : '}', v) : mp_last_error_code();
        if (r < 0) {
            mp_value_free(v);
            return r;
        }
        break;
    }
    case '\0':
        return bad_format(p->fmt, at, "unexpected end");
    default:
        return bad_format(p->fmt, at, "unknown code");
    }
    if (!v)
        return mp_last_error_code() ? mp_last_error_code() : -ENOMEM;
    *out = v;
    return 0;
}

mp_value *mp_value_pack(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    mp_value *v = mp__value_vpack(fmt, ap);
    va_end(ap);
    return v;
}

/* ---- unpack --------------------------------------------------------------------- */

typedef struct unpacker {
    const char *fmt, *f;
    va_list ap;
    char path[256]; /* where we are, for messages: "item 1 / key 'name'" */
} unpacker;

static int unpack_item(unpacker *u, const mp_value *v, bool skip);

static int type_error(unpacker *u, const char *want, const mp_value *v)
{
    return mp__error(MP_ETYPE, "%s: expected %s, got %s", u->path[0] ? u->path : "value",
                     want, v ? mp_type_name(v->type) : "nothing");
}

/* Append a path segment; returns the old length to restore. */
static size_t path_push(unpacker *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static size_t path_push(unpacker *u, const char *fmt, ...)
{
    size_t old = strlen(u->path);
    if (old && old + 4 < sizeof u->path)
        strcat(u->path, " / ");
    size_t at = strlen(u->path);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(u->path + at, sizeof u->path - at, fmt, ap);
    va_end(ap);
    return old;
}

static int unpack_list(unpacker *u, const mp_value *v, bool skip)
{
    if (!skip && (!v || v->type != MP_LIST))
        return type_error(u, "list", v);
    size_t i = 0;
    for (;; i++) {
        skip_separators(&u->f);
        if (*u->f == ']') {
            u->f++;
            break;
        }
        if (!*u->f)
            return bad_format(u->fmt, u->f, "missing ']'");
        size_t old = path_push(u, "item %zu", i);
        int r = unpack_item(u, skip ? NULL : mp_value_list_get(v, i),
                            skip || i >= v->u.list.len);
        u->path[old] = '\0';
        if (r < 0)
            return r;
    }
    if (!skip && i != v->u.list.len)
        return mp__error(MP_ETYPE, "%s: expected a list of %zu items, got %zu",
                         u->path[0] ? u->path : "value", i, v->u.list.len);
    return 0;
}

static bool take_optional(unpacker *u)
{
    skip_separators(&u->f);
    if (*u->f != '?')
        return false;
    u->f++;
    return true;
}

static int unpack_map(unpacker *u, const mp_value *v, bool skip)
{
    if (!skip && (!v || v->type != MP_MAP))
        return type_error(u, "map", v);
    for (;;) {
        bool optional = take_optional(u);
        skip_separators(&u->f);
        if (*u->f == '}' && !optional) {
            u->f++;
            return 0;
        }
        if (*u->f != 's')
            return bad_format(u->fmt, u->f, "map keys are read with 's'");
        u->f++;
        const char *key = va_arg(u->ap, const char *);
        optional |= take_optional(u);
        const mp_value *item = skip ? NULL : mp_value_map_get_str(v, key);
        if (!skip && !item && !optional)
            return mp__error(MP_ENOTFOUND, "%s%skey '%s' not found", u->path,
                             u->path[0] ? ": " : "", key ? key : "(null)");
        size_t old = path_push(u, "key '%s'", key ? key : "(null)");
        int r = unpack_item(u, item, skip || !item);
        u->path[old] = '\0';
        if (r < 0)
            return r;
    }
}

static int unpack_int(unpacker *u, const mp_value *v, bool skip, bool wide)
{
    void *out = va_arg(u->ap, void *);
    if (skip)
        return 0;
    if (!v || v->type != MP_INT)
        return type_error(u, "int", v);
    if (wide) {
        *(int64_t *)out = v->u.i;
    } else {
        if (v->u.i < INT_MIN || v->u.i > INT_MAX)
            return mp__error(MP_ERANGE, "%s: %lld does not fit an int",
                             u->path[0] ? u->path : "value", (long long)v->u.i);
        *(int *)out = (int)v->u.i;
    }
    return 0;
}

/* 's', 's#' and 'y#': a borrowed pointer and maybe a length. */
static int unpack_buffer(unpacker *u, const mp_value *v, bool skip, mp_type t)
{
    const void **out = va_arg(u->ap, const void **);
    bool with_len = take_hash(&u->f);
    size_t *len = with_len ? va_arg(u->ap, size_t *) : NULL;
    if (t == MP_BYTES && !with_len)
        return bad_format(u->fmt, u->f - 1, "'y' needs '#' and a length");
    if (skip)
        return 0;
    if (!v || v->type != t)
        return type_error(u, mp_type_name(t), v);
    *out = v->u.s.data;
    if (len)
        *len = v->u.s.len;
    return 0;
}

static int unpack_handle(unpacker *u, const mp_value *v, bool skip)
{
    const mp_kind *want = va_arg(u->ap, const mp_kind *);
    void **out = va_arg(u->ap, void **);
    if (skip)
        return 0;
    if (!v || v->type != MP_HANDLE)
        return type_error(u, "handle", v);
    if (want && v->u.h.kind != want)
        return mp__error(MP_ETYPE, "%s: expected a '%s' handle, got '%s'",
                         u->path[0] ? u->path : "value", want->name, v->u.h.kind->name);
    *out = v->u.h.obj;
    return 0;
}

static int unpack_item(unpacker *u, const mp_value *v, bool skip)
{
    skip_separators(&u->f);
    const char *at = u->f;
    char c = *u->f++;
    switch (c) {
    case 'i':
    case 'I':
        return unpack_int(u, v, skip, c == 'I');
    case 'f': {
        double *out = va_arg(u->ap, double *);
        if (!skip && (!v || (v->type != MP_FLOAT && v->type != MP_INT)))
            return type_error(u, "float", v);
        if (!skip)
            *out = mp_value_get_float(v);
        return 0;
    }
    case 'b': {
        bool *out = va_arg(u->ap, bool *);
        if (!skip && (!v || v->type != MP_BOOL))
            return type_error(u, "bool", v);
        if (!skip)
            *out = v->u.b;
        return 0;
    }
    case 's':
        return unpack_buffer(u, v, skip, MP_STR);
    case 'y':
        return unpack_buffer(u, v, skip, MP_BYTES);
    case 'n':
        return skip || (v && v->type == MP_NIL) ? 0 : type_error(u, "nil", v);
    case 'o': {
        const mp_value **out = va_arg(u->ap, const mp_value **);
        if (!skip && !v)
            return type_error(u, "a value", v);
        if (!skip)
            *out = v;
        return 0;
    }
    case 'h':
        return unpack_handle(u, v, skip);
    case '[':
        return unpack_list(u, v, skip);
    case '{':
        return unpack_map(u, v, skip);
    case '\0':
        return bad_format(u->fmt, at, "unexpected end");
    default:
        return bad_format(u->fmt, at, "unknown code");
    }
}

int mp_value_unpack(const mp_value *v, const char *fmt, ...)
{
    if (!fmt)
        return mp__error(MP_EINVAL, "mp_value_unpack: NULL format");
    unpacker u = {.fmt = fmt, .f = fmt};
    va_start(u.ap, fmt);
    int r = unpack_item(&u, v, false);
    va_end(u.ap);
    if (r == 0) {
        skip_separators(&u.f);
        if (*u.f)
            r = bad_format(fmt, u.f, "more than one value at the top level");
    }
    return r;
}

/* mp_value_pack with a va_list (for wrappers such as mp_proxy_callf). */
mp_value *mp__value_vpack(const char *fmt, va_list ap)
{
    if (!fmt) {
        mp__error(MP_EINVAL, "mp_value_pack: NULL format");
        return NULL;
    }
    packer p = {.fmt = fmt, .f = fmt};
    va_copy(p.ap, ap);
    mp_value *v = NULL;
    int r = pack_item(&p, &v);
    va_end(p.ap);
    skip_separators(&p.f);
    if (r == 0 && *p.f) {
        bad_format(fmt, p.f, "more than one value at the top level");
        mp_value_free(v);
        return NULL;
    }
    return r < 0 ? NULL : v;
}
