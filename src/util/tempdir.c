/* get_temp_dir and is_exiting (Python's multiprocessing.util).
 *
 * DESIGN: the directory is made once under a mutex and removed at exit by a finalizer
 * of priority -100 (as Python's), which a child forgets: only the process that made it
 * removes it. A fork child inherits the path (and shares the directory, as Python's
 * children share current_process()._config['tempdir']). */
#define _GNU_SOURCE
#include "multiproc/util.h"
#include "internal/common.h"
#include "process/core.h"

#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static char dir[PATH_MAX];

static int remove_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_dir(void *arg)
{
    char *path = arg;
    nftw(path, remove_one, 16, FTW_DEPTH | FTW_PHYS);
    pthread_mutex_lock(&lock);
    if (strcmp(dir, path) == 0)
        dir[0] = '\0';
    pthread_mutex_unlock(&lock);
    free(path);
}

const char *mp_get_temp_dir(void)
{
    pthread_mutex_lock(&lock);
    const char *out = dir;
    if (!dir[0]) {
        const char *base = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/mp-XXXXXX", base && base[0] ? base : "/tmp");
        char *copy = NULL;
        if (!mkdtemp(dir)) {
            mp__errno("get_temp_dir: mkdtemp under %s", base && base[0] ? base : "/tmp");
            dir[0] = '\0';
            out = NULL;
        } else if (!(copy = strdup(dir)) || !mp_finalize(NULL, remove_dir, copy, -100)) {
            rmdir(dir);
            free(copy);
            mp__error(-ENOMEM, "get_temp_dir");
            dir[0] = '\0';
            out = NULL;
        }
    }
    pthread_mutex_unlock(&lock);
    return out;
}

bool mp_is_exiting(void) { return mp__proc_self.exiting; }
