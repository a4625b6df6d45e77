/* The spawn start method: a fresh exec of the program that becomes Process-N.
 *
 * DESIGN
 * - Parent: packs a launch record (target location, name, identity, encoded
 *   arguments) and, before the child exists, queues it (as much as the socket takes)
 *   with the arguments' fds (SCM_RIGHTS) on one end of a socketpair, in a frame that
 *   starts with a fresh random secret. It then execs /proc/self/exe through mp__spawn
 *   with only 0, 1, 2 and the other end (as fd 3) and MULTIPROC_BOOTSTRAP=spawn:3:SECRET
 *   in the environment, writes the rest of the record, and waits for the child's
 *   verdict, so a target the child cannot find is an error of start().
 * - Child: a library constructor (priority 500, after every kind registration at
 *   200) reads the variable with secure_getenv, removes it, and engages only when
 *   trust.c says the library started us (fd 3 a socket our parent made, under our
 *   uid, with the frame carrying the variable's secret already waiting); anything else
 *   is ignored and the program starts normally. It then runs the main program's own
 *   constructors (so kinds the program registers itself exist), and mp__boot_child()
 *   receives the record, resolves the target, decodes the arguments, replies and runs
 *   the target. It never returns to the program's main.
 * - Nothing is shared between the two processes but the socket (and the secret, in
 *   the environment). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/tracker.h"
#include "internal/spawn.h"
#include "process/proc.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

int mp__boot_tracker_fd(void)
{
    /* Started eagerly, as Python's spawn does: a segment a spawn child creates for
     * its parent must outlive the child, so the child cannot own the tracker. */
    return mp__tracker_ensure_running() == 0 ? mp__tracker_fd() : -1;
}

char **mp__boot_env(const char *value, char **owned, int tracker_fd, const char *extra)
{
    static const char tracker_var[] = MP__TRACKER_ENV "=4";
    _Static_assert(MP__BOOT_TRACKER_FD == 4, "tracker_var names fd 4");
    size_t n = 0, keep = 0;
    while (environ && environ[n])
        n++;
    char **env = mp__calloc(n + 4, sizeof *env);
    if (asprintf(owned, "%s=%s", MP__BOOT_ENV, value) < 0)
        *owned = NULL;
    if (!env || !*owned) {
        free(env);
        free(*owned);
        *owned = NULL;
        mp__error(-ENOMEM, "building the child's environment");
        return NULL;
    }
    size_t plen = strlen(MP__BOOT_ENV), tlen = strlen(MP__TRACKER_ENV);
    for (size_t i = 0; i < n; i++) {
        if (strncmp(environ[i], MP__BOOT_ENV, plen) == 0 && environ[i][plen] == '=')
            continue;
        if (strncmp(environ[i], MP__TRACKER_ENV, tlen) == 0 && environ[i][tlen] == '=')
            continue;
        env[keep++] = environ[i];
    }
    env[keep++] = *owned;
    if (tracker_fd >= 0)
        env[keep++] = (char *)tracker_var;
    if (extra)
        env[keep++] = (char *)extra;
    env[keep] = NULL;
    return env;
}

/* ---- parent side ---------------------------------------------------------------- */

static int std_fd(int fd) { return fcntl(fd, F_GETFD) < 0 ? -1 : fd; }

static void abandon_child(pid_t pid, int pidfd)
{
    /* The child failed to bootstrap (it exits by itself); make sure and reap it. */
    mp__pidfd_send_signal(pidfd, SIGKILL);
    siginfo_t si;
    while (waitid(P_PIDFD, (id_t)pidfd, &si, WEXITED) < 0 && errno == EINTR)
        ;
    (void)pid;
    mp__close(pidfd);
}

/* The spawn request for a child with sv_child as fd 3 and env as its environment. */
static void spawn_req(mp__spawn_req *req, char **argv, char **env, int sv_child, int tracker)
{
    *req = (mp__spawn_req){.file = mp__proc_executable(), .argv = argv, .envp = env, .umask = -1,
                           .close_fds = true, .nmap = tracker >= 0 ? 5 : 4};
    for (int i = 0; i < 3; i++)
        req->fd_map[i] = std_fd(i);
    req->fd_map[3] = sv_child;
    req->fd_map[MP__BOOT_TRACKER_FD] = tracker;
}

/* Exec the child with MULTIPROC_BOOTSTRAP naming fd 3 and the secret. */
static int exec_child(int sv_child, const mp__secret *secret, pid_t *pid, int *pidfd)
{
    char value[MP__BOOT_VALUE_MAX], *owned = NULL;
    mp__boot_value(value, sizeof value, MP__BOOT_SPAWN, 3, secret, false);
    int tracker = mp__boot_tracker_fd();
    char **env = mp__boot_env(value, &owned, tracker, NULL);
    if (!env)
        return mp_last_error_code();
    char *argv[] = {program_invocation_name, NULL};
    mp__spawn_req req;
    spawn_req(&req, argv, env, sv_child, tracker);
    int r = mp__spawn(&req, pid, pidfd);
    free(env);
    free(owned);
    return r;
}

/* The record goes out before the child exists (as much of it as the socket takes,
 * with the fds): the child finds the frame's head and secret waiting when it checks
 * that the bootstrap is ours (trust.c), and never waits for it. */
int mp__spawn_child(const mp__launch *l, const int *fds, size_t nfds, pid_t *pid, int *pidfd)
{
    char *rec = NULL;
    size_t reclen = 0, sent = 0;
    int sv[2];
    mp__secret secret;
    int r = mp__launch_pack(l, &rec, &reclen);
    if (r == 0)
        r = mp__secret_new(&secret);
    if (r < 0) {
        free(rec);
        return r;
    }
    if (mp__fd_high2(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), sv) < 0) {
        free(rec);
        return mp__errno("socketpair for a spawn child");
    }
    r = mp__frame_begin(sv[0], &secret, rec, reclen, fds, nfds, MSG_DONTWAIT, &sent);
    if (r == 0)
        r = exec_child(sv[1], &secret, pid, pidfd);
    mp__close(sv[1]);
    if (r == 0) {
        r = mp__frame_finish(sv[0], rec, reclen, sent);
        char what[300];
        snprintf(what, sizeof what, "spawn child %s (pid %d)", l->name, (int)*pid);
        if (r == 0)
            r = mp__reply_recv(sv[0], what, NULL, NULL);
        if (r < 0)
            abandon_child(*pid, *pidfd);
    }
    if (r < 0) { /* no child remains: leave nothing for the caller to close */
        *pid = 0;
        *pidfd = -1;
    }
    mp__close(sv[0]);
    free(rec);
    return r;
}

/* ---- child side ----------------------------------------------------------------- */

static _Noreturn void boot_fail(int sock, int code)
{
    mp__reply_send(sock, code, mp__last_error_detail(), 0, -1);
    _exit(1);
}

/* A forkserver child's pid and pidfd travel with its reply: the client learns both
 * from the one message it waits for anyway, and the pidfd cannot name a recycled pid
 * (we are alive while we open it). */
static void reply_ok(int sock, bool tell_pid)
{
    pid_t pid = tell_pid ? getpid() : 0;
    int pidfd = tell_pid ? mp__pidfd_open(pid) : -1;
    if (tell_pid && pidfd < 0)
        boot_fail(sock, mp__error(pidfd, "pidfd_open of the child itself"));
    mp__reply_send(sock, 0, NULL, pid, pidfd);
    mp__close(pidfd);
}

_Noreturn void mp__boot_child(int sock, const mp__secret *secret, bool tell_pid)
{
    mp__buf rec = {0};
    size_t nfds = 0;
    int fds[MP__PROC_MAX_FDS];
    int r = mp__frame_recv(sock, secret, &rec, fds, MP__PROC_MAX_FDS, &nfds);
    if (r < 0)
        boot_fail(sock, r);
    mp__launch l;
    r = mp__launch_unpack(rec.data, rec.len, &l);
    mp__buf_free(&rec);
    if (r == 0 && l.nfds != nfds)
        r = mp__error(MP_EPROTO, "launch record announces %u fds, %zu arrived", l.nfds, nfds);
    mp_target_fn fn = NULL;
    if (r == 0)
        r = mp__target_resolve(&l.loc, &fn);
    if (r < 0) {
        for (size_t i = 0; i < nfds; i++)
            mp__close(fds[i]);
        boot_fail(sock, r);
    }
    mp__boot_launch(sock, &l, fn, fds, nfds, tell_pid);
}

_Noreturn void mp__boot_launch(int sock, mp__launch *l, mp_target_fn fn, int *fds, size_t nfds,
                               bool tell_pid)
{
    mp__proc_become_child(l->name, l->identity, l->parent_pid, l->daemon,
                          (mp_start_method)l->method);
    mp__proc_become_child_of(l->parent_name, l->authkey, l->authkey_len);
    mp__proc_log_inherit(l->log_level, l->log_on);
    mp_value *args = NULL;
    int r = mp__proc_decode_args(l->args, l->args_len, fds, nfds, &args);
    mp__launch_clear(l);
    if (r < 0)
        boot_fail(sock, r);
    reply_ok(sock, tell_pid);
    mp__close(sock);
    mp__proc_run(fn, args);
}

/* ---- running the program's own constructors ------------------------------------- */

typedef void (*init_fn)(int, char **, char **);

/* Defined by the linker in the object this file is linked into (the main program when
 * the library is linked statically). */
extern init_fn __init_array_start[] __attribute__((weak, visibility("hidden")));
extern init_fn __init_array_end[] __attribute__((weak, visibility("hidden")));

static void boot_ctor(int argc, char **argv, char **envp);

struct main_init {
    init_fn *array;
    size_t count;
};

static int main_init_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct main_init *m = data;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        if (info->dlpi_phdr[i].p_type != PT_DYNAMIC)
            continue;
        const ElfW(Dyn) *d = (const ElfW(Dyn) *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
        uintptr_t addr = 0;
        size_t bytes = 0;
        for (; d->d_tag != DT_NULL; d++) {
            if (d->d_tag == DT_INIT_ARRAY)
                addr = (uintptr_t)d->d_un.d_ptr;
            else if (d->d_tag == DT_INIT_ARRAYSZ)
                bytes = (size_t)d->d_un.d_val;
        }
        if (addr) {
            /* ld.so leaves DT_INIT_ARRAY unrelocated: it is relative to the load address. */
            m->array = (init_fn *)(info->dlpi_addr + addr);
            m->count = bytes / sizeof(init_fn);
        }
    }
    return 1; /* the first object is the main program */
}

/* The bootstrap runs inside the library's constructors, before the program's own
 * (and before main), and never returns: run the program's constructors now so kinds
 * it registers exist in the child. With a static link our constructors are in the
 * program's own array: run only the entries after ours. */
static void run_program_ctors(int argc, char **argv, char **envp)
{
    Dl_info info;
    struct link_map *lm = NULL;
    bool in_main = !dladdr1((void *)boot_ctor, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm ||
                   !lm->l_name || !lm->l_name[0];
    struct main_init m = {NULL, 0};
    if (in_main) {
        if (!__init_array_start || !__init_array_end)
            return;
        m.array = __init_array_start;
        m.count = (size_t)(__init_array_end - __init_array_start);
    } else {
        dl_iterate_phdr(main_init_cb, &m);
    }
    size_t from = 0;
    for (size_t i = 0; in_main && i < m.count; i++)
        if (m.array[i] == boot_ctor)
            from = i + 1;
    for (size_t i = from; i < m.count; i++)
        if (m.array[i] && m.array[i] != (init_fn)-1)
            m.array[i](argc, argv, envp);
}

/* Not ours (see trust.c): the program starts normally, without the variable. */
__attribute__((constructor(500))) static void boot_ctor(int argc, char **argv, char **envp)
{
    const char *v = secure_getenv(MP__BOOT_ENV);
    mp__boot_req req;
    bool ours = v && mp__boot_trusted(v, &req);
    if (v || getenv(MP__BOOT_ENV)) /* under AT_SECURE only getenv sees it */
        unsetenv(MP__BOOT_ENV);
    if (!ours)
        return;
    if (req.bindnow) { /* ld.so has done its part: children the server execs don't inherit it */
        unsetenv("LD_BIND_NOW");
        dup2(MP__FS_STDERR_FD, 2);
        close(MP__FS_STDERR_FD);
    }
    run_program_ctors(argc, argv, envp);
    if (req.kind == MP__BOOT_SPAWN)
        mp__boot_child(req.fd, &req.secret, false);
    mp__fs_server_main(req.fd);
}
