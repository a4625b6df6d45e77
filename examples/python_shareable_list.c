/* A C producer filling a ShareableList that a Python consumer reads (Python's own layout). */
/* The C side creates the list (Python's ShareableList layout, byte for byte), fills it
 * with readings and runs python_shareable_list.py (beside this source), which attaches by
 * name with multiprocessing.shared_memory.ShareableList, prints the items, and writes its
 * verdict into the last slot for the C side to read. */
#include <multiproc.h>

#include <libgen.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* lines in order with the Python child's */
    mp_sl_item items[] = {mp_sl_str("sensor-7"), mp_sl_int(3), mp_sl_float(21.5),
                          mp_sl_float(22.25), mp_sl_float(20.75), mp_sl_bool(true),
                          mp_sl_bytes("\x01\x02", 2), mp_sl_none(),
                          mp_sl_str("verdict pending...")};
    mp_sl *sl = mp_sl_create(items, 9, NULL, NULL);
    if (!sl) {
        fprintf(stderr, "create: %s\n", mp_last_error());
        return 1;
    }
    const char *name = mp_shm_name(mp_sl_shm(sl));
    printf("C producer made ShareableList '%s' with %zu items\n", name, mp_sl_len(sl));
    char here[1024], script[1100];
    snprintf(here, sizeof here, "%s", __FILE__);
    snprintf(script, sizeof script, "%s/python_shareable_list.py", dirname(here));
    const char *argv[] = {"python3", script, name, NULL};
    mp_popen *py = mp_popen_start(argv, NULL);
    int rc = -1;
    if (!py || mp_popen_wait(py, 30, &rc) < 0)
        fprintf(stderr, "python: %s\n", mp_last_error());
    mp_popen_free(py);
    mp_sl_item verdict;
    if (rc == 0 && mp_sl_get(sl, -1, &verdict) == 0 && verdict.type == MP_SL_STR)
        printf("C producer reads the verdict: '%.*s'\n", (int)verdict.len, verdict.data);
    mp_shm_unlink(mp_sl_shm(sl));
    mp_sl_close(sl);
    return rc == 0 ? 0 : 1;
}
