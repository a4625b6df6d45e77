/* A program the process tests run as a child:
 *   helper_proc_main atexit METHOD   logs to stderr, starts a non-daemon "finisher"
 *                                    and a daemon "sleeper", returns from main: the
 *                                    library's at-exit handler joins and terminates.
 *   helper_proc_main fsclient METHOD starts one forkserver child, prints the server's
 *                                    pid and exits: the server must go away.
 *   helper_proc_main sigchld-ign METHOD  ignores SIGCHLD first (so the kernel reaps
 *                                    this program's children by itself), then starts a
 *                                    child that returns 7, joins it and prints
 *                                    "exitcode=N" or the error.
 *   helper_proc_main sigchld-ign-loop METHOD  the same for 200 children, one after the
 *                                    other: prints "started=S errors=E" and the first
 *                                    error (every start must succeed).
 *   helper_proc_main fork-race METHOD  as sigchld-ign-loop, 50 children, with a
 *                                    pthread_atfork parent hook that holds the parent
 *                                    back after each fork() until the child has exited
 *                                    and been reaped by the kernel (20 ms at most): the
 *                                    window a fork start must not depend on. */
#define _GNU_SOURCE
#include "multiproc/log.h"
#include "multiproc/process.h"
#include "process/proc.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int finisher(mp_value *a)
{
    (void)a;
    usleep(300000); /* behaviour: at-exit must join a child that is still working */
    printf("finisher done\n");
    return 0;
}

static int sleeper(mp_value *a)
{
    (void)a;
    sleep(30); /* behaviour: a daemon at-exit must terminate */
    printf("sleeper done\n");
    return 0;
}

static mp_process *f, *s;

/* Runs before the library's at-exit handler (registered later): freeing running
 * processes hands them to the library, which still joins / terminates them. */
static void free_objects(void)
{
    mp_process_free(f);
    mp_process_free(s);
}

static int nothing(mp_value *a)
{
    (void)a;
    return 0;
}

/* fork-race: in the parent right after fork(), before the library sees the pid. With
 * SIGCHLD ignored and no other child, waitid reports ECHILD once the kernel has reaped
 * the child. A child that cannot exit on its own yet (the fixed library's) costs the
 * full 20 ms. */
static void hold_until_child_gone(void)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (;;) {
        siginfo_t si;
        memset(&si, 0, sizeof si);
        if (waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT) < 0 && errno == ECHILD)
            return;
        clock_gettime(CLOCK_MONOTONIC, &t);
        if ((t.tv_sec - t0.tv_sec) * 1e3 + (t.tv_nsec - t0.tv_nsec) / 1e6 > 20)
            return;
        sched_yield();
    }
}

static int seven(mp_value *a)
{
    (void)a;
    return 7;
}

int main(int argc, char **argv)
{
    if (argc < 3)
        return 2;
    mp_context *ctx = mp_get_context(argv[2]);
    if (strcmp(argv[1], "atexit") == 0) {
        mp_log_to_stderr(MP_LOG_INFO);
        mp_process_opts o = {.target = finisher, .name = "finisher", .ctx = ctx};
        f = mp_process_new(&o);
        o = (mp_process_opts){.target = sleeper, .name = "sleeper", .daemon = true, .ctx = ctx};
        s = mp_process_new(&o);
        if (mp_process_start(f) < 0 || mp_process_start(s) < 0)
            return 3;
        atexit(free_objects);
        return 0; /* the at-exit handlers join the finisher and terminate the sleeper */
    }
    if (strcmp(argv[1], "fsclient") == 0) {
        mp_process_opts o = {.target = nothing, .ctx = ctx};
        mp_process *p = mp_process_new(&o);
        if (mp_process_start(p) < 0 || mp_process_join(p, 30) < 0)
            return 3;
        printf("server=%d\n", (int)mp__fs_server_pid());
        mp_process_free(p);
        return 0;
    }
    if (strcmp(argv[1], "sigchld-ign") == 0) {
        alarm(10); /* a hang ends as a SIGALRM death the test reports */
        signal(SIGCHLD, SIG_IGN);
        mp_process_opts o = {.target = seven, .ctx = ctx};
        mp_process *p = mp_process_new(&o);
        int code = -1;
        int r = mp_process_start(p);
        if (r == 0)
            r = mp_process_join(p, 10);
        if (r == 0)
            r = mp_process_exitcode(p, &code);
        if (r < 0)
            printf("error=%s\n", mp_errname(r));
        else
            printf("exitcode=%d\n", code);
        mp_process_free(p);
        return 0;
    }
    bool race = strcmp(argv[1], "fork-race") == 0;
    if (strcmp(argv[1], "sigchld-ign-loop") == 0 || race) {
        alarm(60);
        signal(SIGCHLD, SIG_IGN);
        if (race)
            pthread_atfork(NULL, hold_until_child_gone, NULL);
        int started = 0, errors = 0, n = race ? 50 : 200;
        char first[300] = "";
        for (int i = 0; i < n; i++) {
            mp_process_opts o = {.target = seven, .ctx = ctx};
            mp_process *p = mp_process_new(&o);
            int r = mp_process_start(p);
            if (r == 0) {
                started++;
                r = mp_process_join(p, 10);
            }
            if (r < 0 && errors++ == 0)
                snprintf(first, sizeof first, " first=%s (%s)", mp_errname(r), mp_last_error());
            mp_process_free(p);
        }
        printf("started=%d errors=%d%s\n", started, errors, first);
        return 0;
    }
    return 2;
}
