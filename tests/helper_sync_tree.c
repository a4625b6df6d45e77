/* A program tree for test_tracker: it creates named segments, starts children that
 * create more, prints what it made, then waits to be SIGKILLed (or exits).
 *   helper_sync_tree kill-fork   parent + fork child, each with tracked segments,
 *                                plus one untracked segment; then everyone pauses
 *   helper_sync_tree kill-spawn  the same with a spawn child (which learns the
 *                                tracker through the SharedMemory handle it gets)
 *   helper_sync_tree clean       create, unlink, exit 0: nothing to clean up
 *   helper_sync_tree exit-leak   create a tracked segment and exit without unlinking
 * Output lines: "pid N", "shm NAME", "untracked NAME", then "ready". */
#define _GNU_SOURCE
#include "multiproc/error.h"
#include "multiproc/process.h"
#include "multiproc/shared.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void say(const char *what, const char *name)
{
    printf("%s %s\n", what, name);
    fflush(stdout);
}

static void say_pid(void)
{
    printf("pid %d\n", (int)getpid());
    fflush(stdout);
}

static mp_shm *make_segment(const char *tag, bool tracked)
{
    char name[64];
    /* the test run's prefix (tests/test_util.h), so its leak checks see this segment */
    const char *pre = getenv("MULTIPROC_SHM_PREFIX");
    snprintf(name, sizeof name, "%s-tt-%d-%s", pre ? pre : "mp", (int)getpid(), tag);
    mp_shm_opts o = {.untracked = !tracked};
    mp_shm *m = mp_shm_create(name, 4096, &o);
    if (!m) {
        fprintf(stderr, "helper: %s\n", mp_last_error());
        return NULL;
    }
    say(tracked ? "shm" : "untracked", mp_shm_name(m));
    return m; /* deliberately never unlinked */
}

static int spawn_child(mp_value *args)
{
    (void)args; /* the SharedMemory handle in args brought the tracker pipe */
    say_pid();
    make_segment("child", true);
    say("ready", "child");
    pause();
    return 0;
}

int main(int argc, char **argv)
{
    const char *mode = argc > 1 ? argv[1] : "";
    say_pid();
    if (strcmp(mode, "clean") == 0) {
        mp_shm *m = mp_shm_create(NULL, 100, NULL);
        int r = m ? mp_shm_unlink(m) : -1;
        mp_shm_close(m);
        return r == 0 ? 0 : 1;
    }
    if (strcmp(mode, "group-kill") == 0 && argc > 2) {
        /* Create a segment (starting this program's tracker) and kill the whole
         * process group at once. */
        mp_shm *m = mp_shm_create(argv[2], 4096, NULL);
        kill(0, SIGKILL);
        return m ? 2 : 1;
    }
    if (strcmp(mode, "exit-leak") == 0) {
        mp_shm *m = make_segment("leak", true);
        mp_shm_close(m); /* closed, not unlinked: the tracker must remove it */
        return m ? 0 : 1;
    }
    if (!make_segment("a", true) || !make_segment("u", false))
        return 1;
    mp_shm *generated = mp_shm_create(NULL, 4096, NULL);
    if (!generated)
        return 1;
    say("shm", mp_shm_name(generated));
    if (strcmp(mode, "kill-fork") == 0) {
        pid_t pid = fork();
        if (pid == 0) {
            say_pid();
            make_segment("child", true);
            say("ready", "child");
            pause();
            _exit(0);
        }
    } else if (strcmp(mode, "kill-spawn") == 0) {
        mp_value *args = mp_value_pack("[h]", &mp_kind_shm, generated);
        mp_process_opts o = {.target = spawn_child, .args = args,
                             .ctx = mp_get_context("spawn")};
        mp_process *p = mp_process_new(&o);
        mp_value_free(args);
        if (!p || mp_process_start(p) < 0) {
            fprintf(stderr, "helper: %s\n", mp_last_error());
            return 1;
        }
    } else {
        fprintf(stderr, "helper: unknown mode '%s'\n", mode);
        return 2;
    }
    say("ready", "parent");
    pause();
    return 0;
}
