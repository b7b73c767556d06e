# CPython stand-ins for what MicroPython has built in (`const`, `time.ticks_*`). Only CPython
# imports this module: on a board these functions would be compiled, and kept, for nothing.
import time  # (importable on MicroPython too, where nothing uses it)


def const(x):
    return x


def ticks_ms():
    return int(time.monotonic() * 1000)


def ticks_diff(a, b):
    return a - b


def ticks_add(a, b):
    return a + b
