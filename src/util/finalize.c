/* Finalizers (Python's multiprocessing.util.Finalize and _run_finalizers).
 *
 * DESIGN
 * - A list of entries under one mutex, each with a never-reused id, so a caller's id
 *   for a finalizer that has run is just inactive (no dangling handle).
 * - Running: an entry is unlinked under the lock and its callback called after the lock
 *   is dropped, so callbacks may register or cancel finalizers; one entry at a time is
 *   picked (the highest priority, newest among equals), so ones registered by a
 *   callback are seen too, as Python's loop re-reads the registry.
 * - A child forgets its parent's entries (mp__util_child_start), as Python's _bootstrap
 *   clears the registry: the parent's finalizers are the parent's to run. */
#define _GNU_SOURCE
#include "multiproc/util.h"
#include "internal/common.h"
#include "util/util_internal.h"

#include <pthread.h>
#include <stdlib.h>

typedef struct entry {
    struct entry *next;
    mp_finalizer id;
    const void *obj;
    mp_finalize_fn fn;
    void *arg;
    int priority;
} entry;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static entry *head; /* newest first */
static mp_finalizer next_id = 1;

mp_finalizer mp_finalize(void *obj, mp_finalize_fn fn, void *arg, int exitpriority)
{
    if (!fn || (!obj && exitpriority == MP_FINALIZE_NO_EXIT)) {
        mp__error(MP_EINVAL, fn ? "Without object, exitpriority cannot be None"
                                : "a finalizer needs a function");
        return 0;
    }
    entry *e = mp__calloc(1, sizeof *e);
    if (!e)
        return 0;
    e->obj = obj;
    e->fn = fn;
    e->arg = arg;
    e->priority = exitpriority;
    pthread_mutex_lock(&lock);
    e->id = next_id++;
    e->next = head;
    head = e;
    pthread_mutex_unlock(&lock);
    return e->id;
}

/* Unlink and return the first entry matching; the lock is held. */
static entry *take(bool (*match)(const entry *, const void *), const void *key)
{
    for (entry **pp = &head; *pp; pp = &(*pp)->next) {
        if (match(*pp, key)) {
            entry *e = *pp;
            *pp = e->next;
            return e;
        }
    }
    return NULL;
}

static bool by_id(const entry *e, const void *key) { return e->id == *(const mp_finalizer *)key; }
static bool by_obj(const entry *e, const void *key) { return e->obj && e->obj == key; }

static entry *take_locked(bool (*match)(const entry *, const void *), const void *key)
{
    pthread_mutex_lock(&lock);
    entry *e = take(match, key);
    pthread_mutex_unlock(&lock);
    return e;
}

static void run_entry(entry *e)
{
    e->fn(e->arg);
    free(e);
}

int mp_finalizer_run(mp_finalizer f)
{
    entry *e = f ? take_locked(by_id, &f) : NULL;
    if (!e)
        return 0;
    run_entry(e);
    return 1;
}

void mp_finalizer_cancel(mp_finalizer f)
{
    free(f ? take_locked(by_id, &f) : NULL);
}

bool mp_finalizer_active(mp_finalizer f)
{
    pthread_mutex_lock(&lock);
    bool found = false;
    for (entry *e = head; e && !found; e = e->next)
        found = e->id == f;
    pthread_mutex_unlock(&lock);
    return f && found;
}

int mp_finalize_object(const void *obj)
{
    int n = 0;
    for (entry *e; obj && (e = take_locked(by_obj, obj)) != NULL; n++)
        run_entry(e); /* the list is newest first */
    return n;
}

/* The entry to run next: the highest priority >= min, the newest among equals. */
static entry *take_next(int minpriority)
{
    pthread_mutex_lock(&lock);
    entry *best = NULL;
    for (entry *e = head; e; e = e->next)
        if (e->priority != MP_FINALIZE_NO_EXIT && e->priority >= minpriority &&
            (!best || e->priority > best->priority))
            best = e; /* strictly greater: the first (newest) of equals stays */
    mp_finalizer id = best ? best->id : 0;
    entry *e = best ? take(by_id, &id) : NULL;
    pthread_mutex_unlock(&lock);
    return e;
}

int mp_run_finalizers(int minpriority)
{
    if (minpriority < MP_FINALIZE_ALL)
        minpriority = MP_FINALIZE_ALL;
    int n = 0;
    for (entry *e; (e = take_next(minpriority)) != NULL; n++)
        run_entry(e);
    return n;
}

void mp__finalizers_forget(void)
{
    pthread_mutex_lock(&lock);
    entry *e = head;
    head = NULL;
    pthread_mutex_unlock(&lock);
    while (e) {
        entry *next = e->next;
        free(e);
        e = next;
    }
}
