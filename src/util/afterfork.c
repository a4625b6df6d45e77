/* register_after_fork (Python's multiprocessing.util): callbacks a child the library
 * starts runs before its target, in registration order.
 *
 * DESIGN: an array under a mutex; the child runs a copy of it outside the lock (a fork
 * child is single-threaded, and the mutex may have been held by another thread of the
 * parent at the fork, so the child re-initialises it first). */
#define _GNU_SOURCE
#include "multiproc/util.h"
#include "internal/common.h"
#include "util/util_internal.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct hook {
    void *obj;
    mp_finalize_fn fn;
} hook;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static hook *hooks;
static size_t nhooks, cap;

int mp_register_after_fork(void *obj, mp_finalize_fn fn)
{
    if (!fn)
        return mp__error(MP_EINVAL, "register_after_fork needs a function");
    pthread_mutex_lock(&lock);
    int r = 0;
    if (nhooks == cap) {
        size_t ncap = cap ? cap * 2 : 8;
        hook *h = realloc(hooks, ncap * sizeof *h);
        if (h) {
            hooks = h;
            cap = ncap;
        } else {
            r = mp__error(-ENOMEM, "register_after_fork");
        }
    }
    if (r == 0)
        hooks[nhooks++] = (hook){obj, fn};
    pthread_mutex_unlock(&lock);
    return r;
}

void mp__util_child_start(void)
{
    mp__finalizers_forget();
    pthread_mutex_init(&lock, NULL); /* a parent's thread may have held it at the fork */
    for (size_t i = 0; i < nhooks; i++) /* a hook may register more: re-read nhooks */
        hooks[i].fn(hooks[i].obj);
}
