/* subprocess benchmarks: the same work through multiproc and through the raw-syscall
 * floor (posix_spawn, which glibc implements with clone(CLONE_VM|CLONE_VFORK), plus
 * pipes, poll and read/write), measured in the same run, rounds interleaved, best
 * round kept for each side. Prints: case<TAB>unit<TAB>multiproc<TAB>floor.
 *
 * Honesty notes: the floor uses the same tricks multiproc uses that are plain
 * syscalls (1 MiB pipes via F_SETPIPE_SZ, large reads, a buffer grown by doubling);
 * it does not restore signal dispositions or close fds, which multiproc does by
 * default, and it skips error reporting through a pipe.
 *
 * capture_64mb is Python's `subprocess.run(cmd, capture_output=True)`: stdout and
 * stderr both captured (Python then reads them through its selector loop in 32 KiB
 * reads; with stdout alone it does one big read and sits at the floor). */
#define _GNU_SOURCE
#include "multiproc/subprocess.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MB (1024.0 * 1024.0)
#define BYTES ((size_t)64 << 20)
#define SIZE_ARG "67108864"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void die(const char *what)
{
    fprintf(stderr, "bench_subprocess: %s failed: %s\n", what, mp_last_error());
    exit(1);
}

/* ---- the floor: raw syscalls ------------------------------------------------------ */

static pid_t floor_spawn3(char *const *argv, int in_fd, int out_fd, int err_fd)
{
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    if (in_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
    if (out_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
    if (err_fd >= 0)
        posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
    pid_t pid;
    if (posix_spawn(&pid, argv[0], &fa, NULL, argv, environ) != 0)
        die("posix_spawn");
    posix_spawn_file_actions_destroy(&fa);
    return pid;
}

static pid_t floor_spawn(char *const *argv, int in_fd, int out_fd)
{
    return floor_spawn3(argv, in_fd, out_fd, -1);
}

static void floor_pipe(int p[2])
{
    if (pipe2(p, O_CLOEXEC) < 0)
        die("pipe2");
    fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
}

typedef struct buf {
    char *data;
    size_t len, cap;
} buf;

/* One read into a doubling buffer; returns read()'s result. */
static ssize_t buf_read(buf *b, int fd)
{
    if (b->cap - b->len < (1 << 20)) {
        b->cap = b->cap ? b->cap * 2 : (1 << 20);
        b->data = realloc(b->data, b->cap);
    }
    ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
    if (n > 0)
        b->len += (size_t)n;
    return n;
}

static void floor_true(void)
{
    char *argv[] = {"/bin/true", NULL};
    pid_t pid = floor_spawn(argv, -1, -1);
    waitpid(pid, NULL, 0);
}

/* Read a child's stdout to EOF, then reap it. Returns the bytes read. */
static size_t floor_capture(char *const *argv, int in_fd)
{
    int p[2];
    floor_pipe(p);
    pid_t pid = floor_spawn(argv, in_fd, p[1]);
    close(p[1]);
    buf b = {0};
    while (buf_read(&b, p[0]) > 0)
        ;
    close(p[0]);
    waitpid(pid, NULL, 0);
    free(b.data);
    return b.len;
}

/* capture_output: stdout and stderr both piped, read with poll until both reach EOF. */
static size_t floor_capture_both(char *const *argv)
{
    int o[2], e[2];
    floor_pipe(o);
    floor_pipe(e);
    pid_t pid = floor_spawn3(argv, -1, o[1], e[1]);
    close(o[1]);
    close(e[1]);
    buf b[2] = {{0}, {0}};
    int fds[2] = {o[0], e[0]};
    while (fds[0] >= 0 || fds[1] >= 0) {
        struct pollfd pf[2] = {{fds[0], POLLIN, 0}, {fds[1], POLLIN, 0}};
        poll(pf, 2, -1); /* negative fds are ignored by poll */
        for (int i = 0; i < 2; i++)
            if (fds[i] >= 0 && pf[i].revents && buf_read(&b[i], fds[i]) <= 0) {
                close(fds[i]);
                fds[i] = -1;
            }
    }
    waitpid(pid, NULL, 0);
    free(b[0].data);
    free(b[1].data);
    return b[0].len;
}

static size_t floor_communicate(const char *in, size_t n)
{
    char *argv[] = {"/bin/cat", NULL};
    int i[2], o[2];
    floor_pipe(i);
    floor_pipe(o);
    pid_t pid = floor_spawn(argv, i[0], o[1]);
    close(i[0]);
    close(o[1]);
    fcntl(i[1], F_SETFL, O_NONBLOCK);
    buf b = {0};
    size_t off = 0;
    int wfd = i[1], rfd = o[0];
    while (rfd >= 0) {
        struct pollfd pf[2] = {{rfd, POLLIN, 0}, {wfd, POLLOUT, 0}};
        poll(pf, wfd >= 0 ? 2 : 1, -1);
        if (wfd >= 0 && pf[1].revents) {
            size_t left = n - off;
            ssize_t w = write(wfd, in + off, left < (1 << 20) ? left : (1 << 20));
            if (w > 0)
                off += (size_t)w;
            if (off == n || (w < 0 && errno != EAGAIN)) {
                close(wfd);
                wfd = -1;
            }
        }
        if (pf[0].revents && buf_read(&b, rfd) <= 0) {
            close(rfd);
            rfd = -1;
        }
    }
    waitpid(pid, NULL, 0);
    free(b.data);
    return b.len;
}

static size_t floor_pipeline3(void)
{
    char *head[] = {"/usr/bin/head", "-c", SIZE_ARG, "/dev/zero", NULL};
    char *cat[] = {"/bin/cat", NULL};
    int a[2], b[2];
    floor_pipe(a);
    floor_pipe(b);
    pid_t p1 = floor_spawn(head, -1, a[1]);
    close(a[1]);
    pid_t p2 = floor_spawn(cat, a[0], b[1]);
    close(a[0]);
    close(b[1]);
    size_t got = floor_capture(cat, b[0]);
    close(b[0]);
    waitpid(p1, NULL, 0);
    waitpid(p2, NULL, 0);
    return got;
}

/* ---- multiproc ------------------------------------------------------------------- */

static void mp_true(void)
{
    const char *argv[] = {"/bin/true", NULL};
    if (mp_run(argv, NULL, NULL) != 0)
        die("mp_run /bin/true");
}

static size_t mp_capture(void)
{
    const char *argv[] = {"/usr/bin/head", "-c", SIZE_ARG, "/dev/zero", NULL};
    mp_subprocess_opts o = {.capture_output = true};
    mp_run_result r;
    if (mp_run(argv, &o, &r) != 0)
        die("mp_run head");
    size_t n = r.out_len;
    mp_run_result_free(&r);
    return n;
}

static size_t mp_communicate(const char *in, size_t n)
{
    const char *argv[] = {"/bin/cat", NULL};
    mp_subprocess_opts o = {.in = MP_STDIO_PIPE, .out = MP_STDIO_PIPE};
    mp_popen *p = mp_popen_start(argv, &o);
    if (!p)
        die("mp_popen_start cat");
    mp_run_result r;
    if (mp_popen_communicate(p, in, n, -1, &r) != 0)
        die("communicate");
    size_t got = r.out_len;
    mp_run_result_free(&r);
    mp_popen_free(p);
    return got;
}

static size_t mp_pipeline3(void)
{
    const char *head[] = {"/usr/bin/head", "-c", SIZE_ARG, "/dev/zero", NULL};
    const char *cat[] = {"/bin/cat", NULL};
    const char *const *cmds[] = {head, cat, cat};
    mp_subprocess_opts o = {.out = MP_STDIO_PIPE};
    mp_run_result r;
    if (mp_pipeline(cmds, 3, &o, &r, NULL) != 0)
        die("mp_pipeline");
    size_t n = r.out_len;
    mp_run_result_free(&r);
    return n;
}

/* ---- driver ---------------------------------------------------------------------- */

static const char *g_input;

static void run_true(int which) { which ? floor_true() : mp_true(); }

static size_t run_bytes(int which, int kase)
{
    char *head[] = {"/usr/bin/head", "-c", SIZE_ARG, "/dev/zero", NULL};
    switch (kase) {
    case 0:
        return which ? floor_capture_both(head) : mp_capture();
    case 1:
        return which ? floor_communicate(g_input, BYTES) : mp_communicate(g_input, BYTES);
    default:
        return which ? floor_pipeline3() : mp_pipeline3();
    }
}

/* Rounds alternate multiproc and floor so both see the same machine load. */
static void bench_spawn(void)
{
    double best[2] = {0, 0};
    for (int round = 0; round < 5; round++)
        for (int which = 0; which < 2; which++) {
            int n = 200;
            double t0 = now();
            for (int i = 0; i < n; i++)
                run_true(which);
            double rate = n / (now() - t0);
            if (rate > best[which])
                best[which] = rate;
        }
    printf("spawn_true\tops/s\t%.1f\t%.1f\n", best[0], best[1]);
}

static void bench_bytes(const char *name, int kase)
{
    double best[2] = {0, 0};
    for (int round = 0; round < 5; round++)
        for (int which = 0; which < 2; which++) {
            double t0 = now();
            size_t got = run_bytes(which, kase);
            double dt = now() - t0;
            if (got != BYTES) {
                fprintf(stderr, "%s: got %zu bytes\n", name, got);
                exit(1);
            }
            double rate = (double)got / MB / dt;
            if (rate > best[which])
                best[which] = rate;
        }
    printf("%s\tMB/s\t%.1f\t%.1f\n", name, best[0], best[1]);
}

int main(void)
{
    char *in = malloc(BYTES);
    if (!in)
        return 1;
    memset(in, 'x', BYTES);
    g_input = in;
    bench_spawn();
    fflush(stdout);
    bench_bytes("capture_64mb", 0);
    fflush(stdout);
    bench_bytes("communicate_64mb", 1);
    fflush(stdout);
    bench_bytes("pipeline_3", 2);
    free(in);
    return 0;
}
