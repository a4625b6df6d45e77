/* The resource tracker: a SIGKILLed program tree's named segments are removed (with
 * Python's warning), deliberately kept ones are not, a clean program leaves nothing
 * to report, and the tracker process holds none of the program's fds. */
#include "test_util.h"
#include "internal/tracker.h"
#include "multiproc/shared.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>

struct tree {
    pid_t helper;
    pid_t pids[8];
    int npids;
    char shm[8][128];
    int nshm;
    char untracked[128];
    char errpath[64];
};

static bool shm_exists(const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "/dev/shm/%s", name);
    return access(path, F_OK) == 0;
}

static void handle_line(struct tree *t, char *line, int *readies)
{
    char *val = strchr(line, ' ');
    if (!val)
        return;
    *val++ = 0;
    if (strcmp(line, "pid") == 0 && t->npids < 8)
        t->pids[t->npids++] = atoi(val);
    else if (strcmp(line, "shm") == 0 && t->nshm < 8)
        snprintf(t->shm[t->nshm++], 128, "%s", val);
    else if (strcmp(line, "untracked") == 0)
        snprintf(t->untracked, 128, "%s", val);
    else if (strcmp(line, "ready") == 0)
        (*readies)--;
}

/* Read "what value" lines from the helper until `readies` ready lines (0: until
 * EOF), at most 20 s. Raw reads: no stdio buffer hiding lines from poll. */
static void read_lines(int fd, struct tree *t, int readies)
{
    char buf[4096];
    size_t used = 0;
    bool to_eof = readies == 0;
    double deadline = mpt_now() + 20;
    while ((to_eof || readies > 0) && mpt_now() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0)
            continue;
        ssize_t n = read(fd, buf + used, sizeof buf - 1 - used);
        if (n <= 0)
            break;
        used += (size_t)n;
        buf[used] = 0;
        char *start = buf, *nl;
        while ((nl = strchr(start, '\n')) != NULL) {
            *nl = 0;
            handle_line(t, start, &readies);
            start = nl + 1;
        }
        used -= (size_t)(start - buf);
        memmove(buf, start, used);
    }
    close(fd);
}

static pid_t start_helper(const char *mode, struct tree *t, int readies)
{
    memset(t, 0, sizeof *t);
    snprintf(t->errpath, sizeof t->errpath, "/tmp/mp-tracker-test-XXXXXX");
    int errfd = mkstemp(t->errpath);
    int out[2];
    if (errfd < 0 || pipe(out) < 0)
        return -1;
    char path[512];
    const char *dir = getenv("MP_TEST_BINDIR");
    snprintf(path, sizeof path, "%s/helper_sync_tree", dir ? dir : ".");
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0); /* the tree is one process group: killed as a whole below */
        dup2(out[1], 1);
        dup2(errfd, 2);
        close(out[0]);
        close(out[1]);
        close(errfd);
        execl(path, path, mode, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    close(errfd);
    t->helper = pid;
    read_lines(out[0], t, readies);
    return pid;
}

static char *slurp(const char *path)
{
    static char buf[8192];
    int fd = open(path, O_RDONLY);
    ssize_t n = fd < 0 ? 0 : read(fd, buf, sizeof buf - 1);
    if (fd >= 0)
        close(fd);
    buf[n > 0 ? n : 0] = 0;
    return buf;
}

/* Wait up to 10 s for every tracked segment to disappear; then wait for the warning
 * to be complete (the tracker writes it before unlinking). */
static bool wait_gone(struct tree *t)
{
    for (int i = 0; i < 1000; i++) {
        bool any = false;
        for (int k = 0; k < t->nshm; k++)
            any |= shm_exists(t->shm[k]);
        if (!any)
            return true;
        usleep(10000);
    }
    return false;
}

static void kill_tree_case(const char *mode)
{
    struct tree t;
    CHECK(start_helper(mode, &t, 2) > 0);
    CHECK_INT(t.npids, 2);
    CHECK_INT(t.nshm, 3);
    CHECK(t.untracked[0] != 0);
    for (int k = 0; k < t.nshm; k++)
        CHECK(shm_exists(t.shm[k]));
    for (int i = 0; i < t.npids; i++)
        kill(t.pids[i], SIGKILL);
    kill(-t.helper, SIGKILL); /* and anything whose pid line we missed */
    int st;
    waitpid(t.helper, &st, 0);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    CHECK(wait_gone(&t));
    /* the tracker (the last process writing there) is gone: its warning is complete */
    CHECK_OK(mpt_wait_file_unused(t.errpath, 10));
    const char *err = slurp(t.errpath);
    CHECK_CONTAINS(err, "resource_tracker: There appear to be 3 leaked shared_memory objects "
                        "to clean up at shutdown");
    CHECK_CONTAINS(err, t.shm[0]);
    /* the deliberately kept one is still there */
    CHECK(shm_exists(t.untracked));
    char path[256];
    snprintf(path, sizeof path, "/dev/shm/%s", t.untracked);
    unlink(path);
    unlink(t.errpath);
}

static void test_sigkilled_fork_tree_is_cleaned(void) { kill_tree_case("kill-fork"); }
static void test_sigkilled_spawn_tree_is_cleaned(void) { kill_tree_case("kill-spawn"); }

static void test_clean_exit_reports_nothing(void)
{
    struct tree t;
    CHECK(start_helper("clean", &t, 0) > 0);
    int st;
    waitpid(t.helper, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    /* everything that could write a warning there (the tracker) has exited */
    CHECK_OK(mpt_wait_file_unused(t.errpath, 10));
    CHECK_STR(slurp(t.errpath), "");
    unlink(t.errpath);
}

static void test_exit_without_unlink_is_cleaned(void)
{
    struct tree t;
    CHECK(start_helper("exit-leak", &t, 0) > 0);
    int st;
    waitpid(t.helper, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    CHECK_INT(t.nshm, 1);
    CHECK(wait_gone(&t));
    CHECK_OK(mpt_wait_file_unused(t.errpath, 10)); /* the tracker has finished writing */
    CHECK_CONTAINS(slurp(t.errpath), "There appear to be 1 leaked shared_memory objects");
    unlink(t.errpath);
}

/* Find the tracker: the process whose fd 3 is the read end of our tracker pipe. */
static pid_t find_tracker(ino_t pipe_ino)
{
    char want[64], link[256], path[64];
    snprintf(want, sizeof want, "pipe:[%lu]", (unsigned long)pipe_ino);
    DIR *d = opendir("/proc");
    struct dirent *e;
    pid_t found = 0;
    while (d && (e = readdir(d)) != NULL && !found) {
        pid_t pid = atoi(e->d_name);
        if (pid <= 0 || pid == getpid())
            continue;
        snprintf(path, sizeof path, "/proc/%d/fd/3", (int)pid);
        ssize_t n = readlink(path, link, sizeof link - 1);
        if (n > 0 && (link[n] = 0, strcmp(link, want) == 0))
            found = pid;
    }
    if (d)
        closedir(d);
    return found;
}

static void test_tracker_holds_no_program_fds(void)
{
    int fd = mp__tracker_fd();
    CHECK(fd >= 0);
    struct stat st;
    CHECK(fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode));
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC);
    pid_t tracker = 0;
    char dir[64], link[256], path[300];
    /* Right after it starts, the tracker may not have closed what it inherited yet. */
    for (int i = 0; i < 200; i++) {
        tracker = find_tracker(st.st_ino);
        snprintf(dir, sizeof dir, "/proc/%d/fd", (int)tracker);
        if (tracker && mpt_count_dir(dir, NULL) == 4)
            break;
        usleep(10000);
    }
    CHECK(tracker > 0);
    CHECK_INT(mpt_count_dir(dir, NULL), 4); /* 0, 1, 2 and the pipe */
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%d", dir, i);
        ssize_t n = readlink(path, link, sizeof link - 1);
        link[n > 0 ? n : 0] = 0;
        CHECK_STR(link, "/dev/null");
    }
    /* A session of its own (led by the intermediate child that forked it), so a kill
     * of our process group or session never reaches it. */
    CHECK(getsid(tracker) > 0 && getsid(tracker) != getsid(0));
    CHECK(getpgid(tracker) != getpgid(0));
}

/* A program that creates a segment and is killed as a whole process group at once:
 * the tracker it just started must already be out of the group, or the segment leaks. */
static void test_group_kill_right_after_start(void)
{
    for (int i = 0; i < 50; i++) { /* a race: many tries to catch it */
        char name[64];
        snprintf(name, sizeof name, "%s-tt-%d-early-%d", mpt_shm_prefix(), (int)getpid(), i);
        char path[512];
        const char *dir = getenv("MP_TEST_BINDIR");
        snprintf(path, sizeof path, "%s/helper_sync_tree", dir ? dir : ".");
        pid_t pid = fork();
        if (pid == 0) {
            setpgid(0, 0); /* exec drops our tracker pipe: the helper starts its own */
            int devnull = open("/dev/null", O_WRONLY);
            dup2(devnull, 2); /* the tracker's warnings */
            execl(path, path, "group-kill", name, (char *)NULL);
            _exit(127);
        }
        int st;
        waitpid(pid, &st, 0);
        CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
        bool gone = false;
        for (int k = 0; k < 500 && !gone; k++) {
            gone = !shm_exists(name);
            if (!gone)
                usleep(10000);
        }
        CHECK(gone);
        if (!gone) {
            snprintf(path, sizeof path, "/dev/shm/%s", name);
            unlink(path);
        }
    }
}

static void test_register_errors(void)
{
    CHECK_ERR(mp__tracker_register("nonsense", "x"), MP_EINVAL);
    CHECK_ERR(mp__tracker_register(MP__RT_SHM, "a\nb"), MP_EINVAL);
    CHECK_ERR(mp__tracker_register(MP__RT_SHM, ""), MP_EINVAL);
    CHECK_OK(mp__tracker_register(MP__RT_FILE, "/nonexistent/mp-tracker-test"));
    CHECK_OK(mp__tracker_unregister(MP__RT_FILE, "/nonexistent/mp-tracker-test"));
    const char *env = mp__tracker_env();
    CHECK(env != NULL && strncmp(env, "MP_TRACKER_FD=", 14) == 0);
}

/* A spawn or forkserver child creates a segment for its parent and exits: the
 * segment must survive the child, because the child shares the program's tracker
 * (it gets the tracker pipe at start) instead of starting one that dies with it. */
static int t_create_segment(mp_value *args)
{
    mp_shm *m = mp_shm_create(mp_value_get_str(args, NULL), 4096, NULL);
    if (!m)
        return 3;
    memcpy(mp_shm_buf(m), "from child", 11);
    mp_shm_close(m);
    return 0;
}

static void test_child_segment_outlives_child(void)
{
    static const char *methods[] = {"spawn", "forkserver", "fork"};
    for (size_t i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s-tt-%d-kept-%s", mpt_shm_prefix(), (int)getpid(), methods[i]);
        mp_value *args = mp_value_str(name);
        mp_process_opts o = {.target = t_create_segment, .args = args,
                             .ctx = mp_get_context(methods[i])};
        mp_process *p = mp_process_new(&o);
        CHECK_OK(mp_process_start(p));
        CHECK_OK(mp_process_join(p, 30));
        int code = -1;
        CHECK_OK(mp_process_exitcode(p, &code));
        CHECK_INT(code, 0);
        mp_process_free(p);
        mp_value_free(args);
        /* A negative check, so the time IS the test: a tracker of the child's own would
         * have removed the segment within this window. */
        usleep(300000);
        mp_shm *m = mp_shm_attach(name);
        CHECK(m != NULL);
        if (m) {
            CHECK_STR((const char *)mp_shm_buf(m), "from child");
            CHECK_OK(mp_shm_unlink(m));
            mp_shm_close(m);
        }
    }
}

int main(int argc, char **argv)
{
    mp__tracker_ensure_running(); /* its pipe stays open: before the leak checks */
    mp_forkserver_ensure_running();
    RUN_IF(argc, argv, test_register_errors);
    RUN_IF(argc, argv, test_child_segment_outlives_child);
    RUN_IF(argc, argv, test_group_kill_right_after_start);
    RUN_IF(argc, argv, test_tracker_holds_no_program_fds);
    RUN_IF(argc, argv, test_clean_exit_reports_nothing);
    RUN_IF(argc, argv, test_exit_without_unlink_is_cleaned);
    RUN_IF(argc, argv, test_sigkilled_fork_tree_is_cleaned);
    RUN_IF(argc, argv, test_sigkilled_spawn_tree_is_cleaned);
    return mpt_done();
}
