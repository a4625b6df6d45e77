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
# A pair X_server / X_client is one example: the server starts in the background on
# 127.0.0.1 port 0 and prints "serving at <address>" first; the client gets that address
# as its argument and stops the server when done; the server's output follows.
run_pair() {
  local server=$1 client=$2 out addr rc
  echo "===== $server + $client: $(title "$server")"
  out=$(mktemp)
  (cd "$dir" && exec timeout 60 "./$server" 127.0.0.1:0 >"$out" 2>&1) &
  local spid=$!
  for _ in $(seq 1 600); do
    addr=$(sed -n 's/^serving at //p' "$out")
    [ -n "$addr" ] || ! kill -0 $spid 2>/dev/null && break
    sleep 0.05
  done
  { (cd "$dir" && timeout 60 "./$client" "$addr" </dev/null 2>&1 1>&3 3>&-) | sed 's/^/  (expected on stderr) /'; } 3>&1
  rc=${PIPESTATUS[0]}
  wait $spid || rc=1
  sed 's/^/  [server] /' "$out"
  rm -f "$out"
  if [ "$rc" -ne 0 ]; then
    echo "example $server + $client FAILED" >&2
    status=1
  fi
  echo
}
for path in $(ls "$dir" | sort); do
  [ -x "$dir/$path" ] && [ -f "$dir/$path" ] || continue
  case $path in
    *_server) [ -x "$dir/${path%_server}_client" ] && continue ;;
    *_client) if [ -x "$dir/${path%_client}_server" ]; then
                run_pair "${path%_client}_server" "$path"
                continue
              fi ;;
  esac
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
# MPI examples (build/examples/mpi, from examples/mpi/*.c): each runs as
# `mpiexec -n N ./prog`, N = 4 unless its source names another ("mpiexec -n 3"). The demo
# runs as root here, which Open MPI refuses unless told, and the machine may have fewer
# cores than ranks: those two settings are given to this invocation only. Ranks print in
# no fixed order, so an example with examples/mpi/<name>.expected (what the same program
# prints in Python with mpi4py) is checked against it as sorted lines.
run_mpi() {
  local name=$1 n out rc
  n=$(grep -o -m1 'mpiexec -n [0-9]*' "$src/mpi/$name.c" 2>/dev/null | grep -o '[0-9]*$')
  n=${n:-4}
  echo "===== mpi/$name (mpiexec -n $n): $(title "mpi/$name")"
  out=$(mktemp)
  (cd "$dir/mpi" && OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
     OMPI_MCA_rmaps_base_oversubscribe=1 exec timeout 60 mpiexec -n "$n" "./$name" \
     </dev/null >"$out" 2>&1)
  rc=$?
  cat "$out"
  if [ "$rc" -ne 0 ]; then
    echo "example mpi/$name FAILED (exit $rc)" >&2
    status=1
  elif [ -f "$src/mpi/$name.expected" ] &&
       ! diff <(sort "$src/mpi/$name.expected") <(sort "$out") >/dev/null; then
    echo "example mpi/$name FAILED: its lines differ from $src/mpi/$name.expected:" >&2
    diff <(sort "$src/mpi/$name.expected") <(sort "$out") >&2
    status=1
  fi
  rm -f "$out"
  echo
}
if [ -d "$dir/mpi" ]; then
  if command -v mpiexec >/dev/null; then
    for path in $(ls "$dir/mpi" | sort); do
      [ -x "$dir/mpi/$path" ] && [ -f "$dir/mpi/$path" ] && run_mpi "$path"
    done
  else
    echo "===== mpi/*: skipped (mpiexec not found: install openmpi-bin)"
  fi
fi
[ $status -eq 0 ] && echo "demo: every example ran as shown above"
exit $status
