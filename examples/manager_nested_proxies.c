/* Proxies inside managed objects: a list holding another list; a Namespace. */
/* Manager example in C (the seeds' proxy objects): a.append(b) stores a proxy to b in
 * a; changes made through b show through a[0]. Python prints (addresses vary)
 *
 *     [<ListProxy object, typeid 'list' at 0x7f...>] []
 *     ['hello'] ['hello']
 *     Namespace(x=10, y='hello')
 *
 * (Global._z is an attribute of the proxy in Python, so it is not printed; here every
 * name starting with '_' is left out of the repr the same way.)
 */
#include <multiproc.h>

#include <stdio.h>

/* print(p, q): the referents' reprs (q may be NULL) */
static void print2(mp_proxy *p, mp_proxy *q)
{
    char *sp = mp_proxy_repr(p), *sq = q ? mp_proxy_repr(q) : NULL;
    printf("%s%s%s\n", sp ? sp : "?", q ? " " : "", q ? (sq ? sq : "?") : "");
    mp_free(sp);
    mp_free(sq);
}

int main(void)
{
    mp_manager *manager = mp_manager_new(NULL);
    if (!manager) {
        fprintf(stderr, "manager: %s\n", mp_last_error());
        return 1;
    }
    mp_proxy *a = mp_manager_list(manager, NULL), *b = mp_manager_list(manager, NULL);
    mp_proxy_callf(a, "append", NULL, "[h]", &mp_kind_proxy, b); /* a.append(b) */
    print2(a, b); /* print(a, b) */

    mp_proxy_callf(b, "append", NULL, "[s]", "hello"); /* b.append('hello') */
    mp_value *item = NULL;
    mp_proxy *a0 = NULL;
    mp_proxy_callf(a, "__getitem__", &item, "[i]", 0); /* a[0]: a proxy of our own */
    mp_value_unpack(item, "h", &mp_kind_proxy, &a0);
    print2(a0, b); /* print(a[0], b) */
    mp_value_free(item);

    mp_proxy *Global = mp_manager_namespace(manager);
    mp_proxy_callf(Global, "__setattr__", NULL, "[s i]", "x", 10);
    mp_proxy_callf(Global, "__setattr__", NULL, "[s s]", "y", "hello");
    mp_proxy_callf(Global, "__setattr__", NULL, "[s f]", "_z", 12.3);
    print2(Global, NULL); /* print(Global) */

    mp_proxy_free(Global);
    mp_proxy_free(b);
    mp_proxy_free(a);
    mp_manager_free(manager);
    return 0;
}
