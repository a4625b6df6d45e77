/* Daemon and non-daemon children at exit: the daemon is terminated, the other is waited for. */
/* a daemon and a non-daemon child; the main program
 * returns at once. At exit the library terminates the daemon and waits for the
 * other, so the daemon never prints "Exiting". The Python original sleeps 3 s; here 0.3 s.
 *
 *   def foo():
 *       name = multiprocessing.current_process().name
 *       print("Starting %s " % name); time.sleep(3); print("Exiting %s " % name)
 *   background_process.daemon = True; NO_background_process.daemon = False
 *
 * Prints:
 *   Starting background_process
 *   Starting NO_background_process
 *   Exiting NO_background_process */
#include "multiproc/process.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static int foo(mp_value *args)
{
    (void)args;
    const char *name = mp_current_process_name();
    printf("Starting %s \n", name);
    fflush(stdout);
    usleep(300000);
    printf("Exiting %s \n", name);
    return 0;
}

static mp_process *background, *no_background;

static void release(void)
{
    /* Freeing a running child hands it to the library's at-exit handler. */
    mp_process_free(background);
    mp_process_free(no_background);
}

int main(void)
{
    mp_process_opts o = {.target = foo, .name = "background_process", .daemon = true};
    background = mp_process_new(&o);
    o = (mp_process_opts){.target = foo, .name = "NO_background_process", .daemon = false};
    no_background = mp_process_new(&o);
    atexit(release);
    if (mp_process_start(background) < 0)
        return 1;
    usleep(50000); /* keep the two "Starting" lines in the Python original's order */
    if (mp_process_start(no_background) < 0)
        return 1;
    usleep(100000); /* the Python original's daemon gets to print "Starting" before the exit */
    return 0;
}
