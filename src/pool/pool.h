/* Private contract between the files of the pool module:
 *   src/pool/chan.c    framed messages (+ SCM_RIGHTS fds) over a worker's Unix socket
 *   src/pool/worker.c  the worker process: initializer, task loop, slot updates
 *   src/pool/pool.c    the pool object: new/close/terminate/join/free, worker start
 *   src/pool/loop.c    the result thread: dispatch, results, deaths, time limits
 *   src/pool/submit.c  apply/map/starmap/imap: jobs and chunks
 *   src/pool/result.c  waiting on results and iterators
 *   src/pool/array.c   mp_pool_map_array through the shared arena
 *   src/pool/fdset.c   the parent's pool fds, which a forked worker closes
 *   src/pool/backend.c workers that are not local processes (a backend's vtable)
 *   src/pool/bigbuf.c  large message blocks kept for the next ones
 * A backend (src/mpi/pool*.c for MPI ranks) gives each worker position a stream socket
 * carrying these same framed messages and a sentinel fd; the loop cannot tell the
 * difference, except that it has no slot to read (the chunk at the head of a remote
 * worker's queue is the one it was running) and cannot replace a remote worker; and a
 * backend may take large messages by pointer (give/take: a MSG_HANDED notice on the
 * socket in their place). */
#ifndef MP_POOL_POOL_H
#define MP_POOL_POOL_H

#include "internal/buf.h"
#include "multiproc/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* ---- wire format ------------------------------------------------------------------ */
/* Every message: this header then `len` body bytes; `nfds` fds ride with its first
 * byte. Task bodies: u16 fn-location length, the location, then the MessagePack list
 * of the chunk's arguments. Result bodies: the MessagePack list of results (nil where
 * a task failed) then, per failure, u32 index, i32 code, u32 length, message. */
enum {
    MSG_READY = 1,     /* worker -> parent: initializer done (body: u32 pid) */
    MSG_INIT_FAIL,     /* worker -> parent: i32 code, message */
    MSG_TASK,          /* parent -> worker: a chunk (arg = number of items) */
    MSG_RESULT,        /* worker -> parent: results of the chunk it got first */
    MSG_ARRAY,         /* parent -> worker: typed range (body: mp__array_task) */
    MSG_ARENA,         /* parent -> worker: the shared arena's memfd (arg = size) */
    MSG_HANDED,        /* pool <-> a backend, never a worker: a large message handed over
                          by pointer stands here in the stream (mp_pool_backend.give/take) */
};
/* Messages of at least this many bytes go between the pool and a backend that takes
 * them by pointer (give/take), not through the socket. */
#define MP__HAND_BYTES 65536
/* Or'ed into MSG_TASK: publish each task's start in the slot (a time limit applies). */
#define MSG_TIMED 0x100u
/* Or'ed into MSG_ARRAY: the range carries its elements (a backend's worker, which has no
 * arena; array_msg.c); its RESULT then carries the output elements (arg 0) or, on a
 * failure, the message (arg = the code). */
#define MSG_INLINE 0x200u
#define MSG_TYPE(t) ((t) & 0xffu)

typedef struct mp__msg_hdr {
    uint32_t type;
    uint32_t nfds;
    uint64_t len;
    uint64_t id;  /* chunk id */
    uint64_t arg; /* items in the chunk, or type-specific */
} mp__msg_hdr;

#define MP__POOL_MAX_FDS 128

/* A received message: fds adopted; the body lies in the channel's reading buffer, valid
 * until that is filled again (mp__rx_fill) or freed. */
typedef struct mp__msg {
    mp__msg_hdr h;
    char *body;
    int fds[MP__POOL_MAX_FDS];
    size_t nfds;
} mp__msg;

/* Reading side of a channel: a growing byte buffer whose first `off` bytes were already
 * taken (compacted lazily), plus a FIFO of fds received. */
typedef struct mp__rx {
    mp__buf b;
    size_t off;
    int *fds;
    size_t nfds, fds_cap;
    bool short_read; /* the last fill got less than it had room for: likely drained */
} mp__rx;

/* Read what the socket has (nonblocking: until EAGAIN; blocking: one read). 1 when
 * bytes arrived, 0 on EOF, -EAGAIN when nothing was there, -errno. */
int mp__rx_fill(mp__rx *rx, int sock, bool nonblock);
/* Take the next whole message if the buffer holds one: 1 (msg filled), 0 (need more),
 * MP_EPROTO. */
int mp__rx_next(mp__rx *rx, mp__msg *msg);
void mp__rx_free(mp__rx *rx);
void mp__msg_clear(mp__msg *msg);

/* Send one whole message, blocking (the worker side). */
int mp__chan_send(int sock, const mp__msg_hdr *h, const void *body, const int *fds);
/* Nonblocking send of msg bytes [*off, total); fds go with offset 0. 1 when all sent,
 * 0 when the socket is full, -errno. */
int mp__chan_send_some(int sock, const void *buf, size_t total, size_t *off, const int *fds,
                       size_t nfds);

/* ---- where a worker is: shared memory slots ---------------------------------------- */
/* One cache line per worker position, written by the worker before a chunk starts (and
 * per task when a time limit is set), read by the parent after the worker died. */
/* The typed path's range message body (then the function location). In the arena:
 * in_off/out_off are the arrays' offsets there. MSG_INLINE: in_off is the offset in the
 * body of the range's input elements, out_off that of the context's bytes (context =
 * their length, context_rel MP__CTX_INLINE), both 16-byte aligned from the frame's start. */
typedef struct mp__array_task {
    uint64_t in_off, out_off, in_size, out_size, first, count, context;
    uint64_t context_rel; /* what context is: MP__CTX_* */
} mp__array_task;
enum {
    MP__CTX_PTR,    /* a pointer (fork) */
    MP__CTX_MAIN,   /* an offset from the main program's load address (spawn, forkserver) */
    MP__CTX_ARENA,  /* an offset into the arena (its bytes were copied there) */
    MP__CTX_INLINE, /* bytes in the message (MSG_INLINE) */
};

typedef struct mp__slot {
    _Atomic uint64_t chunk;    /* id of the chunk being run; 0: none */
    _Atomic uint64_t item;     /* index within the chunk of the task being run */
    _Atomic uint64_t start_ns; /* CLOCK_MONOTONIC start of that task */
    char pad[40];
} mp__slot;

/* ---- the worker (worker.c) ------------------------------------------------------- */
/* The handle kind carrying a worker's socket and the slots memfd into its process. */
extern const mp_kind mp__pool_worker_kind;
typedef struct mp__worker_ctl {
    int sock, slots_fd;
} mp__worker_ctl;
/* Process target of every worker. args: [ctl handle, position, nslots, maxtasks,
 * time limit, initializer location (bytes or nil), initargs, the pid its parent has
 * (0 under forkserver)]. */
int mp__pool_worker_main(mp_value *args);

/* Function locations on the wire: u16 path len, path, u16 sym len, sym, u64 offset. */
int mp__fn_locate(void (*fn)(void), char **buf, size_t *len);
/* The same, shared: *buf lives as long as the program (never free it). */
int mp__fn_locate_shared(void (*fn)(void), const char **buf, size_t *len);
/* The symbol name in a location (or "(unnamed)"). */
void mp__fn_label(const char *buf, size_t len, char *out, size_t cap);
/* Resolve in the worker (cached). */
int mp__fn_resolve(const char *buf, size_t len, void (**fn)(void), size_t *used);

/* ---- the parent's pool fds (fdset.c) ----------------------------------------------- */
/* Mark fd as the pool's (returns fd); mp__pool_fd_close unmarks and closes it. */
int mp__pool_fd_track(int fd);
void mp__pool_fd_close(int fd);
/* In a forked worker: close every marked fd except keep1 and keep2; clear the marks. */
void mp__pool_fd_close_inherited(int keep1, int keep2);

/* ---- parent side --------------------------------------------------------------- */
typedef struct job job;
typedef struct chunk chunk;

/* A ring slot of an iterator (16 bytes: a million-item imap has a million of them). */
typedef struct item {
    union {
        mp_value *v; /* code 0: the value (NULL: nil) */
        char *msg;   /* code < 0: the failure's message */
    } u;
    int code;
    _Atomic int state; /* 0 empty (u NULL, code 0), 1 filled */
} item;

enum job_kind { JOB_APPLY, JOB_MAP, JOB_IMAP, JOB_IMAP_UNORDERED, JOB_ARRAY };

/* The user's handle of an apply/map: the job's own member (no allocation of its own). */
struct mp_pool_result {
    job *j;
};

struct job {
    mp_pool *pool;
    enum job_kind kind;
    _Atomic int refs;     /* the user's handle + the pool while work is outstanding
                             (+ the pool's list of sources while it reads one) */
    _Atomic int done;     /* every item completed (results written before) */
    size_t n;             /* items (for a source: known when it ends) */
    _Atomic size_t completed;
    item *items;          /* iterators: a ring of cap items */
    size_t ring_map;      /* the ring's mapping's size (0: from the heap) */
    /* apply, map, map_array: item i's value (the map's result list takes this array
     * over), and its failure, if any (codes/msgs allocated at the first failure) */
    mp_value **vals;
    mp_value *one; /* apply: vals points here (one allocation less per call) */
    int *codes;
    char **msgs;
    size_t cap;
    bool ring;
    /* iterators */
    _Atomic size_t consumed;    /* items returned by next */
    size_t take_slot;           /* consumed % cap, kept by next (no division per item) */
    _Atomic size_t ring_filled; /* unordered: next slot to fill */
    _Atomic int source_done;    /* the source ended (n final) */
    int source_code;
    char *source_msg;
    mp_pool_source_fn source;
    void *source_ud;
    size_t read;                /* items read from the source */
    size_t chunksize;
    /* map_array: its elements, chunksize the elements of a range; on a backend where
     * the ranges' output elements go (array_msg.c) */
    char *array_out;
    size_t array_n, array_out_size;
    char *fnloc;
    size_t fnloc_len;
    bool fnloc_shared; /* from mp__fn_locate_shared: not the job's to free */
    /* failure of the whole call (lowest index) */
    int first_code;
    size_t first_index;
    char *first_msg;
    mp_value *value; /* final value of apply/map results */
    mp_pool_call_opts opts;
    double time_limit;
    _Atomic int abandoned; /* the iterator was freed: read no more */
    _Atomic int stalled; /* the source waits for the consumer (window full) */
    int wake_fd;     /* a dup of the pool's eventfd: iterators may outlive the pool */
    job *next_src;   /* pool's list of source-fed jobs */
    mp_pool_result handle; /* apply/map: the user's handle (wrap_result) */
};

/* A large message's bytes handed to a backend by pointer (mp_pool_backend.give): shared
 * by the chunk (which goes to another worker if this one dies) and the backend (until
 * its send is done, or for ever if the peer died with it); the last reference frees
 * them. */
typedef struct mp__txbuf {
    _Atomic int refs;
    char *data; /* whole frames, malloc'd */
    size_t len;
} mp__txbuf;
void mp__txbuf_unref(mp__txbuf *t);
/* Large message blocks kept for the next ones (bigbuf.c): a block of at least n bytes
 * (a kept one when n >= MP__HAND_BYTES); give one back (or any malloc'd block: kept when
 * large and there is room, else freed); free the kept ones. */
char *mp__big_alloc(size_t n);
void mp__big_free(char *b);
void mp__big_trim(void);

struct chunk {
    job *job;
    size_t first, count; /* item indexes (absolute) */
    uint64_t id;
    char *buf; /* header + body, ready to send (NULL for a failed chunk) */
    size_t len;
    mp__txbuf *tb; /* buf was handed to a backend (mp__pool_hand): tb owns it */
    size_t cap; /* buf's capacity, when mp__chunk_build made it (0: the chunk is not kept
                   for reuse, see mp__chunk_done) */
    int *fds;
    size_t nfds;
    /* A chunk whose arguments could not be encoded: never sent, the result thread fails
     * its items with this code and message. */
    int fail_code;
    char *fail_msg;
    chunk *next;
};

/* ---- backends: workers that are not local processes ------------------------------ */
/* The vtable a backend library fills (public name: mp_pool_backend). Calls come from
 * mp_pool_new's thread (open), the result thread (start, stop, reap) and the thread that
 * frees the pool (close). */
struct mp_pool_backend {
    const char *name;   /* "mpi": for messages */
    const char *prefix; /* worker names, "MPIPoolWorker" */
    /* Check the options and prepare: the number of workers (o->processes 0: the
     * backend's default) or a negative code with the message recorded. */
    int (*open)(const mp_pool_opts *o, void **state);
    /* Start worker i with boot = [position, init location (bytes or nil), initargs]:
     * *sock is the parent's end of a stream socket (the framed messages above; READY or
     * INIT_FAIL first), *sentinel an fd that becomes readable once the worker is gone
     * (or has left after the end of file on its socket). Both are the pool's to close. */
    int (*start)(void *state, size_t i, const mp_value *boot, int *sock, int *sentinel);
    /* Terminate: the worker must drop the work it holds (a task already running on
     * it may finish; its result is discarded). */
    void (*stop)(void *state, size_t i);
    /* Worker i is gone: who it was ("MPI rank 2 (pid 42 on vm)") and how it ended
     * ("exited", "died: ...", "stopped answering for 10 s"), for messages. */
    void (*reap)(void *state, size_t i, char *who, size_t wcap, char *how, size_t hcap);
    /* Worker i is gone: how many of the oldest chunks it held may have run without their
     * results coming back (they fail; the others go to other workers). NULL: 1, the one
     * at the head, which it was running. */
    size_t (*held)(void *state, size_t i);
    /* Optional, both or neither: large messages by pointer rather than through the socket
     * (a local socket copies each byte twice). give: worker i's next message (whole
     * frames, t->len bytes): the backend takes a reference (mp__txbuf_unref it once done,
     * whatever happens to the worker) and sends the message when it reads the MSG_HANDED
     * notice that the pool writes in its place in the socket's stream; 0, or a negative
     * code (the pool writes the bytes then). take: the pool read a MSG_HANDED notice from
     * worker i: the block of whole frames the backend handed over in its place (malloc'd,
     * now the pool's); 0, or MP_EPROTO when there is none. */
    int (*give)(void *state, size_t i, mp__txbuf *t);
    int (*take)(void *state, size_t i, char **buf, size_t *len);
    /* Free the state, after every worker was reaped. */
    void (*close)(void *state);
};

/* Worker main loop pieces shared with a backend's serving side (worker.c): a worker
 * whose messages go out through `send` instead of a socket. */
typedef int (*mp__wsend_fn)(void *ctx, const mp__msg_hdr *h, const void *body, const int *fds);
typedef struct mp__wserve mp__wserve;
mp__wserve *mp__wserve_new(mp__wsend_fn send, void *ctx);
/* Run the initializer (loc: bytes or nil) and send READY or INIT_FAIL: 0 or its code. */
int mp__wserve_init(mp__wserve *ws, const mp_value *loc, const mp_value *initargs);
/* Handle one message (a TASK: run it, send its RESULT). 0 or a negative code (the
 * worker should stop). */
int mp__wserve_msg(mp__wserve *ws, mp__msg *m);
void mp__wserve_free(mp__wserve *ws);
/* Append received bytes to a channel's reading side (a backend's byte stream). */
int mp__rx_push(mp__rx *rx, const void *data, size_t n);
/* Or receive them in place: room for n more bytes at the end (NULL: -ENOMEM recorded),
 * then mp__rx_commit(rx, n) once they are written there. */
char *mp__rx_tail(mp__rx *rx, size_t n);
void mp__rx_commit(mp__rx *rx, size_t n);

/* One worker position. */
typedef struct worker {
    mp_process *proc;
    bool remote;  /* a live backend worker: no proc; sentinel below */
    bool gone;    /* a backend worker that was reaped (never started again) */
    int sentinel; /* a backend worker's sentinel fd (-1 when none) */
    int sock; /* parent's end, nonblocking; -1 when none */
    pid_t pid;
    bool ready;
    bool exiting;      /* got its last task (maxtasksperchild) or told to stop */
    bool killed_for_timeout;
    size_t timed_item;
    double timed_limit;
    bool fast;               /* its last chunks came back quickly: hold more ahead */
    uint64_t last_result_ns;
    bool eof;                /* its socket reached end of file: only the sentinel left */
    bool shut;               /* we shut our sending side: it exits when done */
    unsigned assigned; /* chunks sent since it started */
    chunk *inflight, *inflight_tail;
    size_t ninflight;
    /* send queue: chunk messages not yet fully written */
    chunk *txq[64];
    size_t txn;
    size_t txoff;
    mp__rx rx;
    uint64_t arena_gen; /* the arena generation this worker has mapped */
} worker;

struct mp_pool {
    int processes;
    mp_pool_init_fn initializer;
    mp_value *initargs;
    char *initloc;
    size_t initloc_len;
    unsigned maxtasks;
    mp_context *ctx;
    const char *prefix; /* "ForkPoolWorker" ... */
    double time_limit;

    worker *w;
    mp__slot *slots;
    int slots_fd;

    pthread_mutex_t mu; /* submission queue, state, source list */
    chunk *pending, *pending_tail; /* chunks ready to send */
    job *sources;                  /* source-fed jobs still reading */
    _Atomic int submitting; /* map calls between their first and last enqueue (changed
                               under mu with the queue): the pool has work to come */
    uint64_t next_id;
    int state; /* 0 running, 1 closed, 2 terminating */
    int broken_code;
    char broken_msg[512];
    int wake_fd; /* eventfd */
    /* The result thread may be asleep (set before it last looked at the queue, cleared
     * when poll returns): only then must a submitter wake it, else it will look at
     * the queue again before it sleeps. Saves an eventfd write per task while busy. */
    _Atomic int idle;
    pthread_t thread;
    bool thread_started;
    _Atomic int started; /* the result thread started the workers: 1 ok, -1 failed */
    int start_code;      /* then (written before started) */
    char start_msg[1024];
    _Atomic int thread_done;
    bool joined;

    /* the typed path's shared arena */
    int arena_fd;
    void *arena;
    size_t arena_size;
    uint64_t arena_gen; /* bumped (under mu) when the arena is replaced */
    pthread_mutex_t array_mu; /* one map_array at a time */

    /* Chunks of answered tasks, kept with their buffers for the next calls: a chunk is
     * allocated by a submitter and freed by the result thread, and glibc then serves
     * every new one from its arena (a third of apply_async's time). The result thread
     * gathers them in spent (its own) and moves them to cache (under cache_mu) once per
     * read; mp__chunk_build takes from cache. */
    pthread_mutex_t cache_mu;
    chunk *cache;
    _Atomic size_t ncache; /* changed under cache_mu; read without it as a hint */
    chunk *spent;
    size_t nspent;

    const mp_pool_backend *backend; /* NULL: local processes */
    void *be_state;
};

/* Worker i's liveness, sentinel, termination (local process or a backend's worker). */
static inline bool mp__worker_live(const worker *w) { return w->proc || w->remote; }
int mp__worker_sentinel(const worker *w);
void mp__worker_kill(mp_pool *p, size_t i);
void mp__worker_terminate(mp_pool *p, size_t i);
/* mp_pool_new with opts->backend: check the options, open it (backend.c). */
int mp__pool_open_backend(mp_pool *p, const mp_pool_opts *o);
/* Start a backend's worker at position i (it is never replaced: a second start fails). */
int mp__pool_start_remote(mp_pool *p, size_t i);
/* Chunk c goes to backend worker i: what to queue in its place, a MSG_HANDED notice (c's
 * bytes were handed to the backend: give), or c itself (small, or not taken). */
chunk *mp__pool_hand(mp_pool *p, size_t i, chunk *c);
/* A MSG_HANDED notice came from backend worker i: the block of frames it stands for. */
int mp__pool_take(mp_pool *p, size_t i, char **buf, size_t *len);
/* Reap worker i, describing it ("ForkPoolWorker-1 (pid 42)") and how it ended. */
void mp__pool_reap_describe(mp_pool *p, size_t i, char *who, size_t wcap, char *how,
                            size_t hcap);

/* Every completion bumps this and wakes its waiters (futex; shared by all pools). */
extern _Atomic uint32_t mp__pool_seq;
void mp__pool_notify(void);
/* Between these (on one thread, nested), jobs that finish bump it once, at the release. */
void mp__pool_notify_hold(void);
void mp__pool_notify_release(void);
/* Wait until done(arg) or the deadline: 0, MP_ETIMEOUT, MP_EINTERRUPTED. */
int mp__pool_wait_until(bool (*done)(void *), void *arg, double deadline);

/* Result thread (loop.c). */
void *mp__pool_thread(void *arg);
void mp__pool_wake(mp_pool *p);
/* Start the worker at position i (the result thread: a worker's parent is the thread
 * that forked it, for PR_SET_PDEATHSIG). */
int mp__pool_start_worker(mp_pool *p, size_t i);
/* Start every worker and wait for each one's READY (the result thread, first). */
int mp__pool_start_all(mp_pool *p);
/* Reap worker i's process (it exited or was killed) and free its state. */
void mp__pool_reap_worker(mp_pool *p, size_t i, int *exitcode);

/* Jobs (submit.c). */
job *mp__job_new(mp_pool *p, enum job_kind kind, size_t n, size_t cap, bool ring);
void mp__job_unref(job *j);
void mp__chunk_free(chunk *c);
/* Enqueue chunks (a list) for sending; MP_ESTATE if the pool is not running. Flags:
 * ENQ_INTERNAL (the pool's own work: accepted after close), ENQ_BEGIN (more of this call
 * follows: p->submitting is raised), ENQ_CONT (a later part of a call that began:
 * always accepted; on a terminated or broken pool its chunks become failed ones),
 * ENQ_END (with ENQ_CONT: the call's last part, p->submitting is lowered). */
enum { ENQ_INTERNAL = 1, ENQ_BEGIN = 2, ENQ_CONT = 4, ENQ_END = 8 };
int mp__pool_enqueue(mp_pool *p, chunk *first, chunk *last, int flags);
/* Turn c into a failed chunk (its buffer and fds released) with code and message. */
void mp__chunk_fail(chunk *c, int code, const char *msg);
/* Encode items[first, first+count) of a list (or one value) as a chunk message. NULL on
 * error; with fail_ok, arguments that cannot be encoded give a failed chunk instead
 * (fail_code, fail_msg; NULL still for out of memory). */
/* The result thread: chunk c's results were taken; mp__chunk_spent_flush: make the
 * chunks so gathered available to mp__chunk_build (once per read). */
void mp__chunk_done(mp_pool *p, chunk *c);
void mp__chunk_spent_flush(mp_pool *p);
/* Free the kept chunks (the pool's end). */
void mp__chunk_cache_free(mp_pool *p);
chunk *mp__chunk_build(mp_pool *p, job *j, mp_value *const *args, size_t first,
                       size_t count, bool fail_ok);
/* map_array on a backend's workers (array_msg.c): the ranges carry their elements and the
 * context's bytes (ctx_len of them at ctx), the results their output elements. */
int mp__array_remote(mp_pool *p, mp_array_fn fn, const void *in, size_t in_size, void *out,
                     size_t out_size, size_t n, const void *ctx, size_t ctx_len,
                     size_t chunksize);
/* The result thread: a backend's range came back (MSG_INLINE): its output elements into
 * the caller's array. 0 or MP_EPROTO. */
int mp__array_take(chunk *c, const mp__msg *m);
/* The elements [*lo, *hi] of a map_array chunk's ranges (its items), for messages:
 * "elements". */
const char *mp__array_elements(const chunk *c, size_t *lo, size_t *hi);
/* Public handles: thin wrappers of a job. */
struct mp_pool_iter {
    job *j;
};
/* Describe an exit code: "killed by signal 9 (SIGKILL)", "exited with status 3". */
void mp__pool_describe_exit(int code, char *buf, size_t cap);
/* Record item idx's outcome (pool thread); completes the job when all are in. */
void mp__job_complete_item(job *j, size_t idx, mp_value *v, int code, const char *msg);
/* Iterators: the values vs[k] of items first + k, k < count, that did not fail
 * (skip[k] false; their failures were recorded with mp__job_complete_item). */
void mp__job_complete_ring(job *j, size_t first, mp_value **vs, const bool *skip,
                           size_t count);
/* Apply/map: items [first, first+count) of vals were set (NULL where the item failed
 * and was recorded with mp__job_complete_item): count the ok ones in at once. */
void mp__job_complete_vals(job *j, size_t ok);
/* Read more of a source-fed job while its window allows (pool thread). */
void mp__job_pump_source(mp_pool *p, job *j);
/* The source ended (code 0) or failed/was cut off (code < 0): n is what was read. */
void mp__job_end_source(job *j, int code, const char *msg);

#endif
