/* ActivePool: a managed list of active workers, a Semaphore lets three run at a time. */
/* Manager example in C (the seeds' Semaphore "ActivePool"): ten workers, at most three
 * active at once; each records its name in a manager's list while it works (guarded by
 * a Lock, as in the Python original). Output looks like Python's (the timing is random):
 *
 *     Activating 0 now running ['0', '1', '2']
 *     ...
 *     Now running ['1', '4', '6']
 *     ...
 *     Now running []
 */
#include <multiproc.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct active_pool {
    mp_proxy *active; /* self.active = self.mgr.list() */
    mp_lock *lock;    /* self.lock = multiprocessing.Lock() */
} active_pool;

static void pool_str(active_pool *pool, char *out, size_t n) /* __str__ */
{
    mp_lock_acquire(pool->lock, -1);
    char *s = mp_proxy_repr(pool->active);
    snprintf(out, n, "%s", s ? s : mp_last_error());
    mp_free(s);
    mp_lock_release(pool->lock);
}

static void make_active(active_pool *pool, const char *name)
{
    mp_lock_acquire(pool->lock, -1);
    mp_proxy_callf(pool->active, "append", NULL, "[s]", name);
    mp_lock_release(pool->lock);
}

static void make_inactive(active_pool *pool, const char *name)
{
    mp_lock_acquire(pool->lock, -1);
    mp_proxy_callf(pool->active, "remove", NULL, "[s]", name);
    mp_lock_release(pool->lock);
}

static int worker(mp_value *args)
{
    mp_semaphore *s;
    active_pool pool;
    if (mp_value_unpack(args, "[h h h]", &mp_kind_semaphore, &s, &mp_kind_proxy, &pool.active,
                        &mp_kind_lock, &pool.lock) < 0)
        return 1;
    const char *name = mp_current_process_name();
    srand((unsigned)getpid());
    mp_semaphore_acquire(s, -1); /* with s: */
    make_active(&pool, name);
    char buf[256];
    pool_str(&pool, buf, sizeof buf);
    printf("Activating %s now running %s\n", name, buf);
    fflush(stdout);
    usleep((useconds_t)(rand() % 500000)); /* the Python original sleeps up to 1 s */
    make_inactive(&pool, name);
    mp_semaphore_release(s);
    return 0;
}

int main(void)
{
    mp_manager *mgr = mp_manager_new(NULL);
    active_pool pool = {mgr ? mp_manager_list(mgr, NULL) : NULL, mp_lock_new()};
    if (!pool.active) {
        fprintf(stderr, "manager: %s\n", mp_last_error());
        return 1;
    }
    mp_semaphore *s = mp_semaphore_new(3);
    mp_process *jobs[10];
    for (int i = 0; i < 10; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d", i);
        mp_value *args = mp_value_pack("[h h h]", &mp_kind_semaphore, s, &mp_kind_proxy,
                                       pool.active, &mp_kind_lock, pool.lock);
        mp_process_opts o = {.target = worker, .args = args, .name = name};
        jobs[i] = mp_process_new(&o);
        mp_value_free(args);
    }
    for (int i = 0; i < 10; i++)
        mp_process_start(jobs[i]);
    for (;;) {
        int alive = 0;
        for (int i = 0; i < 10; i++) {
            if (!mp_process_is_alive(jobs[i]))
                continue;
            alive++;
            mp_process_join(jobs[i], 0.1);
            char buf[256];
            pool_str(&pool, buf, sizeof buf);
            printf("Now running %s\n", buf);
            fflush(stdout);
        }
        if (alive == 0)
            break; /* all done */
    }
    for (int i = 0; i < 10; i++)
        mp_process_free(jobs[i]);
    mp_semaphore_free(s);
    mp_lock_free(pool.lock);
    mp_proxy_free(pool.active);
    mp_manager_free(mgr);
    return 0;
}
