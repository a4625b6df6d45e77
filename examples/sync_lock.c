/* A Lock shared by ten processes keeps their lines whole. */
/* Lock example in C: ten processes print through one shared lock, so the
 * lines never interleave. In Python:
 *
 *     def worker(lock, i):
 *         lock.acquire()
 *         try:
 *             print('hello world', i)
 *         finally:
 *             lock.release()
 *
 *     lock = multiprocessing.Lock()
 *     for num in range(10):
 *         multiprocessing.Process(target=worker, args=(lock, num)).start()
 */
#include <multiproc.h>

#include <stdio.h>

static int worker(mp_value *args)
{
    mp_lock *lock = NULL;
    int64_t i = 0;
    if (mp_value_unpack(args, "[h I]", &mp_kind_lock, &lock, &i) < 0)
        return 1;
    int r = mp_lock_acquire(lock, -1);
    if (r < 0 && r != MP_EOWNERDEAD) /* owner-dead: acquired all the same */
        return 1;
    printf("hello world %lld\n", (long long)i);
    fflush(stdout);
    mp_lock_release(lock);
    return 0;
}

int main(void)
{
    mp_lock *lock = mp_lock_new();
    mp_process *procs[10];
    for (int num = 0; num < 10; num++) {
        mp_value *args = mp_value_pack("[h I]", &mp_kind_lock, lock, (int64_t)num);
        mp_process_opts o = {.target = worker, .args = args};
        procs[num] = mp_process_new(&o);
        mp_value_free(args);
        if (mp_process_start(procs[num]) < 0) {
            fprintf(stderr, "start: %s\n", mp_last_error());
            return 1;
        }
    }
    for (int num = 0; num < 10; num++) {
        mp_process_join(procs[num], -1);
        mp_process_free(procs[num]);
    }
    mp_lock_free(lock);
    return 0;
}
