#!/usr/bin/env python3
"""Python's side of bench_pickle: pickle.dumps + loads of the same 100 mixed items, and
the same Python client against a Python server (Listener, recv + send) in another process.
Prints: case<TAB>unit<TAB>python_rate."""
import multiprocessing
import os
import pickle
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conn_objects_client import client_rate  # noqa: E402

SECONDS = 0.3  # per round; the best of 3 rounds counts, as in bench_pickle.c

MIXED = []
for i in range(10):
    MIXED += [i, i * 100000, i * 1.5, 'name', 'short text' if i % 2 else 'a little longer text',
              None, bool(i % 2), (i, i + 1), {'id': i, 'score': i * 0.5}, b'\x01\x02\x03']


def best_rate(one):
    for _ in range(1000):
        one()
    best = 0
    for _ in range(3):
        n = 0
        t0 = time.monotonic()
        while True:
            for _ in range(100):
                one()
            n += 100
            t = time.monotonic()
            if t - t0 >= SECONDS:
                break
        best = max(best, n / (t - t0))
    return best


def roundtrip(dumps=pickle.dumps, loads=pickle.loads, obj=MIXED):
    loads(dumps(obj, 4))


def server(address_queue):
    from multiprocessing.connection import Listener
    with Listener(family='AF_UNIX') as listener:
        address_queue.put(listener.address)
        with listener.accept() as conn:
            try:
                while True:
                    conn.send(conn.recv())
            except EOFError:
                pass


def main():
    print('pickle_roundtrip\tops/s\t%.1f' % best_rate(roundtrip), flush=True)
    q = multiprocessing.Queue()
    p = multiprocessing.Process(target=server, args=(q,))
    p.start()
    rate = client_rate(q.get(), SECONDS)
    p.join()
    print('py_conn_objects\tround trips/s\t%.1f' % rate, flush=True)


if __name__ == '__main__':
    main()
