#!/usr/bin/env bash
# The HTML reference builds with zero Doxygen warnings: the configuration `make docs` uses
# (build/Doxyfile.docs, WARN_AS_ERROR = FAIL_ON_WARNINGS) fails on any new one. Skipped
# (exit 77) when Doxygen is not installed; `make docs-deps` installs it.
set -euo pipefail
cfg="${MP_TEST_BINDIR:?run through ctest}/Doxyfile.docs"
if ! command -v doxygen >/dev/null || [ ! -f "$cfg" ]; then
    echo "doxygen not installed (make docs-deps), or configured without it: skipped"
    exit 77
fi
cd "${MP_SOURCE_DIR:?}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! doxygen "$cfg" >/dev/null 2>"$log" || grep -q 'warning:' "$log"; then
    grep -E 'warning:|error:' "$log" || cat "$log"
    echo "FAIL: Doxygen warnings (see above)"
    exit 1
fi
echo "ok: the reference builds with no Doxygen warning"
