/* Fuzz target: the message framing of connections (src/connection.c, the receive path):
 * what a peer writes on the socket, read back as messages until the stream ends.
 *
 * Input: one config byte, then the bytes the peer sends (then it closes its end).
 *   bits 0-1  the receive call: mp_connection_recv (values), recv_bytes (no maxlength),
 *             recv_bytes with maxlength 64, recv_bytes_into a 16-byte buffer
 *   bit 2     a maximum message size of 256 bytes (else the default, 64 MiB; not
 *             MP_CONNECTION_UNLIMITED, which allocates whatever length is announced)
 *   bit 3     two fds (/dev/null, a memfd) ride on the first byte (SCM_RIGHTS)
 *   bit 4     after MP_ETOOSHORT: receive the kept message with recv_bytes(maxlength 64)
 *             rather than mp_connection_take_pending
 *   bit 5     the pickle codec (values are Python pickles; fds that arrive are dropped)
 * Checks: no crash, leak or UB; receiving reaches the end of the stream (each receive
 * consumes bytes); every fd that arrived is closed once the values are freed. */
#define _GNU_SOURCE
#include "multiproc/connection.h"
#include "multiproc/value.h"

#include "internal/tracker.h"
#include "manager/mgr.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d)
        abort();
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* The peer: send the bytes (fds on the first one), as much as the socket holds. */
static void peer_send(int sock, const uint8_t *data, size_t size, bool with_fds)
{
    size_t off = 0;
    if (with_fds && size > 0) {
        int fds[2] = {open("/dev/null", O_RDONLY | O_CLOEXEC), memfd_create("fuzz", MFD_CLOEXEC)};
        if (fds[0] < 0 || fds[1] < 0)
            abort();
        union {
            char b[CMSG_SPACE(sizeof fds)];
            struct cmsghdr align;
        } u;
        struct iovec iov = {(void *)data, 1};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.b,
                            .msg_controllen = sizeof u.b};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof fds);
        memcpy(CMSG_DATA(cm), fds, sizeof fds);
        if (sendmsg(sock, &mh, MSG_DONTWAIT) != 1)
            abort();
        off = 1;
        close(fds[0]);
        close(fds[1]);
    }
    while (off < size) {
        ssize_t r = send(sock, data + off, size - off, MSG_DONTWAIT);
        if (r <= 0)
            break; /* the socket is full: the rest is cut off */
        off += (size_t)r;
    }
    close(sock);
}

/* One receive of the configured kind: 0 to go on, negative when the stream is done. */
static int receive(mp_connection *c, unsigned cfg)
{
    void *buf = NULL;
    size_t len = 0;
    int r;
    switch (cfg & 3u) {
    case 0: {
        mp_value *v = NULL;
        r = mp_connection_recv(c, &v);
        mp_value_free(v);
        return r;
    }
    case 1: r = mp_connection_recv_bytes(c, 0, &buf, &len); break;
    case 2: r = mp_connection_recv_bytes(c, 64, &buf, &len); break;
    default: {
        char small[16];
        r = mp_connection_recv_bytes_into(c, small, sizeof small, 0, &len);
        if (r != MP_ETOOSHORT)
            return r;
        r = cfg & 16u ? mp_connection_recv_bytes(c, 64, &buf, &len)
                      : mp_connection_take_pending(c, &buf, &len);
    }
    }
    free(buf);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 65536) /* the socket buffer holds it all */
        return 0;
    unsigned cfg = data[0];
    mp__mgr_in_server = true; /* a proxy handle is then a reference: no connect */
    bool with_fds = cfg & 8u;
    int tracker_before = mp__tracker_fd();
    int fds_before = with_fds ? count_fds() : 0;
    mp_connection *a, *b;
    if (mp_pipe(true, &a, &b) < 0)
        abort();
    int peer = dup(mp_connection_fileno(b));
    mp_connection_free(b);
    peer_send(peer, data + 1, size - 1, with_fds);
    if (cfg & 4u)
        mp_connection_set_max_message_size(a, 256);
    if (cfg & 32u)
        mp_connection_set_codec(a, MP_CODEC_PICKLE);
    /* Each receive consumes bytes, so the stream ends (EOF, or closed on a bad length)
     * within size + 1 receives; a malformed message in between is just an error. */
    int r = 0;
    for (size_t i = 0; i <= size && r != MP_EEOF && r != MP_ECLOSED; i++)
        r = receive(a, cfg);
    if (r != MP_EEOF && r != MP_ECLOSED) {
        fprintf(stderr, "receiving did not reach the end of the stream: %s\n", mp_last_error());
        abort();
    }
    mp_connection_free(a);
    int adopted = mp__tracker_fd() != tracker_before; /* a shm handle's tracker fd */
    if (with_fds && count_fds() != fds_before + adopted) {
        fprintf(stderr, "fds leaked: %d open before, %d after\n", fds_before, count_fds());
        abort();
    }
    return 0;
}
