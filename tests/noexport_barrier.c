/* A Barrier action reaches children of every start method in a program built the way
 * a plain `cc prog.c -lmultiproc` builds it: no exported symbols (CMake builds this
 * file without ENABLE_EXPORTS, unlike the other tests) and static actions. The action
 * must travel as Process targets do (object + offset), not by symbol name: looked up
 * by name, the last party in a child finds nothing and breaks the barrier.
 * Run as ctest's test_noexport_barrier. */
#include "test_util.h"

#include "internal/tracker.h"

#include <dlfcn.h>

#define ROUNDS 4
#define PARTIES 3

/* This process's handle to the shared round counter the action bumps. The action's
 * argument is a raw pointer (meaningless in a spawn child), so the counter is found
 * through a global each process sets from its own arguments. */
static mp_shared *g_counter;

static int count_round(void *arg)
{
    (void)arg;
    return mp_shared_set_int(g_counter, 0, mp_shared_get_int(g_counter, 0) + 1);
}

/* External linkage, but still not in the dynamic symbol table of this program. */
int mpt_noexport_count_round(void *arg);
int mpt_noexport_count_round(void *arg) { return count_round(arg); }

/* Wait ROUNDS times; after round k every party sees the counter at exactly k + 1 (the
 * next action needs this party's own next arrival). 0, or the failing step. */
static int rounds(mp_barrier *b)
{
    for (int k = 0; k < ROUNDS; k++) {
        int r = mp_barrier_wait(b, 20);
        if (r < 0) {
            fprintf(stderr, "pid %d round %d: %s\n", (int)getpid(), k, mp_last_error());
            return 10 + k;
        }
        if (mp_shared_get_int(g_counter, 0) != k + 1) {
            fprintf(stderr, "pid %d round %d: counter %lld\n", (int)getpid(), k,
                    (long long)mp_shared_get_int(g_counter, 0));
            return 20 + k;
        }
    }
    return 0;
}

static int party(mp_value *args)
{
    void *b = NULL, *c = NULL;
    if (mp_value_unpack(args, "[h h]", &mp_kind_barrier, &b, &mp_kind_shared, &c) < 0)
        return 2;
    g_counter = c;
    return rounds(b);
}

static void run_case(const char *method, mp_barrier_action_fn action)
{
    mp_shared *counter = mp_shared_value_new('q', NULL, NULL);
    mp_barrier_opts o = {.parties = PARTIES, .action = action};
    mp_barrier *b = mp_barrier_new(&o);
    CHECK(counter && b);
    if (!counter || !b) {
        mp_shared_free(counter);
        mp_barrier_free(b);
        return;
    }
    g_counter = counter;
    mp_value *args = mp_value_pack("[h h]", &mp_kind_barrier, b, &mp_kind_shared, counter);
    mp_process *kids[PARTIES - 1];
    for (int i = 0; i < PARTIES - 1; i++) {
        mp_process_opts po = {.target = party, .args = args, .ctx = mp_get_context(method)};
        kids[i] = mp_process_new(&po);
        CHECK_OK(mp_process_start(kids[i]));
    }
    CHECK_INT(rounds(b), 0);
    for (int i = 0; i < PARTIES - 1; i++) {
        int code = -1;
        CHECK_OK(mp_process_join(kids[i], 30));
        CHECK_OK(mp_process_exitcode(kids[i], &code));
        CHECK_INT(code, 0);
        mp_process_free(kids[i]);
    }
    CHECK_INT(mp_shared_get_int(counter, 0), ROUNDS); /* once per cycle, no more */
    CHECK(!mp_barrier_broken(b));
    mp_value_free(args);
    mp_barrier_free(b);
    mp_shared_free(counter);
}

static void test_static_action_fork(void) { run_case("fork", count_round); }
static void test_static_action_spawn(void) { run_case("spawn", count_round); }
static void test_static_action_forkserver(void) { run_case("forkserver", count_round); }
static void test_unexported_action_spawn(void) { run_case("spawn", mpt_noexport_count_round); }

int main(int argc, char **argv)
{
    /* The point of this program: it exports nothing, so lookups by name fail. */
    CHECK(dlsym(RTLD_DEFAULT, "mpt_noexport_count_round") == NULL);
    /* The forkserver and the resource tracker (started with the first spawn child)
     * hold an fd each for the program's life: start both before the leak checks. */
    CHECK_OK(mp_forkserver_ensure_running());
    CHECK_OK(mp__tracker_ensure_running());
    RUN_IF(argc, argv, test_static_action_fork);
    RUN_IF(argc, argv, test_static_action_spawn);
    RUN_IF(argc, argv, test_static_action_forkserver);
    RUN_IF(argc, argv, test_unexported_action_spawn);
    return mpt_done();
}
