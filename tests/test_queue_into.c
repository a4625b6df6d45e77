/* mp_queue_get_bytes_into: the item lands in the caller's buffer; one that does not fit
 * is MP_ETOOSHORT with its size and stays in the queue; value items give their MessagePack
 * bytes; streamed items (larger than the ring) too; bad arguments are MP_EINVAL. */
#include "test_util.h"

#include "multiproc/queue.h"

#include <sys/wait.h>

static void test_into_fits_and_too_short(void)
{
    mp_queue *q = mp_queue_new(NULL);
    char buf[16];
    size_t len = 99;
    CHECK_ERR(mp_queue_get_bytes_into(q, buf, sizeof buf, &len, 0), MP_EEMPTY);
    CHECK_OK(mp_queue_put_bytes(q, "hello", 5, 0));
    CHECK_OK(mp_queue_put_bytes(q, "a longer item than 16", 21, 0));
    CHECK_OK(mp_queue_get_bytes_into(q, buf, sizeof buf, &len, 0));
    CHECK_INT(len, 5);
    CHECK(memcmp(buf, "hello", 5) == 0);
    CHECK_ERR(mp_queue_get_bytes_into(q, buf, sizeof buf, &len, 0), MP_ETOOSHORT);
    CHECK_INT(len, 21);
    CHECK_INT(mp_queue_qsize(q), 1); /* it stays */
    char big[32];
    CHECK_OK(mp_queue_get_bytes_into(q, big, sizeof big, &len, 0));
    CHECK_INT(len, 21);
    CHECK(memcmp(big, "a longer item than 16", 21) == 0);
    mp_value *v = mp_value_int(1234567);
    CHECK_OK(mp_queue_put(q, v, 0));
    mp_value_free(v);
    CHECK_OK(mp_queue_get_bytes_into(q, buf, sizeof buf, &len, 0));
    mp_value *back = NULL;
    CHECK_OK(mp_value_decode(buf, len, NULL, 0, &back));
    CHECK_STR(mpt_repr(back), "1234567");
    mp_value_free(back);
    CHECK_OK(mp_queue_put_bytes(q, "", 0, 0));
    CHECK_OK(mp_queue_get_bytes_into(q, NULL, 0, &len, 0));
    CHECK_INT(len, 0);
    mp_queue_free(q);
}

/* An item larger than the ring is streamed: into a buffer that fits, or MP_ETOOSHORT and
 * the stream waits for a get that can take it. */
static void test_into_streamed(void)
{
    mp_queue *q = mp_queue_new(&(mp_queue_opts){.capacity = 4096});
    enum { N = 20000 };
    pid_t pid = fork();
    if (pid == 0) {
        char *it = malloc(N);
        for (int i = 0; i < N; i++)
            it[i] = (char)(i * 7);
        _exit(mp_queue_put_bytes(q, it, N, 10) == 0 ? 0 : 1);
    }
    char small[100];
    size_t len = 0;
    CHECK_ERR(mp_queue_get_bytes_into(q, small, sizeof small, &len, 10), MP_ETOOSHORT);
    CHECK_INT(len, N);
    char *buf = malloc(N);
    CHECK_OK(mp_queue_get_bytes_into(q, buf, N, &len, 10));
    CHECK_INT(len, N);
    int bad = 0;
    for (int i = 0; i < N; i++)
        bad += buf[i] != (char)(i * 7);
    CHECK_INT(bad, 0);
    free(buf);
    int st;
    waitpid(pid, &st, 0);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    mp_queue_free(q);
}

static void test_into_bad_arguments(void)
{
    mp_queue *q = mp_queue_new(NULL);
    char buf[8];
    size_t len;
    CHECK_ERR(mp_queue_get_bytes_into(q, buf, sizeof buf, NULL, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_get_bytes_into(q, NULL, 8, &len, 0), MP_EINVAL);
    CHECK_ERR(mp_queue_get_bytes_into(NULL, buf, sizeof buf, &len, 0), MP_EINVAL);
    mp_queue_close(q);
    CHECK_ERR(mp_queue_get_bytes_into(q, buf, sizeof buf, &len, 0), MP_ECLOSED);
    mp_queue_free(q);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_into_fits_and_too_short);
    RUN_IF(argc, argv, test_into_streamed);
    RUN_IF(argc, argv, test_into_bad_arguments);
    return mpt_done();
}
