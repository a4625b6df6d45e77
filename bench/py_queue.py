#!/usr/bin/env python3
"""Python's multiprocessing Pipe and Queue on the cases of bench_queue.c.
Prints case<TAB>unit<TAB>python_rate (fork start method, Linux's default in 3.11)."""
import multiprocessing as mp
import time


def echo(conn):
    while True:
        msg = conn.recv_bytes()
        if not msg:  # the empty message says stop (the child holds both ends after fork)
            break
        conn.send_bytes(msg)


def pingpong(n):
    a, b = mp.Pipe()
    p = mp.Process(target=echo, args=(b,))
    p.start()
    b.close()
    t0 = time.perf_counter()
    for _ in range(n):
        a.send_bytes(b'pingpong')
        a.recv_bytes()
    dt = time.perf_counter() - t0
    a.send_bytes(b'')
    p.join()
    return n / dt


def producer(q, start, n):
    for i in range(start, start + n):
        q.put(i)


def consumer(q, n):
    for _ in range(n):
        q.get()


def queue_ints(np_, nc, n):
    q = mp.Queue()
    t0 = time.perf_counter()
    procs = [mp.Process(target=consumer, args=(q, n // nc)) for _ in range(nc)]
    procs += [mp.Process(target=producer, args=(q, i * (n // np_), n // np_)) for i in range(np_)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return n / (time.perf_counter() - t0)


def put_mib(q, n):
    item = b'x' * (1 << 20)
    for _ in range(n):
        q.put(item)


def mib_items(n):
    q = mp.Queue()
    t0 = time.perf_counter()
    p = mp.Process(target=put_mib, args=(q, n))
    p.start()
    for _ in range(n):
        q.get()
    dt = time.perf_counter() - t0
    p.join()
    return n * (1 << 20) / 1e6 / dt


def echo_queue(a, b, n):
    for _ in range(n):
        b.put(a.get())


def queue_pingpong(n):
    a, b = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo_queue, args=(a, b, n))
    p.start()
    t0 = time.perf_counter()
    for i in range(n):
        a.put(i)
        b.get()
    dt = time.perf_counter() - t0
    p.join()
    return n / dt


if __name__ == '__main__':
    mp.set_start_method('fork')
    print(f"pipe_pingpong_8b\tops/s\t{pingpong(20000):.1f}", flush=True)
    print(f"queue_1p1c_int\titems/s\t{queue_ints(1, 1, 200000):.1f}", flush=True)
    print(f"queue_4p4c_int\titems/s\t{queue_ints(4, 4, 200000):.1f}", flush=True)
    print(f"queue_1mib_items\tMB/s\t{mib_items(500):.1f}", flush=True)
    print(f"queue_pingpong_int\tround trips/s\t{queue_pingpong(5000):.1f}", flush=True)
