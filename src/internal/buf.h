/* A growable byte buffer, kept NUL-terminated so text can be handed out as a C string.
 * One implementation for every module that accumulates bytes of unknown length (a
 * child's output, a repr, a /proc file). */
#ifndef MP_INTERNAL_BUF_H
#define MP_INTERNAL_BUF_H

#include <stdbool.h>
#include <stddef.h>

typedef struct mp__buf {
    char *data;  /* NULL until the first byte (or reserve) */
    size_t len;  /* bytes held, not counting the NUL */
    size_t cap;  /* bytes allocated */
    bool failed; /* an allocation failed: appends do nothing from then on */
} mp__buf;

/* Room for at least `extra` more bytes plus a NUL; the capacity doubles, so appending
 * is amortised O(1). 0, or -ENOMEM (recorded, and `failed` set). */
int mp__buf_reserve(mp__buf *b, size_t extra);

/* Append n bytes (NUL-terminated afterwards). 0 or -ENOMEM; a no-op once failed. */
int mp__buf_append(mp__buf *b, const void *p, size_t n);
int mp__buf_puts(mp__buf *b, const char *s);

/* Drop the first n bytes (n <= len), moving the rest to the front. */
void mp__buf_consume(mp__buf *b, size_t n);

/* Hand the bytes over as a NUL-terminated malloc'd string (free()), with its length in
 * *len when len is not NULL; the buffer is left empty. NULL with -ENOMEM recorded if
 * it failed or cannot hold the NUL. */
char *mp__buf_take(mp__buf *b, size_t *len);

/* Free the bytes and empty the buffer. */
void mp__buf_free(mp__buf *b);

#endif
