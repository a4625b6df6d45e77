/* The shared-memory request channel between a local client connection and its server
 * thread.
 *
 * DESIGN
 * - Set-up: on a Unix-socket connection the client asks "shm"; the server thread makes
 *   a sealed memfd (a header and one slot of MGR_CHAN_SLOT bytes, sealed against
 *   shrinking so a client cannot make the server fault) and two eventfds (one wakes the server thread,
 *   one the client), replies, then sends the three fds with SCM_RIGHTS on the socket.
 *   TCP connections never ask; a client that fails to map keeps using the socket.
 * - A call: the client copies the encoded request into the slot, sets state REQ, and
 *   wakes the server's eventfd only if the server thread said it sleeps. The server
 *   thread copies the request out (the client may scribble on the slot: the length is
 *   read once and checked, the bytes decoded from the private copy), handles it, writes
 *   the reply into the slot and sets REP (or, a reply larger than the slot, sends it on
 *   the socket and then sets REP_SOCK), waking the client only if it sleeps. The client
 *   reads the reply and sets IDLE. A request larger than the slot goes over the socket
 *   the old way and its reply comes back there: the server serves both.
 * - Waiting: each side spins on the state word for up to SPIN seconds (yielding the
 *   CPU at each turn; no spin on a one-CPU machine), so back-to-back requests from a
 *   busy client need no wake-up of a sleeping peer, then announces it sleeps (seq_cst store, then re-check:
 *   the peer stores the state, then loads the flag, so one of them sees the other) and
 *   poll()s its eventfd together with the socket. The socket stays the liveness
 *   channel: a server that dies (or shuts the connection down) makes the client's poll
 *   return at once and the call fail with MP_EEOF; a client that dies makes the server
 *   thread's poll return and the connection end (its references and locks released),
 *   exactly as on the socket path.
 * - Data, never code: the slot carries the same MessagePack requests and replies as the
 *   socket, under the same max_message limit.
 */
#define _GNU_SOURCE
#include "manager/shmchan.h"

#include "internal/common.h"
#include "internal/fdpass.h"
#include "internal/iwait.h"

#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define SPIN 100e-6

enum { ST_IDLE = 0, ST_REQ = 1, ST_REP = 2, ST_REP_SOCK = 3 };

static double spin_time(void)
{
    static _Atomic long cpus; /* 0: not asked yet */
    long n = atomic_load_explicit(&cpus, memory_order_relaxed);
    if (n == 0) {
        n = sysconf(_SC_NPROCESSORS_ONLN);
        atomic_store_explicit(&cpus, n, memory_order_relaxed);
    }
    return n > 1 ? SPIN : 0;
}

/* Spin until *w is one of the wanted states (a bitmask of 1 << state): the state, or -1
 * after the spin time. The spin yields the CPU at each turn: on a machine with more
 * runnable threads than cores a spinner that only paused would hold a core its peer
 * needs (measured: 4 clients on 2 loaded cores fell from 60k to 7k ops/s). */
static int spin_for(_Atomic uint32_t *w, unsigned want)
{
    double limit = spin_time(), until = 0;
    for (;;) {
        uint32_t s = atomic_load_explicit(w, memory_order_acquire);
        if (s < 32 && (want >> s & 1))
            return (int)s;
        if (limit <= 0)
            return -1;
        double now = mp__now();
        if (until == 0)
            until = now + limit;
        else if (now >= until)
            return -1;
        sched_yield();
    }
}

static void wake(int efd)
{
    uint64_t one = 1;
    ssize_t n = write(efd, &one, sizeof one);
    (void)n; /* EAGAIN: the counter is saturated, a wake-up is pending anyway */
}

static void drain_efd(int efd)
{
    uint64_t v;
    ssize_t n = read(efd, &v, sizeof v);
    (void)n;
}

/* Is there still a peer on the socket? false at EOF or on an error. */
static bool peer_alive(int sock)
{
    char b;
    ssize_t n = recv(sock, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EINTR));
}

void mp__mgr_chan_close(mgr_chan *ch)
{
    if (ch->shm)
        munmap(ch->shm, sizeof *ch->shm);
    if (ch->efd_wait >= 0)
        mp__close(ch->efd_wait);
    if (ch->efd_wake >= 0)
        mp__close(ch->efd_wake);
    ch->shm = NULL;
    ch->efd_wait = ch->efd_wake = -1;
}

size_t mp__mgr_chan_slot(void) { return MGR_CHAN_SLOT; }

bool mp__mgr_chan_local(int sock)
{
    struct sockaddr_storage a;
    socklen_t n = sizeof a;
    return getsockname(sock, (struct sockaddr *)&a, &n) == 0 && a.ss_family == AF_UNIX;
}

/* ---- set-up ----------------------------------------------------------------------------- */

int mp__mgr_chan_create(mgr_chan *ch, int fds[3])
{
    ch->shm = NULL;
    ch->efd_wait = ch->efd_wake = -1;
    fds[0] = fds[1] = fds[2] = -1;
    int mfd = mp__fd_high(memfd_create("mp-manager-chan", MFD_CLOEXEC | MFD_ALLOW_SEALING));
    if (mfd < 0)
        return mp__errno("manager channel: memfd_create");
    if (ftruncate(mfd, sizeof(struct mgr_shm)) < 0 ||
        fcntl(mfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) < 0) {
        int r = mp__errno("manager channel: sizing the segment");
        mp__close(mfd);
        return r;
    }
    void *m = mmap(NULL, sizeof *ch->shm, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
    int a = mp__fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    int b = mp__fd_high(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (m == MAP_FAILED || a < 0 || b < 0) {
        int r = mp__errno("manager channel: mapping");
        if (m != MAP_FAILED)
            munmap(m, sizeof *ch->shm);
        if (a >= 0)
            mp__close(a);
        if (b >= 0)
            mp__close(b);
        mp__close(mfd);
        return r;
    }
    ch->shm = m;
    ch->efd_wait = a; /* the server waits on a, wakes the client with b */
    ch->efd_wake = b;
    fds[0] = mfd;
    fds[1] = a;
    fds[2] = b;
    return 0;
}

int mp__mgr_chan_send_fds(int sock, const int fds[3])
{
    char b = 'F';
    struct iovec iov = {&b, 1};
    ssize_t n = mp__sendmsg_fds(sock, &iov, 1, fds, 3, 0);
    return n == 1 ? 0 : mp__error(n < 0 ? (int)n : MP_EPROTO, "manager channel: passing fds");
}

int mp__mgr_chan_recv(mgr_chan *ch, int sock)
{
    ch->shm = NULL;
    ch->efd_wait = ch->efd_wake = -1;
    char b;
    struct iovec iov = {&b, 1};
    int fds[3];
    size_t nfds = 0;
    ssize_t n = mp__recvmsg_fds(sock, &iov, 1, fds, 3, &nfds, 0, NULL);
    int r = 0;
    if (n != 1 || nfds != 3 || b != 'F')
        r = mp__error(n < 0 ? (int)n : MP_EPROTO, "manager channel: receiving fds");
    struct stat st;
    if (r == 0 && (fstat(fds[0], &st) < 0 || (size_t)st.st_size < sizeof *ch->shm))
        r = mp__error(MP_EPROTO, "manager channel: a segment of the wrong size");
    void *m = r == 0 ? mmap(NULL, sizeof *ch->shm, PROT_READ | PROT_WRITE, MAP_SHARED, fds[0], 0)
                     : MAP_FAILED;
    if (r == 0 && m == MAP_FAILED)
        r = mp__errno("manager channel: mmap");
    if (r == 0) {
        ch->shm = m;
        ch->efd_wait = fds[2]; /* the client waits on b, wakes the server with a */
        ch->efd_wake = fds[1];
        mp__close(fds[0]);
        return 0;
    }
    for (size_t i = 0; i < nfds; i++)
        mp__close(fds[i]);
    return r;
}

/* ---- waiting ----------------------------------------------------------------------------- */

/* Wait until the state is one of want, the peer is gone (MP_EEOF), the socket has data
 * (1, only when sock_data is set) or a handler interrupts (MP_EINTERRUPTED). */
static int wait_state(mgr_chan *ch, int sock, _Atomic uint32_t *sleeping, unsigned want,
                      bool sock_data, int *state)
{
    int s = spin_for(&ch->shm->state, want);
    for (;;) {
        if (s >= 0) {
            *state = s;
            return 0;
        }
        atomic_store(sleeping, 1);
        uint32_t now = atomic_load(&ch->shm->state);
        if (now < 32 && (want >> now & 1)) {
            atomic_store(sleeping, 0);
            *state = (int)now;
            return 0;
        }
        struct pollfd p[2] = {{ch->efd_wait, POLLIN, 0}, {sock, POLLIN | POLLRDHUP, 0}};
        int n = mp__iwait_poll(p, 2, -1);
        atomic_store(sleeping, 0);
        if (n < 0 && n != -EINTR)
            return n;
        if (p[0].revents)
            drain_efd(ch->efd_wait);
        now = atomic_load(&ch->shm->state);
        if (now < 32 && (want >> now & 1)) {
            *state = (int)now;
            return 0;
        }
        if (p[1].revents) {
            if (!peer_alive(sock))
                return MP_EEOF;
            if (sock_data)
                return 1;
            /* the server sent a large reply and is about to say so: look again */
        }
        s = -1;
    }
}

/* ---- the client --------------------------------------------------------------------------- */

int mp__mgr_chan_send(mgr_chan *ch, const void *req, size_t len)
{
    if (len > MGR_CHAN_SLOT)
        return 1;
    struct mgr_shm *m = ch->shm;
    memcpy(m->data, req, len);
    m->len = (uint32_t)len;
    atomic_store(&m->state, ST_REQ);
    if (atomic_load(&m->srv_sleeping))
        wake(ch->efd_wake);
    return 0;
}

int mp__mgr_chan_await(mgr_chan *ch, mp_connection *c, void **rep, size_t *len)
{
    struct mgr_shm *m = ch->shm;
    int sock = mp_connection_fileno(c);
    int st;
    int r = wait_state(ch, sock, &m->cli_sleeping, 1u << ST_REP | 1u << ST_REP_SOCK, false,
                       &st);
    if (r < 0)
        return r;
    if (st == ST_REP_SOCK) {
        atomic_store(&m->state, ST_IDLE);
        return mp_connection_recv_bytes(c, 0, rep, len);
    }
    size_t n = m->len;
    if (n > MGR_CHAN_SLOT)
        return mp__error(MP_EPROTO, "manager channel: a reply of %zu bytes", n);
    void *b = malloc(n ? n : 1);
    if (!b)
        return mp__error(-ENOMEM, "manager channel: reply");
    memcpy(b, m->data, n);
    atomic_store(&m->state, ST_IDLE);
    *rep = b;
    *len = n;
    return 0;
}

/* ---- the server ---------------------------------------------------------------------------- */

int mp__mgr_chan_next(mgr_chan *ch, mp_connection *c, size_t max, void **buf, size_t *len,
                      bool *from_slot)
{
    struct mgr_shm *m = ch->shm;
    int st;
    int r = wait_state(ch, mp_connection_fileno(c), &m->srv_sleeping, 1u << ST_REQ, true, &st);
    if (r < 0)
        return r;
    if (r == 1) { /* a request on the socket */
        *from_slot = false;
        return mp_connection_recv_bytes(c, max, buf, len);
    }
    *from_slot = true;
    size_t n = m->len; /* read once: the client may change it */
    if (n > MGR_CHAN_SLOT || (max && n > max))
        return mp__error(MP_EPROTO, "manager channel: a request of %zu bytes", n);
    void *b = malloc(n ? n : 1);
    if (!b)
        return mp__error(-ENOMEM, "manager channel: request");
    memcpy(b, m->data, n);
    *buf = b;
    *len = n;
    return 0;
}

int mp__mgr_chan_reply(mgr_chan *ch, mp_connection *c, const void *rep, size_t len)
{
    struct mgr_shm *m = ch->shm;
    uint32_t st = ST_REP;
    if (len > MGR_CHAN_SLOT) {
        int r = mp_connection_send_bytes(c, rep, 0, len);
        if (r < 0)
            return r;
        st = ST_REP_SOCK;
    } else {
        memcpy(m->data, rep, len);
        m->len = (uint32_t)len;
    }
    atomic_store(&m->state, st);
    if (atomic_load(&m->cli_sleeping))
        wake(ch->efd_wake);
    return 0;
}
