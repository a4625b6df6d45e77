/* subprocess: starting one child. The streams (pipes, files, fds) are set up and the
 * spawn request filled from the options; the child is started by mp__spawn
 * (src/spawn.c) and watched through its pidfd. */
#define _GNU_SOURCE
#include "subprocess/sub.h"
#include "internal/common.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The command as the user wrote it: the argv joined, or the shell command line. */
static void describe(char *dst, size_t cap, char *const *argv)
{
    size_t len = 0;
    dst[0] = 0;
    if (argv[1] && argv[2] && !argv[3] && strcmp(argv[0], "/bin/sh") == 0 &&
        strcmp(argv[1], "-c") == 0)
        argv += 2;
    for (size_t i = 0; argv[i] && len + 1 < cap; i++) {
        int w = snprintf(dst + len, cap - len, "%s%s", i ? " " : "", argv[i]);
        if (w < 0)
            break;
        len += (size_t)w;
    }
    if (len >= cap && cap > 4)
        strcpy(dst + cap - 4, "...");
}

/* ---- starting a child ---------------------------------------------------------- */

/* fds opened for the child only; closed in the parent once it has started. */
typedef struct fdlist {
    int fd[8];
    int n;
} fdlist;

static void fdlist_close(fdlist *l)
{
    for (int i = 0; i < l->n; i++)
        mp__close(l->fd[i]);
    l->n = 0;
}

static const char *stream_name(int which)
{
    return which == 0 ? "stdin" : which == 1 ? "stdout" : "stderr";
}

/* A bigger pipe means fewer wake-ups per megabyte; a refusal (EPERM over the
 * per-user pipe quota) is harmless. */
static void grow_pipe(int fd) { (void)fcntl(fd, F_SETPIPE_SZ, PIPE_BIG); }

static int open_pipe(int which, mp__spawn_req *req, io *x, fdlist *tmp, bool big)
{
    int p[2];
    if (mp__pipe(p) < 0)
        return mp__errno("%s pipe", stream_name(which));
    int child = which == 0 ? p[0] : p[1];
    x->fd[which] = which == 0 ? p[1] : p[0];
    x->piped[which] = true;
    tmp->fd[tmp->n++] = child;
    req->fd_map[which] = child;
    if (big)
        grow_pipe(child);
    return 0;
}

static int open_file(int which, const char *path, bool append, mp__spawn_req *req, fdlist *tmp)
{
    int flags = O_CLOEXEC | (which == 0 ? O_RDONLY
                                        : O_WRONLY | O_CREAT | (append ? O_APPEND : O_TRUNC));
    int fd = mp__fd_high(open(path, flags, 0666));
    if (fd < 0)
        return mp__errno("%s: open '%s'", stream_name(which), path);
    tmp->fd[tmp->n++] = fd;
    req->fd_map[which] = fd;
    return 0;
}

static int setup_stream(int which, const mp_stdio *s, bool big, mp__spawn_req *req, io *x,
                        fdlist *tmp)
{
    switch (s->kind) {
    case MP_IO_INHERIT:
        req->fd_map[which] = which;
        return 0;
    case MP_IO_PIPE:
        return open_pipe(which, req, x, tmp, big);
    case MP_IO_DEVNULL:
        return open_file(which, "/dev/null", false, req, tmp);
    case MP_IO_FILE:
        if (!s->path)
            return mp__error(MP_EINVAL, "%s: MP_IO_FILE without a path", stream_name(which));
        return open_file(which, s->path, s->append, req, tmp);
    case MP_IO_FD:
        if (s->fd < 0)
            return mp__error(MP_EINVAL, "%s: MP_IO_FD with fd %d", stream_name(which), s->fd);
        req->fd_map[which] = s->fd;
        return 0;
    case MP_IO_STDOUT:
        if (which != 2)
            return mp__error(MP_EINVAL, "%s: MP_IO_STDOUT is for stderr only",
                             stream_name(which));
        req->fd_map[2] = req->fd_map[1];
        return 0;
    }
    return mp__error(MP_EINVAL, "%s: unknown mp_stdio kind %d", stream_name(which),
                     (int)s->kind);
}

/* The three streams after the shorthands (capture_output, input) are applied. */
static int resolve_streams(const mp_subprocess_opts *o, bool stdin_pipe, mp_stdio s[3])
{
    s[0] = o->in;
    s[1] = o->out;
    s[2] = o->err;
    if (o->capture_output) {
        if (s[1].kind == MP_IO_INHERIT)
            s[1].kind = MP_IO_PIPE;
        if (s[2].kind == MP_IO_INHERIT)
            s[2].kind = MP_IO_PIPE;
    }
    if (stdin_pipe) {
        if (s[0].kind != MP_IO_INHERIT && s[0].kind != MP_IO_PIPE)
            return mp__error(MP_EINVAL, "input and a stdin setting may not both be used");
        s[0].kind = MP_IO_PIPE;
    }
    return 0;
}

static void fill_request(mp__spawn_req *req, const mp_subprocess_opts *o, char *const *argv,
                         const char *file)
{
    memset(req, 0, sizeof *req);
    req->file = file;
    req->argv = argv;
    req->cwd = o->cwd;
    req->umask = o->set_umask ? (int)(o->umask & 0777) : -1;
    req->new_session = o->new_session;
    req->new_pgroup = o->new_pgroup || (o->kill_group && !o->new_session);
    req->restore_signals = !o->keep_signals;
    req->close_fds = !o->inherit_fds;
    req->pass_fds = o->pass_fds;
    req->npass = o->pass_fds ? o->npass : 0;
    req->nmap = 3;
    req->join_pgroup = o->process_group;
    req->preexec = o->preexec_fn;
    req->preexec_arg = o->preexec_arg;
}

/* pipesize=: every pipe made for the child (the parent's end; one pipe, one size). */
static int set_pipesize(const mp_subprocess_opts *o, const io *x)
{
    for (int i = 0; i < 3 && o->pipesize > 0; i++)
        if (x->piped[i] && fcntl(x->fd[i], F_SETPIPE_SZ, o->pipesize) < 0)
            return mp__errno("pipesize %d for the %s pipe", o->pipesize, stream_name(i));
    return 0;
}

static int spawn_into(mp_popen *p, const mp_subprocess_opts *o, char *const *argv,
                      const char *file, bool stdin_pipe)
{
    mp_stdio s[3];
    int rc = resolve_streams(o, stdin_pipe, s);
    if (rc < 0)
        return rc;
    mp__spawn_req req;
    fill_request(&req, o, argv, file);
    fdlist tmp = {.n = 0};
    bool big_in = o->input_len > 64 * 1024;
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = setup_stream(i, &s[i], i == 0 ? big_in : i == 1, &req, &p->io, &tmp);
    char **env = NULL;
    gid_t *groups = NULL;
    if (rc == 0)
        rc = set_pipesize(o, &p->io);
    if (rc == 0)
        rc = mp__sub_creds(o, &req, &groups);
    if (rc == 0)
        rc = mp__build_env(o, &env);
    req.envp = env;
    if (rc == 0)
        rc = mp__spawn(&req, &p->pid, &p->pidfd);
    fdlist_close(&tmp);
    free(env);
    free(groups);
    return rc;
}

int mp__popen_create(char *const *argv, const char *file, const mp_subprocess_opts *o,
                        bool stdin_pipe, mp_popen **out)
{
    static const mp_subprocess_opts defaults;
    *out = NULL;
    if (!o)
        o = &defaults;
    if (!argv || !argv[0])
        return mp__error(MP_EINVAL, "argv is NULL or empty");
    if (o->npass && !o->pass_fds)
        return mp__error(MP_EINVAL, "npass is %zu but pass_fds is NULL", o->npass);
    if (mp__limit_check(o->time_limit, "time_limit") < 0)
        return mp_last_error_code();
    mp_popen *p = mp__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    mp__io_init(&p->io);
    p->pidfd = -1;
    p->group = o->kill_group;
    describe(p->desc, sizeof p->desc, argv);
    int rc = spawn_into(p, o, argv, file, stdin_pipe);
    if (rc < 0) {
        mp__io_release(&p->io);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

const char *mp__sh_file(const mp_subprocess_opts *o)
{
    return o && o->executable ? o->executable : "/bin/sh";
}
