/* Shared by the fault-injection tests (tests/test_fault_*.c): kill storms, bounded in
 * time for CI. `make soak` sets MP_SOAK=N to run N times the rounds. */
#ifndef MP_TEST_FAULT_H
#define MP_TEST_FAULT_H

#include <stdlib.h>

/* `base` rounds, times $MP_SOAK (default 1). */
static inline int mpt_rounds(int base)
{
    const char *s = getenv("MP_SOAK");
    int k = s ? atoi(s) : 1;
    return base * (k > 0 ? k : 1);
}

/* A small deterministic PRNG (xorshift), so a failing round can be replayed from its seed. */
static inline unsigned mpt_rand(unsigned *state)
{
    unsigned x = *state ? *state : 0x9e3779b9u;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

#endif
