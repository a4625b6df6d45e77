#!/usr/bin/env python3
"""Compile, and run, every C code block of README.md and docs/*.md.

The rule the docs follow (CONTRIBUTING.md): a ```c block is either a whole program (it
has a main) or a run of statements that is a program once put inside main. Both are
compiled against the built library (a statement run gets the prelude below: the
library's umbrella header and the usual libc headers; a whole program includes its own) with warnings as errors and run from an empty
directory: each must exit 0 within its time limit, and LeakSanitizer (when this build
allows it) fails one that leaks. A program that includes multiproc/mpi.h is built with
Open MPI's flags against libmultiproc_mpi and runs as `mpiexec -n 4` (mpi_setup). A block that is not C (a shell line, CMake) uses another
fence (```sh, ```cmake) and is not checked here.

Usage: docs_check.py SOURCE_DIR BUILD_DIR
"""
import glob
import os
import re
import subprocess
import sys
import tempfile

PRELUDE = """#define _GNU_SOURCE
#include <multiproc.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
"""


def blocks(path):
    """(first line number, text) of every ```c block in path."""
    out, cur, start = [], None, 0
    for n, line in enumerate(open(path, encoding="utf-8"), 1):
        if cur is None and re.match(r"^```c\s*$", line):
            cur, start = [], n + 1
        elif cur is not None and line.startswith("```"):
            out.append((start, "".join(cur)))
            cur = None
        elif cur is not None:
            cur.append(line)
    return out


def program(text):
    if re.search(r"\bmain\s*\(", text):
        return text  # a whole program includes what it uses: it is copied as it is
    return PRELUDE + "int main(void)\n{\n" + text + "    return 0;\n}\n"


def sanitizer_flags(build):
    cache = open(os.path.join(build, "CMakeCache.txt")).read()
    if "MP_TSAN:BOOL=ON" in cache:
        return ["-fsanitize=thread"], {}
    # ASan's leak checker in the doc program covers the library's allocations too.
    return ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"], \
        {"ASAN_OPTIONS": "detect_leaks=1", "UBSAN_OPTIONS": "halt_on_error=1"}


def mpi_setup(src, text, env):
    """A program that includes multiproc/mpi.h is an MPI program: it is compiled with
    Open MPI's flags, linked with libmultiproc_mpi, and run as `mpiexec -n 4` with what
    the MPI tests pass Open MPI (root, oversubscription; under ASan, tests/mpi/lsan.supp).
    Returns (extra compile args, library args, command prefix, env); None for an MPI
    program when Open MPI's mpicc is not installed (it is then skipped)."""
    if "multiproc/mpi.h" not in text:
        return [], ["-lmultiproc"], [], env
    try:
        comp = subprocess.run(["mpicc", "--showme:compile"], capture_output=True, text=True,
                              check=True).stdout.split()
        link = subprocess.run(["mpicc", "--showme:link"], capture_output=True, text=True,
                              check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return None
    env = {**env, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1",
           "OMPI_MCA_rmaps_base_oversubscribe": "1"}
    if "ASAN_OPTIONS" in env:
        env.update({"LSAN_OPTIONS": f"suppressions={src}/tests/mpi/lsan.supp:"
                                    "fast_unwind_on_malloc=0:print_suppressions=0",
                    "OMPI_MCA_mca_base_component_disable_dlclose": "1",
                    "PMIX_MCA_mca_base_component_disable_dlclose": "1"})
    return comp, ["-lmultiproc_mpi", *link], ["mpiexec", "-n", "4"], env


def check(src, build, md, line, text, flags, env):
    name = f"{os.path.relpath(md, src)}:{line}"
    mpi = mpi_setup(src, text, env)
    if mpi is None:
        print(f"skip {name}: an MPI program, and mpicc is not installed", flush=True)
        return None
    comp, libs, run, env = mpi
    with tempfile.TemporaryDirectory() as tmp:
        c = os.path.join(tmp, "doc.c")
        open(c, "w").write(program(text))
        exe = os.path.join(tmp, "doc")
        cc = ["cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
              "-Wno-unused-variable", "-Wno-unused-but-set-variable", *flags,
              f"-I{src}/include", *comp, c, "-o", exe, f"-L{build}", f"-Wl,-rpath,{build}",
              *libs, "-lm"]
        r = subprocess.run(cc, capture_output=True, text=True)
        if r.returncode != 0:
            return f"{name}: does not compile:\n{r.stderr}"
        try:
            r = subprocess.run([*run, exe], cwd=tmp, capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL, env={**os.environ, **env})
        except subprocess.TimeoutExpired:
            return f"{name}: still running after 60 s"
        if r.returncode != 0:
            return f"{name}: exit {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}"
    return None


def main():
    src, build = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    flags, env = sanitizer_flags(build)
    files = [os.path.join(src, "README.md")] + sorted(glob.glob(os.path.join(src, "docs", "*.md")))
    failed = passed = 0
    for md in files:
        for line, text in blocks(md):
            err = check(src, build, md, line, text, flags, env)
            if err:
                failed += 1
                print("FAIL " + err, flush=True)
            else:
                passed += 1
                print(f"ok   {os.path.relpath(md, src)}:{line}", flush=True)
    print(f"docs: {passed} passed, {failed} failed")
    return 1 if failed or not passed else 0


if __name__ == "__main__":
    sys.exit(main())
