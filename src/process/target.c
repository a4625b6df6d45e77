/* Locating a target function across an exec of the same program.
 *
 * A function pointer means nothing in a fresh exec (address-space layout is
 * randomised), so the parent describes it as (object, offset from the object's load
 * address): dladdr1() gives the containing object's link map. The child finds the
 * object with the same link-map name through dl_iterate_phdr() (the main program has
 * the empty name in both, and the child is an exec of /proc/self/exe, so it is the
 * same file), checks the address falls in an executable segment and, when the
 * function has an exported symbol, that the same symbol is there. */
#define _GNU_SOURCE
#include "internal/common.h"
#include "process/proc.h"

#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int mp__target_locate(mp_target_fn fn, mp__target_loc *loc)
{
    Dl_info info;
    struct link_map *lm = NULL;
    memset(loc, 0, sizeof *loc);
    if (!fn || !dladdr1((void *)fn, &info, (void **)&lm, RTLD_DL_LINKMAP) || !lm)
        return mp__error(MP_EINVAL,
                         "target %p is not inside the program or a library it loaded; "
                         "spawn and forkserver children cannot find it",
                         (void *)fn);
    const char *name = lm->l_name ? lm->l_name : "";
    if (strlen(name) >= sizeof loc->path)
        return mp__error(MP_EINVAL, "target's library path is too long: %s", name);
    strcpy(loc->path, name);
    loc->offset = (uint64_t)((uintptr_t)fn - (uintptr_t)lm->l_addr);
    if (info.dli_sname && info.dli_saddr == (void *)fn &&
        strlen(info.dli_sname) < sizeof loc->sym)
        strcpy(loc->sym, info.dli_sname);
    return 0;
}

struct find {
    const mp__target_loc *loc;
    bool first;      /* the first entry is the main program */
    bool found;      /* the object is loaded */
    bool executable; /* the address is in one of its executable segments */
    uintptr_t addr;
};

static int find_cb(struct dl_phdr_info *info, size_t size, void *data)
{
    (void)size;
    struct find *f = data;
    bool is_main = f->first;
    f->first = false;
    const char *name = info->dlpi_name ? info->dlpi_name : "";
    bool match = f->loc->path[0] ? strcmp(name, f->loc->path) == 0 : is_main;
    if (!match)
        return 0;
    f->found = true;
    f->addr = (uintptr_t)info->dlpi_addr + (uintptr_t)f->loc->offset;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && f->loc->offset >= ph->p_vaddr &&
            f->loc->offset < ph->p_vaddr + ph->p_memsz)
            f->executable = true;
    }
    return 1;
}

int mp__target_resolve(const mp__target_loc *loc, mp_target_fn *fn)
{
    struct find f = {.loc = loc, .first = true};
    dl_iterate_phdr(find_cb, &f);
    const char *what = loc->path[0] ? loc->path : "the main program";
    const char *sym = loc->sym[0] ? loc->sym : "(unnamed)";
    if (!f.found)
        return mp__error(MP_ENOTFOUND,
                         "target %s lives in '%s', which the child has not loaded (only "
                         "libraries loaded at program start are found)",
                         sym, what);
    if (!f.executable)
        return mp__error(MP_ENOTFOUND, "target %s: offset 0x%llx is not code in '%s'", sym,
                         (unsigned long long)loc->offset, what);
    if (loc->sym[0]) {
        Dl_info info;
        if (!dladdr((void *)f.addr, &info) || !info.dli_sname ||
            strcmp(info.dli_sname, loc->sym) != 0 || info.dli_saddr != (void *)f.addr)
            return mp__error(MP_ENOTFOUND,
                             "target %s is not at the same place in '%s' in the child "
                             "(a different build?)",
                             loc->sym, what);
    }
    *fn = (mp_target_fn)(void *)f.addr;
    return 0;
}

void mp__target_describe(mp_target_fn fn, char *name, size_t nlen, char *path, size_t plen)
{
    Dl_info info;
    struct link_map *lm = NULL;
    memset(&info, 0, sizeof info);
    bool ok = fn && dladdr1((void *)fn, &info, (void **)&lm, RTLD_DL_LINKMAP);
    if (nlen) {
        if (ok && info.dli_sname && info.dli_saddr == (void *)fn)
            snprintf(name, nlen, "%s", info.dli_sname);
        else
            snprintf(name, nlen, "%p", (void *)fn);
    }
    if (plen) {
        /* The main program's link-map name is empty (dladdr says argv[0]): name the file. */
        ssize_t n = -1;
        if (!ok || !lm || !lm->l_name || !lm->l_name[0])
            n = readlink("/proc/self/exe", path, plen - 1);
        if (n >= 0)
            path[n] = '\0';
        else
            snprintf(path, plen, "%s", ok && lm && lm->l_name ? lm->l_name : "?");
    }
}
