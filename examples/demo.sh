#!/usr/bin/env bash
# The tour run by `make demo`: every program in build/examples, in name order (names
# start with their module: subprocess_*, process_*, queue_*, ...). Each is introduced by
# its title, the first line of its source's opening comment. Whatever an example writes
# to stderr is part of what it shows (a child's traceback, a refused call) and is marked
# as expected; an example that exits non-zero is a failure of the tour.
set -u
dir=${1:-build/examples}
src=${2:-$(dirname "$0")}
status=0
title() {
  sed -n '1{s|^/\* *||;s| *\*/ *$||;p;q}' "$src/$1.c" 2>/dev/null
}
for path in $(ls "$dir" | sort); do
  [ -x "$dir/$path" ] && [ -f "$dir/$path" ] || continue
  echo "===== $path: $(title "$path")"
  # stderr lines are prefixed, stdout passes through; both keep their order per stream.
  { (cd "$dir" && timeout 60 "./$path" </dev/null 2>&1 1>&3 3>&-) | sed 's/^/  (expected on stderr) /'; } 3>&1
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then
    echo "example $path FAILED (exit $rc)" >&2
    status=1
  fi
  echo
done
[ $status -eq 0 ] && echo "demo: every example ran as shown above"
exit $status
