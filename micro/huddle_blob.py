# One blob downloaded into its file, checked as it arrives (part of the sync stack).
#
# The body is read through the agent's one 512-byte buffer (a memoryview: no allocation per
# chunk on MicroPython, whose streams have `readinto`) straight into the file, hashed on the
# way. A size other than the manifest's, a truncated body, a wrong SHA-256, an HTTP error and
# a transfer slower than huddle_http.MIN_RATE over its length are all errors.
import hashlib
from huddle_http import get
from huddle_fs import hexlify


async def fetch(a, url, dest, size, sha):
    resp = await get(url, a.cfg["timeout"])
    try:
        if resp.status != 200:
            raise OSError("HTTP %d for %s" % (resp.status, url))
        if resp.length is not None and resp.length != size:
            raise OSError("%s: server sends %d bytes, manifest says %d"
                          % (url, resp.length, size))
        resp.due(size)
        h = hashlib.sha256()
        mv = memoryview(a.buf)
        got = 0
        r = resp.r
        with open(dest, "wb") as f:
            while True:
                n = len(resp.pending)
                if n:  # what came in with the headers
                    n = min(n, len(mv))
                    mv[:n] = resp.pending[:n]
                    resp.pending = resp.pending[n:]
                elif hasattr(r, "readinto"):  # MicroPython: no allocation per chunk
                    resp.due()
                    n = await resp.step(r.readinto(mv)) or 0
                else:
                    resp.due()
                    data = await resp.step(r.read(len(mv)))
                    n = len(data)
                    mv[:n] = data
                if not n:
                    break
                got += n
                if got > size:
                    raise OSError("%s: more than the %d bytes announced" % (url, size))
                h.update(mv[:n])
                f.write(mv[:n])
                a.heap()
        if got != size:
            raise OSError("%s: truncated at %d of %d bytes" % (url, got, size))
        if hexlify(h.digest()) != sha:
            raise OSError("%s: SHA-256 mismatch" % url)
    finally:
        await resp.close()
