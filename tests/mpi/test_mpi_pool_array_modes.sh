#!/usr/bin/env bash
# mp_pool_map_array on MPI ranks (test_mpi_pool_array.c) when a rank dies in a range:
# - under `mpiexec --enable-recovery`: the call returns MP_EWORKERDIED naming the rank
#   within a bounded time, the pool goes on with the ranks left, the job ends with
#   status 0 and a line naming the lost rank;
# - under a plain mpiexec Open MPI ends the job, and the master has reported the failed
#   call (and the library its stderr line) before it does: not a hang.
set -uo pipefail
BIN="${MP_TEST_BINDIR:?run through ctest}/test_mpi_pool_array"
MPIEXEC=$(command -v mpiexec || true)
[ -x "$BIN" ] && [ -n "$MPIEXEC" ] || { echo "SKIP: test_mpi_pool_array or mpiexec missing"; exit 77; }
fail=0
out=$(mktemp)
trap 'rm -f "$out"' EXIT

check() { # name, status wanted ("0" or "any"), status, then patterns the output must hold
    local name=$1 want=$2 st=$3
    shift 3
    if [ "$st" = 124 ]; then
        echo "FAIL $name: timed out (a hang)"; fail=1; tail -20 "$out"; return
    fi
    if [ "$want" != any ] && [ "$st" != 0 ]; then
        echo "FAIL $name: exit status $st"; fail=1; tail -20 "$out"; return
    fi
    for p in "$@"; do
        if ! grep -q -- "$p" "$out"; then
            echo "FAIL $name: no '$p' in the output"; fail=1; tail -20 "$out"; return
        fi
    done
    echo "ok   $name"
}

LOST="^multiproc: MPI pool: rank [123] was lost"
timeout -k 5 30 "$MPIEXEC" --enable-recovery -n 4 "$BIN" rank_killed >"$out" 2>&1
check killed_recovery 0 $? "^map_array: MP_EWORKERDIED: .*MPI rank [123], pid [0-9]* on [^)]*) died (its process ended) while running el_die" \
    "ok   test_rank_killed" "0 failed" "$LOST" "^mp_mpi_finalize: 0$"

t0=$(date +%s)
timeout -k 5 120 "$MPIEXEC" -n 4 "$BIN" rank_killed >"$out" 2>&1
check killed_plain any $? "multiproc: MPI pool: worker rank" "^map_array: MP_EWORKERDIED: .*MPI rank"
[ $(( $(date +%s) - t0 )) -lt 60 ] || { echo "FAIL killed_plain: took too long"; fail=1; }

exit $fail
