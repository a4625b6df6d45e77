#!/usr/bin/env bash
# The MPI pool with its ranks on three "hosts" (network namespaces on one machine, each
# with its own hostname: tests/mpi/netns.sh; the program is tests/mpi/test_mpi_pool_hosts.c).
# What tests/mpi/test_netns_pool.sh (ranks from `mpiexec -n 3`, a rank SIGKILLed) leaves:
#   1. the program started as `mpiexec -n 1` (mpi4py's MPIPoolExecutor(max_workers=2)):
#      its pools spawn 2 ranks, which take the hostfile's free slots on h2 and h3; every
#      pool call gives the local pool's results, and the tasks ran on h2 and h3 only;
#   2. h3's link cut while its rank runs a task: the master's map fails with
#      MP_EWORKERDIED ("stopped answering", naming the rank and its host) within the
#      heartbeat limit (2 s), not a hang. (Open MPI 4.1 cannot end that job by itself:
#      MPI_Finalize waits for the lost rank; the test ends it.)
set -euo pipefail
source "${MP_SOURCE_DIR:?run through ctest}/tests/mpi/netns.sh"
P="${MP_TEST_BINDIR:?}/test_mpi_pool_hosts"
export MPT_HOSTNAMES=1
mpt_netns_up 3
T=$MPT_TMP

fail() { echo "FAIL: $*"; for f in "$T"/*.out; do echo "--- $f"; cat "$f"; done; exit 1; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }
since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f", b - a }'; }

# ---- 1. spawned ranks on the other hosts ----------------------------------------------------
MPT_EXPECT_WORKER_ADDRS="10.231.1.2 10.231.1.3" \
    mpt_mpiexec -n 1 -x MPT_EXPECT_WORKER_ADDRS "$P" >"$T/spawn.out" 2>&1 || fail "spawned pool across hosts"
grep -q "^master on 10.231.1.1, tasks ran on: 10.231.1.2 10.231.1.3$" "$T/spawn.out" || fail "hosts"
grep -q "^ok   test_same_results" "$T/spawn.out" || fail "results differ from the local pool's"
echo "ok 1: spawned: $(grep '^master on' "$T/spawn.out"); results equal the local pool's"

# ---- 2. a host cut off mid-task ------------------------------------------------------------
MPT_TIMEOUT=60 mpt_mpiexec -n 3 "$P" kill 10.231.1.3 >"$T/cut.out" 2>&1 &
job=$!
mpt_wait_line "$T/cut.out" '^blocked on 10.231.1.3 pid' 20 || fail "no task ran on h3"
t0=$(date +%s.%N)
mpt_link_down h3
mpt_wait_line "$T/cut.out" '^result' 10 || fail "the map did not return after h3 was cut off"
took=$(since "$t0")
grep -q "^result MP_EWORKERDIED .*MPI rank 2.*on mpt[0-9]*-h3.*stopped answering" "$T/cut.out" ||
    fail "the map's error after a cut"
lt "$took" 5 || fail "the map returned $took s after the cut (heartbeat limit 2 s)"
mpt_kill_all
wait $job || true
echo "ok 2: h3 cut off: map failed in $took s with MP_EWORKERDIED"
echo PASS
