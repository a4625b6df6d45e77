/* MP_WITH_LOCK, Python's `with lock:` for C: the block runs with the lock held and the
 * lock is released on every way out (end, break, continue, return, goto). */
#include "test_util.h"
#include "multiproc/process.h"
#include "multiproc/sync.h"

static bool held_inside;

static int with_return(mp_lock *l)
{
    MP_WITH_LOCK(l)
    {
        held_inside = mp_lock_is_mine(l);
        return 42; /* leaves the block: released by the cleanup */
    }
    return -1;
}

static void test_with_lock_releases_on_every_exit(void)
{
    mp_lock *l = mp_lock_new();
    int runs = 0;
    MP_WITH_LOCK(l)
    {
        runs++;
        CHECK(mp_lock_is_mine(l));
    }
    CHECK_INT(runs, 1); /* once */
    CHECK(!mp_lock_is_locked(l));
    MP_WITH_LOCK(l)
    {
        runs++;
        break;
    }
    CHECK(!mp_lock_is_locked(l));
    MP_WITH_LOCK(l)
    {
        runs++;
        continue;
    }
    CHECK(!mp_lock_is_locked(l));
    CHECK_INT(runs, 3);
    held_inside = false;
    CHECK_INT(with_return(l), 42);
    CHECK(held_inside);
    CHECK(!mp_lock_is_locked(l));
    MP_WITH_LOCK(l)
    {
        goto out;
    }
out:
    CHECK(!mp_lock_is_locked(l));
    for (int i = 0; i < 3; i++)
        MP_WITH_LOCK(l)
        {
            if (i == 1)
                break; /* the inner for: released, the outer loop goes on */
            runs++;
        }
    CHECK_INT(runs, 5);
    CHECK(!mp_lock_is_locked(l));
    CHECK_OK(mp_lock_acquire(l, 0)); /* a plain Lock: free again */
    CHECK_OK(mp_lock_release(l));
    mp_lock_free(l);
}

static void test_with_lock_nests(void)
{
    mp_lock *a = mp_lock_new(), *r = mp_rlock_new();
    int depth = 0;
    MP_WITH_LOCK(a)
    MP_WITH_LOCK(r)
    MP_WITH_LOCK(r) /* an RLock again: recursive */
    {
        depth = mp_lock_is_mine(a) && mp_lock_is_mine(r) ? 3 : -1;
    }
    CHECK_INT(depth, 3);
    CHECK(!mp_lock_is_locked(a) && !mp_lock_is_locked(r));
    mp_lock_free(a);
    mp_lock_free(r);
}

static void test_with_lock_rc(void)
{
    int rc = 1, ran = 0;
    MP_WITH_LOCK_RC(NULL, rc)
    {
        ran++;
    }
    CHECK_INT(ran, 0); /* not acquired: skipped */
    CHECK_INT(rc, MP_EINVAL);
    mp_lock *l = mp_lock_new();
    MP_WITH_LOCK_RC(l, rc)
    {
        ran++;
    }
    CHECK_INT(ran, 1);
    CHECK_INT(rc, 0);
    mp_lock_free(l);
}

/* A child that dies holding the lock: the next MP_WITH_LOCK runs with MP_EOWNERDEAD. */
static int die_holding(mp_value *args)
{
    mp_lock *l = NULL;
    if (mp_value_unpack(args, "[h]", &mp_kind_lock, &l) < 0 || mp_lock_acquire(l, -1) < 0)
        return 2;
    _exit(0);
}

static void test_with_lock_owner_dead(void)
{
    mp_lock *l = mp_lock_new();
    mp_value *a = mp_value_pack("[h]", &mp_kind_lock, l);
    mp_process_opts o = {.target = die_holding, .args = a, .ctx = mp_get_context("fork")};
    mp_process *p = mp_process_new(&o);
    CHECK_OK(mp_process_start(p));
    CHECK_OK(mp_process_join(p, 30));
    int rc = 1, ran = 0;
    MP_WITH_LOCK_RC(l, rc)
    {
        ran = mp_lock_is_mine(l);
    }
    CHECK_INT(ran, 1);
    CHECK_INT(rc, MP_EOWNERDEAD);
    CHECK(!mp_lock_is_locked(l));
    mp_process_free(p);
    mp_value_free(a);
    mp_lock_free(l);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_with_lock_releases_on_every_exit);
    RUN_IF(argc, argv, test_with_lock_nests);
    RUN_IF(argc, argv, test_with_lock_rc);
    RUN_IF(argc, argv, test_with_lock_owner_dead);
    return mpt_done();
}
