/* Naming a process by pid and start time (internal/procid.h). */
#define _GNU_SOURCE
#include "internal/procid.h"

#include "internal/common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* pid's start time and state from /proc/PID/stat: 0, or -errno (ENOENT: gone). */
static int proc_stat(int32_t pid, uint64_t *start, char *state)
{
    char path[48], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = mp__fopen_read(path);
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    char *s = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
    if (!s || s[1] != ' ')
        return -EPROTO;
    *state = s[2];
    int field = 2;
    for (; *s; s++)
        if (*s == ' ' && ++field == 22) {
            *start = strtoull(s + 1, NULL, 10);
            return 0;
        }
    return -EPROTO;
}

mp__procid mp__procid_self(void)
{
    static _Thread_local mp__procid me;
    int32_t pid = (int32_t)getpid();
    if (me.pid != pid) {
        uint64_t start = 0;
        char state;
        if (proc_stat(pid, &start, &state) < 0)
            start = 0;
        me.pid = pid;
        me.start = start;
    }
    return me;
}

bool mp__procid_dead(int32_t pid, uint64_t start)
{
    if (pid <= 0)
        return false;
    uint64_t now_start = 0;
    char state = 0;
    int r = proc_stat(pid, &now_start, &state);
    if (r == -ENOENT || r == -ESRCH)
        return true;
    if (r < 0 || start == 0) /* no /proc: the pid is all we know */
        return kill(pid, 0) < 0 && errno == ESRCH;
    return state == 'Z' || state == 'X' || now_start != start;
}
