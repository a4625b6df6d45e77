/* Process information from /proc: stat, cwd, exe, cmdline, environ. */
#define _GNU_SOURCE
#include "multiproc/info.h"
#include "internal/buf.h"
#include "internal/common.h"

#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static pid_t resolve(pid_t pid) { return pid ? pid : getpid(); }

/* Turn a failed /proc access into the error a user understands. ENOENT on
 * /proc/PID/... means the process is gone (or, for links, a zombie). */
static int proc_error(int err, pid_t pid, const char *what)
{
    if (err == ENOENT || err == ESRCH)
        return mp__error(-ESRCH, "pid %d: no such process%s%s", (int)pid,
                         what ? " (or a zombie) reading " : "", what ? what : "");
    if (err == EACCES || err == EPERM)
        return mp__error(-err, "pid %d: %s: permission denied", (int)pid, what ? what : "stat");
    return mp__error(-err, "pid %d: reading %s", (int)pid, what ? what : "stat");
}

/* Read a whole /proc file into a NUL-terminated malloc'd buffer. */
static int read_proc(pid_t pid, const char *file, char **buf, size_t *len)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    int fd = mp__fd_high(open(path, O_RDONLY | O_CLOEXEC));
    if (fd < 0)
        return proc_error(errno, pid, strcmp(file, "stat") ? file : NULL);
    mp__buf b = {0};
    int r = 0;
    while (r == 0 && (r = mp__buf_reserve(&b, 4096)) == 0) {
        ssize_t got = mp__read(fd, b.data + b.len, b.cap - 1 - b.len);
        if (got < 0)
            r = proc_error(errno, pid, file);
        else if (got == 0)
            break;
        else
            b.len += (size_t)got;
    }
    mp__close(fd);
    if (r == 0)
        *buf = mp__buf_take(&b, len);
    else
        mp__buf_free(&b);
    if (r < 0)
        return r == -ENOMEM ? mp__error(r, "pid %d: reading %s", (int)pid, file) : r;
    return 0;
}

static int read_link(pid_t pid, const char *file, char **out)
{
    char path[64], target[PATH_MAX + 1];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    ssize_t n = readlink(path, target, sizeof target - 1);
    if (n < 0)
        return proc_error(errno, pid, file);
    target[n] = '\0';
    *out = mp__strdup(target);
    return *out ? 0 : -ENOMEM;
}

/* Split NUL-separated strings into a NULL-terminated array. */
static int split_nul(const char *buf, size_t len, char ***out, size_t *count)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        if (buf[i] == '\0' || i + 1 == len)
            n++;
    char **v = mp__calloc(n + 1, sizeof *v);
    if (!v)
        return -ENOMEM;
    size_t k = 0;
    for (size_t i = 0; i < len && k < n;) {
        size_t l = strnlen(buf + i, len - i);
        v[k] = strndup(buf + i, l);
        if (!v[k]) {
            mp_proc_strv_free(v);
            return mp__error(-ENOMEM, "copying a process string");
        }
        k++;
        i += l + 1;
    }
    *out = v;
    if (count)
        *count = k;
    return 0;
}

static int read_strv(pid_t pid, const char *file, char ***out, size_t *n)
{
    char *buf;
    size_t len;
    int r = read_proc(resolve(pid), file, &buf, &len);
    if (r < 0)
        return r;
    r = split_nul(buf, len, out, n);
    free(buf);
    return r;
}

static int null_out(const char *fn) { return mp__error(MP_EINVAL, "%s: NULL output pointer", fn); }

int mp_proc_cwd(pid_t pid, char **out)
{
    return out ? read_link(resolve(pid), "cwd", out) : null_out("mp_proc_cwd");
}

int mp_proc_exe(pid_t pid, char **out)
{
    return out ? read_link(resolve(pid), "exe", out) : null_out("mp_proc_exe");
}

/* n is optional: the list is NULL-terminated. */
int mp_proc_cmdline(pid_t pid, char ***out, size_t *n)
{
    return out ? read_strv(pid, "cmdline", out, n) : null_out("mp_proc_cmdline");
}

int mp_proc_environ(pid_t pid, char ***out, size_t *n)
{
    return out ? read_strv(pid, "environ", out, n) : null_out("mp_proc_environ");
}

void mp_proc_strv_free(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

const char *mp_proc_env_get(char *const *env, const char *key)
{
    size_t kl = key ? strlen(key) : 0;
    for (; env && *env && key; env++)
        if (strncmp(*env, key, kl) == 0 && (*env)[kl] == '=')
            return *env + kl + 1;
    return NULL;
}

const char *mp_proc_state_name(char state)
{
    switch (state) {
    case 'R': return "running";
    case 'S': return "sleeping";
    case 'D': return "disk-sleep";
    case 'T': return "stopped";
    case 't': return "tracing-stop";
    case 'Z': return "zombie";
    case 'X': case 'x': return "dead";
    case 'K': return "wake-kill";
    case 'W': return "waking";
    case 'P': return "parked";
    case 'I': return "idle";
    default: return "unknown";
    }
}

bool mp_pid_exists(pid_t pid)
{
    if (pid <= 0)
        return pid == 0;
    char path[32];
    snprintf(path, sizeof path, "/proc/%d", (int)pid);
    return access(path, F_OK) == 0;
}

/* ---- /proc/PID/stat -------------------------------------------------------------- */

/* Seconds since the epoch at which the system booted (/proc/stat btime). */
static double boot_time(void)
{
    FILE *f = mp__fopen_read("/proc/stat");
    if (!f)
        return 0;
    char line[256];
    unsigned long long bt = 0;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "btime %llu", &bt) == 1)
            break;
    fclose(f);
    return (double)bt;
}

/* Fields of /proc/PID/stat after the command name, numbered as in proc(5). */
static int parse_stat(pid_t pid, char *buf, mp_proc_info *out)
{
    /* comm may hold spaces and parentheses: it ends at the LAST ')' */
    char *open = strchr(buf, '('), *close = strrchr(buf, ')');
    if (!open || !close || close < open || close[1] != ' ')
        return mp__error(MP_EPROTO, "pid %d: unexpected /proc/%d/stat format", (int)pid, (int)pid);
    out->name = strndup(open + 1, (size_t)(close - open - 1));
    if (!out->name)
        return mp__error(-ENOMEM, "pid %d: copying the name", (int)pid);
    out->state = close[2];
    unsigned long long f[53] = {0};
    char *p = close + 3;
    for (int i = 4; i < 53 && *p; i++) {
        char *end;
        f[i] = strtoull(p, &end, 10);
        if (end == p)
            break;
        p = end;
    }
    double tck = (double)sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    out->ppid = (pid_t)f[4];
    out->pgid = (pid_t)f[5];
    out->sid = (pid_t)f[6];
    out->user_time = (double)f[14] / tck;
    out->system_time = (double)f[15] / tck;
    out->children_user_time = (double)(long long)f[16] / tck;
    out->children_system_time = (double)(long long)f[17] / tck;
    out->nice = (int)(long long)f[19];
    out->num_threads = (int)f[20];
    out->start_time = boot_time() + (double)f[22] / tck;
    out->vms = f[23];
    out->rss = f[24] * (unsigned long long)page;
    out->state_name = mp_proc_state_name(out->state);
    return 0;
}

static int read_stat(pid_t pid, mp_proc_info *out)
{
    char *buf;
    size_t len;
    int r = read_proc(pid, "stat", &buf, &len);
    if (r < 0)
        return r;
    r = parse_stat(pid, buf, out);
    free(buf);
    return r;
}

int mp_proc_info_get(pid_t pid, mp_proc_info *out)
{
    if (!out)
        return mp__error(MP_EINVAL, "mp_proc_info_get: NULL out");
    memset(out, 0, sizeof *out);
    if (pid < 0)
        return mp__error(-ESRCH, "pid %d: no such process", (int)pid);
    pid = resolve(pid);
    out->pid = pid;
    int r = read_stat(pid, out);
    struct stat st;
    if (r == 0) {
        char path[32];
        snprintf(path, sizeof path, "/proc/%d", (int)pid);
        if (stat(path, &st) == 0) {
            out->uid = st.st_uid;
            out->gid = st.st_gid;
        }
        /* The process may die at any point: cmdline failing means it is gone. */
        r = read_strv(pid, "cmdline", &out->cmdline, &out->cmdline_len);
    }
    if (r < 0) {
        mp_proc_info_free(out);
        return r;
    }
    /* Fields another user's process hides: keep going, say why they are missing (in
     * the *_error fields; the call succeeds, so it leaves the last error alone). */
    bool was = mp__error_mute(true);
    out->exe_error = read_link(pid, "exe", &out->exe);
    out->cwd_error = read_link(pid, "cwd", &out->cwd);
    out->environ_error = read_strv(pid, "environ", &out->environ, &out->environ_len);
    mp__error_mute(was);
    if (out->exe_error == -ENOMEM || out->cwd_error == -ENOMEM || out->environ_error == -ENOMEM) {
        mp_proc_info_free(out);
        return mp__error(-ENOMEM, "pid %d: out of memory", (int)pid);
    }
    return 0;
}

void mp_proc_info_free(mp_proc_info *info)
{
    if (!info)
        return;
    free(info->name);
    free(info->exe);
    free(info->cwd);
    mp_proc_strv_free(info->cmdline);
    mp_proc_strv_free(info->environ);
    memset(info, 0, sizeof *info);
}
