/* The authentication key of this process and of process objects (Python's
 * current_process().authkey and Process.authkey).
 *
 * DESIGN
 * - The main process makes 32 random bytes on first use (getrandom), as Python's
 *   os.urandom(32) at import. A process object copies this process's key when it is
 *   created; its child starts with that copy: under fork it is written into the child
 *   before the target runs, under spawn and forkserver it travels in the launch record
 *   (launch.c). So the tree shares one key unless someone sets another.
 * - Setting and reading it from several threads at once is the caller's business, as
 *   assigning current_process().authkey is in Python; the first use is guarded by a
 *   once so two threads do not make two keys. */
#define _GNU_SOURCE
#include "process/core.h"
#include "internal/common.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static void make_key(void)
{
    if (mp__proc_self.authkey_len)
        return; /* set before the first use, or inherited */
    unsigned char *k = mp__proc_self.authkey;
    if (getrandom(k, 32, 0) != 32)
        for (size_t i = 0; i < 32; i++) /* never expected; still not constant */
            k[i] = (unsigned char)(rand() ^ (int)getpid() ^ (int)(mp__now() * 1e6));
    mp__proc_self.authkey_len = 32;
}

static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;

const void *mp_current_process_authkey(size_t *len)
{
    pthread_mutex_lock(&key_lock);
    make_key();
    pthread_mutex_unlock(&key_lock);
    if (len)
        *len = mp__proc_self.authkey_len;
    return mp__proc_self.authkey;
}

static int check_key(const void *key, size_t len)
{
    if (!key || len == 0 || len > MP_AUTHKEY_MAX)
        return mp__error(MP_EINVAL, "an authkey is 1 to %d bytes", MP_AUTHKEY_MAX);
    return 0;
}

int mp_set_current_process_authkey(const void *key, size_t len)
{
    int r = check_key(key, len);
    if (r < 0)
        return r;
    pthread_mutex_lock(&key_lock);
    memmove(mp__proc_self.authkey, key, len);
    mp__proc_self.authkey_len = len;
    pthread_mutex_unlock(&key_lock);
    return 0;
}

void mp__proc_authkey_inherit(mp_process *p)
{
    size_t len;
    const void *k = mp_current_process_authkey(&len);
    memcpy(p->authkey, k, len);
    p->authkey_len = len;
}

const void *mp_process_authkey(const mp_process *p, size_t *len)
{
    if (len)
        *len = p ? p->authkey_len : 0;
    return p ? p->authkey : NULL;
}

int mp_process_set_authkey(mp_process *p, const void *key, size_t len)
{
    if (!p)
        return mp__error(MP_EINVAL, "no process");
    int r = check_key(key, len);
    if (r < 0)
        return r;
    if (p->state != ST_NEW)
        return mp__error(MP_ESTATE, "process %s has already started", p->name);
    memmove(p->authkey, key, len);
    p->authkey_len = len;
    return 0;
}
