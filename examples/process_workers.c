/* Five worker processes, each printing its number. */
/* five workers, each printing its number.
 *
 *   def worker(num):
 *       print('Worker:', num)
 *   for i in range(5):
 *       p = multiprocessing.Process(target=worker, args=(i,)); p.start()
 *
 * Prints "Worker: 0" ... "Worker: 4" (in the order the children get the CPU). */
#include "multiproc/process.h"

#include <stdio.h>

static int worker(mp_value *args)
{
    int num = 0;
    mp_value_unpack(args, "[i]", &num);
    printf("Worker: %d\n", num);
    return 0;
}

int main(void)
{
    mp_process *jobs[5];
    for (int i = 0; i < 5; i++) {
        mp_value *args = mp_value_pack("[i]", i);
        mp_process_opts o = {.target = worker, .args = args};
        jobs[i] = mp_process_new(&o);
        mp_value_free(args);
        if (!jobs[i] || mp_process_start(jobs[i]) < 0) {
            fprintf(stderr, "start: %s\n", mp_last_error());
            return 1;
        }
    }
    for (int i = 0; i < 5; i++) {
        mp_process_join(jobs[i], -1);
        mp_process_free(jobs[i]);
    }
    return 0;
}
