/* A managed Namespace shared by a producer and a consumer, with an Event between them. */
/* Manager example in C (the seeds' "Shared Namespace"): the consumer reads ns.value
 * before the producer has set it, then waits for the event. Python prints
 *
 *     Before event, error: 'Namespace' object has no attribute 'value'
 *     After event: This is the value
 *
 * The Python original starts the consumer first and relies on it reading before the
 * producer writes; here the consumer sets `ready` after its first read, and the producer
 * starts after that, so the output is always the seed's.
 */
#include <multiproc.h>

#include <stdio.h>

static int producer(mp_value *args)
{
    mp_proxy *ns;
    mp_event *event;
    if (mp_value_unpack(args, "[h h]", &mp_kind_proxy, &ns, &mp_kind_event, &event) < 0)
        return 1;
    /* ns.value = 'This is the value' */
    if (mp_proxy_callf(ns, "__setattr__", NULL, "[s s]", "value", "This is the value") < 0)
        return 1;
    return mp_event_set(event) < 0;
}

/* print(label, ns.value), or the error Python's getattr raises. */
static void print_value(mp_proxy *ns, const char *label)
{
    mp_value *v = NULL;
    if (mp_proxy_callf(ns, "__getattr__", &v, "[s]", "value") < 0) {
        /* the text of the AttributeError: what comes after "MP_ENOTFOUND: ...: " */
        const char *msg = mp_last_error(), *q = msg;
        for (const char *s = msg; *s; s++)
            if (s[0] == ':' && s[1] == ' ')
                q = s + 2;
        printf("%s, error: %s\n", label, q);
    } else {
        printf("%s: %s\n", label, mp_value_get_str(v, NULL));
    }
    fflush(stdout);
    mp_value_free(v);
}

static int consumer(mp_value *args)
{
    mp_proxy *ns;
    mp_event *event, *ready;
    if (mp_value_unpack(args, "[h h h]", &mp_kind_proxy, &ns, &mp_kind_event, &event,
                        &mp_kind_event, &ready) < 0)
        return 1;
    print_value(ns, "Before event");
    mp_event_set(ready);
    mp_event_wait(event, -1);
    print_value(ns, "After event");
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
    mp_event *event = mp_event_new(), *ready = mp_event_new();
    mp_value *pa = mp_value_pack("[h h]", &mp_kind_proxy, namespace, &mp_kind_event, event);
    mp_value *ca = mp_value_pack("[h h h]", &mp_kind_proxy, namespace, &mp_kind_event, event,
                                 &mp_kind_event, ready);
    mp_process_opts po = {.target = producer, .args = pa}, co = {.target = consumer, .args = ca};
    mp_process *p = mp_process_new(&po), *c = mp_process_new(&co);
    mp_value_free(pa);
    mp_value_free(ca);

    mp_process_start(c);
    mp_event_wait(ready, -1);
    mp_process_start(p);
    mp_process_join(c, -1);
    mp_process_join(p, -1);

    mp_process_free(p);
    mp_process_free(c);
    mp_event_free(ready);
    mp_event_free(event);
    mp_proxy_free(namespace);
    mp_manager_free(mgr);
    return 0;
}
