/* The program the spawn start method and the forkserver exec (Python's set_executable),
 * and the libraries the forkserver loads once (Python's set_forkserver_preload).
 *
 * DESIGN
 * - Both are program-wide settings read when a child or the server is started; they
 *   are set under one mutex and copied out under it (the executable into static
 *   storage that changes only on a later set: callers start processes after setting).
 * - The preload list reaches the server in its environment (MULTIPROC_FS_PRELOAD,
 *   ':'-separated), which the server reads once the bootstrap trusted it and removes,
 *   so its children do not inherit it. A library that fails to load is skipped, as
 *   Python's forkserver skips a module that fails to import. */
#define _GNU_SOURCE
#include "process/core.h"
#include "internal/common.h"
#include "multiproc/log.h"

#include <dlfcn.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_EXE "/proc/self/exe"
#define PRELOAD_ENV MP__FS_PRELOAD_ENV

static pthread_mutex_t exec_lock = PTHREAD_MUTEX_INITIALIZER;
static char executable[PATH_MAX] = DEFAULT_EXE;
static char *preload; /* "a:b", NULL: none */

int mp_set_executable(const char *path)
{
    if (path && path[0] && (path[0] != '/' || strlen(path) >= sizeof executable))
        return mp__error(MP_EINVAL, "set_executable: an absolute path under %d bytes",
                         PATH_MAX);
    pthread_mutex_lock(&exec_lock);
    snprintf(executable, sizeof executable, "%s", path && path[0] ? path : DEFAULT_EXE);
    pthread_mutex_unlock(&exec_lock);
    return 0;
}

const char *mp_get_executable(void) { return executable; }

const char *mp__proc_executable(void) { return executable; }

static char *join_names(const char *const *libs, size_t n)
{
    size_t total = 1;
    for (size_t i = 0; i < n; i++) {
        if (!libs[i] || !libs[i][0] || strchr(libs[i], ':')) {
            mp__error(MP_EINVAL, "set_forkserver_preload: name %zu is empty or has a ':'", i);
            return NULL;
        }
        total += strlen(libs[i]) + 1;
    }
    char *s = mp__calloc(1, total);
    for (size_t i = 0; s && i < n; i++) {
        if (i)
            strcat(s, ":");
        strcat(s, libs[i]);
    }
    return s;
}

int mp_set_forkserver_preload(const char *const *libs, size_t n)
{
    if (n && !libs)
        return mp__error(MP_EINVAL, "set_forkserver_preload: no list");
    char *s = n ? join_names(libs, n) : NULL;
    if (n && !s)
        return mp_last_error_code();
    pthread_mutex_lock(&exec_lock);
    free(preload);
    preload = s;
    pthread_mutex_unlock(&exec_lock);
    return 0;
}

char *mp__fs_preload_env(void)
{
    pthread_mutex_lock(&exec_lock);
    char *s = preload ? mp__strdup_printf("%s=%s", PRELOAD_ENV, preload) : NULL;
    pthread_mutex_unlock(&exec_lock);
    return s;
}

void mp__fs_preload(void)
{
    const char *v = getenv(PRELOAD_ENV);
    char *list = v ? strdup(v) : NULL;
    unsetenv(PRELOAD_ENV);
    char *save = NULL;
    for (char *name = list ? strtok_r(list, ":", &save) : NULL; name;
         name = strtok_r(NULL, ":", &save))
        if (!dlopen(name, RTLD_NOW | RTLD_GLOBAL))
            mp_log(MP_LOG_DEBUG, "forkserver: preloading %s failed: %s", name, dlerror());
    free(list);
}
