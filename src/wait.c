/* mp_wait: one poll() over connections, listeners, process sentinels and plain fds
 * (Python's multiprocessing.connection.wait). A connection holding a pending message is
 * ready without polling. */
#define _GNU_SOURCE
#include "multiproc/connection.h"

#include "internal/common.h"
#include "internal/iwait.h"

#include <poll.h>
#include <stdlib.h>

bool mp__connection_has_pending(const mp_connection *c);

/* Weak so this file links before the process module exists; the real one wins. */
#pragma weak mp_process_sentinel

static int item_fd(const mp_waitable *w, size_t i)
{
    int fd = -1;
    switch (w->kind) {
    case MP_WAIT_FD:
        fd = w->u.fd;
        break;
    case MP_WAIT_CONNECTION:
        fd = mp_connection_fileno(w->u.conn);
        break;
    case MP_WAIT_PROCESS:
        fd = (w->u.proc && mp_process_sentinel) ? mp_process_sentinel(w->u.proc) : -1;
        break;
    case MP_WAIT_LISTENER:
        fd = w->u.listener ? mp_listener_fileno(w->u.listener) : -1;
        break;
    default:
        return mp__error(MP_EINVAL, "wait: item %zu has an unknown kind %d", i, (int)w->kind);
    }
    if (fd < 0)
        return mp__error(MP_EINVAL, "wait: item %zu (%s) has no fd: closed, unstarted or invalid",
                         i, w->kind == MP_WAIT_PROCESS ? "process" : "connection/fd");
    return fd;
}

/* Fill the pollfd array; count items ready without polling. */
static int prepare(mp_waitable *items, size_t n, struct pollfd *pfds)
{
    int ready = 0;
    for (size_t i = 0; i < n; i++) {
        items[i].ready = false;
        int fd = item_fd(&items[i], i);
        if (fd < 0)
            return fd;
        pfds[i].fd = fd;
        pfds[i].events = POLLIN;
        pfds[i].revents = 0;
        if (items[i].kind == MP_WAIT_CONNECTION && mp__connection_has_pending(items[i].u.conn)) {
            items[i].ready = true;
            ready++;
        }
    }
    return ready;
}

static int collect(mp_waitable *items, size_t n, const struct pollfd *pfds)
{
    int ready = 0;
    for (size_t i = 0; i < n; i++) {
        if (pfds[i].revents & POLLNVAL)
            return mp__error(MP_EINVAL, "wait: item %zu: fd %d is not open", i, pfds[i].fd);
        if (pfds[i].revents)
            items[i].ready = true;
        ready += items[i].ready;
    }
    return ready;
}

int mp_wait(mp_waitable *items, size_t n, double timeout)
{
    if (n > 0 && !items)
        return mp__error(MP_EINVAL, "wait: NULL item list");
    struct pollfd stack[16];
    struct pollfd *pfds = n <= 16 ? stack : malloc(n * sizeof *pfds);
    if (!pfds)
        return mp__error(-ENOMEM, "wait on %zu items", n);
    int ready = prepare(items, n, pfds);
    double deadline = mp__deadline(ready > 0 ? 0 : timeout);
    if (ready >= 0) {
        int r = mp__iwait_poll(pfds, n, deadline);
        if (r > 0)
            ready = collect(items, n, pfds);
        else if (r == MP_EINTERRUPTED)
            ready = mp__error(r, "wait interrupted by a signal");
        else if (r < 0)
            ready = mp__error(r, "wait: poll");
    }
    if (pfds != stack)
        free(pfds);
    return ready;
}
