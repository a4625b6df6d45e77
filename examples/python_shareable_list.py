#!/usr/bin/env python3
"""The Python consumer of python_shareable_list.c: attach to the C-made ShareableList.

usage: python_shareable_list.py NAME
"""
import sys
from multiprocessing import resource_tracker
from multiprocessing.shared_memory import ShareableList

sl = ShareableList(name=sys.argv[1])
# Python 3.11 registers segments it merely attaches to; the C producer owns this one.
resource_tracker.unregister(sl.shm._name, 'shared_memory')
print('Python consumer reads', list(sl), flush=True)
name, count = sl[0], sl[1]
readings = [sl[2 + i] for i in range(count)]
sl[-1] = 'mean %.2f' % (sum(readings) / count)
sl.shm.close()
