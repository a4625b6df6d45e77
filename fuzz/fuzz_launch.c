/* Fuzz target: the launch record a spawn or forkserver child receives
 * (mp__launch_unpack, src/process/launch.c): a plain value whose fields are checked.
 *
 * Input: the record's bytes (no config byte).
 * Checks: no crash, leak or UB; a record that unpacks packs again to bytes that unpack. */
#include "process/proc.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mp__launch l;
    if (mp__launch_unpack((const char *)data, size, &l) < 0)
        return 0;
    char *buf;
    size_t len;
    mp__launch again;
    if (mp__launch_pack(&l, &buf, &len) < 0 || mp__launch_unpack(buf, len, &again) < 0) {
        fprintf(stderr, "an unpacked launch record does not pack again: %s\n", mp_last_error());
        abort();
    }
    mp__launch_clear(&again);
    free(buf);
    mp__launch_clear(&l);
    return 0;
}
