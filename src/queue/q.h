/* Private parts of the queue module, shared by the files of src/queue/:
 *   queue.c    creating, attaching and freeing a queue, sizes, the "queue" kind
 *   putget.c   put and get: a record in the ring, or a stream for a big item
 *   ring.c     a record in the ring: room, copy in, copy out
 *   journal.c  the robust lock and the crash-safe commits (position words, journal)
 *   wait.c     sleeping on the futex words; brief spinning first
 *   stream.c   items larger than the ring, streamed through it; repair of dead owners
 *   batch.c    put_many and get_many: many records under one lock hold and one commit
 *   joinable.c JoinableQueue: task_done and join
 *   holders.c  JoinableQueue: which process holds each unfinished task (dead consumers)
 *
 * DESIGN
 * Who runs where: any thread of any process that maps the segment (the creator, children
 * that got the queue in their arguments or by fork) calls put/get directly; there is no
 * feeder thread and no pipe, so an item is in shared memory as soon as put returns and
 * stays there after its producer exits.
 *
 * What is shared (one memfd): a header page (struct qshared) then `capacity` ring bytes.
 * Items are records [u64 len][u32 tag][u32 pad][payload, padded to 8] at monotonically
 * increasing byte positions (modulo capacity), copied in and out under `lock`.
 *
 * Crash safety: `lock` protects two position words (headw, tailw: byte position and item
 * count packed in one u64 each), a struct (qstate: JoinableQueue's count, the stream) and
 * JoinableQueue's table of task holders (holders.c). A put or get of a ring record in a
 * plain queue changes one position word: a single 8-byte store commits it. Any other
 * change (a JoinableQueue's put or get moves a position word together with its count or
 * a holder) is made on a local copy, written to a journal, flagged valid,
 * applied, then unflagged. The ring bytes of a record are written before the commit that
 * publishes them and read before the commit that frees them. So when a process dies
 * holding the robust mutex, the next locker (EOWNERDEAD) rolls the journal forward if it
 * was valid and otherwise finds the last committed state intact: a half-written put is
 * simply not there, a half-done get leaves the item for the next consumer. Nobody ever
 * sees a torn item.
 *
 * Large items: a record that does not fit the ring is streamed. The producer takes `wlock`
 * (held for its whole put), waits for an empty ring, publishes a stream item, and copies
 * chunks as space frees; one consumer takes `rlock`, claims the stream and copies chunks
 * out. Both copy outside `lock` and publish progress under it. Because the claimer holds
 * rlock and the producer holds wlock for as long as the stream is theirs, anyone may test
 * them with trylock: EOWNERDEAD (or getting the lock) means the owner died. A dead producer
 * aborts the stream (its item never existed; a reader drops its partial copy); a dead
 * reader makes the producer start again from byte 0 for the next reader (the producer
 * still has the whole item), so no consumer receives a torn item and no item is lost.
 * Waits are futex waits in 250 ms slices, so these checks also run when nobody wakes us.
 *
 * Speed: the lock and the position words share one cache line, so a small put or get
 * moves that line and the ring's between CPUs and nothing else; no CPU barrier besides the
 * lock's own atomics. Waiters count themselves (get_waiters, put_waiters) under the lock,
 * so when nobody sleeps a put or get neither bumps a futex word nor makes a wake syscall.
 * A consumer facing an empty ring, or a producer facing a full one, spins briefly on the
 * other side's position word before sleeping.
 * Batches (batch.c) put many records with one copy and one tail store, and take them with
 * one copy and one head store: lock, commit and wake-up are paid once per batch.
 * Where the time per item goes (perf record -g, 1 producer + 1 consumer process, 4M
 * MessagePack ints, 2 shared cores, Dec 2026). Item at a time: the robust mutex ~20%
 * (pthread_mutex_trylock and __pthread_mutex_unlock_full: glibc's robust path registers
 * every lock on the thread's robust list and cannot spin), the value churn ~15%
 * (mp_value_int/mp_value_free/decode; malloc and free themselves are <1%: the value
 * module's per-thread cache serves them, so small values already move without malloc),
 * memcpy of the record ~7%, the thread-local reads of that cache and of the error mute
 * (__tls_get_addr: the library is PIC, global-dynamic TLS) ~4.5%, the rest is the queue's
 * own bookkeeping spread thin. In batches of 64: the lock falls to ~2%, and the values are
 * most of what remains: mp_value_free 11%, mp_value_int 9%, decoding 13%, __tls_get_addr
 * 5%, encoding (with its error mute) ~12%, memcpy ~10%. The next steps are thus a lighter
 * robust lock (single items) and decoding into caller-owned storage (batches). Done since:
 * int values are packed by q_pack_int (same bytes as the codec) instead of msgpack-c's
 * packer and its thread-local error mute: a put of an int went from ~42 to ~30 ns (one
 * process, best of 15 x 100k); mp_queue_get_bytes_into takes an item with no allocation.
 * Lock order: wlock or rlock, then lock. Nobody blocks on wlock/rlock while holding lock
 * (only trylock). */
#ifndef MP_QUEUE_Q_H
#define MP_QUEUE_Q_H

#include "multiproc/queue.h"
#include "internal/common.h"
#include "internal/rfutex.h"
#include "internal/shm.h"
#include "internal/value.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define Q_MAGIC 0x6d705155u /* "mpQU" */
#define Q_VERSION 5
#define Q_HDR 4096
#define Q_DEFAULT_CAP (8u << 20)
#define Q_REC 16
#define TAG_BYTES 1u
#define TAG_VALUE 2u
#define SLICE 0.25          /* longest single futex sleep: re-check for dead peers */
#define CHUNK (1u << 20)    /* stream copy unit */
#define Q_HOLDERS 128       /* processes tracked as holding unfinished tasks at once */
#define Q_NO_SLOT UINT32_MAX


/* The head and tail of the ring are "position words": the low `posbits` bits are a byte
 * position modulo 2 * capacity, the bits above count items (modulo 2^(64 - posbits)). So
 * a put or get changes exactly one word, and one aligned 8-byte store is a crash-atomic
 * commit: no journal on the hot path, and the item count needs no field of its own. */
typedef struct qstate {
    uint64_t unfinished; /* JoinableQueue: put but not yet task_done */
    /* the stream (an item larger than the ring), at most one at a time */
    uint64_t s_active, s_claimed, s_len, s_tag, s_written, s_read;
    uint64_t s_gen, s_epoch, s_done_gen;
} qstate;

/* JoinableQueue: a process holding `count` tasks it took with get and has not marked
 * done. Identified by pid and start time (clock ticks after boot, /proc/PID/stat field
 * 22), so a recycled pid is not mistaken for the holder. count 0: a free slot. */
typedef struct qholder {
    uint64_t start;
    int32_t pid;
    uint32_t pad;
    uint64_t count;
} qholder;

/* What a journaled commit changes: st, the position words (a JoinableQueue's put moves
 * the tail and `unfinished` together, its get the head and a holder) and one holder slot
 * (`slot` is Q_NO_SLOT when none changes). */
typedef struct qjournal {
    qstate st;
    uint64_t tailw, headw;
    uint32_t slot, pad;
    qholder holder;
} qjournal;

/* Laid out by cache line, because every put and get moves the lines it writes between
 * CPUs: line 0 is written once at creation; a put or get of a small item writes only
 * line 1 (the lock and the position words) besides the ring. The rest changes only for
 * streams, JoinableQueue puts, task_done and waits. */
struct qshared {
    uint32_t magic, version;
    uint64_t capacity, maxsize;
    uint32_t joinable, posbits;
    uint32_t dead_tasks_done; /* JoinableQueue: a dead holder's tasks count as done */
    _Alignas(64) mp__rfutex lock;
    _Atomic uint64_t headw, tailw; /* position words; stored under lock, read anywhere */
    uint32_t get_waiters, put_waiters; /* sleepers on data_seq / space_seq, under lock */
    /* 1 while someone holds `lock` (set after taking it, cleared before releasing): what
     * lock_spin watches, in the queue's own words rather than the mutex's private
     * fields. Its own line: spinners reading it do not steal the holder's line. A holder
     * that dies leaves it set, which only makes the next locker stop spinning sooner. */
    _Alignas(64) _Atomic uint32_t held;
    _Alignas(64) qstate st;       /* protected by lock, changed only through commit*() */
    qjournal journal;
    _Atomic uint32_t journal_valid;
    _Atomic uint32_t active_pub;  /* st.s_active, readable without the lock */
    _Alignas(64) mp__rfutex wlock, rlock;
    _Atomic uint32_t data_seq, space_seq, join_seq, stream_seq; /* futex words */
    uint32_t join_waiters, stream_waiters;
    /* JoinableQueue: who holds unfinished tasks; changed under lock, only through
     * mp__q_commit_all (holders.c) */
    _Alignas(64) qholder holders[Q_HOLDERS];
};

_Static_assert(sizeof(mp__rfutex) > 40 ||
                   offsetof(struct qshared, put_waiters) + 4 - offsetof(struct qshared, lock) <= 64,
               "the lock and the position words share one cache line");
_Static_assert(sizeof(struct qshared) <= Q_HDR, "queue header must fit its page");

struct mp_queue {
    mp__shm shm;
    struct qshared *s;
    unsigned char *ring;
    uint64_t mask;
    bool closed;
    uint32_t slot; /* JoinableQueue: this process's holder slot last time (a hint) */
};

static inline uint64_t rec_size(uint64_t len) { return Q_REC + ((len + 7) & ~(uint64_t)7); }

/* ---- position words, ring copies, wakes: small enough to inline everywhere ---- */

static inline uint64_t ld(const _Atomic uint64_t *w)
{
    return atomic_load_explicit(w, memory_order_relaxed);
}

/* Items between two position words (head first). */
static inline uint64_t items_between(const struct qshared *s, uint64_t h, uint64_t t)
{
    unsigned b = s->posbits;
    return ((t >> b) - (h >> b)) & (~(uint64_t)0 >> b);
}

/* Ring bytes between two position words. */
static inline uint64_t bytes_between(const struct qshared *s, uint64_t h, uint64_t t)
{
    return (t - h) & (((uint64_t)1 << s->posbits) - 1);
}

/* The word `items` records (`bytes` in all) further on. */
static inline uint64_t advance_n(const struct qshared *s, uint64_t w, uint64_t items,
                                 uint64_t bytes)
{
    unsigned b = s->posbits;
    return (((w >> b) + items) << b) | ((w + bytes) & (((uint64_t)1 << b) - 1));
}

/* The word one record of `bytes` further on. */
static inline uint64_t advance(const struct qshared *s, uint64_t w, uint64_t bytes)
{
    return advance_n(s, w, 1, bytes);
}

/* Publish a position word once the ring bytes it covers are written (put) or read (get). */
static inline void commit_word(_Atomic uint64_t *w, uint64_t value)
{
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(w, value, memory_order_relaxed);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline void qunlock(mp_queue *q)
{
    atomic_store_explicit(&q->s->held, 0, memory_order_relaxed);
    mp__rf_unlock(&q->s->lock);
}

static inline void wake(_Atomic uint32_t *seq, uint32_t waiters, int n)
{
    if (waiters)
        mp__futex_wake(seq, n);
}

static inline void bump(_Atomic uint32_t *seq) { atomic_fetch_add(seq, 1); }

static inline void ring_write(mp_queue *q, uint64_t pos, const void *src, size_t n)
{
    uint64_t off = pos & q->mask, first = q->s->capacity - off;
    if (n <= first) {
        memcpy(q->ring + off, src, n);
    } else {
        memcpy(q->ring + off, src, first);
        memcpy(q->ring, (const char *)src + first, n - first);
    }
}

static inline void ring_read(mp_queue *q, uint64_t pos, void *dst, size_t n)
{
    uint64_t off = pos & q->mask, first = q->s->capacity - off;
    if (n <= first) {
        memcpy(dst, q->ring + off, n);
    } else {
        memcpy(dst, q->ring + off, first);
        memcpy((char *)dst + first, q->ring, n - first);
    }
}

/* The deadline of a call with this timeout, computed when it first has to wait (so a call
 * that does not block never reads the clock). `*deadline` starts as NAN. */
static inline double lazy_deadline(double *deadline, double timeout)
{
    if (isnan(*deadline))
        *deadline = mp__deadline(timeout);
    return *deadline;
}

/* MessagePack of an int value in its shortest form (mp__pack_int, same bytes as the
 * codec): the queue's most common item, encoded without msgpack-c's packer. Its length. */
static inline size_t q_pack_int(int64_t i, unsigned char *p) { return mp__pack_int(i, p); }

/* ---- journal.c ---- */
/* Items in the queue (a stream counts as one). Under lock. */
uint64_t mp__q_item_count(const struct qshared *s);
/* One journaled commit of st, both position words and holders[slot] (Q_NO_SLOT: none). */
void mp__q_commit_all(struct qshared *s, const qstate *next, uint64_t tailw, uint64_t headw,
                      uint32_t slot, const qholder *holder);
void mp__q_commit_tail(struct qshared *s, const qstate *next, uint64_t tailw);
void mp__q_commit(struct qshared *s, const qstate *next);
/* Take `lock`; a dead holder's journaled change is rolled forward. 0 or an error. */
int mp__q_lock(mp_queue *q);
/* Lock a stream mutex (wlock/rlock); a dead previous owner is fine. */
int mp__q_lock_owner(mp__rfutex *m);
/* Whether the owner of m is gone (trylock succeeded or found it dead). Leaves m unlocked. */
bool mp__q_owner_gone(mp__rfutex *m);

/* ---- wait.c ---- */
/* Sleep on seq (unlocking meanwhile) for at most one slice or until the deadline.
 * 0 (re-check), MP_ETIMEOUT, MP_EINTERRUPTED, or a lock error. */
int mp__q_wait(mp_queue *q, _Atomic uint32_t *seq, uint32_t *waiters, double deadline);
/* Spin a little (unlocked) hoping the counter moves away from `value`. */
void mp__q_spin_while(const _Atomic uint64_t *c, uint64_t value);

/* ---- stream.c ---- */
void mp__q_stream_abort(struct qshared *s);
void mp__q_stream_unclaim(struct qshared *s);
/* Check the stream's owners; called under lock while waiting. */
void mp__q_stream_repair(struct qshared *s, bool self_w, bool self_r, bool own_claim);
int mp__q_put_stream(mp_queue *q, uint32_t tag, const void *buf, size_t len, double timeout);
/* A stream is at the head and unclaimed: claim it and drain it. Under lock on entry and
 * return. 1 with the item, 0 to retry, negative on error. */
int mp__q_get_stream(mp_queue *q, void **buf, size_t *len, uint32_t *tag);

/* ---- ring.c ---- */
int mp__q_full_error(const mp_queue *q, double timeout);
/* Take `lock` and wait until `need` ring bytes and `items` items fit. 0 with the lock held,
 * or an error (MP_EFULL after the timeout) with it released. */
int mp__q_wait_room(mp_queue *q, uint64_t need, uint64_t items, double timeout);
/* Publish `items` records (`need` bytes) just written at the tail. Under lock; releases it
 * and wakes consumers. */
void mp__q_publish(mp_queue *q, uint64_t items, uint64_t need);
int mp__q_put_record(mp_queue *q, uint32_t tag, const void *buf, size_t len, double timeout);
/* Take the record at head. Under lock; count > 0 and no stream. */
int mp__q_take_record(mp_queue *q, void **buf, size_t *len, uint32_t *tag, void *local,
                      size_t local_cap);
/* Take up to `max` whole records at head whose bytes fit `cap`: copied to `dst` as they
 * lie in the ring, then one commit of the head. Under lock; count > 0 and no stream. The
 * number taken (0 when the first record alone exceeds cap), or an error. */
long mp__q_take_records(mp_queue *q, void *dst, size_t cap, size_t max, size_t *bytes);

/* ---- putget.c ---- */
/* Where a get_many copies the records it takes (see mp__q_get). */
typedef struct qbatch {
    void *dst;
    size_t cap, max; /* bytes and records dst may take */
    size_t n, bytes; /* records and bytes taken */
} qbatch;
int mp__q_get(mp_queue *q, void **buf, size_t *len, uint32_t *tag, double timeout,
              void *local, size_t local_cap, qbatch *b);
int mp__q_empty_error(double timeout);

/* ---- holders.c ---- */
/* Commit a get of n items: st becomes *next and the head headw; in a JoinableQueue the
 * items are recorded as held by the calling process, in the same commit. Under lock. */
void mp__q_commit_taken(mp_queue *q, const qstate *next, uint64_t headw, uint32_t n);
/* task_done's commit: *next (unfinished already decreased) and one task fewer held, by the
 * caller if it holds one, else by a dead holder, else by any. Under lock. */
void mp__q_commit_done(mp_queue *q, const qstate *next);
/* Tasks held by processes that are gone (*pid: one of them). With `forget`, they are
 * counted done (removed from unfinished and from the holders). Under lock. */
uint64_t mp__q_dead_tasks(mp_queue *q, bool forget, int *pid, unsigned *procs);

/* ---- queue.c ---- */
int mp__q_check_open(const mp_queue *q);

#endif
