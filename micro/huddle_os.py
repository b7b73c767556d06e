# The resident operating-system layer: clock, log and the atomic JSON files.
#
# MicroPython has no `os.path` and no `time.monotonic`, and CPython has no `time.ticks_ms`; the
# agent goes through these few helpers so it reads the same on both. Paths are strings joined
# with "/". `write_json` is the one way anything that matters is written: a temporary file beside
# the target, flushed (and fsynced where the port can), then renamed over it, so a power cut
# leaves the old or the new file. `call` runs a function of a transient module (the sync stack,
# the store): compiled for the moment, then forgotten so its RAM goes back. Only what the steady
# loop needs lives here; tree operations are in huddle_fs (transient too). Modules are prefixed
# `huddle_` so an app's own `config.py` or `http.py` can never shadow the agent's.
import os
import sys
import time


def join(a, b):
    return a + b if a.endswith("/") else a + "/" + b


def log(msg):
    print("huddle: " + msg)


def call(name, fn, *args):
    # `fn` of module `name`, compiled now; afterwards every huddle_ module it pulled in is
    # forgotten (an async fn keeps them alive only until its coroutine finishes)
    import gc
    gc.collect()
    had = list(sys.modules)
    try:
        return getattr(__import__(name), fn)(*args)
    finally:
        for k in list(sys.modules):
            if k not in had and k[:7] == "huddle_":
                del sys.modules[k]


def read_json(path):
    # the parsed file, or None when it is absent or torn (callers treat both as "no data")
    import json
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # absent, or not JSON: same as absent
        return None


def write_json(path, obj):
    import json
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        if hasattr(os, "fsync"):  # CPython; MicroPython's VFS commits on close
            os.fsync(f.fileno())
    os.rename(tmp, path)
    if hasattr(os, "O_RDONLY"):  # CPython: make the rename durable
        fd = os.open(path[:path.rfind("/")] or "/", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


if hasattr(time, "ticks_ms"):
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
else:
    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b
