#!/usr/bin/env python3
"""Generate a C program that calls every public function declared in
include/multiproc/*.h with all-zero arguments (NULL pointers, 0, 0.0, zeroed
structs), each in its own forked child with a 3 s alarm, and prints the functions
that crashed or hung. Bad input must give an error code, never a crash.

Usage: api_sweep.py INCLUDE_DIR > sweep.c
"""
import glob
import os
import re
import sys

# Functions whose job is to end the process, or that take a format string.
SKIP = {"mp_process_exit", "mp_process_fail", "mp_log", "mp_vlog", "mp_value_pack",
        "mp_value_unpack", "mp_signal_raise",
        "mp_signal_pause"}  # its job is to sleep until a signal comes
PROTO = re.compile(r"^\s*([A-Za-z_][\w \*]*?[\s\*])(mp_\w+)\s*\(([^;{]*?)\)\s*"
                   r"(__attribute__\S*\s*\(\([^;]*\)\))?\s*;", re.M | re.S)


def prototypes(include_dir):
    for header in sorted(glob.glob(f"{include_dir}/multiproc/*.h")):
        # The MPI module's headers (mpi*.h) belong to libmultiproc_mpi and need MPI
        # started; their bad-argument cases are tested under mpiexec in tests/mpi/.
        if os.path.basename(header).startswith("mpi"):
            continue
        text = re.sub(r"/\*.*?\*/", "", open(header).read(), flags=re.S)
        text = re.sub(r"//.*", "", text)
        for m in PROTO.finditer(text):
            ret, name, args = m.group(1).strip(), m.group(2), " ".join(m.group(3).split())
            if "typedef" not in ret and name not in SKIP and "..." not in args:
                yield name, args


def zero_arg(decl):
    if "*" in decl or "[" in decl:
        return "0"
    if "double" in decl:
        return "0.0"
    typ = re.sub(r"\s+\w+$", "", decl)
    if re.fullmatch(r"(const\s+)?mp_\w+", typ) and not re.search(r"mp_(type|start_method)\b", typ):
        return f"({typ}){{0}}"  # a struct passed by value
    return "0"


def main():
    out = ["#define _GNU_SOURCE", "#include <multiproc.h>", "#include <signal.h>",
           "#include <stdio.h>", "#include <string.h>", "#include <sys/wait.h>",
           "#include <unistd.h>", "static int bad;",
           "static void run(const char *n, void (*f)(void))",
           "{",
           "    pid_t p = fork();",
           "    if (p == 0) { alarm(3); f(); _exit(0); }",
           "    int st;",
           "    waitpid(p, &st, 0);",
           "    if (WIFSIGNALED(st)) {",
           "        bad++;",
           '        printf("%s: %s\\n", n, WTERMSIG(st) == SIGALRM ? "hangs" : strsignal(WTERMSIG(st)));',
           "    }",
           "}"]
    calls = []
    for name, args in prototypes(sys.argv[1]):
        params = [] if args in ("", "void") else [a.strip() for a in args.split(",")]
        out.append(f"static void f_{name}(void) {{ (void){name}({', '.join(map(zero_arg, params))}); }}")
        calls.append(f'    run("{name}", f_{name});')
    out.append("int main(void)\n{\n    setvbuf(stdout, NULL, _IONBF, 0);")
    out += calls
    out.append(f'    printf("%d of {len(calls)} functions crashed or hung on all-zero arguments\\n", bad);')
    out.append("    return bad ? 1 : 0;\n}")
    print("\n".join(out))


if __name__ == "__main__":
    main()
