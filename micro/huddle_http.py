# A streaming HTTP/1.0 GET over asyncio streams: manifests, blobs and health checks.
#
# No urequests (absent on many boards, and it reads whole bodies). Every network step runs
# under `asyncio.wait_for` with the config's timeout, and a whole transfer also has a deadline
# derived from its size (a floor rate of MIN_RATE bytes per second), so a slow-loris server
# costs a bounded time. Lines are read with a hard length limit; bodies are left to the caller
# (huddle_sync reads them into the agent's one reused buffer). HTTP/1.0 keeps servers from
# answering chunked.
import asyncio
from huddle_os import ticks_ms, ticks_add, ticks_diff

try:
    from micropython import const
except ImportError:  # CPython
    from huddle_cpy import const

MAX_LINE = const(1024)
MAX_MANIFEST = const(262144)  # bytes; a longer manifest is cut off
MIN_RATE = const(256)  # bytes/s: slower than this over a whole transfer is a failure


class Response:
    # an open response: `status`, `length` (None if unknown), `readline`, `step`, `close`;
    # `r` the reader, `pending` what was read beyond the last line
    pending = b""
    status = 0
    length = end = None

    def __init__(self, r, w, timeout_s):
        self.r = r
        self.w = w
        self.t = timeout_s

    def due(self, nbytes=None):
        # with nbytes: the whole transfer's deadline starts now; without: checks it
        if nbytes is not None:
            self.end = ticks_add(ticks_ms(), int((self.t + nbytes / MIN_RATE) * 1000))
        elif self.end is not None and ticks_diff(self.end, ticks_ms()) < 0:
            raise OSError("transfer too slow (below %d B/s)" % MIN_RATE)

    async def step(self, aw):
        # one network step, bounded by the timeout
        try:
            return await asyncio.wait_for(aw, self.t)
        except asyncio.TimeoutError:
            raise OSError("no data for %ss" % self.t)

    async def readline(self):
        # one line without its "\n" (a "\r" stays); None at the end; OSError beyond MAX_LINE
        # bytes or when the stream ends inside a line
        while True:
            p = self.pending
            i = p.find(b"\n")
            if i > MAX_LINE or (i < 0 and len(p) > MAX_LINE):
                raise OSError("line longer than %d bytes" % MAX_LINE)
            if i >= 0:
                self.pending = p[i + 1:]
                return p[:i]
            self.due()
            data = await self.step(self.r.read(256))
            if not data:
                if p:
                    raise OSError("truncated: the last line has no newline")
                return None
            self.pending = p + data

    async def close(self):
        try:
            self.w.close()
            await asyncio.wait_for(self.w.wait_closed(), self.t)
        except Exception:  # closing is best effort: the socket may be dead already
            pass


async def get(url, timeout_s):
    # opens a GET, reads the status line and headers; the body is left to the caller
    https = url.startswith("https://")
    rest = url[8 if https else 7:]
    i = rest.find("/")
    host, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    port = 443 if https else 80
    i = host.rfind(":")
    if i >= 0:
        host, port = host[:i], int(host[i + 1:])
    ctx = None
    if https:
        import ssl
        if hasattr(ssl, "create_default_context"):  # CPython: verify certificates
            ctx = ssl.create_default_context()
        else:  # MicroPython: encrypt; integrity comes from the manifest key and SHA-256s
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_NONE
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(host, port, ssl=ctx), timeout_s)
    except asyncio.TimeoutError:
        raise OSError("connect to %s:%d timed out" % (host, port))
    resp = Response(r, w, timeout_s)
    try:
        w.write(b"GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: huddle-micro\r\n"
                b"Connection: close\r\n\r\n" % (path.encode(), host.encode()))
        await resp.step(w.drain())
        line = await resp.readline() or b""
        if line[:5] != b"HTTP/" or line[8:9] != b" ":
            raise OSError("not an HTTP response from %s:%d" % (host, port))
        resp.status = int(line[9:12])
        for _ in range(48):
            line = await resp.readline()
            if line is None:
                raise OSError("connection closed inside the headers")
            line = line.rstrip(b"\r")
            if not line:
                return resp
            i = line.find(b":")
            if line[:i].strip().lower() == b"content-length":
                resp.length = int(line[i + 1:])
        raise OSError("too many header lines")
    except BaseException:
        await resp.close()
        raise
