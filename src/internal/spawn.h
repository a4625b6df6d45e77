/* The one spawning protocol, used by subprocess and by the spawn/forkserver start
 * methods: clone(CLONE_VM|CLONE_VFORK) with all signals blocked around it, default
 * dispositions restored in the child, and exec/chdir failures reported to the
 * parent through a close-on-exec pipe as -errno with the path in mp_last_error().
 * Never a child that exits 127. Safe to call from several threads at once. */
#ifndef MP_INTERNAL_SPAWN_H
#define MP_INTERNAL_SPAWN_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define MP__SPAWN_MAX_MAP 64

typedef struct mp__spawn_req {
    const char *file;       /* program; searched in PATH (of envp if given) if it has no '/' */
    char *const *argv;      /* argv[0] included; NULL-terminated */
    char *const *envp;      /* NULL: the parent's environ */
    const char *cwd;        /* NULL: inherit */
    int umask;              /* -1: inherit. Careful: a zero-filled request sets umask 0 */
    bool new_session;       /* setsid() */
    bool new_pgroup;        /* setpgid(0, 0) */
    bool restore_signals;   /* reset every disposition to SIG_DFL (ignored ones too) and
                               unblock all signals; handled signals are always reset */
    bool close_fds;         /* close every fd >= nmap that is not in pass_fds */
    /* fd_map[i] = the parent fd that becomes fd i in the child (i < nmap);
     * -1 = fd i is closed in the child. Typically nmap = 3 for stdin/out/err. */
    int fd_map[MP__SPAWN_MAX_MAP];
    int nmap;
    const int *pass_fds;    /* inherited as-is (their close-on-exec flag is cleared);
                               entries < nmap are ignored (fd_map decides those) */
    size_t npass;
    /* Appended (a zero-filled request changes nothing): */
    pid_t join_pgroup;      /* > 0: setpgid(0, join_pgroup), an existing group */
    bool set_groups;        /* setgroups(ngroups, groups) (ngroups 0: drop them all) */
    const gid_t *groups;
    size_t ngroups;
    bool set_gid;           /* setregid(gid, gid) */
    gid_t gid;
    bool set_uid;           /* setreuid(uid, uid), last: it may drop the right to the rest */
    uid_t uid;
    /* Run in the child after every step above, just before exec (Python's preexec_fn).
     * Its presence makes the spawn fork() instead of sharing our memory: the function
     * may then write globals of its own copy. A non-zero return fails the spawn. */
    int (*preexec)(void *arg);
    void *preexec_arg;
} mp__spawn_req;

/* Start a child (forked when req->preexec is set). On success stores its pid and an O_CLOEXEC pidfd and returns 0.
 * The child exits with SIGCHLD as its exit signal (waitpid works as usual); reap it
 * with waitid(P_PIDFD) or mp__pidfd_wait. The child runs on a 32 KiB stack taken from
 * the calling thread's stack (128 KiB in sanitizer builds). ThreadSanitizer builds
 * fork instead of clone(CLONE_VM). An inherited fd 0-2 (fd_map[i] == i) that is
 * closed in the parent stays closed in the child instead of failing the spawn.
 * On failure returns -errno (or an MP_E* code) with mp_last_error() naming the path
 * and the step that failed ("exec 'nosuchprog'", "chdir '/nope'"); no child remains. */
int mp__spawn(const mp__spawn_req *req, pid_t *pid, int *pidfd);

#endif
