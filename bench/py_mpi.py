#!/usr/bin/env python3
"""mpi4py.futures (Debian's python3-mpi4py 3.1.4, run by /usr/bin/python3): the cases of
bench_mpi on the same 3 ranks (rank 0 the client, 2 workers), each with the chunksize that
suits it best (map: the best of several; submit has none). Prints case<TAB>unit<TAB>rate.

Run directly (as bench/run.py does, by any python3), it runs itself as
`mpiexec -n 3 /usr/bin/python3 -m mpi4py.futures bench/py_mpi.py --ranks`, the
`python -m mpi4py.futures` launch mode (MPIPoolExecutor then uses ranks 1 and 2)."""
import os
import subprocess
import sys
import time

M = 1_000_000
K = 10_000


def square(x):
    return x * x


def best(fn, reps):
    rates = []
    for _ in range(reps):
        t0 = time.monotonic()
        n = fn()
        rates.append(n / (time.monotonic() - t0))
    return max(rates)


def ranks():
    from mpi4py.futures import MPIPoolExecutor
    with MPIPoolExecutor() as ex:
        ex.submit(square, 1).result()  # the workers are up

        def map_with(cs):
            def run():
                out = list(ex.map(square, range(M), chunksize=cs))
                assert out[-1] == (M - 1) ** 2
                return M
            return run

        rates = {cs: best(map_with(cs), 2) for cs in (1000, 10000, 125000)}
        cs = max(rates, key=rates.get)
        print(f"mpi_pool_map_square_1m\titems/s\t{rates[cs]:.1f}", flush=True)
        print(f"# map chunksizes tried: {rates}", file=sys.stderr)
        # mpi4py has only the value path: the same map beside mp_pool_map_array
        print(f"mpi_pool_map_array_square_1m\titems/s\t{rates[cs]:.1f}", flush=True)

        def apply_():
            fs = [ex.submit(square, i) for i in range(K)]
            assert all(f.result() == i * i for i, f in enumerate(fs))
            return K

        print(f"mpi_pool_apply_10k\ttasks/s\t{best(apply_, 3):.1f}", flush=True)


def main():
    if "--ranks" in sys.argv:
        ranks()
        return
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1")
    cmd = ["mpiexec", "-n", "3", "/usr/bin/python3", "-m", "mpi4py.futures",
           os.path.abspath(__file__), "--ranks"]
    sys.exit(subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL).returncode)


if __name__ == "__main__":
    main()
