/* A process's life: is_alive, terminate, join and exitcode before, during and after. */
/* is_alive, terminate, join, exitcode.
 *
 *   p = multiprocessing.Process(target=foo)
 *   print('Process before execution:', p, p.is_alive())
 *   p.start();     print('Process running:', p, p.is_alive())
 *   p.terminate(); print('Process terminated:', p, p.is_alive())
 *   p.join();      print('Process joined:', p, p.is_alive())
 *   print('Process exit code:', p.exitcode)
 *
 * Prints (pids vary; right after terminate() the child may still be alive, as in
 * Python):
 *   Process before execution: <Process name='Process-1' parent=100 initial> False
 *   Process running: <Process name='Process-1' pid=101 parent=100 started> True
 *   Process terminated: <Process name='Process-1' pid=101 parent=100 started> True
 *   Process joined: <Process name='Process-1' pid=101 parent=100 stopped exitcode=-SIGTERM> False
 *   Process exit code: -15 */
#include "multiproc/process.h"

#include <stdio.h>
#include <unistd.h>

static int foo(mp_value *args)
{
    (void)args;
    sleep(3);
    return 0;
}

static void show(const char *what, mp_process *p)
{
    char *repr = mp_process_repr(p);
    bool alive = mp_process_is_alive(p);
    printf("%s %s %s\n", what, repr, alive ? "True" : "False");
    mp_free(repr);
}

int main(void)
{
    mp_process_opts o = {.target = foo};
    mp_process *p = mp_process_new(&o);
    show("Process before execution:", p);
    if (mp_process_start(p) < 0) {
        fprintf(stderr, "start: %s\n", mp_last_error());
        return 1;
    }
    show("Process running:", p);
    mp_process_terminate(p);
    show("Process terminated:", p);
    mp_process_join(p, -1);
    show("Process joined:", p);
    int code = 0;
    mp_process_exitcode(p, &code);
    printf("Process exit code: %d\n", code);
    mp_process_free(p);
    return 0;
}
