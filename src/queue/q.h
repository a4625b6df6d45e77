/* Private parts of the queue module, shared by the files of src/queue/:
 *   queue.c    creating, attaching and freeing a queue, sizes, the "queue" kind
 *   putget.c   put and get: a record in the ring, or a stream for a big item
 *   ring.c     a record in the ring: room, copy in, copy out; producers map it in ahead
 *   journal.c  the robust lock and the crash-safe commits (position words, journal)
 *   wait.c     sleeping on the futex words; brief spinning first
 *   stream.c   items larger than the ring, streamed through it; repair of dead owners
 *   take.c     a plain queue's get: records taken without the lock, by compare-and-swap
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
 * Items are records [u64 len][u32 tag][u32 pad][payload, padded to 8], or for an item of
 * at most 7 bytes (an int of up to 32 bits, None, a short str or bytes; put and put_many
 * write these) one word holding tag, length and payload (see rec_is_word), at
 * monotonically increasing byte positions (modulo capacity).
 *
 * Crash safety: `lock` protects the tail position word (tailw: byte position and item
 * count packed in one u64), a struct (qstate: JoinableQueue's count, the stream) and
 * JoinableQueue's table of task holders (holders.c); in a JoinableQueue it protects the
 * head word (headw) too. A put of a ring record in a plain queue changes one position
 * word: a single 8-byte store commits it. Any other change under the lock (a
 * JoinableQueue's put or get moves a position word together with its count or a holder)
 * is made on a local copy, written to a journal, flagged valid, applied, then unflagged.
 * The ring bytes of a record are written before the commit that publishes them and read
 * before the commit that frees them. So when a process dies holding the robust mutex, the
 * next locker (EOWNERDEAD) rolls the journal forward if it was valid and otherwise finds
 * the last committed state intact: a half-written put is simply not there, a half-done
 * get leaves the item for the next consumer. Nobody ever sees a torn item.
 * A plain queue's consumers take records without the lock (take.c): copy the record out,
 * then one compare-and-swap of headw commits the get; a failed swap (another consumer was
 * first) throws the copy away. The head of a plain queue therefore never moves by a plain
 * store nor through the journal (journal_apply leaves it alone), even under the lock. A
 * consumer killed before its swap took nothing; after it, the item went with it, exactly
 * as a consumer killed just after a locked get returned; it holds no lock, so it leaves
 * nothing to repair. What a killed process can leave behind is thus unchanged (the kill
 * storms in test_fault_queue.c check it). Producers check room against head_seen, a value
 * headw had, so a head moving under them only means more room than they think.
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
 * Speed: the lock and head_seen (producers), tailw (written by producers, read by
 * consumers) and headw (consumers) each have their own cache line; the waiter counts sit
 * on two more (get_waiters alone, then put_waiters with the rest: the struct's _Alignas
 * applies to both of its declarators), written only around sleeps. A put reads the consumers' line only when
 * head_seen says the ring is full; a get reads tailw only when its process's view of the
 * tail (tail_seen, take.c) shows no items left at the head. A consumer reading tailw thus
 * never takes the lock's line from a producer (whose next lock would wait for it): the
 * tail's store waits in the store buffer alongside the ring's, and both misses overlap
 * at the unlock. Waiters count themselves (get_waiters, put_waiters) under the lock, so
 * when nobody sleeps a put or get neither bumps a futex word nor makes a wake syscall;
 * when someone sleeps, wakers skip the futex call for sleepers already woken
 * (get_pending, put_woken) instead of calling it on every item until the sleeper runs. A
 * consumer facing an empty ring spins briefly on tailw, without the lock, before taking
 * it to sleep; a producer facing a full one spins on headw; a producer facing a held lock
 * spins reading the lock word (journal.c).
 * An int, the common item, is built in a register as one word record (q_int_word: ints
 * of up to 32 bits) and written with one store (mp__q_put_word), or for a wider int packed
 * into whole words (q_pack_int_words, mp__q_put_words); a word record is one 8-byte store
 * before the tail's commit, so the crash argument above holds unchanged. A get_into of a
 * small record hands its words back in registers (mp__q_take_words) and decodes an int
 * word by a table of lengths (q_word_int); small records are copied in and out without
 * memcpy calls (copy_small), and no byte or word store is re-read wider (a
 * store-forwarding stall).
 * The ring's default size (Q_DEFAULT_CAP, 4 MiB; 8 MiB until Dec 2026): a fresh ring's
 * pages are allocated and zeroed as the first producer reaches them, and every process
 * mapping it faults each page in once more; a producer a time slice ahead of its consumer
 * (two processes sharing a core) walks lines the consumer then misses. Measured with word
 * records, a new queue per run of 1M ints (perf stat, 6 runs per figure, 3-5 rounds, load
 * 4.4-5.8): page faults per run 1p1c ~2300-3000 / ~1170 / ~650 / ~380 for 8 / 4 / 2 /
 * 1 MiB, CPU per run 38-58 / 28 / 27-53 / 36-42 ms; 4p4c ~2600 / ~2300 / ~2000 / ~1300
 * faults (about 1200 of them the 8 forks'), 45-63 / 40 / 42-75 / 44-53 ms. Warming an
 * 8 MiB ring first (a lap of puts and gets in the creator) gave 4p4c most of the smaller
 * ring's gain: the allocation, not the cache, is what the size costs there. Not smaller
 * than 4 MiB: with 2 MiB, one 1 MiB item fits at a time, so the producer's copy waits for
 * the consumer's (queue_1mib_items, 8 alternating rounds: medians ~10.7 GB/s with 8 MiB,
 * ~9.5 with 2, ~13 with 4; 1 MiB items would be streamed with 1 MiB).
 * Batches (batch.c) put many records with one copy and one tail store, and take them with
 * one copy and one head store: lock, commit and wake-up are paid once per batch.
 * Where the time per item goes (perf record -g, callgrind; ints as MessagePack values; 2
 * cores of a KVM guest shared with other work, Dec 2026). A first profile (1 producer + 1
 * consumer process, 4M ints) blamed the robust mutex ~20%, the value churn ~15%
 * (mp_value_int/free/decode), memcpy ~7% and __tls_get_addr ~4.5%; then ints were packed
 * by q_pack_int, the value cache became initial-exec TLS and consumers took records
 * without the lock (take.c) after a profile put 65% of the time in the lock, fought over
 * by both sides. Third round (this layout, the word paths, mp__q_take_words, the wider
 * tail view), one process, best of 30+ x 20k ints: a put (with mp_value_int +
 * mp_value_free) ~23.5 -> ~18 ns, a get ~22 -> ~18.5 ns; callgrind, 100k put+get pairs
 * with their values: 92.4M -> 69.3M instructions. Boost.Interprocess' message_queue, raw 8
 * bytes and no values, takes ~10.5 ns per send and per receive on the same machine.
 * Across processes (bench_queue's rows, medians of 8 alternating runs at load 6-9):
 * 1p1c 6.1M -> 8.9M items/s, 4p4c 6.5M -> 8.0M, batch64 13.9M -> 18.1M; with the
 * lighter lock fast path merged too (load 5-7): 1p1c 8.0M -> 14.2M (Boost 13.1M, 0.86-1.60x
 * per run), 4p4c 8.2M -> 9.8M (Boost 15.0M, 0.35-1.13x), batch64 17.4M -> 22.0M. No futex call
 * and almost no spinning in either int row (strace -c -f, and counters in a test build:
 * per 250k puts in 4p4c a few thousand lock spins, nearly all under 10 pauses, and under
 * 6 sleeps; a few thousand spins on an empty ring, nearly all under 10 pauses, and a few
 * sched_yields), so what is left is CPU per item: three locked instructions (the lock's
 * CAS, the unlock's exchange, the head's CAS: ~4 ns each alone, more when they wait for a
 * store buffer or a line), mp_value_int + mp_value_free on each side (~5.5 ns per pair:
 * the API's unit), and ~15 ns of bookkeeping spread thin (the robust-list entry on every
 * lock, position-word arithmetic, wake checks, the tail view; no function above ~20%).
 * Across processes the profiles are flat and the same functions are each slower: 1p1c
 * ~60-90 CPU-ns per item (the consumer chases the producer: the ring's and the tail's
 * lines cross cores every item or two; on one core, 50-70: the 8 MiB ring of the time did
 * not fit the L2 (1 MiB per core: lscpu's "2 MiB" is 2 of them) when the producer ran a
 * time slice ahead; Boost's ~1.5 MiB nearly does),
 * 4p4c ~75-130 (8 processes on 2 cores: each atomic's line last written by the other
 * core half the time; ~5% page faults of 8 processes mapping the ring). Boost's queue:
 * ~35-80 in both. A busy machine runs both at the rate of their CPU per item, where
 * Boost's raw bytes cost about half our values plus robustness (ours/Boost 0.3-1.5x in
 * those runs); 2x needs about 20 CPU-ns per item, less than the three atomics and the
 * values alone. Quiet, the two 1p1c processes run on separate cores and the chase decides.
 * Batches of 64 ints (put_many / get_many, 1 producer + 1 consumer process, 16M ints, Dec
 * 2026): with a new value and a free per item on each side and 24-byte records, the
 * producer spent ~19% of its time making and freeing values, ~6% in memset (each record's
 * padding) and most of put_many's own share in one store-forwarding stall (the header
 * built on the stack, copied whole); the consumer ~17% making and freeing values, ~8%
 * reading record lengths from the ring (the first touch of each line from the other core)
 * and ~7% decoding. Hence get_many_into and mp_value_set_* (no value made or freed per
 * item), word records (an int is 8 bytes of ring, as in a bare ring of 8-byte slots: a
 * third of the lines to move; get_many skips walking them when the position words show
 * only words between head and tail) and word-wide packing and unpacking (a table of
 * lengths by first byte). With reused values and word records (before the last two
 * changes) a 2-process profile showed neither side waiting and the time split evenly: the
 * producer ~55% put_many, ~30% the caller's mp_value_set_int loop; the consumer ~40%
 * get_many's decoding, ~20% take_many, ~35% the caller's mp_value_get_int loop. Counted
 * by callgrind (one process, batches of 64 ints near 1M): the put side is 56 instructions
 * an item (put_many's loop 36: load the value, check it, build the word, store it; the
 * caller's set loop 15; lock, room, copy and publish ~3, once per batch), the get side 60
 * (decoding into the reused value 40, the caller's read loop 14, taking and copying ~5).
 * Timed in one process, best of 300 x 64k items: the put side (values set + put_many)
 * 12.6 -> 5.2 ns an item, the get side (get_many + reading the values) 14.4 -> 4.5 ns
 * (with a new value and a free per item as before: 9.5 and 10.5 ns). What remains is the
 * values API itself (a call per item to set or read one, a type check per item inside)
 * and the pack/unpack per item; the lock, the commit, the wake and the tail's and head's
 * lines crossing cores are paid once per 64.
 * Single items without a value made and freed per item (Dec 2026): mp_queue_get_into
 * decodes an int into the caller's scalar in place (mp__q_take_words, then the words
 * unpacked; no local buffer on that path) and a producer reuses its value with
 * mp_value_set_int, as bench_queue's int rows now do. One process, best of 300 x 20k ints
 * at load ~3: a get (mp_queue_get + mp_value_free) 22 -> 14.5 ns (get_into), a put (with
 * mp_value_int + mp_value_free) 19-20 -> ~15 ns (set_int); callgrind: 211 instructions a
 * get_into (mp__q_take_words 139 of them), 259 a put (mp__q_put_words 206). Across
 * processes (three sets, each the median of 6 alternating rounds of 5 runs, load 1.8-5):
 * 1p1c 13.1-17.9M -> 16.9-20.3M items/s (Boost 10.4-15.9M: 1.1-1.8x by round medians),
 * 4p4c 9.9-12.6M -> 11.8-14.2M (Boost 10.7-12.4M: 1.0-1.2x); single runs vary by 2x or
 * more either way on this shared machine. What is left per item is the queue's own path
 * (the lock, the head's CAS, the lines crossing cores), not the values.
 * Single items as word records (Dec 2026, a fourth round): a put of an int of up to 32
 * bits (or any item of up to 7 bytes) writes one 8-byte word record, as put_many does, so
 * an int moves a third of the ring lines it used to (24 bytes of ring per int before);
 * get_into's word path returns its words in registers (a record assembled on the stack and
 * read back 16 bytes at a time stalled on store forwarding); the default ring became
 * 4 MiB (above). One process, best of 300 x 20k ints (load ~3): a put (mp_value_set_int +
 * mp_queue_put) 14.6 -> 13.0 ns, a get_into 13.9 -> 10.6 ns; callgrind, 100k of each: 261
 * -> 206 instructions a put (mp__q_put_word 165, of which the lock 45), 211 -> 194 a
 * get_into (mp__q_take_words 127). Across processes, what a put waits for is the unlock's
 * exchange (~25% of mp__q_put_word's samples in 4p4c, cpu-clock perf: it drains the tail's
 * and the ring's stores, whose lines the consumers hold) and the lock's CAS; a get, the
 * head's CAS. No futex call worth counting (~100 per 1M items in 4p4c, Boost's queue
 * ~15000), and the kernel's share is page faults and the 8 forks. Pinned to the 2 cores
 * (one producer, one consumer; 3 rounds of 5 runs at load ~3), 1p1c ran ~30M items/s
 * before and ~33M after: the gains come mostly where the two share a core or the ring is
 * fresh, which is most runs of the unpinned benchmark on this machine. Boost's queue, same harness (perf stat): ~55
 * CPU-ns per item over its two rows; ours ~37 in 4p4c, ~65 in 1p1c (the consumer spins
 * on the tail while it keeps up). bench_queue against peer_queue, the code before this
 * round (b4a6491) alternated with it, 10 rounds at load 2.2-4.8, medians: 1p1c 21.1M ->
 * 23.2M items/s, ours/Boost 1.74x -> 1.89x (per round 0.97-2.69x -> 1.25-3.20x; after
 * ahead of before in 6 rounds of 10); 4p4c 16.8M -> 22.4M, 1.37x -> 1.80x (0.98-1.66x
 * -> 1.19-2.26x; ahead in 10 of 10); Boost 11.5M and 11.4M. queue_1p1c_batch64 and
 * queue_1mib_items unchanged within the noise (6-8 alternating rounds).
 * A fifth round (Dec 2026), on a new host: two vCPUs of a Zen 5 guest under a
 * paravirtualised kernel, where a cache line takes 180-490 ns to cross between the cores
 * (two threads bouncing one line, 200k round trips) and a page fault
 * ~3-10 us. There 1p1c fell to Boost's rate (0.98-1.5x): a consumer that keeps up re-read
 * tailw right after each item, so every put's unlock waited a whole crossing for the tail's
 * and the ring's lines. Now an empty get first waits an adaptive delay (wait.c,
 * mp__q_spin_for_items): 1p1c 10-12M -> 20-22M items/s, a one-item ping-pong unchanged.
 * 4p4c was then bound by the kernel as much as by the lines: ~3100 page-fault exceptions
 * a run (a producer writing a shared mapping takes one per page; reads get 16 at once) and
 * the 8 forks (6-8 ms of a ~70 ms run, the same for Boost's side). Producers now map the
 * ring in by the stretch before writing it (ring.c, mp__q_prefault): ~700 exceptions a run,
 * 14.4M -> 17.8M items/s (medians of 5 alternations). Tried and dropped in that round, no
 * gain within the noise: the producers' copy of tailw in the lock's line (the profile's
 * "load of tailw" was the store's skid), lock spinning with exponential gaps, and yielding
 * before a lock sleep (+4%, inside the noise). Across 11 runs of the final code: 1p1c
 * 2.41-3.51x Boost, 4p4c 2.32-2.70x.
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
#define Q_VERSION 8
#define Q_HDR 4096
#define Q_DEFAULT_CAP (4u << 20) /* see "The ring's default size" in DESIGN */
#define Q_REC 16
#define TAG_BYTES 1u
#define TAG_VALUE 2u
#define SLICE 0.25          /* longest single futex sleep: re-check for dead peers */
#define Q_PREFAULT_FIRST 15 /* producers map the ring in 32 KiB, then 64, ... (ring.c) */
#define Q_PREFAULT_MAX 18   /* ... up to 256 KiB at a time */
#define Q_GET_DELAY_MIN 2   /* pauses an empty ring's consumer waits before re-reading */
#define Q_GET_DELAY_MAX 256 /* ... at most: ~5 us on a 19 ns pause (Zen 5), ~10 on Skylake */
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
 * CPUs: line 0 is written once at creation; a put of a small item writes only the lock's
 * line and the tail's, a get only the head's, besides the ring. The rest changes only
 * for streams, JoinableQueue puts, task_done and waits. */
struct qshared {
    uint32_t magic, version;
    uint64_t capacity, maxsize;
    uint32_t joinable, posbits;
    uint32_t dead_tasks_done; /* JoinableQueue: a dead holder's tasks count as done */
    _Alignas(64) mp__rfutex lock;
    /* Producers' line. head_seen is the producers' last view of headw (under lock): a put
     * checks its room against it and reads headw, the consumers' line, only when that
     * view says the ring is full. */
    uint64_t head_seen;
    /* The tail moves under lock; consumers read it (take.c). Its own line, so that their
     * reads do not take the lock's line from the producer, whose next lock would then
     * wait for it (the tail's store waits in the store buffer alongside the ring's). */
    _Alignas(64) _Atomic uint64_t tailw;
    /* Consumers' line. In a plain queue the head moves by compare-and-swap, with or
     * without lock (take.c); in a JoinableQueue, under lock through the journal. */
    _Alignas(64) _Atomic uint64_t headw;
    /* Sleepers on data_seq / space_seq, counted under lock (atomically: a plain queue's
     * consumers read put_waiters without it). So that a waker calls the futex once per
     * sleep rather than once per item until the sleeper runs: get_pending counts the
     * sleepers woken and not yet back (under lock; each returning sleeper takes one off,
     * so it can only fall short, which costs a spare wake); put_woken is 1 once a taker
     * woke every producer counted, cleared by each new sleeper. Written only around
     * sleeps and wakes, so both sides keep this line shared. */
    _Alignas(64) uint32_t get_waiters, put_waiters;
    uint32_t get_pending, put_woken;
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
                   offsetof(struct qshared, head_seen) + 8 - offsetof(struct qshared, lock) <= 64,
               "the lock and the producers' view of the head share one cache line");
_Static_assert(sizeof(struct qshared) <= Q_HDR, "queue header must fit its page");

struct mp_queue {
    mp__shm shm;
    struct qshared *s;
    unsigned char *ring;
    uint64_t mask;
    bool closed;
    uint32_t slot; /* JoinableQueue: this process's holder slot last time (a hint) */
    /* A plain queue's consumers in this process: their last view of tailw and the head it
     * is good for (take.c), so a get reads the producers' line only when the items it
     * knew of are gone or another process moved the head. */
    _Atomic uint64_t tail_seen, head_mine;
    uint64_t tail_cache_max; /* 0: no such view (rings > 8 MiB, see take.c) */
    /* Pauses a consumer in this process waits, on finding the ring empty, before it
     * first re-reads tailw (wait.c: mp__q_spin_for_items); adapts between bounds. */
    _Atomic uint32_t get_delay;
    /* The stretch of ring bytes this handle's producers last mapped in at once (ring.c's
     * prefault): its first page << 8 | log2 of its size (0: none yet). Copied by fork as
     * it is: a child then faults that stretch in page by page, as before. */
    _Atomic uint64_t pf_win; /* (relaxed: a hint, threads of a process may race on it) */
};

static inline uint64_t rec_size(uint64_t len) { return Q_REC + ((len + 7) & ~(uint64_t)7); }

/* Word records: an item of at most 7 payload bytes may be one 8-byte word instead of a
 * 16-byte header and a padded payload (put and put_many write them: an int is 8 bytes of
 * ring, not 24). Its top byte is 0x80 | tag << 4 | len, its low 7 bytes (the first 7 in
 * memory) the payload. A record is told by its first word: top bit set, a word record;
 * clear, the length of a [len][tag] record (at most the capacity, so never that big). */
#define Q_WORD_MAX 7
static inline bool rec_is_word(uint64_t w) { return w >> 63; }
static inline uint32_t word_tag(uint64_t w) { return (uint32_t)(w >> 60) & 7; }
static inline uint64_t word_make(uint64_t payload, uint32_t tag, uint64_t len)
{
    return payload | (0x80 | (uint64_t)tag << 4 | len) << 56;
}
/* The payload length and ring bytes of the record whose first word is w (sane). */
static inline uint64_t rec_len_of(uint64_t w) { return rec_is_word(w) ? (w >> 56) & 7 : w; }
static inline uint64_t rec_bytes(uint64_t w) { return rec_is_word(w) ? 8 : rec_size(w); }
/* Whether w can be the first word of a record in a ring of `capacity` bytes. */
static inline bool rec_sane(uint64_t capacity, uint64_t w)
{
    if (rec_is_word(w))
        return (word_tag(w) == TAG_BYTES || word_tag(w) == TAG_VALUE) && !(w >> 59 & 1);
    return w <= capacity - Q_REC;
}

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
    atomic_store_explicit(w, value, memory_order_release); /* a plain store on x86 */
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static inline void qunlock(mp_queue *q)
{
    mp__rf_unlock(&q->s->lock);
}

static inline void wake(_Atomic uint32_t *seq, uint32_t waiters, int n)
{
    if (waiters)
        mp__futex_wake(seq, n);
}

static inline void bump(_Atomic uint32_t *seq) { atomic_fetch_add(seq, 1); }

/* Up to 16 bytes without a call to memcpy (overlapping loads and stores; most items). */
static inline void copy_small(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *p = src;
    if (n >= 8) {
        uint64_t a, b;
        memcpy(&a, p, 8);
        memcpy(&b, p + n - 8, 8);
        memcpy(d, &a, 8);
        memcpy(d + n - 8, &b, 8);
    } else if (n >= 4) {
        uint32_t a, b;
        memcpy(&a, p, 4);
        memcpy(&b, p + n - 4, 4);
        memcpy(d, &a, 4);
        memcpy(d + n - 4, &b, 4);
    } else if (n) {
        d[0] = p[0];
        d[n / 2] = p[n / 2];
        d[n - 1] = p[n - 1];
    }
}

static inline void ring_write(mp_queue *q, uint64_t pos, const void *src, size_t n)
{
    uint64_t off = pos & q->mask, first = q->s->capacity - off;
    if (n <= 64 && n % 8 == 0 && n <= first) { /* a small record: whole words */
        uint64_t *d = (uint64_t *)(void *)(q->ring + off);
        const unsigned char *p = src;
        for (size_t k = 0; k < n / 8; k++)
            memcpy(&d[k], p + 8 * k, 8);
    } else if (n <= first) {
        memcpy(q->ring + off, src, n);
    } else {
        memcpy(q->ring + off, src, first);
        memcpy(q->ring, (const char *)src + first, n - first);
    }
}

static inline void ring_read(mp_queue *q, uint64_t pos, void *dst, size_t n)
{
    uint64_t off = pos & q->mask, first = q->s->capacity - off;
    if (n <= 16 && n <= first) {
        copy_small(dst, q->ring + off, n);
    } else if (n <= first) {
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

/* The same bytes as whole little-endian words, zero-padded (w[1] is used from 9 bytes on):
 * a put writes them to the ring with word stores, no byte copies in between. */
static inline size_t q_pack_int_words(int64_t i, uint64_t w[2])
{
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    w[1] = 0;
    if (i >= -32 && i <= 127) {
        w[0] = (uint8_t)i; /* positive or negative fixint */
        return 1;
    }
    uint64_t t = mp__int_format(i);
    unsigned n = 1u << (t & 3);
    uint64_t be = __builtin_bswap64((uint64_t)i); /* the big-endian bytes MessagePack wants */
    if (n < 8)
        be >>= 64 - 8 * n;
    else
        w[1] = be >> 56;
    w[0] = t | be << 8;
    return 1 + n;
#else
    w[0] = w[1] = 0;
    return q_pack_int(i, (unsigned char *)w);
#endif
}

/* An int as one word record (word_make, TAG_VALUE) when its MessagePack is at most 7 bytes
 * (every int of 32 bits or fewer): true with *w. The common ints are built directly, the
 * rest through q_pack_int_words (the same bytes). Shared by put and put_many. */
static inline bool q_int_word(int64_t i, uint64_t *w)
{
    uint64_t u = (uint64_t)i;
    if (u + 32 <= 32 + 127) /* -32..127: a fixint */
        *w = word_make(u & 0xff, TAG_VALUE, 1);
    else if (u <= 0xff)
        *w = word_make(0xcc | u << 8, TAG_VALUE, 2);
    else if (u <= 0xffff)
        *w = word_make(0xcd | (uint64_t)__builtin_bswap16((uint16_t)u) << 8, TAG_VALUE, 3);
    else if (u <= 0xffffffff)
        *w = word_make(0xce | (uint64_t)__builtin_bswap32((uint32_t)u) << 8, TAG_VALUE, 5);
    else { /* wider, or negative */
        uint64_t p[2];
        size_t n = q_pack_int_words(i, p);
        if (n > Q_WORD_MAX)
            return false;
        *w = word_make(p[0], TAG_VALUE, n);
    }
    return true;
}

/* The int in a word record's payload (its low bytes; the top byte may hold the word's
 * tag and length) of len bytes, when it is an int of up to 32 bits (fixint, or uint or int
 * of 1, 2 or 4 bytes): into *i. False for anything else (q_unpack_int's or the codec's
 * job). A table of lengths by first byte (batch.c) instead of a branch per format. */
extern const unsigned char mp__q_word_int_len[256];
static inline bool q_word_int(uint64_t w, uint64_t len, int64_t *i)
{
    unsigned c = (unsigned)w & 0xff;
    if (mp__q_word_int_len[c] != len)
        return false;
    if (len == 1) {
        *i = (int8_t)c;
        return true;
    }
    unsigned shift = 72 - 8 * (unsigned)len;  /* 64 - 8 x the bytes after c */
    uint64_t be = __builtin_bswap64(w) << 8; /* the bytes after c, big-endian, on top */
    *i = c < 0xd0 ? (int64_t)(be >> shift) : (int64_t)be >> shift;
    return true;
}

/* The reverse, for a get: whether the n bytes at p are exactly one MessagePack int that
 * fits int64 (any int format, not only the shortest), into *i. Anything else (false) goes
 * through the codec, which builds the same value from an int but costs a few calls more. */
static inline bool q_unpack_int(const unsigned char *p, size_t n, int64_t *i)
{
    if (n == 1 && (p[0] <= 0x7f || p[0] >= 0xe0)) {
        *i = (int8_t)p[0];
        return true;
    }
    if (n < 2 || p[0] < 0xcc || p[0] > 0xd3)
        return false;
    unsigned len = 1u << (p[0] & 3);
    if (n != 1 + len)
        return false;
    uint64_t u = 0;
    for (unsigned k = 0; k < len; k++)
        u = u << 8 | p[1 + k];
    if (p[0] <= 0xcf) { /* uint 8..64 */
        if (u > INT64_MAX)
            return false;
        *i = (int64_t)u;
    } else { /* int 8..64: sign-extend */
        unsigned shift = 64 - 8 * len;
        *i = (int64_t)(u << shift) >> shift;
    }
    return true;
}

/* q_unpack_int for a payload that may be read past its end: p[0..7] whole, and p[1..8]
 * for a 9-byte int (a record's payload in a batch's buffer, padded to 8; a get's local
 * buffer): loads, not a loop over bytes. The bytes past n do not matter. */
static inline bool q_unpack_int_padded(const unsigned char *p, size_t n, int64_t *i)
{
    unsigned c = p[0];
    if (n == 1 && (c <= 0x7f || c >= 0xe0)) {
        *i = (int8_t)c;
        return true;
    }
    if (c < 0xcc || c > 0xd3)
        return false;
    unsigned len = 1u << (c & 3), shift = 64 - 8 * len;
    if (n != 1 + len)
        return false;
    uint64_t u;
    if (len == 8) {
        memcpy(&u, p + 1, 8);
        u = __builtin_bswap64(u);
    } else {
        memcpy(&u, p, 8);
        u = (__builtin_bswap64(u) << 8) >> shift; /* p[1..len] as a big-endian number */
    }
    if (c <= 0xcf) { /* uint 8..64 */
        if (u > INT64_MAX)
            return false;
        *i = (int64_t)u;
    } else { /* int 8..64: sign-extend */
        *i = len == 8 ? (int64_t)u : (int64_t)(u << shift) >> shift;
    }
    return true;
}

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
 * 0 (re-check), MP_ETIMEOUT, MP_EINTERRUPTED, or a lock error. With `watch`, returns 0
 * without sleeping when *watch no longer equals `seen` once the sleeper is counted: the
 * word a lock-free peer moves before it reads the count (a producer waiting for room
 * watches headw). `woken` (may be NULL) is cleared once the sleeper is counted; `pending`
 * (may be NULL) loses one on return, if not 0. */
int mp__q_wait(mp_queue *q, _Atomic uint32_t *seq, uint32_t *waiters, uint32_t *woken,
               uint32_t *pending, double deadline, const _Atomic uint64_t *watch,
               uint64_t seen);
/* Spin a little (unlocked) hoping the counter moves away from `value`. */
void mp__q_spin_while(const _Atomic uint64_t *c, uint64_t value);
/* A plain queue's consumer facing an empty ring whose tail it last saw at `seen`: wait
 * this process's delay, re-read the tail, adapt the delay to how many items came
 * meanwhile, then (still empty) spin as mp__q_spin_while does. */
void mp__q_spin_for_items(mp_queue *q, uint64_t seen);

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
/* Map in (writable) the ring's pages for `need` bytes from position `pos`, a window at a
 * time; unlocked. */
void mp__q_prefault(mp_queue *q, uint64_t pos, uint64_t need);
/* Publish `items` records (`need` bytes) just written at the tail. Under lock; releases it
 * and wakes consumers. */
void mp__q_publish(mp_queue *q, uint64_t items, uint64_t need);
int mp__q_put_record(mp_queue *q, uint32_t tag, const void *buf, size_t len, double timeout);
/* put_record of a payload of len <= 16 bytes given as whole words w (zero padding): an
 * int's MessagePack (q_pack_int_words). */
int mp__q_put_words(mp_queue *q, uint32_t tag, size_t len, const uint64_t w[2], double timeout);
/* put_record of one word record w (word_make: an int of up to 32 bits). */
int mp__q_put_word(mp_queue *q, uint64_t w, double timeout);
/* JoinableQueue (a plain queue takes in take.c): take the record at head. Under lock;
 * count > 0 and no stream. */
int mp__q_take_record(mp_queue *q, void **buf, size_t *len, uint32_t *tag, void *local,
                      size_t local_cap);
/* JoinableQueue: take up to `max` whole records at head whose bytes fit `cap`: copied to `dst` as they
 * lie in the ring, then one commit of the head. Under lock; count > 0 and no stream. The
 * number taken (0 when the first record alone exceeds cap), or an error. */
long mp__q_take_records(mp_queue *q, void *dst, size_t cap, size_t max, size_t *bytes);

/* ---- take.c ---- */
struct qbatch;
#define Q_BIG 2 /* mp__q_take: the record at head is larger than the caller's buffer */
/* A plain queue's get without the lock: copy the record(s) at head, then move headw by
 * compare-and-swap. Into `local` (local_cap bytes), or malloc'd when `alloc` and it does
 * not fit; with b (b->max > 0) up to b->max whole records fitting b->cap go to b->dst.
 * 1 taken, 0 empty, Q_BIG (*len: the size of the item at head, which stays), or an
 * error. Also called under lock: the head never moves by a plain store. */
int mp__q_take(mp_queue *q, void **buf, size_t *len, uint32_t *tag, void *local,
               size_t local_cap, bool alloc, struct qbatch *b);
/* mp__q_take of one record whose payload is at most 16 bytes (an int), as its padded
 * words w: 1 taken, 0 empty (nothing waited for), Q_BIG when the record at head is bigger
 * (it stays: take it the general way), or an error. */
int mp__q_take_words(mp_queue *q, uint64_t w[2], size_t *len, uint32_t *tag);

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

/* ---- batch.c ---- */
/* Decode one item (payload p, len bytes, tag) into *slot: a value there is set in place
 * when the item fits it (an int into any scalar, bytes into a value whose memory holds
 * them), else freed and replaced once the new one exists; a NULL *slot gets a new value.
 * `padded`: p[0..7] may be read even when the payload is shorter (q_unpack_int_padded). On
 * failure *slot is unchanged. Shared by get_many_into and get_into. */
int mp__q_decode_into(const unsigned char *p, size_t len, uint32_t tag, bool padded,
                      mp_value **slot);

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
int mp__q_check_open_slow(const mp_queue *q);
/* 0 for an open queue, else MP_EINVAL or MP_ECLOSED with a message. */
static inline int mp__q_check_open(const mp_queue *q)
{
    return __builtin_expect(q && !q->closed, 1) ? 0 : mp__q_check_open_slow(q);
}

#endif
