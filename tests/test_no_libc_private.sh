#!/usr/bin/env bash
# The library must not read libc-private fields (glibc's pthread_mutex_t.__data.__lock,
# __owner, ...): that breaks silently on another libc or a glibc change. Keep such
# state in our own words (src/queue/q.h `held`, src/sync/lock.c `owner`).
set -euo pipefail
src=${MP_SOURCE_DIR:?run through ctest}
if grep -rnE '(\.|->)__(data|lock|owner|count|nusers|kind|spins|list|size|align)\b' \
    "$src/src" "$src/include"; then
  echo "libc-private fields are used (above)" >&2
  exit 1
fi
echo ok
