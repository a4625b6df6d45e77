/* Queues: put/get of bytes and values, FIFO across ring wrap-around, maxsize, nowait and
 * timeouts, close, JoinableQueue, items larger than the ring (streamed, 100 MiB), the seed's
 * put-then-join example under every start method, many producers and consumers, and
 * processes SIGKILLed at random points in put and get: no torn item, nobody wedged. */
#include "test_util.h"

#include "multiproc/queue.h"
#include "queue/q.h" /* the holders table, to play a recycled pid */

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <linux/perf_event.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static const char *const methods[] = {"fork", "spawn", "forkserver"};

/* ---- self-checking items: [seq u64][len u64][pattern bytes] -------------------------- */

static unsigned char pattern(uint64_t seq, size_t i) { return (unsigned char)(seq * 131 + i * 7 + (i >> 8)); }

static void *make_item(uint64_t seq, size_t len)
{
    if (len < 16)
        len = 16;
    unsigned char *p = malloc(len);
    memcpy(p, &seq, 8);
    uint64_t l = len;
    memcpy(p + 8, &l, 8);
    for (size_t i = 16; i < len; i++)
        p[i] = pattern(seq, i);
    return p;
}

/* 1 if whole and correct, 0 if torn; *seq set. */
static int item_ok(const void *buf, size_t len, uint64_t *seq)
{
    const unsigned char *p = buf;
    uint64_t l;
    if (len < 16)
        return 0;
    memcpy(seq, p, 8);
    memcpy(&l, p + 8, 8);
    if (l != len)
        return 0;
    for (size_t i = 16; i < len; i++)
        if (p[i] != pattern(*seq, i))
            return 0;
    return 1;
}

static void test_basic(void)
{
    mp_queue *q = mp_queue_new(NULL);
    CHECK(q != NULL);
    CHECK(mp_queue_empty(q));
    CHECK(!mp_queue_full(q));
    CHECK_INT(mp_queue_qsize(q), 0);
    CHECK_OK(mp_queue_put_bytes(q, "one", 3, -1));
    mp_value *v = mp_value_pack("[i n s]", 42, "hello");
    CHECK_OK(mp_queue_put(q, v, -1));
    mp_value_free(v);
    CHECK_OK(mp_queue_put_bytes(q, "", 0, 0));
    CHECK_INT(mp_queue_qsize(q), 3);
    CHECK(!mp_queue_empty(q));
    void *buf;
    size_t len;
    CHECK_OK(mp_queue_get_bytes(q, &buf, &len, -1));
    CHECK(len == 3 && memcmp(buf, "one", 3) == 0);
    mp_free(buf);
    CHECK_OK(mp_queue_get(q, &v, 0));
    CHECK_STR(mpt_repr(v), "[42, None, 'hello']");
    mp_value_free(v);
    CHECK_OK(mp_queue_get(q, &v, 0)); /* a bytes item read as a value */
    CHECK_STR(mpt_repr(v), "b''");
    mp_value_free(v);
    CHECK_ERR(mp_queue_get_nowait(q, &v), MP_EEMPTY);
    CHECK(v == NULL);
    double t0 = mpt_now();
    CHECK_ERR(mp_queue_get_bytes(q, &buf, &len, 0.1), MP_EEMPTY);
    CHECK(mpt_now() - t0 >= 0.09 && mpt_now() - t0 < 5);
    CHECK_CONTAINS(mp_last_error(), "empty");
    /* A value item read as bytes gives its MessagePack encoding. */
    v = mp_value_int(5);
    CHECK_OK(mp_queue_put_nowait(q, v));
    mp_value_free(v);
    CHECK_OK(mp_queue_get_bytes(q, &buf, &len, 0));
    CHECK(len == 1 && ((unsigned char *)buf)[0] == 5);
    mp_free(buf);
    /* Handles cannot be queued. */
    v = mp_value_pack("[h]", &mp_kind_queue, q);
    CHECK_ERR(mp_queue_put(q, v, 0), MP_EUNSUPPORTED);
    mp_value_free(v);
    CHECK_ERR(mp_queue_put_bytes(q, NULL, 4, 0), MP_EINVAL);
    /* close: this handle refuses further calls. */
    CHECK_OK(mp_queue_close(q));
    CHECK(mp_queue_closed(q));
    CHECK_ERR(mp_queue_put_bytes(q, "x", 1, 0), MP_ECLOSED);
    CHECK_ERR(mp_queue_get_bytes(q, &buf, &len, 0), MP_ECLOSED);
    CHECK_ERR(mp_queue_task_done(q), MP_ESTATE); /* not joinable */
    CHECK_ERR(mp_queue_join(q, 0), MP_ESTATE);
    mp_queue_free(q);
    mp_queue_free(NULL);
    CHECK(mp_kind_find("queue") == &mp_kind_queue);
}

/* Small values are encoded on the stack into the ring; they must come back equal, and decode
 * with the general codec. */
static void test_scalar_roundtrip(void)
{
    mp_queue *q = mp_queue_new(NULL);
    int64_t ints[] = {0, 1, 127, 128, 255, 256, 65535, 65536, 4294967295LL, 4294967296LL,
                      INT64_MAX, -1, -32, -33, -128, -129, -32768, -32769, INT32_MIN,
                      (int64_t)INT32_MIN - 1, INT64_MIN};
    mp_value *vals[40];
    size_t n = 0;
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        vals[n++] = mp_value_int(ints[i]);
    vals[n++] = mp_value_nil();
    vals[n++] = mp_value_bool(true);
    vals[n++] = mp_value_bool(false);
    vals[n++] = mp_value_float(-2.5);
    vals[n++] = mp_value_float(1e300);
    vals[n++] = mp_value_str("");
    vals[n++] = mp_value_str("0123456789012345678901234567890");  /* 31: fixstr */
    vals[n++] = mp_value_str("01234567890123456789012345678901"); /* 32: general path */
    vals[n++] = mp_value_bytes("\x01\x02", 2);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        CHECK_OK(mp_queue_put(q, vals[i], 0));
        CHECK_OK(mp_queue_put(q, vals[i], 0));
        mp_value *got = NULL, *dec = NULL;
        void *buf = NULL;
        size_t len = 0;
        CHECK_OK(mp_queue_get(q, &got, 0));
        CHECK_OK(mp_queue_get_bytes(q, &buf, &len, 0));
        CHECK_OK(mp_value_decode(buf, len, NULL, 0, &dec));
        if (!mp_value_equal(got, vals[i]) || !mp_value_equal(dec, vals[i]) ||
            mp_value_type(got) != mp_value_type(vals[i])) {
            bad++;
            fprintf(stderr, "scalar %zu: sent %s", i, mpt_repr(vals[i]));
            fprintf(stderr, " got %s\n", mpt_repr(got));
        }
        mp_value_free(got);
        mp_value_free(dec);
        mp_free(buf);
        mp_value_free(vals[i]);
    }
    CHECK_INT(bad, 0);
    mp_queue_free(q);
}

static void test_maxsize(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.maxsize = 2});
    CHECK_INT(mp_queue_maxsize(q), 2);
    mp_value *v = mp_value_int(1);
    CHECK_OK(mp_queue_put(q, v, 0));
    CHECK_OK(mp_queue_put(q, v, 0));
    CHECK(mp_queue_full(q));
    CHECK_ERR(mp_queue_put_nowait(q, v), MP_EFULL);
    CHECK_CONTAINS(mp_last_error(), "full");
    double t0 = mpt_now();
    CHECK_ERR(mp_queue_put(q, v, 0.1), MP_EFULL);
    CHECK(mpt_now() - t0 >= 0.09 && mpt_now() - t0 < 5);
    mp_value *got;
    CHECK_OK(mp_queue_get(q, &got, 0));
    mp_value_free(got);
    CHECK(!mp_queue_full(q));
    CHECK_OK(mp_queue_put(q, v, 0));
    mp_value_free(v);
    mp_queue_free(q);
    /* The ring's bytes bound an unbounded queue too: put_nowait says full. */
    q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    char block[1000] = {0};
    int n = 0;
    while (mp_queue_put_bytes(q, block, sizeof block, 0) == 0)
        n++;
    CHECK_INT(n, 4);
    CHECK_INT(mp_last_error_code(), MP_EFULL);
    mp_queue_free(q);
}

/* FIFO order and contents survive many wraps of a small ring. */
static void test_wraparound(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    uint64_t next_put = 0, next_get = 0;
    unsigned seed = 1;
    int bad = 0;
    for (int round = 0; round < 2000; round++) {
        int puts = rand_r(&seed) % 5;
        for (int i = 0; i < puts; i++) {
            size_t len = 16 + (size_t)(rand_r(&seed) % 1500);
            void *it = make_item(next_put, len);
            int r = mp_queue_put_bytes(q, it, len, 0);
            free(it);
            if (r == 0)
                next_put++;
            else if (r != MP_EFULL)
                bad++;
        }
        int gets = rand_r(&seed) % 5;
        for (int i = 0; i < gets; i++) {
            void *buf;
            size_t len;
            int r = mp_queue_get_bytes(q, &buf, &len, 0);
            if (r == MP_EEMPTY)
                break;
            uint64_t seq;
            if (r != 0 || !item_ok(buf, len, &seq) || seq != next_get)
                bad++;
            next_get++;
            mp_free(buf);
        }
        if (mp_queue_qsize(q) != next_put - next_get)
            bad++;
    }
    CHECK_INT(bad, 0);
    CHECK(next_get > 1000);
    mp_queue_free(q);
}

/* Ints of every MessagePack length (24- and 32-byte records, written as words) over many
 * laps of a small ring, so records start and end at every offset around its end. */
static void test_int_wraparound(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    static const int64_t ints[] = {5, -3, 200, -100, 60000, -30000, 4000000000LL, -2000000000LL,
                                   INT64_MAX, INT64_MIN, (int64_t)1 << 40};
    const size_t nints = sizeof ints / sizeof ints[0];
    size_t next_put = 0, next_get = 0;
    unsigned seed = 7;
    int bad = 0;
    while (next_get < 3000) {
        for (int i = rand_r(&seed) % 4; i > 0; i--) {
            mp_value *v = mp_value_int(ints[next_put % nints]);
            if (mp_queue_put(q, v, 0) == 0)
                next_put++;
            mp_value_free(v);
        }
        while (next_get < next_put && rand_r(&seed) % 4) {
            mp_value *got = NULL;
            void *buf = NULL;
            size_t len;
            int64_t want = ints[next_get % nints];
            if (next_get % 3 == 0) { /* the bytes, through the general decoder */
                if (mp_queue_get_bytes(q, &buf, &len, 0) != 0 ||
                    mp_value_decode(buf, len, NULL, 0, &got) != 0)
                    bad++;
            } else if (mp_queue_get(q, &got, 0) != 0) {
                bad++;
            }
            if (!got || mp_value_type(got) != MP_INT || mp_value_get_int(got) != want)
                bad++;
            mp_value_free(got);
            mp_free(buf);
            next_get++;
        }
    }
    CHECK_INT(bad, 0);
    CHECK_INT((long)mp_queue_qsize(q), (long)(next_put - next_get));
    mp_queue_free(q);
}

/* A ring filled to its last byte is full, not empty (head and tail positions are kept
 * modulo twice the capacity), over many laps of the ring. */
static void test_exactly_full_ring(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    int bad = 0;
    uint64_t seq = 0, want = 0;
    for (int lap = 0; lap < 50; lap++) {
        for (int i = 0; i < 4; i++) { /* 4 records of 16 + 1008 bytes: 4096 exactly */
            void *it = make_item(seq++, 1008);
            bad += mp_queue_put_bytes(q, it, 1008, 0) != 0;
            free(it);
        }
        bad += mp_queue_qsize(q) != 4 || mp_queue_empty(q);
        bad += mp_queue_put_bytes(q, "x", 1, 0) != MP_EFULL;
        for (int i = 0; i < 4; i++) {
            void *buf;
            size_t len;
            uint64_t got;
            if (mp_queue_get_bytes(q, &buf, &len, 0) != 0 || !item_ok(buf, len, &got) ||
                got != want++)
                bad++;
            mp_free(buf);
        }
        void *none;
        size_t nlen;
        bad += mp_queue_qsize(q) != 0 || !mp_queue_empty(q);
        bad += mp_queue_get_bytes(q, &none, &nlen, 0) != MP_EEMPTY;
    }
    CHECK_INT(bad, 0);
    CHECK_INT(want, 200);
    mp_queue_free(q);
}

static void test_joinable(void)
{
    mp_queue *q = mp_joinable_queue_new(NULL);
    CHECK_OK(mp_queue_join(q, 0)); /* nothing put: done */
    CHECK_ERR(mp_queue_task_done(q), MP_ESTATE);
    CHECK_CONTAINS(mp_last_error(), "too many times");
    for (int i = 0; i < 3; i++)
        CHECK_OK(mp_queue_put_bytes(q, "t", 1, -1));
    CHECK_ERR(mp_queue_join(q, 0.05), MP_ETIMEOUT);
    pid_t pid = fork();
    if (pid == 0) {
        int ok = 0;
        for (int i = 0; i < 3; i++) {
            void *buf;
            size_t len;
            if (mp_queue_get_bytes(q, &buf, &len, 10) == 0) {
                mp_free(buf);
                usleep(20000); /* pacing, not synchronisation: join must outwait the work */
                ok += mp_queue_task_done(q) == 0;
            }
        }
        _exit(ok == 3 ? 0 : 1);
    }
    double t0 = mpt_now();
    CHECK_OK(mp_queue_join(q, 30));
    CHECK(mpt_now() - t0 >= 0.05);
    CHECK(mp_queue_empty(q));
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_ERR(mp_queue_task_done(q), MP_ESTATE);
    mp_queue_free(q);
}

/* A child takes `take` items and marks `done` of them done, then tells the parent and
 * either waits to be killed or (exit_normally) exits. Returns its pid, reaped or not. */
static pid_t consumer_child(mp_queue *q, int take, int done, bool exit_normally)
{
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        for (int i = 0; i < take; i++) {
            void *buf;
            size_t len;
            if (mp_queue_get_bytes(q, &buf, &len, 10) < 0)
                _exit(2);
            mp_free(buf);
        }
        for (int i = 0; i < done; i++)
            if (mp_queue_task_done(q) < 0)
                _exit(3);
        if (write(p[1], "x", 1) != 1)
            _exit(4);
        if (exit_normally)
            _exit(0);
        for (;;)
            pause(); /* killed here, between get and task_done */
    }
    close(p[1]);
    char c;
    CHECK_INT(read(p[0], &c, 1), 1);
    close(p[0]);
    if (!exit_normally)
        kill(pid, SIGKILL);
    return pid;
}

static void reap(pid_t pid)
{
    int st;
    CHECK_INT(waitpid(pid, &st, 0), pid);
}

/* A consumer killed between get and task_done: join says so instead of hanging (Python
 * hangs), whether or not the dead consumer was reaped yet; task_done for the lost task
 * (here: the parent redid it) lets join complete. */
static void test_join_dead_consumer(void)
{
    mp_queue *q = mp_joinable_queue_new(NULL);
    for (int i = 0; i < 4; i++)
        CHECK_OK(mp_queue_put_bytes(q, "task", 4, -1));
    pid_t pid = consumer_child(q, 3, 1, false); /* holds 2 unfinished tasks when killed */
    double t0 = mpt_now();
    CHECK_ERR(mp_queue_join(q, 10), MP_EWORKERDIED); /* a zombie: dead, not yet reaped */
    CHECK(mpt_now() - t0 < 2);
    char want[96];
    snprintf(want, sizeof want, "2 tasks died unfinished: the process that took them with get "
             "(pid %d) exited before task_done", (int)pid);
    CHECK_CONTAINS(mp_last_error(), want);
    reap(pid);
    CHECK_ERR(mp_queue_join(q, 10), MP_EWORKERDIED); /* still, once reaped */
    CHECK_CONTAINS(mp_last_error(), "2 tasks died unfinished");
    CHECK_ERR(mp_queue_join(q, 0), MP_EWORKERDIED); /* a poll reports it too */
    CHECK_OK(mp_queue_task_done(q)); /* the parent redid the lost tasks */
    CHECK_ERR(mp_queue_join(q, 10), MP_EWORKERDIED);
    CHECK_CONTAINS(mp_last_error(), "1 task died unfinished: the process that took it");
    CHECK_OK(mp_queue_task_done(q));
    CHECK_ERR(mp_queue_join(q, 0.05), MP_ETIMEOUT); /* one item still in the queue */
    void *buf;
    size_t len;
    CHECK_OK(mp_queue_get_bytes(q, &buf, &len, 0));
    mp_free(buf);
    CHECK_OK(mp_queue_task_done(q));
    CHECK_OK(mp_queue_join(q, 0));
    CHECK_ERR(mp_queue_task_done(q), MP_ESTATE);
    mp_queue_free(q);
}

/* Tasks taken by get_many are held like those taken by get: a consumer killed after
 * get_many of 3 and one task_done leaves 2 tasks that died unfinished. */
static void test_join_dead_consumer_get_many(void)
{
    mp_queue *q = mp_joinable_queue_new(NULL);
    for (int i = 0; i < 4; i++)
        CHECK_OK(mp_queue_put_bytes(q, "task", 4, -1));
    int p[2];
    CHECK(pipe(p) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        mp_value *items[3];
        size_t got = 0;
        if (mp_queue_get_many(q, items, 3, &got, 10) < 0 || got != 3)
            _exit(2);
        for (size_t i = 0; i < got; i++)
            mp_value_free(items[i]);
        if (mp_queue_task_done(q) < 0 || write(p[1], "x", 1) != 1)
            _exit(3);
        for (;;)
            pause(); /* killed here, holding 2 tasks */
    }
    close(p[1]);
    char c;
    CHECK_INT(read(p[0], &c, 1), 1);
    close(p[0]);
    kill(pid, SIGKILL);
    CHECK_ERR(mp_queue_join(q, 10), MP_EWORKERDIED);
    char want[96];
    snprintf(want, sizeof want, "2 tasks died unfinished: the process that took them with get "
             "(pid %d)", (int)pid);
    CHECK_CONTAINS(mp_last_error(), want);
    reap(pid);
    mp_queue_free(q);
}

/* With dead_tasks_done, a dead consumer's tasks count as done: join returns 0. */
static void test_join_dead_tasks_done(void)
{
    mp_queue *q = mp_joinable_queue_new(&(mp_queue_opts){.dead_tasks_done = true});
    for (int i = 0; i < 3; i++)
        CHECK_OK(mp_queue_put_bytes(q, "task", 4, -1));
    pid_t pid = consumer_child(q, 3, 1, false);
    double t0 = mpt_now();
    CHECK_OK(mp_queue_join(q, 10));
    CHECK(mpt_now() - t0 < 2);
    reap(pid);
    CHECK_ERR(mp_queue_task_done(q), MP_ESTATE); /* they were counted done */
    /* And again for a later batch. */
    CHECK_OK(mp_queue_put_bytes(q, "task", 4, -1));
    pid = consumer_child(q, 1, 0, false);
    CHECK_OK(mp_queue_join(q, 10));
    reap(pid);
    mp_queue_free(q);
}

/* A consumer that marked its tasks done and exited normally does not count; one that
 * exited normally without task_done does. */
static void test_join_consumer_exits(void)
{
    mp_queue *q = mp_joinable_queue_new(NULL);
    for (int i = 0; i < 3; i++)
        CHECK_OK(mp_queue_put_bytes(q, "task", 4, -1));
    reap(consumer_child(q, 2, 2, true));
    CHECK_ERR(mp_queue_join(q, 0.3), MP_ETIMEOUT); /* one still queued, nobody dead */
    CHECK_CONTAINS(mp_last_error(), "1 tasks still unfinished");
    reap(consumer_child(q, 1, 0, true));
    CHECK_ERR(mp_queue_join(q, 10), MP_EWORKERDIED);
    CHECK_CONTAINS(mp_last_error(), "1 task died unfinished");
    CHECK_OK(mp_queue_task_done(q));
    CHECK_OK(mp_queue_join(q, 0));
    mp_queue_free(q);
}

/* The holder's identity is its pid AND its start time: a live consumer holding a task is
 * not reported (join times out), but if its pid came to name another process (played here
 * by changing the recorded start time), its task is reported died unfinished. */
static void test_join_pid_reused(void)
{
    mp_queue *q = mp_joinable_queue_new(NULL);
    CHECK_OK(mp_queue_put_bytes(q, "task", 4, -1));
    int got[2], go[2]; /* child -> parent: it holds the task; parent -> child: exit */
    CHECK(pipe(got) == 0 && pipe(go) == 0);
    pid_t pid = fork();
    if (pid == 0) {
        close(got[0]);
        close(go[1]);
        void *buf;
        size_t len;
        if (mp_queue_get_bytes(q, &buf, &len, 10) < 0 || write(got[1], "x", 1) != 1)
            _exit(2);
        mp_free(buf);
        char c;
        _exit(read(go[0], &c, 1) == 1 ? 0 : 3); /* alive, holding the task, until told */
    }
    close(got[1]);
    close(go[0]);
    char c;
    CHECK_INT(read(got[0], &c, 1), 1);
    CHECK_ERR(mp_queue_join(q, 0.3), MP_ETIMEOUT); /* alive: still being worked on */
    qholder *h = NULL;
    for (int i = 0; i < Q_HOLDERS; i++)
        if (q->s->holders[i].count && q->s->holders[i].pid == pid)
            h = &q->s->holders[i];
    CHECK(h != NULL && h->count == 1 && h->start != 0);
    if (h) {
        h->start++; /* the pid now names a process started at another time */
        CHECK_ERR(mp_queue_join(q, 10), MP_EWORKERDIED);
        CHECK_CONTAINS(mp_last_error(), "1 task died unfinished");
        h->start--;
    }
    CHECK_INT(write(go[1], "x", 1), 1);
    reap(pid);
    close(got[0]);
    close(go[1]);
    CHECK_OK(mp_queue_task_done(q));
    CHECK_OK(mp_queue_join(q, 0));
    mp_queue_free(q);
}

/* An item bigger than the ring (streamed) counts as held once its get completes. */
static void test_join_dead_consumer_streamed(void)
{
    mp_queue *q = mp_joinable_queue_new(&(mp_queue_opts){.capacity = 4096});
    pid_t producer = fork();
    if (producer == 0) {
        static char big[20000];
        _exit(mp_queue_put_bytes(q, big, sizeof big, 10) == 0 ? 0 : 1);
    }
    pid_t pid = consumer_child(q, 1, 0, false);
    int st;
    CHECK_INT(waitpid(producer, &st, 0), producer);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_ERR(mp_queue_join(q, 10), MP_EWORKERDIED);
    CHECK_CONTAINS(mp_last_error(), "1 task died unfinished");
    reap(pid);
    CHECK_OK(mp_queue_task_done(q));
    CHECK_OK(mp_queue_join(q, 0));
    mp_queue_free(q);
}

/* A get blocks until a put in another process wakes it. */
static void test_blocking_wakeup(void)
{
    mp_queue *q = mp_queue_new(NULL);
    pid_t pid = fork();
    if (pid == 0) { /* put once the parent is asleep in its get */
        if (mpt_wait_blocked(getppid(), 0, "futex", 10) < 0)
            _exit(2);
        _exit(mp_queue_put_bytes(q, "late", 4, -1) == 0 ? 0 : 1);
    }
    double t0 = mpt_now();
    void *buf = NULL;
    size_t len;
    CHECK_OK(mp_queue_get_bytes(q, &buf, &len, 30));
    CHECK(mpt_now() - t0 < 30);
    CHECK(len == 4 && memcmp(buf, "late", 4) == 0);
    mp_free(buf);
    int st;
    waitpid(pid, &st, 0);
    /* 0, not 2: the child saw us asleep in the get before it put, so the put woke us */
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    mp_queue_free(q);
}

/* ---- big items ----------------------------------------------------------------------- */

static void test_big_items(void)
{
    const size_t big = (size_t)100 << 20;
    mp_queue *q = mp_queue_new(NULL); /* default 4 MiB ring: the item is streamed */
    /* parent -> child */
    pid_t pid = fork();
    if (pid == 0) {
        void *buf;
        size_t len;
        uint64_t seq;
        int r = mp_queue_get_bytes(q, &buf, &len, 60);
        _exit(r == 0 && len == big && item_ok(buf, len, &seq) && seq == 7 ? 0 : 1);
    }
    void *it = make_item(7, big);
    double t0 = mpt_now();
    CHECK_OK(mp_queue_put_bytes(q, it, big, 60));
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK(mpt_now() - t0 < 30);
    /* child -> parent, with a small item queued before and after it */
    pid = fork();
    if (pid == 0) {
        int r = mp_queue_put_bytes(q, "before", 6, -1);
        r |= mp_queue_put_bytes(q, it, big, 60);
        r |= mp_queue_put_bytes(q, "after", 5, -1);
        _exit(r == 0 ? 0 : 1);
    }
    void *buf = NULL;
    size_t len = 0;
    uint64_t seq = 0;
    CHECK_OK(mp_queue_get_bytes(q, &buf, &len, 60));
    CHECK(len == 6 && memcmp(buf, "before", 6) == 0);
    mp_free(buf);
    CHECK_OK(mp_queue_get_bytes(q, &buf, &len, 60));
    CHECK(len == big && item_ok(buf, len, &seq) && seq == 7);
    mp_free(buf);
    CHECK_OK(mp_queue_get_bytes(q, &buf, &len, 60));
    CHECK(len == 5 && memcmp(buf, "after", 5) == 0);
    mp_free(buf);
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* Nobody takes it: the put gives up in time and leaves the queue clean. */
    t0 = mpt_now();
    CHECK_ERR(mp_queue_put_bytes(q, it, big, 0.2), MP_EFULL);
    CHECK(mpt_now() - t0 < 5);
    CHECK(mp_queue_empty(q));
    CHECK_OK(mp_queue_put_bytes(q, "ok", 2, 0));
    CHECK_OK(mp_queue_get_bytes(q, &buf, &len, 0));
    mp_free(buf);
    free(it);
    mp_queue_free(q);
}

/* The seed: a child puts a 1,000,000-byte string, the parent joins it, then gets. In Python
 * this deadlocks; here the child exits at once and the item is still there. */
static int child_put_big_string(mp_value *args)
{
    mp_queue *q = NULL;
    mp_value_unpack(mp_value_list_get(args, 0), "h", &mp_kind_queue, &q);
    char *s = malloc(1000001);
    memset(s, 'X', 1000000);
    s[1000000] = 0;
    mp_value *v = mp_value_str(s);
    int r = q ? mp_queue_put(q, v, -1) : -1;
    mp_value_free(v);
    free(s);
    return r == 0 ? 0 : 1;
}

static void test_put_then_join(void)
{
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        mpt_current = methods[m];
        mp_queue *q = mp_queue_new(NULL);
        mp_value *args = mp_value_pack("[h]", &mp_kind_queue, q);
        mp_process_opts o = {.target = child_put_big_string, .args = args,
                             .ctx = mp_get_context(methods[m])};
        mp_process *p = mp_process_new(&o);
        CHECK_OK(mp_process_start(p));
        CHECK_OK(mp_process_join(p, 30)); /* Python deadlocks here */
        int code = -1;
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 0);
        mp_value *v = NULL;
        CHECK_OK(mp_queue_get(q, &v, 5));
        size_t len = 0;
        const char *s = mp_value_get_str(v, &len);
        CHECK(s && len == 1000000 && s[0] == 'X' && s[999999] == 'X');
        mp_value_free(v);
        mp_process_free(p);
        mp_value_free(args);
        mp_queue_free(q);
    }
    mpt_current = "test_put_then_join";
}

/* The seed's worker: square numbers from one queue into another, under every method. */
static int child_square(mp_value *args)
{
    mp_queue *in = NULL;
    mp_value_unpack(mp_value_list_get(args, 0), "h", &mp_kind_queue, &in);
    mp_queue *out = NULL;
    mp_value_unpack(mp_value_list_get(args, 1), "h", &mp_kind_queue, &out);
    mp_value *v;
    while (mp_queue_get(in, &v, 0.5) == 0) {
        int64_t x = mp_value_get_int(v);
        mp_value_free(v);
        mp_value *r = mp_value_int(x * x);
        mp_queue_put(out, r, -1);
        mp_value_free(r);
    }
    return 0;
}

static void test_workers_all_methods(void)
{
    for (size_t m = 0; m < sizeof methods / sizeof methods[0]; m++) {
        mpt_current = methods[m];
        mp_queue *in = mp_queue_new(NULL), *out = mp_queue_new(NULL);
        for (int x = 3; x < 7; x++) {
            mp_value *v = mp_value_int(x);
            CHECK_OK(mp_queue_put(in, v, -1));
            mp_value_free(v);
        }
        mp_value *args = mp_value_pack("[h h]", &mp_kind_queue, in, &mp_kind_queue, out);
        mp_process *ps[2];
        for (int i = 0; i < 2; i++) {
            mp_process_opts o = {.target = child_square, .args = args,
                                 .ctx = mp_get_context(methods[m])};
            ps[i] = mp_process_new(&o);
            CHECK_OK(mp_process_start(ps[i]));
        }
        for (int i = 0; i < 2; i++) {
            CHECK_OK(mp_process_join(ps[i], 30));
            mp_process_free(ps[i]);
        }
        CHECK_INT(mp_queue_qsize(out), 4);
        int64_t sum = 0;
        mp_value *v;
        while (mp_queue_get_nowait(out, &v) == 0) {
            sum += mp_value_get_int(v);
            mp_value_free(v);
        }
        CHECK_INT(sum, 9 + 16 + 25 + 36);
        mp_value_free(args);
        mp_queue_free(in);
        mp_queue_free(out);
    }
    mpt_current = "test_workers_all_methods";
}

/* ---- many producers, many consumers --------------------------------------------------- */

struct stats {
    _Atomic uint64_t good, bad, seq_sum, seq;
};

static struct stats *stats_new(void)
{
    struct stats *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    memset(s, 0, sizeof *s);
    return s;
}

static void consume(mp_queue *q, struct stats *st, double timeout, bool stop_on_pill)
{
    for (;;) {
        void *buf;
        size_t len;
        int r = mp_queue_get_bytes(q, &buf, &len, timeout);
        if (r == MP_EEMPTY)
            continue;
        if (r < 0)
            _exit(2);
        if (stop_on_pill && len == 4 && memcmp(buf, "STOP", 4) == 0) {
            mp_free(buf);
            return;
        }
        uint64_t seq;
        if (item_ok(buf, len, &seq)) {
            st->good++;
            st->seq_sum += seq;
        } else {
            st->bad++;
        }
        mp_free(buf);
    }
}

static void test_many_producers_consumers(void)
{
    enum { P = 4, C = 4, N = 5000 };
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 65536});
    struct stats *st = stats_new();
    pid_t pids[P + C];
    for (int c = 0; c < C; c++)
        if ((pids[c] = fork()) == 0) {
            consume(q, st, 30, true);
            _exit(0);
        }
    for (int p = 0; p < P; p++)
        if ((pids[C + p] = fork()) == 0) {
            unsigned seed = (unsigned)p;
            for (uint64_t i = 0; i < N; i++) {
                uint64_t seq = (uint64_t)p * N + i;
                size_t len = 16 + (size_t)(rand_r(&seed) % 300);
                void *it = make_item(seq, len);
                if (mp_queue_put_bytes(q, it, len, 30) != 0)
                    _exit(1);
                free(it);
            }
            _exit(0);
        }
    int failed = 0;
    for (int p = 0; p < P; p++) {
        int s;
        waitpid(pids[C + p], &s, 0);
        failed += !(WIFEXITED(s) && WEXITSTATUS(s) == 0);
    }
    for (int c = 0; c < C; c++)
        CHECK_OK(mp_queue_put_bytes(q, "STOP", 4, 30));
    for (int c = 0; c < C; c++) {
        int s;
        waitpid(pids[c], &s, 0);
        failed += !(WIFEXITED(s) && WEXITSTATUS(s) == 0);
    }
    CHECK_INT(failed, 0);
    CHECK_INT(st->bad, 0);
    CHECK_INT(st->good, P * N);
    CHECK_INT(st->seq_sum, (uint64_t)P * N * (P * N - 1) / 2);
    CHECK(mp_queue_empty(q));
    munmap(st, sizeof *st);
    mp_queue_free(q);
}

/* ---- SIGKILL at random points ----------------------------------------------------------- */

static void produce_forever(mp_queue *q, struct stats *st, size_t minlen, size_t spread)
{
    unsigned seed = (unsigned)getpid();
    for (;;) {
        uint64_t seq = st->seq++;
        size_t len = minlen + (size_t)(rand_r(&seed) % spread);
        void *it = make_item(seq, len);
        int r = mp_queue_put_bytes(q, it, len, 1);
        free(it);
        if (r < 0 && r != MP_EFULL)
            _exit(2);
    }
}

/* One round: 2 producers and 2 consumers run; one dies at a random moment, then the rest.
 * Afterwards the parent drains the queue (every item whole) and uses it normally. */
static int kill_round(mp_queue *q, struct stats *st, unsigned *seed, size_t minlen, size_t spread)
{
    pid_t pids[4];
    for (int i = 0; i < 4; i++) {
        if ((pids[i] = fork()) == 0) {
            if (i < 2)
                produce_forever(q, st, minlen, spread);
            consume(q, st, 1, false);
        }
    }
    /* Not synchronisation: the kills land at random points of the traffic. */
    usleep((useconds_t)(rand_r(seed) % 20000));
    kill(pids[rand_r(seed) % 4], SIGKILL);
    usleep((useconds_t)(rand_r(seed) % 5000));
    for (int i = 0; i < 4; i++)
        kill(pids[i], SIGKILL);
    int hung = 0;
    for (int i = 0; i < 4; i++) {
        int s;
        waitpid(pids[i], &s, 0);
        hung += !(WIFSIGNALED(s) && WTERMSIG(s) == SIGKILL); /* exited on its own: an error */
    }
    void *buf;
    size_t len;
    double t0 = mpt_now();
    while (mp_queue_get_bytes(q, &buf, &len, 0) == 0) {
        uint64_t seq;
        if (item_ok(buf, len, &seq))
            st->good++;
        else
            st->bad++;
        mp_free(buf);
    }
    hung += mpt_now() - t0 > 5;
    hung += mp_queue_qsize(q) != 0;
    return hung;
}

static void *getter_thread(void *arg)
{
    mp_queue *q = arg;
    void *buf = NULL;
    size_t len = 0;
    uint64_t seq;
    int r = mp_queue_get_bytes(q, &buf, &len, 10);
    intptr_t ok = r == 0 && item_ok(buf, len, &seq);
    mp_free(buf);
    return (void *)ok;
}

static void kill_test(size_t capacity, size_t minlen, size_t spread, int rounds)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = capacity});
    struct stats *st = stats_new();
    unsigned seed = (unsigned)getpid();
    int problems = 0;
    for (int r = 0; r < rounds; r++)
        problems += kill_round(q, st, &seed, minlen, spread);
    CHECK_INT(problems, 0);
    CHECK_INT(st->bad, 0);
    CHECK(st->good > 0);
    /* Still a working queue: an item of the same kind goes through. */
    pthread_t t;
    pthread_create(&t, NULL, getter_thread, q);
    void *it = make_item(99, minlen + spread / 2);
    CHECK_OK(mp_queue_put_bytes(q, it, minlen + spread / 2, 10));
    free(it);
    void *ok = NULL;
    pthread_join(t, &ok);
    CHECK(ok == (void *)1);
    printf("     %d rounds: %llu whole items received, %llu torn\n", rounds,
           (unsigned long long)st->good, (unsigned long long)st->bad);
    munmap(st, sizeof *st);
    mp_queue_free(q);
}

static void test_kill_small_items(void) { kill_test(16384, 16, 3000, 150); }

/* Items 3-6x the ring: every one is streamed, and kills land mid-stream. */
static void test_kill_streamed_items(void) { kill_test(4096, 12000, 12000, 80); }

/* A producer maps the ring's pages in by the stretch (ring.c's prefault), so writing
 * 800 KB of ints into a fresh ring takes no page-fault exceptions, where it took one per
 * 4 KiB page (~195) before. Counted by the kernel's own software counter for this
 * process (page faults taken in user mode; madvise's population is not one). Skipped
 * where the counter cannot be opened or the kernel lacks MADV_POPULATE_WRITE (< 5.14), and
 * under the sanitizers, whose shadow memory takes faults of its own (TSan: ~1000 here). */
static void test_producer_maps_ring_ahead(void)
{
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    fprintf(stderr, "  skipped under a sanitizer (its shadow memory faults too)\n");
    return;
#endif
    void *probe = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(probe != MAP_FAILED);
    int populate = madvise(probe, 4096, MADV_POPULATE_WRITE);
    munmap(probe, 4096);
    struct perf_event_attr a = {.type = PERF_TYPE_SOFTWARE, .size = sizeof a,
                                .config = PERF_COUNT_SW_PAGE_FAULTS, .disabled = 1,
                                .exclude_kernel = 1, .exclude_hv = 1};
    int fd = populate == 0 ? (int)syscall(SYS_perf_event_open, &a, 0, -1, -1, 0) : -1;
    if (fd < 0) {
        fprintf(stderr, "  skipped: %s\n", populate ? "no MADV_POPULATE_WRITE" : strerror(errno));
        return;
    }
    mp_queue *q = mp_queue_new(NULL);
    mp_value *v = mp_value_int(7);
    CHECK_OK(mp_queue_put(q, v, -1)); /* the queue's and the value's first touches */
    CHECK(ioctl(fd, PERF_EVENT_IOC_ENABLE, 0) == 0);
    int bad = 0;
    for (int i = 0; i < 100000; i++)
        bad += mp_queue_put(q, v, -1) < 0;
    CHECK(ioctl(fd, PERF_EVENT_IOC_DISABLE, 0) == 0);
    CHECK_INT(bad, 0);
    long long faults = -1;
    CHECK(read(fd, &faults, sizeof faults) == (ssize_t)sizeof faults);
    CHECK(faults >= 0 && faults < 20);
    if (faults >= 20)
        fprintf(stderr, "  %lld page faults writing 800 KB of ints\n", faults);
    CHECK_INT(mp_queue_qsize(q), 100001);
    mp_value *got = NULL;
    CHECK_OK(mp_queue_get_into(q, &got, 0));
    CHECK_INT(mp_value_get_int(got), 7);
    mp_value_free(got);
    mp_value_free(v);
    mp_queue_free(q);
    close(fd);
}

int main(int argc, char **argv)
{
    /* The forkserver (and the resource tracker it starts) keep a socket and a pipe
     * open for the program's lifetime: start them before the fd leak checks. */
    mp_forkserver_ensure_running();
    RUN_IF(argc, argv, test_basic);
    RUN_IF(argc, argv, test_scalar_roundtrip);
    RUN_IF(argc, argv, test_maxsize);
    RUN_IF(argc, argv, test_wraparound);
    RUN_IF(argc, argv, test_int_wraparound);
    RUN_IF(argc, argv, test_exactly_full_ring);
    RUN_IF(argc, argv, test_joinable);
    RUN_IF(argc, argv, test_join_dead_consumer);
    RUN_IF(argc, argv, test_join_dead_consumer_get_many);
    RUN_IF(argc, argv, test_join_dead_tasks_done);
    RUN_IF(argc, argv, test_join_consumer_exits);
    RUN_IF(argc, argv, test_join_pid_reused);
    RUN_IF(argc, argv, test_join_dead_consumer_streamed);
    RUN_IF(argc, argv, test_blocking_wakeup);
    RUN_IF(argc, argv, test_big_items);
    RUN_IF(argc, argv, test_put_then_join);
    RUN_IF(argc, argv, test_workers_all_methods);
    RUN_IF(argc, argv, test_many_producers_consumers);
    RUN_IF(argc, argv, test_kill_small_items);
    RUN_IF(argc, argv, test_kill_streamed_items);
    RUN_IF(argc, argv, test_producer_maps_ring_ahead);
    return mpt_done();
}
