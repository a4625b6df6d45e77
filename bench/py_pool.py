#!/usr/bin/env python3
"""Python's multiprocessing.Pool (fork, 2 workers): the cases of bench_pool.
Prints case<TAB>unit<TAB>python_rate. Repeated cases report the best run, as bench_pool."""
import multiprocessing as mp
import time

M = 1_000_000
K = 10_000


def square(x):
    return x * x


def create(seconds, minimum):
    ctx = mp.get_context("fork")
    n = 0
    t0 = time.monotonic()
    while True:
        p = ctx.Pool(2)
        assert p.apply(square, (7,)) == 49
        p.close()
        p.join()
        n += 1
        t = time.monotonic() - t0
        if t >= seconds and n >= minimum:
            return n / t


def best(fn, reps):
    rates = []
    for _ in range(reps):
        t0 = time.monotonic()
        n = fn()
        rates.append(n / (time.monotonic() - t0))
    return max(rates)


def main():
    print(f"pool_create\tops/s\t{create(1.0, 20):.1f}", flush=True)
    with mp.get_context("fork").Pool(2) as p:
        def map_():
            out = p.map(square, range(M))
            assert out[-1] == (M - 1) ** 2
            return M

        def imap_():
            n = 0
            for n, v in enumerate(p.imap(square, range(M), chunksize=1000), 1):
                pass
            assert n == M and v == (M - 1) ** 2
            return M

        def apply_async_():
            rs = [p.apply_async(square, (i,)) for i in range(K)]
            assert all(r.get() == i * i for i, r in enumerate(rs))
            return K

        m = best(map_, 3)
        print(f"pool_map_square_1m\titems/s\t{m:.1f}")
        print(f"pool_map_array_square_1m\titems/s\t{m:.1f}")  # Python has only the value path
        print(f"pool_imap_1m\titems/s\t{best(imap_, 2):.1f}")
        print(f"pool_apply_async_10k\ttasks/s\t{best(apply_async_, 3):.1f}")


if __name__ == "__main__":
    main()
