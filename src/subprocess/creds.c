/* subprocess user=, group=, extra_groups=: names and numeric ids to uid/gid values. */
#define _GNU_SOURCE
#include "subprocess/sub.h"

#include "internal/common.h"

#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A decimal id ("1000"): 1 with *id set, 0 if s is not all digits. */
static int parse_id(const char *s, unsigned long *id)
{
    if (!*s || strspn(s, "0123456789") != strlen(s))
        return 0;
    char *end;
    errno = 0;
    *id = strtoul(s, &end, 10);
    return errno == 0 && *id < UINT_MAX;
}

static size_t nss_bufsize(int which)
{
    long n = sysconf(which);
    return n > 0 ? (size_t)n : 16384;
}

static int lookup_user(const char *name, uid_t *uid)
{
    unsigned long id;
    if (parse_id(name, &id)) {
        *uid = (uid_t)id;
        return 0;
    }
    size_t cap = nss_bufsize(_SC_GETPW_R_SIZE_MAX);
    char *buf = malloc(cap);
    if (!buf)
        return mp__error(-ENOMEM, "looking up user '%s'", name);
    struct passwd pw, *found = NULL;
    int e = getpwnam_r(name, &pw, buf, cap, &found);
    if (found)
        *uid = pw.pw_uid;
    free(buf);
    if (found)
        return 0;
    return e ? mp__error(-e, "user: looking up '%s'", name)
             : mp__error(MP_ENOTFOUND, "user: no user named '%s'", name);
}

static int lookup_group(const char *what, const char *name, gid_t *gid)
{
    unsigned long id;
    if (parse_id(name, &id)) {
        *gid = (gid_t)id;
        return 0;
    }
    size_t cap = nss_bufsize(_SC_GETGR_R_SIZE_MAX);
    char *buf = malloc(cap);
    if (!buf)
        return mp__error(-ENOMEM, "looking up group '%s'", name);
    struct group gr, *found = NULL;
    int e = getgrnam_r(name, &gr, buf, cap, &found);
    if (found)
        *gid = gr.gr_gid;
    free(buf);
    if (found)
        return 0;
    return e ? mp__error(-e, "%s: looking up '%s'", what, name)
             : mp__error(MP_ENOTFOUND, "%s: no group named '%s'", what, name);
}

static int lookup_groups(const char *const *names, gid_t **out, size_t *n)
{
    size_t k = 0;
    while (names[k])
        k++;
    if (k > (size_t)NGROUPS_MAX)
        return mp__error(MP_EINVAL, "extra_groups: %zu groups (at most %d)", k, NGROUPS_MAX);
    gid_t *g = malloc((k ? k : 1) * sizeof *g);
    if (!g)
        return mp__error(-ENOMEM, "extra_groups");
    for (size_t i = 0; i < k; i++) {
        int r = lookup_group("extra_groups", names[i], &g[i]);
        if (r < 0) {
            free(g);
            return r;
        }
    }
    *out = g;
    *n = k;
    return 0;
}

int mp__sub_creds(const mp_subprocess_opts *o, mp__spawn_req *req, gid_t **groups)
{
    *groups = NULL;
    int r = 0;
    if (o->user && (r = lookup_user(o->user, &req->uid)) < 0)
        return r;
    req->set_uid = o->user != NULL;
    if (o->group && (r = lookup_group("group", o->group, &req->gid)) < 0)
        return r;
    req->set_gid = o->group != NULL;
    if (o->extra_groups) {
        if ((r = lookup_groups(o->extra_groups, groups, &req->ngroups)) < 0)
            return r;
        req->groups = *groups;
        req->set_groups = true;
    }
    return 0;
}
