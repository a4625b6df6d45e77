/* Shared by the fault-injection tests (tests/test_fault_*.c): kill storms, bounded in
 * time for CI. Two knobs for longer runs (`make soak` sets them):
 *   MP_SOAK=N           N times the rounds (mpt_rounds);
 *   MP_SOAK_SECONDS=S   storms keep starting rounds until S seconds have passed
 *                       (mpt_more_rounds), after their usual number of rounds. */
#ifndef MP_TEST_FAULT_H
#define MP_TEST_FAULT_H

#include "test_util.h"

#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/syscall.h>

/* `base` rounds, times $MP_SOAK (default 1). */
static inline int mpt_rounds(int base)
{
    const char *s = getenv("MP_SOAK");
    int k = s ? atoi(s) : 1;
    return base * (k > 0 ? k : 1);
}

/* $MP_SOAK_SECONDS, or 0 (not soaking). */
static inline double mpt_soak_seconds(void)
{
    const char *s = getenv("MP_SOAK_SECONDS");
    double v = s ? atof(s) : 0;
    return v > 0 ? v : 0;
}

/* Whether to run round `done` (0-based): the first mpt_rounds(base) always, then more while
 * $MP_SOAK_SECONDS have not passed since t0. */
static inline bool mpt_more_rounds(int done, int base, double t0)
{
    return done < mpt_rounds(base) || mpt_now() - t0 < mpt_soak_seconds();
}

/* A small deterministic PRNG (xorshift), so a failing round can be replayed from its seed. */
static inline unsigned mpt_rand(unsigned *state)
{
    unsigned x = *state ? *state : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* ---- a storm of worker processes killed at random -----------------------------------
 * The parent forks workers (each gets a slot, fixed for the round, and a fresh id), waits
 * for a random amount of their progress (the kill point: counted operations, not time),
 * SIGKILLs one at random, starts a replacement in its slot, and so on; then it tells the
 * survivors to stop and reaps them. The control block is shared memory. */
#define MPT_MAX_IDS 256
#define MPT_MAX_SLOTS 16

typedef struct mpt_ctl {
    _Atomic uint64_t progress; /* workers count their operations here */
    _Atomic int stop;          /* set by the parent: workers finish and _exit(0) */
    int next_id;
    int nslots;
    pid_t pid[MPT_MAX_SLOTS];
    int id[MPT_MAX_SLOTS];
    uint8_t killed[MPT_MAX_IDS]; /* by id: SIGKILLed by the storm */
    int kills;
} mpt_ctl;

/* The body of a worker: runs in the child until ctl->stop says so; returns its exit code. */
typedef int (*mpt_worker_fn)(mpt_ctl *ctl, int slot, int id, void *arg);

static inline mpt_ctl *mpt_ctl_new(void)
{
    mpt_ctl *c = mmap(NULL, sizeof(mpt_ctl), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                      -1, 0);
    return c == MAP_FAILED ? NULL : c;
}

static inline void mpt_ctl_free(mpt_ctl *c) { munmap(c, sizeof *c); }

/* Start the worker of `slot` with a new id. */
static inline void mpt_storm_spawn(mpt_ctl *c, int slot, mpt_worker_fn fn, void *arg)
{
    int id = c->next_id++ % MPT_MAX_IDS;
    c->id[slot] = id;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        _exit(fn(c, slot, id, arg));
    c->pid[slot] = pid;
}

/* A new round: `n` slots, ids from 0, nothing killed or stopped. */
static inline void mpt_storm_begin(mpt_ctl *c, int n, mpt_worker_fn fn, void *arg)
{
    memset(c, 0, sizeof *c);
    c->nslots = n;
    for (int s = 0; s < n; s++)
        mpt_storm_spawn(c, s, fn, arg);
}

/* What a worker is doing, for a hang report: its state, wchan and kernel stack. */
static inline void mpt_describe(pid_t pid, const char *why)
{
    char path[64], wchan[128], st = mpt_task_state(pid, pid, wchan, sizeof wchan);
    fprintf(stderr, "  pid %d %s: state %c, wchan %s\n", (int)pid, why, st ? st : '?', wchan);
    snprintf(path, sizeof path, "/proc/%d/stack", (int)pid);
    FILE *f = fopen(path, "r");
    char line[256];
    for (int i = 0; f && i < 6 && fgets(line, sizeof line, f); i++)
        fprintf(stderr, "    %s", line);
    if (f)
        fclose(f);
}

/* The exit status of pid within `secs` seconds (a pidfd poll), or -1 (then it is killed,
 * reaped, and counts as hung). */
static inline int mpt_reap_within(pid_t pid, double secs)
{
    int fd = (int)syscall(SYS_pidfd_open, pid, 0), st = 0;
    int ready = 1;
    if (fd >= 0) {
        double end = mpt_now() + secs;
        struct pollfd p = {.fd = fd, .events = POLLIN};
        do /* a signal (SIGCHLD when a handler is set) is not the end of the wait */
            ready = poll(&p, 1, (int)((end - mpt_now()) * 1000) + 1);
        while (ready < 0 && errno == EINTR && mpt_now() < end);
        close(fd);
    }
    if (ready <= 0) {
        mpt_describe(pid, "did not exit in time");
        kill(pid, SIGKILL);
    }
    if (waitpid(pid, &st, 0) != pid)
        return -1;
    return ready <= 0 ? -1 : st;
}

/* Wait until the workers counted `ops` more operations (at most 20 s): false if they stalled. */
static inline bool mpt_storm_progress(mpt_ctl *c, uint64_t ops)
{
    uint64_t target = atomic_load(&c->progress) + ops;
    double end = mpt_now() + 20;
    while (atomic_load(&c->progress) < target) {
        if (mpt_now() > end) {
            fprintf(stderr, "  no progress for 20 s (%llu of %llu operations)\n",
                    (unsigned long long)atomic_load(&c->progress), (unsigned long long)target);
            for (int s = 0; s < c->nslots; s++)
                mpt_describe(c->pid[s], "stalled");
            return false;
        }
        sched_yield(); /* watching the workers' progress: the kill point */
    }
    return true;
}

/* `kills` times: let the workers make 1..spread operations, SIGKILL the worker of a random
 * slot among [from, to), reap it, start a replacement. Returns the stalls seen (a stall is
 * a hang: the storm stopped making progress). */
static inline int mpt_storm_kill(mpt_ctl *c, int kills, int from, int to, unsigned spread,
                                 unsigned *seed, mpt_worker_fn fn, void *arg)
{
    int stalls = 0;
    for (int k = 0; k < kills; k++) {
        stalls += !mpt_storm_progress(c, 1 + mpt_rand(seed) % spread);
        int slot = from + (int)(mpt_rand(seed) % (unsigned)(to - from));
        kill(c->pid[slot], SIGKILL);
        int st;
        waitpid(c->pid[slot], &st, 0);
        if (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL) {
            c->killed[c->id[slot]] = 1;
            c->kills++;
        } else { /* it had exited on its own: a failure, reported like a stall */
            fprintf(stderr, "  worker slot %d id %d ended before its kill (status 0x%x)\n", slot,
                    c->id[slot], st);
            stalls++;
        }
        mpt_storm_spawn(c, slot, fn, arg);
    }
    return stalls;
}

/* Set ctl->stop to `value` and reap the workers of slots [from, to): each must exit 0
 * within 10 s. Returns how many did not (hung or failed). */
static inline int mpt_storm_stop(mpt_ctl *c, int value, int from, int to)
{
    atomic_store(&c->stop, value);
    int bad = 0;
    for (int s = from; s < to; s++) {
        int st = mpt_reap_within(c->pid[s], 10);
        if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
            fprintf(stderr, "  worker slot %d id %d: %s %d\n", s, c->id[s],
                    st < 0 ? "hung" : WIFEXITED(st) ? "exit" : "signal",
                    st < 0 ? 0 : WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
            bad++;
        }
    }
    return bad;
}

#endif
