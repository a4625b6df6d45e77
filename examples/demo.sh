#!/usr/bin/env bash
# The tour of examples run by `make demo`: every program in build/examples, in name
# order (names start with their module: subprocess_*, process_*, queue_*, ...).
# Each prints what the seed it was ported from printed.
set -u
dir=${1:-build/examples}
status=0
for path in $(ls "$dir" | sort); do
  [ -x "$dir/$path" ] || continue
  echo "===== $path"
  if ! (cd "$dir" && timeout 60 "./$path" </dev/null); then
    echo "example $path FAILED" >&2
    status=1
  fi
  echo
done
exit $status
