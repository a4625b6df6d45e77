/* How long a manager connection over TCP waits on a peer that has gone silent.
 *
 * DESIGN: a client waiting for a reply (Event.wait with no timeout, Queue.get, a lock)
 * and a server waiting for a client's next request read a socket with no deadline: a
 * peer whose host died or whose link was cut sends nothing, not even a FIN, and without
 * help TCP never notices (keepalive is off by default; unacknowledged data is retried
 * for ~15 minutes). So both ends of every TCP manager connection get the server's
 * peer_limit L: TCP keepalive probes after L/2 s of silence, every L/6 s, and
 * TCP_USER_TIMEOUT = L, which makes the kernel drop the connection once a probe or
 * some data has gone unanswered for L s. The blocked read then fails with ETIMEDOUT
 * (the proxy reports MP_EEOF, "unreachable"), and the server's connection thread ends,
 * releasing what that client held. A peer that is alive answers the probes from its
 * kernel, so a wait of any length on a healthy link is never cut. Unix sockets need
 * none of this (the peer's end closes when it dies): they are left alone. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "manager/mgr.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static bool is_tcp(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        return false;
    return ss.ss_family == AF_INET || ss.ss_family == AF_INET6;
}

int mp__mgr_peer_limit_apply(int fd, double limit)
{
    if (fd < 0 || !is_tcp(fd))
        return 0;
    int on = limit > 0, idle = 1, intvl = 1, cnt = 3;
    unsigned int user_ms = 0; /* 0: the kernel's default (no limit of ours) */
    if (on) {
        if (limit > 86400)
            limit = 86400;
        idle = limit / 2 >= 1 ? (int)(limit / 2) : 1;
        intvl = limit / 6 >= 1 ? (int)(limit / 6) : 1;
        user_ms = (unsigned int)(limit * 1000);
    }
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof on) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &user_ms, sizeof user_ms) < 0 ||
        (on && (setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle) < 0 ||
                setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl) < 0 ||
                setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt) < 0)))
        return -errno;
    return 0;
}

double mp__mgr_peer_limit(double opt)
{
    if (opt == 0)
        return MGR_PEER_LIMIT_DEFAULT;
    return opt < 0 ? MP_NO_LIMIT : opt;
}

void mp__mgr_reply_limits(const mp_value *v, size_t *max, double *peer)
{
    int64_t m = 0;
    double p = 0;
    if (mp_value_type(v) == MP_INT)
        m = mp_value_get_int(v);
    else if (mp_value_unpack(v, "[I f]", &m, &p) == 0)
        *peer = p;
    if (m > 0)
        *max = (size_t)m;
}
