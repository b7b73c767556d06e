# The operating-system layer: clock, log, the atomic JSON files and the few tree operations.
#
# MicroPython has no `os.path`, no `shutil` and no `time.monotonic`, and CPython has no
# `time.ticks_ms`; the agent goes through these helpers so it reads the same on both. Paths are
# strings joined with "/". `write_json` is the one way anything that matters is written: a
# temporary file beside the target, flushed (and fsynced where the port can), then renamed over
# it, so a power cut leaves the old or the new file. Modules are prefixed `huddle_` so an app's
# own `config.py` or `http.py` can never shadow the agent's.
import json
import os
import sys

# the clock, for the other modules (imported from here, so they read the same on both)
try:
    from time import ticks_add, ticks_diff, ticks_ms  # noqa: F401
except ImportError:  # CPython
    from huddle_cpy import ticks_add, ticks_diff, ticks_ms  # noqa: F401


# the agent's own directory (`call` imports from it): main.py puts it first on the path, and
# this module is imported at boot, before the app's directory becomes the working one ("" on a
# board: the root)
HOME = sys.path[0] or os.getcwd()


def call(module, function, *args):
    # `function(*args)` of the agent module `module`, imported for this call and forgotten at
    # once: its code lives only as long as something refers to it (a coroutine it returned,
    # until that ends). For what runs once at boot (huddle_config, huddle_start: main.py),
    # rarely (huddle_store) or only during a sync (huddle_sync, huddle_hmac, huddle_stage), so
    # that it is not resident beside the app the rest of the time. The agent's directory is
    # searched first and the app's ("" while it runs) never: it may hold a file of that name;
    # the rest of the path stays for what the module imports
    path = sys.path[:]
    sys.path[:] = [HOME] + [p for p in path if p]
    try:
        f = getattr(__import__(module), function)
    finally:
        sys.path[:] = path
        sys.modules.pop(module, None)
    return f(*args)


def log(msg):
    print("huddle: " + msg)


def join(a, b):
    return a + b if a.endswith("/") else a + "/" + b


def stat(path):
    # os.stat's tuple (mode at 0, size at 6), or None when absent
    try:
        return os.stat(path)
    except OSError:
        return None


def isdir(path):
    s = stat(path)
    return s is not None and s[0] & 0x4000 != 0  # S_IFDIR


def makedirs(path):
    if path and not isdir(path):
        makedirs(path[: path.rfind("/")] if "/" in path else "")
        os.mkdir(path)


def remove(path):
    # a file or a whole tree; absent is fine
    if isdir(path):
        for name in os.listdir(path):
            remove(path + "/" + name)
        os.rmdir(path)
    elif stat(path):
        os.remove(path)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
        f.flush()
        if hasattr(os, "fsync"):  # CPython; MicroPython's VFS commits on close
            os.fsync(f.fileno())
    os.rename(tmp, path)
    if hasattr(os, "O_RDONLY"):  # CPython: make the rename durable
        fd = os.open(path[: path.rfind("/")] or "/", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
