/* The pool's own fds in the parent, which a forked worker must not keep.
 *
 * DESIGN: a worker learns that its pool is gone by end of file on its socket. Under
 * fork a worker starts with a copy of every fd of the parent: the parent's end of its
 * own socket and of every other worker's (of every pool), the eventfds, the slots and
 * arena memfds. While any worker holds a parent's end, the worker on the other side
 * never sees EOF, so a parent that dies without close/join left its workers running as
 * orphans. Every such fd is marked here while it is open (mp__pool_fd_track, and
 * mp__pool_fd_close instead of close); a forked worker closes every marked fd but its
 * own (mp__pool_fd_close_inherited). The marks are a two-level bitmap of atomics
 * indexed by fd number: no lock, so a worker forked while another thread marks or
 * unmarks reads a consistent picture (at worst it misses an fd marked in the same
 * instant; PR_SET_PDEATHSIG in the worker is the backstop). fds past the bitmap
 * (1M) are not marked. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "pool/pool.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#define PAGE_FDS 4096
#define PAGES 256
#define WORDS (PAGE_FDS / 64)

static _Atomic(_Atomic uint64_t *) pages[PAGES];

static _Atomic uint64_t *page_of(int fd, bool create)
{
    size_t pg = (size_t)fd / PAGE_FDS;
    if (fd < 0 || pg >= PAGES)
        return NULL;
    _Atomic uint64_t *p = atomic_load(&pages[pg]);
    if (p || !create)
        return p;
    _Atomic uint64_t *fresh = calloc(WORDS, sizeof *fresh);
    if (!fresh)
        return NULL;
    _Atomic uint64_t *expected = NULL;
    if (!atomic_compare_exchange_strong(&pages[pg], &expected, fresh)) {
        free(fresh);
        return expected;
    }
    return fresh;
}

int mp__pool_fd_track(int fd)
{
    _Atomic uint64_t *p = page_of(fd, true);
    if (p)
        atomic_fetch_or(&p[(fd % PAGE_FDS) / 64], (uint64_t)1 << (fd % 64));
    return fd;
}

static void untrack(int fd)
{
    _Atomic uint64_t *p = page_of(fd, false);
    if (p)
        atomic_fetch_and(&p[(fd % PAGE_FDS) / 64], ~((uint64_t)1 << (fd % 64)));
}

void mp__pool_fd_close(int fd)
{
    if (fd < 0)
        return;
    untrack(fd);
    mp__close(fd);
}

void mp__pool_fd_close_inherited(int keep1, int keep2)
{
    for (size_t pg = 0; pg < PAGES; pg++) {
        _Atomic uint64_t *p = atomic_load(&pages[pg]);
        for (size_t w = 0; p && w < WORDS; w++) {
            uint64_t bits = atomic_exchange(&p[w], 0);
            while (bits) {
                int b = __builtin_ctzll(bits);
                bits &= bits - 1;
                int fd = (int)(pg * PAGE_FDS + w * 64 + (size_t)b);
                if (fd != keep1 && fd != keep2)
                    mp__close(fd);
            }
        }
    }
}
