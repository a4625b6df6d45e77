/* The launch record a spawn or forkserver child receives.
 *
 * DESIGN
 * - The record is a value (value.h) in the library's one wire format, MessagePack
 *   through mp_value_encode, not a format of its own: a map
 *     {"method": int, "daemon": bool, "log_level": int, "log_on": bool,
 *      "parent_pid": int, "nfds": int, "path": str, "sym": str, "offset": int,
 *      "name": str, "identity": str, "args": bytes, "parent_name": str,
 *      "authkey": bytes}
 *   "path", "sym" and "offset" locate the target (target.c); "nfds" counts the fds
 *   that travel beside the record (SCM_RIGHTS, frame.c) for the handles in "args".
 * - The arguments stay an encoded value of their own, as bytes: the forkserver reads
 *   the record to find the target before it forks, and must not import the handles
 *   (the child does, with the fds). For the same reason the record itself is decoded
 *   plain (mp__value_decode_plain): a handle in it is an error, no kind's import runs.
 * - The receiver treats the record as untrusted: the decoder refuses malformed bytes,
 *   and every field is checked for presence, type and range; any fault is MP_EPROTO
 *   "malformed launch record: ..." naming the field. An unpacked record's strings point
 *   into the decoded value it keeps (l->rec), freed by mp__launch_clear. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/value.h"
#include "process/proc.h"

#include <stdlib.h>
#include <string.h>

int mp__launch_pack(const mp__launch *l, char **buf, size_t *len)
{
    mp_value *v = mp_value_pack(
        "{s:i, s:b, s:i, s:b, s:i, s:i, s:s, s:s, s:I, s:s, s:s, s:y#, s:s, s:y#}", "method",
        (int)l->method, "daemon", (int)l->daemon, "log_level", (int)l->log_level, "log_on",
        (int)l->log_on, "parent_pid", (int)l->parent_pid, "nfds", (int)l->nfds, "path",
        l->loc.path, "sym", l->loc.sym, "offset", (int64_t)l->loc.offset, "name",
        l->name ? l->name : "", "identity", l->identity ? l->identity : "", "args",
        l->args ? l->args : "", l->args_len, "parent_name",
        l->parent_name ? l->parent_name : "", "authkey", l->authkey ? l->authkey : "",
        l->authkey ? l->authkey_len : 0);
    int r = v ? mp_value_encode(v, buf, len, NULL, 0, NULL) : mp_last_error_code();
    mp_value_free(v);
    return r < 0 ? mp__error(r, "packing a launch record") : 0;
}

static int malformed(const char *why)
{
    char msg[512];
    snprintf(msg, sizeof msg, "%s", why);
    return mp__error(MP_EPROTO, "malformed launch record: %s", msg);
}

/* A str field copied into a fixed array: no NUL inside, room for the one after. */
static int copy_fixed(const char *field, const char *s, size_t n, char *dst, size_t cap)
{
    if (n >= cap || memchr(s, '\0', n)) {
        char why[96];
        snprintf(why, sizeof why, "'%s' is too long or holds a NUL", field);
        return malformed(why);
    }
    memcpy(dst, s, n + 1);
    return 0;
}

/* The record's fields: their keys and types. */
enum { F_METHOD, F_DAEMON, F_LEVEL, F_LOG_ON, F_PPID, F_NFDS, F_PATH, F_SYM, F_OFFSET,
       F_NAME, F_IDENTITY, F_ARGS, F_PARENT, F_KEY, F_COUNT };
static const struct {
    const char *key;
    mp_type type;
} fields[F_COUNT] = {
    [F_METHOD] = {"method", MP_INT},     [F_DAEMON] = {"daemon", MP_BOOL},
    [F_LEVEL] = {"log_level", MP_INT},   [F_LOG_ON] = {"log_on", MP_BOOL},
    [F_PPID] = {"parent_pid", MP_INT},   [F_NFDS] = {"nfds", MP_INT},
    [F_PATH] = {"path", MP_STR},         [F_SYM] = {"sym", MP_STR},
    [F_OFFSET] = {"offset", MP_INT},     [F_NAME] = {"name", MP_STR},
    [F_IDENTITY] = {"identity", MP_STR}, [F_ARGS] = {"args", MP_BYTES},
    [F_PARENT] = {"parent_name", MP_STR}, [F_KEY] = {"authkey", MP_BYTES},
};

/* One pass over the map's entries (the server reads a record per start: no lookups by
 * key); other keys are ignored. Every field present with its type, or MP_EPROTO. */
static int find_fields(const mp_value *v, const mp_value *f[F_COUNT])
{
    for (size_t i = 0, n = mp_value_len(v); i < n; i++) {
        const char *k = mp_value_get_str(mp_value_map_key(v, i), NULL);
        for (int j = 0; k && j < F_COUNT; j++)
            if (strcmp(k, fields[j].key) == 0)
                f[j] = mp_value_map_val(v, i);
    }
    for (int j = 0; j < F_COUNT; j++) {
        if (!f[j] || mp_value_type(f[j]) != fields[j].type) {
            char why[96];
            snprintf(why, sizeof why, "'%s' is %s, expected %s", fields[j].key,
                     f[j] ? mp_type_name(mp_value_type(f[j])) : "missing",
                     mp_type_name(fields[j].type));
            return malformed(why);
        }
    }
    return 0;
}

static bool in_range(const mp_value *v, int64_t lo, int64_t hi)
{
    int64_t i = mp_value_get_int(v);
    return i >= lo && i <= hi;
}

/* Fields of the decoded map v into l (strings borrowed from v). */
static int read_fields(const mp_value *v, mp__launch *l)
{
    const mp_value *f[F_COUNT] = {0};
    int r = find_fields(v, f);
    if (r < 0)
        return r;
    if (!in_range(f[F_METHOD], MP_START_FORK, MP_START_FORKSERVER))
        return malformed("'method' is not a start method");
    if (!in_range(f[F_NFDS], 0, MP__PROC_MAX_FDS))
        return malformed("'nfds' is out of range");
    if (!in_range(f[F_OFFSET], 0, INT64_MAX))
        return malformed("'offset' is negative");
    if (!in_range(f[F_LEVEL], INT32_MIN, INT32_MAX) || !in_range(f[F_PPID], 0, INT32_MAX))
        return malformed("'log_level' or 'parent_pid' is out of range");
    size_t plen, slen;
    const char *path = mp_value_get_str(f[F_PATH], &plen);
    const char *sym = mp_value_get_str(f[F_SYM], &slen);
    if ((r = copy_fixed("path", path, plen, l->loc.path, sizeof l->loc.path)) < 0 ||
        (r = copy_fixed("sym", sym, slen, l->loc.sym, sizeof l->loc.sym)) < 0)
        return r;
    l->method = (uint32_t)mp_value_get_int(f[F_METHOD]);
    l->daemon = mp_value_get_bool(f[F_DAEMON]);
    l->log_level = (int32_t)mp_value_get_int(f[F_LEVEL]);
    l->log_on = mp_value_get_bool(f[F_LOG_ON]);
    l->parent_pid = (int32_t)mp_value_get_int(f[F_PPID]);
    l->nfds = (uint32_t)mp_value_get_int(f[F_NFDS]);
    l->loc.offset = (uint64_t)mp_value_get_int(f[F_OFFSET]);
    l->name = mp_value_get_str(f[F_NAME], NULL);
    l->identity = mp_value_get_str(f[F_IDENTITY], NULL);
    l->args = mp_value_get_bytes(f[F_ARGS], &l->args_len);
    l->parent_name = mp_value_get_str(f[F_PARENT], NULL);
    l->authkey = mp_value_get_bytes(f[F_KEY], &l->authkey_len);
    if (l->authkey_len > MP_AUTHKEY_MAX)
        return malformed("'authkey' is too long");
    return 0;
}

int mp__launch_unpack(const char *buf, size_t len, mp__launch *l)
{
    memset(l, 0, sizeof *l);
    mp_value *v = NULL;
    int r = mp__value_decode_plain(buf, len, &v);
    if (r == -ENOMEM)
        return r;
    if (r < 0)
        return malformed(mp__last_error_detail());
    if (mp_value_type(v) != MP_MAP) {
        mp_value_free(v);
        return malformed("not a map");
    }
    l->rec = v;
    if ((r = read_fields(v, l)) < 0)
        mp__launch_clear(l);
    return r;
}

void mp__launch_clear(mp__launch *l)
{
    mp_value_free(l->rec);
    l->rec = NULL;
    l->name = l->identity = l->args = l->parent_name = NULL;
    l->authkey = NULL;
    l->args_len = l->authkey_len = 0;
}
