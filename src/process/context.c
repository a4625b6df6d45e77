/* Process contexts and the default start method (Python's get_context,
 * set_start_method). The default is fixed on first use, under the registry lock. */
#define _GNU_SOURCE
#include "process/core.h"
#include "internal/common.h"

#include <pthread.h>
#include <string.h>

static mp_context ctx_default = {MP_START_DEFAULT, NULL};
static mp_context ctx_fork = {MP_START_FORK, "fork"};
static mp_context ctx_spawn = {MP_START_SPAWN, "spawn"};
static mp_context ctx_forkserver = {MP_START_FORKSERVER, "forkserver"};

/* ---- contexts ------------------------------------------------------------------ */

static mp_context *context_by_name(const char *name)
{
    if (!name)
        return &ctx_default;
    if (strcmp(name, "fork") == 0)
        return &ctx_fork;
    if (strcmp(name, "spawn") == 0)
        return &ctx_spawn;
    if (strcmp(name, "forkserver") == 0)
        return &ctx_forkserver;
    return NULL;
}

static const char *method_name(mp_start_method m)
{
    switch (m) {
    case MP_START_SPAWN:
        return "spawn";
    case MP_START_FORKSERVER:
        return "forkserver";
    default:
        return "fork";
    }
}

/* The default method, fixed on first use as Python's DefaultContext does. */
static mp_start_method default_method(void)
{
    pthread_mutex_lock(&mp__proc_reg_lock);
    if (mp__proc_self.default_method == MP_START_DEFAULT)
        mp__proc_self.default_method = MP_START_FORK;
    mp__proc_self.method_fixed = true;
    mp_start_method m = mp__proc_self.default_method;
    pthread_mutex_unlock(&mp__proc_reg_lock);
    return m;
}

mp_start_method mp__proc_resolve_method(const mp_context *ctx)
{
    if (!ctx || ctx->method == MP_START_DEFAULT)
        return default_method();
    return ctx->method;
}

mp_context *mp_get_context(const char *method)
{
    mp_context *c = context_by_name(method);
    if (!c)
        mp__error(MP_EINVAL, "cannot find context for '%s'", method);
    return c;
}

int mp_set_start_method(const char *method, bool force)
{
    mp_context *c = method ? context_by_name(method) : NULL;
    if (method && !c)
        return mp__error(MP_EINVAL, "cannot find context for '%s'", method);
    pthread_mutex_lock(&mp__proc_reg_lock);
    int code = 0;
    if (mp__proc_self.method_fixed && !force) {
        code = mp__error(MP_ESTATE, "context has already been set");
    } else {
        mp__proc_self.default_method = c ? c->method : MP_START_DEFAULT;
        mp__proc_self.method_fixed = c != NULL;
    }
    pthread_mutex_unlock(&mp__proc_reg_lock);
    return code;
}

const char *mp_get_start_method(void) { return method_name(default_method()); }

const char *mp_context_method(const mp_context *ctx)
{
    return method_name(mp__proc_resolve_method(ctx));
}


int mp_get_all_start_methods(const char **out, size_t max)
{
    /* The default first, as Python's get_all_start_methods. */
    static const char *const names[] = {"fork", "spawn", "forkserver"};
    pthread_mutex_lock(&mp__proc_reg_lock);
    mp_start_method d = mp__proc_self.default_method;
    pthread_mutex_unlock(&mp__proc_reg_lock);
    const char *first = method_name(d == MP_START_DEFAULT ? MP_START_FORK : d);
    size_t k = 0;
    if (out && k < max)
        out[k] = first;
    k++;
    for (size_t i = 0; i < 3; i++) {
        if (strcmp(names[i], first) == 0)
            continue;
        if (out && k < max)
            out[k] = names[i];
        k++;
    }
    return (int)k;
}
