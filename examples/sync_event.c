/* An Event: one process waits without a timeout, another with one. */
/* Event example in C: one process waits for the event without a timeout,
 * another with a 2 s timeout; the main process sets it after 3 s. Python prints:
 *
 *     main: waiting before calling Event.set()
 *     wait_for_event: starting
 *     wait_for_event_timeout: starting
 *     wait_for_event_timeout: e.is_set()-> False
 *     main: event is set
 *     wait_for_event: e.is_set()-> True
 */
#include <multiproc.h>

#include <stdio.h>
#include <unistd.h>

static mp_event *arg_event(mp_value *args)
{
    mp_event *e = NULL;
    mp_value_unpack(args, "[h]", &mp_kind_event, &e);
    return e;
}

static int wait_for_event(mp_value *args)
{
    mp_event *e = arg_event(args);
    printf("wait_for_event: starting\n");
    fflush(stdout);
    mp_event_wait(e, -1);
    printf("wait_for_event: e.is_set()-> %s\n", mp_event_is_set(e) ? "True" : "False");
    return 0;
}

static int wait_for_event_timeout(mp_value *args)
{
    mp_event *e = arg_event(args);
    printf("wait_for_event_timeout: starting\n");
    fflush(stdout);
    mp_event_wait(e, 2); /* MP_ETIMEOUT after 2 s: the Python original ignores it too */
    printf("wait_for_event_timeout: e.is_set()-> %s\n", mp_event_is_set(e) ? "True" : "False");
    return 0;
}

static mp_process *start(const char *name, mp_target_fn target, mp_event *e)
{
    mp_value *args = mp_value_pack("[h]", &mp_kind_event, e);
    mp_process_opts o = {.target = target, .args = args, .name = name};
    mp_process *p = mp_process_new(&o);
    mp_value_free(args);
    mp_process_start(p);
    return p;
}

int main(void)
{
    mp_event *e = mp_event_new();
    /* Python's children take a while to start, so main's line comes first there; we
     * print it first to get the Python original's order. */
    printf("main: waiting before calling Event.set()\n");
    fflush(stdout);
    mp_process *w1 = start("block", wait_for_event, e);
    usleep(100000);
    mp_process *w2 = start("nonblock", wait_for_event_timeout, e);
    sleep(3);
    mp_event_set(e);
    printf("main: event is set\n");
    fflush(stdout);
    mp_process_join(w1, -1);
    mp_process_join(w2, -1);
    mp_process_free(w1);
    mp_process_free(w2);
    mp_event_free(e);
    return 0;
}
