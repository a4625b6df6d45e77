#!/bin/sh
# usage: check_corpus.sh GEN CORPUS — every seed GEN writes equals the committed one.
gen=$1 corpus=$2
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
"$gen" "$tmp" || { echo "fuzz_gen_corpus failed"; exit 1; }
rc=0
for f in $(cd "$tmp" && find . -type f | sort); do
  if ! cmp -s "$tmp/$f" "$corpus/$f"; then
    echo "fuzz/corpus/${f#./} differs from what the encoders write now: run make fuzz-corpus"
    rc=1
  fi
done
[ $rc = 0 ] && echo "every generated seed matches fuzz/corpus"
exit $rc
