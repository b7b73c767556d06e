"""The micro agent's operating-system layer: paths, files, clock and log.

MicroPython has no `os.path`, no `shutil` and no `time.monotonic`, and CPython has no
`time.ticks_ms`; every other module goes through these few helpers so it reads the same on
both. Paths are plain strings joined with "/" (the only separator on boards and on the unix
port). `write_atomic` is the one way anything that matters is written: a temporary file beside
the target, flushed (and fsynced where the port can), then renamed over it, so a power cut
leaves either the old or the new file. Modules are prefixed `huddle_` so an app's own
`config.py` or `http.py` can never shadow the agent's (or the other way round).
"""
import os
import time

DIR_BIT = 0x4000  # S_IFDIR in st_mode
TMP_SUFFIX = ".tmp"


def join(a, b):
    if not a:
        return b
    return a + b if a.endswith("/") else a + "/" + b


def parent(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else ("/" if i == 0 else "")


def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:  # absent (or unreadable: treated alike)
        return False


def isdir(path):
    try:
        return os.stat(path)[0] & DIR_BIT != 0
    except OSError:  # absent
        return False


def size_of(path):
    try:
        return os.stat(path)[6]
    except OSError:  # absent
        return -1


def makedirs(path):
    if not path or isdir(path):
        return
    makedirs(parent(path))
    os.mkdir(path)


def remove(path):
    """Deletes a file or a whole tree; absent is fine."""
    if isdir(path):
        for name in os.listdir(path):
            remove(join(path, name))
        os.rmdir(path)
    elif exists(path):
        os.remove(path)


def fsync(f):
    f.flush()
    if hasattr(os, "fsync"):  # CPython; MicroPython's VFS commits on close
        os.fsync(f.fileno())


def write_atomic(path, data):
    tmp = path + TMP_SUFFIX
    with open(tmp, "wb") as f:
        f.write(data)
        fsync(f)
    os.rename(tmp, path)
    if hasattr(os, "fsync") and hasattr(os, "O_RDONLY"):  # CPython: make the rename durable
        fd = os.open(parent(path) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_json(path):
    """The parsed file, or None when it is absent or torn (callers treat both as 'no data')."""
    import json
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # absent, or not JSON: same as absent
        return None


def write_json(path, obj):
    import json
    write_atomic(path, json.dumps(obj).encode())


def free_bytes(path):
    st = os.statvfs(path)
    return st[1] * st[4]  # f_frsize * f_bavail


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


def log(msg):
    print("huddle: " + msg)


def hexlify(digest):
    import binascii
    return binascii.hexlify(digest).decode()
