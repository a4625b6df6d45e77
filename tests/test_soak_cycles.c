/* Repeated cycles that must not leak: processes started and joined under each start
 * method (passing a value and a queue, checking the exit code), and subprocesses run with
 * their output captured. After each test, no fd, zombie or /dev/shm entry may be left
 * (test_util.h), and the resident set must not have grown past a small allowance after
 * the first rounds. Short in `make test`; `make soak` sets MP_SOAK_SECONDS and each test
 * runs that long (fault.h). */
#include "test_util.h"
#include "fault.h"

#include <stdio.h>

static long rss_kb(void)
{
    char line[128];
    long kb = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

/* Exit code: the int it was given plus what it got from the queue. */
__attribute__((visibility("default"))) int soak_child(mp_value *args)
{
    int64_t n;
    mp_queue *q;
    if (mp_value_unpack(args, "[i h]", &n, &mp_kind_queue, &q) < 0)
        return 100;
    mp_value *v = NULL;
    int r = mp_queue_get(q, &v, 10);
    int64_t got = r == 0 ? mp_value_get_int(v) : 50;
    mp_value_free(v);
    return (int)(n + got);
}

/* The RSS after the warm-up rounds, and the check at the end: growth past 8 MiB is a leak.
 * Not under a sanitizer: its quarantine keeps freed memory resident (AddressSanitizer
 * finds leaks itself). */
#define WARMUP 20
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define RSS_ALLOWANCE_KB (1L << 40)
#else
#define RSS_ALLOWANCE_KB 8192
#endif

static void start_join_cycles(const char *method, int base)
{
    /* A small ring: it is all touched during the warm-up (a big one would add resident
     * pages as items move along it, which is not a leak). */
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    double t0 = mpt_now();
    long rss0 = 0;
    int n = 0, bad = 0;
    for (; mpt_more_rounds(n, base, t0); n++) {
        if (n == WARMUP)
            rss0 = rss_kb();
        mp_value *one = mp_value_int(1);
        mp_queue_put(q, one, -1);
        mp_value_free(one);
        mp_value *args = mp_value_pack("[i h]", (int64_t)(n % 7), &mp_kind_queue, q);
        mp_process *p = mp_process_new(&(mp_process_opts){.target = soak_child, .args = args,
                                                          .ctx = mp_get_context(method)});
        mp_value_free(args);
        int code = -1;
        if (!p || mp_process_start(p) < 0 || mp_process_join(p, 30) < 0 ||
            mp_process_exitcode(p, &code) < 0 || code != n % 7 + 1) {
            fprintf(stderr, "%s cycle %d: exit code %d: %s\n", method, n, code, mp_last_error());
            bad++;
        }
        mp_process_free(p);
    }
    long grown = rss_kb() - rss0;
    CHECK_INT(bad, 0);
    CHECK(n <= WARMUP || grown < RSS_ALLOWANCE_KB);
    CHECK(mp_queue_empty(q));
    printf("     %s: %d start/join cycles, RSS %+ld kB after the warm-up\n", method, n,
           n > WARMUP ? grown : 0);
    mp_queue_free(q);
}

static void test_cycles_fork(void) { start_join_cycles("fork", 500); }
static void test_cycles_spawn(void) { start_join_cycles("spawn", 100); }
static void test_cycles_forkserver(void) { start_join_cycles("forkserver", 500); }

static void test_cycles_captured_run(void)
{
    double t0 = mpt_now();
    long rss0 = 0;
    int n = 0, bad = 0;
    for (; mpt_more_rounds(n, 300, t0); n++) {
        if (n == WARMUP)
            rss0 = rss_kb();
        mp_run_result r = {0};
        int rc = mp_run((const char *const[]){"sh", "-c", "echo out; echo err >&2; exit 3", NULL},
                        &(mp_subprocess_opts){.capture_output = true}, &r);
        if (rc < 0 || r.returncode != 3 || !r.out || strcmp(r.out, "out\n") != 0 || !r.err ||
            strcmp(r.err, "err\n") != 0) {
            fprintf(stderr, "run %d: rc %d returncode %d: %s\n", n, rc, r.returncode,
                    mp_last_error());
            bad++;
        }
        mp_run_result_free(&r);
    }
    long grown = rss_kb() - rss0;
    CHECK_INT(bad, 0);
    CHECK(n <= WARMUP || grown < RSS_ALLOWANCE_KB);
    printf("     %d captured runs, RSS %+ld kB after the warm-up\n", n, n > WARMUP ? grown : 0);
}

int main(int argc, char **argv)
{
    /* The forkserver (and the resource tracker it starts) keep a socket and a pipe open
     * for the program's lifetime: start them before the fd leak checks. */
    mp_forkserver_ensure_running();
    RUN_IF(argc, argv, test_cycles_fork);
    RUN_IF(argc, argv, test_cycles_spawn);
    RUN_IF(argc, argv, test_cycles_forkserver);
    RUN_IF(argc, argv, test_cycles_captured_run);
    return mpt_done();
}
