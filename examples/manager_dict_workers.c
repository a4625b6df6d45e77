/* Ten processes write into one managed dict: Results: {0: 0, 1: 2, ...}. */
/* Manager example in C (the seeds' "Managing Shared State"): a manager's dict is passed
 * to ten processes, each sets d[i] = i * 2. Python prints
 *
 *     Results: {0: 0, 1: 2, 2: 4, 3: 6, 4: 8, 5: 10, 6: 12, 7: 14, 8: 16, 9: 18}
 *
 * with the keys in whatever order the processes happened to run; this prints them in key
 * order (Python: dict(sorted(d.items()))) so the output is always the same.
 */
#include <multiproc.h>

#include <stdio.h>

static int worker(mp_value *args)
{
    mp_proxy *d; /* the child's own proxy, connected to the same dict */
    int64_t key, value;
    if (mp_value_unpack(args, "[h I I]", &mp_kind_proxy, &d, &key, &value) < 0)
        return 1;
    return mp_proxy_callf(d, "__setitem__", NULL, "[I I]", key, value) < 0; /* d[key] = value */
}

int main(void)
{
    mp_manager *mgr = mp_manager_new(NULL);
    mp_proxy *d = mgr ? mp_manager_dict(mgr, NULL) : NULL;
    if (!d) {
        fprintf(stderr, "manager: %s\n", mp_last_error());
        return 1;
    }
    mp_process *jobs[10];
    for (int i = 0; i < 10; i++) {
        mp_value *args = mp_value_pack("[h i i]", &mp_kind_proxy, d, i, i * 2);
        mp_process_opts o = {.target = worker, .args = args};
        jobs[i] = mp_process_new(&o);
        mp_value_free(args);
    }
    for (int i = 0; i < 10; i++)
        mp_process_start(jobs[i]);
    for (int i = 0; i < 10; i++)
        mp_process_join(jobs[i], -1);
    /* dict(sorted(d.items())) */
    mp_value *sorted = mp_value_map(), *v;
    for (int i = 0; i < 10; i++)
        if (mp_proxy_callf(d, "__getitem__", &v, "[i]", i) == 0)
            mp_value_map_set(sorted, mp_value_int(i), v);
    char *s = mp_value_repr(sorted);
    printf("Results: %s\n", s);
    mp_free(s);
    mp_value_free(sorted);
    for (int i = 0; i < 10; i++)
        mp_process_free(jobs[i]);
    mp_proxy_free(d);
    mp_manager_free(mgr);
    return 0;
}
