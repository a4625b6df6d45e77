/* subprocess: user=/group=/extra_groups= resolved in the parent (names need NSS, which
 * the vfork-style child may not call) into the spawn request's credential fields. */
#ifndef MP_INTERNAL_SUB_CREDS_H
#define MP_INTERNAL_SUB_CREDS_H

#include "internal/spawn.h"
#include "multiproc/subprocess.h"

/* Fill req->set_uid/uid, set_gid/gid, set_groups/groups/ngroups from the options.
 * *groups receives the malloc'd gid array the request points to (free it after the
 * spawn; NULL when none). 0, MP_ENOTFOUND (an unknown name), MP_EINVAL, -ENOMEM. */
int mp__sub_creds(const mp_subprocess_opts *o, mp__spawn_req *req, gid_t **groups);

#endif
