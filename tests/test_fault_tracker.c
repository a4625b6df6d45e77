/* Kill storms against the resource tracker: program trees that create and unlink
 * SharedMemory segments and Unix-socket listeners in a loop are SIGKILLed at random
 * points (a random number of operations in, so some die inside shm_open, bind, unlink);
 * once the tracker has finished (observed: it holds the tree's stderr pipe until it
 * exits), no segment and no socket file of the tree may be left, and a segment that
 * someone else created must survive the tree's failed attempts to create it. */
#include "test_util.h"
#include "fault.h"
#include "internal/tracker.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>

static char dir[64];      /* socket files of the storm */
static char prefix[64];   /* names of its segments */
static char foreign[96];  /* a segment the tree did not create */

/* One member of the tree: create/unlink in a loop until killed. */
static _Noreturn void storm_member(unsigned seed, _Atomic uint64_t *progress)
{
    char name[160];
    for (uint64_t i = 0;; i++) {
        mp_shm *m = NULL;
        switch (mpt_rand(&seed) % 5) {
        case 0: /* named, created and unlinked */
            snprintf(name, sizeof name, "%s-%d-%llu", prefix, (int)getpid(), (unsigned long long)i);
            if ((m = mp_shm_create(name, 4096, NULL)) != NULL)
                mp_shm_unlink(m);
            break;
        case 1: /* random name; every 8th is left for the tracker */
            if ((m = mp_shm_create(NULL, 4096, NULL)) != NULL && i % 8)
                mp_shm_unlink(m);
            break;
        case 2: { /* a listener's socket file */
            snprintf(name, sizeof name, "%s/s-%d-%llu.sock", dir, (int)getpid(),
                     (unsigned long long)i);
            mp_listener_opts o = {.address = name};
            mp_listener *l = mp_listener_new(&o);
            if (l && i % 8 == 0)
                break; /* kept open: the tracker must remove it if we die now */
            mp_listener_free(l);
            break;
        }
        case 3: /* exists already (someone else's): registered, fails, unregistered */
            m = mp_shm_create(foreign + 1, 4096, NULL);
            break;
        default:
            if ((m = mp_shm_create(NULL, 8192, NULL)) != NULL)
                mp_shm_unlink(m);
            break;
        }
        mp_shm_close(m);
        atomic_fetch_add(progress, 1);
    }
}

/* The tree: a root sharing one tracker with two forked members, all in one group. */
static pid_t start_tree(unsigned seed, _Atomic uint64_t *progress, int errfd)
{
    pid_t root = fork();
    if (root != 0)
        return root;
    setpgid(0, 0);
    dup2(errfd, 2);
    close(errfd);
    if (mp__tracker_ensure_running() < 0)
        _exit(3);
    for (int k = 1; k <= 2; k++)
        if (fork() == 0)
            storm_member(seed * 31 + (unsigned)k, progress);
    storm_member(seed, progress);
}

/* Read the tree's stderr until every holder is gone: the tracker is the last. */
static bool wait_tracker_done(int fd, char *log, size_t cap)
{
    size_t used = 0;
    double deadline = mpt_now() + 60;
    while (mpt_now() < deadline) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 1000) <= 0)
            continue;
        char buf[4096];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            return true;
        if (n < 0)
            return false;
        size_t take = (size_t)n < cap - 1 - used ? (size_t)n : cap - 1 - used;
        memcpy(log + used, buf, take);
        used += take;
        log[used] = 0;
    }
    return false;
}

static void storm_round(int round, _Atomic uint64_t *progress, int shm_before, int *leaks)
{
    unsigned seed = (unsigned)getpid() * 2654435761u + (unsigned)round;
    unsigned pick = seed;
    uint64_t target = 1 + mpt_rand(&pick) % 200;
    atomic_store(progress, 0);
    int err[2];
    CHECK(pipe(err) == 0);
    pid_t root = start_tree(seed, progress, err[1]);
    close(err[1]);
    double deadline = mpt_now() + 30;
    while (atomic_load(progress) < target && mpt_now() < deadline)
        sched_yield(); /* watching the tree's progress, the kill point */
    CHECK(atomic_load(progress) >= target);
    kill(-root, SIGKILL);
    int st;
    CHECK_INT(waitpid(root, &st, 0), root);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
    static char log[1 << 16];
    log[0] = 0;
    CHECK(wait_tracker_done(err[0], log, sizeof log));
    close(err[0]);
    CHECK(strstr(log, "could not remove") == NULL);
    int left = mpt_count_dir("/dev/shm", prefix) - 1 /* foreign */ + mpt_count_dir(dir, NULL) +
               mpt_count_dir("/dev/shm", "mp-") - shm_before;
    if (left)
        fprintf(stderr, "round %d (seed %u, killed after %llu ops): %d left\n%s", round, seed,
                (unsigned long long)target, left, log);
    *leaks += left;
}

static void test_kill_storm_leaves_nothing(void)
{
    snprintf(prefix, sizeof prefix, "mpt-storm-%d", (int)getpid());
    snprintf(foreign, sizeof foreign, "/%s-foreign", prefix);
    snprintf(dir, sizeof dir, "/tmp/mpt-storm-XXXXXX");
    CHECK(mkdtemp(dir) != NULL);
    int ffd = shm_open(foreign, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    CHECK(ffd >= 0);
    close(ffd);
    int shm_before = mpt_count_dir("/dev/shm", "mp-");
    _Atomic uint64_t *progress = mmap(NULL, 4096, PROT_READ | PROT_WRITE,
                                      MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(progress != MAP_FAILED);
    int rounds = 0, leaks = 0;
    double t0 = mpt_now();
    for (; mpt_more_rounds(rounds, 20, t0); rounds++)
        storm_round(rounds, progress, shm_before, &leaks);
    CHECK_INT(leaks, 0);
    CHECK_INT(mpt_count_dir("/dev/shm", "mp-"), shm_before);
    char path[160];
    snprintf(path, sizeof path, "/dev/shm%s", foreign);
    CHECK(access(path, F_OK) == 0); /* someone else's segment survived every failed create */
    shm_unlink(foreign);
    munmap(progress, 4096);
    CHECK(rmdir(dir) == 0);
    printf("     %d rounds\n", rounds);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_kill_storm_leaves_nothing);
    return mpt_done();
}
