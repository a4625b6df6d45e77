/* Process start+join rates per start method, beside the raw fork()+waitpid floor.
 * Prints: case<TAB>unit<TAB>multiproc_rate<TAB>floor_rate (see bench/run.py). */
#define _GNU_SOURCE
#include "multiproc/process.h"

#include <stdio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int empty(mp_value *args)
{
    (void)args;
    return 0;
}

/* Start and join children for about `seconds` (at least `min` of them): ops/s. */
static double rate_method(const char *method, double seconds, int min)
{
    mp_context *ctx = mp_get_context(method);
    int n = 0;
    double t0 = now(), t;
    do {
        mp_process_opts o = {.target = empty, .ctx = ctx};
        mp_process *p = mp_process_new(&o);
        if (!p || mp_process_start(p) < 0 || mp_process_join(p, -1) < 0) {
            fprintf(stderr, "bench_process: %s child failed\n", method);
            mp_process_free(p);
            return 0;
        }
        mp_process_free(p);
        n++;
        t = now() - t0;
    } while (t < seconds || n < min);
    return n / t;
}

static double rate_floor(double seconds)
{
    int n = 0;
    double t0 = now(), t;
    do {
        pid_t pid = fork();
        if (pid == 0)
            _exit(0);
        waitpid(pid, NULL, 0);
        n++;
        t = now() - t0;
    } while (t < seconds);
    return n / t;
}

int main(void)
{
    /* Warm up: the forkserver starts once, outside the measurement (Python's too). */
    mp_forkserver_ensure_running();
    rate_method("forkserver", 0, 3);
    double floor = rate_floor(1.0);
    printf("process_start_join_fork\tops/s\t%.1f\t%.1f\n", rate_method("fork", 1.5, 20), floor);
    printf("process_start_join_spawn\tops/s\t%.1f\t%.1f\n", rate_method("spawn", 1.5, 20), floor);
    printf("process_start_join_forkserver\tops/s\t%.1f\t%.1f\n",
           rate_method("forkserver", 1.5, 20), floor);
    return 0;
}
