#!/usr/bin/env bash
# mp_pool_map_array with its ranks on three "hosts" (network namespaces, tests/mpi/netns.sh;
# Open MPI's TCP transport between them): rank 0 on h1 owns the pool, ranks on h2 and h3
# serve it (test_mpi_pool_array.c, mode "hosts"). The ranges ran in the other namespaces,
# the element bytes crossed TCP, and the results equal the local pool's; a failing
# element names its rank.
set -euo pipefail
source "${MP_SOURCE_DIR:?run through ctest}/tests/mpi/netns.sh"
prog="${MP_TEST_BINDIR:?}/test_mpi_pool_array"
mpt_netns_up 3

out=$(mpt_mpiexec -n 3 "$prog" hosts 2>&1) || { echo "$out"; echo "FAIL: map_array across namespaces"; exit 1; }
echo "$out"
grep -q "^ranges run outside the master's namespace: 8 of 8$" <<<"$out" || { echo "FAIL: ranges not on the other hosts"; exit 1; }
grep -q "^ok   test_results_equal_local" <<<"$out" || { echo "FAIL: results differ from the local pool's"; exit 1; }
grep -q "^ok   test_element_error" <<<"$out" || { echo "FAIL: element errors"; exit 1; }
grep -q " 0 failed$" <<<"$out" || { echo "FAIL"; exit 1; }
