/* Kill storms against queues: producers and consumers SIGKILLed at random points of their
 * traffic (a random number of operations in, so some die inside put or get, some between
 * get and task_done, some in the middle of streaming an item bigger than the ring), with
 * replacements started, then the survivors stopped and the queue drained. Items are
 * numbered by producer; afterwards:
 *   - nothing hung (every stop and every kill point is reached within bounded time);
 *   - no item is torn, none arrives twice, none that was never put arrives;
 *   - every item whose put returned was received, except at most one per consumer killed
 *     inside get (it took the item and died before recording it);
 *   - an item whose producer was killed inside put arrived at most once;
 *   - JoinableQueue: join reports exactly the tasks the killed consumers died holding
 *     (MP_EWORKERDIED with a count between those surely and possibly held), and after
 *     task_done for each of them, join returns 0.
 * The int storm does the same with single puts of int values (most of them 8-byte word
 * records, some 64-bit ints in [len][tag] records, every fourth item bytes) taken by
 * mp_queue_get_into, the word fast path. */
#include "test_util.h"
#include "fault.h"

#include <stdatomic.h>
#include <sys/mman.h>

#define MAXK 4096    /* items per producer per round */
#define MAXK_INT (1u << 18) /* the int storm's: its items are quick, so more of them */
#define PRODUCERS 2
#define CONSUMERS 2
#define KILLS 4      /* per round */

enum { IDLE, IN_GET, HOLDING, IN_TASK_DONE };

struct qstorm {
    uint32_t done[MPT_MAX_IDS];     /* producer: items whose put returned 0 */
    uint8_t mid_put[MPT_MAX_IDS];   /* producer: inside put of item done[id] */
    uint8_t producer[MPT_MAX_IDS];  /* the id is a producer's */
    _Atomic uint32_t phase[MPT_MAX_IDS]; /* consumer: IDLE, IN_GET, ... */
    _Atomic uint8_t got[MPT_MAX_IDS][MAXK];
    _Atomic uint64_t torn, phantom, received;
};

struct storm_arg {
    mp_queue *q;
    mp_event *stop; /* set with ctl->stop, wakes producers that ran out of items */
    struct qstorm *st;
    bool joinable;
    bool ints; /* items are mostly int values (word records), got by mp_queue_get_into */
    _Atomic uint8_t *igot; /* the int storm's got[id][k] (MAXK_INT per id), new each round */
};

#define IGOT_BYTES ((size_t)MPT_MAX_IDS * MAXK_INT)

static uint32_t maxk(const struct storm_arg *a) { return a->ints ? MAXK_INT : MAXK; }

/* How many times item (p, k) was received. */
static _Atomic uint8_t *got(struct storm_arg *a, uint32_t p, uint32_t k)
{
    return a->ints ? &a->igot[(size_t)p * MAXK_INT + k] : &a->st->got[p][k];
}

/* Item (p, k): a 12-byte header [p][k][len] then bytes that depend on all three. */
static size_t item_len(unsigned *seed)
{
    unsigned r = mpt_rand(seed);
    return r % 16 == 0 ? 9000 + r % 12000 /* bigger than the ring: streamed */ : 12 + r % 600;
}

static unsigned char pattern(uint32_t p, uint32_t k, size_t i)
{
    return (unsigned char)(p * 131 + k * 7 + i * 13 + (i >> 8));
}

static void make_item(unsigned char *buf, uint32_t p, uint32_t k, size_t len)
{
    uint32_t hdr[3] = {p, k, (uint32_t)len};
    memcpy(buf, hdr, sizeof hdr);
    for (size_t i = sizeof hdr; i < len; i++)
        buf[i] = pattern(p, k, i);
}

/* Whole and well-formed, its number below kmax: *p and *k set. */
static bool item_ok(const unsigned char *buf, size_t len, uint32_t kmax, uint32_t *p,
                    uint32_t *k)
{
    uint32_t hdr[3];
    if (len < sizeof hdr)
        return false;
    memcpy(hdr, buf, sizeof hdr);
    if (hdr[2] != len || hdr[0] >= MPT_MAX_IDS || hdr[1] >= kmax)
        return false;
    for (size_t i = sizeof hdr; i < len; i++)
        if (buf[i] != pattern(hdr[0], hdr[1], i))
            return false;
    *p = hdr[0];
    *k = hdr[1];
    return true;
}

/* The int storm's item (p, k) as an int: word records up to 32 bits; every eighth one
 * is wider (bit 40 set), a 9-byte MessagePack int in a [len][tag] record. */
#define INT_WIDE ((int64_t)1 << 40)
static int64_t int_item(uint32_t p, uint32_t k)
{
    return (int64_t)p << 18 | k | (k % 8 == 5 ? INT_WIDE : 0);
}

/* An int of the int storm: *p and *k set when it is one that int_item makes. */
static bool int_ok(int64_t i, uint32_t *p, uint32_t *k)
{
    int64_t base = i & ~INT_WIDE;
    if (base < 0 || base >= (int64_t)MPT_MAX_IDS << 18)
        return false;
    *p = (uint32_t)(base >> 18);
    *k = (uint32_t)(base & (MAXK_INT - 1));
    return i == int_item(*p, *k);
}

/* Put item (p, k) of the int storm: an int value, or bytes every fourth item. */
static int put_int_item(mp_queue *q, mp_value *v, unsigned char *buf, uint32_t p, uint32_t k,
                        size_t len, double timeout)
{
    if (k % 4 == 3) {
        make_item(buf, p, k, len);
        return mp_queue_put_bytes(q, buf, len, timeout);
    }
    mp_value_set_int(v, int_item(p, k));
    return mp_queue_put(q, v, timeout);
}

static int producer(mpt_ctl *c, int id, struct storm_arg *a)
{
    struct qstorm *st = a->st;
    unsigned seed = (unsigned)getpid() * 2654435761u;
    static unsigned char buf[32768];
    mp_value *v = mp_value_int(0);
    for (uint32_t k = 0; k < maxk(a) && !atomic_load(&c->stop); k++) {
        size_t len = item_len(&seed);
        if (!a->ints)
            make_item(buf, (uint32_t)id, k, len);
        st->mid_put[id] = 1;
        int r;
        while ((r = a->ints ? put_int_item(a->q, v, buf, (uint32_t)id, k, len, 0.1)
                            : mp_queue_put_bytes(a->q, buf, len, 0.1)) == MP_EFULL)
            if (atomic_load(&c->stop))
                return 0; /* gave up on item k: its put did not return 0 */
        if (r < 0)
            return 2;
        st->done[id] = k + 1;
        st->mid_put[id] = 0;
        atomic_fetch_add(&c->progress, 1);
    }
    while (!atomic_load(&c->stop)) /* out of numbers: wait to be stopped */
        mp_event_wait(a->stop, 1);
    return 0;
}

/* One item (p, k) of the int storm by get_into (into the value of the last one): 1 when
 * whole, 0 when torn, or an error. */
static int get_int_item(mp_queue *q, mp_value **v, double timeout, uint32_t *p, uint32_t *k)
{
    int r = mp_queue_get_into(q, v, timeout);
    if (r < 0)
        return r;
    size_t len = 0;
    const void *b = mp_value_type(*v) == MP_BYTES ? mp_value_get_bytes(*v, &len) : NULL;
    if (b)
        return item_ok(b, len, MAXK_INT, p, k) && *k % 4 == 3;
    return mp_value_type(*v) == MP_INT && int_ok(mp_value_get_int(*v), p, k) && *k % 4 != 3;
}

static int consumer(mpt_ctl *c, int id, struct storm_arg *a)
{
    struct qstorm *st = a->st;
    mp_value *v = NULL;
    for (;;) {
        void *buf = NULL;
        size_t len = 0;
        uint32_t p, k;
        atomic_store(&st->phase[id], IN_GET);
        int r = a->ints ? get_int_item(a->q, &v, 0.1, &p, &k)
                        : mp_queue_get_bytes(a->q, &buf, &len, 0.1);
        if (r == MP_EEMPTY) {
            atomic_store(&st->phase[id], IDLE);
            if (atomic_load(&c->stop) >= 2) /* producers gone, queue drained */
                return 0;
            continue;
        }
        if (r < 0)
            return 3;
        if (a->ints ? r == 1 : item_ok(buf, len, MAXK, &p, &k))
            atomic_fetch_add(got(a, p, k), 1);
        else
            atomic_fetch_add(&st->torn, 1);
        mp_free(buf);
        atomic_store(&st->phase[id], HOLDING);
        atomic_fetch_add(&st->received, 1);
        if (a->joinable) {
            atomic_store(&st->phase[id], IN_TASK_DONE);
            if (mp_queue_task_done(a->q) < 0)
                return 4;
        }
        atomic_store(&st->phase[id], IDLE);
        atomic_fetch_add(&c->progress, 1);
    }
}

static int worker(mpt_ctl *c, int slot, int id, void *arg)
{
    struct storm_arg *a = arg;
    if (slot < PRODUCERS) {
        a->st->producer[id] = 1;
        return producer(c, id, a);
    }
    return consumer(c, id, a);
}

/* The round's accounting; prints what is wrong. Returns the problems found. */
static unsigned long long lost_tasks; /* reported by join, over the test */

static int check_round(mpt_ctl *c, struct storm_arg *a, int round, unsigned seed)
{
    struct qstorm *st = a->st;
    int problems = 0;
    unsigned dup = 0, missing = 0, phantom = 0, in_get = 0, holding = 0, maybe = 0;
    for (int id = 0; id < c->next_id && id < MPT_MAX_IDS; id++) {
        if (!st->producer[id]) { /* a consumer: what it may have died holding */
            if (c->killed[id]) {
                uint32_t ph = atomic_load(&st->phase[id]);
                in_get += ph == IN_GET;
                holding += ph == HOLDING;
                maybe += ph == IN_GET || ph == HOLDING || ph == IN_TASK_DONE;
            }
            continue;
        }
        for (uint32_t k = 0; k < maxk(a); k++) {
            unsigned g = atomic_load(got(a, (uint32_t)id, k));
            dup += g > 1;
            if (k < st->done[id])
                missing += g == 0;
            else if (g && !(k == st->done[id] && st->mid_put[id] && c->killed[id]))
                phantom++; /* never put, or put by a producer that gave up on it */
        }
    }
    if (dup || phantom || st->torn || missing > in_get) {
        fprintf(stderr,
                "round %d (seed %u): %u duplicated, %u phantom, %llu torn, %u missing "
                "(%u consumers killed inside get)\n",
                round, seed, dup, phantom, (unsigned long long)st->torn, missing, in_get);
        problems++;
    }
    if (mp_queue_qsize(a->q) != 0) {
        fprintf(stderr, "round %d: %zu items left after the drain\n", round,
                mp_queue_qsize(a->q));
        problems++;
    }
    if (!a->joinable)
        return problems;
    /* The tasks the killed consumers died holding: at least `holding`, at most `maybe`. */
    int r = mp_queue_join(a->q, 5);
    unsigned long long n = 0;
    const char *msg = strstr(mp_last_error(), "join: ");
    if (r == MP_EWORKERDIED && msg)
        sscanf(msg, "join: %llu task", &n);
    if (!(r == 0 && holding == 0) &&
        !(r == MP_EWORKERDIED && n >= 1 && n >= holding && n <= maybe)) {
        fprintf(stderr, "round %d (seed %u): join gave %s (%s); killed consumers held %u..%u\n",
                round, seed, mp_errname(r), mp_last_error(), holding, maybe);
        return problems + 1;
    }
    lost_tasks += n;
    for (unsigned long long i = 0; i < n; i++) /* the parent takes the lost tasks over */
        if ((r = mp_queue_task_done(a->q)) < 0)
            break;
    if (r < 0 || (r = mp_queue_join(a->q, 0)) != 0) {
        fprintf(stderr, "round %d (seed %u): after %llu task_done: %s (%s)\n", round, seed, n,
                mp_errname(r), mp_last_error());
        problems++;
    }
    return problems;
}

static void storm(bool joinable, bool ints)
{
    mp_queue *q = joinable ? mp_joinable_queue_new(&(mp_queue_opts){.capacity = 8192})
                           : mp_queue_new(&(mp_queue_opts){.capacity = 8192});
    mp_event *stop = mp_event_new();
    struct qstorm *st = mmap(NULL, sizeof *st, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    mpt_ctl *c = mpt_ctl_new();
    CHECK(q && stop && st != MAP_FAILED && c);
    struct storm_arg a = {q, stop, st, joinable, ints, NULL};
    int problems = 0, rounds = 0, kills = 0;
    uint64_t received = 0;
    double t0 = mpt_now();
    for (; mpt_more_rounds(rounds, 12, t0); rounds++) {
        unsigned seed = (unsigned)getpid() * 2654435761u + (unsigned)rounds, pick = seed;
        memset(st, 0, sizeof *st);
        if (ints) { /* zero pages, touched only where items were received */
            if (a.igot)
                munmap(a.igot, IGOT_BYTES);
            a.igot = mmap(NULL, IGOT_BYTES, PROT_READ | PROT_WRITE,
                          MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
            CHECK(a.igot != MAP_FAILED);
            if (a.igot == MAP_FAILED)
                break;
        }
        mp_event_clear(stop);
        mpt_storm_begin(c, PRODUCERS + CONSUMERS, worker, &a);
        problems += mpt_storm_kill(c, KILLS, 0, PRODUCERS + CONSUMERS, 300, &pick, worker, &a);
        mp_event_set(stop);
        problems += mpt_storm_stop(c, 1, 0, PRODUCERS);                     /* producers */
        problems += mpt_storm_stop(c, 2, PRODUCERS, PRODUCERS + CONSUMERS); /* drain */
        problems += check_round(c, &a, rounds, seed);
        kills += c->kills;
        received += st->received;
    }
    CHECK_INT(problems, 0);
    /* Still a working queue. */
    CHECK_OK(mp_queue_put_bytes(q, "after", 5, 1));
    void *buf;
    size_t len;
    CHECK_OK(mp_queue_get_bytes(q, &buf, &len, 1));
    CHECK(len == 5 && memcmp(buf, "after", 5) == 0);
    mp_free(buf);
    if (joinable) {
        CHECK_OK(mp_queue_task_done(q));
        CHECK_OK(mp_queue_join(q, 0));
    }
    printf("     %d rounds, %d kills, %llu items received", rounds, kills,
           (unsigned long long)received);
    if (joinable)
        printf(", %llu tasks reported died unfinished by join", lost_tasks);
    printf("\n");
    mpt_ctl_free(c);
    munmap(st, sizeof *st);
    if (a.igot && a.igot != MAP_FAILED)
        munmap(a.igot, IGOT_BYTES);
    mp_event_free(stop);
    mp_queue_free(q);
}

static void test_kill_storm_queue(void) { storm(false, false); }
static void test_kill_storm_joinable_queue(void) { storm(true, false); }
static void test_kill_storm_int_items(void) { storm(false, true); }
static void test_kill_storm_joinable_int_items(void) { storm(true, true); }

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_kill_storm_queue);
    RUN_IF(argc, argv, test_kill_storm_joinable_queue);
    RUN_IF(argc, argv, test_kill_storm_int_items);
    RUN_IF(argc, argv, test_kill_storm_joinable_int_items);
    return mpt_done();
}
