/* `with lock:` in C: MP_WITH_LOCK, and the same by hand with acquire/release. */
/* Ported from the lesson's example. In Python:
 *
 *     def worker_with(lock, stream):
 *         with lock:
 *             stream.write('Lock acquired via with\n')
 *
 *     def worker_no_with(lock, stream):
 *         lock.acquire()
 *         try:
 *             stream.write('Lock acquired directly\n')
 *         finally:
 *             lock.release()
 *
 *     lock = multiprocessing.Lock()
 *     w = multiprocessing.Process(target=worker_with, args=(lock, sys.stdout))
 *     nw = multiprocessing.Process(target=worker_no_with, args=(lock, sys.stdout))
 *     w.start(); nw.start(); w.join(); nw.join()
 *
 * MP_WITH_LOCK releases the lock however the block is left (its end, break, return,
 * goto), as `with` does. As in Python, the two children run at once: the lines come in
 * the order they get the lock (usually the order they were started).
 */
#include <multiproc.h>

#include <stdio.h>

static int worker_with(mp_value *args)
{
    mp_lock *lock = NULL;
    if (mp_value_unpack(args, "[h]", &mp_kind_lock, &lock) < 0)
        return 1;
    MP_WITH_LOCK(lock)
    {
        fputs("Lock acquired via with\n", stdout);
        fflush(stdout);
    }
    return 0;
}

static int worker_no_with(mp_value *args)
{
    mp_lock *lock = NULL;
    if (mp_value_unpack(args, "[h]", &mp_kind_lock, &lock) < 0)
        return 1;
    int r = mp_lock_acquire(lock, -1);
    if (r < 0 && r != MP_EOWNERDEAD) /* owner-dead: acquired all the same */
        return 1;
    fputs("Lock acquired directly\n", stdout); /* try: */
    fflush(stdout);
    mp_lock_release(lock); /* finally: */
    return 0;
}

static mp_process *start(mp_target_fn fn, mp_lock *lock)
{
    mp_value *args = mp_value_pack("[h]", &mp_kind_lock, lock);
    mp_process_opts o = {.target = fn, .args = args};
    mp_process *p = mp_process_new(&o);
    mp_value_free(args);
    if (!p || mp_process_start(p) < 0) {
        fprintf(stderr, "start: %s\n", mp_last_error());
        mp_process_free(p);
        return NULL;
    }
    return p;
}

int main(void)
{
    mp_lock *lock = mp_lock_new();
    mp_process *w = start(worker_with, lock);
    mp_process *nw = w ? start(worker_no_with, lock) : NULL;
    int status = w && nw ? 0 : 1;
    mp_process_join(w, -1);
    mp_process_join(nw, -1);
    mp_process_free(w);
    mp_process_free(nw);
    mp_lock_free(lock);
    return status;
}
