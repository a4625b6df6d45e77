/* Exit codes of a child in every way it can end (the tracebacks on stderr are part of it). */
/* the exit code of a child in every way it
 * can end. The C mapping of Python's table:
 *   sys.exit(1)          -> mp_process_exit(1)                      exitcode 1
 *   return               -> return 0                                exitcode 0
 *   return 1 (ignored    -> return 0 (in C the return value IS the  exitcode 0
 *     by Python)             exit code)
 *   raise RuntimeError   -> mp_process_fail("RuntimeError: ...")    exitcode 1
 *                           (prints a traceback-like block on stderr)
 *   terminate()          -> mp_process_terminate (SIGTERM)          exitcode -15
 *
 * Prints on stdout:
 *   Starting process for exit_error
 *   ...
 *        exit_error.exitcode = 1
 *           exit_ok.exitcode = 0
 *      return_value.exitcode = 0
 *            raises.exitcode = 1
 *        terminated.exitcode = -15 */
#include "multiproc/process.h"

#include <stdio.h>
#include <unistd.h>

static int exit_error(mp_value *a)
{
    (void)a;
    mp_process_exit(1);
}

static int exit_ok(mp_value *a)
{
    (void)a;
    return 0;
}

static int return_value(mp_value *a)
{
    (void)a;
    return 0; /* Python's `return 1` is ignored; a C target returns its exit code */
}

/* Not static: the traceback-like message names the exported symbol. */
int raises(mp_value *a);
int raises(mp_value *a)
{
    (void)a;
    mp_process_fail("RuntimeError: There was an error!");
}

static int terminated(mp_value *a)
{
    (void)a;
    sleep(3);
    return 0;
}

int main(void)
{
    struct {
        const char *name;
        mp_target_fn fn;
    } funcs[] = {{"exit_error", exit_error},
                 {"exit_ok", exit_ok},
                 {"return_value", return_value},
                 {"raises", raises},
                 {"terminated", terminated}};
    mp_process *jobs[5];
    for (int i = 0; i < 5; i++) {
        printf("Starting process for %s\n", funcs[i].name);
        mp_process_opts o = {.target = funcs[i].fn, .name = funcs[i].name};
        jobs[i] = mp_process_new(&o);
        if (!jobs[i] || mp_process_start(jobs[i]) < 0) {
            fprintf(stderr, "start: %s\n", mp_last_error());
            return 1;
        }
    }
    mp_process_terminate(jobs[4]);
    for (int i = 0; i < 5; i++) {
        int code = 0;
        mp_process_join(jobs[i], -1);
        mp_process_exitcode(jobs[i], &code);
        printf("%15s.exitcode = %d\n", mp_process_name(jobs[i]), code);
        mp_process_free(jobs[i]);
    }
    return 0;
}
