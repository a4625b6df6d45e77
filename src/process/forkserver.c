/* The forkserver start method.
 *
 * DESIGN
 * - Who runs where: on first use a client (any process using the forkserver context)
 *   spawns the server: a fresh exec of the program (MULTIPROC_BOOTSTRAP=forkserver:3)
 *   that ran the program's constructors and then loops here, single-threaded.
 * - Connections: one SOCK_SEQPACKET control connection (a socketpair made at start;
 *   fork children of the client inherit it and may use the same server). For each
 *   child, the client makes a stream socketpair and sends one end, its stdout and
 *   stderr and the arguments' fds over the control connection (SCM_RIGHTS), in one
 *   message with the launch record (a record too big for one message follows on the
 *   child socket instead; see send_msg). The server parses the record and finds the
 *   target (an error goes straight back to the client), forks, and keeps its copy of
 *   the socket, writing nothing more until it reaps the child; then it writes the
 *   exit status (a frame holding an int, Python-style) and closes it. The forked child closes the
 *   server's fds, decodes the arguments as a spawn child does (mp__boot_launch) and
 *   replies with its verdict, its pid and a pidfd of itself. Order on the socket is
 *   therefore: reply (child or server), status (server, after the child ended); a
 *   child that dies before replying leaves only the status and EOF, which the client
 *   reads as "exited before it started the target".
 * - Speed: a start costs the client one sendmsg and one wait (for the reply), the
 *   server a recvmsg, a fork (or a hand-over to the spare, below) and a few closes.
 *   What can run in the server before the fork does: code the server runs every time
 *   stays mapped there, while each child would fault it in afresh. For the same reason the server runs with LD_BIND_NOW
 *   (removed from its environment once it runs), so its children do not each repeat
 *   the lazy symbol binding of every library function they call.
 * - Preload (mp_set_forkserver_preload, exec.c): the list reaches the server in its
 *   environment (MULTIPROC_FS_PRELOAD, ours only: one inherited from outside is
 *   dropped); the server dlopen()s each library once before it says it is ready, so
 *   every child is forked with them loaded. The program it execs is
 *   mp_set_executable's.
 * - Placement: the kernel starts a new child on an idle CPU, which here is usually the
 *   one the client sleeps on, so the start bounces between CPUs (wake-ups by IPI, cold
 *   caches) although client, server and child run strictly one after another. The
 *   server therefore narrows its affinity to its current CPU around the fork of a
 *   child it starts at once (the child is born there) and both restore the mask right
 *   after: the child keeps the inherited mask and the load balancer spreads busy
 *   children as usual. On a 2-CPU VM this made start+join 1.2-1.5x faster when the
 *   other CPU was busy, and changed nothing when it was idle.
 * - Spare: during a burst of starts (a request within SPARE_TTL of the previous one)
 *   the server forks the next child ahead of time, right after handing over the
 *   current one: the spare drops the server's fds and signal settings and waits on
 *   its own socket. The next request goes to it (with the target already found) and
 *   the fork leaves the start's critical path (it overlaps the running child). An
 *   unused spare exits after SPARE_TTL, so a child's start time (/proc) is at most
 *   that much before its start() and no spare lingers after a burst.
 * - Lifetime: the server exits when every client has closed the control connection
 *   (EOF), ending and reaping its spare first; children still running are left to
 *   run on (as with Python's forkserver); in practice the client's at-exit handler has
 *   already joined or terminated them. The client that started the server reaps it at
 *   exit.
 * - Shared state in the client: fs_lock guards starting the server (fs_ctl, fs_pid).
 *   Requests need no lock: a SEQPACKET message is atomic. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/iwait.h"
#include "internal/spawn.h"
#include "internal/value.h"
#include "process/proc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t fs_lock = PTHREAD_MUTEX_INITIALIZER;
static int fs_ctl = -1;
static pid_t fs_pid;   /* the server */
static pid_t fs_owner; /* the process that spawned it (and must reap it) */

/* ---- client ------------------------------------------------------------------- */

/* The server says 'R' on the control connection once it runs (its constructors done):
 * EOF instead means it died starting. 0, MP_EEOF (reaped, *status set) or an error. */
static int await_ready(int ctl, pid_t pid, int *status)
{
    int r = mp__iwait_poll1(ctl, POLLIN, -1);
    char c = 0;
    ssize_t n = -1;
    if (r > 0)
        do
            n = recv(ctl, &c, 1, 0);
        while (n < 0 && errno == EINTR);
    if (n == 1 && c == 'R')
        return 0;
    /* Interrupted, or dead: either way it is gone once our end closes (EOF). */
    mp__close(ctl);
    while (waitpid(pid, status, 0) < 0 && errno == EINTR)
        ;
    return r < 0 ? r : MP_EEOF;
}

/* The server's environment: MULTIPROC_BOOTSTRAP naming fd 3 and the secret (see
 * trust.c), LD_BIND_NOW when bindnow (see DESIGN). */
static char **server_env(bool bindnow, const mp__secret *secret, int tracker, char **owned)
{
    char value[MP__BOOT_VALUE_MAX];
    mp__boot_value(value, sizeof value, MP__BOOT_SERVER, 3, secret, bindnow);
    char **env = mp__boot_env(value, owned, tracker, bindnow ? "LD_BIND_NOW=1" : NULL);
    if (!env)
        return NULL;
    /* Only our own preload list reaches the server, never one inherited from outside. */
    size_t n = 0, keep = 0, vlen = strlen(MP__FS_PRELOAD_ENV);
    for (; env[n]; n++)
        if (strncmp(env[n], MP__FS_PRELOAD_ENV, vlen) != 0 || env[n][vlen] != '=')
            env[keep++] = env[n];
    env[n = keep] = NULL;
    char *pre = mp__fs_preload_env();
    if (!pre)
        return env;
    /* One more entry: the libraries to preload (mp_set_forkserver_preload). */
    char **more = realloc(env, (n + 2) * sizeof *env);
    /* *owned and pre in one block, so the caller's one free(*owned) frees both. */
    size_t olen = strlen(*owned) + 1, plen = strlen(pre) + 1;
    char *both = more ? malloc(olen + plen) : NULL;
    if (both) {
        memcpy(both, *owned, olen);
        memcpy(both + olen, pre, plen);
    }
    if (!both) { /* without the preload: the server still works */
        free(pre);
        return more ? more : env;
    }
    for (size_t i = 0; i < n; i++) /* *owned moves into both (freed with it) */
        if (more[i] == *owned)
            more[i] = both;
    more[n] = both + olen;
    more[n + 1] = NULL;
    free(*owned);
    free(pre);
    *owned = both;
    return more;
}

/* The control connection, with the secret waiting on the server's end as its first
 * message: the server checks it before it trusts the variable (trust.c). */
static int control_pair(int sv[2], mp__secret *secret)
{
    int r = mp__secret_new(secret);
    if (r < 0)
        return r;
    if (mp__fd_high2(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), sv) < 0)
        return mp__errno("socketpair for the forkserver");
    if (send(sv[0], secret->b, sizeof secret->b, MSG_NOSIGNAL) != (ssize_t)sizeof secret->b) {
        r = mp__errno("sending the forkserver its secret");
        mp__close(sv[0]);
        mp__close(sv[1]);
        return r;
    }
    return 0;
}

/* bindnow: run the server with LD_BIND_NOW (see DESIGN). */
static int spawn_server(bool bindnow, int *ctl, pid_t *pid)
{
    int sv[2];
    mp__secret secret;
    int r = control_pair(sv, &secret);
    if (r < 0)
        return r;
    int devnull = mp__fd_high(open("/dev/null", O_RDWR | O_CLOEXEC));
    char *owned = NULL;
    int tracker = mp__boot_tracker_fd(); /* its forked children inherit it */
    char **env = server_env(bindnow, &secret, tracker, &owned);
    char *argv[] = {program_invocation_name, NULL};
    /* The server never reads or writes stdio itself (children get the client's);
     * stderr stays for diagnostics. Its stdin, /dev/null, is its children's. Under
     * LD_BIND_NOW stderr waits as fd MP__FS_STDERR_FD while ld.so runs, so that a
     * failure to bind (we then retry without) leaves no message. */
    int err = fcntl(2, F_GETFD) < 0 ? devnull : 2;
    mp__spawn_req req = {.file = mp__proc_executable(), .argv = argv, .envp = env, .umask = -1,
                         .close_fds = true, .nmap = bindnow ? 6 : tracker >= 0 ? 5 : 4};
    req.fd_map[MP__BOOT_TRACKER_FD] = tracker;
    req.fd_map[0] = devnull;
    req.fd_map[1] = devnull;
    req.fd_map[2] = bindnow ? devnull : err;
    req.fd_map[3] = sv[1];
    req.fd_map[MP__FS_STDERR_FD] = bindnow ? err : -1;
    int pidfd = -1;
    r = env && devnull >= 0 ? mp__spawn(&req, pid, &pidfd) : mp__errno("/dev/null");
    mp__close(sv[1]);
    mp__close(devnull);
    free(env);
    free(owned);
    if (r < 0) {
        mp__close(sv[0]);
        return r;
    }
    mp__close(pidfd); /* reaped by pid at exit: one fd less to carry around */
    *ctl = sv[0];
    return 0;
}

static int start_server_locked(void)
{
    /* Under LD_BIND_NOW a program that links a function it never calls and nobody
     * defines cannot start (ld.so prints "symbol lookup error" on stderr and exits):
     * then run the server without it. */
    bool bindnow = getenv("LD_BIND_NOW") == NULL;
    int ctl = -1, status = 0, r;
    pid_t pid = 0;
    for (;;) {
        if ((r = spawn_server(bindnow, &ctl, &pid)) < 0)
            return r;
        r = await_ready(ctl, pid, &status);
        if (r != MP_EEOF || !bindnow)
            break;
        bindnow = false;
    }
    if (r == MP_EEOF)
        return mp__error(MP_EPROCESS, "the forkserver exited while starting (status 0x%x)",
                         (unsigned)status);
    if (r < 0)
        return r;
    fs_ctl = ctl;
    fs_pid = pid;
    fs_owner = getpid();
    return 0;
}

int mp_forkserver_ensure_running(void)
{
    pthread_mutex_lock(&fs_lock);
    int r = fs_ctl >= 0 ? 0 : start_server_locked();
    pthread_mutex_unlock(&fs_lock);
    return r;
}

pid_t mp__fs_server_pid(void) { return fs_ctl >= 0 ? fs_pid : 0; }

/* Requests: one SEQPACKET message, a kind byte then the payload, with the fds [child
 * socket, stdout, stderr, arguments' fds...]:
 *   'R' + launch record: the usual request; the server parses the record and finds
 *       the target before it forks (warm code in the server, not cold code in every
 *       child), and answers a record it cannot use itself, without forking.
 *   'F' alone (3 fds): a record too big for one message follows on the child socket,
 *       with the arguments' fds, for the child to read (as a spawn child does). */
#define FS_INLINE_MAX 16384

static int send_msg(char kind, const char *rec, size_t len, const int *fds, size_t nfds)
{
    struct iovec iov[2] = {{.iov_base = &kind, .iov_len = 1},
                           {.iov_base = (void *)rec, .iov_len = len}};
    ssize_t r = mp__sendmsg_fds(fs_ctl, iov, 2, fds, nfds, 0);
    return r < 0 ? (int)r : 0;
}

/* Send a request for the child socket child_end (see above). A closed stdout or stderr
 * (EBADF: checked only then, it is rare) becomes /dev/null in the child. */
static int send_request(int child_end, char kind, const char *rec, size_t len,
                        const int *argfds, size_t nargfds)
{
    int fds[3 + MP__PROC_MAX_FDS] = {child_end, 1, 2};
    if (nargfds > MP__PROC_MAX_FDS)
        return mp__error(-E2BIG, "%zu fds in one launch", nargfds);
    if (nargfds) /* argfds may be NULL then (memcpy wants a valid pointer even for 0) */
        memcpy(fds + 3, argfds, nargfds * sizeof(int));
    int r = send_msg(kind, rec, len, fds, 3 + nargfds), devnull = -1;
    if (r == -EBADF) {
        for (int i = 1; i < 3; i++)
            if (fcntl(fds[i], F_GETFD) < 0) {
                if (devnull < 0)
                    devnull = mp__fd_high(open("/dev/null", O_WRONLY | O_CLOEXEC));
                fds[i] = devnull;
            }
        r = send_msg(kind, rec, len, fds, 3 + nargfds);
        mp__close(devnull);
    }
    return r < 0 ? mp__error(r, "sending a request to the forkserver (pid %d)", (int)fs_pid) : 0;
}

/* The one message we wait for is the reply, which brings the child's pid and a pidfd
 * (or the server's or the child's error). A big record goes out on the child socket
 * right after the request and waits there for the child. */
int mp__fs_start_child(const mp__launch *l, const int *fds, size_t nfds, pid_t *pid,
                       int *pidfd, int *statfd)
{
    int r = mp_forkserver_ensure_running();
    if (r < 0)
        return r;
    char *rec = NULL;
    size_t reclen = 0;
    int ch[2];
    if ((r = mp__launch_pack(l, &rec, &reclen)) < 0)
        return r;
    if (mp__fd_high2(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ch), ch) < 0) {
        free(rec);
        return mp__errno("socketpair for a forkserver child");
    }
    bool inline_rec = reclen <= FS_INLINE_MAX;
    if (inline_rec)
        r = send_request(ch[1], 'R', rec, reclen, fds, nfds);
    else
        r = send_request(ch[1], 'F', NULL, 0, NULL, 0);
    mp__close(ch[1]);
    /* EPIPE here: the server dropped the request (fork failed) or died. */
    if (r == 0 && !inline_rec && (r = mp__frame_send(ch[0], NULL, rec, reclen, fds, nfds)) < 0) {
        char msg[512];
        snprintf(msg, sizeof msg, "%s (%s)", mp__last_error_detail(), mp_strerror(r));
        r = mp__error(MP_EPROCESS, "the forkserver did not start the child: %s", msg);
    }
    free(rec);
    if (r == 0) {
        char what[300];
        snprintf(what, sizeof what, "forkserver child %s", l->name);
        r = mp__reply_recv(ch[0], what, pid, pidfd);
    }
    if (r < 0) { /* a child that failed to bootstrap exits by itself; the server reaps it */
        mp__close(ch[0]);
        *pid = 0;
        *pidfd = -1;
        return r;
    }
    *statfd = ch[0];
    return 0;
}

/* The status is a frame holding an int (see DESIGN). */
int mp__fs_read_status(int statfd, int *rc)
{
    mp__buf b = {0};
    size_t nfd = 0;
    mp_value *v = NULL;
    int r = mp__frame_recv(statfd, NULL, &b, NULL, 0, &nfd);
    if (r == 0 && mp__value_decode_plain(b.data, b.len, &v) == 0 && mp_value_type(v) == MP_INT)
        *rc = (int)mp_value_get_int(v);
    else if (r == 0)
        r = mp__error(MP_EPROTO, "a malformed exit status from the forkserver");
    mp_value_free(v);
    mp__buf_free(&b);
    if (r == MP_EEOF)
        return mp__error(MP_EEOF, "the forkserver went away before reporting the exit status");
    if (r < 0)
        return r == MP_EPROTO ? r : mp__error(r, "reading an exit status from the forkserver");
    /* The server closes the socket right after the status: wait for that EOF so the
     * sentinel stays readable from now on, like a pidfd of an ended child. */
    mp__iwait_poll1(statfd, POLLIN, mp__deadline(1.0));
    return 0;
}

void mp__fs_shutdown(void)
{
    pthread_mutex_lock(&fs_lock);
    if (fs_ctl >= 0) {
        mp__close(fs_ctl);
        fs_ctl = -1;
        /* EOF makes the server exit at once, unless a forked child of ours still holds
         * the connection: wait a little, then leave it to init. */
        for (int i = 0; fs_owner == getpid() && i < 1000; i++) {
            pid_t w = waitpid(fs_pid, NULL, WNOHANG);
            if (w != 0)
                break;
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    pthread_mutex_unlock(&fs_lock);
}

/* ---- server ------------------------------------------------------------------- */

struct child {
    pid_t pid;
    int sock;
};

static struct child *children;
static size_t nchildren, capchildren;

/* The spare (see DESIGN): its pid and our end of its socket (-1: none). */
static pid_t spare_pid;
static int spare_sock = -1;
static double spare_born, last_request;
#define SPARE_TTL 0.05

static void add_child(pid_t pid, int sock)
{
    if (nchildren == capchildren) {
        size_t cap = capchildren ? capchildren * 2 : 16;
        struct child *c = realloc(children, cap * sizeof *c);
        if (!c) {
            mp__close(sock); /* the client sees EOF: status unknown */
            return;
        }
        children = c;
        capchildren = cap;
    }
    children[nchildren].pid = pid;
    children[nchildren].sock = sock;
    nchildren++;
}

/* A child's exit status for its client: a frame holding the int (Python's returncode:
 * negative for a signal). Never blocks: a client that stopped reading loses it. */
static void send_status(int sock, int rc)
{
    char buf[16];
    size_t len = 0, sent = 0;
    mp_value *v = mp_value_int(rc);
    if (v && mp__value_encode_into(v, buf, sizeof buf, &len) == 0)
        mp__frame_begin(sock, NULL, buf, len, NULL, 0, MSG_DONTWAIT, &sent);
    mp_value_free(v);
}

static void report_exits(void)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        if (pid == spare_pid) { /* killed while waiting: the next request forks */
            mp__close(spare_sock);
            spare_sock = -1;
            spare_pid = 0;
            continue;
        }
        int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
        for (size_t i = 0; i < nchildren; i++) {
            if (children[i].pid != pid)
                continue;
            send_status(children[i].sock, rc);
            mp__close(children[i].sock);
            children[i] = children[--nchildren];
            break;
        }
    }
}

/* A child is born on the server's CPU (see DESIGN): for the fork only, the server's
 * affinity is narrowed to the CPU it runs on; born_here_end() puts the saved mask back,
 * in the server and, first thing, in the child. No-op when the server may run on one
 * CPU only or the masks cannot be read. */
struct born_here {
    cpu_set_t saved;
    bool narrowed;
};

static void born_here_begin(struct born_here *b)
{
    b->narrowed = false;
    int cpu = sched_getcpu();
    if (cpu < 0 || cpu >= CPU_SETSIZE || sched_getaffinity(0, sizeof b->saved, &b->saved) < 0 ||
        CPU_COUNT(&b->saved) < 2)
        return;
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(cpu, &one);
    b->narrowed = sched_setaffinity(0, sizeof one, &one) == 0;
}

static void born_here_end(const struct born_here *b)
{
    if (b->narrowed)
        sched_setaffinity(0, sizeof b->saved, &b->saved);
}

/* The dispositions the server found at start (inherited from the client: an ignored
 * signal survives exec), given back to each child as Python's forkserver does. */
static struct sigaction int_found, chld_found;

/* The server's fds and signal settings, shared by the main loop and make_spare(). */
struct server {
    int ctl, sfd;
    sigset_t old_mask;
};

/* In a forked child (spare or not): drop everything that is the server's. */
static void child_leave_server(const struct server *sv)
{
    mp__close(sv->ctl);
    mp__close(sv->sfd);
    mp__close(spare_sock);
    spare_sock = -1;
    for (size_t i = 0; i < nchildren; i++)
        mp__close(children[i].sock);
    sigaction(SIGINT, &int_found, NULL);
    sigaction(SIGCHLD, &chld_found, NULL);
    sigprocmask(SIG_SETMASK, &sv->old_mask, NULL);
}

/* The client's stdout and stderr become ours. */
static void child_take_stdio(int out, int err)
{
    dup2(out, 1);
    dup2(err, 2);
    if (out > 2)
        close(out);
    if (err > 2 && err != out)
        close(err);
}

static void close_fds(const int *fds, size_t n)
{
    for (size_t i = 0; i < n; i++)
        mp__close(fds[i]);
}

/* The last target found: a program usually starts the same function many times, and
 * the server's mappings never change. */
static mp__target_loc last_loc;
static mp_target_fn last_fn;

static int find_target(const mp__target_loc *loc, mp_target_fn *fn)
{
    if (last_fn && loc->offset == last_loc.offset && strcmp(loc->sym, last_loc.sym) == 0 &&
        strcmp(loc->path, last_loc.path) == 0) {
        *fn = last_fn;
        return 0;
    }
    int r = mp__target_resolve(loc, fn);
    if (r == 0) {
        last_loc.offset = loc->offset;
        strcpy(last_loc.path, loc->path);
        strcpy(last_loc.sym, loc->sym);
        last_fn = *fn;
    }
    return r;
}

/* Receive one request (see send_msg) into req, its fds into fds; head: the number of
 * bytes between the kind byte and the record (see spare_main). The length; 0 for a
 * malformed one (its fds closed) or a failed read; -1 at EOF. */
static ssize_t recv_request(int ctl, size_t head, char *req, size_t cap, int *fds,
                            size_t *nfds)
{
    struct iovec iov = {.iov_base = req, .iov_len = cap};
    int mflags = 0;
    *nfds = 0;
    ssize_t r = mp__recvmsg_fds(ctl, &iov, 1, fds, 3 + MP__PROC_MAX_FDS, nfds, 0, &mflags);
    if (r == 0)
        return -1;
    bool ok = r > (ssize_t)head && *nfds >= 3 && !(mflags & (MSG_CTRUNC | MSG_TRUNC)) &&
              (req[0] == 'R' || (req[0] == 'F' && r == (ssize_t)head + 1 && *nfds == 3));
    if (!ok) {
        close_fds(fds, *nfds);
        return 0;
    }
    return r;
}

/* In the new child, once a request is there: become what it asks for. A request kept
 * its kind byte ('R': the record follows, parsed into l; 'F': the child reads it). */
static _Noreturn void child_start(char kind, mp__launch *l, mp_target_fn fn, int *fds,
                                  size_t nfds)
{
    child_take_stdio(fds[1], fds[2]);
    if (kind == 'R') /* l: our copy of the record the server unpacked */
        mp__boot_launch(fds[0], l, fn, fds + 3, nfds - 3, true);
    mp__boot_child(fds[0], NULL, true);
}

/* The spare's life: wait for the request the server hands over, then start it. The
 * message is the request with the target's address (valid here: we are a fork of the
 * server) between the kind byte and the record. */
static _Noreturn void spare_main(int sock)
{
    static char msg[1 + sizeof(mp_target_fn) + FS_INLINE_MAX];
    int fds[3 + MP__PROC_MAX_FDS];
    size_t nfds = 0;
    /* While waiting, take the page faults a start would take later: our first writes
     * to the buffer, the malloc arena and the stdio list copy the server's pages. */
    memset(msg, 0, sizeof msg);
    free(malloc(FS_INLINE_MAX));
    fflush(NULL);
    ssize_t len = recv_request(sock, sizeof(mp_target_fn), msg, sizeof msg, fds, &nfds);
    if (len <= 0)
        _exit(0); /* EOF (not needed after all) or nonsense */
    mp__close(sock);
    mp_target_fn fn;
    memcpy(&fn, msg + 1, sizeof fn);
    mp__launch l;
    memset(&l, 0, sizeof l);
    size_t head = 1 + sizeof fn;
    if (msg[0] == 'R' && mp__launch_unpack(msg + head, (size_t)len - head, &l) < 0)
        _exit(1); /* the server parsed the same bytes: cannot happen */
    child_start(msg[0], &l, fn, fds, nfds);
}

static void make_spare(const struct server *sv, double now)
{
    int pair[2];
    if (mp__fd_high2(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair), pair) < 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        mp__close(pair[0]);
        child_leave_server(sv);
        spare_main(pair[1]);
    }
    mp__close(pair[1]);
    if (pid < 0) {
        mp__close(pair[0]);
        return;
    }
    spare_pid = pid;
    spare_sock = pair[0];
    spare_born = now;
}

/* Closing its socket makes the spare exit; it is reaped with the other children (or
 * at once: wait). */
static void drop_spare(bool wait)
{
    if (spare_sock < 0)
        return;
    mp__close(spare_sock);
    spare_sock = -1;
    if (wait)
        while (waitpid(spare_pid, NULL, 0) < 0 && errno == EINTR)
            ;
    spare_pid = 0;
}

/* Hand the request to the spare: true if it has it (the spare is then the child). */
static bool hand_over(const char *req, size_t len, mp_target_fn fn, const int *fds,
                      size_t nfds)
{
    struct iovec iov[3] = {{.iov_base = (void *)req, .iov_len = 1},
                           {.iov_base = &fn, .iov_len = sizeof fn},
                           {.iov_base = (void *)(req + 1), .iov_len = len - 1}};
    return mp__sendmsg_fds(spare_sock, iov, 3, fds, nfds, MSG_DONTWAIT) > 0;
}

/* A new child for the request, by the spare or by a fork: its pid, or -1. */
static pid_t start_child(const struct server *sv, const char *req, size_t len,
                         mp__launch *l, mp_target_fn fn, int *fds, size_t nfds)
{
    if (spare_sock >= 0) {
        pid_t pid = spare_pid;
        bool taken = hand_over(req, len, fn, fds, nfds);
        drop_spare(!taken); /* a spare that cannot take it is gone or broken */
        if (taken)
            return pid;
    }
    struct born_here born;
    born_here_begin(&born);
    pid_t pid = fork();
    born_here_end(&born); /* in both processes */
    if (pid == 0) {
        child_leave_server(sv);
        child_start(req[0], l, fn, fds, nfds);
    }
    return pid;
}

static void serve_request(const struct server *sv)
{
    static char req[1 + FS_INLINE_MAX];
    int fds[3 + MP__PROC_MAX_FDS];
    size_t nfds = 0;
    ssize_t len = recv_request(sv->ctl, 0, req, sizeof req, fds, &nfds);
    if (len < 0) { /* every client is gone */
        drop_spare(true);
        _exit(0);
    }
    if (len == 0)
        return;
    mp__launch l;
    memset(&l, 0, sizeof l);
    mp_target_fn fn = NULL;
    if (req[0] == 'R') {
        int code = mp__launch_unpack(req + 1, (size_t)len - 1, &l);
        if (code == 0 && l.nfds != nfds - 3)
            code = mp__error(MP_EPROTO, "launch record announces %u fds, %zu arrived", l.nfds,
                             nfds - 3);
        if (code == 0)
            code = find_target(&l.loc, &fn);
        if (code < 0) { /* the client's start() fails with it; no child to fork */
            mp__reply_send(fds[0], code, mp__last_error_detail(), 0, -1);
            mp__launch_clear(&l);
            close_fds(fds, nfds);
            return;
        }
    }
    pid_t pid = start_child(sv, req, (size_t)len, &l, fn, fds, nfds);
    mp__launch_clear(&l);
    close_fds(fds + 1, nfds - 1);
    if (pid < 0) {
        mp__close(fds[0]); /* the client sees EOF instead of a reply */
        return;
    }
    add_child(pid, fds[0]);
    double now = mp__now();
    if (spare_sock < 0 && now - last_request < SPARE_TTL)
        make_spare(sv, now);
    last_request = now;
}

_Noreturn void mp__fs_server_main(int ctl)
{
    struct server sv = {.ctl = ctl};
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, &sv.old_mask);
    sv.sfd = mp__fd_high(signalfd(-1, &chld, SFD_CLOEXEC | SFD_NONBLOCK));
    /* As Python's forkserver: Ctrl-C reaches the clients, not the server. SIGCHLD must
     * not be ignored (a client that ignores it would pass that on): the kernel would
     * reap the children itself and their exit statuses would be lost. */
    struct sigaction ign = {.sa_handler = SIG_IGN}, dfl = {.sa_handler = SIG_DFL};
    sigaction(SIGINT, &ign, &int_found);
    sigaction(SIGCHLD, &dfl, &chld_found);
    mp__set_cloexec(ctl, true);
    mp__fs_preload(); /* before any fork: every child starts with them loaded */
    /* Output the program's constructors buffered here goes to our /dev/null now, not
     * into the stdout of every child at its exit. */
    fflush(NULL);
    if (sv.sfd < 0)
        _exit(1);
    char ready = 'R';
    if (send(ctl, &ready, 1, MSG_NOSIGNAL) != 1)
        _exit(0); /* the client is gone already */
    for (;;) {
        struct pollfd p[2] = {{.fd = ctl, .events = POLLIN}, {.fd = sv.sfd, .events = POLLIN}};
        int timeout = -1;
        if (spare_sock >= 0) { /* until the spare expires */
            double left = spare_born + SPARE_TTL - mp__now();
            timeout = left > 0 ? (int)(left * 1000) + 1 : 0;
        }
        int n = poll(p, 2, timeout);
        if (n < 0 && errno != EINTR)
            _exit(1);
        if (n == 0) {
            drop_spare(false);
            continue;
        }
        if (n < 0)
            continue;
        if (p[1].revents) {
            /* Drain (usually one read); waitpid finds every child that ended. */
            struct signalfd_siginfo si[8];
            while (read(sv.sfd, si, sizeof si) == (ssize_t)sizeof si)
                ;
            report_exits();
        }
        if (p[0].revents)
            serve_request(&sv);
    }
}
