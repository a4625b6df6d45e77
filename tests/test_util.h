/* A tiny test harness: each test file defines TEST functions and lists them in
 * main with RUN(). Checks print the file:line and the values seen, count failures,
 * and the process exits 1 if any check failed, so ctest reports it.
 *
 * Leak checks: mpt_leak_begin() records the open fds and /dev/shm entries; after the
 * test, mpt_leak_end() fails the test if a new fd, a zombie child or a new /dev/shm
 * entry is left behind. Only this test run's /dev/shm entries count: before main, each
 * test process sets MULTIPROC_SHM_PREFIX=mpt<pid> (unless it inherited one: a helper
 * program or child belongs to its test's run), so every segment the library names for
 * it or its children starts with "mpt<pid>-", and segments of other programs using the
 * library at the same time (other tests, other builds) are not counted. Tests that
 * choose names use mpt_shm_prefix() too.
 *
 * CHECK_OK also holds the call to "only failures set the last error" (error.h): it
 * clears the error first and fails a call that succeeds but leaves one behind. */
#ifndef MP_TEST_UTIL_H
#define MP_TEST_UTIL_H

#define _GNU_SOURCE
#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "multiproc.h"

static int mpt_failures;
static int mpt_checks;
static const char *mpt_current = "";

#define CHECK(cond)                                                                      \
    do {                                                                                 \
        mpt_checks++;                                                                    \
        if (!(cond)) {                                                                   \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] CHECK failed: %s\n", __FILE__, __LINE__,          \
                    mpt_current, #cond);                                                 \
        }                                                                                \
    } while (0)

#define CHECK_INT(a, b)                                                                  \
    do {                                                                                 \
        long long mpt_a = (long long)(a), mpt_b = (long long)(b);                        \
        mpt_checks++;                                                                    \
        if (mpt_a != mpt_b) {                                                            \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] %s == %lld, expected %s == %lld (last error: %s)\n", \
                    __FILE__, __LINE__, mpt_current, #a, mpt_a, #b, mpt_b,               \
                    mp_last_error());                                                    \
        }                                                                                \
    } while (0)

/* An int-returning call that must succeed (return >= 0). */
#define CHECK_OK(expr)                                                                   \
    do {                                                                                 \
        mp_clear_error();                                                                \
        long long mpt_r = (long long)(expr);                                             \
        mpt_checks++;                                                                    \
        if (mpt_r < 0) {                                                                 \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] %s failed: %s (%s)\n", __FILE__, __LINE__,        \
                    mpt_current, #expr, mp_errname((int)mpt_r), mp_last_error());        \
        } else if (mp_last_error_code() != 0) {                                          \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] %s succeeded but set the last error: %s\n",      \
                    __FILE__, __LINE__, mpt_current, #expr, mp_last_error());            \
        }                                                                                \
    } while (0)

/* A call that must fail with a specific code. */
#define CHECK_ERR(expr, code)                                                            \
    do {                                                                                 \
        long long mpt_r = (long long)(expr);                                             \
        mpt_checks++;                                                                    \
        if (mpt_r != (long long)(code)) {                                                \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] %s returned %s (%lld), expected %s\n", __FILE__,  \
                    __LINE__, mpt_current, #expr, mp_errname((int)mpt_r), mpt_r,         \
                    mp_errname((int)(code)));                                            \
        }                                                                                \
    } while (0)

/* A constructor that must succeed: @p var = @p expr is non-NULL and sets no error. */
#define CHECK_NEW(var, expr)                                                             \
    do {                                                                                 \
        mp_clear_error();                                                                \
        var = (expr);                                                                    \
        mpt_checks++;                                                                    \
        if (!(var) || mp_last_error_code() != 0) {                                       \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] %s gave %p: %s (%s)\n", __FILE__, __LINE__,       \
                    mpt_current, #expr, (void *)(var), mp_errname(mp_last_error_code()), \
                    mp_last_error());                                                    \
        }                                                                                \
    } while (0)

/* A constructor that must fail: NULL, with @p code in mp_last_error_code(). */
#define CHECK_NULL_ERR(expr, code)                                                       \
    do {                                                                                 \
        mp_clear_error();                                                                \
        const void *mpt_p = (expr);                                                      \
        int mpt_c = mp_last_error_code();                                                \
        mpt_checks++;                                                                    \
        if (mpt_p || mpt_c != (code)) {                                                  \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] %s gave %p with %s, expected NULL with %s\n",     \
                    __FILE__, __LINE__, mpt_current, #expr, mpt_p, mp_errname(mpt_c),     \
                    mp_errname((int)(code)));                                            \
        }                                                                                \
    } while (0)

#define CHECK_STR(a, b)                                                                  \
    do {                                                                                 \
        const char *mpt_a = (a), *mpt_b = (b);                                           \
        mpt_checks++;                                                                    \
        if (!mpt_a || !mpt_b || strcmp(mpt_a, mpt_b) != 0) {                             \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] %s == \"%s\", expected \"%s\"\n", __FILE__,        \
                    __LINE__, mpt_current, #a, mpt_a ? mpt_a : "(null)",                 \
                    mpt_b ? mpt_b : "(null)");                                           \
        }                                                                                \
    } while (0)

/* Substring check, for error messages. */
#define CHECK_CONTAINS(hay, needle)                                                      \
    do {                                                                                 \
        const char *mpt_h = (hay), *mpt_n = (needle);                                    \
        mpt_checks++;                                                                    \
        if (!mpt_h || !strstr(mpt_h, mpt_n)) {                                           \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] \"%s\" does not contain \"%s\"\n", __FILE__,       \
                    __LINE__, mpt_current, mpt_h ? mpt_h : "(null)", mpt_n);             \
        }                                                                                \
    } while (0)

/* How often needle occurs in hay (non-overlapping). */
static inline int mpt_count_str(const char *hay, const char *needle)
{
    int n = 0;
    size_t nl = strlen(needle);
    for (const char *p = hay ? strstr(hay, needle) : NULL; p && nl; p = strstr(p + nl, needle))
        n++;
    return n;
}

/* A message carries the "NAME: description: " prefix of its code exactly once (a failure
 * re-reported with the same code must not repeat it). */
#define CHECK_PREFIX_ONCE(msg, code)                                                     \
    do {                                                                                 \
        char mpt_p[256];                                                                 \
        snprintf(mpt_p, sizeof mpt_p, "%s: %s", mp_errname(code), mp_strerror(code));    \
        const char *mpt_m = (msg);                                                       \
        mpt_checks++;                                                                    \
        if (mpt_count_str(mpt_m, mpt_p) != 1) {                                          \
            mpt_failures++;                                                              \
            fprintf(stderr, "%s:%d: [%s] \"%s\" not once in \"%s\"\n", __FILE__,         \
                    __LINE__, mpt_current, mpt_p, mpt_m ? mpt_m : "(null)");             \
        }                                                                                \
    } while (0)

static inline double mpt_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int mpt_count_dir(const char *path, const char *prefix)
{
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.' && (!prefix || strncmp(e->d_name, prefix, strlen(prefix)) == 0))
            n++;
    closedir(d);
    return n;
}

static inline int mpt_count_fds(void) { return mpt_count_dir("/proc/self/fd", NULL) - 1; }

/* True if this process has a child that has exited but was not reaped. */
static inline int mpt_has_zombie(void)
{
    siginfo_t si;
    memset(&si, 0, sizeof si);
    if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
        return 0; /* ECHILD: no children at all */
    return si.si_pid != 0;
}

/* Python's repr of a value, in a static buffer (valid until the next call). */
static inline const char *mpt_repr(const mp_value *v)
{
    static char buf[4096];
    char *r = mp_value_repr(v);
    snprintf(buf, sizeof buf, "%s", r ? r : "(null)");
    mp_free(r);
    return buf;
}

/* The line "Field:\t..." of this process's /proc/self/status, with its newline, or "".
 * Tests compare a child's status line with the parent's: what a child inherits
 * depends on the environment the suite runs in (a CI runner may ignore signals). */
static inline const char *mpt_status_line(const char *field, char *out, size_t n)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return out;
    char line[256];
    size_t flen = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
            size_t len = strlen(line) < n ? strlen(line) : n - 1;
            memcpy(out, line, len);
            out[len] = '\0';
            break;
        }
    fclose(f);
    return out;
}

/* The ignored-signal set in a /proc/<pid>/status text ("SigIgn:\t<hex>"), without
 * signal 33 (glibc's internal SIGSETXID): whether a process has it ignored depends on
 * who started it (GNU make starts its commands with 32 and 33 ignored; ThreadSanitizer's
 * runtime ignores 33 in the parent only), not on the library. ~0 if there is none. */
static inline unsigned long long mpt_sigign_in(const char *status)
{
    const char *p = status ? strstr(status, "SigIgn:") : NULL;
    unsigned long long mask = 0;
    if (!p || sscanf(p, "SigIgn: %llx", &mask) != 1)
        return ~0ULL;
    return mask & ~(1ULL << 32);
}

/* This process's ignored-signal set, as mpt_sigign_in reads it. */
static inline unsigned long long mpt_sigign(void)
{
    char line[128];
    return mpt_sigign_in(mpt_status_line("SigIgn", line, sizeof line));
}

/* ---- waiting for what can be observed (never sleep to synchronise) ----------------
 * A task is "blocked" when the kernel has it asleep ('S' or 'D' in
 * /proc/PID/task/TID/stat) in a wait whose wchan contains `in` ("futex" for the
 * library's locks, queues, events, barriers; "poll" for fd waits; "pause"; NULL: any
 * sleep). When the kernel hides wchan ("0" or empty), the state alone decides. Every
 * wait is bounded. */
static inline char mpt_task_state(pid_t pid, pid_t tid, char *wchan, size_t n)
{
    char path[96], buf[512];
    snprintf(path, sizeof path, "/proc/%d/task/%d/stat", (int)pid, (int)tid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t len = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[len] = 0;
    const char *rp = strrchr(buf, ')');
    wchan[0] = 0;
    snprintf(path, sizeof path, "/proc/%d/task/%d/wchan", (int)pid, (int)tid);
    f = fopen(path, "r");
    if (f) {
        size_t w = fread(wchan, 1, n - 1, f);
        wchan[w] = 0;
        fclose(f);
    }
    return rp && rp[1] == ' ' ? rp[2] : 0;
}

/* 0 once task tid of pid is blocked as described above, -1 after timeout seconds or
 * when it is gone. tid 0 means the main thread (tid == pid). */
static inline int mpt_wait_blocked(pid_t pid, pid_t tid, const char *in, double timeout)
{
    double end = mpt_now() + timeout;
    do {
        char wchan[128];
        char st = mpt_task_state(pid, tid ? tid : pid, wchan, sizeof wchan);
        if (st == 0 || st == 'Z' || st == 'X')
            return -1;
        bool hidden = wchan[0] == 0 || strcmp(wchan, "0") == 0;
        if ((st == 'S' || st == 'D') && (!in || hidden || strstr(wchan, in)))
            return 0;
        struct timespec ts = {0, 1000000}; /* a bounded poll of an observable state */
        nanosleep(&ts, NULL);
    } while (mpt_now() < end);
    return -1;
}

/* 0 once no process keeps `path` open (e.g. a helper or tracker that wrote to it has
 * exited, so what it wrote is complete), -1 after timeout seconds. */
static inline int mpt_wait_file_unused(const char *path, double timeout)
{
    double end = mpt_now() + timeout;
    do {
        bool used = false;
        DIR *proc = opendir("/proc");
        struct dirent *p;
        while (proc && !used && (p = readdir(proc)) != NULL) {
            if (p->d_name[0] < '0' || p->d_name[0] > '9')
                continue;
            char dir[300];
            snprintf(dir, sizeof dir, "/proc/%s/fd", p->d_name);
            DIR *fdd = opendir(dir);
            struct dirent *e;
            while (fdd && !used && (e = readdir(fdd)) != NULL) {
                char link[600], target[4096];
                snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
                ssize_t n = readlink(link, target, sizeof target - 1);
                if (n > 0) {
                    target[n] = 0;
                    used = strcmp(target, path) == 0;
                }
            }
            if (fdd)
                closedir(fdd);
        }
        if (proc)
            closedir(proc);
        if (!used)
            return 0;
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
    } while (mpt_now() < end);
    return -1;
}

/* This test run's prefix for /dev/shm names (see the top of this file). */
__attribute__((constructor)) static void mpt_set_shm_prefix(void)
{
    char p[32];
    snprintf(p, sizeof p, "mpt%d", (int)getpid());
    setenv("MULTIPROC_SHM_PREFIX", p, 0);
}

static inline const char *mpt_shm_prefix(void)
{
    const char *p = getenv("MULTIPROC_SHM_PREFIX");
    return p ? p : "mp";
}

/* Entries of this test run: "<prefix>-..." */
static inline int mpt_count_shm(void)
{
    char pre[80];
    snprintf(pre, sizeof pre, "%s-", mpt_shm_prefix());
    return mpt_count_dir("/dev/shm", pre);
}

struct mpt_leaks {
    int fds;
    int shm;
};

static inline struct mpt_leaks mpt_leak_begin(void)
{
    struct mpt_leaks l = {mpt_count_fds(), mpt_count_shm()};
    return l;
}

static inline void mpt_leak_end_at(struct mpt_leaks l, const char *file, int line)
{
    /* Children may take a moment to be reaped by the library; give them a little time. */
    for (int i = 0; i < 200 && (mpt_count_fds() != l.fds || mpt_has_zombie()); i++)
        usleep(10000);
    int fds = mpt_count_fds(), shm = mpt_count_shm();
    mpt_checks++;
    if (fds != l.fds) {
        mpt_failures++;
        fprintf(stderr, "%s:%d: [%s] fd leak: %d open before, %d after\n", file, line,
                mpt_current, l.fds, fds);
        char cmd[64];
        snprintf(cmd, sizeof cmd, "ls -l /proc/%d/fd >&2", (int)getpid());
        if (system(cmd) < 0)
            perror("system");
    }
    if (mpt_has_zombie()) {
        mpt_failures++;
        fprintf(stderr, "%s:%d: [%s] a zombie child is left behind\n", file, line, mpt_current);
    }
    if (shm != l.shm) {
        mpt_failures++;
        fprintf(stderr, "%s:%d: [%s] /dev/shm: %d %s-* entries before, %d after\n", file, line,
                mpt_current, l.shm, mpt_shm_prefix(), shm);
    }
}
#define mpt_leak_end(l) mpt_leak_end_at((l), __FILE__, __LINE__)

/* Run one test function with leak checks around it. */
#define RUN(fn)                                                                          \
    do {                                                                                 \
        mpt_current = #fn;                                                               \
        int mpt_before = mpt_failures;                                                   \
        double mpt_t0 = mpt_now();                                                       \
        struct mpt_leaks mpt_l = mpt_leak_begin();                                       \
        fn();                                                                            \
        mpt_leak_end(mpt_l);                                                             \
        printf("%-4s %s (%.2fs)\n", mpt_failures == mpt_before ? "ok" : "FAIL", #fn,     \
               mpt_now() - mpt_t0);                                                      \
        fflush(stdout);                                                                  \
    } while (0)

/* Run a test only when the name matches argv[1] (or always when no argument). */
#define RUN_IF(argc, argv, fn)                                                           \
    do {                                                                                 \
        if ((argc) < 2 || strstr(#fn, (argv)[1]))                                        \
            RUN(fn);                                                                     \
    } while (0)

static inline int mpt_done(void)
{
    printf("%d checks, %d failed\n", mpt_checks, mpt_failures);
    return mpt_failures ? 1 : 0;
}

#endif
