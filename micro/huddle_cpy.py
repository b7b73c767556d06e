# CPython stand-ins for what MicroPython has built in (`const`, `time.ticks_*`), and CPython's
# TLS "not yet" errors (huddle_http). Only CPython imports this module: on a board these
# functions would be compiled, and kept, for nothing.
import time

try:
    from ssl import SSLWantReadError, SSLWantWriteError

    SSL_WANT = (SSLWantReadError, SSLWantWriteError)
except ImportError:  # MicroPython, where nothing imports this module (it stays importable)
    SSL_WANT = ()


def const(x):
    return x


def ticks_ms():
    return int(time.monotonic() * 1000)


def ticks_diff(a, b):
    return a - b


def ticks_add(a, b):
    return a + b
