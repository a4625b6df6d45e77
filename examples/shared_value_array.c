/* A shared Value and Array: a child writes the number and negates the array. */
/* shared-memory example in C: a child writes a Value and negates an Array;
 * the parent prints them. In Python:
 *
 *     def worker(num, arr):
 *         num.value = 3.1415927
 *         for i in range(len(arr)):
 *             arr[i] = -arr[i]
 *
 *     num = multiprocessing.Value('d', 0.0)
 *     arr = multiprocessing.Array('i', range(10))
 *     p = multiprocessing.Process(target=worker, args=(num, arr))
 *     p.start(); p.join()
 *     print(num.value)     # 3.1415927
 *     print(arr[:])        # [0, -1, -2, -3, -4, -5, -6, -7, -8, -9]
 */
#include <multiproc.h>

#include <stdio.h>

static int worker(mp_value *args)
{
    mp_shared *num = NULL, *arr = NULL;
    if (mp_value_unpack(args, "[h h]", &mp_kind_shared, &num, &mp_kind_shared, &arr) < 0)
        return 1;
    mp_shared_set_float(num, 0, 3.1415927); /* num.value = ... (under its lock) */
    int *a = mp_shared_ptr(arr);            /* typed view of the array */
    mp_shared_acquire(arr, -1);
    for (size_t i = 0; i < mp_shared_len(arr); i++)
        a[i] = -a[i];
    mp_shared_release(arr);
    return 0;
}

int main(void)
{
    double zero = 0.0;
    int range10[10] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9};
    mp_shared *num = mp_shared_value_new('d', &zero, NULL);
    mp_shared *arr = mp_shared_array_new('i', 10, range10, NULL);

    mp_value *args = mp_value_pack("[h h]", &mp_kind_shared, num, &mp_kind_shared, arr);
    mp_process_opts o = {.target = worker, .args = args};
    mp_process *p = mp_process_new(&o);
    mp_value_free(args);
    mp_process_start(p);
    mp_process_join(p, -1);
    mp_process_free(p);

    /* Print like Python: the float's shortest repr, then the list arr[:]. */
    mp_value *v = mp_value_float(mp_shared_get_float(num, 0));
    char *s = mp_value_repr(v);
    printf("%s\n", s);
    mp_free(s);
    mp_value_free(v);
    int out[10];
    mp_shared_read(arr, 0, 10, out);
    for (int i = 0; i < 10; i++)
        printf("%s%d", i ? ", " : "[", out[i]);
    printf("]\n");
    mp_shared_free(num);
    mp_shared_free(arr);
    return 0;
}
