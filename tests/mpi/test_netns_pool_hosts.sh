#!/usr/bin/env bash
# The MPI pool with its ranks on three "hosts" (network namespaces on one machine, each
# with its own hostname: tests/mpi/netns.sh; the program is tests/mpi/test_mpi_pool_hosts.c).
# What tests/mpi/test_netns_pool.sh (ranks from `mpiexec -n 3`, a rank SIGKILLed) leaves:
#   1. the program started as `mpiexec -n 1` (mpi4py's MPIPoolExecutor(max_workers=2)):
#      its pools spawn 2 ranks, which take the hostfile's free slots on h2 and h3; every
#      pool call gives the local pool's results, and the tasks ran on h2 and h3 only;
#   2. h3's link cut while its rank runs a task: the master's map fails with
#      MP_EWORKERDIED ("stopped answering", naming the rank and its host) within the
#      heartbeat limit (2 s), not a hang; then the master's end (main returns) does not
#      enter MPI_Finalize (it would wait for the lost rank forever): it flushes stdout,
#      names the lost rank on stderr, and mpiexec ends the job by itself once its
#      out-of-band keepalive (set short here: 1 + 2 x 1 s) finds h3's daemon gone: a
#      failure status, nothing left on h2;
#   3. h3's rank stopped (SIGSTOP: h3 still reachable, Open MPI sees nothing wrong; another
#      host by its name, so the master does not kill it as it kills a stopped rank on its
#      own, test_mpi_pool_modes.sh): the master waits the keepalive bound + 5 s, then ends
#      the job with MPI_Abort (status 1);
#   4. h3's rank killed under `mpiexec --enable-recovery`: the survivors and the master
#      end without MPI_Finalize (which waits for the dead rank across hosts) and mpiexec
#      ends at once with status 0.
# Each job's end is awaited with a bound; the old library hung in MPI_Finalize in 3 and 4.
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

# ---- 2-4. a rank lost mid-task, and the job's end ---------------------------------------
KA=(--mca oob_tcp_keepalive_time 1 --mca oob_tcp_keepalive_intvl 1 --mca oob_tcp_keepalive_probes 2)

# wait_job PID SECONDS: st = the job's exit status, or 124 if it still runs after SECONDS
wait_job() {
    local n=$(($2 * 100))
    st=0
    while kill -0 "$1" 2>/dev/null; do
        ((n-- > 0)) || { st=124; return; }
        sleep 0.01
    done
    wait "$1" || st=$?
}

# nothing of the job left on h2 (a surviving host): no process, no session directory
h2_clean() {
    [ -z "$(mpt_pids h2)" ] || fail "$1: processes left on h2: $(mpt_pids h2)"
    [ -z "$(ls -A "$T/tmp-$(mpt_ns h2)" 2>/dev/null)" ] || fail "$1: Open MPI's session dir left on h2"
}

# lose NAME FAULT [mpiexec args]: a map whose task blocks on h3, then FAULT (cut: h3's
# link down; stop: SIGSTOP h3's rank; kill: SIGKILL it); sets out and err (the job's
# stdout and stderr), took (the map's time), st (the job's status), ended (its time)
lose() {
    local name=$1 fault=$2
    shift 2
    out="$T/$name.out" err="$T/$name.err.out"
    MPT_TIMEOUT=60 mpt_mpiexec "${KA[@]}" "$@" -n 3 "$P" kill 10.231.1.3 >"$out" 2>"$err" &
    local job=$!
    mpt_wait_line "$out" '^blocked on 10.231.1.3 pid' 20 || fail "$name: no task ran on h3"
    local pid
    pid=$(sed -n 's/^blocked on 10.231.1.3 pid //p' "$out")
    local t0
    t0=$(date +%s.%N)
    case $fault in
        cut) mpt_link_down h3 ;;
        stop) kill -STOP "$pid" ;;
        kill) kill -KILL "$pid" ;;
    esac
    mpt_wait_line "$out" '^result' 10 || fail "$name: the map did not return after h3's rank was lost"
    took=$(since "$t0")
    wait_job "$job" 25
    ended=$(since "$t0")
    [ "$st" != 124 ] || fail "$name: the job still ran $ended s after the loss (a hang)"
    grep -q "^result MP_EWORKERDIED .*MPI rank 2.*on mpt[0-9]*-h3" "$out" || fail "$name: the map's error"
    lt "$took" 5 || fail "$name: the map returned $took s after the loss (heartbeat limit 2 s)"
    grep -q "master done" "$out" || fail "$name: the master's last output was lost"
}

lose cut cut
grep -q "^result .*stopped answering" "$out" || fail "cut: the map's error"
grep -q "^multiproc: MPI pool: rank 2 was lost, and MPI_Finalize would wait for it forever: waiting for Open MPI to end the job" "$err" ||
    fail "cut: no line on stderr naming the lost rank"
[ "$st" != 0 ] || fail "cut: exit status 0 for a job that lost a host"
lt "$ended" 15 || fail "cut: the job ended $ended s after the cut"
h2_clean cut
echo "ok 2: h3 cut off: map failed in $took s with MP_EWORKERDIED; the job ended by itself $ended s after the cut, status $st"
# the cut host's own daemon and rank cannot hear anything: end them, plug h3 back
mpt_link_up h3
pids=$(mpt_pids h3)
[ -z "$pids" ] || kill -9 $pids

lose stop stop
grep -q "^multiproc: MPI pool: the job still runs 8 s later: ending it with MPI_Abort" "$err" ||
    fail "stop: no MPI_Abort after the limit (keepalive 1 + 2 x 1 s, + 5 s)"
[ "$st" = 1 ] || fail "stop: exit status $st, not MPI_Abort's 1"
lt "$ended" 20 || fail "stop: the job ended $ended s after the loss"
h2_clean stop
echo "ok 3: h3's rank stopped: map failed in $took s; MPI_Abort after the limit, the job ended $ended s after, status 1"

lose recovery kill --enable-recovery
grep -q "^multiproc: MPI pool: rank 2 was lost, and MPI_Finalize would wait for it: the program and the other ranks end without it" "$err" ||
    fail "recovery: no line on stderr naming the lost rank"
[ "$st" = 0 ] || fail "recovery: exit status $st"
lt "$ended" 10 || fail "recovery: the job ended $ended s after the death"
h2_clean recovery
echo "ok 4: h3's rank killed under --enable-recovery: map failed in $took s; the job ended $ended s after, status 0"
echo PASS
