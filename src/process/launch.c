/* The launch record a spawn or forkserver child receives.
 *
 * DESIGN
 * - The record is a value (value.h) in the library's one wire format, MessagePack
 *   through mp_value_encode, not a format of its own: a map
 *     {"method": int, "daemon": bool, "log_level": int, "log_on": bool,
 *      "parent_pid": int, "nfds": int, "path": str, "sym": str, "offset": int,
 *      "name": str, "identity": str, "args": bytes}
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
        "{s:i, s:b, s:i, s:b, s:i, s:i, s:s, s:s, s:I, s:s, s:s, s:y#}", "method",
        (int)l->method, "daemon", (int)l->daemon, "log_level", (int)l->log_level, "log_on",
        (int)l->log_on, "parent_pid", (int)l->parent_pid, "nfds", (int)l->nfds, "path",
        l->loc.path, "sym", l->loc.sym, "offset", (int64_t)l->loc.offset, "name",
        l->name ? l->name : "", "identity", l->identity ? l->identity : "", "args",
        l->args ? l->args : "", l->args_len);
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

/* Fields of the decoded map v into l (strings borrowed from v). */
static int read_fields(const mp_value *v, mp__launch *l)
{
    int method = 0, level = 0, ppid = 0, nfds = 0;
    bool daemon = false, log_on = false;
    const char *path, *sym;
    size_t plen, slen;
    int64_t offset = 0;
    int r = mp_value_unpack(v, "{s:i, s:b, s:i, s:b, s:i, s:i, s:s#, s:s#, s:I, s:s, s:s, s:y#}",
                            "method", &method, "daemon", &daemon, "log_level", &level,
                            "log_on", &log_on, "parent_pid", &ppid, "nfds", &nfds, "path",
                            &path, &plen, "sym", &sym, &slen, "offset", &offset, "name",
                            &l->name, "identity", &l->identity, "args", &l->args,
                            &l->args_len);
    if (r < 0)
        return malformed(mp_last_error());
    if (method < MP_START_FORK || method > MP_START_FORKSERVER)
        return malformed("'method' is not a start method");
    if (nfds < 0 || nfds > MP__PROC_MAX_FDS)
        return malformed("'nfds' is out of range");
    if (offset < 0)
        return malformed("'offset' is negative");
    if ((r = copy_fixed("path", path, plen, l->loc.path, sizeof l->loc.path)) < 0 ||
        (r = copy_fixed("sym", sym, slen, l->loc.sym, sizeof l->loc.sym)) < 0)
        return r;
    l->method = (uint32_t)method;
    l->daemon = daemon;
    l->log_level = level;
    l->log_on = log_on;
    l->parent_pid = ppid;
    l->nfds = (uint32_t)nfds;
    l->loc.offset = (uint64_t)offset;
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
        return malformed(mp_last_error());
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
    l->name = l->identity = l->args = NULL;
    l->args_len = 0;
}
