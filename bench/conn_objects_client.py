#!/usr/bin/env python3
"""The client of the py_conn_objects benchmark (bench_pickle.c and py_pickle.py): send a
small dict over multiprocessing.connection, wait for it back; print the best rate of 3
rounds of SECONDS each (round trips per second), then close.

usage: conn_objects_client.py ADDRESS SECONDS
"""
import sys
import time
from multiprocessing.connection import Client

MSG = {'id': 7, 'name': 'item', 'values': [1.5, 2.5, 3.5], 'ok': True}


def client_rate(address, seconds):
    best = 0
    with Client(address) as conn:
        for _ in range(3):
            n = 0
            t0 = time.monotonic()
            while True:
                conn.send(MSG)
                conn.recv()
                n += 1
                t = time.monotonic()
                if t - t0 >= seconds:
                    break
            best = max(best, n / (t - t0))
    return best


if __name__ == '__main__':
    print('%.1f' % client_rate(sys.argv[1], float(sys.argv[2])), flush=True)
