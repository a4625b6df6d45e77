/* The internal growable buffer (internal/buf.h) that subprocess output, repr and /proc
 * reads share. */
#include "test_util.h"
#include "internal/buf.h"

#include <stdint.h>

static void test_append_and_take(void)
{
    mp__buf b = {0};
    CHECK_OK(mp__buf_puts(&b, "hello"));
    CHECK_OK(mp__buf_append(&b, ", ", 2));
    CHECK_OK(mp__buf_puts(&b, "world"));
    CHECK_INT(b.len, 12);
    CHECK_STR(b.data, "hello, world"); /* NUL-terminated after every append */
    size_t len = 0;
    char *s = mp__buf_take(&b, &len);
    CHECK_STR(s, "hello, world");
    CHECK_INT(len, 12);
    CHECK(b.data == NULL && b.len == 0 && b.cap == 0); /* emptied: reusable */
    free(s);
}

static void test_take_empty_is_a_string(void)
{
    mp__buf b = {0};
    size_t len = 7;
    char *s = mp__buf_take(&b, &len);
    CHECK(s != NULL);
    CHECK_STR(s, "");
    CHECK_INT(len, 0);
    free(s);
}

static void test_grows_past_many_doublings(void)
{
    mp__buf b = {0};
    char chunk[1000];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (char)('a' + i % 26);
    for (int i = 0; i < 1000; i++)
        CHECK_OK(mp__buf_append(&b, chunk, sizeof chunk));
    CHECK_INT(b.len, 1000000);
    CHECK(b.cap > b.len);
    CHECK_INT(b.data[999999], 'a' + 999 % 26);
    CHECK_INT(b.data[b.len], 0);
    CHECK_INT(memcmp(b.data + 500000, chunk, sizeof chunk), 0);
    mp__buf_free(&b);
    CHECK(b.data == NULL && b.len == 0);
}

static void test_reserve_then_fill(void)
{
    mp__buf b = {0};
    CHECK_OK(mp__buf_reserve(&b, 100));
    CHECK(b.cap - b.len > 100); /* room for 100 bytes and the NUL */
    memcpy(b.data, "abc", 3);
    b.len = 3;
    char *s = mp__buf_take(&b, NULL);
    CHECK_STR(s, "abc");
    free(s);
}

static void test_consume_front(void)
{
    mp__buf b = {0};
    CHECK_OK(mp__buf_puts(&b, "line one\nline two\n"));
    mp__buf_consume(&b, 9);
    CHECK_STR(b.data, "line two\n");
    CHECK_INT(b.len, 9);
    mp__buf_consume(&b, 0);
    CHECK_INT(b.len, 9);
    mp__buf_consume(&b, 9);
    CHECK_STR(b.data, "");
    mp__buf_free(&b);
}

static void test_impossible_size_fails_and_sticks(void)
{
    mp__buf b = {0};
    CHECK_OK(mp__buf_puts(&b, "kept"));
    mp_clear_error();
    CHECK_ERR(mp__buf_reserve(&b, SIZE_MAX - 2), -ENOMEM);
    CHECK_CONTAINS(mp_last_error(), "buffer");
    CHECK(b.failed);
    CHECK_STR(b.data, "kept"); /* what was there stays */
    /* Appends after a failure do nothing, so a printer can check once at the end. */
    CHECK_INT(mp__buf_puts(&b, "more"), -ENOMEM);
    CHECK_STR(b.data, "kept");
    mp__buf_free(&b);
    CHECK(!b.failed);
}

int main(int argc, char **argv)
{
    RUN_IF(argc, argv, test_append_and_take);
    RUN_IF(argc, argv, test_take_empty_is_a_string);
    RUN_IF(argc, argv, test_grows_past_many_doublings);
    RUN_IF(argc, argv, test_reserve_then_fill);
    RUN_IF(argc, argv, test_consume_front);
    RUN_IF(argc, argv, test_impossible_size_fails_and_sticks);
    return mpt_done();
}
