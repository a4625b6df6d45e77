/* What both handshake targets share: a socketpair whose far end plays the peer, and a
 * loop driving the state machine (src/handshake.c) to its end. */
#ifndef MP_FUZZ_HANDSHAKE_PEER_H
#define MP_FUZZ_HANDSHAKE_PEER_H

#define _GNU_SOURCE
#include "internal/handshake.h"

#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#define FUZZ_KEY "fuzz key"
#define FUZZ_KEYLEN 8

static void socket_pair(int sv[2])
{
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
}

/* The peer's last words: the bytes (inputs are small: the socket holds them), then
 * end of file; the peer still reads, so our side's sends succeed. */
static void peer_send_last(int peer, const uint8_t *data, size_t size)
{
    if (size && send(peer, data, size, MSG_DONTWAIT) != (ssize_t)size)
        abort();
    shutdown(peer, SHUT_WR);
}

/* Step until the handshake ends: everything the peer sends is already there, so a
 * handshake still waiting for input once the socket is quiet would hang a real caller. */
static int run_to_end(mp__hs *h)
{
    int r;
    while ((r = mp__hs_step(h)) == 0) {
        struct pollfd p = {mp__hs_fd(h), mp__hs_events(h), 0};
        if (poll(&p, 1, 1000) != 1) {
            fprintf(stderr, "the handshake waits although the peer has finished\n");
            abort();
        }
    }
    return r;
}

#endif
