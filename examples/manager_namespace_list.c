/* A list stored in a Namespace is a copy: appending to it changes nothing shared. */
/* Manager example in C (the seeds' "Modification of mutable values is NOT propagated"):
 * ns.my_list = []; the producer appends to ns.my_list, which appends to its own copy of
 * the list and never stores it back, so the consumer sees no change. Python prints
 *
 *     Before event: []
 *     After event : []
 *
 * To share a list, store it again (ns.my_list = the_list) or use a managed list.
 */
#include <multiproc.h>

#include <stdio.h>

static int producer(mp_value *args)
{
    mp_proxy *ns;
    mp_event *event;
    if (mp_value_unpack(args, "[h h]", &mp_kind_proxy, &ns, &mp_kind_event, &event) < 0)
        return 1;
    mp_value *my_list = NULL; /* ns.my_list: a copy of the value */
    if (mp_proxy_callf(ns, "__getattr__", &my_list, "[s]", "my_list") < 0)
        return 1;
    mp_value_list_append(my_list, mp_value_str("This is the value")); /* DOES NOT UPDATE */
    mp_value_free(my_list);
    return mp_event_set(event) < 0;
}

static void print_list(mp_proxy *ns, const char *label)
{
    mp_value *v = NULL;
    mp_proxy_callf(ns, "__getattr__", &v, "[s]", "my_list");
    char *s = mp_value_repr(v);
    printf("%s %s\n", label, s);
    fflush(stdout);
    mp_free(s);
    mp_value_free(v);
}

static int consumer(mp_value *args)
{
    mp_proxy *ns;
    mp_event *event;
    if (mp_value_unpack(args, "[h h]", &mp_kind_proxy, &ns, &mp_kind_event, &event) < 0)
        return 1;
    print_list(ns, "Before event:");
    mp_event_wait(event, -1);
    print_list(ns, "After event :");
    return 0;
}

int main(void)
{
    mp_manager *mgr = mp_manager_new(NULL);
    mp_proxy *namespace = mgr ? mp_manager_namespace(mgr) : NULL;
    if (!namespace) {
        fprintf(stderr, "manager: %s\n", mp_last_error());
        return 1;
    }
    mp_proxy_callf(namespace, "__setattr__", NULL, "[s []]", "my_list"); /* ns.my_list = [] */
    mp_event *event = mp_event_new();
    mp_value *args = mp_value_pack("[h h]", &mp_kind_proxy, namespace, &mp_kind_event, event);
    mp_process_opts po = {.target = producer, .args = args}, co = {.target = consumer, .args = args};
    mp_process *p = mp_process_new(&po), *c = mp_process_new(&co);
    mp_value_free(args);
    mp_process_start(c);
    mp_process_start(p);
    mp_process_join(c, -1);
    mp_process_join(p, -1);
    mp_process_free(p);
    mp_process_free(c);
    mp_event_free(event);
    mp_proxy_free(namespace);
    mp_manager_free(mgr);
    return 0;
}
