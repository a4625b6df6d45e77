/* Anonymous shared memory that travels between processes as an fd: a memfd mapped
 * MAP_SHARED. Used by every module that keeps state in shared memory (queues, locks,
 * shared values): the object's kind exports the fd, the receiving process maps it. */
#ifndef MP_INTERNAL_SHM_H
#define MP_INTERNAL_SHM_H

#include <stddef.h>

typedef struct mp__shm {
    int fd;      /* memfd, O_CLOEXEC */
    void *addr;  /* MAP_SHARED mapping of the whole segment */
    size_t size;
} mp__shm;

/* Create a zero-filled segment of `size` bytes; `tag` names it in /proc/PID/maps.
 * 0 or -errno (mp_last_error says which step failed). */
int mp__shm_create(mp__shm *s, size_t size, const char *tag);
/* Map a segment received as an fd (adopted: closed on failure too). The size is
 * read from the fd. 0 or -errno / MP_EPROTO if smaller than min_size. */
int mp__shm_attach(mp__shm *s, int fd, size_t min_size);
/* Unmap and close; safe on a zeroed struct. */
void mp__shm_release(mp__shm *s);

#endif
