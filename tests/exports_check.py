#!/usr/bin/env python3
"""The shared library exports exactly the public API.

Every function and variable declared in include/multiproc/*.h must be exported by
libmultiproc.so, and the library must export nothing else (no internal mp__* helper,
nothing without the mp_ prefix). Usage: exports_check.py SOURCE_DIR BUILD_DIR
"""
import glob
import os
import re
import subprocess
import sys


def declared(header):
    text = open(header).read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", " ", text, flags=re.M)  # directives
    text = text.replace('extern "C" {', " ")  # its closing brace is clamped below
    names = set()
    depth, stmt = 0, ""
    for ch in text:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth = max(depth - 1, 0)
            if depth == 0:
                stmt = ""
        elif depth == 0:
            if ch == ";":
                names |= names_in(stmt)
                stmt = ""
            else:
                stmt += ch
    return names


def names_in(stmt):
    s = " ".join(stmt.split())
    if not s or s.startswith("typedef") or "static" in s.split():
        return set()
    m = re.match(r"^[^(]*?\b(mp_\w+)\s*\(", s)          # a function: its first name( pair
    if m:
        return {m.group(1)}
    m = re.match(r"^extern\b.*?\b(mp_\w+)\s*(\[.*\])?$", s)  # a variable
    return {m.group(1)} if m else set()


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], capture_output=True,
                         text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.split()}


def check(lib, want):
    have = {s for s in exported(lib) if not s.startswith("_")}  # _init/_fini/_edata...
    ok = True
    for s in sorted(have - want):
        print(f"{os.path.basename(lib)}: exported but not declared in a public header: {s}")
        ok = False
    for s in sorted(want - have):
        print(f"{os.path.basename(lib)}: declared in a public header but not exported: {s}")
        ok = False
    print(f"{os.path.basename(lib)}: {len(have)} symbols, {len(want)} declared: "
          f"{'OK' if ok else 'MISMATCH'}")
    return ok and bool(want)


def main():
    """libmultiproc.so: the headers but mpi*.h; libmultiproc_mpi.so (when built): all."""
    src, build = sys.argv[1], sys.argv[2]
    base, mpi = set(), set()
    for h in sorted(glob.glob(os.path.join(src, "include", "multiproc", "*.h"))):
        (mpi if os.path.basename(h).startswith("mpi") else base).update(declared(h))
    ok = check(os.path.join(build, "libmultiproc.so"), base)
    mpilib = os.path.join(build, "libmultiproc_mpi.so")
    if os.path.exists(mpilib):
        ok = check(mpilib, base | mpi) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
