#!/usr/bin/env python3
"""The subprocess benchmark cases through Python's stdlib (best of 5 rounds).
Prints: case<TAB>unit<TAB>python_rate."""
import subprocess
import time

BYTES = 64 << 20
MB = 1024.0 * 1024.0
HEAD = ["/usr/bin/head", "-c", str(BYTES), "/dev/zero"]


def best_rate(fn, work, rounds=5):
    best = 0.0
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        best = max(best, work / (time.perf_counter() - t0))
    return best


def spawn_true():
    for _ in range(200):
        subprocess.run(["/bin/true"])


def capture():
    # capture_output=True, the usual idiom: stdout and stderr both captured.
    out = subprocess.run(HEAD, capture_output=True).stdout
    assert len(out) == BYTES


DATA = b"x" * BYTES


def communicate():
    p = subprocess.Popen(["/bin/cat"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    out, _ = p.communicate(DATA)
    assert len(out) == BYTES


def pipeline3():
    p1 = subprocess.Popen(HEAD, stdout=subprocess.PIPE)
    p2 = subprocess.Popen(["/bin/cat"], stdin=p1.stdout, stdout=subprocess.PIPE)
    p1.stdout.close()
    p3 = subprocess.Popen(["/bin/cat"], stdin=p2.stdout, stdout=subprocess.PIPE)
    p2.stdout.close()
    out, _ = p3.communicate()
    p1.wait()
    p2.wait()
    assert len(out) == BYTES


def main():
    print(f"spawn_true\tops/s\t{best_rate(spawn_true, 200):.1f}", flush=True)
    print(f"capture_64mb\tMB/s\t{best_rate(capture, BYTES / MB):.1f}", flush=True)
    print(f"communicate_64mb\tMB/s\t{best_rate(communicate, BYTES / MB):.1f}", flush=True)
    print(f"pipeline_3\tMB/s\t{best_rate(pipeline3, BYTES / MB):.1f}", flush=True)


if __name__ == "__main__":
    main()
