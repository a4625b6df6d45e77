/* A JoinableQueue of tasks with poison pills to stop the consumers, answers on a second queue. */
/* consumers take tasks from a JoinableQueue and send answers back
 * on a Queue; one "poison pill" (None) per consumer stops them; the parent waits with
 * tasks.join() and prints the results. Python (abridged):
 *
 *     def run(self):                        # Consumer
 *         while True:
 *             next_task = self.task_queue.get()
 *             if next_task is None:
 *                 print('{}: Exiting'.format(proc_name))
 *                 self.task_queue.task_done()
 *                 break
 *             print('{}: {}'.format(proc_name, next_task))
 *             answer = next_task()          # sleeps 0.1 s, returns 'a * b = product'
 *             self.task_queue.task_done()
 *             self.result_queue.put(answer)
 *     tasks = multiprocessing.JoinableQueue()
 *     results = multiprocessing.Queue()
 *     num_consumers = multiprocessing.cpu_count() * 2
 *     print('Creating {} consumers'.format(num_consumers))
 *     ... for i in range(10): tasks.put(Task(i, i))
 *     ... for i in range(num_consumers): tasks.put(None)
 *     tasks.join()
 *     while num_jobs: print('Result:', results.get()) ...
 *
 * prints "Creating 8 consumers", "Consumer-1: 0 * 0", ..., "Consumer-4: Exiting", ...,
 * "Result: 6 * 6 = 36", ... (order varies). A task travels as the value [a, b]. */
#include <stdio.h>
#include <unistd.h>

#include "multiproc.h"
#include "multiproc/queue.h"

static int consumer(mp_value *args)
{
    mp_queue *tasks, *results;
    if (mp_value_unpack(args, "[h h]", &mp_kind_queue, &tasks, &mp_kind_queue, &results) < 0)
        return 1;
    const char *name = mp_current_process_name();
    for (;;) {
        mp_value *task;
        if (mp_queue_get(tasks, &task, -1) < 0)
            return 1;
        if (mp_value_type(task) == MP_NIL) { /* poison pill */
            printf("%s: Exiting\n", name);
            fflush(stdout);
            mp_value_free(task);
            mp_queue_task_done(tasks);
            return 0;
        }
        int64_t a = 0, b = 0;
        mp_value_unpack(task, "[I I]", &a, &b);
        mp_value_free(task);
        printf("%s: %lld * %lld\n", name, (long long)a, (long long)b);
        fflush(stdout);
        usleep(100000); /* pretend to take time to do the work */
        char answer[64];
        snprintf(answer, sizeof answer, "%lld * %lld = %lld", (long long)a, (long long)b,
                 (long long)(a * b));
        mp_queue_task_done(tasks);
        mp_value *v = mp_value_str(answer);
        mp_queue_put(results, v, -1);
        mp_value_free(v);
    }
}

int main(void)
{
    mp_queue *tasks = mp_joinable_queue_new(NULL);
    mp_queue *results = mp_queue_new(NULL);
    int num_consumers = mp_cpu_count() * 2;
    printf("Creating %d consumers\n", num_consumers);
    fflush(stdout);
    mp_value *args = mp_value_pack("[h h]", &mp_kind_queue, tasks, &mp_kind_queue, results);
    mp_process *consumers[256];
    if (num_consumers > 256)
        num_consumers = 256;
    for (int i = 0; i < num_consumers; i++) {
        char name[32];
        snprintf(name, sizeof name, "Consumer-%d", i + 1);
        consumers[i] = mp_process_new(&(mp_process_opts){.target = consumer, .args = args,
                                                         .name = name});
        if (!consumers[i] || mp_process_start(consumers[i]) < 0) {
            fprintf(stderr, "start: %s\n", mp_last_error());
            return 1;
        }
    }
    int num_jobs = 10;
    for (int i = 0; i < num_jobs; i++) {
        mp_value *task = mp_value_pack("[i i]", i, i);
        mp_queue_put(tasks, task, -1);
        mp_value_free(task);
    }
    mp_value *pill = mp_value_nil();
    for (int i = 0; i < num_consumers; i++)
        mp_queue_put(tasks, pill, -1);
    mp_value_free(pill);
    mp_queue_join(tasks, -1); /* wait for all of the tasks to finish */
    while (num_jobs) {
        mp_value *result;
        if (mp_queue_get(results, &result, -1) < 0)
            break;
        printf("Result: %s\n", mp_value_get_str(result, NULL));
        mp_value_free(result);
        num_jobs--;
    }
    for (int i = 0; i < num_consumers; i++) {
        mp_process_join(consumers[i], -1);
        mp_process_free(consumers[i]);
    }
    mp_value_free(args);
    mp_queue_free(tasks);
    mp_queue_free(results);
    return num_jobs == 0 ? 0 : 1;
}
