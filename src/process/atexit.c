/* At exit: terminate the daemonic children, join the others (Python's
 * util._exit_function); mp_process_exit and mp_process_fail.
 *
 * DESIGN
 * - Runs on the thread that exits (atexit handler, or a child leaving through
 *   mp_process_exit). It walks the registry under its lock; waiting there follows the
 *   lock order of registry.c (wait_lock is released before reg_lock is needed).
 */
#define _GNU_SOURCE
#include "process/core.h"
#include "internal/common.h"
#include "multiproc/log.h"
#include "multiproc/util.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

/* ---- at exit ------------------------------------------------------------------- */

/* Python's util._exit_function: terminate the daemons, join the others. */
static void shutdown_children(void)
{
    mp_log(MP_LOG_INFO, "process shutting down");
    mp_log(MP_LOG_DEBUG, "running all \"atexit\" finalizers with priority >= 0");
    mp_run_finalizers(0);
    pthread_mutex_lock(&mp__proc_reg_lock);
    for (mp_process *p = mp__proc_reg_head, *next; p; p = next) {
        next = p->next;
        if (p->daemon && mp__proc_wait(p, 0) == MP_ETIMEOUT) {
            mp_log(MP_LOG_INFO, "calling terminate() for daemon %s", p->name);
            mp__pidfd_send_signal(p->pidfd, SIGTERM);
        }
    }
    while (mp__proc_reg_head) {
        mp_process *p = mp__proc_reg_head;
        mp_log(MP_LOG_INFO, "calling join() for process %s", p->name);
        /* Cannot wait (it was reaped elsewhere), or another thread collected it and
         * waits for mp__proc_reg_lock to unlink it: drop it (the pointer is only compared). */
        if (mp__proc_wait(p, -1) < 0 || mp__proc_reg_head == p)
            mp__proc_reg_remove(p);
    }
    pthread_mutex_unlock(&mp__proc_reg_lock);
    mp_log(MP_LOG_DEBUG, "running the remaining \"atexit\" finalizers");
    mp_run_finalizers(MP_FINALIZE_ALL);
}

_Noreturn void mp_process_exit(int code)
{
    if (!mp__proc_self.is_child)
        exit(code);
    if (!mp__proc_self.exiting) {
        mp__proc_self.exiting = true;
        shutdown_children();
        mp__fs_shutdown();
    }
    mp_log(MP_LOG_INFO, "process exiting with exitcode %d", code);
    fflush(NULL);
    _exit(code & 0xff);
}

_Noreturn void mp_process_fail(const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt ? fmt : "error", ap);
    va_end(ap);
    fflush(stdout);
    char fn[256] = "main", path[4096] = "?";
    if (mp__proc_self.target)
        mp__target_describe(mp__proc_self.target, fn, sizeof fn, path, sizeof path);
    else
        mp__target_describe(NULL, fn, 0, path, sizeof path);
    /* Python prints "Process NAME:" and the traceback of the exception; C has no
     * stack to show, so the frame is the target function. */
    if (mp__proc_self.is_child)
        fprintf(stderr, "Process %s:\n", mp_current_process_name());
    fprintf(stderr, "Traceback (most recent call last):\n  File \"%s\", in %s\n%s\n", path, fn,
            msg);
    fflush(stderr);
    mp_process_exit(1);
}

static void proc_atexit(void)
{
    if (mp__proc_self.exiting)
        return;
    mp__proc_self.exiting = true;
    shutdown_children();
    mp__fs_shutdown();
}

__attribute__((constructor(500))) static void proc_init(void) { atexit(proc_atexit); }

