#!/usr/bin/env bash
# The Pool on MPI with its ranks on three "hosts" (network namespaces, tests/mpi/netns.sh;
# TCP between them): rank 0 on h1 owns the pool, ranks on h2 and h3 serve it. Every call's
# results equal the local pool's, the tasks ran in the other namespaces, a task's failure
# names its rank (test_mpi_pool.c, mode "hosts"). Then a rank killed mid-map: the map
# returns MP_EWORKERDIED at once, before Open MPI ends the job.
set -euo pipefail
source "${MP_SOURCE_DIR:?run through ctest}/tests/mpi/netns.sh"
prog="${MP_TEST_BINDIR:?}/test_mpi_pool"
mpt_netns_up 3

out=$(mpt_mpiexec -n 3 "$prog" hosts 2>&1) || { echo "$out"; echo "FAIL: the pool across namespaces"; exit 1; }
echo "$out"
grep -q "^tasks run outside the master's namespace: 8 of 8$" <<<"$out" || { echo "FAIL: tasks not on the other hosts"; exit 1; }
grep -q "^ok   test_every_call_equals_local" <<<"$out" || { echo "FAIL: results differ from the local pool's"; exit 1; }
grep -q " 0 failed$" <<<"$out" || { echo "FAIL"; exit 1; }

# A rank killed on another host: under a plain mpiexec Open MPI ends the job soon after
# (its daemons see the death); the master has reported it before, and nothing hangs.
# (With --enable-recovery the pool goes on and the job ends without MPI_Finalize:
# test_netns_pool_hosts.sh checks that.)
start=$(date +%s)
out=$(MPT_TIMEOUT=60 mpt_mpiexec -n 3 "$prog" rank_killed_hosts 2>&1) || true
echo "$out"
grep -q "^map: MP_EWORKERDIED.*MPI rank" <<<"$out" || { echo "FAIL: no MP_EWORKERDIED reported"; exit 1; }
grep -q "^map returned after 0\." <<<"$out" || { echo "FAIL: the report was late"; exit 1; }
[ $(( $(date +%s) - start )) -lt 55 ] || { echo "FAIL: the job did not end (a hang)"; exit 1; }
echo "PASS"
