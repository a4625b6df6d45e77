/* Twenty processes decrement a managed dict's count: with a Lock, or atomically. */
/* Manager example in C (the seeds' Manager dict with a Lock): a child changes
 * m_dic["name"]; then twenty processes each do m_dic["count"] -= 1. Python prints
 *
 *     主进程>>> {'name': '王乃卉'}
 *     主进程>>> {'name': '王力宏'}
 *     主进程 {'count': 80}
 *
 * `d[k] -= 1` through a proxy is a read and a write: without the lock two processes can
 * read the same count and one decrement is lost (the seed's "sometimes 81"). multiproc
 * also has the atomic form, one request: d.add(k, -1), shown last.
 */
#include <multiproc.h>

#include <stdio.h>

static int set_name(mp_value *args)
{
    mp_proxy *d;
    if (mp_value_unpack(args, "[h]", &mp_kind_proxy, &d) < 0)
        return 1;
    return mp_proxy_callf(d, "__setitem__", NULL, "[s s]", "name", "王力宏") < 0;
}

static int decrement(mp_value *args) /* with m_lock: m_dic["count"] -= 1 */
{
    mp_proxy *d;
    mp_lock *lock;
    if (mp_value_unpack(args, "[h h]", &mp_kind_proxy, &d, &mp_kind_lock, &lock) < 0)
        return 1;
    mp_value *v = NULL;
    mp_lock_acquire(lock, -1);
    int r = mp_proxy_callf(d, "__getitem__", &v, "[s]", "count");
    if (r == 0)
        r = mp_proxy_callf(d, "__setitem__", NULL, "[s I]", "count", mp_value_get_int(v) - 1);
    mp_lock_release(lock);
    mp_value_free(v);
    return r < 0;
}

static int decrement_atomic(mp_value *args)
{
    mp_proxy *d;
    if (mp_value_unpack(args, "[h]", &mp_kind_proxy, &d) < 0)
        return 1;
    return mp_proxy_callf(d, "add", NULL, "[s i]", "count", -1) < 0;
}

static void run_all(mp_target_fn target, mp_value *args, int n)
{
    mp_process *p[20];
    for (int i = 0; i < n; i++) {
        mp_process_opts o = {.target = target, .args = args};
        p[i] = mp_process_new(&o);
        mp_process_start(p[i]);
    }
    for (int i = 0; i < n; i++) {
        mp_process_join(p[i], -1);
        mp_process_free(p[i]);
    }
    mp_value_free(args);
}

static void show(const char *label, mp_proxy *d)
{
    char *s = mp_proxy_repr(d);
    printf("%s %s\n", label, s ? s : mp_last_error());
    mp_free(s);
}

int main(void)
{
    mp_manager *m = mp_manager_new(NULL);
    if (!m) {
        fprintf(stderr, "manager: %s\n", mp_last_error());
        return 1;
    }
    mp_value *init = mp_value_pack("{s:s}", "name", "王乃卉");
    mp_proxy *m_dic = mp_manager_dict(m, init);
    mp_value_free(init);
    show("主进程>>>", m_dic);
    run_all(set_name, mp_value_pack("[h]", &mp_kind_proxy, m_dic), 1);
    show("主进程>>>", m_dic);
    mp_proxy_free(m_dic);

    mp_lock *m_lock = mp_lock_new();
    init = mp_value_pack("{s:i}", "count", 100);
    m_dic = mp_manager_dict(m, init);
    run_all(decrement, mp_value_pack("[h h]", &mp_kind_proxy, m_dic, &mp_kind_lock, m_lock), 20);
    show("主进程", m_dic);
    mp_proxy_free(m_dic);

    m_dic = mp_manager_dict(m, init); /* the same with d.add("count", -1): no lock needed */
    mp_value_free(init);
    run_all(decrement_atomic, mp_value_pack("[h]", &mp_kind_proxy, m_dic), 20);
    show("atomic add:", m_dic);
    mp_proxy_free(m_dic);
    mp_lock_free(m_lock);
    mp_manager_free(m);
    return 0;
}
