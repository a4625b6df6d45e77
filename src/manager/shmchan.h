/* The shared-memory request channel of a local manager connection (shmchan.c). */
#ifndef MP_MANAGER_SHMCHAN_H
#define MP_MANAGER_SHMCHAN_H

#include "multiproc/connection.h"

#include <stdbool.h>
#include <stddef.h>

#include <stdint.h>

#define MGR_CHAN_SLOT (64 * 1024 - 256)

/* The shared segment: written by both sides, trusted by neither (shmchan.c). */
struct mgr_shm {
    _Atomic uint32_t state; /* idle 0, request 1, reply 2, reply on the socket 3 */
    uint32_t len;
    char pad1[56];
    _Atomic uint32_t srv_sleeping;
    char pad2[60];
    _Atomic uint32_t cli_sleeping;
    char pad3[60];
    unsigned char data[MGR_CHAN_SLOT];
};

typedef struct mgr_chan {
    struct mgr_shm *shm; /* NULL: no channel, the socket carries everything */
    int efd_wait;        /* this side sleeps on it */
    int efd_wake;        /* this side wakes the peer with it */
} mgr_chan;

#define MGR_CHAN_NONE {NULL, -1, -1}

/* True when sock is a Unix socket (a local peer). */
bool mp__mgr_chan_local(int sock);
/* The largest request or reply the slot holds. */
size_t mp__mgr_chan_slot(void);
void mp__mgr_chan_close(mgr_chan *ch);

/* Server: make the segment and the eventfds: fds[0..2] to send after the reply; the
 * caller closes fds[0] (the segment, mapped by ch), fds[1] and fds[2] belong to ch. */
int mp__mgr_chan_create(mgr_chan *ch, int fds[3]);
int mp__mgr_chan_send_fds(int sock, const int fds[3]);
/* Client: receive and map them (after the "shm" reply). */
int mp__mgr_chan_recv(mgr_chan *ch, int sock);

/* Client: put a request in the slot and wake the server: 0, or 1 when it does not fit
 * (send it on the socket). Then wait for the reply: 0 with *rep (malloc'd), MP_EEOF if
 * the server is gone, MP_EINTERRUPTED (the reply stays pending), or an error. */
int mp__mgr_chan_send(mgr_chan *ch, const void *req, size_t len);
int mp__mgr_chan_await(mgr_chan *ch, mp_connection *c, void **rep, size_t *len);

/* Server: the next request, from the slot (*from_slot) or the socket; MP_EEOF when the
 * client is gone. Reply to a slot request with mp__mgr_chan_reply (the slot, or the
 * socket when it does not fit), to a socket request on the socket. */
int mp__mgr_chan_next(mgr_chan *ch, mp_connection *c, size_t max, void **buf, size_t *len,
                      bool *from_slot);
int mp__mgr_chan_reply(mgr_chan *ch, mp_connection *c, const void *rep, size_t len);

#endif
