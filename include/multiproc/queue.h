/**
 * @file queue.h
 * @brief Process-shared FIFO queues: Queue, SimpleQueue, JoinableQueue.
 *
 * Python mapping (multiprocessing):
 *   - `Queue(maxsize)`            -> mp_queue_new(&(mp_queue_opts){.maxsize = n})
 *   - `SimpleQueue()`             -> mp_simple_queue_new() (the same queue, unbounded)
 *   - `JoinableQueue(maxsize)`    -> mp_joinable_queue_new(opts); task_done / join
 *   - `put(obj, block, timeout)`  -> mp_queue_put(q, v, timeout) (timeout < 0: block forever,
 *                                    0: put_nowait); raw bytes: mp_queue_put_bytes
 *   - `get(block, timeout)`       -> mp_queue_get / mp_queue_get_bytes; mp_queue_get_into
 *                                    decodes into a reused value (no allocation per item)
 *   - faster-fifo `put_many` / `get_many` -> mp_queue_put_many / mp_queue_get_many (one lock
 *                                    hold per batch; a batch is put all or nothing)
 *   - queue.Full / queue.Empty    -> MP_EFULL / MP_EEMPTY (also when a timeout expires)
 *   - `empty()`, `full()`, `qsize()`, `close()` (per handle: later calls are MP_ECLOSED)
 *   - pickling -> MessagePack (mp_value); values holding handles cannot be queued.
 *
 * How it differs (pitfalls fixed): there is no feeder thread and no pipe. Items live in a
 * ring buffer in shared memory (a memfd) guarded by a robust process-shared mutex, with
 * futex-based blocking. So a process that put items may exit at once and the items stay
 * readable (Python's documented join-before-get deadlock does not happen for items that
 * fit the ring), qsize() is exact, and a producer or consumer killed with SIGKILL in the
 * middle of put or get never wedges the others nor delivers a torn item: an item is
 * either wholly in the queue or wholly gone with the process that took it.
 * An item bigger than the ring (opts.capacity, default 4 MiB: items up to 4 MiB - 16
 * bytes are ring records) is streamed through it to one consumer: that put returns once a
 * get has taken the whole item. (The default was 8 MiB before Dec 2026; a smaller ring
 * costs fewer page faults and cache misses per item. Set capacity for bigger items that
 * must stay in the queue after their producer's put returns.)
 * An unbounded queue (maxsize 0) still blocks put when the ring's bytes are full.
 *
 * Thread safety: every call is safe from any thread of any process holding the queue.
 * Fork behaviour: the queue is shared memory; a forked child uses the parent's handle.
 * A queue can travel to another process inside a value, under every start method
 * (`mp_value_pack("[h]", &mp_kind_queue, q)`, `mp_value_unpack(args, "[h]", &mp_kind_queue,
 * &q)`): the child gets its own handle to the same queue.
 */
#ifndef MULTIPROC_QUEUE_H
#define MULTIPROC_QUEUE_H

#include <stdbool.h>
#include <stddef.h>

#include "multiproc/value.h"

#include "multiproc/export.h"

#ifdef __cplusplus
extern "C" {
#endif
MP_API_BEGIN

/** A process-shared FIFO of values (Python's Queue, SimpleQueue, JoinableQueue). */
typedef struct mp_queue mp_queue;

/** Options; all-zero means defaults. */
typedef struct mp_queue_opts {
    size_t maxsize;  /**< most items at once; 0: unlimited (bounded only by capacity) */
    size_t capacity; /**< ring bytes in shared memory; 0: 4 MiB (rounded up to a power of 2,
                          at most 1 TiB; a ring over 8 GiB holds at most 2^(63 - log2(capacity))
                          items at once, a put waits beyond that) */
    bool joinable;   /**< enable task_done / join (JoinableQueue) */
    /** JoinableQueue: when a process that took tasks with get exits (or is killed) before
     *  marking them done, join counts those tasks done instead of returning
     *  MP_EWORKERDIED (see mp_queue_join). */
    bool dead_tasks_done;
} mp_queue_opts;

/** A new queue (free with mp_queue_free). NULL on error (mp_last_error). */
mp_queue *mp_queue_new(const mp_queue_opts *opts);
/** Python's SimpleQueue: an unbounded queue with default capacity. */
mp_queue *mp_simple_queue_new(void);
/** Python's JoinableQueue: like mp_queue_new with opts->joinable forced on. */
mp_queue *mp_joinable_queue_new(const mp_queue_opts *opts);

/**
 * Put @p len bytes (copied) as one item. Waits up to @p timeout seconds for room (negative:
 * forever; 0: do not wait). Errors: MP_EFULL (no room in time), MP_ECLOSED (this handle was
 * closed), MP_EINTERRUPTED, MP_EINVAL.
 */
int mp_queue_put_bytes(mp_queue *q, const void *buf, size_t len, double timeout);
/** Put a value (encoded as MessagePack; a value holding handles is MP_EUNSUPPORTED). */
int mp_queue_put(mp_queue *q, const mp_value *v, double timeout);
/** put without waiting: MP_EFULL when there is no room now. */
int mp_queue_put_nowait(mp_queue *q, const mp_value *v);

/**
 * Take the oldest item: *buf (mp_free; non-NULL even for 0 bytes) and *len. Waits up to
 * @p timeout (negative: forever; 0: no wait). A value item gives its MessagePack bytes.
 * Errors: MP_EEMPTY (nothing in time), MP_ECLOSED, MP_EINTERRUPTED.
 */
int mp_queue_get_bytes(mp_queue *q, void **buf, size_t *len, double timeout);
/**
 * Take the oldest item into the caller's buffer (@p bufsize bytes): no allocation. *len
 * receives its size. If the item does not fit, returns MP_ETOOSHORT with *len = its size and
 * the item stays in the queue (retry with a larger buffer). A value item gives its
 * MessagePack bytes (mp_value_decode them). Waits as mp_queue_get_bytes.
 * Python: like Connection.recv_bytes_into. Errors: MP_EEMPTY, MP_ETOOSHORT, MP_EINVAL (NULL
 * len, or NULL buf with bufsize > 0), MP_ECLOSED, MP_EINTERRUPTED.
 */
int mp_queue_get_bytes_into(mp_queue *q, void *buf, size_t bufsize, size_t *len,
                            double timeout);
/** Take the oldest item as a value (*out, mp_value_free). An item put with
 * mp_queue_put_bytes comes back as an MP_BYTES value. Errors as mp_queue_get_bytes. */
int mp_queue_get(mp_queue *q, mp_value **out, double timeout);
/** get without waiting: MP_EEMPTY when nothing is there now. */
int mp_queue_get_nowait(mp_queue *q, mp_value **out);
/**
 * mp_queue_get decoding into the caller's value, for a loop that takes one item at a time
 * without a new value and a free for each: *slot is either NULL (a new value is made, as
 * mp_queue_get does) or a value the caller owns, which receives the item in place when it
 * can (an int item into any nil, bool, int or float value; bytes into a value whose memory
 * holds them, see mp_value_set_bytes) and is otherwise freed and replaced by the new value.
 * Either way *slot holds the item and stays the caller's (free it when done). Waits and
 * fails as mp_queue_get (MP_EEMPTY, MP_ECLOSED, MP_EINTERRUPTED; MP_EINVAL for a NULL
 * slot); on any error *slot is left as it was (on a decoding error, out of memory, the
 * item is lost, as with mp_queue_get). In a JoinableQueue each item taken counts for
 * task_done as with mp_queue_get.
 * Example: `mp_value *v = NULL; while (mp_queue_get_into(q, &v, -1) == 0) use(v);
 * mp_value_free(v);`
 */
int mp_queue_get_into(mp_queue *q, mp_value **slot, double timeout);

/**
 * Put @p n values (@p values[0..n), each encoded as by mp_queue_put) as @p n items, in order,
 * under one lock hold and one wake-up. The batch is all or nothing: it waits up to
 * @p timeout seconds (negative: forever; 0: no wait) for room for all of it, then appears
 * at once. A producer killed during the call leaves either its whole batch or none of it
 * in the queue, never part of it and never a torn item. Python: faster-fifo's put_many.
 * n == 0 puts nothing and returns 0.
 * Errors: MP_EFULL (no room for the whole batch in time), MP_EINVAL (NULL values or a NULL
 * entry; a batch larger than the queue's capacity or maxsize, which could never fit),
 * MP_EUNSUPPORTED (a value holding handles), MP_ECLOSED, MP_EINTERRUPTED.
 */
int mp_queue_put_many(mp_queue *q, const mp_value *const *values, size_t n, double timeout);
/**
 * Take up to @p max of the oldest items as values, in order, under one lock hold: waits up
 * to @p timeout seconds (negative: forever; 0: no wait) for at least one item, then takes
 * what is there, up to @p max (fewer when items are large: about 8 KiB of them at a time;
 * an item larger than that, or larger than the ring, comes alone). out[0..*got) receive the
 * values (mp_value_free each); *got is 0 on error. A consumer killed during the call takes
 * nothing: the items stay for others. Python: faster-fifo's get_many.
 * Errors: MP_EEMPTY (nothing in time), MP_EINVAL (NULL out or got, max 0), MP_ECLOSED,
 * MP_EINTERRUPTED; on a decoding error (out of memory) *got says how many values were
 * stored and the rest of that batch is lost, as with mp_queue_get.
 */
int mp_queue_get_many(mp_queue *q, mp_value **out, size_t max, size_t *got, double timeout);
/**
 * mp_queue_get_many decoding into the caller's values, for a loop that takes many items
 * without a new value and a free for each: out[i] is either NULL (a new value is made, as
 * get_many does) or a value the caller owns, which receives the item in place when it can
 * (an int item into any nil, bool, int or float value; bytes into a value whose memory
 * holds them, see mp_value_set_bytes) and is otherwise freed and replaced by the new value.
 * Either way out[0..*got) hold the items and stay the caller's (free them when done);
 * out[*got..max) are left as they were. Errors as mp_queue_get_many; on a decoding error
 * (out of memory) the slot that failed keeps its old value.
 * Example: keep `mp_value *out[64] = {0}` across calls and free the 64 values at the end.
 */
int mp_queue_get_many_into(mp_queue *q, mp_value **out, size_t max, size_t *got,
                           double timeout);

/** Number of items in the queue (exact at the moment of the call). */
size_t mp_queue_qsize(const mp_queue *q);
/** Whether the queue holds no item. */
bool mp_queue_empty(const mp_queue *q);
/** Whether maxsize items are in the queue (always false for maxsize 0). */
bool mp_queue_full(const mp_queue *q);
/** The maxsize the queue was created with. */
size_t mp_queue_maxsize(const mp_queue *q);

/**
 * JoinableQueue: mark one item taken with get as done. MP_ESTATE if called more times than
 * items were put ("task_done() called too many times") or on a non-joinable queue.
 * The queue records which process took each unfinished item; task_done is credited to the
 * caller's own items first, else to those of a process that is gone, else to any.
 */
int mp_queue_task_done(mp_queue *q);
/**
 * JoinableQueue: wait until every item put has been marked done (negative timeout: forever).
 * 0, MP_ETIMEOUT, MP_ESTATE (not joinable), MP_EINTERRUPTED, or MP_EWORKERDIED: a process
 * took items with get and exited or was killed before marking them done, so they can never
 * complete (Python's join hangs forever then). The message says how many tasks died
 * unfinished and a pid; join notices within a quarter of a second. Each task_done called
 * for such a task (e.g. after redoing the work) clears one, and join works again. With
 * opts.dead_tasks_done, join counts those tasks done instead and goes on waiting for the
 * others. A process is identified by its pid and start time, so a recycled pid is not
 * mistaken for the dead one; at most 128 processes holding unfinished items at once are
 * tracked.
 */
int mp_queue_join(mp_queue *q, double timeout);

/** Close this handle: later put/get through it return MP_ECLOSED. Items already put stay in
 * the queue for other handles. Idempotent. */
int mp_queue_close(mp_queue *q);
/** Whether this handle was closed. */
bool mp_queue_closed(const mp_queue *q);
/** Release this handle (the shared queue lives while any process maps it). NULL is fine. */
void mp_queue_free(mp_queue *q);

/** The kind of a queue handle in a value (`h` format code, mp_value_handle): an imported
 * queue is released by freeing the value that holds it. */
extern const mp_kind mp_kind_queue; /**< mp_queue * */

MP_API_END
#ifdef __cplusplus
}
#endif
#endif
