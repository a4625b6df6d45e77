/* The subprocess module: run, call, check_output, the Popen handle, pipelines.
 *
 * DESIGN
 * - Who runs where: everything runs on the calling thread. Children are started by
 *   mp__spawn (src/spawn.c) and watched through their pidfds: no SIGCHLD handler,
 *   no helper thread. A handle is used by one thread at a time; different handles
 *   share nothing, so threads may run children side by side.
 * - The I/O engine (struct io) is one poll loop over the parent's ends of stdin,
 *   stdout and stderr. All its state (input offset, the buffers read so far) lives
 *   in the struct, so a call interrupted by a timeout or a signal loses nothing and
 *   can be repeated. Buffers grow geometrically and reads are large.
 * - SIGPIPE: while we write to a child's stdin the thread blocks SIGPIPE; a SIGPIPE
 *   we caused is consumed before unblocking, so the program never dies of a child
 *   that closed its stdin.
 * - Timeouts (bpo-37424): after a timeout run() kills the child (its group with
 *   kill_group), reaps it, then reads only what is already in the pipes, so a
 *   grandchild holding a pipe open cannot make it hang.
 */
#define _GNU_SOURCE
#include "multiproc/subprocess.h"
#include "internal/common.h"
#include "internal/spawn.h"
#include "internal/sub_creds.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define READ_MIN (64 * 1024)       /* smallest read; reads grow with the buffer */
#define READ_MAX (4 * 1024 * 1024) /* largest single read */
#define WRITE_MAX (1024 * 1024)    /* largest single write to a pipe */
#define PIPE_BIG (1024 * 1024)     /* pipe size for bulk streams (default max) */

/* ---- growing buffers ------------------------------------------------------------ */

typedef struct sbuf {
    char *data;
    size_t len, cap;
} sbuf;

/* Room for at least `extra` more bytes plus a NUL; doubles to stay amortised O(1). */
static int sbuf_reserve(sbuf *b, size_t extra)
{
    if (b->cap - b->len > extra)
        return 0;
    size_t cap = b->cap ? b->cap * 2 : READ_MIN;
    while (cap - b->len <= extra)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d)
        return mp__error(-ENOMEM, "growing an output buffer to %zu bytes", cap);
    b->data = d;
    b->cap = cap;
    return 0;
}

/* Hand the bytes over as a NUL-terminated malloc'd string; the buffer is emptied. */
static int sbuf_take(sbuf *b, size_t skip, char **out, size_t *len)
{
    if (sbuf_reserve(b, 0) < 0)
        return -ENOMEM;
    if (skip)
        memmove(b->data, b->data + skip, b->len - skip);
    b->len -= skip;
    b->data[b->len] = 0;
    *out = b->data;
    *len = b->len;
    memset(b, 0, sizeof *b);
    return 0;
}

/* ---- SIGPIPE guard -------------------------------------------------------------- */

typedef struct pipe_guard {
    sigset_t old;
    bool was_pending;
    bool active;
} pipe_guard;

static void sigpipe_block(pipe_guard *g)
{
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
    g->active = true;
}

/* A SIGPIPE our write raised is thread-directed and pending on this thread: take it
 * before unblocking, unless one was already pending before we started. */
static void sigpipe_unblock(pipe_guard *g, bool got_epipe)
{
    if (!g->active)
        return;
    if (got_epipe && !g->was_pending) {
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, SIGPIPE);
        struct timespec zero = {0, 0};
        while (sigtimedwait(&set, NULL, &zero) < 0 && errno == EINTR)
            ;
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
    g->active = false;
}

/* ---- the I/O engine ------------------------------------------------------------- */

typedef struct io {
    int fd[3];      /* parent ends: 0 writes stdin, 1 and 2 read; -1 when closed */
    bool piped[3];  /* the stream was a pipe (captured even if empty) */
    const char *input;
    size_t in_len, in_off;
    bool epipe;
    bool in_nonblock;
    sbuf buf[3];    /* buf[1] stdout, buf[2] stderr */
} io;

static void io_init(io *x)
{
    memset(x, 0, sizeof *x);
    x->fd[0] = x->fd[1] = x->fd[2] = -1;
}

static void io_close(io *x, int i)
{
    mp__close(x->fd[i]);
    x->fd[i] = -1;
}

static void io_release(io *x)
{
    for (int i = 0; i < 3; i++) {
        io_close(x, i);
        free(x->buf[i].data);
        x->buf[i] = (sbuf){0};
    }
}

/* One write of the remaining input. 0 or -errno; EPIPE ends the input quietly. */
static int io_write_some(io *x)
{
    size_t n = x->in_len - x->in_off;
    ssize_t w = n ? mp__write(x->fd[0], x->input + x->in_off, n < WRITE_MAX ? n : WRITE_MAX)
                  : 0;
    if (w < 0) {
        if (errno == EAGAIN)
            return 0;
        if (errno != EPIPE)
            return mp__errno("writing to the child's stdin");
        x->epipe = true; /* the child stopped reading: like Python, not an error */
        io_close(x, 0);
        return 0;
    }
    x->in_off += (size_t)w;
    if (x->in_off >= x->in_len)
        io_close(x, 0);
    return 0;
}

/* One read into buf[i]: >0 bytes, 0 at EOF (fd closed), -EAGAIN, or -errno. */
static ssize_t io_read_some(io *x, int i)
{
    sbuf *b = &x->buf[i];
    size_t want = b->len < READ_MIN ? READ_MIN : (b->len < READ_MAX ? b->len : READ_MAX);
    if (sbuf_reserve(b, want) < 0)
        return -ENOMEM;
    ssize_t r = mp__read(x->fd[i], b->data + b->len, b->cap - b->len - 1);
    if (r > 0) {
        b->len += (size_t)r;
        return r;
    }
    if (r == 0) {
        io_close(x, i);
        return 0;
    }
    if (errno == EAGAIN)
        return -EAGAIN;
    return mp__errno("reading the child's %s", i == 1 ? "stdout" : "stderr");
}

static int io_start_writing(io *x, pipe_guard *g)
{
    if (x->fd[0] < 0)
        return 0;
    if (x->in_off >= x->in_len) {
        io_close(x, 0);
        return 0;
    }
    if (!x->in_nonblock) {
        /* Non-blocking: a blocking write bigger than the free pipe space would wait
         * for the child, which may itself wait for us to read its output. */
        int rc = mp__set_nonblock(x->fd[0], true);
        if (rc < 0)
            return mp__error(rc, "stdin pipe: O_NONBLOCK");
        x->in_nonblock = true;
    }
    sigpipe_block(g);
    return 0;
}

/* One round: poll every open end and serve what is ready. 0, MP_ETIMEOUT, or an
 * error; MP_EINTERRUPTED if a deferred handler asked to stop. */
static int io_round(io *x, double deadline)
{
    struct pollfd pf[3];
    int idx[3], n = 0;
    for (int i = 0; i < 3; i++)
        if (x->fd[i] >= 0) {
            pf[n] = (struct pollfd){.fd = x->fd[i], .events = i == 0 ? POLLOUT : POLLIN};
            idx[n++] = i;
        }
    int r = poll(pf, (nfds_t)n, mp__ms_left(deadline));
    if (r == 0)
        return MP_ETIMEOUT;
    if (r < 0) {
        if (errno != EINTR)
            return mp__errno("poll");
        return mp__signal_dispatch_pending();
    }
    for (int k = 0; k < n; k++) {
        if (!pf[k].revents)
            continue;
        int i = idx[k];
        ssize_t rc = i == 0 ? io_write_some(x) : io_read_some(x, i);
        if (rc < 0 && rc != -EAGAIN)
            return (int)rc;
    }
    return 0;
}

/* Feed the input and read both outputs until every end is closed or the deadline. */
static int io_pump(io *x, double deadline)
{
    pipe_guard g = {.active = false};
    int rc = io_start_writing(x, &g);
    while (rc == 0 && (x->fd[0] >= 0 || x->fd[1] >= 0 || x->fd[2] >= 0)) {
        if (deadline >= 0 && mp__now() >= deadline)
            rc = MP_ETIMEOUT; /* a chatty child must not stretch the timeout */
        else
            rc = io_round(x, deadline);
    }
    sigpipe_unblock(&g, x->epipe);
    return rc;
}

/* After the child is gone: take what is already in the pipes, without waiting for
 * an EOF that a grandchild holding the pipe may never give. */
static void io_drain(io *x)
{
    for (int i = 1; i < 3; i++) {
        if (x->fd[i] < 0 || mp__set_nonblock(x->fd[i], true) < 0)
            continue;
        for (int rounds = 0; rounds < 64 && x->fd[i] >= 0; rounds++)
            if (io_read_some(x, i) <= 0)
                break;
    }
}

/* ---- the handle ----------------------------------------------------------------- */

struct mp_popen {
    pid_t pid;
    int pidfd;
    bool exited;
    bool forgotten;
    bool group;         /* signals go to the process group -pid */
    bool comm_started;
    int returncode;
    io io;
    size_t rd_off;      /* bytes of io.buf[1] already returned by readline */
    sbuf line;          /* readline's result */
    char desc[160];     /* the command, for messages */
};

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

/* Wait for the child's exit until the deadline and reap it. 0, MP_ETIMEOUT,
 * MP_EINTERRUPTED or -errno. */
static int child_reap(mp_popen *p, double deadline)
{
    if (p->exited)
        return 0;
    int rc = 0;
    int r = mp__pidfd_wait(p->pidfd, deadline, &rc);
    /* -ECHILD: someone else (a SIGCHLD handler calling waitpid(-1)) reaped it and the
     * status is lost; Python reports 0 too. */
    if (r < 0 && r != -ECHILD)
        return r;
    p->exited = true;
    p->returncode = rc;
    return 0;
}

/* Reap, ignoring interruptions: used when we have killed the child. */
static void child_reap_blocking(mp_popen *p)
{
    while (child_reap(p, -1) == MP_EINTERRUPTED)
        ;
}

static int send_signal(mp_popen *p, int sig)
{
    if (p->exited || p->forgotten)
        return 0; /* never signal a pid that may have been recycled */
    if (p->group) {
        /* The leader is not reaped yet, so -pid still names its group. */
        if (kill(-p->pid, sig) < 0 && errno != ESRCH)
            return mp__errno("signal %d to process group %d", sig, (int)p->pid);
        return 0;
    }
    int r = mp__pidfd_send_signal(p->pidfd, sig);
    if (r < 0 && r != -ESRCH)
        return mp__error(r, "signal %d to pid %d", sig, (int)p->pid);
    return 0;
}

static void take_result(mp_popen *p, mp_run_result *res)
{
    memset(res, 0, sizeof *res);
    res->returncode = p->returncode;
    res->pid = p->pid;
    if (p->io.piped[1])
        sbuf_take(&p->io.buf[1], p->rd_off, &res->out, &res->out_len);
    p->rd_off = 0;
    if (p->io.piped[2])
        sbuf_take(&p->io.buf[2], 0, &res->err, &res->err_len);
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

static bool name_matches(const char *entry, const char *name)
{
    size_t n = strcspn(name, "=");
    return strncmp(entry, name, n) == 0 && entry[n] == '=';
}

static bool env_listed(const char *entry, char *const *list)
{
    for (; list && *list; list++)
        if (name_matches(entry, *list))
            return true;
    return false;
}

/* The child's environment when the options change it: pointers to the caller's
 * strings (nothing copied), freed by the caller with free(). NULL = inherit. */
static int build_env(const mp_subprocess_opts *o, char ***out)
{
    *out = NULL;
    if (!o->env && !o->env_add && !o->env_remove)
        return 0;
    char *const *base = o->env ? o->env : environ;
    size_t n = 0, nadd = 0;
    while (base[n])
        n++;
    while (o->env_add && o->env_add[nadd])
        nadd++;
    char **env = malloc((n + nadd + 1) * sizeof *env);
    if (!env)
        return mp__error(-ENOMEM, "building the child's environment");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!env_listed(base[i], o->env_remove) && !env_listed(base[i], o->env_add))
            env[k++] = base[i];
    for (size_t i = 0; i < nadd; i++)
        if (strchr(o->env_add[i], '='))
            env[k++] = o->env_add[i];
    env[k] = NULL;
    *out = env;
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
        rc = build_env(o, &env);
    req.envp = env;
    if (rc == 0)
        rc = mp__spawn(&req, &p->pid, &p->pidfd);
    fdlist_close(&tmp);
    free(env);
    free(groups);
    return rc;
}

static int popen_create(char *const *argv, const char *file, const mp_subprocess_opts *o,
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
    if (!(o->time_limit >= 0))
        return mp__error(MP_EINVAL, "time_limit %g (seconds, 0 = no limit)", o->time_limit);
    mp_popen *p = mp__calloc(1, sizeof *p);
    if (!p)
        return -ENOMEM;
    io_init(&p->io);
    p->pidfd = -1;
    p->group = o->kill_group;
    describe(p->desc, sizeof p->desc, argv);
    int rc = spawn_into(p, o, argv, file, stdin_pipe);
    if (rc < 0) {
        io_release(&p->io);
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

/* argv for `sh -c cmdline`, on the caller's stack. */
#define SH_ARGV(name, cmdline) char *name[] = {"/bin/sh", "-c", (char *)(cmdline), NULL}

static const char *sh_file(const mp_subprocess_opts *o)
{
    return o && o->executable ? o->executable : "/bin/sh";
}

/* ---- Popen API ------------------------------------------------------------------ */

mp_popen *mp_popen_start(const char *const *argv, const mp_subprocess_opts *opts)
{
    mp_popen *p = NULL;
    popen_create((char *const *)argv, opts ? opts->executable : NULL, opts, false, &p);
    return p;
}

mp_popen *mp_popen_start_sh(const char *cmdline, const mp_subprocess_opts *opts)
{
    if (!cmdline) {
        mp__error(MP_EINVAL, "mp_popen_start_sh: NULL cmdline");
        return NULL;
    }
    mp_popen *p = NULL;
    SH_ARGV(argv, cmdline);
    popen_create(argv, sh_file(opts), opts, false, &p);
    return p;
}

pid_t mp_popen_pid(const mp_popen *p) { return p ? p->pid : -1; }

int mp_popen_pidfd(const mp_popen *p) { return p ? p->pidfd : -1; }

int mp_popen_fd(const mp_popen *p, int which)
{
    return p && which >= 0 && which < 3 ? p->io.fd[which] : -1;
}

int mp_popen_close_fd(mp_popen *p, int which)
{
    if (!p || which < 0 || which > 2)
        return mp__error(MP_EINVAL, "mp_popen_close_fd: bad handle or stream %d", which);
    io_close(&p->io, which);
    return 0;
}

int mp_popen_poll(mp_popen *p, int *returncode)
{
    if (!p)
        return mp__error(MP_EINVAL, "mp_popen_poll: NULL handle");
    int rc = child_reap(p, 0);
    if (rc == MP_ETIMEOUT)
        return 0;
    if (rc < 0)
        return rc;
    if (returncode)
        *returncode = p->returncode;
    return 1;
}

int mp_popen_wait(mp_popen *p, double timeout, int *returncode)
{
    if (!p)
        return mp__error(MP_EINVAL, "mp_popen_wait: NULL handle");
    int rc = child_reap(p, mp__deadline(timeout));
    if (rc == MP_ETIMEOUT)
        return mp__error(rc, "'%s' still running after %g seconds", p->desc, timeout);
    if (rc < 0)
        return rc;
    if (returncode)
        *returncode = p->returncode;
    return 0;
}

int mp_popen_communicate(mp_popen *p, const void *input, size_t len, double timeout,
                         mp_run_result *res)
{
    if (!p)
        return mp__error(MP_EINVAL, "mp_popen_communicate: NULL handle");
    if (input && !p->io.piped[0])
        return mp__error(MP_EINVAL, "communicate: input given but stdin is not a pipe");
    if (!p->comm_started) {
        p->comm_started = true;
        p->io.input = input;
        p->io.in_len = input ? len : 0;
    } else if (input) {
        p->io.input = input; /* the same bytes again: the offset is kept */
    }
    double deadline = mp__deadline(timeout);
    int rc = io_pump(&p->io, deadline);
    if (rc == 0)
        rc = child_reap(p, deadline);
    if (rc == MP_ETIMEOUT)
        return mp__error(rc, "communicate with '%s': timed out after %g seconds", p->desc,
                         timeout);
    if (rc < 0)
        return rc;
    if (res)
        take_result(p, res);
    return 0;
}

/* Copy `n` bytes of buffered stdout out as the current line. */
static int emit_line(mp_popen *p, size_t n, const char **line, size_t *len)
{
    sbuf *b = &p->io.buf[1];
    p->line.len = 0;
    if (sbuf_reserve(&p->line, n) < 0)
        return -ENOMEM;
    memcpy(p->line.data, b->data + p->rd_off, n);
    p->line.data[n] = 0;
    p->line.len = n;
    p->rd_off += n;
    if (p->rd_off == b->len)
        p->rd_off = b->len = 0;
    *line = p->line.data;
    if (len)
        *len = n;
    return 0;
}

/* Keep the unread tail at the front so the buffer does not grow with consumed lines. */
static void compact_stdout(mp_popen *p)
{
    sbuf *b = &p->io.buf[1];
    if (p->rd_off == 0 || p->rd_off < b->len / 2)
        return;
    memmove(b->data, b->data + p->rd_off, b->len - p->rd_off);
    b->len -= p->rd_off;
    p->rd_off = 0;
}

int mp_popen_readline(mp_popen *p, const char **line, size_t *len, double timeout)
{
    if (!p || !line)
        return mp__error(MP_EINVAL, "mp_popen_readline: NULL argument");
    if (!p->io.piped[1])
        return mp__error(MP_EINVAL, "readline: the child's stdout is not a pipe");
    double deadline = mp__deadline(timeout);
    size_t scanned = 0;
    for (;;) {
        sbuf *b = &p->io.buf[1];
        size_t avail = b->len - p->rd_off;
        char *start = b->data ? b->data + p->rd_off : NULL;
        char *nl = avail > scanned ? memchr(start + scanned, '\n', avail - scanned) : NULL;
        if (nl)
            return emit_line(p, (size_t)(nl - start) + 1, line, len);
        scanned = avail;
        if (p->io.fd[1] < 0) {
            if (avail)
                return emit_line(p, avail, line, len);
            return mp__error(MP_EEOF, "readline: '%s' closed its stdout", p->desc);
        }
        int r = mp__poll1(p->io.fd[1], POLLIN, deadline);
        if (r < 0)
            return r;
        if (r == 0)
            return mp__error(MP_ETIMEOUT, "readline from '%s': timed out", p->desc);
        compact_stdout(p);
        ssize_t got = io_read_some(&p->io, 1);
        if (got < 0 && got != -EAGAIN)
            return (int)got;
    }
}

int mp_popen_write(mp_popen *p, const void *data, size_t len)
{
    if (!p || (!data && len))
        return mp__error(MP_EINVAL, "mp_popen_write: NULL argument");
    if (!p->io.piped[0])
        return mp__error(MP_EINVAL, "write: the child's stdin is not a pipe");
    if (p->io.fd[0] < 0)
        return mp__error(MP_ECLOSED, "write: the child's stdin is closed");
    if (p->io.in_nonblock) {
        mp__set_nonblock(p->io.fd[0], false);
        p->io.in_nonblock = false;
    }
    pipe_guard g;
    sigpipe_block(&g);
    int rc = mp__write_full(p->io.fd[0], data, len);
    sigpipe_unblock(&g, rc == -EPIPE);
    if (rc < 0)
        return mp__error(rc, "writing to the stdin of '%s'", p->desc);
    return 0;
}

int mp_popen_writeline(mp_popen *p, const char *line)
{
    if (!line)
        return mp__error(MP_EINVAL, "mp_popen_writeline: NULL line");
    size_t n = strlen(line);
    int rc = mp_popen_write(p, line, n);
    if (rc == 0 && (n == 0 || line[n - 1] != '\n'))
        rc = mp_popen_write(p, "\n", 1);
    return rc;
}

int mp_popen_send_signal(mp_popen *p, int sig)
{
    if (!p)
        return mp__error(MP_EINVAL, "mp_popen_send_signal: NULL handle");
    return send_signal(p, sig);
}

int mp_popen_terminate(mp_popen *p) { return mp_popen_send_signal(p, SIGTERM); }

int mp_popen_kill(mp_popen *p) { return mp_popen_send_signal(p, SIGKILL); }

void mp_popen_forget(mp_popen *p)
{
    if (p)
        p->forgotten = true;
}

void mp_popen_free(mp_popen *p)
{
    if (!p)
        return;
    if (!p->exited && !p->forgotten) {
        send_signal(p, SIGKILL);
        child_reap_blocking(p);
    }
    io_release(&p->io);
    mp__close(p->pidfd);
    free(p->line.data);
    free(p);
}

/* ---- run and friends ------------------------------------------------------------ */

void mp_run_result_free(mp_run_result *r)
{
    if (!r)
        return;
    free(r->out);
    free(r->err);
    memset(r, 0, sizeof *r);
}

static double run_deadline(const mp_subprocess_opts *o)
{
    return o && o->time_limit > 0 ? mp__deadline(o->time_limit) : -1;
}

/* The status as an error when check is on: MP_ECHILDFAIL with Python's wording. */
static int check_status(const char *desc, int returncode)
{
    if (returncode == 0)
        return 0;
    if (returncode > 0)
        return mp__error(MP_ECHILDFAIL, "command '%s' returned non-zero exit status %d", desc,
                         returncode);
    const char *abbrev = sigabbrev_np(-returncode);
    return mp__error(MP_ECHILDFAIL, "command '%s' died with signal %d (SIG%s)", desc,
                     -returncode, abbrev ? abbrev : "?");
}

/* Drive a started child to the end; on timeout or interruption kill and reap it and
 * keep what was read. The handle is freed. */
static int run_to_end(mp_popen *p, const mp_subprocess_opts *o, mp_run_result *res)
{
    static const mp_subprocess_opts defaults;
    if (!o)
        o = &defaults;
    p->io.input = o->input;
    p->io.in_len = o->input ? o->input_len : 0;
    double deadline = run_deadline(o);
    int rc = io_pump(&p->io, deadline);
    if (rc == 0)
        rc = child_reap(p, deadline);
    if (rc < 0) {
        send_signal(p, SIGKILL);
        child_reap_blocking(p);
        io_drain(&p->io);
        if (rc == MP_ETIMEOUT)
            mp__error(rc, "command '%s' timed out after %g seconds", p->desc, o->time_limit);
    }
    take_result(p, res);
    if (rc == 0 && o->check)
        rc = check_status(p->desc, p->returncode);
    mp_popen_free(p);
    return rc;
}

static int run_argv(char *const *argv, const char *file, const mp_subprocess_opts *o,
                    mp_run_result *res)
{
    mp_run_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    mp_popen *p;
    int rc = popen_create(argv, file, o, o && o->input, &p);
    if (rc < 0)
        return rc;
    rc = run_to_end(p, o, res);
    if (res == &local)
        mp_run_result_free(&local);
    return rc;
}

int mp_run(const char *const *argv, const mp_subprocess_opts *opts, mp_run_result *res)
{
    return run_argv((char *const *)argv, opts ? opts->executable : NULL, opts, res);
}

int mp_run_sh(const char *cmdline, const mp_subprocess_opts *opts, mp_run_result *res)
{
    if (!cmdline)
        return mp__error(MP_EINVAL, "mp_run_sh: cmdline is NULL");
    SH_ARGV(argv, cmdline);
    return run_argv(argv, sh_file(opts), opts, res);
}

int mp_call(const char *const *argv, const mp_subprocess_opts *opts, int *returncode)
{
    mp_subprocess_opts o = opts ? *opts : (mp_subprocess_opts){0};
    o.check = false;
    mp_run_result r;
    int rc = mp_run(argv, &o, &r);
    if (returncode && rc == 0)
        *returncode = r.returncode;
    mp_run_result_free(&r);
    return rc;
}

int mp_check_call(const char *const *argv, const mp_subprocess_opts *opts)
{
    mp_subprocess_opts o = opts ? *opts : (mp_subprocess_opts){0};
    o.check = true;
    return mp_run(argv, &o, NULL);
}

static int check_output(char *const *argv, const char *file, const mp_subprocess_opts *opts,
                        char **out, size_t *len)
{
    if (!out)
        return mp__error(MP_EINVAL, "check_output: out is NULL");
    *out = NULL;
    mp_subprocess_opts o = opts ? *opts : (mp_subprocess_opts){0};
    o.check = true;
    o.out = MP_STDIO_PIPE;
    mp_run_result r;
    int rc = run_argv(argv, file, &o, &r);
    *out = r.out;
    if (len)
        *len = r.out_len;
    r.out = NULL;
    mp_run_result_free(&r);
    return rc;
}

int mp_check_output(const char *const *argv, const mp_subprocess_opts *opts, char **out,
                    size_t *len)
{
    return check_output((char *const *)argv, opts ? opts->executable : NULL, opts, out, len);
}

int mp_check_output_sh(const char *cmdline, const mp_subprocess_opts *opts, char **out,
                       size_t *len)
{
    if (!cmdline)
        return mp__error(MP_EINVAL, "mp_check_output_sh: cmdline is NULL");
    SH_ARGV(argv, cmdline);
    return check_output(argv, sh_file(opts), opts, out, len);
}

/* ---- pipelines ------------------------------------------------------------------ */

typedef struct pipeline {
    mp_popen **stage;
    size_t n, started;
    io io;          /* first stdin, last stdout, the shared stderr pipe */
    int err_write;  /* write end of the shared stderr pipe (until all started) */
} pipeline;

/* Stage i's options: its stdin is the previous stdout, its stdout the next stdin. */
static mp_subprocess_opts stage_opts(const mp_subprocess_opts *o, pipeline *pl, size_t i)
{
    mp_subprocess_opts s = *o;
    s.capture_output = false;
    if (i > 0)
        s.in = MP_STDIO_FD(pl->stage[i - 1]->io.fd[1]);
    if (i + 1 < pl->n)
        s.out = MP_STDIO_PIPE;
    else if (o->capture_output && s.out.kind == MP_IO_INHERIT)
        s.out = MP_STDIO_PIPE;
    if (pl->err_write >= 0)
        s.err = MP_STDIO_FD(pl->err_write);
    return s;
}

static int pipeline_start(pipeline *pl, const char *const *const *cmds,
                          const mp_subprocess_opts *o)
{
    bool err_pipe = o->err.kind == MP_IO_PIPE ||
                    (o->capture_output && o->err.kind == MP_IO_INHERIT);
    if (err_pipe) {
        int p[2];
        if (mp__pipe(p) < 0)
            return mp__errno("stderr pipe");
        pl->io.fd[2] = p[0];
        pl->io.piped[2] = true;
        pl->err_write = p[1];
    }
    for (size_t i = 0; i < pl->n; i++) {
        if (!cmds[i] || !cmds[i][0])
            return mp__error(MP_EINVAL, "pipeline: command %zu is NULL or empty", i);
        mp_subprocess_opts s = stage_opts(o, pl, i);
        int rc = popen_create((char *const *)cmds[i], NULL, &s, i == 0 && o->input,
                              &pl->stage[i]);
        if (rc < 0)
            return rc;
        pl->started++;
        if (i > 0) /* only the next stage reads it now: EOF and SIGPIPE work */
            io_close(&pl->stage[i - 1]->io, 1);
    }
    mp__close(pl->err_write);
    pl->err_write = -1;
    /* The engine owns the ends the parent talks through. */
    mp_popen *first = pl->stage[0], *last = pl->stage[pl->n - 1];
    pl->io.fd[0] = first->io.fd[0], first->io.fd[0] = -1;
    pl->io.piped[0] = first->io.piped[0];
    pl->io.fd[1] = last->io.fd[1], last->io.fd[1] = -1;
    pl->io.piped[1] = last->io.piped[1];
    return 0;
}

/* Reap every stage (killing them all first when `kill` is set). */
static int pipeline_reap(pipeline *pl, double deadline, bool kill)
{
    for (size_t i = 0; i < pl->started; i++)
        if (kill)
            send_signal(pl->stage[i], SIGKILL);
    for (size_t i = 0; i < pl->started; i++) {
        if (kill) {
            child_reap_blocking(pl->stage[i]);
            continue;
        }
        int rc = child_reap(pl->stage[i], deadline);
        if (rc < 0)
            return rc;
    }
    return 0;
}

static void pipeline_result(pipeline *pl, mp_run_result *res, int *returncodes)
{
    memset(res, 0, sizeof *res);
    if (pl->started == pl->n) {
        res->returncode = pl->stage[pl->n - 1]->returncode;
        res->pid = pl->stage[pl->n - 1]->pid;
    }
    if (pl->io.piped[1])
        sbuf_take(&pl->io.buf[1], 0, &res->out, &res->out_len);
    if (pl->io.piped[2])
        sbuf_take(&pl->io.buf[2], 0, &res->err, &res->err_len);
    for (size_t i = 0; returncodes && i < pl->started; i++)
        returncodes[i] = pl->stage[i]->returncode;
}

static int pipeline_check(pipeline *pl)
{
    for (size_t i = 0; i < pl->n; i++) {
        int rc = pl->stage[i]->returncode;
        if (rc != 0)
            return check_status(pl->stage[i]->desc, rc);
    }
    return 0;
}

int mp_pipeline(const char *const *const *cmds, size_t n, const mp_subprocess_opts *opts,
                mp_run_result *res, int *returncodes)
{
    static const mp_subprocess_opts defaults;
    const mp_subprocess_opts *o = opts ? opts : &defaults;
    mp_run_result local;
    if (!res)
        res = &local;
    memset(res, 0, sizeof *res);
    if (!cmds || n == 0)
        return mp__error(MP_EINVAL, "pipeline: no commands");
    pipeline pl = {.n = n, .err_write = -1};
    io_init(&pl.io);
    pl.stage = mp__calloc(n, sizeof *pl.stage);
    if (!pl.stage)
        return -ENOMEM;
    int rc = pipeline_start(&pl, cmds, o);
    if (rc == 0) {
        pl.io.input = o->input;
        pl.io.in_len = o->input ? o->input_len : 0;
        double deadline = run_deadline(o);
        rc = io_pump(&pl.io, deadline);
        if (rc == 0)
            rc = pipeline_reap(&pl, deadline, false);
        if (rc == MP_ETIMEOUT)
            mp__error(rc, "pipeline timed out after %g seconds", o->time_limit);
    }
    if (rc < 0) {
        pipeline_reap(&pl, -1, true);
        io_drain(&pl.io);
    }
    pipeline_result(&pl, res, returncodes);
    if (rc == 0 && o->check)
        rc = pipeline_check(&pl);
    mp__close(pl.err_write);
    for (size_t i = 0; i < pl.started; i++)
        mp_popen_free(pl.stage[i]);
    free(pl.stage);
    io_release(&pl.io);
    if (res == &local)
        mp_run_result_free(&local);
    return rc;
}
