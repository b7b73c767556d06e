# CPython stand-ins for what MicroPython has built in (`const`, `time.ticks_*`), and CPython's
# TLS "not yet" errors (huddle_http). Only CPython imports this module: on a board these
# functions would be compiled, and kept, for nothing.
import ssl
import time

SSL_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def const(x):
    return x


def ticks_ms():
    return int(time.monotonic() * 1000)


def ticks_diff(a, b):
    return a - b


def ticks_add(a, b):
    return a + b
