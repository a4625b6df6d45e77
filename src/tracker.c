/* The resource tracker (see internal/tracker.h).
 *
 * DESIGN: program side - one global write fd (`tracker_fd`, close-on-exec) guarded by
 * `start_lock` while it is being created; fork children inherit it, spawn children
 * adopt it from MP_TRACKER_FD in a constructor. Tracker side - a grandchild of the
 * first registering process (double fork: it is not our child, so no zombie and no
 * SIGCHLD for the program; setsid: terminal signals and process-group kills of the
 * program do not reach it). It runs only syscalls on its own memory (it may be forked
 * from a multithreaded program), keeps the registered names in an mmap'd table, and on
 * EOF removes what is left, printing a warning per type like Python's
 * resource_tracker, then exits.
 * Protocol: lines "R\t<type>\t<sec>.<nsec>\t<name>\n" and "U\t<type>\t0.0\t<name>\n", one
 * write each.
 *
 * Register first: the library registers a name BEFORE creating the object (shm_open,
 * bind), so a SIGKILL at any instant leaves nothing behind; a failed create unregisters.
 * Registrations are counted (two registrations of one name need two unregistrations:
 * a second create of an existing name registers, fails and unregisters without dropping
 * the first). At shutdown the tracker removes only what exists and was created after its
 * registration: R carries the CLOCK_REALTIME_COARSE time taken before the create, the
 * clock the kernel stamps files with, so a file whose ctime is older existed before and
 * is someone else's (a create that failed with EEXIST and was killed before it could
 * unregister): it is left alone. A name that never came to exist is skipped silently.
 */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/tracker.h"

#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_NAME 1000

static int tracker_fd = -1;
static pthread_mutex_t start_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- the tracker process --------------------------------------------------------- */

typedef struct entry {
    char type[16];
    char name[MAX_NAME + 8];
    long long sec, nsec; /* the earliest registration still counted */
    unsigned count;
} entry;

static entry *table;
static size_t n_entries, cap_entries;

static void out(const char *s) { (void)!write(2, s, strlen(s)); }

static int find(const char *type, const char *name)
{
    for (size_t i = 0; i < n_entries; i++)
        if (strcmp(table[i].type, type) == 0 && strcmp(table[i].name, name) == 0)
            return (int)i;
    return -1;
}

static bool earlier(long long s1, long long n1, long long s2, long long n2)
{
    return s1 < s2 || (s1 == s2 && n1 < n2);
}

static void add(const char *type, const char *name, long long sec, long long nsec)
{
    int i = find(type, name);
    if (i >= 0) {
        table[i].count++;
        if (earlier(sec, nsec, table[i].sec, table[i].nsec)) {
            table[i].sec = sec;
            table[i].nsec = nsec;
        }
        return;
    }
    if (n_entries == cap_entries) {
        size_t ncap = cap_entries ? cap_entries * 2 : 64;
        void *p = table ? mremap(table, cap_entries * sizeof *table, ncap * sizeof *table,
                                 MREMAP_MAYMOVE)
                        : mmap(NULL, ncap * sizeof *table, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return;
        table = p;
        cap_entries = ncap;
    }
    strncpy(table[n_entries].type, type, sizeof table[n_entries].type - 1);
    strncpy(table[n_entries].name, name, sizeof table[n_entries].name - 1);
    table[n_entries].sec = sec;
    table[n_entries].nsec = nsec;
    table[n_entries].count = 1;
    n_entries++;
}

static void del(const char *type, const char *name)
{
    int i = find(type, name);
    if (i >= 0 && --table[i].count == 0)
        table[i] = table[--n_entries];
}

static void handle_line(char *line)
{
    char *type = strchr(line, '\t'), *when = type ? strchr(type + 1, '\t') : NULL;
    char *name = when ? strchr(when + 1, '\t') : NULL;
    if (!name || (line[0] != 'R' && line[0] != 'U'))
        return;
    *type++ = 0;
    *when++ = 0;
    *name++ = 0;
    char *dot;
    long long sec = strtoll(when, &dot, 10), nsec = *dot == '.' ? strtoll(dot + 1, NULL, 10) : 0;
    if (line[0] == 'R')
        add(type, name, sec, nsec);
    else
        del(type, name);
}

static void path_of(const entry *e, char *path, size_t n)
{
    const char *name = e->name[0] == '/' ? e->name + 1 : e->name;
    if (strcmp(e->type, MP__RT_SHM) == 0)
        snprintf(path, n, "/dev/shm/%s", name);
    else if (strcmp(e->type, MP__RT_SEM) == 0)
        snprintf(path, n, "/dev/shm/sem.%s", name);
    else
        snprintf(path, n, "%s", e->name);
}

/* Whether the entry names an object that exists and was created after its registration
 * (see the DESIGN note: register first). */
static bool ours(const entry *e)
{
    char path[MAX_NAME + 32];
    struct stat st;
    path_of(e, path, sizeof path);
    if (lstat(path, &st) < 0)
        return false;
    return !earlier(st.st_ctim.tv_sec, st.st_ctim.tv_nsec, e->sec, e->nsec);
}

static int remove_one(const entry *e)
{
    char path[MAX_NAME + 32];
    path_of(e, path, sizeof path);
    return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

static void cleanup_type(const char *type)
{
    size_t count = 0;
    for (size_t i = 0; i < n_entries; i++) {
        if (strcmp(table[i].type, type) != 0)
            continue;
        if (ours(&table[i]))
            count++;
        else
            table[i].type[0] = 0; /* never created, or someone else's: not ours to remove */
    }
    if (!count)
        return;
    char msg[256];
    snprintf(msg, sizeof msg,
             "resource_tracker: There appear to be %zu leaked %s objects to clean up at "
             "shutdown\n", count, type);
    out(msg);
    for (size_t i = 0; i < n_entries; i++) {
        if (strcmp(table[i].type, type) != 0)
            continue;
        int r = remove_one(&table[i]);
        snprintf(msg, sizeof msg, "resource_tracker: %s %s: '%.150s'%s%s\n",
                 r ? "could not remove" : "removed", type, table[i].name, r ? ": " : "",
                 r ? strerror(-r) : "");
        out(msg);
    }
}

static void cleanup_all(void)
{
    static const char *types[] = {MP__RT_SHM, MP__RT_SEM, MP__RT_FILE};
    for (size_t t = 0; t < MP__ARRAY_LEN(types); t++)
        cleanup_type(types[t]);
}

static void isolate(int rfd)
{
    sigset_t all;
    sigfillset(&all);
    sigprocmask(SIG_BLOCK, &all, NULL); /* only SIGKILL ends us early */
    if (rfd != 3) {
        dup2(rfd, 3);
        close(rfd);
    } else {
        fcntl(3, F_SETFD, 0);
    }
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, 0);
        dup2(devnull, 1);
    }
    close_range(4, ~0U, 0); /* nothing of the program's: not its pipes, not its sockets */
    if (chdir("/") < 0) {
        /* harmless: we only use absolute paths */
    }
}

static _Noreturn void tracker_main(int rfd)
{
    isolate(rfd);
    static char buf[65536];
    size_t used = 0;
    for (;;) {
        ssize_t r = read(3, buf + used, sizeof buf - 1 - used);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        used += (size_t)r;
        char *start = buf, *nl;
        while ((nl = memchr(start, '\n', used - (size_t)(start - buf))) != NULL) {
            *nl = 0;
            handle_line(start);
            start = nl + 1;
        }
        used -= (size_t)(start - buf);
        memmove(buf, start, used);
        if (used == sizeof buf - 1) /* a line longer than the buffer: drop it */
            used = 0;
    }
    cleanup_all();
    _exit(0);
}

/* ---- the program side ------------------------------------------------------------- */

static int start_locked(void)
{
    int p[2];
    if (mp__pipe(p) < 0)
        return mp__errno("resource tracker: pipe");
    pid_t pid = fork();
    if (pid < 0) {
        int code = mp__errno("resource tracker: fork");
        close(p[0]);
        close(p[1]);
        return code;
    }
    if (pid == 0) {
        /* setsid here, before the tracker is forked and before the parent's waitpid
         * returns: a kill of the program's process group right after this function
         * returns must not reach the tracker (it did while the tracker was still
         * calling setsid itself, leaking every segment). */
        close(p[1]);
        setsid();
        if (fork() == 0)
            tracker_main(p[0]);
        _exit(0);
    }
    close(p[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    tracker_fd = p[1];
    return 0;
}

int mp__tracker_ensure_running(void)
{
    pthread_mutex_lock(&start_lock);
    int r = tracker_fd >= 0 ? 0 : start_locked();
    pthread_mutex_unlock(&start_lock);
    return r;
}

int mp__tracker_fd(void) { return tracker_fd; }

const char *mp__tracker_env(void)
{
    static char env[64];
    if (tracker_fd < 0)
        return NULL;
    snprintf(env, sizeof env, "%s=%d", MP__TRACKER_ENV, tracker_fd);
    return env;
}

void mp__tracker_adopt(int fd)
{
    if (fd < 0)
        return;
    pthread_mutex_lock(&start_lock);
    if (tracker_fd < 0) {
        mp__set_cloexec(fd, true);
        tracker_fd = fd;
        fd = -1;
    }
    pthread_mutex_unlock(&start_lock);
    if (fd >= 0)
        close(fd);
}

static int send_msg(char op, const char *type, const char *name)
{
    if (!type || !name || !name[0] || strlen(name) > MAX_NAME || strchr(name, '\n') ||
        (strcmp(type, MP__RT_SHM) && strcmp(type, MP__RT_SEM) && strcmp(type, MP__RT_FILE)))
        return mp__error(MP_EINVAL, "resource tracker: bad type or name");
    int r = mp__tracker_ensure_running();
    if (r < 0)
        return r;
    /* Taken before the caller creates the object: the clock files are stamped with. */
    struct timespec now = {0, 0};
    if (op == 'R')
        clock_gettime(CLOCK_REALTIME_COARSE, &now);
    char line[MAX_NAME + 96];
    int n = snprintf(line, sizeof line, "%c\t%s\t%lld.%09ld\t%s\n", op, type,
                     (long long)now.tv_sec, now.tv_nsec, name);
    /* One write below PIPE_BUF is atomic; a signal can interrupt only before any
     * byte is written, so retrying on EINTR never duplicates. */
    if (mp__write_full(tracker_fd, line, (size_t)n) < 0)
        return mp__errno("resource tracker: write");
    return 0;
}

int mp__tracker_register(const char *type, const char *name)
{
    return send_msg('R', type, name);
}

int mp__tracker_unregister(const char *type, const char *name)
{
    return send_msg('U', type, name);
}

/* A spawned child finds the program's tracker pipe through the environment. Only a
 * FIFO is accepted, never under AT_SECURE (secure_getenv: a setuid program's
 * environment is another user's), and the variable is removed so programs exec'd
 * later (which do not get the fd) cannot mistake an unrelated fd for it. */
__attribute__((constructor(150))) static void tracker_adopt_from_env(void)
{
    const char *v = secure_getenv(MP__TRACKER_ENV);
    if (!v) {
        unsetenv(MP__TRACKER_ENV);
        return;
    }
    char *end;
    long fd = strtol(v, &end, 10);
    struct stat st;
    if (*end == 0 && fd >= 0 && fd < INT_MAX && fstat((int)fd, &st) == 0 && S_ISFIFO(st.st_mode) &&
        (fcntl((int)fd, F_GETFL) & O_ACCMODE) == O_WRONLY)
        mp__tracker_adopt((int)fd);
    unsetenv(MP__TRACKER_ENV);
}
