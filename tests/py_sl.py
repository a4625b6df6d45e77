#!/usr/bin/env python3
"""Python's own ShareableList against ours (test_shared: test_sl_python).

usage: py_sl.py MODE NAME
  read-c      attach to the list C made (C_ITEMS), check every item, write PY_WRITES
  create      make a list of PY_ITEMS named NAME and leave it (C attaches)
  verify      attach, expect C_WRITES applied to PY_ITEMS, unlink it
Exit 0 when everything matched; prints what differed otherwise.
"""
import sys
from multiprocessing import resource_tracker, shared_memory

BIG = b'\x01' * 9999991          # the largest str/bytes item Python's layout allows
C_ITEMS = [42, -2**63, 2**63 - 1, 1.5, True, False, None, '', 'h\u00e9llo \U0001f600',
           'x' * 8, b'', b'\x00\xff', b'y' * 9, b'z' * 1000]
PY_WRITES = {0: 'py', 1: 2.25, 3: None, 4: 7, 7: b'1234567', 8: False, 13: 'w' * 1000}
PY_ITEMS = [1, 2.5, True, None, 'str', b'bytes', 'x' * 15, b'\x00' * 3 + b'a', -7, BIG]
C_WRITES = {0: 'c!', 1: None, 2: 3, 3: 0.5, 4: b'c-bytes', 5: True, 6: 'y' * 16, 8: 'from C'}


def attach(name):
    sl = shared_memory.ShareableList(name=name)
    # Python 3.11 registers an attached segment and would unlink it at exit: not ours.
    resource_tracker.unregister(sl.shm._name, 'shared_memory')
    return sl


def expect(got, want):
    if got != want or [type(x) for x in got] != [type(x) for x in want]:
        print('mismatch:\n got  %r\n want %r' % (got[:12], want[:12]), flush=True)
        sys.exit(1)


def main():
    mode, name = sys.argv[1], sys.argv[2]
    if mode == 'read-c':
        sl = attach(name)
        expect(list(sl), C_ITEMS)
        for i, v in PY_WRITES.items():
            sl[i] = v
        try:
            sl[10] = 'too long!'  # an empty item's slot holds 8 bytes
            print('no error for a too-long item', flush=True)
            sys.exit(1)
        except ValueError:
            pass
        sl.shm.close()
    elif mode == 'create':
        sl = shared_memory.ShareableList(PY_ITEMS, name=name)
        resource_tracker.unregister(sl.shm._name, 'shared_memory')
        sl.shm.close()
    elif mode == 'verify':
        sl = attach(name)
        want = list(PY_ITEMS)
        for i, v in C_WRITES.items():
            want[i] = v
        expect(list(sl), want)
        sl.shm.close()
        sl.shm.unlink()
    print('ok', flush=True)


if __name__ == '__main__':
    main()
