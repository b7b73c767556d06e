# Staging a new version in `DIR/.stage/` (sync stack: loaded per update, dropped afterwards).
#
# The version is assembled whole beside the running one: a file whose SHA-256 matches the running
# version's file at the same path is copied locally, every other one is streamed from
# `blobs/<sha256>` by huddle_blob through the agent's one 512-byte buffer straight into its file,
# its size and SHA-256 checked as the bytes arrive. Free space is checked before the first byte.
# Any failure raises with the reason and leaves the running version untouched (the staging
# leftovers go at the next cleanup); huddle_switch then renames `.stage` and switches.
import hashlib
import os
from huddle_fs import parent, makedirs, remove, size_of, hexlify
from huddle_os import join
from huddle_blob import fetch

SPARE = 4096  # bytes of headroom kept free on flash (directory entries, the pointer)


def _hash_file(path, buf, out):
    # SHA-256 hex of a file, copied to the open file `out` on the way
    h = hashlib.sha256()
    mv = memoryview(buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                return hexlify(h.digest())
            h.update(mv[:n])
            out.write(mv[:n])


async def stage(a, tmp, total):
    # fills DIR/.stage from the checked manifest copy `tmp`; -> (downloaded, copied)
    root = a.root
    st = os.statvfs(root)
    free = st[1] * st[4]  # f_frsize * f_bavail
    if free < total + SPARE:
        raise OSError("not enough space: %d bytes needed, %d free" % (total + SPARE, free))
    stage = join(root, ".stage")
    remove(stage)
    makedirs(stage)
    running = join(root, a.active) if a.active else None
    url = a.cfg["manifest"]
    blobs = url[:url.rfind("/") + 1] + "blobs/"
    fetched = copied = 0
    with open(tmp, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                break
            if not line.startswith(b"file "):
                continue
            _, sha, size, rel = line[:-1].decode().split(" ", 3)
            size = int(size)
            dest = join(stage, rel)
            if size_of(dest) >= 0:
                raise OSError("manifest lists %s twice" % rel)
            makedirs(parent(dest))
            old = join(running, rel) if running else None
            if old and size_of(old) == size:
                with open(dest, "wb") as out:
                    same = _hash_file(old, a.buf, out) == sha
                if same:
                    copied += 1
                    continue
            await fetch(a, blobs + sha, dest, size, sha)
            fetched += 1
    remove(tmp)
    return fetched, copied
