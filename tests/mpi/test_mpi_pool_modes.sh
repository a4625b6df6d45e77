#!/usr/bin/env bash
# The Pool on MPI beyond `mpiexec -n 4 test_mpi_pool` (test_mpi_pool.c):
# - started alone: the pool spawns its ranks (MPI_Comm_spawn), every call as the local pool;
# - a rank SIGKILLed or calling _exit mid-map: the map returns MP_EWORKERDIED naming the
#   rank within a bounded time; under `mpiexec --enable-recovery` the job and the pool go
#   on with the ranks left, and at the end the master and the other ranks leave without
#   MPI_Finalize (which would wait for the dead rank): the job ends within seconds with
#   status 0 and a line on stderr naming the lost rank (also when the rank died while no
#   pool ran: the end finds it silent); under a plain mpiexec Open MPI
#   ends the job, and the master has reported the failure before it does (not a hang);
# - a rank killed in a coalesced batch of quick tasks: that batch fails, nothing runs twice;
# - a rank that stops answering (SIGSTOP) on the master's host: declared lost after the
#   heartbeat limit, then killed by the master: the job ends at once, with or without
#   --enable-recovery;
# - in spawn mode, a rank killed: the map returns, a new pool spawns new ranks;
# - a rank that answers its HELLO at once: the pool starts (not a hang).
set -uo pipefail
BIN="${MP_TEST_BINDIR:?run through ctest}/test_mpi_pool"
MPIEXEC=$(command -v mpiexec || true)
[ -x "$BIN" ] && [ -n "$MPIEXEC" ] || { echo "SKIP: test_mpi_pool or mpiexec missing"; exit 77; }
fail=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

check() { # name, status wanted ("0" or "any"), then patterns the output must hold
    local name=$1 want=$2 st=$3
    shift 3
    if [ "$want" != any ] && [ "$st" != 0 ]; then
        echo "FAIL $name: exit status $st"; fail=1; tail -20 "$out"; return
    fi
    if [ "$st" = 124 ]; then
        echo "FAIL $name: timed out (a hang)"; fail=1; tail -20 "$out"; return
    fi
    for p in "$@"; do
        if ! grep -q -- "$p" "$out"; then
            echo "FAIL $name: no '$p' in the output"; fail=1; tail -20 "$out"; return
        fi
    done
    echo "ok   $name"
}

timeout 120 "$BIN" spawn >"$out" 2>&1
check spawn_mode 0 $? "ok   test_every_call_equals_local" "ok   test_terminate_then_new_pool" "0 failed"

# run_bounded NAME SECONDS CMD...: CMD's status (124: still running after SECONDS: a
# hang), and a failure if it took longer than SECONDS
run_bounded() {
    local name=$1 limit=$2 t0 st
    shift 2
    t0=$(date +%s.%N)
    timeout -k 5 "$limit" "$@" >"$out" 2>&1
    st=$?
    took=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    return $st
}
# Under --enable-recovery the job ends well within the bound (it used to wait in
# MPI_Finalize for the dead rank now and then), with the lost rank named on stderr.
LOST="^multiproc: MPI pool: rank [123] was lost, and MPI_Finalize would wait for it: the program and the other ranks end without it"

run_bounded killed_recovery 15 "$MPIEXEC" --enable-recovery -n 4 "$BIN" rank_killed
check killed_recovery 0 $? "map: MP_EWORKERDIED" "MPI rank" "ok   test_rank_killed" "0 failed" "$LOST" \
    "^mp_mpi_finalize: 0$"
echo "     (the job ended after $took s)"

MPT_DIE=exit run_bounded exit_recovery 15 "$MPIEXEC" --enable-recovery -n 4 "$BIN" rank_killed
check exit_recovery 0 $? "map: MP_EWORKERDIED" "ok   test_rank_killed" "0 failed" "$LOST"

# A rank killed while no pool runs: found at the end (silent for the heartbeat limit)
run_bounded killed_idle_recovery 15 "$MPIEXEC" --enable-recovery -n 4 "$BIN" rank_killed_idle
check killed_idle_recovery 0 $? "ok   test_rank_killed_idle" "0 failed" "$LOST" "^mp_mpi_finalize: 0$" \
    "^multiproc: MPI pool: rank 1 did not answer the end of the program (nothing heard for 1 s): lost (its process had ended)$"
# ... or stopped (SIGSTOP) while no pool runs: the end kills it (the master's host)
MPT_DIE=stop run_bounded stopped_idle_recovery 15 "$MPIEXEC" --enable-recovery -n 4 "$BIN" rank_killed_idle
check stopped_idle_recovery 0 $? "ok   test_rank_killed_idle" "0 failed" "$LOST" "^mp_mpi_finalize: 0$" \
    "^multiproc: MPI pool: rank 1 did not answer the end of the program (nothing heard for 1 s): lost; it is on this host: killed$"
echo "     (the job ended after $took s)"

# Plain mpiexec: Open MPI aborts the job about a second after the death; the master has
# printed the failed map's error (and the library its stderr line) by then.
t0=$(date +%s)
timeout 120 "$MPIEXEC" -n 4 "$BIN" rank_killed >"$out" 2>&1
st=$?
check killed_plain any $st "multiproc: MPI pool: worker rank" "map: MP_EWORKERDIED" "died (its process ended) while running task_die_on_10"
[ $(( $(date +%s) - t0 )) -lt 60 ] || { echo "FAIL killed_plain: took too long"; fail=1; }

# A rank killed in a coalesced batch (quick tasks): the rest of that batch fails, no
# task runs twice, every other item has its value.
run_bounded batch_killed 15 "$MPIEXEC" --enable-recovery -n 4 "$BIN" batch_killed
check batch_killed 0 $? "map: MP_EWORKERDIED" "ok   test_batch_killed" "0 failed" "$LOST"

# A rank stopped (SIGSTOP) on the master's host: declared lost after the heartbeat limit
# (1 s), then killed by the master (through its pidfd), as the line says; else the
# stopped process kept the job alive (under --enable-recovery for ever, under a plain
# mpiexec until the master's MPI_Abort, minutes later). With recovery the job then ends
# at once with status 0; without, Open MPI ends it about a second after the kill, with
# the status of a process killed by SIGKILL, and the master has reported the loss first.
KILLED="^multiproc: MPI pool: worker rank [123] (pid [0-9]* on [^)]*) stopped answering (nothing heard for 1 s); the tasks it was running fail with MP_EWORKERDIED; it is on this host: killed$"
MPT_DIE=stop run_bounded silent_recovery 15 "$MPIEXEC" --enable-recovery -n 4 "$BIN" rank_silent
check silent_recovery 0 $? "$KILLED" "silent: 29 ok, 1 failed with MP_EWORKERDIED" \
    "ok   test_rank_silent" "0 failed" "$LOST" "^mp_mpi_finalize: 0$"
echo "     (the job ended after $took s)"

MPT_DIE=stop run_bounded silent_plain 15 "$MPIEXEC" -n 4 "$BIN" rank_silent
st=$?
[ "$st" = 124 ] || [ "$st" = 137 ] || { echo "FAIL silent_plain: exit status $st, not 137"; fail=1; }
check silent_plain any $st "$KILLED" "map: MP_EWORKERDIED" "silent: 29 ok, 1 failed with MP_EWORKERDIED" \
    "exited on signal 9 (Killed)"
echo "     (the job ended after $took s)"

timeout 120 "$BIN" spawn rank_killed >"$out" 2>&1
check spawn_killed 0 $? "map: MP_EWORKERDIED" "0 failed"

# A rank that answers its HELLO before the master's MPI_Send returned (made likely here:
# the test's own MPI_Send lingers after sending): the pool starts. The relay dropped the
# answers of a link not set up yet, and mp_pool_new waited for ever (seen about once in
# 30 spawn runs under load).
run_bounded quick_answer 30 "$MPIEXEC" -n 4 "$BIN" quick_answer
check quick_answer 0 $? "ok   test_quick_answer" "0 failed"

exit $fail
