/* Process targets living in a shared library the test program links at start:
 * spawn and forkserver children must find them by (library, offset). */
#include "multiproc/value.h"

int mptest_lib_target(mp_value *args);

int mptest_lib_target(mp_value *args)
{
    (void)args;
    return 42;
}
