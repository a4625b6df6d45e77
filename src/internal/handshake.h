/* Python's HMAC challenge/response handshake as a non-blocking state machine, so one
 * deadline bounds the whole exchange (not each read) and a listener can drive several
 * handshakes under one poll (src/listener.c). The fd stays blocking: every send/recv
 * uses MSG_DONTWAIT, and reads take exactly the bytes of the handshake's frames, so
 * whatever the peer sends after the handshake stays in the socket for the connection. */
#ifndef MP_INTERNAL_HANDSHAKE_H
#define MP_INTERNAL_HANDSHAKE_H

#include "multiproc/connection.h"

#include <stdbool.h>
#include <stddef.h>

typedef struct mp__hs mp__hs;

/* A handshake on socket `fd` (borrowed; `key` borrowed too, it must outlive the handshake).
 * server: challenge first, then answer (Listener.accept); else the reverse (Client).
 * `deadline` (mp__deadline form, -1 none) is only stored: the caller enforces it.
 * NULL with -ENOMEM. */
mp__hs *mp__hs_new(int fd, bool server, const void *key, size_t keylen, mp_auth_digest d,
                   double deadline);
/* Advance as far as possible without blocking: 1 when authenticated both ways, 0 when it
 * must wait for mp__hs_events(h) on the fd, or a negative code (MP_EAUTH, -errno) with
 * the message set. */
int mp__hs_step(mp__hs *h);
short mp__hs_events(const mp__hs *h); /* POLLIN or POLLOUT */
int mp__hs_fd(const mp__hs *h);
double mp__hs_deadline(const mp__hs *h);
void mp__hs_free(mp__hs *h); /* the fd is not closed */

/* Run a handshake to completion, polling until `deadline`: 0, MP_ETIMEOUT,
 * MP_EINTERRUPTED, MP_EAUTH or -errno. */
int mp__hs_run(int fd, bool server, const void *key, size_t keylen, mp_auth_digest d,
               double deadline);

#endif
