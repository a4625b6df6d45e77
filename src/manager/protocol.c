/* The manager's wire protocol: data, never code.
 *
 * A request is the MessagePack array [method (str), object id (uint), args (array)]; a
 * reply is [0, result] or [error code (negative int), message (str)]. Both ride the
 * connection's length-prefixed framing. Requests are untrusted: they are decoded with
 * mp__value_decode_only, which refuses every handle but a proxy before its kind's import
 * runs (a proxy's import in a server thread only records a reference), takes no fds,
 * and checks every count against the bytes left, so a short request cannot announce a
 * huge array (the decoded value costs at most ~64 bytes per item of the request). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/value.h"
#include "manager/mgr.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* True when some byte could start a MessagePack ext: a buffer with none of them holds no
 * handle at all (then no object can be kept alive by a container). */
static bool may_hold_ext(const unsigned char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = p[i];
        if ((c >= 0xc7 && c <= 0xc9) || (c >= 0xd4 && c <= 0xd8))
            return true;
    }
    return false;
}

int mp__mgr_parse_request(const void *buf, size_t len, mgr_request *req)
{
    memset(req, 0, sizeof *req);
    if (!buf && len)
        return mp__error(MP_EINVAL, "request: NULL buffer");
    mp_value *v = NULL;
    bool was = mp__mgr_in_server;
    mp__mgr_in_server = true; /* a proxy in a request is a reference, never a connection */
    int r = mp__value_decode_only(buf, len, &mp_kind_proxy, &v);
    mp__mgr_in_server = was;
    if (r < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s", mp__last_error_detail());
        return mp__error(MP_EPROTO, "request: %s", msg);
    }
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

int mp__mgr_encode_reply(int code, const char *message, const mp_value *result, char **buf,
                         size_t *len)
{
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
        return mp__error(MP_EPROTO, "manager reply: %s", mp__last_error_detail());
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

