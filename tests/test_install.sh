#!/usr/bin/env bash
# Installs the built library into a temporary prefix and builds an out-of-tree
# consumer twice: with pkg-config and with CMake's find_package(multiproc).
# Both consumers must run and print the same line.
set -euo pipefail
bindir=${MP_TEST_BINDIR:?run through ctest}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

cmake --install "$bindir" --prefix "$prefix" >/dev/null

# A sanitizer build of the library needs its runtime in the consumer too.
san=""
grep -q '^MP_ASAN:BOOL=ON' "$bindir/CMakeCache.txt" && san="-fsanitize=address,undefined"
grep -q '^MP_TSAN:BOOL=ON' "$bindir/CMakeCache.txt" && san="-fsanitize=thread"
libdir=$(ls -d "$prefix"/lib*/ | head -1)
test -f "$prefix/include/multiproc.h"
test -f "$libdir/pkgconfig/multiproc.pc"
test -f "$libdir/cmake/multiproc/multiprocConfig.cmake"

mkdir -p "$tmp/consumer"
cat >"$tmp/consumer/main.c" <<'C'
#include <multiproc.h>
#include <stdio.h>
int main(void)
{
    mp_value *v = mp_value_pack("[i n s]", 42, "hello");
    char *s = mp_value_repr(v);
    printf("%s %s %s\n", s, mp_errname(MP_ETIMEOUT), mp_strerror(MP_EEOF));
    mp_free(s);
    mp_value_free(v);
    return 0;
}
C
expected="[42, None, 'hello'] MP_ETIMEOUT end of file: the other end is closed"

# 1. pkg-config
export PKG_CONFIG_PATH="$libdir/pkgconfig"
cc $san -o "$tmp/consumer/pc" "$tmp/consumer/main.c" $(pkg-config --cflags --libs multiproc)
# No LD_LIBRARY_PATH: the installed library must be found as installed.
out=$("$tmp/consumer/pc")
[ "$out" = "$expected" ] || { echo "pkg-config consumer printed: $out"; exit 1; }

# 2. find_package
cat >"$tmp/consumer/CMakeLists.txt" <<'CM'
cmake_minimum_required(VERSION 3.16)
project(consumer C)
find_package(multiproc REQUIRED)
add_executable(consumer main.c)
target_link_libraries(consumer PRIVATE multiproc::multiproc)
CM
cmake -S "$tmp/consumer" -B "$tmp/consumer/build" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" >/dev/null
cmake --build "$tmp/consumer/build" >/dev/null
out=$("$tmp/consumer/build/consumer")
[ "$out" = "$expected" ] || { echo "find_package consumer printed: $out"; exit 1; }
echo "install: pkg-config and find_package consumers OK"

# 3. the MPI library (when built): a pkg-config consumer running as one MPI rank
if [ -f "$libdir/pkgconfig/multiproc_mpi.pc" ]; then
  cat >"$tmp/consumer/mpi.c" <<'C'
#include <multiproc.h>
#include <multiproc/mpi.h>
#include <stdio.h>
int main(int argc, char **argv)
{
    if (mp_mpi_init(&argc, &argv) < 0) {
        printf("%s\n", mp_last_error());
        return 1;
    }
    printf("rank %d of %d\n", mp_mpi_rank(MPI_COMM_WORLD), mp_mpi_size(MPI_COMM_WORLD));
    return mp_mpi_finalize() < 0;
}
C
  cc $san -o "$tmp/consumer/mpi" "$tmp/consumer/mpi.c" $(pkg-config --cflags --libs multiproc_mpi)
  # Under ASan, Open MPI's own allocations are not ours to report (tests/mpi/lsan.supp).
  out=$(LSAN_OPTIONS="suppressions=${MP_SOURCE_DIR:?}/tests/mpi/lsan.supp:fast_unwind_on_malloc=0:print_suppressions=0" \
    "$tmp/consumer/mpi")
  [ "$out" = "rank 0 of 1" ] || { echo "multiproc_mpi consumer printed: $out"; exit 1; }
  echo "install: multiproc_mpi pkg-config consumer OK"
fi
