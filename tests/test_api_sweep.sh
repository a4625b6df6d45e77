#!/usr/bin/env bash
# Every public function, called with all-zero arguments (NULL handles and output
# pointers, zero sizes), must return an error and never crash or hang.
# tests/api_sweep.py generates the calls from the headers, so new functions are
# covered as they are added.
set -euo pipefail
bindir=${MP_TEST_BINDIR:?run through ctest}
src=${MP_SOURCE_DIR:?run through ctest}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
san=""
grep -q '^MP_ASAN:BOOL=ON' "$bindir/CMakeCache.txt" && san="-fsanitize=address,undefined"
grep -q '^MP_TSAN:BOOL=ON' "$bindir/CMakeCache.txt" && san="-fsanitize=thread"
python3 "$src/tests/api_sweep.py" "$src/include" >"$tmp/sweep.c"
cc $san -w -o "$tmp/sweep" "$tmp/sweep.c" -I"$src/include" -L"$bindir" -lmultiproc \
  -Wl,-rpath,"$bindir"
"$tmp/sweep" 2>/dev/null
