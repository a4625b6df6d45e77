#!/usr/bin/env python3
"""Run every benchmark side by side and print one table.

Each module contributes up to three programs:
  build/bench/bench_<module>   prints  case<TAB>unit<TAB>multiproc<TAB>floor
  bench/py_<module>.py         prints  case<TAB>unit<TAB>python
  build/bench/peer_<module>    prints  case<TAB>unit<TAB>peer   (optional, C++)
Units are rates where higher is better (ops/s, MB/s). The floor is the same work
done with raw syscalls (or a bare lock-free ring) in C; the peer is the best C/C++
library doing the same job (Boost.Interprocess for queues). This script joins the
rows by case, prints the ratios and writes build/bench.tsv with the columns
case unit multiproc python peer floor.

Usage: bench/run.py BUILD_DIR [module ...]   (default: every module)
"""
import glob
import os
import subprocess
import sys


def run_lines(cmd):
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                         text=True, check=True).stdout
    return [line.split("\t") for line in out.splitlines() if line.count("\t") >= 2]


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    only = set(sys.argv[2:])
    here = os.path.dirname(os.path.abspath(__file__))
    rows = {}  # case -> dict
    order = []
    for binary in sorted(glob.glob(os.path.join(build, "bench", "bench_*"))):
        module = os.path.basename(binary)[len("bench_"):]
        if only and module not in only:
            continue
        print(f"running {module} benchmarks ...", file=sys.stderr, flush=True)
        for case, unit, mp, floor in run_lines([binary]):
            rows[case] = {"unit": unit, "mp": float(mp), "floor": float(floor), "py": None,
                          "peer": None}
            order.append(case)
        pyscript = os.path.join(here, f"py_{module}.py")
        if os.path.exists(pyscript):
            for case, unit, py in run_lines([sys.executable, pyscript]):
                if case in rows:
                    rows[case]["py"] = float(py)
        peer = os.path.join(build, "bench", f"peer_{module}")
        if os.path.exists(peer):
            for case, unit, rate in run_lines([peer]):
                if case in rows:
                    rows[case]["peer"] = float(rate)

    def fmt(x):
        return "n/a" if x is None else f"{x:,.1f}"

    def ratio(a, b):
        return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"

    header = (f"{'case':30} {'unit':6} {'multiproc':>14} {'python':>14} {'peer':>14} {'floor':>14} "
              f"{'vs python':>10} {'vs peer':>8} {'vs floor':>9}")
    print(header)
    print("-" * len(header))
    for case in order:
        r = rows[case]
        print(f"{case:30} {r['unit']:6} {fmt(r['mp']):>14} {fmt(r['py']):>14} {fmt(r['peer']):>14} "
              f"{fmt(r['floor']):>14} {ratio(r['mp'], r['py']):>10} {ratio(r['mp'], r['peer']):>8} "
              f"{ratio(r['mp'], r['floor']):>9}")
    with open(os.path.join(build, "bench.tsv"), "w") as f:
        f.write("case\tunit\tmultiproc\tpython\tpeer\tfloor\n")
        for case in order:
            r = rows[case]
            py = "" if r["py"] is None else f"{r['py']:.3f}"
            peer = "" if r["peer"] is None else f"{r['peer']:.3f}"
            f.write(f"{case}\t{r['unit']}\t{r['mp']:.3f}\t{py}\t{peer}\t{r['floor']:.3f}\n")
    print(f"\nwritten {os.path.join(build, 'bench.tsv')}  (vs python, vs peer: higher is better; "
          f"vs floor: 1.00x = as fast as raw syscalls)")


if __name__ == "__main__":
    main()
