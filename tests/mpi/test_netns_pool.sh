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
# The death is always reported on the master's stderr within a bounded time (the relay's
# guard thread, even when the relay is stuck inside MPI).
grep -q "^multiproc: MPI pool: worker rank [0-9]* (pid [0-9]* on .*) died" <<<"$out" ||
    { echo "FAIL: the master did not report the dead rank"; exit 1; }
if grep -q "^map: " <<<"$out"; then
    grep -q "^map: MP_EWORKERDIED.*MPI rank" <<<"$out" || { echo "FAIL: not MP_EWORKERDIED"; exit 1; }
    grep -q "^map returned after 0\." <<<"$out" || { echo "FAIL: the report was late"; exit 1; }
else
    # Open MPI's TCP transport, finding the dead rank's connection closed (or refused)
    # inside one of the relay's MPI calls, prints a help message and blocks that call until
    # the launcher took it; under a plain mpiexec that lasts until the job is killed, so the
    # map's other items could not finish (docs/distributed.md). Seen in about 1 run in 10.
    grep -q "unexpectedly disconnected\|failed to TCP connect" <<<"$out" ||
        { echo "FAIL: no MP_EWORKERDIED reported, and Open MPI did not stall"; exit 1; }
    echo "note: Open MPI stalled the relay inside its error path; the death was reported on stderr"
fi
[ $(( $(date +%s) - start )) -lt 55 ] || { echo "FAIL: the job did not end (a hang)"; exit 1; }
echo "PASS"
