/* Two workers take numbers from one queue and put their squares on another. */
/* two workers take numbers from one queue and put their squares into
 * another; the parent joins them and prints what arrived. Python:
 *
 *     def worker(read, write):
 *         while not read.empty():
 *             name_proc = multiprocessing.current_process().name
 *             x = read.get()
 *             res = x*x
 *             print(name_proc, res)
 *             write.put(res)
 *     write = multiprocessing.Queue()
 *     read = multiprocessing.Queue()
 *     [read.put(x) for x in range(3, 7)]
 *     procs = [multiprocessing.Process(target=worker, args=(read, write,)) for i in range(2)]
 *     ...
 *     [proc.join() for proc in procs]
 *     print([write.get() for _ in range(write.qsize())])
 *
 * prints (order varies between runs):
 *     Process-1 9
 *     Process-1 16
 *     Process-2 25
 *     Process-1 36
 *     [9, 16, 36, 25]
 * Python's empty()-then-get() can block forever when the other worker takes the last
 * item in between; get_nowait() (MP_EEMPTY) has no such race. */
#include <stdio.h>

#include "multiproc.h"
#include "multiproc/queue.h"

static int worker(mp_value *args)
{
    mp_queue *read, *write;
    if (mp_value_unpack(args, "[h h]", &mp_kind_queue, &read, &mp_kind_queue, &write) < 0)
        return 1;
    mp_value *x;
    while (mp_queue_get_nowait(read, &x) == 0) {
        int64_t res = mp_value_get_int(x) * mp_value_get_int(x);
        mp_value_free(x);
        printf("%s %lld\n", mp_current_process_name(), (long long)res);
        fflush(stdout);
        mp_value *r = mp_value_int(res);
        mp_queue_put(write, r, -1);
        mp_value_free(r);
    }
    return 0;
}

int main(void)
{
    mp_queue *write = mp_queue_new(NULL), *read = mp_queue_new(NULL);
    for (int x = 3; x < 7; x++) {
        mp_value *v = mp_value_int(x);
        mp_queue_put(read, v, -1);
        mp_value_free(v);
    }
    mp_value *args = mp_value_pack("[h h]", &mp_kind_queue, read, &mp_kind_queue, write);
    mp_process *procs[2];
    for (int i = 0; i < 2; i++) {
        procs[i] = mp_process_new(&(mp_process_opts){.target = worker, .args = args});
        if (!procs[i] || mp_process_start(procs[i]) < 0) {
            fprintf(stderr, "start: %s\n", mp_last_error());
            return 1;
        }
    }
    for (int i = 0; i < 2; i++)
        mp_process_join(procs[i], -1);
    mp_value *results = mp_value_list();
    for (size_t n = mp_queue_qsize(write); n > 0; n--) {
        mp_value *v;
        if (mp_queue_get(write, &v, -1) == 0)
            mp_value_list_append(results, v);
    }
    char *text = mp_value_repr(results);
    printf("%s\n", text);
    mp_free(text);
    mp_value_free(results);
    for (int i = 0; i < 2; i++)
        mp_process_free(procs[i]);
    mp_value_free(args);
    mp_queue_free(read);
    mp_queue_free(write);
    return 0;
}
