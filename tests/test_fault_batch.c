/* Kill storms for queue batches: producers SIGKILLed in the middle of mp_queue_put_many and
 * consumers in the middle of mp_queue_get_many. What must hold: every item anyone receives
 * is whole (its fields agree with each other), no item is received twice, a producer's
 * batch is in the queue all or nothing (once seen, every item of it is there), and the
 * queue keeps working for the survivors. Bounded in time; `MP_SOAK=N` runs N times more. */
#include "test_util.h"
#include "fault.h"

#include "multiproc/queue.h"

#include <signal.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define MAXSEQ (1u << 22)

struct shared {
    _Atomic uint64_t next_seq;     /* producers reserve a batch's numbers here */
    _Atomic unsigned char seen[MAXSEQ];
};

/* Item seq of a batch [first, first + n): [seq, first, n, "pad" whose length and letter
 * derive from seq]. */
static mp_value *make_item(uint64_t seq, uint64_t first, uint64_t n)
{
    char pad[64];
    size_t len = seq % 60;
    memset(pad, 'a' + (int)(seq % 26), len);
    pad[len] = 0;
    return mp_value_pack("[IIIs]", (int64_t)seq, (int64_t)first, (int64_t)n, pad);
}

/* 1 if v is a whole item; *seq, *first, *n set. */
static int item_ok(const mp_value *v, uint64_t *seq, uint64_t *first, uint64_t *n)
{
    int64_t s, f, k;
    const char *pad;
    if (mp_value_unpack(v, "[IIIs]", &s, &f, &k, &pad) != 0)
        return 0;
    if (s < 0 || f < 0 || k <= 0 || s < f || s >= f + k || (uint64_t)s >= MAXSEQ)
        return 0;
    size_t len = strlen(pad);
    if (len != (uint64_t)s % 60)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (pad[i] != 'a' + (int)(s % 26))
            return 0;
    *seq = (uint64_t)s;
    *first = (uint64_t)f;
    *n = (uint64_t)k;
    return 1;
}

static _Noreturn void produce_forever(mp_queue *q, struct shared *sh)
{
    unsigned seed = (unsigned)getpid();
    mp_value *items[40];
    for (;;) {
        uint64_t n = 1 + mpt_rand(&seed) % 40;
        uint64_t first = atomic_fetch_add(&sh->next_seq, n);
        if (first + n >= MAXSEQ)
            pause();
        for (uint64_t i = 0; i < n; i++)
            items[i] = make_item(first + i, first, n);
        int r = mp_queue_put_many(q, (const mp_value *const *)items, n, 1);
        for (uint64_t i = 0; i < n; i++)
            mp_value_free(items[i]);
        if (r < 0 && r != MP_EFULL)
            _exit(2);
    }
}

/* Receive what is there (a consumer child, or the parent draining). Counts torn items and
 * duplicates; with `counts`, also how many items of each batch arrived (indexed by first). */
static void receive(mp_queue *q, struct shared *sh, double timeout, bool forever,
                    uint64_t *torn, uint64_t *dups, uint32_t *counts)
{
    mp_value *out[32];
    size_t got;
    for (;;) {
        int r = mp_queue_get_many(q, out, 32, &got, timeout);
        if (r == MP_EEMPTY && forever)
            continue;
        if (r < 0)
            return;
        for (size_t i = 0; i < got; i++) {
            uint64_t seq, first, n;
            if (!item_ok(out[i], &seq, &first, &n)) {
                ++*torn;
            } else {
                if (atomic_exchange(&sh->seen[seq], 1))
                    ++*dups;
                if (counts) { /* items seen of the batch starting at first, and its size */
                    counts[2 * first]++;
                    counts[2 * first + 1] = (uint32_t)n;
                }
            }
            mp_value_free(out[i]);
        }
    }
}

/* Receive for `seconds`. */
static void drain_for(mp_queue *q, struct shared *sh, double seconds, uint32_t *counts,
                      uint64_t *torn, uint64_t *dups)
{
    double end = mpt_now() + seconds;
    while (mpt_now() < end)
        receive(q, sh, 0, false, torn, dups, counts);
}

/* Producers only are killed, at random moments; the parent drains the queue. */
static int producer_round(mp_queue *q, struct shared *sh, unsigned *seed, uint32_t *counts,
                          uint64_t *torn, uint64_t *dups)
{
    pid_t pids[2];
    for (int i = 0; i < 2; i++)
        if ((pids[i] = fork()) == 0)
            produce_forever(q, sh);
    /* Not synchronisation: the parent consumes meanwhile, so the producers keep putting
     * and the kills land at random points of their batches. */
    drain_for(q, sh, 1e-6 * (mpt_rand(seed) % 10000), counts, torn, dups);
    kill(pids[mpt_rand(seed) % 2], SIGKILL);
    drain_for(q, sh, 1e-6 * (mpt_rand(seed) % 3000), counts, torn, dups);
    int hung = 0;
    for (int i = 0; i < 2; i++) {
        kill(pids[i], SIGKILL);
        int s;
        waitpid(pids[i], &s, 0);
        hung += !(WIFSIGNALED(s) && WTERMSIG(s) == SIGKILL);
    }
    double t0 = mpt_now();
    receive(q, sh, 0, false, torn, dups, counts);
    hung += mpt_now() - t0 > 5;
    hung += mp_queue_qsize(q) != 0;
    return hung;
}

/* A batch seen at all is seen whole: items seen of it == its size. Returns the items. */
static uint64_t check_batches_whole(struct shared *sh, const uint32_t *counts, uint64_t *partial)
{
    uint64_t to = atomic_load(&sh->next_seq), items = 0;
    for (uint64_t first = 0; first < to && first < MAXSEQ; first++) {
        items += counts[2 * first];
        *partial += counts[2 * first] != counts[2 * first + 1];
    }
    return items;
}

static void test_kill_producers_mid_batch(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 16384});
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint32_t *counts = calloc(2 * (size_t)MAXSEQ, sizeof *counts);
    unsigned seed = (unsigned)getpid();
    uint64_t torn = 0, dups = 0, partial = 0;
    int problems = 0, rounds = mpt_rounds(60);
    for (int r = 0; r < rounds; r++)
        problems += producer_round(q, sh, &seed, counts, &torn, &dups);
    uint64_t items = check_batches_whole(sh, counts, &partial);
    CHECK_INT(problems, 0);
    CHECK_INT(torn, 0);
    CHECK_INT(dups, 0);
    CHECK_INT(partial, 0);
    CHECK(items > 0);
    printf("     %d rounds: %llu whole items, %llu torn, %llu duplicated, %llu partial batches\n",
           rounds, (unsigned long long)items, (unsigned long long)torn,
           (unsigned long long)dups, (unsigned long long)partial);
    free(counts);
    munmap(sh, sizeof *sh);
    mp_queue_free(q);
}

/* Producers and consumers killed: whole items, never one twice, and the queue still works. */
static void test_kill_all_mid_batch(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 16384});
    struct shared *sh = mmap(NULL, sizeof *sh, PROT_READ | PROT_WRITE,
                             MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    uint64_t *bad = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    unsigned seed = (unsigned)getpid() * 7;
    uint64_t torn = 0, dups = 0;
    int hung = 0, rounds = mpt_rounds(60);
    for (int r = 0; r < rounds; r++) {
        pid_t pids[4];
        for (int i = 0; i < 4; i++)
            if ((pids[i] = fork()) == 0) {
                if (i < 2)
                    produce_forever(q, sh);
                /* never returns; counts what it finds in its own slots as it goes */
                receive(q, sh, 1, true, &bad[2 * i], &bad[2 * i + 1], NULL);
                _exit(0);
            }
        usleep((useconds_t)(mpt_rand(&seed) % 10000));
        kill(pids[mpt_rand(&seed) % 4], SIGKILL);
        usleep((useconds_t)(mpt_rand(&seed) % 3000));
        for (int i = 0; i < 4; i++) {
            kill(pids[i], SIGKILL);
            int s;
            waitpid(pids[i], &s, 0);
            hung += !(WIFSIGNALED(s) && WTERMSIG(s) == SIGKILL);
        }
        double t0 = mpt_now();
        receive(q, sh, 0, false, &torn, &dups, NULL);
        hung += mpt_now() - t0 > 5;
        hung += mp_queue_qsize(q) != 0;
    }
    for (int i = 2; i < 4; i++) {
        torn += bad[2 * i];
        dups += bad[2 * i + 1];
    }
    uint64_t seen = 0, to = atomic_load(&sh->next_seq);
    for (uint64_t s = 0; s < to && s < MAXSEQ; s++)
        seen += atomic_load(&sh->seen[s]);
    CHECK_INT(hung, 0);
    CHECK_INT(torn, 0);
    CHECK_INT(dups, 0);
    CHECK(seen > 0);
    /* Still a working queue: a batch goes through whole. */
    mp_value *in[3] = {make_item(MAXSEQ - 3, MAXSEQ - 3, 3), make_item(MAXSEQ - 2, MAXSEQ - 3, 3),
                       make_item(MAXSEQ - 1, MAXSEQ - 3, 3)};
    CHECK_OK(mp_queue_put_many(q, (const mp_value *const *)in, 3, 5));
    mp_value *out[4];
    size_t got = 0;
    CHECK_OK(mp_queue_get_many(q, out, 4, &got, 5));
    CHECK_INT(got, 3);
    for (size_t i = 0; i < got; i++) {
        uint64_t s, f, n;
        CHECK(item_ok(out[i], &s, &f, &n) && s == MAXSEQ - 3 + i);
        mp_value_free(out[i]);
    }
    for (int i = 0; i < 3; i++)
        mp_value_free(in[i]);
    printf("     %d rounds: %llu items received whole, %llu torn, %llu duplicated\n", rounds,
           (unsigned long long)seen, (unsigned long long)torn, (unsigned long long)dups);
    munmap(bad, 4096);
    munmap(sh, sizeof *sh);
    mp_queue_free(q);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_kill_producers_mid_batch);
    RUN_IF(argc, argv, test_kill_all_mid_batch);
    return mpt_done();
}
