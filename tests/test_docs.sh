#!/usr/bin/env bash
# Every C block in README.md and docs/*.md compiles and runs (tests/docs_check.py).
set -euo pipefail
exec python3 "${MP_SOURCE_DIR:?run through ctest}/tests/docs_check.py" "$MP_SOURCE_DIR" "${MP_TEST_BINDIR:?}"
