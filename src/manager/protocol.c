/* The manager's wire protocol: data, never code.
 *
 * A request is the MessagePack array [method (str), object id (uint), args (array)]; a
 * reply is [0, result] or [error code (negative int), message (str)]. Both ride the
 * connection's length-prefixed framing. Requests are untrusted: before the value
 * decoder runs (it imports library handles as it goes), the bytes are checked to hold
 * no handle but proxies, whose import in a server thread only records a reference. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/value.h"
#include "manager/mgr.h"

#include <msgpack.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_DEPTH 32 /* a request holding handles may nest this deep */

/* True when some byte could start a MessagePack ext: a buffer with none of them holds no
 * handle at all, which is the common case and costs one pass of memchr-like scanning. */
static bool may_hold_ext(const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if ((c >= 0xc7 && c <= 0xc9) || (c >= 0xd4 && c <= 0xd8))
            return true;
    }
    return false;
}

static int check_ext(const msgpack_object_ext *e)
{
    if (e->type != 1)
        return mp__error(MP_EPROTO, "request: unknown extension type %d", e->type);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int r = msgpack_unpack_next(&u, e->ptr, e->size, &off) == MSGPACK_UNPACK_SUCCESS ? 0 : -1;
    const msgpack_object *o = &u.data;
    if (r == 0 && (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 1 ||
                   o->via.array.ptr[0].type != MSGPACK_OBJECT_STR))
        r = -1;
    if (r == 0) {
        const msgpack_object_str *s = &o->via.array.ptr[0].via.str;
        if (s->size != strlen(mp_kind_proxy.name) ||
            memcmp(s->ptr, mp_kind_proxy.name, s->size) != 0)
            r = mp__error(MP_EPROTO, "request: a '%.*s' handle cannot be sent to a manager "
                                     "(only proxies)",
                          (int)(s->size > 64 ? 64 : s->size), s->ptr);
        else if (o->via.array.size > 2 && o->via.array.ptr[2].type == MSGPACK_OBJECT_ARRAY &&
                 o->via.array.ptr[2].via.array.size > 0)
            r = mp__error(MP_EPROTO, "request: a handle carries fds");
    } else {
        r = mp__error(MP_EPROTO, "request: malformed handle");
    }
    msgpack_unpacked_destroy(&u);
    return r;
}

static int scan(const msgpack_object *o, int depth)
{
    if (depth > SCAN_DEPTH)
        return mp__error(MP_EPROTO, "request: handles nested deeper than %d", SCAN_DEPTH);
    switch (o->type) {
    case MSGPACK_OBJECT_EXT:
        return check_ext(&o->via.ext);
    case MSGPACK_OBJECT_ARRAY:
        for (uint32_t i = 0; i < o->via.array.size; i++)
            if (scan(&o->via.array.ptr[i], depth + 1) < 0)
                return mp_last_error_code();
        return 0;
    case MSGPACK_OBJECT_MAP:
        for (uint32_t i = 0; i < o->via.map.size; i++)
            if (scan(&o->via.map.ptr[i].key, depth + 1) < 0 ||
                scan(&o->via.map.ptr[i].val, depth + 1) < 0)
                return mp_last_error_code();
        return 0;
    default:
        return 0;
    }
}

/* Only proxies may appear as handles; msgpack-c's unpacker bounds its own nesting. */
static int check_handles(const void *buf, size_t len)
{
    if (!may_hold_ext(buf, len))
        return 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    msgpack_unpack_return ur = msgpack_unpack_next(&u, buf, len, &off);
    int r;
    if (ur != MSGPACK_UNPACK_SUCCESS)
        r = mp__error(MP_EPROTO, "request: malformed MessagePack");
    else
        r = scan(&u.data, 0);
    msgpack_unpacked_destroy(&u);
    return r;
}

int mp__mgr_parse_request(const void *buf, size_t len, mgr_request *req)
{
    memset(req, 0, sizeof *req);
    if (!buf && len)
        return mp__error(MP_EINVAL, "request: NULL buffer");
    int r = check_handles(buf, len);
    if (r < 0)
        return r;
    mp_value *v = NULL;
    bool was = mp__mgr_in_server;
    mp__mgr_in_server = true; /* a proxy in a request is a reference, never a connection */
    r = mp_value_decode(buf, len, NULL, 0, &v);
    mp__mgr_in_server = was;
    if (r < 0)
        return mp__error(MP_EPROTO, "request: %s", mp_last_error());
    const char *method;
    int64_t id;
    const mp_value *args;
    if (mp_value_type(v) != MP_LIST || mp_value_len(v) != 3 ||
        mp_value_unpack(v, "[s I o]", &method, &id, &args) < 0 || id < 0 ||
        mp_value_type(args) != MP_LIST) {
        mp_value_free(v);
        return mp__error(MP_EPROTO, "request: expected [method, object id, [args...]]");
    }
    req->root = v;
    req->method = method;
    req->id = (uint64_t)id;
    req->args = args;
    req->has_handles = may_hold_ext(buf, len);
    return 0;
}

static int encode(const mp_value *v, char **buf, size_t *len)
{
    int fds[1];
    size_t nfds = 0;
    int r = mp_value_encode(v, buf, len, fds, 0, &nfds);
    if (r == -E2BIG)
        return mp__error(MP_EUNSUPPORTED, "only proxies can travel to or from a manager "
                                          "(a handle with fds cannot)");
    return r;
}

int mp__mgr_encode_request(const char *method, uint64_t id, const mp_value *args, char **buf,
                           size_t *len)
{
    mp_value *empty = NULL;
    if (!args)
        args = empty = mp_value_list();
    if (!args)
        return mp_last_error_code();
    if (mp_value_type(args) != MP_LIST) {
        mp_value_free(empty);
        return mp__error(MP_ETYPE, "%s: arguments must be a list, not %s", method,
                         mp_type_name(mp_value_type(args)));
    }
    mp_value *req = mp_value_pack("[s I O]", method, (int64_t)id, args);
    mp_value_free(empty);
    if (!req)
        return mp_last_error_code();
    int r = encode(req, buf, len);
    mp_value_free(req);
    return r;
}

/* The detail of a last-error message: without the "NAME: description: " prefix that
 * mp__error adds (the client adds its own). */
static const char *detail(int code, const char *msg)
{
    char prefix[256];
    snprintf(prefix, sizeof prefix, "%s: %s: ", mp_errname(code), mp_strerror(code));
    size_t n = strlen(prefix);
    return strncmp(msg, prefix, n) == 0 ? msg + n : msg;
}

int mp__mgr_encode_reply(int code, const char *message, const mp_value *result, char **buf,
                         size_t *len)
{
    if (code < 0 && message)
        message = detail(code, message);
    mp_value *rep = code < 0 ? mp_value_pack("[i s]", code, message ? message : "")
                             : mp_value_pack("[i O]", 0, result);
    if (!rep && code >= 0 && !result)
        rep = mp_value_pack("[i n]", 0);
    if (!rep)
        return mp_last_error_code();
    int r = encode(rep, buf, len);
    mp_value_free(rep);
    return r;
}

/* A code a server may send back: one of ours or an -errno; anything else is a protocol
 * error (a hostile server cannot make us report success or a nonsense code). */
static bool plausible_code(int64_t code)
{
    return (code <= -10001 && code >= -10999) || (code < 0 && code >= -4095);
}

int mp__mgr_parse_reply(const void *buf, size_t len, mp_value **result)
{
    mp_value *v = NULL;
    int r = mp_value_decode(buf, len, NULL, 0, &v);
    if (r < 0)
        return mp__error(MP_EPROTO, "manager reply: %s", mp_last_error());
    int64_t code;
    mp_value *payload;
    if (mp_value_type(v) != MP_LIST || mp_value_len(v) != 2 ||
        mp_value_unpack(v, "[I o]", &code, &payload) < 0 || code > 0 ||
        (code < 0 && (!plausible_code(code) || mp_value_type(payload) != MP_STR))) {
        mp_value_free(v);
        return mp__error(MP_EPROTO, "manager reply: expected [0, result] or [code, message]");
    }
    if (code < 0) {
        r = mp__error((int)code, "%s", mp_value_get_str(payload, NULL));
        mp_value_free(v);
        return r;
    }
    if (result) {
        /* Take the result out of the reply without copying (handles stay owned). */
        *result = v->u.list.items[1];
        v->u.list.items[1] = NULL;
        v->u.list.len = 1;
    }
    mp_value_free(v);
    return 0;
}

