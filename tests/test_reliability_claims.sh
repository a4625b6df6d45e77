#!/bin/bash
# The README's Reliability table names, for each promise, the tests that back it: every
# "test_x.c: test_a, test_b" there must be a test file with those tests (a renamed or
# deleted test must not leave a promise unbacked).
src=${MP_SOURCE_DIR:?run through ctest}
exec python3 - "$src" <<'PY'
import os, re, sys
src = sys.argv[1]
text = open(os.path.join(src, "README.md"), encoding="utf-8").read()
m = re.search(r"^## Reliability\n(.*?)^## ", text, re.S | re.M)
if not m:
    sys.exit("README.md has no '## Reliability' section")
rows = [l for l in m.group(1).splitlines() if l.startswith("| ") and not l.startswith("| promise")
        and not l.startswith("|---")]
bad, named = 0, 0
for row in rows:
    cells = [c.strip() for c in row.strip("|").split("|")]
    backing = cells[-1]
    files = re.findall(r"(test_\w+\.c)(?::\s*([\w ,]+?))?(?=;|$| \()", backing)
    if not files:
        print("no test named for:", cells[0]); bad += 1
    for f, names in files:
        path = os.path.join(src, "tests", f)
        if not os.path.exists(path):  # the MPI tests (run under mpiexec) live in tests/mpi/
            path = os.path.join(src, "tests", "mpi", f)
        if not os.path.exists(path):
            print("missing test file:", f); bad += 1; continue
        body = open(path, encoding="utf-8").read()
        for name in re.findall(r"test_\w+", names or ""):
            named += 1
            if not re.search(r"RUN_IF\(argc, argv, %s\)" % re.escape(name), body):
                print("%s has no test %s (README Reliability: %s)" % (f, name, cells[0][:60])); bad += 1
print("%d promises, %d named tests checked, %d problems" % (len(rows), named, bad))
sys.exit(1 if bad else 0)
PY
