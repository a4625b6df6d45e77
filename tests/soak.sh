#!/bin/bash
# `make soak`: the fault-injection storms and the leak cycles, each test function running
# for an equal share of a total time (MP_SOAK_SECONDS, read by tests/fault.h), then a
# check that nothing was left behind: no /dev/shm entry of the runs, no process of theirs.
# Not part of `make test` (where the same tests run briefly).
# Usage: tests/soak.sh BUILD_DIR [TOTAL_SECONDS, default 600]
set -u
build=${1:?usage: soak.sh BUILD_DIR [SECONDS]}
total=${2:-600}
src=$(cd "$(dirname "$0")" && pwd)
tests="test_fault_queue test_fault_sync test_fault_tracker test_soak_cycles"
parts=0
for t in $tests; do
  parts=$((parts + $(grep -c 'RUN_IF(argc, argv' "$src/$t.c")))
done
share=$(( total / parts )); [ "$share" -ge 1 ] || share=1
echo "soak: $parts test functions, ${share} s each (${total} s in all)"
shm_before=$(ls /dev/shm | grep -c '^mpt' || true)
export MP_TEST_BINDIR="$build" MP_SOURCE_DIR="$(dirname "$src")" MP_SOAK_SECONDS=$share
failed=0
for t in $tests; do
  n=$(grep -c 'RUN_IF(argc, argv' "$src/$t.c")
  # A hung test is killed well after its share: its storms are bounded, so this is a hang.
  if ! timeout --signal=KILL $(( n * share + 300 )) "$build/$t"; then
    echo "soak: $t FAILED"
    failed=1
  fi
done
left=$(( $(ls /dev/shm | grep -c '^mpt' || true) - shm_before ))
if [ "$left" -ne 0 ]; then
  echo "soak: $left /dev/shm entries left behind"; failed=1
fi
if pgrep -f "$build/test_(fault|soak)" >/dev/null; then
  echo "soak: processes of the soak tests are still running:"; pgrep -af "$build/test_(fault|soak)"
  failed=1
fi
[ $failed -eq 0 ] && echo "soak: passed" || echo "soak: FAILED"
exit $failed
