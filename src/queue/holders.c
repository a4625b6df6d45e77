/* JoinableQueue: which process holds each unfinished task, so that join can tell a task
 * that is still being worked on from one whose consumer died.
 *
 * DESIGN
 * - What is recorded: `holders`, a table of Q_HOLDERS slots in the queue's header page
 *   (shared memory, like everything else about the queue), each {pid, start time, count}:
 *   `count` tasks this process took with get and has not yet marked done. A get of a
 *   JoinableQueue moves the head word and increments the caller's slot in ONE journaled
 *   commit (journal.c), and task_done decrements `unfinished` and a slot in one commit too.
 *   So a consumer SIGKILLed at any instruction, inside get or between get and task_done,
 *   leaves either the item in the queue (not taken) or the item taken AND recorded as
 *   its own: never a task nobody is known to hold.
 * - Who a process is: its pid and its start time (clock ticks after boot, field 22 of
 *   /proc/PID/stat; internal/procid.h, shared with the Barrier). A pid alone is not enough: once the consumer is dead and reaped, the
 *   kernel may give its pid to an unrelated process, which would then look like the
 *   holder forever (join would hang, the bug this file exists to fix). A pidfd would be
 *   exact, but it cannot be kept where every joiner sees it: an fd belongs to one
 *   process, shared memory holds only numbers, and a joiner that opens a pidfd from the
 *   pid later faces the same reuse question. Pid + start time is what psutil and the
 *   kernel's own /proc use to name a process: a reused pid would need the same start
 *   tick (10 ms) as the dead holder, which pid allocation cycling through pid_max does
 *   not produce. A holder is dead when /proc/PID/stat is gone, shows a zombie ('Z'/'X':
 *   exited, not yet reaped) or shows another start time. Without /proc (start time 0)
 *   only the pid is compared (kill(pid, 0)). Processes in another pid namespace sharing
 *   the queue are not supported by this check (their pids mean nothing here).
 * - Who looks: join, at its start and after every wait slice (SLICE), under `lock`: a
 *   /proc read per holding process (a few microseconds each). Normal gets and task_done
 *   never read /proc: the caller's own identity is computed once per process and its slot
 *   index is remembered in the handle (a hint, checked against the slot's identity).
 * - Who gets the credit of a task_done: the caller's own slot when it holds a task (the
 *   normal case); otherwise a dead holder's (a process finishing a dead worker's task, or
 *   acknowledging its loss, lets join proceed); otherwise any holder's.
 * - Limits: Q_HOLDERS processes holding unfinished tasks at once are tracked; a get
 *   beyond that (every slot holds live tasks) is not attributed, and such a task is not
 *   detected if its consumer dies.
 */
#define _GNU_SOURCE
#include "queue/q.h"
#include "internal/procid.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef mp__procid ident;

static ident self(void) { return mp__procid_self(); }

static bool same(const qholder *h, ident id) { return h->pid == id.pid && h->start == id.start; }

static bool holder_dead(const qholder *h) { return mp__procid_dead(h->pid, h->start); }

/* The caller's slot (with its identity filled in), or Q_NO_SLOT if every slot is taken. */
static uint32_t own_slot(mp_queue *q, ident me, bool create)
{
    struct qshared *s = q->s;
    /* The hint: our slot last time, still ours, or free again (our tasks all done) */
    if (q->slot < Q_HOLDERS && (s->holders[q->slot].count ? same(&s->holders[q->slot], me)
                                                           : create))
        return q->slot;
    uint32_t free_slot = Q_NO_SLOT;
    for (uint32_t i = 0; i < Q_HOLDERS; i++) {
        if (!s->holders[i].count) {
            if (free_slot == Q_NO_SLOT)
                free_slot = i;
        } else if (same(&s->holders[i], me)) {
            return q->slot = i;
        }
    }
    return create ? (q->slot = free_slot) : Q_NO_SLOT;
}

void mp__q_commit_taken(mp_queue *q, const qstate *next, uint64_t headw, uint32_t n)
{
    struct qshared *s = q->s;
    ident me = self();
    uint32_t i = s->joinable ? own_slot(q, me, true) : Q_NO_SLOT;
    if (i == Q_NO_SLOT) {
        mp__q_commit_all(s, next, ld(&s->tailw), headw, Q_NO_SLOT, NULL);
        return;
    }
    qholder h = s->holders[i];
    if (!h.count)
        h = (qholder){.pid = me.pid, .start = me.start};
    h.count += n;
    mp__q_commit_all(s, next, ld(&s->tailw), headw, i, &h);
}

static uint32_t credited_slot(mp_queue *q)
{
    struct qshared *s = q->s;
    uint32_t i = own_slot(q, self(), false), any = Q_NO_SLOT;
    if (i != Q_NO_SLOT)
        return i;
    for (i = 0; i < Q_HOLDERS; i++) {
        if (!s->holders[i].count)
            continue;
        if (holder_dead(&s->holders[i]))
            return i;
        if (any == Q_NO_SLOT)
            any = i;
    }
    return any;
}

void mp__q_commit_done(mp_queue *q, const qstate *next)
{
    struct qshared *s = q->s;
    uint32_t i = credited_slot(q);
    if (i == Q_NO_SLOT) {
        mp__q_commit(s, next);
        return;
    }
    qholder h = s->holders[i];
    h.count--;
    mp__q_commit_all(s, next, ld(&s->tailw), ld(&s->headw), i, &h);
}

uint64_t mp__q_dead_tasks(mp_queue *q, bool forget, int *pid, unsigned *procs)
{
    struct qshared *s = q->s;
    uint64_t dead = 0;
    *procs = 0;
    for (uint32_t i = 0; i < Q_HOLDERS && s->st.unfinished > 0; i++) {
        qholder h = s->holders[i];
        if (!h.count || !holder_dead(&h))
            continue;
        uint64_t n = h.count < s->st.unfinished ? h.count : s->st.unfinished;
        dead += n;
        if (!(*procs)++)
            *pid = h.pid;
        if (forget) {
            qstate st = s->st;
            st.unfinished -= n;
            h.count = 0;
            mp__q_commit_all(s, &st, ld(&s->tailw), ld(&s->headw), i, &h);
        }
    }
    return dead < s->st.unfinished || forget ? dead : s->st.unfinished;
}
