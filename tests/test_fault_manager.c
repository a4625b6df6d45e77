/* A kill storm against a manager: worker processes (forked; each decodes its own proxies
 * to a shared dict and a managed Lock, and connects by address + authkey to create an
 * object of its own) repeatedly do the atomic d.add('n', 1), counting each add in shared
 * memory only after its reply, and take and release the Lock; they are SIGKILLed at random
 * points (inside a request, while holding the Lock, while connecting) and replaced. What
 * must hold:
 *   - nothing hangs: every worker's call has a bound (a Lock wait of LIMIT seconds is a
 *     hang), every survivor stops when told within 10 s;
 *   - the server keeps serving: the parent's calls after the storm succeed;
 *   - every add is explained: d['n'] is the sum of the acknowledged adds plus at most one
 *     unacknowledged add for each killed worker that was inside its add;
 *   - a Lock held by a killed client is released (the parent can acquire it);
 *   - the objects only the dead referred to are freed (the server's object count returns
 *     to the parent's two), and nothing leaks (fds, zombies, /dev/shm: RUN_IF checks). */
#include "test_util.h"
#include "fault.h"

#include <multiproc/manager.h>

#include <stdatomic.h>
#include <sys/mman.h>

#define WORKERS 4
#define KILLS 8
#define LIMIT 10.0 /* a worker's Lock wait lasting this long is a hang */

struct shared {
    _Atomic uint64_t acked[MPT_MAX_IDS];  /* adds whose reply the worker received */
    _Atomic uint32_t pending[MPT_MAX_IDS]; /* 1 from before an add's request to its count */
    _Atomic uint32_t holding[MPT_MAX_IDS]; /* 1 while the worker may hold the Lock */
};

struct storm {
    struct shared *sh;
    char *refs; /* the encoded [dict proxy, Lock proxy]: each worker decodes its own */
    size_t refs_len;
    char address[128];
    const void *key;
    size_t keylen;
};

static int mgr_worker(mpt_ctl *c, int slot, int id, void *arg)
{
    (void)slot;
    struct storm *s = arg;
    struct shared *sh = s->sh;
    mp_value *v = NULL;
    mp_proxy *d = NULL, *lock = NULL;
    if (mp_value_decode(s->refs, s->refs_len, NULL, 0, &v) < 0 ||
        mp_value_unpack(v, "[h h]", &mp_kind_proxy, &d, &mp_kind_proxy, &lock) < 0)
        return 8;
    /* A connection by address + authkey, and an object only this worker refers to. */
    mp_manager *m = mp_manager_connect(s->address, s->key, s->keylen, LIMIT);
    mp_proxy *own = m ? mp_manager_list(m, NULL) : NULL;
    if (!own)
        return 9;
    for (unsigned i = 0; !atomic_load(&c->stop); i++) {
        atomic_store(&sh->pending[id], 1);
        if (mp_proxy_callf(d, "add", NULL, "[s i]", "n", 1) < 0)
            return 5;
        atomic_fetch_add(&sh->acked[id], 1);
        atomic_store(&sh->pending[id], 0);
        if (i % 3 == 0) {
            atomic_store(&sh->holding[id], 1);
            if (mp_proxy_acquire(lock, LIMIT) != 0)
                return 6;
            if (mp_proxy_callf(own, "append", NULL, "[i]", (int64_t)i) < 0)
                return 10;
            if (mp_proxy_release(lock) < 0)
                return 7;
            atomic_store(&sh->holding[id], 0);
        }
        atomic_fetch_add(&c->progress, 1);
    }
    return 0;
}

/* The server's object count (its debug_info request), or -1. */
static int64_t server_objects(const char *address, const void *key, size_t keylen)
{
    mp_client_opts co = {.authkey = key, .authkey_len = keylen};
    mp_connection *c = mp_client(address, &co);
    if (!c)
        return -1;
    mp_value *req = mp_value_pack("[s i []]", "debug_info", 0), *rep = NULL;
    char *buf = NULL;
    size_t len;
    int64_t n = -1;
    int r = mp_value_encode(req, &buf, &len, NULL, 0, NULL);
    mp_value_free(req);
    if (r == 0)
        r = mp_connection_send_bytes(c, buf, 0, len);
    mp_free(buf);
    if (r == 0)
        r = mp_connection_recv(c, &rep);
    if (r == 0 && mp_value_unpack(rep, "[i {s:I}]", &(int){0}, "objects", &n) < 0)
        n = -1;
    mp_value_free(rep);
    mp_connection_free(c);
    return n;
}

/* Wait (up to 10 s) until the server holds `want` objects; returns the last count. */
static int64_t wait_objects(const struct storm *s, int64_t want)
{
    int64_t n = -1;
    for (double end = mpt_now() + 10; mpt_now() < end; usleep(2000))
        if ((n = server_objects(s->address, s->key, s->keylen)) == want)
            break;
    return n;
}

/* After a round: every add explained, the Lock free, the dead's objects freed. */
static int round_check(mpt_ctl *c, struct storm *s, mp_proxy *d, mp_proxy *lock, int *held)
{
    struct shared *sh = s->sh;
    int64_t acked = 0, maybe = 0, n = -1, bad = 0;
    for (int id = 0; id < c->next_id && id < MPT_MAX_IDS; id++) {
        acked += (int64_t)atomic_load(&sh->acked[id]);
        if (c->killed[id]) {
            maybe += atomic_load(&sh->pending[id]);
            *held += atomic_load(&sh->holding[id]);
        } else if (atomic_load(&sh->pending[id])) {
            bad++; /* a survivor stopped inside an add */
        }
    }
    mp_value *got = NULL;
    if (mp_proxy_callf(d, "__getitem__", &got, "[s]", "n") < 0) {
        fprintf(stderr, "  the server stopped serving: %s\n", mp_last_error());
        return 1;
    }
    n = mp_value_get_int(got);
    mp_value_free(got);
    if (n < acked || n > acked + maybe) {
        fprintf(stderr, "  d['n'] = %lld, acknowledged adds %lld, killed inside an add %lld\n",
                (long long)n, (long long)acked, (long long)maybe);
        bad++;
    }
    if (mp_proxy_acquire(lock, 5) != 0) {
        fprintf(stderr, "  the Lock was not released: %s\n", mp_last_error());
        return (int)bad + 1;
    }
    bad += mp_proxy_release(lock) < 0;
    int64_t objs = wait_objects(s, 2); /* the dict and the Lock: the workers' lists freed */
    if (objs != 2) {
        fprintf(stderr, "  the server holds %lld objects, not 2\n", (long long)objs);
        bad++;
    }
    return (int)bad;
}

static void test_kill_storm_manager(void)
{
    mp_manager *m = mp_manager_new(NULL);
    CHECK(m != NULL);
    if (!m)
        return;
    struct storm s = {.sh = mmap(NULL, sizeof(struct shared), PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0)};
    CHECK(s.sh != MAP_FAILED);
    snprintf(s.address, sizeof s.address, "%s", mp_manager_address(m));
    s.key = mp_manager_authkey(m, &s.keylen);
    mp_proxy *d = mp_manager_dict(m, NULL), *lock = mp_manager_lock(m);
    CHECK(d && lock);
    mp_value *refs = mp_value_pack("[h h]", &mp_kind_proxy, d, &mp_kind_proxy, lock);
    int fds[4];
    size_t nfds = 0; /* a proxy carries no fd */
    CHECK_OK(mp_value_encode(refs, &s.refs, &s.refs_len, fds, 4, &nfds));
    CHECK_INT(nfds, 0);
    mp_value_free(refs);
    mpt_ctl *c = mpt_ctl_new();
    CHECK(c != NULL && s.refs != NULL);
    if (!c || !s.refs)
        return;
    int problems = 0, rounds = 0, kills = 0, held = 0;
    uint64_t adds = 0;
    double t0 = mpt_now();
    for (; mpt_more_rounds(rounds, 10, t0); rounds++) {
        unsigned seed = (unsigned)getpid() * 2654435761u + (unsigned)rounds;
        memset(s.sh, 0, sizeof *s.sh);
        CHECK_OK(mp_proxy_callf(d, "__setitem__", NULL, "[s i]", "n", 0));
        mpt_storm_begin(c, WORKERS, mgr_worker, &s);
        problems += mpt_storm_kill(c, KILLS, 0, WORKERS, 40, &seed, mgr_worker, &s);
        problems += mpt_storm_stop(c, 1, 0, WORKERS);
        problems += round_check(c, &s, d, lock, &held);
        kills += c->kills;
        adds += atomic_load(&c->progress);
    }
    CHECK_INT(problems, 0);
    printf("     %d rounds, %d kills (%d while taking or holding the Lock), %llu operations\n",
           rounds, kills, held, (unsigned long long)adds);
    mpt_ctl_free(c);
    mp_free(s.refs);
    munmap(s.sh, sizeof *s.sh);
    mp_proxy_free(d);
    mp_proxy_free(lock);
    CHECK_OK(mp_manager_shutdown(m));
    mp_manager_free(m);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_kill_storm_manager);
    return mpt_done();
}
