/* subprocess: the child's environment from env, env_add and env_remove. */
#define _GNU_SOURCE
#include "subprocess/sub.h"
#include "internal/common.h"

#include <stdlib.h>
#include <string.h>

extern char **environ;

static bool name_matches(const char *entry, const char *name)
{
    size_t n = strcspn(name, "=");
    return strncmp(entry, name, n) == 0 && entry[n] == '=';
}

static bool env_listed(const char *entry, char *const *list)
{
    for (; list && *list; list++)
        if (name_matches(entry, *list))
            return true;
    return false;
}

/* The child's environment when the options change it: pointers to the caller's
 * strings (nothing copied), freed by the caller with free(). NULL = inherit. */
int mp__build_env(const mp_subprocess_opts *o, char ***out)
{
    *out = NULL;
    if (!o->env && !o->env_add && !o->env_remove)
        return 0;
    char *const *base = o->env ? o->env : environ;
    size_t n = 0, nadd = 0;
    while (base[n])
        n++;
    while (o->env_add && o->env_add[nadd])
        nadd++;
    char **env = malloc((n + nadd + 1) * sizeof *env);
    if (!env)
        return mp__error(-ENOMEM, "building the child's environment");
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (!env_listed(base[i], o->env_remove) && !env_listed(base[i], o->env_add))
            env[k++] = base[i];
    for (size_t i = 0; i < nadd; i++)
        if (strchr(o->env_add[i], '='))
            env[k++] = o->env_add[i];
    env[k] = NULL;
    *out = env;
    return 0;
}
