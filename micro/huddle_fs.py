# Tree operations for syncs and cleanups (loaded with them, dropped afterwards).
#
# MicroPython has no `os.path` and no `shutil`: these are the few the store and the staging
# need, on plain "/"-joined strings, the same on boards, the unix port and CPython.
import os


def parent(path):
    i = path.rfind("/")
    return path[:i] if i > 0 else ("/" if i == 0 else "")


def size_of(path):
    # -1 when absent
    try:
        return os.stat(path)[6]
    except OSError:
        return -1


def isdir(path):
    try:
        return os.stat(path)[0] & 0x4000 != 0  # S_IFDIR
    except OSError:  # absent
        return False


def makedirs(path):
    if path and not isdir(path):
        makedirs(parent(path))
        os.mkdir(path)


def remove(path):
    # a file or a whole tree; absent is fine
    if isdir(path):
        for name in os.listdir(path):
            remove(path + "/" + name)
        os.rmdir(path)
    elif size_of(path) >= 0:
        os.remove(path)


def hexlify(digest):
    import binascii
    return binascii.hexlify(digest).decode()
