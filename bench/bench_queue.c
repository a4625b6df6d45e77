/* Connections and queues against the raw-syscall floor, one line per case:
 *   case<TAB>unit<TAB>multiproc_rate<TAB>floor_rate
 *
 * Floors (the same work with no library, measured in the same run):
 *   pipe_pingpong_8b  write()/read() of 8 bytes on a raw socketpair between two processes.
 *   queue_1p1c_int    a single-producer single-consumer lock-free ring of 8-byte ints in
 *                     shared memory, spinning: the best any shared-memory queue can do; ours
 *                     is multi-producer/multi-consumer, robust, and carries MessagePack values.
 *   queue_1p1c_batch64 the same spinning ring: batches of 64 ints (mp_queue_put_many /
 *                     mp_queue_get_many) against a ring that moves them one slot at a time.
 *   queue_4p4c_int    4 writers and 4 readers of 8-byte records on one pipe (atomic writes up
 *                     to PIPE_BUF make a pipe the raw MPMC queue of the kernel).
 *   queue_1mib_items  1 MiB writes/reads through a pipe (the kernel's copy path).
 *   queue_pingpong_int one int there and back over two queues (round trips/s): the
 *                     latency a request/response pays. Floor: one cache line bounced
 *                     between two processes by spinning on it (yielding now and then, in
 *                     case both share a core): the hardware's round trip.
 * Our queue cases put and get mp_value ints (what Python's Queue.put(int) does; one value
 * reused on each side, see put_ints) and 1 MiB bytes items. Processes are plain fork()
 * children, not pinned to CPUs (as in the peer).
 * Every column of every row is the median of RUNS short runs, ours and the floor's
 * interleaved, because on a shared machine a single run of a cross-process queue moves by
 * a factor of several (two processes may share a core or not). */
#define _GNU_SOURCE
#include "multiproc/connection.h"
#include "multiproc/queue.h"
#include "multiproc/error.h"

#include <fcntl.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void reap(pid_t pid)
{
    int st;
    waitpid(pid, &st, 0);
}

static int read_full(int fd, void *buf, size_t n)
{
    char *p = buf;
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static int write_full(int fd, const void *buf, size_t n)
{
    const char *p = buf;
    while (n) {
        ssize_t r = write(fd, p, n);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

/* ---- pipe_pingpong_8b ------------------------------------------------------------------ */

static double pingpong_mp(int n)
{
    mp_connection *a, *b;
    mp_pipe(true, &a, &b);
    pid_t pid = fork();
    if (pid == 0) {
        mp_connection_close(a);
        char buf[8];
        size_t len;
        while (mp_connection_recv_bytes_into(b, buf, 8, 0, &len) == 0)
            mp_connection_send_bytes(b, buf, 0, len);
        _exit(0);
    }
    mp_connection_free(b);
    char buf[8] = "pingpong";
    size_t len;
    double t0 = now();
    for (int i = 0; i < n; i++) {
        mp_connection_send_bytes(a, buf, 0, 8);
        mp_connection_recv_bytes_into(a, buf, 8, 0, &len);
    }
    double dt = now() - t0;
    mp_connection_free(a);
    reap(pid);
    return n / dt;
}

static double pingpong_raw(int n)
{
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        char buf[8];
        while (read_full(sv[1], buf, 8) == 0)
            write_full(sv[1], buf, 8);
        _exit(0);
    }
    close(sv[1]);
    char buf[8] = "pingpong";
    double t0 = now();
    for (int i = 0; i < n; i++) {
        write_full(sv[0], buf, 8);
        read_full(sv[0], buf, 8);
    }
    double dt = now() - t0;
    close(sv[0]);
    reap(pid);
    return n / dt;
}

/* ---- queue ints ----------------------------------------------------------------------------- */

/* The int rows move one item per call, as fast as the API allows: the producer sets one
 * value anew for each put (mp_value_set_int) and the consumer decodes each item into the
 * value it got last (mp_queue_get_into), so no value is made or freed per item. Boost's
 * side (peer_queue.cpp) likewise sends from and receives into a caller's buffer. */
static void put_ints(mp_queue *q, long from, long n)
{
    mp_value *v = mp_value_int(0);
    for (long i = from; i < from + n; i++) {
        mp_value_set_int(v, i);
        mp_queue_put(q, v, -1);
    }
    mp_value_free(v);
}

static long get_ints(mp_queue *q, long n)
{
    long sum = 0;
    mp_value *v = NULL;
    for (long i = 0; i < n; i++) {
        if (mp_queue_get_into(q, &v, -1) != 0)
            break;
        sum += (long)mp_value_get_int(v);
    }
    mp_value_free(v);
    return sum;
}

/* A producer putting ints in batches of `batch` and a consumer getting up to `batch` at a
 * time (mp_queue_put_many / mp_queue_get_many_into), each reusing its values as a program
 * moving many items would (mp_value_set_int; get_many_into decodes into the values it
 * returned last time). */
static double queue_batch_mp(long n, size_t batch)
{
    mp_queue *q = mp_queue_new(NULL);
    double t0 = now();
    pid_t p = fork();
    if (p == 0) { /* the producer sets its batch's values anew for each put_many */
        mp_value *v[256];
        for (size_t k = 0; k < batch; k++)
            v[k] = mp_value_int(0);
        for (long i = 0; i < n; i += (long)batch) {
            for (size_t k = 0; k < batch; k++)
                mp_value_set_int(v[k], i + (long)k);
            mp_queue_put_many(q, (const mp_value *const *)v, batch, -1);
        }
        _exit(0);
    }
    long sum = 0;
    mp_value *out[256] = {0}; /* the consumer's values, decoded into by each get_many_into */
    for (long got_all = 0; got_all < n;) {
        size_t got;
        if (mp_queue_get_many_into(q, out, batch, &got, -1) != 0)
            break;
        for (size_t k = 0; k < got; k++)
            sum += (long)mp_value_get_int(out[k]);
        got_all += (long)got;
    }
    for (size_t k = 0; k < batch; k++)
        mp_value_free(out[k]);
    double dt = now() - t0;
    reap(p);
    mp_queue_free(q);
    return sum == 1 ? 0 : (double)n / dt; /* (uses the sum) */
}

/* np producers and nc consumers (processes); returns items/s from first start to last end. */
static double queue_ints_mp(int np, int nc, long n)
{
    mp_queue *q = mp_queue_new(NULL);
    pid_t pids[16];
    double t0 = now();
    for (int i = 0; i < nc; i++)
        if ((pids[i] = fork()) == 0) {
            get_ints(q, n / nc);
            _exit(0);
        }
    for (int i = 0; i < np; i++)
        if ((pids[nc + i] = fork()) == 0) {
            put_ints(q, i * (n / np), n / np);
            _exit(0);
        }
    for (int i = 0; i < np + nc; i++)
        reap(pids[i]);
    double dt = now() - t0;
    mp_queue_free(q);
    return (double)n / dt;
}

/* The SPSC floor: a lock-free ring of 8-byte slots, head/tail on their own cache lines. */
struct spsc {
    _Alignas(64) _Atomic uint64_t head;
    _Alignas(64) _Atomic uint64_t tail;
    _Alignas(64) uint64_t slot[1 << 16];
};

static double spsc_floor(long n)
{
    struct spsc *r = mmap(NULL, sizeof *r, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    const uint64_t mask = (1 << 16) - 1;
    double t0 = now();
    pid_t c = fork();
    if (c == 0) {
        uint64_t h = 0, sum = 0;
        while (h < (uint64_t)n) {
            uint64_t t = atomic_load_explicit(&r->tail, memory_order_acquire);
            for (; h < t; h++)
                sum += r->slot[h & mask];
            atomic_store_explicit(&r->head, h, memory_order_release);
        }
        _exit(sum == 0);
    }
    pid_t p = fork();
    if (p == 0) {
        uint64_t t = 0, h = 0;
        while (t < (uint64_t)n) {
            while (t - h >= mask)
                h = atomic_load_explicit(&r->head, memory_order_acquire);
            r->slot[t & mask] = t;
            atomic_store_explicit(&r->tail, ++t, memory_order_release);
        }
        _exit(0);
    }
    reap(c);
    reap(p);
    double dt = now() - t0;
    munmap(r, sizeof *r);
    return (double)n / dt;
}

/* The MPMC floor: 8-byte records through one pipe. */
static double pipe_mpmc_floor(int np, int nc, long n)
{
    int fds[2];
    pipe2(fds, O_CLOEXEC);
    pid_t pids[16];
    double t0 = now();
    for (int i = 0; i < nc; i++)
        if ((pids[i] = fork()) == 0) {
            close(fds[1]);
            uint64_t v;
            for (long k = 0; k < n / nc; k++)
                if (read_full(fds[0], &v, 8) < 0)
                    break;
            _exit(0);
        }
    for (int i = 0; i < np; i++)
        if ((pids[nc + i] = fork()) == 0) {
            close(fds[0]);
            for (uint64_t k = 0; k < (uint64_t)(n / np); k++)
                write_full(fds[1], &k, 8);
            _exit(0);
        }
    close(fds[0]);
    close(fds[1]);
    for (int i = 0; i < np + nc; i++)
        reap(pids[i]);
    return (double)n / (now() - t0);
}

/* ---- 1 MiB items ---------------------------------------------------------------------------- */

static double mib_items_mp(int n)
{
    const size_t sz = 1 << 20;
    mp_queue *q = mp_queue_new(NULL);
    double t0 = now();
    pid_t p = fork();
    if (p == 0) {
        char *buf = malloc(sz);
        memset(buf, 'x', sz);
        for (int i = 0; i < n; i++)
            mp_queue_put_bytes(q, buf, sz, -1);
        _exit(0);
    }
    for (int i = 0; i < n; i++) {
        void *b;
        size_t len;
        if (mp_queue_get_bytes(q, &b, &len, -1) != 0)
            break;
        mp_free(b);
    }
    double dt = now() - t0;
    reap(p);
    mp_queue_free(q);
    return (double)n * (double)sz / 1e6 / dt;
}

static double mib_items_floor(int n)
{
    const size_t sz = 1 << 20;
    int fds[2];
    pipe2(fds, O_CLOEXEC);
    fcntl(fds[1], F_SETPIPE_SZ, 1 << 20);
    double t0 = now();
    pid_t p = fork();
    if (p == 0) {
        close(fds[0]);
        char *buf = malloc(sz);
        memset(buf, 'x', sz);
        for (int i = 0; i < n; i++)
            write_full(fds[1], buf, sz);
        _exit(0);
    }
    close(fds[1]);
    for (int i = 0; i < n; i++) {
        char *b = malloc(sz); /* the receiver gets a buffer of its own, as with a queue */
        read_full(fds[0], b, sz);
        free(b);
    }
    double dt = now() - t0;
    close(fds[0]);
    reap(p);
    return (double)n * (double)sz / 1e6 / dt;
}

/* ---- ping-pong of one int over two queues ------------------------------------------------ */

static double queue_pingpong_mp(int n)
{
    mp_queue *a = mp_queue_new(NULL), *b = mp_queue_new(NULL);
    pid_t pid = fork();
    if (pid == 0) { /* echoes each int back */
        mp_value *v = NULL;
        for (int i = 0; i < n; i++)
            if (mp_queue_get_into(a, &v, -1) != 0 || mp_queue_put(b, v, -1) != 0)
                _exit(1);
        _exit(0);
    }
    mp_value *v = mp_value_int(0), *r = NULL;
    long sum = 0;
    double t0 = now();
    for (int i = 0; i < n; i++) {
        mp_value_set_int(v, i);
        if (mp_queue_put(a, v, -1) != 0 || mp_queue_get_into(b, &r, -1) != 0)
            break;
        sum += (long)mp_value_get_int(r);
    }
    double dt = now() - t0;
    reap(pid);
    mp_value_free(v);
    mp_value_free(r);
    mp_queue_free(a);
    mp_queue_free(b);
    return sum == 1 ? 0 : n / dt;
}

static void wait_for(_Atomic long *w, long want)
{
    for (unsigned k = 1; atomic_load_explicit(w, memory_order_acquire) != want; k++)
        if (k % 256 == 0)
            sched_yield(); /* the other process may be waiting for our core */
        else
            __builtin_ia32_pause();
}

static double spin_pingpong_floor(int n)
{
    _Atomic long *w = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    atomic_store(w, 0);
    pid_t pid = fork();
    if (pid == 0) {
        for (long i = 0; i < n; i++) {
            wait_for(w, 2 * i + 1);
            atomic_store_explicit(w, 2 * i + 2, memory_order_release);
        }
        _exit(0);
    }
    double t0 = now();
    for (long i = 0; i < n; i++) {
        atomic_store_explicit(w, 2 * i + 1, memory_order_release);
        wait_for(w, 2 * i + 2);
    }
    double dt = now() - t0;
    reap(pid);
    munmap((void *)w, 4096);
    return n / dt;
}

#define RUNS 5

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v)
{
    qsort(v, RUNS, sizeof *v, cmp_double);
    return v[RUNS / 2];
}

enum { PINGPONG, Q1P1C, Q4P4C, QBATCH64, MIB, QPINGPONG, NCASES };

/* One run of a case: ours (floor false) or the floor's. */
static double run_case(int c, bool floor)
{
    switch (c) {
    case PINGPONG:
        return floor ? pingpong_raw(5000) : pingpong_mp(5000);
    case Q1P1C:
        return floor ? spsc_floor(10000000) : queue_ints_mp(1, 1, 1000000);
    case Q4P4C:
        return floor ? pipe_mpmc_floor(4, 4, 200000) : queue_ints_mp(4, 4, 1000000);
    case QBATCH64:
        return floor ? spsc_floor(10000000) : queue_batch_mp(2000000, 64);
    case QPINGPONG:
        return floor ? spin_pingpong_floor(20000) : queue_pingpong_mp(20000);
    default:
        return floor ? mib_items_floor(500) : mib_items_mp(500);
    }
}

/* With arguments, only the cases named (e.g. `bench_queue queue_1p1c_batch64`). */
static bool wanted(int argc, char **argv, const char *name)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0)
            return true;
    return argc < 2;
}

int main(int argc, char **argv)
{
    static const char *const names[NCASES][2] = {
        {"pipe_pingpong_8b", "ops/s"}, {"queue_1p1c_int", "items/s"},
        {"queue_4p4c_int", "items/s"}, {"queue_1p1c_batch64", "items/s"},
        {"queue_1mib_items", "MB/s"}, {"queue_pingpong_int", "round trips/s"}};
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int c = 0; c < NCASES; c++) {
        if (!wanted(argc, argv, names[c][0]))
            continue;
        double mp[RUNS], fl[RUNS];
        for (int r = 0; r < RUNS; r++) {
            mp[r] = run_case(c, false);
            fl[r] = run_case(c, true);
            if (getenv("MP_BENCH_EACH")) /* every run, to stderr: ours, floor, ratio */
                fprintf(stderr, "%s run %d\t%.1f\t%.1f\t%.3f\n", names[c][0], r, mp[r],
                        fl[r], mp[r] / fl[r]);
        }
        printf("%s\t%s\t%.1f\t%.1f\n", names[c][0], names[c][1], median(mp), median(fl));
    }
    return 0;
}
