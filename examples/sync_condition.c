/* A Condition: two processes wait until a third has finished its stage. */
/* Condition example in C: two stage_2 processes wait on a condition until
 * the s1 process has done stage 1 and calls notify_all. Python prints:
 *
 *     Starting stage_2[1]
 *     Starting stage_2[2]
 *     Starting s1
 *     s1 done and ready for stage 2
 *     stage_2[1] running
 *     stage_2[2] running
 */
#include <multiproc.h>

#include <stdio.h>
#include <unistd.h>

static mp_condition *arg_cond(mp_value *args)
{
    mp_condition *c = NULL;
    mp_value_unpack(args, "[h]", &mp_kind_condition, &c);
    return c;
}

static int stage_1(mp_value *args)
{
    mp_condition *cond = arg_cond(args);
    const char *name = mp_current_process_name();
    printf("Starting %s\n", name);
    fflush(stdout);
    mp_condition_acquire(cond, -1); /* with cond: */
    printf("%s done and ready for stage 2\n", name);
    fflush(stdout);
    mp_condition_notify_all(cond);
    mp_condition_release(cond);
    return 0;
}

static int stage_2(mp_value *args)
{
    mp_condition *cond = arg_cond(args);
    const char *name = mp_current_process_name();
    printf("Starting %s\n", name);
    fflush(stdout);
    mp_condition_acquire(cond, -1);
    mp_condition_wait(cond, -1);
    printf("%s running\n", name);
    fflush(stdout);
    mp_condition_release(cond);
    return 0;
}

static mp_process *process(const char *name, mp_target_fn target, mp_condition *c)
{
    mp_value *args = mp_value_pack("[h]", &mp_kind_condition, c);
    mp_process_opts o = {.target = target, .args = args, .name = name};
    mp_process *p = mp_process_new(&o);
    mp_value_free(args);
    return p;
}

int main(void)
{
    mp_condition *condition = mp_condition_new(NULL);
    mp_process *s1 = process("s1", stage_1, condition);
    mp_process *s2[2] = {process("stage_2[1]", stage_2, condition),
                         process("stage_2[2]", stage_2, condition)};
    for (int i = 0; i < 2; i++) {
        mp_process_start(s2[i]);
        sleep(1);
    }
    mp_process_start(s1);
    mp_process_join(s1, -1);
    for (int i = 0; i < 2; i++) {
        mp_process_join(s2[i], -1);
        mp_process_free(s2[i]);
    }
    mp_process_free(s1);
    mp_condition_free(condition);
    return 0;
}
