#!/usr/bin/env python3
"""Python's side of bench_manager: the same cases with multiprocessing's SyncManager
(fork context). Prints case<TAB>unit<TAB>python_rate."""
import multiprocessing as mp
import time


def dict_ops(d, n, salt):
    for i in range(0, n, 2):
        key = i % 100 + salt * 1000
        d[key] = i
        d[key]


def manager_dict_ops(m, n):
    d = m.dict()
    t = time.perf_counter()
    dict_ops(d, n, 0)
    return n / (time.perf_counter() - t)


def _client(d, n, salt, go):
    go.wait()
    dict_ops(d, n, salt)


def manager_dict_ops_4clients(ctx, m, n):
    d = m.dict()
    go = ctx.Event()
    ps = [ctx.Process(target=_client, args=(d, n, c, go)) for c in range(4)]
    for p in ps:
        p.start()
    time.sleep(0.2)
    t = time.perf_counter()
    go.set()
    for p in ps:
        p.join()
    return 4 * n / (time.perf_counter() - t)


def manager_start(ctx, n):
    t = time.perf_counter()
    for _ in range(n):
        m = ctx.Manager()
        d = m.dict()
        d['a'] = 1
        m.shutdown()
    return n / (time.perf_counter() - t)


def best(f, *args):
    return max(f(*args) for _ in range(3))


if __name__ == "__main__":
    ctx = mp.get_context("fork")
    m = ctx.Manager()
    print(f"manager_dict_ops\tops/s\t{best(manager_dict_ops, m, 40000):.0f}", flush=True)
    print(f"manager_dict_ops_4clients\tops/s\t{best(manager_dict_ops_4clients, ctx, m, 20000):.0f}",
          flush=True)
    m.shutdown()
    print(f"manager_start\tops/s\t{best(manager_start, ctx, 10):.1f}", flush=True)
