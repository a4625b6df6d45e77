/* A pool of workers maps a function over a list; each worker announces itself once. */
/* Pool.map with an initializer. Python:
 *
 *     def do_calculation(data):
 *         return data * 2
 *     def start_process():
 *         print('Starting', multiprocessing.current_process().name)
 *     inputs = list(range(10))
 *     print('Input   :', inputs)
 *     builtin_outputs = map(do_calculation, inputs)
 *     print('Built-in:', builtin_outputs)
 *     pool_size = multiprocessing.cpu_count() * 2
 *     pool = multiprocessing.Pool(processes=pool_size, initializer=start_process)
 *     pool_outputs = pool.map(do_calculation, inputs)
 *     pool.close()  # no more tasks
 *     pool.join()   # wrap up current tasks
 *     print('Pool    :', pool_outputs)
 *
 * prints (on a machine with 4 CPUs):
 *     Input   : [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
 *     Built-in: <map object at 0x1007b2be0>
 *     Starting ForkPoolWorker-3
 *     Starting ForkPoolWorker-4
 *     ... (8 lines, one per worker)
 *     Pool    : [0, 2, 4, 6, 8, 10, 12, 14, 16, 18]
 *
 * The "Starting" lines come in the order the workers reach their initializer, which
 * varies from run to run in Python and here alike (the workers start at the same time
 * on different CPUs); there is one per worker, all before the "Pool" line, since the
 * pool is created only when every initializer has run. Python's built-in map() is lazy:
 * it prints a map object, and so does this program (a pointer to a struct naming the
 * function and the inputs, computed only when asked). */
#include <stdio.h>

#include "multiproc.h"
#include "multiproc/pool.h"

int do_calculation(const mp_value *data, mp_value **result)
{
    *result = mp_value_int(mp_value_get_int(data) * 2);
    return 0;
}

int start_process(const mp_value *args)
{
    (void)args;
    printf("Starting %s\n", mp_current_process_name());
    fflush(stdout);
    return 0;
}

/* A lazy map, as Python's built-in map(): the function and its input. */
struct map_object {
    mp_task_fn fn;
    const mp_value *inputs;
};

static void print_list(const char *label, const mp_value *list)
{
    char *repr = mp_value_repr(list);
    printf("%s: %s\n", label, repr);
    mp_free(repr);
}

int main(void)
{
    mp_value *inputs = mp_value_list();
    for (int i = 0; i < 10; i++)
        mp_value_list_append(inputs, mp_value_int(i));
    print_list("Input   ", inputs);

    struct map_object builtin_outputs = {do_calculation, inputs};
    printf("Built-in: <map object at %p>\n", (void *)&builtin_outputs);

    int pool_size = mp_cpu_count() * 2;
    mp_pool *pool = mp_pool_new(&(mp_pool_opts){.processes = pool_size,
                                                .initializer = start_process});
    mp_value *pool_outputs = NULL;
    if (!pool || mp_pool_map(pool, do_calculation, inputs, 0, &pool_outputs) < 0) {
        fprintf(stderr, "pool: %s\n", mp_last_error());
        return 1;
    }
    mp_pool_close(pool); /* no more tasks */
    mp_pool_join(pool, MP_NO_LIMIT); /* wrap up current tasks */
    mp_pool_free(pool);

    print_list("Pool    ", pool_outputs);
    mp_value_free(pool_outputs);
    mp_value_free(inputs);
    return 0;
}
