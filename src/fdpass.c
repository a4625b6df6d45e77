/* SCM_RIGHTS: send fds beside bytes, and receive bytes with the fds they brought. Every
 * sender and receiver of fds in the library goes through these, so the control-buffer
 * sizing and the "close what we do not keep" rule live in one place. */
#define _GNU_SOURCE
#include "internal/fdpass.h"

#include "internal/common.h"

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

ssize_t mp__sendmsg_fds_once(int sock, struct iovec *iov, int niov, const int *fds, size_t nfds,
                             int flags)
{
    union {
        char buf[CMSG_SPACE(MP__FDPASS_MAX * sizeof(int))];
        struct cmsghdr align;
    } u;
    if (nfds > MP__FDPASS_MAX)
        return -E2BIG;
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)niov};
    if (nfds) {
        msg.msg_control = u.buf;
        msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
        memset(u.buf, 0, msg.msg_controllen);
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
    }
    ssize_t r = sendmsg(sock, &msg, flags | MSG_NOSIGNAL);
    return r < 0 ? -errno : r;
}

ssize_t mp__sendmsg_fds(int sock, struct iovec *iov, int niov, const int *fds, size_t nfds,
                        int flags)
{
    ssize_t r;
    do
        r = mp__sendmsg_fds_once(sock, iov, niov, fds, nfds, flags);
    while (r == -EINTR);
    return r;
}

/* Keep up to max of the fds a recvmsg brought (appended at fds[*nfds]), close the rest;
 * returns how many were closed (or could not be moved above 2). */
static size_t adopt_fds(struct msghdr *msg, int *fds, size_t max, size_t *nfds)
{
    size_t dropped = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR(msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < k; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            /* Received fds take the lowest free numbers too (see mp__fd_high). A
             * failed move drops the fd: the caller sees fewer than announced. */
            if (*nfds < max)
                fd = mp__fd_high(fd);
            if (*nfds < max && fd >= 0) {
                fds[(*nfds)++] = fd;
            } else {
                mp__close(fd);
                dropped++;
            }
        }
    }
    return dropped;
}

ssize_t mp__recvmsg_fds_once(int sock, struct iovec *iov, int niov, int *fds, size_t max,
                             size_t *nfds, int flags, int *msg_flags)
{
    union {
        char buf[CMSG_SPACE(MP__FDPASS_MAX * sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)niov, .msg_control = u.buf,
                         .msg_controllen = sizeof u.buf};
    ssize_t r = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
    if (r < 0)
        return -errno;
    size_t dropped = adopt_fds(&msg, fds, max, nfds);
    if (msg_flags) /* fds we could not keep count as truncation, as the kernel's own */
        *msg_flags = msg.msg_flags | (dropped ? MSG_CTRUNC : 0);
    return r;
}

ssize_t mp__recvmsg_fds(int sock, struct iovec *iov, int niov, int *fds, size_t max,
                        size_t *nfds, int flags, int *msg_flags)
{
    ssize_t r;
    do
        r = mp__recvmsg_fds_once(sock, iov, niov, fds, max, nfds, flags, msg_flags);
    while (r == -EINTR);
    return r;
}
