/* Large message blocks (MP__HAND_BYTES+) kept for the next ones: a map's ranges and
 * results on a backend (MPI) are megabytes each, allocated per call, and glibc gives such
 * memory back to the kernel between calls (munmap, or a trimmed heap), so every call paid
 * page faults and zeroing for all of it: half the master's CPU time of a map_array of 1M
 * int64 on MPI ranks (12 ms against 6 ms per call with the blocks kept).
 *
 * DESIGN: one process-wide list of malloc'd blocks (any malloc'd block may join it, and
 * one taken from it is freed with free() or given back with mp__big_free), at most
 * BIG_KEEP blocks and BIG_KEEP_BYTES; a block's size is its malloc_usable_size. Taken by
 * whichever thread builds a message (a caller's range, the MPI relay's receive), given
 * back by whichever lets go of it last (the result thread, the relay); the list under
 * one mutex (a few operations per megabyte). mp__big_trim frees the list (a pool's
 * end). fork: the mutex is taken around it (pthread_atfork), so a child (a local pool's
 * replacement worker, forked while the result thread gives a block back) never starts
 * with it held by a thread it does not have; the child keeps the parent's list. */
#define _GNU_SOURCE
#include "pool/pool.h"

#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>

#define BIG_KEEP 32                    /* blocks kept, at most */
#define BIG_KEEP_BYTES ((size_t)64 << 20) /* and bytes */

static struct {
    pthread_mutex_t mu;
    char *b[BIG_KEEP];
    size_t size[BIG_KEEP];
    size_t n, bytes;
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void fork_prepare(void) { pthread_mutex_lock(&g.mu); }
static void fork_after(void) { pthread_mutex_unlock(&g.mu); }

__attribute__((constructor)) static void big_atfork(void)
{
    pthread_atfork(fork_prepare, fork_after, fork_after);
}

char *mp__big_alloc(size_t n)
{
    if (n < MP__HAND_BYTES)
        return malloc(n);
    char *b = NULL;
    pthread_mutex_lock(&g.mu);
    size_t best = BIG_KEEP;
    for (size_t i = 0; i < g.n; i++) /* the smallest that fits, not one 4x too large */
        if (g.size[i] >= n && g.size[i] / 4 <= n && (best == BIG_KEEP || g.size[i] < g.size[best]))
            best = i;
    if (best < BIG_KEEP) {
        b = g.b[best];
        g.bytes -= g.size[best];
        g.n--;
        g.b[best] = g.b[g.n];
        g.size[best] = g.size[g.n];
    }
    pthread_mutex_unlock(&g.mu);
    return b ? b : malloc(n);
}

void mp__big_free(char *b)
{
    if (!b)
        return;
    size_t size = malloc_usable_size(b);
    if (size >= MP__HAND_BYTES) {
        pthread_mutex_lock(&g.mu);
        bool keep = g.n < BIG_KEEP && g.bytes + size <= BIG_KEEP_BYTES;
        if (keep) {
            g.b[g.n] = b;
            g.size[g.n++] = size;
            g.bytes += size;
        }
        pthread_mutex_unlock(&g.mu);
        if (keep)
            return;
    }
    free(b);
}

void mp__big_trim(void)
{
    pthread_mutex_lock(&g.mu);
    size_t n = g.n;
    char *b[BIG_KEEP];
    for (size_t i = 0; i < n; i++)
        b[i] = g.b[i];
    g.n = 0;
    g.bytes = 0;
    pthread_mutex_unlock(&g.mu);
    for (size_t i = 0; i < n; i++)
        free(b[i]);
}
