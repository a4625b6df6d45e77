#!/usr/bin/env python3
"""Python's side of bench_sync: the same cases with multiprocessing (fork context).
Prints case<TAB>unit<TAB>python_rate."""
import multiprocessing as mp
import time


def lock_uncontended(n):
    lock = mp.Lock()
    acquire, release = lock.acquire, lock.release
    t = time.perf_counter()
    for _ in range(n):
        acquire()
        release()
    return n / (time.perf_counter() - t)


def _count(v, n):
    lock = v.get_lock()
    for _ in range(n):
        with lock:
            v.value += 1


def shared_counter_2proc(ctx, n):
    v = ctx.Value('q', 0)
    p = ctx.Process(target=_count, args=(v, n))
    t = time.perf_counter()
    p.start()
    _count(v, n)
    p.join()
    rate = 2 * n / (time.perf_counter() - t)
    assert v.value == 2 * n, v.value
    return rate


def _pong(ping, pong, n):
    for _ in range(n):
        ping.wait()
        ping.clear()
        pong.set()


def event_pingpong(ctx, n):
    ping, pong = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_pong, args=(ping, pong, n))
    p.start()
    t = time.perf_counter()
    for _ in range(n):
        ping.set()
        pong.wait()
        pong.clear()
    rate = n / (time.perf_counter() - t)
    p.join()
    return rate


def best(f, *args):
    return max(f(*args) for _ in range(3))


if __name__ == "__main__":
    ctx = mp.get_context("fork")
    print(f"lock_uncontended\tops/s\t{best(lock_uncontended, 1000000):.0f}", flush=True)
    print(f"shared_counter_2proc\tops/s\t{best(shared_counter_2proc, ctx, 100000):.0f}", flush=True)
    print(f"event_pingpong\tround trips/s\t{best(event_pingpong, ctx, 5000):.0f}", flush=True)
