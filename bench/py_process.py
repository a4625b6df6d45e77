#!/usr/bin/env python3
"""Python's multiprocessing: start+join rates per start method (same cases as
bench_process). Prints case<TAB>unit<TAB>python_rate. spawn is slow (~20/s): kept short."""
import multiprocessing as mp
import time


def empty():
    pass


def rate(method, seconds, minimum):
    ctx = mp.get_context(method)
    n = 0
    t0 = time.monotonic()
    while True:
        p = ctx.Process(target=empty)
        p.start()
        p.join()
        n += 1
        t = time.monotonic() - t0
        if t >= seconds and n >= minimum:
            return n / t


if __name__ == "__main__":
    rate("forkserver", 0, 2)  # start the server outside the measurement
    print(f"process_start_join_fork\tops/s\t{rate('fork', 1.5, 20):.1f}")
    print(f"process_start_join_spawn\tops/s\t{rate('spawn', 1.0, 10):.1f}")
    print(f"process_start_join_forkserver\tops/s\t{rate('forkserver', 1.5, 20):.1f}")
