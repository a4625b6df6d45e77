/* Anonymous shared memory segments passed as fds (see internal/shm.h). */
#define _GNU_SOURCE
#include "internal/common.h"
#include "internal/shm.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int mp__shm_create(mp__shm *s, size_t size, const char *tag)
{
    s->fd = -1;
    s->addr = NULL;
    s->size = 0;
    int fd = mp__fd_high(memfd_create(tag ? tag : "multiproc", MFD_CLOEXEC));
    if (fd < 0)
        return mp__errno("memfd_create");
    if (ftruncate(fd, (off_t)size) < 0) {
        int code = mp__errno("ftruncate shared segment to %zu bytes", size);
        close(fd);
        return code;
    }
    void *addr = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) {
        int code = mp__errno("mmap shared segment of %zu bytes", size);
        close(fd);
        return code;
    }
    s->fd = fd;
    s->addr = addr;
    s->size = size;
    return 0;
}

int mp__shm_attach(mp__shm *s, int fd, size_t min_size)
{
    s->fd = -1;
    s->addr = NULL;
    s->size = 0;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int code = mp__errno("fstat shared segment fd %d", fd);
        close(fd);
        return code;
    }
    if ((size_t)st.st_size < min_size || st.st_size == 0) {
        close(fd);
        return mp__error(MP_EPROTO, "shared segment has %lld bytes, expected at least %zu",
                         (long long)st.st_size, min_size);
    }
    void *addr = mmap(NULL, (size_t)st.st_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (addr == MAP_FAILED) {
        int code = mp__errno("mmap shared segment");
        close(fd);
        return code;
    }
    s->fd = fd;
    s->addr = addr;
    s->size = (size_t)st.st_size;
    return 0;
}

void mp__shm_release(mp__shm *s)
{
    if (s->addr && s->size)
        munmap(s->addr, s->size);
    if (s->fd >= 0)
        close(s->fd);
    s->addr = NULL;
    s->size = 0;
    s->fd = -1;
}
