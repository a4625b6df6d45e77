#!/usr/bin/env python3
"""Python's side of bench_signals: the same cases with the signal module.
Prints: case<TAB>unit<TAB>python_rate."""
import os
import select
import signal
import time

SECONDS = 0.3  # per round; the best of 3 rounds counts, as in bench_signals.c


def rate(one):
    for _ in range(1000):
        one()
    n = 0
    t0 = time.monotonic()
    while True:
        for _ in range(1000):
            one()
        n += 1000
        t = time.monotonic()
        if t - t0 >= SECONDS:
            return n / (t - t0)


runs = 0


def handler(signum, frame):
    global runs
    runs += 1


def roundtrip(pid=os.getpid(), kill=os.kill, sig=signal.SIGUSR1):
    before = runs
    kill(pid, sig)  # Python runs the handler between the next bytecodes
    while runs == before:
        pass


r, w = os.pipe()
os.set_blocking(r, False)
os.set_blocking(w, False)


def wakefd_loop(pid=os.getpid(), kill=os.kill, sig=signal.SIGUSR1):
    before = runs
    kill(pid, sig)
    while runs == before:
        select.select([r], [], [])
    try:
        os.read(r, 512)  # drain, as an event loop does
    except BlockingIOError:
        pass


def main():
    signal.signal(signal.SIGUSR1, handler)
    best = max(rate(roundtrip) for _ in range(3))
    print(f"signal_roundtrip\tdeliv/s\t{best:.1f}", flush=True)
    signal.set_wakeup_fd(w)
    best = max(rate(wakefd_loop) for _ in range(3))
    print(f"signal_wakefd_loop\tdeliv/s\t{best:.1f}", flush=True)


if __name__ == "__main__":
    main()
