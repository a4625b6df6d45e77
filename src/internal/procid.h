/* Naming a process so that a reused pid is not mistaken for it (src/procid.c).
 *
 * A process is its pid and its start time (clock ticks after boot, field 22 of
 * /proc/PID/stat): once a process is dead and reaped, the kernel may give its pid to an
 * unrelated process, but not with the same start tick. Shared-memory tables of who holds
 * what (a JoinableQueue's task holders, a Barrier's parties) store these two numbers,
 * since an fd such as a pidfd cannot be shared through memory. Without /proc the start
 * time is 0 and only the pid is compared. */
#ifndef MP_INTERNAL_PROCID_H
#define MP_INTERNAL_PROCID_H

#include <stdbool.h>
#include <stdint.h>

typedef struct mp__procid {
    int32_t pid;
    uint64_t start;
} mp__procid;

/* The calling process (computed once per process: a fork child has a new pid). */
mp__procid mp__procid_self(void);

/* True when the process is gone: /proc/PID/stat missing, a zombie, or another start time
 * (its pid was reused); without /proc, kill(pid, 0) says ESRCH. False for pid <= 0. */
bool mp__procid_dead(int32_t pid, uint64_t start);

static inline bool mp__procid_same(mp__procid a, mp__procid b)
{
    return a.pid == b.pid && a.start == b.start;
}

#endif
