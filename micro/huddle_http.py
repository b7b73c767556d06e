# A streaming HTTP/1.0 GET on a non-blocking socket: manifests, blobs and health checks.
#
# No urequests (absent on many boards, and it reads whole bodies) and no asyncio streams or
# `wait_for`: those cost about 2.6 KB of heap for good once used, plus a task and a stream per
# request, on a board whose whole budget is 48 KB. `step` calls a non-blocking socket method
# until it does something, sleeping 20 ms between tries (a bounded poll, not an idle loop: it
# only runs while a request waits for bytes), and fails after the config's timeout without
# progress; a whole transfer also has a deadline derived from its size (a floor rate of
# MIN_RATE bytes per second), so a slow-loris server costs a bounded time. The same code runs
# on CPython. HTTPS connects and shakes hands blocking, bounded by the timeout, then goes
# non-blocking. Lines are read with a hard length limit; bodies are left to the caller
# (huddle_stage reads them into the one buffer, `chunk`). HTTP/1.0 keeps servers from answering
# chunked. The MQTT client (huddle_mqtt) runs on `Response` too.
import socket
from asyncio import sleep
from errno import EAGAIN, ECONNABORTED, ECONNRESET, EINPROGRESS, ETIMEDOUT

from huddle_os import ticks_add, ticks_diff, ticks_ms

try:
    from micropython import const

    _WANT = ()  # MicroPython's TLS sockets say "not yet" with EAGAIN
except ImportError:  # CPython: its TLS sockets raise these instead
    from huddle_cpy import SSL_WANT as _WANT
    from huddle_cpy import const

MAX_LINE = const(1024)
MAX_MANIFEST = const(262144)  # bytes; a longer manifest is cut off
MIN_RATE = const(256)  # bytes/s: slower than this over a whole transfer is a failure
# bytes read per `more`: each read makes a new `pending` (what was left + the read) and each
# line leaves a remainder, so this bounds the blocks that lines and headers take; at 256 a
# full heap (a 34K one updating beside the app) had no hole for them, 64 makes them small
READ = const(64)
# the one buffer's size: 1 KB held 512 B more for the whole run, and a 30 KB heap updating beside
# the app had no room for it; downloads and copies then take twice as many reads
CHUNK = const(512)

# the one chunk buffer of every read (`more`), download and copy (huddle_stage): no object per
# read. `chunk` allocates it when it is first needed (after the boot's compiles, which need the
# room) and again after `release` has lent its block to the app's compile (huddle_app.launch)
_buf = None


def chunk():
    global _buf
    if _buf is None:
        _buf = bytearray(CHUNK)
    return _buf


def release():
    global _buf
    _buf = None


class Response:
    # an open connection (an HTTP response, or the MQTT client's connection): `status`, `length`
    # (None if unknown), `readline`, `read`, `more`, `send`, `step`, `close`; `sock` the socket,
    # `recv_into` and `send_some` its non-blocking read and write (a TLS socket on MicroPython
    # has only the stream methods), `pending` what was read and not yet taken
    pending = b""
    status = 0
    length = end = None

    def __init__(self, host, port, timeout_s, ctx=None, until=None):
        # until: ticks_ms after which nothing more is read or sent (a whole sync's deadline)
        self.until = until
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        s = self.sock = socket.socket(ai[0], ai[1], ai[2])
        self.timeout_s = timeout_s
        try:
            if ctx:
                s.settimeout(timeout_s)
                s.connect(ai[-1])
                try:
                    s = self.sock = ctx.wrap_socket(s, server_hostname=host)
                except ValueError as e:  # MicroPython's way of rejecting a certificate
                    # (on one line: mbedtls's messages hold line breaks)
                    raise OSError(ECONNABORTED, "TLS handshake failed: " + " ".join(str(e).split()))
            s.setblocking(False)
            if not ctx:
                try:
                    s.connect(ai[-1])
                except OSError as e:
                    if e.errno != EINPROGRESS:
                        raise
        except BaseException:
            s.close()
            raise
        # (None from either means "not yet")
        self.recv_into = getattr(s, "recv_into", None) or s.readinto
        self.send_some = getattr(s, "send", None) or s.write

    def due(self, nbytes=None):
        # with nbytes: the whole transfer's deadline starts now (never past `until`);
        # without: checks it
        if nbytes is not None:
            self.end = ticks_add(ticks_ms(), int((self.timeout_s + nbytes / MIN_RATE) * 1000))
            if self.until is not None and ticks_diff(self.until, self.end) < 0:
                self.end = self.until
        elif self.end is not None and ticks_diff(self.end, ticks_ms()) < 0:
            raise OSError(
                ETIMEDOUT,
                "past the sync deadline"
                if self.end == self.until
                else "too slow (below %d B/s)" % MIN_RATE,
            )

    async def step(self, f, x, wait=True):
        # f(x) on the non-blocking socket, retried until it does something (its result), for
        # at most the timeout; a send while the connect is still going on waits for it too.
        # Not `wait`: one try, None when there is nothing yet
        t0 = ticks_ms()
        while True:
            try:
                n = f(x)
            except OSError as e:
                if e.errno not in (EAGAIN, EINPROGRESS) and not isinstance(e, _WANT):
                    raise
                n = None
            if n is not None or not wait:
                return n
            if ticks_diff(ticks_ms(), t0) > self.timeout_s * 1000:
                raise OSError(ETIMEDOUT, "no data for %ss" % self.timeout_s)
            await sleep(0.02)

    async def readline(self):
        # one line without its "\n" (a "\r" stays); None at the end; OSError beyond MAX_LINE
        # bytes or when the stream ends inside a line
        while True:
            p = self.pending
            i = p.find(b"\n")
            if i > MAX_LINE or (i < 0 and len(p) > MAX_LINE):
                raise OSError("line longer than %d bytes" % MAX_LINE)
            if i >= 0:
                self.pending = p[i + 1 :]
                return p[:i]
            if not await self.more():
                if p:
                    raise OSError("truncated inside a line")
                return None

    async def read(self, n):
        # exactly n bytes; the stream ending before them is an OSError
        while len(self.pending) < n:
            if not await self.more():
                raise OSError(ECONNRESET, "connection closed by the peer")
        data = self.pending
        self.pending = data[n:]
        return data[:n]

    async def more(self, wait=True):
        # appends what the socket has (up to READ bytes) to `pending`: its count, 0 at the end
        # of the stream; not `wait`: one try, None when nothing came yet
        if wait:
            self.due()
        mv = memoryview(chunk())
        n = await self.step(self.recv_into, mv[:READ], wait)
        if n:
            self.pending += mv[:n]
        return n

    async def send(self, data):
        # all of data; even b"" waits for the connect (and shows a refused one)
        mv = memoryview(data)
        while True:
            mv = mv[await self.step(self.send_some, mv) :]
            if not mv:
                return

    def close(self):
        try:
            self.sock.close()
        except OSError:  # closing is best effort: the socket may be dead already
            pass


async def get(url, timeout_s, ca=None, until=None):
    # opens a GET, reads the status line and headers; the body is left to the caller. `ca`: the
    # TLS context of the config's `ca` file for https (None: huddle_tls's default); `until`:
    # the ticks_ms deadline of the whole sync this request is part of
    https = url.startswith("https://")
    rest = url[8 if https else 7 :]
    i = rest.find("/")
    host, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    port = 443 if https else 80
    i = host.rfind(":")
    if i >= 0:
        host, port = host[:i], int(host[i + 1 :])
    ctx = None
    if https:
        from huddle_tls import context

        ctx = context(ca)
    resp = Response(host, port, timeout_s, ctx, until)
    try:
        resp.due(0)  # the request and its headers within the timeout, however they trickle
        await resp.send(
            b"GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: huddle-micro\r\n"
            b"Connection: close\r\n\r\n" % (path.encode(), host.encode())
        )
        line = await resp.readline() or b""
        if line[:5] != b"HTTP/" or line[8:9] != b" ":
            raise OSError("not an HTTP response from %s:%d" % (host, port))
        resp.status = int(line[9:12])
        for _ in range(48):
            line = await resp.readline()
            if line is None:
                raise OSError("closed inside the headers")
            line = line.rstrip(b"\r")
            if not line:
                return resp
            i = line.find(b":")
            if line[:i].strip().lower() == b"content-length":
                resp.length = int(line[i + 1 :])
        raise OSError("too many header lines")
    except BaseException:
        resp.close()
        raise
