/* JoinableQueue: task_done and join.
 *
 * DESIGN
 * - `unfinished` lives in the journaled state (qstate) and changes under `lock`
 *   through mp__q_commit; join sleeps on join_seq through wait.c.
 */
#define _GNU_SOURCE
#include "queue/q.h"

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
    mp__q_commit(s, &n);
    uint32_t waiters = 0;
    if (n.unfinished == 0) {
        bump(&s->join_seq);
        waiters = s->join_waiters;
    }
    qunlock(q);
    wake(&s->join_seq, waiters, INT32_MAX);
    return 0;
}

int mp_queue_join(mp_queue *q, double timeout)
{
    if (!q)
        return mp__error(MP_EINVAL, "queue is NULL");
    struct qshared *s = q->s;
    if (!s->joinable)
        return mp__error(MP_ESTATE, "join on a queue that is not joinable");
    double deadline = mp__deadline(timeout);
    int code = mp__q_lock(q);
    if (code < 0)
        return code;
    while (s->st.unfinished > 0) {
        mp__q_stream_repair(s, false, false, false);
        if (s->st.unfinished == 0)
            break;
        code = timeout == 0 ? MP_ETIMEOUT : mp__q_wait(q, &s->join_seq, &s->join_waiters, deadline);
        if (code < 0) {
            qunlock(q);
            if (code == MP_ETIMEOUT)
                return mp__error(code, "%llu tasks still unfinished after %.3g s",
                                 (unsigned long long)s->st.unfinished, timeout);
            return code;
        }
    }
    qunlock(q);
    return 0;
}
