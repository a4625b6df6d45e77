/* Bad input across the public API: NULL handles, NULL output pointers, malformed
 * formats. Every call must return a clear error code (or NULL with a message) and
 * never crash: a crash fails this test. */
#include "test_util.h"

#include <signal.h>

static void test_null_handles(void)
{
    CHECK_ERR(mp_process_start(NULL), MP_EINVAL);
    CHECK_ERR(mp_process_join(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_process_terminate(NULL), MP_EINVAL);
    CHECK_ERR(mp_process_exitcode(NULL, NULL), MP_EINVAL);
    CHECK(!mp_process_is_alive(NULL));
    CHECK_ERR(mp_queue_put_bytes(NULL, "x", 1, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_get_bytes(NULL, NULL, NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_put(NULL, NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_get(NULL, NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_lock_acquire(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_lock_release(NULL), MP_EINVAL);
    CHECK_ERR(mp_event_set(NULL), MP_EINVAL);
    CHECK_ERR(mp_event_wait(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_semaphore_acquire(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_barrier_wait(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_condition_wait(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_popen_wait(NULL, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_popen_communicate(NULL, NULL, 0, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_connection_send_bytes(NULL, "x", 0, 1), MP_EINVAL);
    CHECK_ERR(mp_connection_recv_bytes(NULL, 0, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_connection_poll(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_proc_info_get(0, NULL), MP_EINVAL);
    CHECK_ERR(mp_proc_cwd(0, NULL), MP_EINVAL);
    CHECK_ERR(mp_proc_environ(0, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_condition_acquire(NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_condition_release(NULL), MP_EINVAL);
    CHECK_ERR(mp_connection_recv(NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_listener_accept(NULL, 0, NULL), MP_EINVAL);
    /* Freeing NULL is always fine. */
    mp_process_free(NULL);
    mp_queue_free(NULL);
    mp_lock_free(NULL);
    mp_value_free(NULL);
    mp_connection_free(NULL);
}

static void test_null_outputs_and_arguments(void)
{
    CHECK_ERR(mp_run(NULL, NULL, NULL), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "MP_EINVAL");
    CHECK_ERR(mp_pipe(true, NULL, NULL), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "NULL output pointer");
    CHECK_NULL_ERR(mp_client(NULL, NULL), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "NULL address");
    CHECK(mp_process_new(NULL) == NULL);
    CHECK(mp_shm_attach(NULL) == NULL);
    CHECK(mp_shm_create(NULL, 0, NULL) == NULL);
    CHECK_ERR(mp_value_decode(NULL, 0, NULL, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_value_encode(NULL, NULL, NULL, NULL, 0, NULL), MP_EINVAL);
    CHECK_ERR(mp_value_list_append(NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_signal_set_handler(0, NULL, NULL), MP_EINVAL);
    CHECK_ERR(mp_signal_set_handler(SIGUSR1, NULL, NULL), MP_EINVAL);
}

static void test_malformed_formats(void)
{
    CHECK(mp_value_pack("[i", 1) == NULL);
    CHECK_CONTAINS(mp_last_error(), "MP_EINVAL");
    CHECK(mp_value_pack(NULL) == NULL);
    CHECK_ERR(mp_value_unpack(NULL, "i", NULL), MP_ETYPE);
}

/* The constructor rule: bad input gives NULL, with the code in mp_last_error_code() and a
 * message in mp_last_error(), for every kind of constructor. */
static void test_constructors_null_with_code(void)
{
    CHECK_NULL_ERR(mp_process_new(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_popen_start(NULL, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_popen_start_sh(NULL, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_client(NULL, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_listener_new(&(mp_listener_opts){.address = "no-port-here:"}), MP_EINVAL);
    CHECK_NULL_ERR(mp_connection_from_fd(-1, true, true), MP_EINVAL);
    CHECK_NULL_ERR(mp_barrier_new(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_shared_value_new('?', NULL, NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_shm_attach(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_value_str(NULL), MP_EINVAL);
    CHECK_NULL_ERR(mp_get_context("no-such-method"), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_connect(NULL, NULL, 0, 0), MP_EINVAL);
    CHECK_NULL_ERR(mp_manager_connect("@x", "k", 1, NAN), MP_EINVAL);
    CHECK_CONTAINS(mp_last_error(), "time_limit");
    mp_clear_error();
    CHECK(mp_popen_start(NULL, NULL) == NULL && mp_last_error()[0] != '\0');
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_null_handles);
    RUN_IF(argc, argv, test_null_outputs_and_arguments);
    RUN_IF(argc, argv, test_malformed_formats);
    RUN_IF(argc, argv, test_constructors_null_with_code);
    return mpt_done();
}
