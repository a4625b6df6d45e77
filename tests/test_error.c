/* The error model: codes, names, texts and the thread-local message. */
#include "test_util.h"
#include "internal/common.h"

#include <pthread.h>

static void test_names_and_texts(void)
{
    CHECK_STR(mp_errname(0), "OK");
    CHECK_STR(mp_strerror(0), "success");
    CHECK_STR(mp_errname(MP_ETIMEOUT), "MP_ETIMEOUT");
    CHECK_STR(mp_strerror(MP_ETIMEOUT), "operation timed out");
    CHECK_STR(mp_errname(-ENOENT), "ENOENT");
    CHECK_STR(mp_strerror(-ENOENT), "No such file or directory");
    CHECK_STR(mp_errname(-99999), "EUNKNOWN");
    CHECK_STR(mp_strerror(-99999), "unknown error");
    CHECK_STR(mp_errname(MP_ETOOSHORT), "MP_ETOOSHORT");
}

static void test_last_error_message(void)
{
    mp_clear_error();
    CHECK_STR(mp_last_error(), "");
    CHECK_INT(mp_last_error_code(), 0);
    errno = EBADF;
    CHECK_INT(mp__error(-ENOENT, "exec '%s'", "nosuchprog"), -ENOENT);
    CHECK_INT(errno, EBADF); /* reporting keeps errno */
    CHECK_STR(mp_last_error(), "ENOENT: No such file or directory: exec 'nosuchprog'");
    CHECK_INT(mp_last_error_code(), -ENOENT);
    mp__error(MP_EEOF, NULL);
    CHECK_STR(mp_last_error(), "MP_EEOF: end of file: the other end is closed");
}

/* The detail of the last error, for re-reporting under one's own words without the
 * "NAME: description: " prefix twice. */
static void test_last_error_detail(void)
{
    mp__error(MP_EAUTH, "digest received was %s", "wrong");
    CHECK_STR(mp__last_error_detail(), "digest received was wrong");
    mp__error(mp_last_error_code(), "accept on 'x': %s", mp__last_error_detail());
    CHECK_STR(mp_last_error(), "MP_EAUTH: authentication failed: accept on 'x': digest "
                               "received was wrong");
    mp__error(-EPIPE, NULL); /* no detail: the description, never an empty string */
    CHECK_STR(mp__last_error_detail(), "Broken pipe");
    mp__error(MP_EEOF, NULL); /* a description with a colon in it */
    CHECK_STR(mp__last_error_detail(), "end of file: the other end is closed");
    mp__error(MP_EEOF, "reading %s", "x");
    CHECK_STR(mp__last_error_detail(), "reading x");
    mp_clear_error();
    CHECK_STR(mp__last_error_detail(), "");
}

static void *other_thread(void *arg)
{
    (void)arg;
    mp__error(MP_EAUTH, "peer %s", "x");
    return NULL;
}

static void test_message_is_per_thread(void)
{
    mp__error(MP_ETIMEOUT, "here");
    pthread_t t;
    pthread_create(&t, NULL, other_thread, NULL);
    pthread_join(t, NULL);
    CHECK_STR(mp_last_error(), "MP_ETIMEOUT: operation timed out: here");
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_names_and_texts);
    RUN_IF(argc, argv, test_last_error_message);
    RUN_IF(argc, argv, test_last_error_detail);
    RUN_IF(argc, argv, test_message_is_per_thread);
    return mpt_done();
}
