#!/usr/bin/env bash
# libmultiproc.so exports exactly what the public headers declare (tests/exports_check.py).
set -euo pipefail
exec python3 "${MP_SOURCE_DIR:?run through ctest}/tests/exports_check.py" "$MP_SOURCE_DIR" "${MP_TEST_BINDIR:?}"
