/* Passing fds over Unix sockets (SCM_RIGHTS): the one sendmsg and the one recvmsg path,
 * shared by the process launch protocol, the forkserver, connections and the pool. */
#ifndef MP_INTERNAL_FDPASS_H
#define MP_INTERNAL_FDPASS_H

#include <stddef.h>
#include <sys/types.h>

/* The kernel's limit on fds in one SCM_RIGHTS message (SCM_MAX_FD). */
#define MP__FDPASS_MAX 253

struct iovec;

/* One sendmsg() of the iovecs with up to MP__FDPASS_MAX fds as SCM_RIGHTS (none when
 * nfds is 0), MSG_NOSIGNAL added to flags. Bytes sent, or -errno (-EINTR included, so
 * a caller that runs deferred signal handlers can). -E2BIG past MP__FDPASS_MAX. */
ssize_t mp__sendmsg_fds_once(int sock, struct iovec *iov, int niov, const int *fds, size_t nfds,
                             int flags);
/* The same, retried on EINTR. */
ssize_t mp__sendmsg_fds(int sock, struct iovec *iov, int niov, const int *fds, size_t nfds,
                        int flags);
/* One recvmsg() into the iovecs with MSG_CMSG_CLOEXEC added to flags, keeping up to max
 * of the fds it brought (appended at fds[*nfds]; the rest closed). Bytes received (0 at
 * EOF) or -errno (-EINTR included). *msg_flags, when not NULL, gets the message's flags
 * (MSG_TRUNC, MSG_CTRUNC; MSG_CTRUNC also when fds past max were closed). */
ssize_t mp__recvmsg_fds_once(int sock, struct iovec *iov, int niov, int *fds, size_t max,
                             size_t *nfds, int flags, int *msg_flags);
/* The same, retried on EINTR. */
ssize_t mp__recvmsg_fds(int sock, struct iovec *iov, int niov, int *fds, size_t max,
                        size_t *nfds, int flags, int *msg_flags);

#endif
