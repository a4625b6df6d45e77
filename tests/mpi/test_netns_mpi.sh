#!/usr/bin/env bash
# MPI ranks on three "hosts" (network namespaces on one machine, tests/mpi/netns.sh):
# Open MPI starts its daemons through the rsh agent, one rank per namespace; each rank
# reports its own namespace's address and a namespace of its own, a token goes round the
# ring and 1 MiB buffers cross over TCP (tests/mpi/test_mpi_hosts.c). A wrong expectation
# fails the program: the check is not vacuous.
set -euo pipefail
source "${MP_SOURCE_DIR:?run through ctest}/tests/mpi/netns.sh"
prog="${MP_TEST_BINDIR:?}/test_mpi_hosts"
mpt_netns_up 3

out=$(MPT_EXPECT_ADDRS="10.231.1.1 10.231.1.2 10.231.1.3" MPT_EXPECT_NETNS=distinct \
    mpt_mpiexec -n 3 -x MPT_EXPECT_ADDRS -x MPT_EXPECT_NETNS "$prog" 2>&1) ||
    { echo "$out"; echo "FAIL: the ranks across namespaces"; exit 1; }
echo "$out"
for i in 1 2 3; do
    grep -q "^rank $((i - 1)) on 10.231.1.$i net:" <<<"$out" || { echo "FAIL: rank $((i - 1)) not on h$i"; exit 1; }
done
grep -q "^ring: 10.231.1.1,10.231.1.2,10.231.1.3$" <<<"$out" || { echo "FAIL: the ring"; exit 1; }
[ "$(grep -c '^ok   test_big' <<<"$out")" = 3 ] || { echo "FAIL: the 1 MiB messages"; exit 1; }

# the same program with the hosts' addresses in the wrong order must fail
if MPT_EXPECT_ADDRS="10.231.1.2 10.231.1.1 10.231.1.3" \
    mpt_mpiexec -n 3 -x MPT_EXPECT_ADDRS "$prog" >/dev/null 2>&1; then
    echo "FAIL: a wrong expected address passed"; exit 1
fi
echo "PASS"
