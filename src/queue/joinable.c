/* JoinableQueue: task_done and join.
 *
 * DESIGN
 * - `unfinished` lives in the journaled state (qstate) and changes under `lock`
 *   through mp__q_commit*; join sleeps on join_seq through wait.c.
 * - A task taken by a process that is gone (holders.c) never completes: join notices at
 *   its start and after each wait slice, and returns MP_EWORKERDIED naming how many tasks
 *   died unfinished, or, when the queue was created with dead_tasks_done, counts them
 *   done and goes on waiting for the others.
 */
#define _GNU_SOURCE
#include "queue/q.h"

static void wake_joiners(struct qshared *s, uint32_t *waiters)
{
    bump(&s->join_seq);
    *waiters = s->join_waiters;
}

int mp_queue_task_done(mp_queue *q)
{
    if (!q)
        return mp__error(MP_EINVAL, "queue is NULL");
    struct qshared *s = q->s;
    if (!s->joinable)
        return mp__error(MP_ESTATE, "task_done on a queue that is not joinable");
    int code = mp__q_lock(q);
    if (code < 0)
        return code;
    if (s->st.unfinished == 0) {
        qunlock(q);
        return mp__error(MP_ESTATE, "task_done() called too many times");
    }
    qstate n = s->st;
    n.unfinished--;
    mp__q_commit_done(q, &n);
    uint32_t waiters = 0;
    if (n.unfinished == 0)
        wake_joiners(s, &waiters);
    qunlock(q);
    wake(&s->join_seq, waiters, INT32_MAX);
    return 0;
}

/* Tasks whose holder died: counted done (dead_tasks_done) or MP_EWORKERDIED. Under lock. */
static int check_dead(mp_queue *q, uint32_t *waiters)
{
    struct qshared *s = q->s;
    int pid = 0;
    unsigned procs = 0;
    uint64_t dead = mp__q_dead_tasks(q, s->dead_tasks_done, &pid, &procs);
    if (!dead)
        return 0;
    if (s->dead_tasks_done) {
        if (s->st.unfinished == 0)
            wake_joiners(s, waiters);
        return 0;
    }
    if (procs == 1)
        return mp__error(MP_EWORKERDIED,
                         "join: %llu task%s died unfinished: the process that took %s with get "
                         "(pid %d) exited before task_done",
                         (unsigned long long)dead, dead == 1 ? "" : "s",
                         dead == 1 ? "it" : "them", pid);
    return mp__error(MP_EWORKERDIED,
                     "join: %llu tasks died unfinished: the %u processes that took them with "
                     "get (pid %d, ...) exited before task_done",
                     (unsigned long long)dead, procs, pid);
}

int mp_queue_join(mp_queue *q, double timeout)
{
    if (!q)
        return mp__error(MP_EINVAL, "queue is NULL");
    struct qshared *s = q->s;
    if (!s->joinable)
        return mp__error(MP_ESTATE, "join on a queue that is not joinable");
    double deadline = mp__deadline(timeout);
    uint32_t waiters = 0;
    int code = mp__q_lock(q);
    if (code < 0)
        return code;
    while (s->st.unfinished > 0) {
        mp__q_stream_repair(s, false, false, false);
        if (s->st.unfinished > 0 && (code = check_dead(q, &waiters)) < 0)
            break;
        if (s->st.unfinished == 0)
            break;
        code = timeout == 0 ? MP_ETIMEOUT : mp__q_wait(q, &s->join_seq, &s->join_waiters, NULL, NULL, deadline, NULL, 0);
        if (code < 0) {
            if (code == MP_ETIMEOUT)
                code = mp__error(code, "%llu tasks still unfinished after %.3g s",
                                 (unsigned long long)s->st.unfinished, timeout);
            break;
        }
    }
    qunlock(q);
    wake(&s->join_seq, waiters, INT32_MAX);
    return code < 0 ? code : 0;
}
