/* A child fills a managed dict and reverses a managed list: the parent sees both. */
/* Manager example in C (SyncManager in the seeds): the worker sets d[1] = '1',
 * d['2'] = 2, d[0.25] = None and reverses l = manager.list(range(10)). Python prints
 *
 *     {1: '1', '2': 2, 0.25: None}
 *     [9, 8, 7, 6, 5, 4, 3, 2, 1, 0]
 *
 * (the seed shows `{0.25: None, 1: '1', '2': 2}` and `[7, 6, ..., 0]`, which no Python
 * prints: a dict keeps insertion order and range(10) starts at 0).
 */
#include <multiproc.h>

#include <stdio.h>

static int worker(mp_value *args)
{
    mp_proxy *d, *l;
    if (mp_value_unpack(args, "[h h]", &mp_kind_proxy, &d, &mp_kind_proxy, &l) < 0)
        return 1;
    int r = mp_proxy_callf(d, "__setitem__", NULL, "[i s]", 1, "1");
    r |= mp_proxy_callf(d, "__setitem__", NULL, "[s i]", "2", 2);
    r |= mp_proxy_callf(d, "__setitem__", NULL, "[f n]", 0.25);
    r |= mp_proxy_callf(l, "reverse", NULL, NULL);
    return r != 0;
}

static void print_proxy(mp_proxy *p)
{
    char *s = mp_proxy_repr(p); /* print(d): the referent's repr */
    printf("%s\n", s ? s : mp_last_error());
    mp_free(s);
}

int main(void)
{
    mp_manager *manager = mp_manager_new(NULL); /* with multiprocessing.Manager() as manager: */
    if (!manager) {
        fprintf(stderr, "manager: %s\n", mp_last_error());
        return 1;
    }
    mp_proxy *d = mp_manager_dict(manager, NULL);
    mp_value *range = mp_value_list();
    for (int i = 0; i < 10; i++)
        mp_value_list_append(range, mp_value_int(i));
    mp_proxy *l = mp_manager_list(manager, range);
    mp_value_free(range);

    mp_value *args = mp_value_pack("[h h]", &mp_kind_proxy, d, &mp_kind_proxy, l);
    mp_process_opts o = {.target = worker, .args = args};
    mp_process *p = mp_process_new(&o);
    mp_value_free(args);
    mp_process_start(p);
    mp_process_join(p, -1);

    print_proxy(d);
    print_proxy(l);
    mp_process_free(p);
    mp_proxy_free(l);
    mp_proxy_free(d);
    mp_manager_free(manager);
    return 0;
}
