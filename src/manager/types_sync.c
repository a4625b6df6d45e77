/* Managed synchronisation types and queues: Lock, RLock, Semaphore, BoundedSemaphore,
 * Condition, Event, Barrier, Queue, JoinableQueue.
 *
 * DESIGN: methods run with the server mutex held. A blocking method loops on its
 * condition and parks in mp__mgr_wait (the object's condvar, which releases the mutex),
 * so other connections keep being served; every state change broadcasts the condvar.
 * Lock owners are connection ids: the thread serving a connection is the "thread" that
 * holds a lock, as in Python's server, and a connection that ends releases what it held
 * (conn_gone). Condition and Barrier waiters are FIFO lists of stack records that the
 * notifier (or the last arrival) marks, so a timed-out waiter never eats a notify. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/value.h"
#include "manager/mgr.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int result_bool(bool b, mp_value **res)
{
    *res = mp_value_bool(b);
    return *res ? 0 : mp_last_error_code();
}

static int result_int(int64_t i, mp_value **res)
{
    *res = mp_value_int(i);
    return *res ? 0 : mp_last_error_code();
}

/* blocking, timeout -> a deadline (0 = now for a non-blocking call). */
static int acquire_deadline(const mp_value *a, const char *method, double *deadline)
{
    if (mp__mgr_nargs(a, 0, 2, method) < 0)
        return mp_last_error_code();
    bool blocking = mp__mgr_bool_arg(a, 0, true);
    double timeout;
    if (mp__mgr_timeout_arg(a, 1, &timeout, method) < 0)
        return mp_last_error_code();
    const mp_value *t = mp__mgr_arg(a, 1);
    if (!blocking && t && mp_value_type(t) != MP_NIL && mp_value_get_float(t) != -1)
        return mp__error(MP_EINVAL, "can't specify a timeout for a non-blocking call");
    *deadline = blocking ? mp__deadline(timeout) : mp__deadline(0);
    return 0;
}

/* Wait until *flag is false (a lock free) or pred, honouring the deadline: 1 ready,
 * 0 timed out, or an error (client gone, server stopping). */
static int wait_until_free(mgr_conn *c, mgr_obj *o, const int64_t *busy, double deadline)
{
    while (*busy) {
        if (deadline >= 0 && mp__now() >= deadline)
            return 0;
        int r = mp__mgr_wait(c, o, deadline);
        if (r == MP_ETIMEOUT)
            return *busy ? 0 : 1;
        if (r < 0)
            return r;
    }
    return 1;
}

/* ---- Lock / RLock ----------------------------------------------------------------------- */

static int lock_init(mgr_obj *o, const mp_value *args)
{
    (void)o;
    return mp__mgr_nargs(args, 0, 0, "Lock");
}

static void lock_gone(mgr_obj *o, uint64_t conn)
{
    if (o->count && o->owner == conn) {
        o->count = 0;
        o->owner = 0;
        o->depth = 0;
        mp__mgr_wake(o);
    }
}

static int do_acquire(mgr_conn *c, mgr_obj *o, const mp_value *a, bool recursive,
                      mp_value **res)
{
    double deadline;
    if (acquire_deadline(a, "acquire", &deadline) < 0)
        return mp_last_error_code();
    uint64_t me = mp__mgr_conn_id(c);
    if (recursive && o->count && o->owner == me) {
        o->depth++;
        return result_bool(true, res);
    }
    int r = wait_until_free(c, o, &o->count, deadline);
    if (r < 0)
        return r;
    if (r == 1) {
        o->count = 1;
        o->owner = me;
        o->depth = 1;
    }
    return result_bool(r == 1, res);
}

static int lk_acquire(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    return do_acquire(c, o, a, false, res);
}

static int lk_release(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a, (void)res;
    if (!o->count)
        return mp__error(MP_ESTATE, "release unlocked lock");
    o->count = 0;
    o->owner = 0;
    o->depth = 0;
    mp__mgr_wake(o);
    return 0;
}

static int lk_locked(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return result_bool(o->count != 0, res);
}

static char *lock_repr(mgr_obj *o)
{
    return mp__strdup_printf("<%s _thread.lock object at %p>",
                                 o->count ? "locked" : "unlocked", (void *)o);
}

static const mgr_method lock_methods[] = {
    {"acquire", lk_acquire}, {"release", lk_release}, {"locked", lk_locked},
    {"__enter__", lk_acquire}, {"__exit__", lk_release},
};

const mgr_type mp__mgr_lock_type = {"Lock", lock_init, NULL, lock_repr, lock_gone,
                                    lock_methods, MP__ARRAY_LEN(lock_methods)};

static int rl_acquire(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    return do_acquire(c, o, a, true, res);
}

static int rl_release(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)a, (void)res;
    if (!o->count || o->owner != mp__mgr_conn_id(c))
        return mp__error(MP_ENOTOWNER, "cannot release un-acquired lock");
    if (--o->depth == 0) {
        o->count = 0;
        o->owner = 0;
        mp__mgr_wake(o);
    }
    return 0;
}

static char *rlock_repr(mgr_obj *o)
{
    return mp__strdup_printf("<%s _thread.RLock object owner=%llu count=%lld at %p>",
                                 o->count ? "locked" : "unlocked",
                                 (unsigned long long)o->owner, (long long)o->depth, (void *)o);
}

static int rlock_init(mgr_obj *o, const mp_value *args)
{
    (void)o;
    return mp__mgr_nargs(args, 0, 0, "RLock");
}

static const mgr_method rlock_methods[] = {
    {"acquire", rl_acquire}, {"release", rl_release},
    {"__enter__", rl_acquire}, {"__exit__", rl_release},
};

const mgr_type mp__mgr_rlock_type = {"RLock", rlock_init, NULL, rlock_repr, lock_gone,
                                     rlock_methods, MP__ARRAY_LEN(rlock_methods)};

/* ---- Semaphore / BoundedSemaphore --------------------------------------------------------- */

static int sem_init_common(mgr_obj *o, const mp_value *args, const char *name)
{
    if (mp__mgr_nargs(args, 0, 1, name) < 0)
        return mp_last_error_code();
    const mp_value *v = mp__mgr_arg(args, 0);
    if (v && mp_value_type(v) != MP_INT)
        return mp__error(MP_ETYPE, "%s(): value must be an integer", name);
    int64_t n = v ? mp_value_get_int(v) : 1;
    if (n < 0)
        return mp__error(MP_EINVAL, "semaphore initial value must be >= 0");
    o->count = n;
    o->limit = n;
    return 0;
}

static int sem_init(mgr_obj *o, const mp_value *args)
{
    o->limit = -1;
    int r = sem_init_common(o, args, "Semaphore");
    o->limit = -1; /* unbounded */
    return r;
}

static int bsem_init(mgr_obj *o, const mp_value *args)
{
    return sem_init_common(o, args, "BoundedSemaphore");
}

static int sem_acquire(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    double deadline;
    if (acquire_deadline(a, "acquire", &deadline) < 0)
        return mp_last_error_code();
    int64_t empty = o->count == 0;
    while (o->count == 0) {
        if (deadline >= 0 && mp__now() >= deadline)
            return result_bool(false, res);
        int r = mp__mgr_wait(c, o, deadline);
        if (r < 0 && r != MP_ETIMEOUT)
            return r;
    }
    (void)empty;
    o->count--;
    return result_bool(true, res);
}

static int sem_release(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)res;
    if (mp__mgr_nargs(a, 0, 1, "release") < 0)
        return mp_last_error_code();
    const mp_value *nv = mp__mgr_arg(a, 0);
    int64_t n = nv ? mp_value_get_int(nv) : 1;
    if (n < 1)
        return mp__error(MP_EINVAL, "n must be one or more");
    if (o->limit >= 0 && o->count + n > o->limit)
        return mp__error(MP_EINVAL, "Semaphore released too many times");
    o->count += n;
    mp__mgr_wake(o);
    return 0;
}

static int sem_value(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return result_int(o->count, res);
}

static char *sem_repr(mgr_obj *o)
{
    if (o->limit >= 0)
        return mp__strdup_printf("<threading.BoundedSemaphore at %p: value=%lld/%lld>",
                                     (void *)o, (long long)o->count, (long long)o->limit);
    return mp__strdup_printf("<threading.Semaphore at %p: value=%lld>", (void *)o,
                                 (long long)o->count);
}

static const mgr_method sem_methods[] = {
    {"acquire", sem_acquire}, {"release", sem_release}, {"get_value", sem_value},
    {"__enter__", sem_acquire}, {"__exit__", sem_release},
};

const mgr_type mp__mgr_sem_type = {"Semaphore", sem_init, NULL, sem_repr, NULL, sem_methods,
                                   MP__ARRAY_LEN(sem_methods)};
const mgr_type mp__mgr_bsem_type = {"BoundedSemaphore", bsem_init, NULL, sem_repr, NULL,
                                    sem_methods, MP__ARRAY_LEN(sem_methods)};

/* ---- waiter lists ------------------------------------------------------------------------- */

static void waiter_push(mgr_obj *o, mgr_waiter *w)
{
    w->next = NULL;
    w->outcome = 0;
    mgr_waiter **pp = &o->waiters;
    while (*pp)
        pp = &(*pp)->next;
    *pp = w;
}

static void waiter_unlink(mgr_obj *o, mgr_waiter *w)
{
    for (mgr_waiter **pp = &o->waiters; *pp; pp = &(*pp)->next)
        if (*pp == w) {
            *pp = w->next;
            return;
        }
}

/* Mark up to n waiters (n < 0: all) with outcome and drop them from the list. */
static void waiters_settle(mgr_obj *o, long n, int outcome)
{
    while (o->waiters && n != 0) {
        mgr_waiter *w = o->waiters;
        o->waiters = w->next;
        w->outcome = outcome;
        if (n > 0)
            n--;
    }
    mp__mgr_wake(o);
}

/* ---- Condition ---------------------------------------------------------------------------- */

static int cond_init(mgr_obj *o, const mp_value *args)
{
    (void)o;
    return mp__mgr_nargs(args, 0, 0, "Condition");
}

static int cond_wait(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    double timeout;
    if (mp__mgr_nargs(a, 0, 1, "wait") < 0 || mp__mgr_timeout_arg(a, 0, &timeout, "wait") < 0)
        return mp_last_error_code();
    uint64_t me = mp__mgr_conn_id(c);
    if (!o->count || o->owner != me)
        return mp__error(MP_ENOTOWNER, "cannot wait on un-acquired lock");
    int64_t depth = o->depth;
    o->count = 0;
    o->owner = 0;
    o->depth = 0;
    mgr_waiter w;
    waiter_push(o, &w);
    mp__mgr_wake(o); /* the lock is free for others */
    double deadline = mp__deadline(timeout);
    int r = 0;
    while (w.outcome == 0) {
        r = mp__mgr_wait(c, o, deadline);
        if (r < 0)
            break;
    }
    if (w.outcome == 0)
        waiter_unlink(o, &w);
    if (r < 0 && r != MP_ETIMEOUT)
        return r; /* the client or the server is going away: don't take the lock back */
    r = wait_until_free(c, o, &o->count, -1);
    if (r < 0)
        return r;
    o->count = 1;
    o->owner = me;
    o->depth = depth;
    return result_bool(w.outcome == 1, res);
}

static int cond_notify_n(mgr_conn *c, mgr_obj *o, long n)
{
    if (!o->count || o->owner != mp__mgr_conn_id(c))
        return mp__error(MP_ENOTOWNER, "cannot notify on un-acquired lock");
    waiters_settle(o, n, 1);
    return 0;
}

static int cond_notify(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)res;
    if (mp__mgr_nargs(a, 0, 1, "notify") < 0)
        return mp_last_error_code();
    const mp_value *nv = mp__mgr_arg(a, 0);
    int64_t n = nv ? mp_value_get_int(nv) : 1;
    return cond_notify_n(c, o, n < 0 ? 0 : (long)n);
}

static int cond_notify_all(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)a, (void)res;
    return cond_notify_n(c, o, -1);
}

static char *cond_repr(mgr_obj *o)
{
    long n = 0;
    for (mgr_waiter *w = o->waiters; w; w = w->next)
        n++;
    char *l = rlock_repr(o);
    char *s = mp__strdup_printf("<Condition(%s, %ld)>", l ? l : "?", n);
    free(l);
    return s;
}

static const mgr_method cond_methods[] = {
    {"acquire", rl_acquire},   {"release", rl_release},         {"wait", cond_wait},
    {"notify", cond_notify},   {"notify_all", cond_notify_all}, {"__enter__", rl_acquire},
    {"__exit__", rl_release},
};

const mgr_type mp__mgr_cond_type = {"Condition", cond_init, NULL, cond_repr, lock_gone,
                                    cond_methods, MP__ARRAY_LEN(cond_methods)};

/* ---- Event -------------------------------------------------------------------------------- */

static int event_init(mgr_obj *o, const mp_value *args)
{
    (void)o;
    return mp__mgr_nargs(args, 0, 0, "Event");
}

static int ev_set(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a, (void)res;
    o->count = 1;
    mp__mgr_wake(o);
    return 0;
}

static int ev_clear(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a, (void)res;
    o->count = 0;
    return 0;
}

static int ev_is_set(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return result_bool(o->count != 0, res);
}

static int ev_wait(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    double timeout;
    if (mp__mgr_nargs(a, 0, 1, "wait") < 0 || mp__mgr_timeout_arg(a, 0, &timeout, "wait") < 0)
        return mp_last_error_code();
    double deadline = mp__deadline(timeout);
    while (!o->count) {
        if (deadline >= 0 && mp__now() >= deadline)
            break;
        int r = mp__mgr_wait(c, o, deadline);
        if (r < 0 && r != MP_ETIMEOUT)
            return r;
    }
    return result_bool(o->count != 0, res);
}

static char *event_repr(mgr_obj *o)
{
    return mp__strdup_printf("<threading.Event at %p: %s>", (void *)o,
                                 o->count ? "set" : "unset");
}

static const mgr_method event_methods[] = {
    {"set", ev_set}, {"clear", ev_clear}, {"is_set", ev_is_set}, {"wait", ev_wait},
};

const mgr_type mp__mgr_event_type = {"Event", event_init, NULL, event_repr, NULL,
                                     event_methods, MP__ARRAY_LEN(event_methods)};

/* ---- Barrier ------------------------------------------------------------------------------ */

static int barrier_init(mgr_obj *o, const mp_value *args)
{
    if (mp__mgr_nargs(args, 1, 3, "Barrier") < 0)
        return mp_last_error_code();
    const mp_value *p = mp__mgr_arg(args, 0);
    if (mp_value_type(p) != MP_INT || mp_value_get_int(p) < 1)
        return mp__error(MP_EINVAL, "parties must be > 0");
    const mp_value *action = mp__mgr_arg(args, 1);
    if (action && mp_value_type(action) != MP_NIL)
        return mp__error(MP_EUNSUPPORTED, "Barrier(): an action is code and cannot be sent "
                                          "to a manager");
    o->limit = mp_value_get_int(p);
    return mp__mgr_timeout_arg(args, 2, &o->timeout, "Barrier");
}

static void barrier_break(mgr_obj *o, bool broken)
{
    o->broken = broken;
    o->count = 0;
    waiters_settle(o, -1, -1);
}

static int br_wait(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    double timeout;
    if (mp__mgr_nargs(a, 0, 1, "wait") < 0 || mp__mgr_timeout_arg(a, 0, &timeout, "wait") < 0)
        return mp_last_error_code();
    const mp_value *t = mp__mgr_arg(a, 0);
    if (!t || mp_value_type(t) == MP_NIL)
        timeout = o->timeout;
    if (o->broken)
        return mp__error(MP_EBROKEN, "the barrier is broken");
    int64_t index = o->count++;
    if (o->count == o->limit) {
        o->count = 0;
        waiters_settle(o, -1, 1);
        return result_int(index, res);
    }
    mgr_waiter w;
    waiter_push(o, &w);
    double deadline = mp__deadline(timeout);
    while (w.outcome == 0) {
        int r = mp__mgr_wait(c, o, deadline);
        if (r == MP_ETIMEOUT && w.outcome == 0) {
            barrier_break(o, true); /* as Python: a timeout breaks the barrier for all */
            break;
        }
        if (r < 0 && r != MP_ETIMEOUT && w.outcome == 0) {
            waiter_unlink(o, &w);
            o->count--;
            return r;
        }
    }
    if (w.outcome != 1)
        return mp__error(MP_EBROKEN, "the barrier is broken");
    return result_int(index, res);
}

static int br_reset(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a, (void)res;
    barrier_break(o, false);
    return 0;
}

static int br_abort(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a, (void)res;
    barrier_break(o, true);
    return 0;
}

static int br_parties(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return result_int(o->limit, res);
}

static int br_n_waiting(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return result_int(o->count, res);
}

static int br_broken(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return result_bool(o->broken, res);
}

static char *barrier_repr(mgr_obj *o)
{
    if (o->broken)
        return mp__strdup_printf("<threading.Barrier at %p: broken>", (void *)o);
    return mp__strdup_printf("<threading.Barrier at %p: waiters=%lld/%lld>", (void *)o,
                                 (long long)o->count, (long long)o->limit);
}

static const mgr_method barrier_methods[] = {
    {"wait", br_wait},       {"reset", br_reset},         {"abort", br_abort},
    {"parties", br_parties}, {"n_waiting", br_n_waiting}, {"broken", br_broken},
};

const mgr_type mp__mgr_barrier_type = {"Barrier", barrier_init, NULL, barrier_repr, NULL,
                                       barrier_methods, MP__ARRAY_LEN(barrier_methods)};

/* ---- Queue / JoinableQueue ---------------------------------------------------------------- */

static int queue_init(mgr_obj *o, const mp_value *args)
{
    if (mp__mgr_nargs(args, 0, 1, "Queue") < 0)
        return mp_last_error_code();
    const mp_value *m = mp__mgr_arg(args, 0);
    if (m && mp_value_type(m) != MP_INT && mp_value_type(m) != MP_NIL)
        return mp__error(MP_ETYPE, "Queue(): maxsize must be an integer");
    o->limit = m ? mp_value_get_int(m) : 0;
    o->v = mp_value_list();
    return o->v ? 0 : mp_last_error_code();
}

static bool q_full(const mgr_obj *o)
{
    return o->limit > 0 && (int64_t)mp_value_len(o->v) >= o->limit;
}

/* Take argument 0 out of the request (see types_data.c). */
static mp_value *take_first(const mp_value *args)
{
    mp_value *nil = mp_value_nil();
    if (!nil)
        return NULL;
    mp_value *l = (mp_value *)args;
    mp_value *v = l->u.list.items[0];
    l->u.list.items[0] = nil;
    return v;
}

static int q_put_common(mgr_conn *c, mgr_obj *o, const mp_value *a, bool block, double timeout)
{
    double deadline = block ? mp__deadline(timeout) : mp__deadline(0);
    while (q_full(o)) {
        if (deadline >= 0 && mp__now() >= deadline)
            return mp__error(MP_EFULL, "queue is full");
        int r = mp__mgr_wait(c, o, deadline);
        if (r < 0 && r != MP_ETIMEOUT)
            return r;
    }
    int r = mp_value_list_append(o->v, take_first(a));
    if (r < 0)
        return r;
    o->count++; /* unfinished tasks */
    mp__mgr_wake(o);
    return 0;
}

static int q_put(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)res;
    double timeout;
    if (mp__mgr_nargs(a, 1, 3, "put") < 0 || mp__mgr_timeout_arg(a, 2, &timeout, "put") < 0)
        return mp_last_error_code();
    return q_put_common(c, o, a, mp__mgr_bool_arg(a, 1, true), timeout);
}

static int q_put_nowait(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)res;
    if (mp__mgr_nargs(a, 1, 1, "put_nowait") < 0)
        return mp_last_error_code();
    return q_put_common(c, o, a, false, 0);
}

static int q_get_common(mgr_conn *c, mgr_obj *o, bool block, double timeout, mp_value **res)
{
    double deadline = block ? mp__deadline(timeout) : mp__deadline(0);
    while (mp_value_len(o->v) == 0) {
        if (deadline >= 0 && mp__now() >= deadline)
            return block ? mp__error(MP_EEMPTY, "queue still empty after %.3g s", timeout)
                         : mp__error(MP_EEMPTY, "no item to take without waiting");
        int r = mp__mgr_wait(c, o, deadline);
        if (r < 0 && r != MP_ETIMEOUT)
            return r;
    }
    mp_value *l = o->v;
    *res = l->u.list.items[0];
    memmove(l->u.list.items, l->u.list.items + 1, (l->u.list.len - 1) * sizeof(mp_value *));
    l->u.list.len--;
    mp__mgr_wake(o);
    return 0;
}

static int q_get(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    double timeout;
    if (mp__mgr_nargs(a, 0, 2, "get") < 0 || mp__mgr_timeout_arg(a, 1, &timeout, "get") < 0)
        return mp_last_error_code();
    return q_get_common(c, o, mp__mgr_bool_arg(a, 0, true), timeout, res);
}

static int q_get_nowait(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    if (mp__mgr_nargs(a, 0, 0, "get_nowait") < 0)
        return mp_last_error_code();
    return q_get_common(c, o, false, 0, res);
}

static int q_qsize(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return result_int((int64_t)mp_value_len(o->v), res);
}

static int q_empty(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return result_bool(mp_value_len(o->v) == 0, res);
}

static int q_full_m(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a;
    return result_bool(q_full(o), res);
}

static int q_task_done(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)c, (void)a, (void)res;
    if (o->count <= 0)
        return mp__error(MP_EINVAL, "task_done() called too many times");
    if (--o->count == 0)
        mp__mgr_wake(o);
    return 0;
}

static int q_join(mgr_conn *c, mgr_obj *o, const mp_value *a, mp_value **res)
{
    (void)a, (void)res;
    while (o->count > 0) {
        int r = mp__mgr_wait(c, o, -1);
        if (r < 0)
            return r;
    }
    return 0;
}

static char *queue_repr(mgr_obj *o)
{
    return mp__strdup_printf("<queue.Queue object at %p>", (void *)o);
}

static const mgr_method queue_methods[] = {
    {"put", q_put},     {"put_nowait", q_put_nowait}, {"get", q_get},
    {"get_nowait", q_get_nowait}, {"qsize", q_qsize}, {"empty", q_empty},
    {"full", q_full_m}, {"task_done", q_task_done},   {"join", q_join},
};

const mgr_type mp__mgr_queue_type = {"Queue", queue_init, NULL, queue_repr, NULL,
                                     queue_methods, MP__ARRAY_LEN(queue_methods)};
const mgr_type mp__mgr_jqueue_type = {"JoinableQueue", queue_init, NULL, queue_repr, NULL,
                                      queue_methods, MP__ARRAY_LEN(queue_methods)};

/* ---- the table ---------------------------------------------------------------------------- */

extern const mgr_type mp__mgr_dict_type, mp__mgr_list_type, mp__mgr_namespace_type,
    mp__mgr_value_type, mp__mgr_array_type;

const mgr_type *const mp__mgr_builtin_types[] = {
    &mp__mgr_dict_type,  &mp__mgr_list_type,   &mp__mgr_namespace_type, &mp__mgr_value_type,
    &mp__mgr_array_type, &mp__mgr_queue_type,  &mp__mgr_jqueue_type,    &mp__mgr_lock_type,
    &mp__mgr_rlock_type, &mp__mgr_sem_type,    &mp__mgr_bsem_type,      &mp__mgr_cond_type,
    &mp__mgr_event_type, &mp__mgr_barrier_type,
};
const size_t mp__mgr_builtin_count = MP__ARRAY_LEN(mp__mgr_builtin_types);
