/* Print an array of ints the way numpy prints a small int array: "[ 0  4  8 12]", every
 * item right-aligned to the widest one. Shared by the examples that show numpy arrays. */
#ifndef MPI_NUMPY_PRINT_H
#define MPI_NUMPY_PRINT_H

#include <stdio.h>

static inline const char *numpy_str(const long *a, int n, char *buf, size_t cap)
{
    int width = 1;
    for (int i = 0; i < n; i++) {
        int w = snprintf(NULL, 0, "%ld", a[i]);
        width = w > width ? w : width;
    }
    size_t off = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < n && off < cap; i++)
        off += (size_t)snprintf(buf + off, cap - off, "%s%*ld", i ? " " : "", width, a[i]);
    if (off < cap)
        snprintf(buf + off, cap - off, "]");
    return buf;
}

#endif
