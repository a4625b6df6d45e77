/* The growable byte buffer (internal/buf.h). */
#include "internal/buf.h"
#include "internal/common.h"

#include <stdlib.h>
#include <string.h>

#define BUF_MIN 64

int mp__buf_reserve(mp__buf *b, size_t extra)
{
    if (b->cap > b->len && b->cap - b->len > extra)
        return 0;
    if (extra >= SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return mp__error(-ENOMEM, "a buffer of %zu + %zu bytes", b->len, extra);
    }
    size_t cap = b->cap ? b->cap * 2 : BUF_MIN;
    while (cap - b->len <= extra)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (!d) {
        b->failed = true;
        return mp__error(-ENOMEM, "growing a buffer to %zu bytes", cap);
    }
    b->data = d;
    b->cap = cap;
    return 0;
}

int mp__buf_append(mp__buf *b, const void *p, size_t n)
{
    if (b->failed)
        return -ENOMEM;
    int r = mp__buf_reserve(b, n);
    if (r < 0)
        return r;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int mp__buf_puts(mp__buf *b, const char *s) { return mp__buf_append(b, s, strlen(s)); }

void mp__buf_consume(mp__buf *b, size_t n)
{
    if (n == 0)
        return;
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
    b->data[b->len] = '\0';
}

char *mp__buf_take(mp__buf *b, size_t *len)
{
    if (mp__buf_reserve(b, 0) < 0) {
        mp__buf_free(b);
        return NULL;
    }
    char *s = b->data;
    s[b->len] = '\0';
    if (len)
        *len = b->len;
    memset(b, 0, sizeof *b);
    return s;
}

void mp__buf_free(mp__buf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}
