/* Fuzz target: the pickle decoder (mp_value_unpickle, src/value/pickle_dec.c), what a
 * Python peer sends on a connection with the pickle codec.
 *
 * Input: the pickle bytes (no config byte).
 * Checks: no crash, leak or UB, no allocation beyond what the input warrants (the
 * driver's and libFuzzer's 2 GiB limit); a decoded value that pickles again (a str with
 * surrogates does not) unpickles to a value that pickles to the same bytes. */
#include "multiproc/error.h"
#include "multiproc/value.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void check_roundtrip(const mp_value *v)
{
    char *a = NULL, *b = NULL;
    size_t alen = 0, blen = 0;
    if (mp_value_pickle(v, 0, &a, &alen) < 0)
        return;
    mp_value *w = NULL;
    if (mp_value_unpickle(a, alen, &w) < 0 || mp_value_pickle(w, 0, &b, &blen) < 0 ||
        alen != blen || memcmp(a, b, alen) != 0) {
        fprintf(stderr, "re-pickling an unpickled value changed it: %s\n", mp_last_error());
        abort();
    }
    mp_value_free(w);
    mp_free(a);
    mp_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mp_value *v = NULL;
    if (mp_value_unpickle(data, size, &v) == 0) {
        char *r = mp_value_repr(v);
        mp_free(r);
        check_roundtrip(v);
    }
    mp_value_free(v);
    return 0;
}
