/* A Semaphore lets at most three of ten workers be active at a time. */
/* Semaphore example in C: ten workers, at most three active at a time.
 * An ActivePool (a struct in shared memory with its lock) records who is active; the
 * Python original keeps it in a Manager list. Output looks like Python's:
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
#include <string.h>
#include <unistd.h>

typedef struct active_pool {
    int n;
    char names[10][16];
} active_pool;

/* str(pool) under the pool's lock, like ActivePool.__str__. */
static void pool_str(mp_shared *pool, char *out, size_t size)
{
    active_pool *ap = mp_shared_ptr(pool);
    mp_shared_acquire(pool, -1);
    size_t used = (size_t)snprintf(out, size, "[");
    for (int i = 0; i < ap->n && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s'%s'", i ? ", " : "", ap->names[i]);
    if (used < size)
        snprintf(out + used, size - used, "]");
    mp_shared_release(pool);
}

static void make_active(mp_shared *pool, const char *name)
{
    active_pool *ap = mp_shared_ptr(pool);
    mp_shared_acquire(pool, -1);
    snprintf(ap->names[ap->n++], sizeof ap->names[0], "%s", name);
    mp_shared_release(pool);
}

static void make_inactive(mp_shared *pool, const char *name)
{
    active_pool *ap = mp_shared_ptr(pool);
    mp_shared_acquire(pool, -1);
    for (int i = 0; i < ap->n; i++)
        if (strcmp(ap->names[i], name) == 0) {
            memmove(ap->names[i], ap->names[i + 1], (size_t)(ap->n - i - 1) * sizeof ap->names[0]);
            ap->n--;
            break;
        }
    mp_shared_release(pool);
}

static int worker(mp_value *args)
{
    mp_semaphore *s = NULL;
    mp_shared *pool = NULL;
    if (mp_value_unpack(args, "[h h]", &mp_kind_semaphore, &s, &mp_kind_shared, &pool) < 0)
        return 1;
    const char *name = mp_current_process_name();
    srand((unsigned)getpid());
    mp_semaphore_acquire(s, -1); /* with s: */
    make_active(pool, name);
    char buf[256];
    pool_str(pool, buf, sizeof buf);
    printf("Activating %s now running %s\n", name, buf);
    fflush(stdout);
    usleep((useconds_t)(rand() % 500000)); /* the Python original sleeps up to 1 s */
    make_inactive(pool, name);
    mp_semaphore_release(s);
    return 0;
}

int main(void)
{
    mp_shared *pool = mp_shared_struct_new(sizeof(active_pool), NULL, NULL);
    mp_semaphore *s = mp_semaphore_new(3);
    mp_process *jobs[10];
    for (int i = 0; i < 10; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d", i);
        mp_value *args = mp_value_pack("[h h]", &mp_kind_semaphore, s, &mp_kind_shared, pool);
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
            pool_str(pool, buf, sizeof buf);
            printf("Now running %s\n", buf);
            fflush(stdout);
        }
        if (alive == 0)
            break; /* all done */
    }
    for (int i = 0; i < 10; i++)
        mp_process_free(jobs[i]);
    mp_semaphore_free(s);
    mp_shared_free(pool);
    return 0;
}
