/* Process names: each worker prints the name of the process it runs in. */
/* a worker printing the name of the process it runs in.
 *
 *   def worker():
 *       name = multiprocessing.current_process().name
 *       print(name)
 *
 * Run three times: named 'worker 1', unnamed (Process-2: the counter counts every
 * Process created) and named 'my_service'; the main program is MainProcess. Prints:
 *   MainProcess
 *   worker 1
 *   Process-2
 *   my_service
 * Each child is joined before the next starts, so the order is fixed. */
#include "multiproc/process.h"

#include <stdio.h>

static int worker(mp_value *args)
{
    (void)args;
    printf("%s\n", mp_current_process_name());
    return 0;
}

int main(void)
{
    printf("%s\n", mp_current_process_name());
    const char *names[] = {"worker 1", NULL, "my_service"};
    for (int i = 0; i < 3; i++) {
        mp_process_opts o = {.target = worker, .name = names[i]};
        mp_process *p = mp_process_new(&o);
        if (!p || mp_process_start(p) < 0 || mp_process_join(p, -1) < 0) {
            fprintf(stderr, "%s\n", mp_last_error());
            return 1;
        }
        mp_process_free(p);
    }
    return 0;
}
