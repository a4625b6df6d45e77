/* Fuzz target: the value decoder (mp_value_decode, src/value/msgpack.c), the bytes a peer
 * sends in every message.
 *
 * Input: one byte whose low 2 bits say how many fds arrive beside the message (0-3: a
 * 4 KiB memfd of zeros, a /dev/null fd, a socket), then the MessagePack bytes.
 * Checks: no crash, leak or UB; once the value is freed, every fd given to the decoder
 * is closed and no mapping an import made is left; a decoded value without handles
 * re-encodes to bytes that decode and re-encode to the same bytes. */
#define _GNU_SOURCE
#include "multiproc/value.h"

#include "internal/tracker.h"
#include "manager/mgr.h"

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

static int make_fd(int i)
{
    if (i == 1)
        return open("/dev/null", O_RDWR | O_CLOEXEC);
    if (i == 0) {
        int fd = memfd_create("fuzz-segment", MFD_CLOEXEC);
        if (fd >= 0 && ftruncate(fd, 4096) < 0)
            abort();
        return fd;
    }
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    close(sv[1]);
    return sv[0];
}

/* Mappings of our memfd (imports map segments; LeakSanitizer does not see mappings). */
static int count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        abort();
    int n = 0;
    char line[512];
    while (fgets(line, sizeof line, f))
        n += strstr(line, "/memfd:fuzz-segment") != NULL;
    fclose(f);
    return n;
}

/* Encode v (no handles), decode the bytes and encode again: the same bytes. */
static void check_roundtrip(const mp_value *v)
{
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    if (mp_value_encode(v, &a, &alen, NULL, 0, NULL) < 0)
        return; /* holds a handle: nowhere to put its fds */
    mp_value *w = NULL;
    if (mp_value_decode(a, alen, NULL, 0, &w) < 0 ||
        mp_value_encode(w, &b, &blen, NULL, 0, NULL) < 0 || alen != blen ||
        memcmp(a, b, alen) != 0) {
        fprintf(stderr, "re-encoding a decoded value changed it: %s\n", mp_last_error());
        abort();
    }
    mp_value_free(w);
    mp_free(a);
    mp_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    mp__mgr_in_server = true; /* a proxy handle is then a reference: no connect */
    int fds[3];
    size_t nfds = data[0] & 3u;
    int maps_before = nfds ? count_maps() : 0;
    for (size_t i = 0; i < nfds; i++)
        if ((fds[i] = make_fd((int)i)) < 0)
            abort();
    mp_value *v = NULL;
    if (mp_value_decode(data + 1, size - 1, fds, nfds, &v) == 0) {
        char *r = mp_value_repr(v);
        mp_free(r);
        mp_value *c = mp_value_copy(v);
        mp_value_free(c);
        check_roundtrip(v);
    }
    mp_value_free(v);
    for (size_t i = 0; i < nfds; i++) {
        if (fds[i] != mp__tracker_fd() && fcntl(fds[i], F_GETFD) >= 0) {
            fprintf(stderr, "fd %d given to the decoder is still open\n", fds[i]);
            abort();
        }
    }
    if (nfds && count_maps() != maps_before) {
        fprintf(stderr, "segments left mapped: %d before, %d after\n", maps_before, count_maps());
        abort();
    }
    return 0;
}
