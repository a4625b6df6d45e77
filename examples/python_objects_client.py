#!/usr/bin/env python3
"""The Python side of python_objects_server.c: plain multiprocessing.connection code.

usage: python_objects_client.py ADDRESS AUTHKEY
"""
import sys
from multiprocessing.connection import Client

with Client(sys.argv[1], authkey=sys.argv[2].encode()) as conn:
    for obj in [{'apples': 3, 'pears': 2.5}, [1, 'two', (3.0, None), b'\x04'],
                'hello from Python', None]:
        conn.send(obj)
        print('Python client sent %r, got back %r' % (obj, conn.recv()), flush=True)
