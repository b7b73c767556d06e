"""A streaming HTTP/1.0 GET over asyncio streams: just enough for manifests, blobs and checks.

No urequests (absent on many boards, and it reads whole bodies). Every network step runs under
`asyncio.wait_for` with the config's timeout, and a whole transfer also has a deadline derived
from its size (a floor rate of MIN_RATE bytes per second), so a slow-loris server costs a
bounded time. Lines are read with a hard length limit; bodies are read in chunks into the
caller's one reused buffer (a memoryview slice is returned: no allocation per chunk on
MicroPython, whose streams have `readinto`). HTTP/1.0 keeps servers from answering chunked.
"""
import asyncio

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

MAX_HEADER_LINES = const(48)
MAX_HEADER_LINE = const(1024)
MIN_RATE = const(256)  # bytes/s: slower than this over a whole transfer is a failure


class HTTPError(OSError):
    pass


def split_url(url):
    """(https, host, port, path) of an http:// or https:// URL."""
    https = url.startswith("https://")
    rest = url[8:] if https else url[7:]
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    host, _, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    return https, host, int(port) if port else (443 if https else 80), path


class Response:
    """An open response: `status`, `length` (None if unknown), `readline`, `readinto`."""

    def __init__(self, reader, writer, timeout_s):
        self.reader = reader
        self.writer = writer
        self.timeout_s = timeout_s
        self.pending = b""
        self.status = 0
        self.length = None
        self.deadline_ms = None

    def set_deadline(self, nbytes):
        from huddle_os import ticks_ms, ticks_add
        self.deadline_ms = ticks_add(ticks_ms(),
                                     int((self.timeout_s + nbytes / MIN_RATE) * 1000))

    def _check_deadline(self):
        if self.deadline_ms is not None:
            from huddle_os import ticks_ms, ticks_diff
            if ticks_diff(self.deadline_ms, ticks_ms()) < 0:
                raise HTTPError("transfer too slow (below %d B/s)" % MIN_RATE)

    async def _read(self, n):
        self._check_deadline()
        try:
            return await asyncio.wait_for(self.reader.read(n), self.timeout_s)
        except asyncio.TimeoutError:
            raise HTTPError("no data for %ss" % self.timeout_s)

    async def readline(self, limit):
        """One line without its "\n" (a "\r" stays); None at the end; HTTPError beyond
        `limit` bytes or when the stream ends inside a line."""
        while True:
            i = self.pending.find(b"\n")
            if i >= 0:
                line, self.pending = self.pending[:i], self.pending[i + 1:]
                if len(line) > limit:
                    raise HTTPError("line longer than %d bytes" % limit)
                return line
            if len(self.pending) > limit:
                raise HTTPError("line longer than %d bytes" % limit)
            data = await self._read(256)
            if not data:
                if self.pending:
                    raise HTTPError("truncated: the last line has no newline")
                return None
            self.pending += data

    async def readinto(self, buf):
        """Reads up to len(buf) bytes into buf; returns the filled memoryview (empty at end)."""
        mv = memoryview(buf)
        if self.pending:
            n = min(len(buf), len(self.pending))
            mv[:n] = self.pending[:n]
            self.pending = self.pending[n:]
            return mv[:n]
        self._check_deadline()
        if hasattr(self.reader, "readinto"):  # MicroPython: no allocation per chunk
            try:
                n = await asyncio.wait_for(self.reader.readinto(mv), self.timeout_s)
            except asyncio.TimeoutError:
                raise HTTPError("no data for %ss" % self.timeout_s)
            return mv[:n or 0]
        data = await self._read(len(buf))
        mv[:len(data)] = data
        return mv[:len(data)]

    async def close(self):
        try:
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), self.timeout_s)
        except Exception:  # closing is best effort: the socket may be dead already
            pass


async def get(url, timeout_s, extra_header=b""):
    """Opens a GET and reads the status line and headers; the body is left to the caller."""
    https, host, port, path = split_url(url)
    ctx = None
    if https:
        import ssl
        if hasattr(ssl, "create_default_context"):  # CPython: verify certificates
            ctx = ssl.create_default_context()
        else:  # MicroPython: encrypt; integrity comes from the manifest key and SHA-256s
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.verify_mode = ssl.CERT_NONE
    try:
        if ctx:
            op = asyncio.open_connection(host, port, ssl=ctx)
        else:
            op = asyncio.open_connection(host, port)
        reader, writer = await asyncio.wait_for(op, timeout_s)
    except asyncio.TimeoutError:
        raise HTTPError("connect to %s:%d timed out" % (host, port))
    resp = Response(reader, writer, timeout_s)
    try:
        writer.write(b"GET " + path.encode() + b" HTTP/1.0\r\nHost: " + host.encode() +
                     b"\r\nUser-Agent: huddle-micro\r\nConnection: close\r\n" + extra_header +
                     b"\r\n")
        await asyncio.wait_for(writer.drain(), timeout_s)
        line = (await resp.readline(MAX_HEADER_LINE) or b"").rstrip(b"\r")
        parts = line.split(b" ", 2) if line else []
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise HTTPError("not an HTTP response from %s:%d" % (host, port))
        resp.status = int(parts[1])
        for _ in range(MAX_HEADER_LINES):
            line = await resp.readline(MAX_HEADER_LINE)
            if line is None:
                raise HTTPError("connection closed inside the headers")
            line = line.rstrip(b"\r")
            if not line:
                return resp
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                resp.length = int(value.strip())
        raise HTTPError("too many header lines")
    except asyncio.TimeoutError:
        await resp.close()
        raise HTTPError("%s:%d timed out" % (host, port))
    except BaseException:
        await resp.close()
        raise
