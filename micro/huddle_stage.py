# Staging a new version in `DIR/.stage/`, beside the running one.
#
# A file whose SHA-256 matches the running version's file at the same path is copied locally,
# every other one is streamed from `blobs/<sha256>` through huddle_http's one 512-byte buffer
# straight into its file, its size and SHA-256 checked as the bytes arrive. Free space is
# checked before the first byte. Any failure raises with the reason and leaves the running
# version untouched (the staging leftovers go at the next cleanup); huddle_store.switch then
# renames `.stage` and switches.
import os
from binascii import hexlify
from hashlib import sha256

from huddle_http import chunk, get
from huddle_os import join, makedirs, remove, stat


async def stage(a, listing, total, until):
    # fills DIR/.stage from the checked manifest copy at path `listing` whose files total
    # `total` bytes, by the ticks_ms deadline `until`; -> (downloaded, copied)
    root = a.root
    st = os.statvfs(root)
    free = st[1] * st[4]  # f_frsize * f_bavail; 4 KB spare for directory entries, pointer
    if free < total + 4096:
        raise OSError("no space: %d B needed, %d free" % (total + 4096, free))
    top = join(root, ".stage")
    remove(top)
    makedirs(top)
    running = join(root, a.active) if a.active else None
    blobs = a.cfg["manifest"]
    blobs = blobs[: blobs.rfind("/") + 1] + "blobs/"
    got = copied = 0
    buf = chunk()
    mv = memoryview(buf)
    with open(listing, "rb") as f:
        while True:
            line = f.readline()
            if not line:
                break
            if line[:5] != b"file ":
                continue
            sha = line[5:69]
            rest = line[70:-1].decode()  # "SIZE PATH"
            i = rest.find(" ")
            size, rel = int(rest[:i]), rest[i + 1 :]
            dest = join(top, rel)
            if stat(dest):
                raise OSError("manifest lists %s twice" % rel)
            makedirs(dest[: dest.rfind("/")])
            old = join(running, rel) if running else None
            s = stat(old) if old else None
            if s and s[6] == size:  # maybe unchanged: copy it, hashing on the way
                h = sha256()
                with open(old, "rb") as src, open(dest, "wb") as out:
                    while True:
                        n = src.readinto(buf)
                        if not n:
                            break
                        h.update(mv[:n])
                        out.write(mv[:n])
                if hexlify(h.digest()) == sha:
                    copied += 1
                    continue
            await fetch(a, blobs + sha.decode(), dest, size, sha, until)
            got += 1
    remove(listing)
    return got, copied


async def fetch(a, url, dest, size, sha, until):
    # one blob into its file through the agent's buffer (a memoryview: no allocation per
    # chunk), checked as it arrives
    resp = await get(url, a.cfg["timeout"], a.cfg["ca"], until)
    try:
        if resp.status != 200:
            raise OSError("HTTP %d for %s" % (resp.status, url))
        if resp.length is not None and resp.length != size:
            raise OSError("%s: size %d, manifest says %d" % (url, resp.length, size))
        resp.due(size)
        h = sha256()
        mv = memoryview(chunk())
        got = 0
        with open(dest, "wb") as f:
            while True:
                n = len(resp.pending)
                if n:  # what came in with the headers
                    n = min(n, len(mv))
                    mv[:n] = resp.pending[:n]
                    resp.pending = resp.pending[n:]
                else:
                    resp.due()
                    n = await resp.step(resp.recv_into, mv)
                if not n:
                    break
                got += n
                if got > size:
                    raise OSError("%s: over the %d bytes" % (url, size))
                h.update(mv[:n])
                f.write(mv[:n])
                a.sample_heap()
        if got != size:
            raise OSError("%s: truncated at %d of %d bytes" % (url, got, size))
        if hexlify(h.digest()) != sha:
            raise OSError("%s: SHA-256 mismatch" % url)
    finally:
        resp.close()
