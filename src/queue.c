/* Process-shared queues: a ring buffer in a memfd, a robust mutex, futex waits.
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
 * count packed in one u64 each) and a struct (qstate: JoinableQueue's count, the stream).
 * A put or get of a ring record changes one position word: a single 8-byte store commits
 * it. Any other change is made on a local copy, written to a journal, flagged valid,
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
 * Lock order: wlock or rlock, then lock. Nobody blocks on wlock/rlock while holding lock
 * (only trylock). */
#define _GNU_SOURCE
#include "multiproc/queue.h"

#include "internal/common.h"
#include "internal/shm.h"
#include "internal/value.h"

#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define Q_MAGIC 0x6d705155u /* "mpQU" */
#define Q_VERSION 4
#define Q_HDR 4096
#define Q_DEFAULT_CAP (8u << 20)
#define Q_REC 16
#define TAG_BYTES 1u
#define TAG_VALUE 2u
#define SLICE 0.25          /* longest single futex sleep: re-check for dead peers */
#define CHUNK (1u << 20)    /* stream copy unit */

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

/* What a journaled commit changes: st and the tail word (a JoinableQueue's put moves both). */
typedef struct qjournal {
    qstate st;
    uint64_t tailw;
} qjournal;

/* Laid out by cache line, because every put and get moves the lines it writes between
 * CPUs: line 0 is written once at creation; a put or get of a small item writes only
 * line 1 (the lock and the position words) besides the ring. The rest changes only for
 * streams, JoinableQueue puts, task_done and waits. */
struct qshared {
    uint32_t magic, version;
    uint64_t capacity, maxsize;
    uint32_t joinable, posbits;
    _Alignas(64) pthread_mutex_t lock;
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
    _Alignas(64) pthread_mutex_t wlock, rlock;
    _Atomic uint32_t data_seq, space_seq, join_seq, stream_seq; /* futex words */
    uint32_t join_waiters, stream_waiters;
};

_Static_assert(sizeof(pthread_mutex_t) > 40 ||
                   offsetof(struct qshared, put_waiters) + 4 - offsetof(struct qshared, lock) <= 64,
               "the lock and the position words share one cache line");
_Static_assert(sizeof(struct qshared) <= Q_HDR, "queue header must fit its page");

struct mp_queue {
    mp__shm shm;
    struct qshared *s;
    unsigned char *ring;
    uint64_t mask;
    bool closed;
};

static inline uint64_t rec_size(uint64_t len) { return Q_REC + ((len + 7) & ~(uint64_t)7); }

/* ---- position words and the journal -------------------------------------------------- */

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

/* The word one record of `bytes` further on. */
static inline uint64_t advance(const struct qshared *s, uint64_t w, uint64_t bytes)
{
    unsigned b = s->posbits;
    return (((w >> b) + 1) << b) | ((w + bytes) & (((uint64_t)1 << b) - 1));
}

/* Items in the queue (a stream counts as one). Under lock. */
static uint64_t item_count(const struct qshared *s)
{
    return items_between(s, ld(&s->headw), ld(&s->tailw)) + (s->st.s_active != 0);
}

static void publish(struct qshared *s)
{
    atomic_store_explicit(&s->active_pub, s->st.s_active != 0, memory_order_release);
}

/* The ordering that matters is program order within the committing thread: a SIGKILL
 * stops it between two instructions and the next locker sees every store before that
 * point (the kernel marks the robust mutex dead after them). Hence compiler fences and
 * relaxed stores: no CPU barrier is needed. Position-word commits (put_record,
 * take_record) are a single store; everything else goes through the journal here. */
static void commit_tail(struct qshared *s, const qstate *next, uint64_t tailw)
{
    s->journal.st = *next;
    s->journal.tailw = tailw;
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&s->journal_valid, 1, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst); /* the journal is complete before st changes */
    s->st = *next;
    atomic_store_explicit(&s->tailw, tailw, memory_order_relaxed);
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(&s->journal_valid, 0, memory_order_relaxed);
    publish(s);
}

static void commit(struct qshared *s, const qstate *next) { commit_tail(s, next, ld(&s->tailw)); }

/* Publish a position word once the ring bytes it covers are written (put) or read (get). */
static inline void commit_word(_Atomic uint64_t *w, uint64_t value)
{
    atomic_signal_fence(memory_order_seq_cst);
    atomic_store_explicit(w, value, memory_order_relaxed);
}

/* ---- locks --------------------------------------------------------------------------- */

static void qunlock(mp_queue *q)
{
    atomic_store_explicit(&q->s->held, 0, memory_order_relaxed);
    pthread_mutex_unlock(&q->s->lock);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Robust mutexes never spin in glibc: a contended one costs a futex sleep and wake, far
 * more than the ~100 ns a put or get holds it. Try a little before sleeping. Spinning
 * reads `held` (a plain load keeps the line shared): a failed trylock is a compare-and-
 * swap, which takes the line away from the holder that is about to write to it. */
static int lock_spin(pthread_mutex_t *m, _Atomic uint32_t *held)
{
    int r = pthread_mutex_trylock(m);
    if (r != EBUSY)
        return r;
    for (int i = 0; i < 200; i++) {
        cpu_relax();
        if (atomic_load_explicit(held, memory_order_relaxed))
            continue;
        r = pthread_mutex_trylock(m);
        if (r != EBUSY)
            return r;
    }
    return pthread_mutex_lock(m);
}

static int qlock(mp_queue *q)
{
    int r = lock_spin(&q->s->lock, &q->s->held);
    if (r == 0 || r == EOWNERDEAD)
        atomic_store_explicit(&q->s->held, 1, memory_order_relaxed);
    if (r == EOWNERDEAD) {
        /* The holder died: roll its journaled change forward, or keep the last commit. */
        struct qshared *s = q->s;
        if (atomic_load_explicit(&s->journal_valid, memory_order_relaxed)) {
            s->st = s->journal.st;
            atomic_store_explicit(&s->tailw, s->journal.tailw, memory_order_relaxed);
        }
        atomic_store_explicit(&s->journal_valid, 0, memory_order_relaxed);
        publish(q->s);
        pthread_mutex_consistent(&q->s->lock);
        return 0;
    }
    return r ? mp__error(-r, "queue lock") : 0;
}

/* Lock a stream mutex (wlock/rlock); a dead previous owner is fine: the stream state is
 * repaired under `lock` by whoever notices (see stream_repair). */
static int lock_owner(pthread_mutex_t *m)
{
    int r = pthread_mutex_lock(m);
    if (r == EOWNERDEAD) {
        pthread_mutex_consistent(m);
        r = 0;
    }
    return r ? mp__error(-r, "queue stream lock") : 0;
}

/* Whether the owner of m is gone (trylock succeeded or found it dead). Leaves m unlocked. */
static bool owner_gone(pthread_mutex_t *m)
{
    int r = pthread_mutex_trylock(m);
    if (r == EBUSY)
        return false;
    if (r == EOWNERDEAD)
        pthread_mutex_consistent(m);
    if (r == 0 || r == EOWNERDEAD)
        pthread_mutex_unlock(m);
    return true;
}

static void wake(_Atomic uint32_t *seq, uint32_t waiters, int n)
{
    if (waiters)
        mp__futex_wake(seq, n);
}

static void bump(_Atomic uint32_t *seq) { atomic_fetch_add(seq, 1); }

/* ---- streams: repair ------------------------------------------------------------------- */

/* Drop the stream item entirely (its producer died or gave up). Under lock. */
static void stream_abort(struct qshared *s)
{
    qstate n = s->st;
    n.s_active = n.s_claimed = 0;
    n.s_done_gen = n.s_gen;
    if (s->joinable && n.unfinished)
        n.unfinished--;
    commit(s, &n);
    bump(&s->data_seq);
    bump(&s->space_seq);
    bump(&s->stream_seq);
    mp__futex_wake(&s->data_seq, INT32_MAX);
    mp__futex_wake(&s->space_seq, INT32_MAX);
    mp__futex_wake(&s->stream_seq, INT32_MAX);
    if (n.unfinished == 0 && s->joinable) {
        bump(&s->join_seq);
        mp__futex_wake(&s->join_seq, INT32_MAX);
    }
}

/* The claimer died: unclaim, and make the producer start over from byte 0. Under lock. */
static void stream_unclaim(struct qshared *s)
{
    qstate n = s->st;
    n.s_claimed = 0;
    n.s_written = n.s_read = 0;
    n.s_epoch++;
    commit(s, &n);
    bump(&s->stream_seq);
    bump(&s->data_seq);
    mp__futex_wake(&s->stream_seq, INT32_MAX);
    mp__futex_wake(&s->data_seq, INT32_MAX);
}

/* Check the stream's owners; called under lock while waiting. `self_w`/`self_r`: the caller
 * holds wlock/rlock itself, so an active stream / a claim it did not make is stale. */
static void stream_repair(struct qshared *s, bool self_w, bool self_r, bool own_claim)
{
    if (!s->st.s_active)
        return;
    if (!self_w && owner_gone(&s->wlock)) {
        stream_abort(s);
        return;
    }
    if (s->st.s_claimed && !own_claim && (self_r || owner_gone(&s->rlock)))
        stream_unclaim(s);
}

/* ---- waiting ---------------------------------------------------------------------------- */

/* Sleep on seq (unlocking meanwhile) for at most one slice or until the deadline.
 * Returns 0 (re-check), MP_ETIMEOUT when the deadline passed, MP_EINTERRUPTED, or a lock
 * error. The lock is held again on return (except on a lock error). */
static int qwait(mp_queue *q, _Atomic uint32_t *seq, uint32_t *waiters, double deadline)
{
    if (deadline >= 0 && mp__now() >= deadline)
        return MP_ETIMEOUT;
    uint32_t seen = atomic_load(seq);
    (*waiters)++;
    qunlock(q);
    double slice = mp__now() + SLICE;
    int r = mp__futex_wait(seq, seen, deadline >= 0 && deadline < slice ? deadline : slice);
    int code = qlock(q);
    if (code < 0)
        return code;
    if (*waiters)
        (*waiters)--;
    if (r == MP_EINTERRUPTED)
        return mp__error(r, "queue wait interrupted by a signal");
    if (deadline >= 0 && mp__now() >= deadline)
        return MP_ETIMEOUT;
    return 0;
}

/* Spin a little (unlocked) hoping the counter moves away from `value`: a sleep + wake costs
 * microseconds, a consumer that keeps up with its producer should not pay it, nor a
 * producer that is ahead of its consumer (a full ring) pay a sleep per item. */
static void spin_while(const _Atomic uint64_t *c, uint64_t value)
{
    for (int i = 0; i < 400; i++) {
        if (atomic_load_explicit(c, memory_order_relaxed) != value)
            return;
        cpu_relax();
    }
    for (int i = 0; i < 4; i++) {
        if (atomic_load_explicit(c, memory_order_relaxed) != value)
            return;
        sched_yield();
    }
}

/* ---- ring copies ------------------------------------------------------------------------ */

static void ring_write(mp_queue *q, uint64_t pos, const void *src, size_t n)
{
    uint64_t off = pos & q->mask, first = q->s->capacity - off;
    if (n <= first) {
        memcpy(q->ring + off, src, n);
    } else {
        memcpy(q->ring + off, src, first);
        memcpy(q->ring, (const char *)src + first, n - first);
    }
}

static void ring_read(mp_queue *q, uint64_t pos, void *dst, size_t n)
{
    uint64_t off = pos & q->mask, first = q->s->capacity - off;
    if (n <= first) {
        memcpy(dst, q->ring + off, n);
    } else {
        memcpy(dst, q->ring + off, first);
        memcpy((char *)dst + first, q->ring, n - first);
    }
}

/* ---- creation ---------------------------------------------------------------------------- */

static mp_queue *attach(mp__shm *shm)
{
    mp_queue *q = mp__calloc(1, sizeof *q);
    if (!q) {
        mp__shm_release(shm);
        return NULL;
    }
    q->shm = *shm;
    q->s = shm->addr;
    q->ring = (unsigned char *)shm->addr + Q_HDR;
    q->mask = q->s->capacity - 1;
    return q;
}

mp_queue *mp_queue_new(const mp_queue_opts *opts)
{
    static const mp_queue_opts defaults;
    if (!opts)
        opts = &defaults;
    uint64_t cap = opts->capacity ? opts->capacity : Q_DEFAULT_CAP;
    if (cap > ((uint64_t)1 << 40)) {
        mp__error(MP_EINVAL, "queue capacity %zu is too large", opts->capacity);
        return NULL;
    }
    uint64_t pow2 = 4096;
    while (pow2 < cap)
        pow2 <<= 1;
    mp__shm shm;
    if (mp__shm_create(&shm, Q_HDR + pow2, "mp-queue") < 0)
        return NULL;
    struct qshared *s = shm.addr;
    s->capacity = pow2;
    s->posbits = (uint32_t)__builtin_ctzll(pow2) + 1; /* positions modulo 2 * capacity */
    s->maxsize = opts->maxsize;
    s->joinable = opts->joinable;
    if (mp__robust_mutex_init(&s->lock) < 0 || mp__robust_mutex_init(&s->wlock) < 0 ||
        mp__robust_mutex_init(&s->rlock) < 0) {
        mp__shm_release(&shm);
        return NULL;
    }
    s->version = Q_VERSION;
    atomic_thread_fence(memory_order_seq_cst);
    s->magic = Q_MAGIC;
    return attach(&shm);
}

mp_queue *mp_simple_queue_new(void) { return mp_queue_new(NULL); }

mp_queue *mp_joinable_queue_new(const mp_queue_opts *opts)
{
    mp_queue_opts o = opts ? *opts : (mp_queue_opts){0};
    o.joinable = true;
    return mp_queue_new(&o);
}

void mp_queue_free(mp_queue *q)
{
    if (!q)
        return;
    mp__shm_release(&q->shm);
    free(q);
}

int mp_queue_close(mp_queue *q)
{
    if (q)
        q->closed = true;
    return 0;
}

bool mp_queue_closed(const mp_queue *q) { return !q || q->closed; }

static int check_open(const mp_queue *q)
{
    if (!q)
        return mp__error(MP_EINVAL, "queue is NULL");
    if (q->closed)
        return mp__error(MP_ECLOSED, "queue is closed");
    return 0;
}

/* ---- put --------------------------------------------------------------------------------- */

static bool has_room(const struct qshared *s, uint64_t need)
{
    if (s->st.s_active)
        return false;
    uint64_t h = ld(&s->headw), t = ld(&s->tailw), n = items_between(s, h, t);
    if (s->maxsize && n >= s->maxsize)
        return false;
    if (n >= (~(uint64_t)0 >> s->posbits) - 1) /* the item counter's range (rings > 8 GiB) */
        return false;
    return need <= s->capacity - bytes_between(s, h, t);
}

static int full_error(const mp_queue *q, double timeout)
{
    if (timeout == 0)
        return mp__error(MP_EFULL, "queue is full (%llu items)",
                         (unsigned long long)item_count(q->s));
    return mp__error(MP_EFULL, "queue still full after %.3g s", timeout);
}

/* The deadline of a call with this timeout, computed when it first has to wait (so a call
 * that does not block never reads the clock). `*deadline` starts as NAN. */
static double lazy_deadline(double *deadline, double timeout)
{
    if (isnan(*deadline))
        *deadline = mp__deadline(timeout);
    return *deadline;
}

static int put_record(mp_queue *q, uint32_t tag, const void *buf, size_t len, double timeout)
{
    struct qshared *s = q->s;
    uint64_t need = rec_size(len);
    double deadline = NAN;
    /* A small record is assembled here and copied into the ring in one go. */
    uint64_t small[8];
    bool one_copy = need <= sizeof small;
    if (one_copy) {
        small[need / 8 - 1] = 0; /* the padding: no stale stack bytes in shared memory */
        small[0] = len;
        small[1] = tag;
        if (len)
            memcpy(small + 2, buf, len);
    }
    bool spun = timeout == 0;
    int code = qlock(q);
    if (code < 0)
        return code;
    while (!has_room(s, need)) {
        stream_repair(s, false, false, false);
        if (has_room(s, need))
            break;
        if (!spun && !s->st.s_active) {
            spun = true;
            uint64_t seen = ld(&s->headw); /* a get moves it */
            qunlock(q);
            spin_while(&s->headw, seen);
            if ((code = qlock(q)) < 0)
                return code;
            continue;
        }
        code = timeout == 0 ? MP_ETIMEOUT
                            : qwait(q, &s->space_seq, &s->put_waiters,
                                    lazy_deadline(&deadline, timeout));
        if (code < 0) {
            qunlock(q);
            return code == MP_ETIMEOUT ? full_error(q, timeout) : code;
        }
    }
    uint64_t tail = ld(&s->tailw);
    if (one_copy) {
        ring_write(q, tail, small, need);
    } else {
        uint64_t hdr[2] = {len, tag};
        ring_write(q, tail, hdr, Q_REC);
        ring_write(q, tail + Q_REC, buf, len);
    }
    if (s->joinable) { /* the tail and unfinished move together: journaled */
        qstate n = s->st;
        n.unfinished++;
        commit_tail(s, &n, advance(s, tail, need));
    } else {
        commit_word(&s->tailw, advance(s, tail, need));
    }
    uint32_t waiters = s->get_waiters;
    if (waiters) /* a sleeper read data_seq under the lock: it must see it move */
        bump(&s->data_seq);
    qunlock(q);
    wake(&s->data_seq, waiters, 1);
    return 0;
}

/* Publish a stream once the ring is empty; holds wlock. Returns with lock held on success. */
static int stream_start(mp_queue *q, uint32_t tag, size_t len, double deadline, double timeout)
{
    struct qshared *s = q->s;
    int code = qlock(q);
    if (code < 0)
        return code;
    for (;;) {
        if (s->st.s_active) /* we hold wlock: an active stream is a dead producer's */
            stream_abort(s);
        if (ld(&s->headw) == ld(&s->tailw) && !s->st.s_active) /* empty */
            break;
        code = timeout == 0 ? MP_ETIMEOUT : qwait(q, &s->space_seq, &s->put_waiters, deadline);
        if (code < 0) {
            qunlock(q);
            return code == MP_ETIMEOUT ? full_error(q, timeout) : code;
        }
    }
    qstate n = s->st;
    n.s_active = 1;
    n.s_claimed = 0;
    n.s_len = len;
    n.s_tag = tag;
    n.s_written = n.s_read = 0;
    n.s_gen++;
    n.unfinished += s->joinable;
    commit(s, &n);
    bump(&s->data_seq);
    mp__futex_wake(&s->data_seq, INT32_MAX);
    return 0;
}

/* Copy the item into the ring as the reader frees space, until the reader has it all.
 * Called and returns with lock held. */
static int stream_feed(mp_queue *q, const unsigned char *buf, size_t len, double deadline,
                       double timeout)
{
    struct qshared *s = q->s;
    uint64_t gen = s->st.s_gen, epoch = s->st.s_epoch, off = 0, base = ld(&s->tailw);
    for (;;) {
        if (s->st.s_done_gen >= gen) /* a reader took it all */
            return 0;
        stream_repair(s, true, false, false);
        if (s->st.s_epoch != epoch) { /* the reader died: start over for the next one */
            epoch = s->st.s_epoch;
            off = 0;
        }
        uint64_t room = s->st.s_read + s->capacity - off;
        if (off < len && room > 0) {
            size_t n = (size_t)(len - off < room ? len - off : room);
            n = n < CHUNK ? n : CHUNK;
            qunlock(q);
            ring_write(q, base + off, buf + off, n);
            int code = qlock(q);
            if (code < 0)
                return code;
            if (s->st.s_epoch != epoch || s->st.s_gen != gen || !s->st.s_active)
                continue;
            off += n;
            qstate st = s->st;
            st.s_written = off;
            commit(s, &st);
            bump(&s->stream_seq);
            wake(&s->stream_seq, s->stream_waiters, INT32_MAX);
            continue;
        }
        int code = qwait(q, &s->stream_seq, &s->stream_waiters, deadline);
        if (code == MP_ETIMEOUT || code == MP_EINTERRUPTED) {
            if (s->st.s_done_gen >= gen)
                return 0;
            stream_abort(s);
            return code == MP_ETIMEOUT ? full_error(q, timeout) : code;
        }
        if (code < 0)
            return code;
    }
}

static int put_stream(mp_queue *q, uint32_t tag, const void *buf, size_t len, double timeout)
{
    double deadline = mp__deadline(timeout);
    int code = lock_owner(&q->s->wlock);
    if (code < 0)
        return code;
    code = stream_start(q, tag, len, deadline, timeout);
    if (code == 0) {
        code = stream_feed(q, buf, len, deadline, timeout);
        if (code != -ENOTRECOVERABLE)
            qunlock(q);
    }
    pthread_mutex_unlock(&q->s->wlock);
    return code;
}

static int put_tagged(mp_queue *q, uint32_t tag, const void *buf, size_t len, double timeout)
{
    int code = check_open(q);
    if (code < 0)
        return code;
    if (!buf && len)
        return mp__error(MP_EINVAL, "put: NULL buffer");
    if (rec_size(len) > q->s->capacity || len > ((uint64_t)1 << 62))
        return put_stream(q, tag, buf, len, timeout);
    return put_record(q, tag, buf, len, timeout);
}

int mp_queue_put_bytes(mp_queue *q, const void *buf, size_t len, double timeout)
{
    return put_tagged(q, TAG_BYTES, buf, len, timeout);
}

int mp_queue_put(mp_queue *q, const mp_value *v, double timeout)
{
    int code = check_open(q);
    if (code < 0)
        return code;
    /* Small values are encoded on the stack, straight into the ring: no malloc. */
    unsigned char small[256];
    size_t slen;
    if (v && mp__value_encode_into(v, small, sizeof small, &slen) == 0)
        return put_tagged(q, TAG_VALUE, small, slen, timeout);
    char *buf = NULL;
    size_t len = 0, nfds = 0;
    code = mp_value_encode(v, &buf, &len, NULL, 0, &nfds);
    if (code < 0) {
        if (code == MP_EUNSUPPORTED)
            return mp__error(code, "a value holding handles cannot be put in a queue");
        return code;
    }
    code = put_tagged(q, TAG_VALUE, buf, len, timeout);
    mp_free(buf);
    return code;
}

int mp_queue_put_nowait(mp_queue *q, const mp_value *v) { return mp_queue_put(q, v, 0); }

/* ---- get --------------------------------------------------------------------------------- */

/* Take the record at head. Under lock; count > 0 and no stream. */
static int take_record(mp_queue *q, void **buf, size_t *len, uint32_t *tag, void *local,
                       size_t local_cap)
{
    struct qshared *s = q->s;
    uint64_t hdr[2], head = ld(&s->headw);
    ring_read(q, head, hdr, Q_REC);
    if (hdr[0] > s->capacity - Q_REC)
        return mp__error(MP_EPROTO, "queue record at ring offset %llu is corrupt (length %llu)",
                         (unsigned long long)(head & q->mask), (unsigned long long)hdr[0]);
    char *p = hdr[0] <= local_cap ? local : malloc(hdr[0] ? hdr[0] : 1);
    if (!p)
        return mp__error(-ENOMEM, "allocating a %llu-byte item", (unsigned long long)hdr[0]);
    ring_read(q, head + Q_REC, p, hdr[0]);
    head = advance(s, head, rec_size(hdr[0]));
    commit_word(&s->headw, head);
    if (head != ld(&s->tailw)) /* the next get (ours, likely) finds the next record in cache */
        __builtin_prefetch(q->ring + (head & q->mask));
    if (s->put_waiters)
        bump(&s->space_seq);
    *buf = p;
    *len = hdr[0];
    *tag = (uint32_t)hdr[1];
    return 0;
}

/* Copy a claimed stream out. Under lock on entry and on return. Returns 1 with the item,
 * 0 if the stream was aborted (go back to waiting), or a negative code. */
static int stream_drain(mp_queue *q, void **buf, size_t *len, uint32_t *tag)
{
    struct qshared *s = q->s;
    uint64_t gen = s->st.s_gen, total = s->st.s_len, base = ld(&s->tailw), got;
    unsigned char *p = malloc(total ? total : 1);
    if (!p)
        return mp__error(-ENOMEM, "allocating a %llu-byte item", (unsigned long long)total);
    for (;;) {
        stream_repair(s, false, true, true);
        if (!s->st.s_active || s->st.s_gen != gen || !s->st.s_claimed) {
            free(p); /* the producer died or gave up: the item never existed */
            return 0;
        }
        got = s->st.s_read;
        if (got < s->st.s_written) {
            size_t n = (size_t)(s->st.s_written - got);
            n = n < CHUNK ? n : CHUNK;
            qunlock(q);
            ring_read(q, base + got, p + got, n);
            int code = qlock(q);
            if (code < 0) {
                free(p);
                return code;
            }
            if (!s->st.s_active || s->st.s_gen != gen)
                continue;
            qstate st = s->st;
            st.s_read = got + n;
            if (st.s_read == total) {
                st.s_active = st.s_claimed = 0;
                st.s_done_gen = gen;
            }
            commit(s, &st);
            bump(&s->stream_seq);
            mp__futex_wake(&s->stream_seq, INT32_MAX);
            if (st.s_read == total) {
                bump(&s->space_seq);
                bump(&s->data_seq);
                mp__futex_wake(&s->space_seq, INT32_MAX);
                mp__futex_wake(&s->data_seq, INT32_MAX);
                *buf = p;
                *len = (size_t)total;
                *tag = (uint32_t)s->st.s_tag;
                return 1;
            }
            continue;
        }
        /* No deadline once claimed: the stream is ours and its producer waits for us. */
        int code = qwait(q, &s->stream_seq, &s->stream_waiters, -1);
        if (code < 0) {
            free(p);
            return code;
        }
    }
}

/* A stream is at the head and unclaimed: take rlock, claim it, drain it. Under lock on
 * entry and return. 1 with the item, 0 to retry, negative on error. */
static int get_stream(mp_queue *q, void **buf, size_t *len, uint32_t *tag)
{
    struct qshared *s = q->s;
    qunlock(q);
    int code = lock_owner(&s->rlock);
    if (code < 0) {
        qlock(q);
        return code;
    }
    code = qlock(q);
    if (code < 0) {
        pthread_mutex_unlock(&s->rlock);
        return code;
    }
    if (s->st.s_active && s->st.s_claimed) /* we hold rlock: that claimer is dead */
        stream_unclaim(s);
    if (!s->st.s_active) {
        pthread_mutex_unlock(&s->rlock);
        return 0;
    }
    qstate n = s->st;
    n.s_claimed = 1;
    commit(s, &n);
    bump(&s->stream_seq);
    mp__futex_wake(&s->stream_seq, INT32_MAX);
    code = stream_drain(q, buf, len, tag);
    pthread_mutex_unlock(&s->rlock);
    return code;
}

static int empty_error(double timeout)
{
    if (timeout == 0)
        return mp__error(MP_EEMPTY, "queue is empty");
    return mp__error(MP_EEMPTY, "queue still empty after %.3g s", timeout);
}

/* `local` (local_cap bytes, may be NULL) receives a small item instead of a malloc'd buffer. */
static int get_tagged(mp_queue *q, void **buf, size_t *len, uint32_t *tag, double timeout,
                      void *local, size_t local_cap)
{
    int code = check_open(q);
    if (code < 0)
        return code;
    struct qshared *s = q->s;
    double deadline = NAN;
    bool spun = timeout == 0;
    if ((code = qlock(q)) < 0)
        return code;
    for (;;) {
        if (s->st.s_active && !s->st.s_claimed) {
            code = get_stream(q, buf, len, tag);
            if (code != 0)
                break;
            continue;
        }
        if (ld(&s->headw) != ld(&s->tailw) && !s->st.s_active) {
            code = take_record(q, buf, len, tag, local, local_cap);
            break;
        }
        stream_repair(s, false, false, false);
        if (!spun) {
            spun = true;
            uint64_t seen = ld(&s->tailw); /* a put moves it */
            qunlock(q);
            spin_while(&s->tailw, seen);
            if ((code = qlock(q)) < 0)
                return code;
            continue;
        }
        code = timeout == 0 ? MP_ETIMEOUT
                            : qwait(q, &s->data_seq, &s->get_waiters,
                                    lazy_deadline(&deadline, timeout));
        if (code < 0)
            break;
    }
    uint32_t put_waiters = s->put_waiters;
    uint32_t more = ld(&s->headw) != ld(&s->tailw) && s->get_waiters;
    qunlock(q);
    if (code >= 0) {
        wake(&s->space_seq, put_waiters, INT32_MAX);
        wake(&s->data_seq, more, 1); /* pass the baton if items remain */
        return 0;
    }
    return code == MP_ETIMEOUT ? empty_error(timeout) : code;
}

int mp_queue_get_bytes(mp_queue *q, void **buf, size_t *len, double timeout)
{
    uint32_t tag;
    if (!buf || !len)
        return mp__error(MP_EINVAL, "mp_queue_get_bytes: NULL output pointer");
    *buf = NULL;
    *len = 0;
    return get_tagged(q, buf, len, &tag, timeout, NULL, 0);
}

int mp_queue_get(mp_queue *q, mp_value **out, double timeout)
{
    void *buf;
    size_t len;
    uint32_t tag;
    uint64_t local[32]; /* small items are decoded from here, without a malloc */
    if (!out)
        return mp__error(MP_EINVAL, "mp_queue_get: NULL output pointer");
    *out = NULL;
    int code = get_tagged(q, &buf, &len, &tag, timeout, local, sizeof local);
    if (code < 0)
        return code;
    if (tag == TAG_VALUE) {
        code = mp_value_decode(buf, len, NULL, 0, out);
    } else {
        *out = mp_value_bytes(buf, len);
        code = *out ? 0 : -ENOMEM;
    }
    if (buf != local)
        free(buf);
    return code;
}

int mp_queue_get_nowait(mp_queue *q, mp_value **out) { return mp_queue_get(q, out, 0); }

/* ---- sizes --------------------------------------------------------------------------------- */

size_t mp_queue_qsize(const mp_queue *q)
{
    if (!q)
        return 0;
    const struct qshared *s = q->s;
    /* Head first: the tail only moves forward, so the difference is never negative. */
    uint64_t h = atomic_load_explicit(&s->headw, memory_order_acquire);
    uint64_t t = atomic_load_explicit(&s->tailw, memory_order_acquire);
    return (size_t)(items_between(s, h, t) +
                    atomic_load_explicit(&s->active_pub, memory_order_acquire));
}

bool mp_queue_empty(const mp_queue *q) { return mp_queue_qsize(q) == 0; }

bool mp_queue_full(const mp_queue *q)
{
    return q && q->s->maxsize && mp_queue_qsize(q) >= q->s->maxsize;
}

size_t mp_queue_maxsize(const mp_queue *q) { return q ? (size_t)q->s->maxsize : 0; }

/* ---- JoinableQueue --------------------------------------------------------------------------- */

int mp_queue_task_done(mp_queue *q)
{
    if (!q)
        return mp__error(MP_EINVAL, "queue is NULL");
    struct qshared *s = q->s;
    if (!s->joinable)
        return mp__error(MP_ESTATE, "task_done on a queue that is not joinable");
    int code = qlock(q);
    if (code < 0)
        return code;
    if (s->st.unfinished == 0) {
        qunlock(q);
        return mp__error(MP_ESTATE, "task_done() called too many times");
    }
    qstate n = s->st;
    n.unfinished--;
    commit(s, &n);
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
    int code = qlock(q);
    if (code < 0)
        return code;
    while (s->st.unfinished > 0) {
        stream_repair(s, false, false, false);
        if (s->st.unfinished == 0)
            break;
        code = timeout == 0 ? MP_ETIMEOUT : qwait(q, &s->join_seq, &s->join_waiters, deadline);
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

/* ---- the "queue" kind ---------------------------------------------------------------------- */

static int queue_export(void *obj, void **data, size_t *len, int *fds, size_t *nfds)
{
    mp_queue *q = obj;
    *data = malloc(1);
    if (!*data)
        return mp__error(-ENOMEM, "exporting a queue");
    *len = 0;
    fds[0] = q->shm.fd;
    *nfds = 1;
    return 0;
}

static int queue_import(const void *data, size_t len, int *fds, size_t nfds, void **obj)
{
    (void)data;
    (void)len;
    if (nfds != 1) {
        for (size_t i = 0; i < nfds; i++)
            mp__close(fds[i]);
        return mp__error(MP_EPROTO, "bad queue handle (%zu fds)", nfds);
    }
    mp__shm shm;
    int code = mp__shm_attach(&shm, fds[0], Q_HDR + 4096);
    if (code < 0)
        return code;
    struct qshared *s = shm.addr;
    if (s->magic != Q_MAGIC || s->version != Q_VERSION || shm.size != Q_HDR + s->capacity ||
        s->posbits != (uint32_t)__builtin_ctzll(s->capacity) + 1) {
        mp__shm_release(&shm);
        return mp__error(MP_EPROTO, "shared segment is not a queue");
    }
    mp_queue *q = attach(&shm);
    if (!q)
        return -ENOMEM;
    *obj = q;
    return 0;
}

static void queue_release(void *obj) { mp_queue_free(obj); }

const mp_kind mp_kind_queue = {
    .name = "queue",
    .export_obj = queue_export,
    .import_obj = queue_import,
    .release_obj = queue_release,
};

__attribute__((constructor(200))) static void queue_register(void)
{
    mp_kind_register(&mp_kind_queue);
}
