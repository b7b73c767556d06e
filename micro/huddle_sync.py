"""One sync cycle: manifest -> staged version -> pointer switch.

The new version is assembled whole in `DIR/.stage/` beside the running one: a file whose
SHA-256 matches the running version's file at the same path is copied locally, every other
one is streamed from `blobs/<sha256>` in chunks through the one shared buffer straight into
its file, its size and SHA-256 checked as the bytes arrive. Free space is checked before the
first byte. Only when every file is in place is `.stage` renamed to `v-<commit>` and the
pointer replaced; any failure before that leaves the running version untouched and raises
SyncError with the reason (the staging leftovers go at the next cleanup).
"""
import hashlib
from huddle_os import join, parent, makedirs, remove, exists, size_of, free_bytes, \
    fsync, hexlify, log
from huddle_store import STAGE, version_name

MANIFEST_TMP = ".manifest.tmp"
SPARE = 4096  # bytes of headroom kept free on flash (directory entries, the pointer)


class SyncError(Exception):
    pass


def base_url(url):
    return url[:url.rfind("/") + 1]


def _hash_file(path, buf, out=None):
    """SHA-256 hex of a file, optionally copying it to the open file `out` on the way."""
    h = hashlib.sha256()
    mv = memoryview(buf)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf)
            if not n:
                break
            h.update(mv[:n])
            if out is not None:
                out.write(mv[:n])
    return hexlify(h.digest())


async def _download(url, dest, size, sha, buf, timeout_s, heap):
    from huddle_http import get
    resp = await get(url, timeout_s)
    try:
        if resp.status != 200:
            raise SyncError("HTTP %d for %s" % (resp.status, url))
        if resp.length is not None and resp.length != size:
            raise SyncError("%s: server sends %d bytes, manifest says %d"
                            % (url, resp.length, size))
        resp.set_deadline(size)
        h = hashlib.sha256()
        got = 0
        with open(dest, "wb") as f:
            while True:
                chunk = await resp.readinto(buf)
                n = len(chunk)
                if not n:
                    break
                got += n
                if got > size:
                    raise SyncError("%s: more than the %d bytes announced" % (url, size))
                h.update(chunk)
                f.write(chunk)
                heap()
            fsync(f)
        if got != size:
            raise SyncError("%s: truncated at %d of %d bytes" % (url, got, size))
        if hexlify(h.digest()) != sha:
            raise SyncError("%s: SHA-256 mismatch" % url)
    finally:
        await resp.close()


async def sync(cfg, store, buf, now_s, heap=lambda: None):
    """Runs one cycle. Returns ("current" | "bad" | "installed", commit, branch).
    Raises SyncError (or OSError/ValueError) with the old version still active."""
    from huddle_manifest import fetch, entries, ManifestError
    root = cfg["dir"]
    known = [c for c in [store.commit] + store.state["bad"] if c]
    tmp = join(root, MANIFEST_TMP)
    try:
        commit, branch, count, total = await fetch(cfg["manifest"], cfg["timeout"],
                                                   cfg["key"], known, tmp)
    except ManifestError as e:
        raise SyncError("manifest: " + str(e))
    heap()
    if count < 0:
        remove(tmp)
        return ("current" if commit == store.commit else "bad"), commit, None
    if free_bytes(root) < total + SPARE:
        raise SyncError("not enough space: %d bytes needed, %d free"
                        % (total + SPARE, free_bytes(root)))
    stage = join(root, STAGE)
    remove(stage)
    makedirs(stage)
    running = store.active_dir()
    blobs = base_url(cfg["manifest"]) + "blobs/"
    fetched = copied = 0
    for sha, size, rel in entries(tmp):
        dest = join(stage, rel)
        if exists(dest):
            raise SyncError("manifest lists %s twice" % rel)
        makedirs(parent(dest))
        old = join(running, rel) if running else None
        if old and size_of(old) == size:
            with open(dest, "wb") as out:
                same = _hash_file(old, buf, out) == sha
            if same:
                copied += 1
                continue
        await _download(blobs + sha, dest, size, sha, buf, cfg["timeout"], heap)
        fetched += 1
    remove(tmp)
    name = version_name(commit)
    target = join(root, name)
    if name == store.active:
        raise SyncError("version directory %s is already active" % name)
    remove(target)
    import os
    os.rename(stage, target)
    store.switch(commit, name, now_s, branch)
    log("installed %s (%s): %d files downloaded, %d copied" % (commit, branch, fetched, copied))
    return "installed", commit, branch
