"""One health check of one app: an HTTP GET or a raw TCP exchange, bounded by one deadline.

This module owns the check itself; the policy around it (grace, retries, restarts, rollback)
belongs to the app controller. `check` runs inside the agent's single asyncio loop beside
every other app, so it only ever waits on its own socket: no threads, no blocking calls, no
HTTP library. The whole exchange (resolve, connect, send, every read) runs under a single
`asyncio.wait_for` of `cfg.timeout_s`, and a small `_Progress` record says which stage was
running, so a timeout reads "timeout reading status line after 3.0 s". Everything the peer
can do (refuse, reset, trickle, stall, send garbage or gigabytes) ends as a failed
`HealthResult`; only programming errors raise. Reads are capped (16 KiB of headers, 64 KiB
of body or socket reply) and the body is read only when `expect` asks for it. A failed check
aborts its transport (RST: no TIME_WAIT pile-up, nothing half-open); a passed one closes it
gracefully.

Names: an IP literal is used as is; `localhost` and `*.localhost` map to 127.0.0.1 without a
lookup (RFC 6761). Any other name goes through `Resolver`: asyncio's getaddrinfo (which does
borrow one executor thread; there is no portable non-blocking resolver in the stdlib), at most
one lookup in flight per name and loop, answers cached for `ttl_s` (failures for a few
seconds), the cache bounded, and each waiting check bounded by its own deadline. So a fleet
of checks on one name costs one lookup a minute, and a hung resolver costs one thread, not
the loop.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from urllib.parse import quote

from huddle.config import HealthConfig

HEADER_CAP = 16 * 1024  # status line + headers (all interim 1xx blocks included)
BODY_CAP = 64 * 1024  # body bytes searched for `expect`; also the socket reply cap
CHUNK_LINE_CAP = 1024  # one chunk-size line (extensions included)
READ_SIZE = 4096
USER_AGENT = "huddle-health"
# A cached resolver answer: (expiry on the clock, the address or None, why it failed)
_Answer = tuple[float, str | None, str]
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?")
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;.*)?")
_LINGER_ZERO = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST
_PATH_SAFE = "/?&=%:@!$'()*+,;~-._"  # RFC 3986 pchar and query characters kept as they are


@dataclass(frozen=True)
class HealthResult:
    ok: bool
    detail: str  # short, for humans: "HTTP 200 in 3 ms", "connect refused", ...
    elapsed_s: float


class _Failed(Exception):
    """The peer did something that fails the check; the message is the result's detail."""


class _Progress:
    """What the check is doing now, so a timeout can say where it struck."""

    def __init__(self) -> None:
        self.stage = "starting"
        self.writer: asyncio.StreamWriter | None = None


async def check(
    cfg: HealthConfig,
    *,
    open_connection=asyncio.open_connection,
    clock: Callable[[], float] = time.monotonic,
    resolver: Resolver | None = None,
) -> HealthResult:
    """Run one check of `cfg` and say whether it passed; never raises for the peer's doing.

    `open_connection` is the socket seam, `clock` times `elapsed_s` (the deadline itself runs
    on the loop's clock), `resolver` defaults to the process-wide cached one."""
    if cfg.type == "none":
        return HealthResult(True, "no check configured", 0.0)
    if cfg.type not in ("http", "socket"):
        raise ValueError(f"unknown health check type {cfg.type!r}")
    started = clock()
    progress = _Progress()
    ok = False
    try:
        detail = await asyncio.wait_for(
            _run(cfg, progress, open_connection, resolver or default_resolver, clock, started),
            max(cfg.timeout_s, 0.0),
        )
        ok = True
    except asyncio.TimeoutError:  # before OSError: on 3.11+ it is the builtin TimeoutError
        detail = f"timeout {progress.stage} after {_seconds(cfg.timeout_s)} s"
    except _Failed as failure:
        detail = str(failure)
    except ConnectionRefusedError:
        detail = "connect refused"
    except ConnectionResetError:
        detail = f"connection reset {progress.stage}"
    except OSError as error:  # unreachable, broken pipe...: the peer's doing, a failed check
        detail = f"{progress.stage}: {error.strerror or error}"
    finally:
        _release(progress.writer, graceful=ok)
    return HealthResult(ok, detail, max(clock() - started, 0.0))


def _release(writer: asyncio.StreamWriter | None, *, graceful: bool) -> None:
    """Close the connection: FIN after a clean exchange; after anything else a RST (linger 0,
    then abort), so a failing app leaves no TIME_WAIT or half-open sockets behind."""
    if writer is None:
        return
    transport = writer.transport
    if graceful and transport.get_write_buffer_size() == 0:
        transport.close()
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        except OSError:
            pass  # already dead or not TCP: a plain abort is all that is left to do
    transport.abort()


async def _run(cfg, progress, open_connection, resolver, clock, started) -> str:
    progress.stage = f"resolving {cfg.host}"
    address = await resolver.resolve(cfg.host)
    progress.stage = "connecting"
    reader, progress.writer = await open_connection(address, cfg.port)
    if cfg.type == "http":
        return await _http(cfg, progress, reader, progress.writer, clock, started)
    return await _socket(cfg, progress, reader, progress.writer, clock, started)


# -- socket ------------------------------------------------------------------------------


async def _socket(cfg, progress, reader, writer, clock, started) -> str:
    if cfg.send:
        progress.stage = "sending"
        writer.write(cfg.send)
        await writer.drain()
    if not cfg.expect:
        return f"connected in {_millis(clock() - started)} ms"
    progress.stage = f"waiting for {_show(cfg.expect)}"
    reply = bytearray()
    while len(reply) < BODY_CAP:
        data = await reader.read(min(READ_SIZE, BODY_CAP - len(reply)))
        if not data:
            raise _Failed(
                f"connection closed before {_show(cfg.expect)} (got {_show(bytes(reply))})"
            )
        if _grew_to_contain(reply, data, cfg.expect):
            return f"reply matched in {_millis(clock() - started)} ms"
    raise _Failed(f"expected {_show(cfg.expect)} not in first {BODY_CAP // 1024} KiB of reply")


def _grew_to_contain(buffer: bytearray, data: bytes, needle: bytes) -> bool:
    """Append `data` to `buffer`; say whether `needle` now occurs, searching only the seam."""
    start = max(len(buffer) - len(needle) + 1, 0)
    buffer += data
    return buffer.find(needle, start) >= 0


# -- http --------------------------------------------------------------------------------


def request_bytes(cfg: HealthConfig) -> bytes:
    """The GET request a check sends (exposed for tests and the benchmark)."""
    path = cfg.path.split("#", 1)[0] or "/"
    if not path.startswith("/"):
        path = "/" + path
    host = cfg.host.strip("[]")
    host = f"[{host}]" if ":" in host else host
    if cfg.port != 80:
        host = f"{host}:{cfg.port}"
    return (
        f"GET {quote(path, safe=_PATH_SAFE)} HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        f"User-Agent: {USER_AGENT}\r\n"
        "Accept: */*\r\n"
        "Connection: close\r\n\r\n"
    ).encode("ascii", "replace")


async def _http(cfg, progress, reader, writer, clock, started) -> str:
    progress.stage = "sending request"
    writer.write(request_bytes(cfg))
    await writer.drain()
    stream = _Stream(reader)
    status, headers = await _read_head(stream, progress)
    while 100 <= status < 200 and status != 101:  # interim (100 Continue, 103 Early Hints)
        status, headers = await _read_head(stream, progress)
    elapsed = f"in {_millis(clock() - started)} ms"
    if not cfg.accepts(status):
        raise _Failed(f"status {status} not in {_ranges(cfg.status)}")
    if not cfg.expect:
        return f"HTTP {status} {elapsed}"
    progress.stage = "reading body"
    if await _body_contains(stream, headers, status, cfg.expect):
        return f"HTTP {status} with {_show(cfg.expect)} in {_millis(clock() - started)} ms"
    raise _Failed(f"HTTP {status} but expected {_show(cfg.expect)} not in body")


class _Stream:
    """A StreamReader with a look-ahead buffer and a budget of bytes it may still pull."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self.reader = reader
        self.buffer = bytearray()
        self.head_budget = HEADER_CAP

    async def fill(self) -> bool:
        """Read more into the buffer; False at EOF."""
        data = await self.reader.read(READ_SIZE)
        self.buffer += data
        return bool(data)

    async def line(self, what: str, limit: int | None = None) -> bytes:
        """One line without its line ending, counted against HEADER_CAP unless it has a
        `limit` of its own (chunk framing)."""
        budget = self.head_budget if limit is None else limit
        too_long = (
            f"headers exceed {HEADER_CAP // 1024} KiB"
            if limit is None
            else f"{what} line longer than {limit} bytes"
        )
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                break
            if len(self.buffer) >= budget:
                raise _Failed(too_long)
            if not await self.fill():
                raise _Failed(f"connection closed before {what}")
        if end + 1 > budget:
            raise _Failed(too_long)
        if limit is None:
            self.head_budget -= end + 1
        line = bytes(self.buffer[:end])
        del self.buffer[: end + 1]
        return line[:-1] if line.endswith(b"\r") else line


async def _read_head(stream: _Stream, progress: _Progress) -> tuple[int, dict]:
    """Status line and headers of one response; garbage fails as soon as it shows."""
    progress.stage = "reading status line"
    while len(stream.buffer) < 5 and await stream.fill():
        pass
    if not stream.buffer:
        raise _Failed("connection closed before status line")
    head = bytes(stream.buffer[:5])
    if head != b"HTTP/"[: len(head)]:  # not HTTP at all (a TLS or SSH server...): say so now
        raise _Failed(f"garbage status line: {_show(bytes(stream.buffer[:40]))}")
    line = await stream.line("status line")
    match = _STATUS_LINE.fullmatch(line)
    if not match:
        raise _Failed(f"garbage status line: {_show(line[:40])}")
    progress.stage = "reading headers"
    headers: dict[bytes, list[bytes]] = {}
    while True:
        line = await stream.line("end of headers")
        if not line:
            return int(match.group(1)), headers
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise _Failed(f"malformed header line: {_show(line[:40])}")
        headers.setdefault(name.lower(), []).append(value.strip(b" \t"))


async def _body_contains(stream: _Stream, headers: dict, status: int, needle: bytes) -> bool:
    """Read the body (at most BODY_CAP bytes of it) until `needle` shows; say if it did."""
    if status in (204, 304):
        return False
    encodings = b",".join(headers.get(b"transfer-encoding", []))
    codings = [c.strip().lower() for c in encodings.split(b",") if c.strip()]
    if codings and codings[-1] == b"chunked":
        pieces = _chunked(stream)
    elif codings:
        pieces = _until_close(stream)  # RFC 9112 6.3: any other coding reads until close
    elif b"content-length" in headers:
        pieces = _sized(stream, _content_length(headers[b"content-length"]))
    else:
        pieces = _until_close(stream)
    body = bytearray()
    async for data in pieces:
        if _grew_to_contain(body, data[: BODY_CAP - len(body)], needle):
            return True
        if len(body) >= BODY_CAP:
            raise _Failed(f"expected {_show(needle)} not in first {BODY_CAP // 1024} KiB of body")
    return False


def _content_length(values: list) -> int:
    found = {v.strip() for value in values for v in value.split(b",")}
    if len(found) != 1 or not next(iter(found)).isdigit():
        raise _Failed(f"bad Content-Length: {_show(b', '.join(values)[:40])}")
    return int(next(iter(found)))


async def _sized(stream: _Stream, length: int):
    while length > 0:
        if not stream.buffer and not await stream.fill():
            raise _Failed(f"connection closed with {length} body bytes missing")
        data = bytes(stream.buffer[:length])
        del stream.buffer[:length]
        length -= len(data)
        yield data


async def _until_close(stream: _Stream):
    while stream.buffer or await stream.fill():
        data = bytes(stream.buffer)
        stream.buffer.clear()
        yield data


async def _chunked(stream: _Stream):
    while True:
        line = await stream.line("chunk size", CHUNK_LINE_CAP)
        match = _CHUNK_SIZE.fullmatch(line)
        if not match:
            raise _Failed(f"bad chunk size line: {_show(line[:40])}")
        size = int(match.group(1), 16)
        if size == 0:
            return  # trailers, if any, are not worth reading: the check has its answer
        async for data in _sized(stream, size):
            yield data
        if await stream.line("chunk end", CHUNK_LINE_CAP):
            raise _Failed("chunk data longer than its size")


# -- names -------------------------------------------------------------------------------

Lookup = Callable[[str], Awaitable[str]]


class Resolver:
    """Host name -> address without blocking the loop: literals and localhost at once, other
    names through one shared, cached lookup each (see the module header)."""

    def __init__(
        self,
        lookup: Lookup | None = None,
        *,
        ttl_s: float = 60.0,
        failure_ttl_s: float = 5.0,
        max_names: int = 256,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lookup = lookup or _getaddrinfo
        self.ttl_s = ttl_s
        self.failure_ttl_s = failure_ttl_s
        self.max_names = max_names
        self.clock = clock
        self._answers: dict[str, _Answer] = {}  # name: (expiry, ip, why)
        self._pending: dict[str, asyncio.Future[_Answer]] = {}

    async def resolve(self, host: str) -> str:
        name = host.strip().rstrip(".").lower()
        if name == "localhost" or name.endswith(".localhost"):
            return "127.0.0.1"
        try:
            return str(ipaddress.ip_address(name.strip("[]")))
        except ValueError:
            pass  # not a literal: a name to look up
        answer = self._answers.get(name)
        if answer is None or answer[0] <= self.clock():
            answer = await asyncio.shield(self._pending_lookup(name))
        if answer[1] is None:
            raise _Failed(f"cannot resolve {host}: {answer[2]}")
        return answer[1]

    def _pending_lookup(self, name: str) -> asyncio.Future[_Answer]:
        """The one lookup of `name` in flight on this loop, started when there is none."""
        pending = self._pending.get(name)
        if (
            pending is None
            or pending.done()
            or pending.get_loop() is not asyncio.get_running_loop()
        ):
            pending = self._pending[name] = asyncio.ensure_future(self._lookup(name))
            pending.add_done_callback(partial(self._forget, name))
        return pending

    def _forget(self, name: str, done: asyncio.Future) -> None:
        if self._pending.get(name) is done:
            del self._pending[name]

    async def _lookup(self, name: str) -> _Answer:
        answer: _Answer
        try:
            answer = (self.clock() + self.ttl_s, await self.lookup(name), "")
        except OSError as error:  # the resolver's failure is the check's failure, cached
            answer = (self.clock() + self.failure_ttl_s, None, error.strerror or str(error))
        if len(self._answers) >= self.max_names:
            self._answers.pop(next(iter(self._answers)))  # oldest first: dicts keep order
        self._answers[name] = answer
        return answer


async def _getaddrinfo(name: str) -> str:
    infos = await asyncio.get_running_loop().getaddrinfo(name, None, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError(f"no address for {name}")
    return str(infos[0][4][0])


default_resolver = Resolver()


# -- words -------------------------------------------------------------------------------


def _show(data: bytes, limit: int = 40) -> str:
    return repr(data[:limit]) + ("..." if len(data) > limit else "")


def _millis(seconds: float) -> int:
    return max(int(round(seconds * 1000)), 0)


def _seconds(value: float) -> str:
    return f"{value:.1f}" if abs(value * 10 - round(value * 10)) < 1e-9 else f"{value:g}"


def _ranges(ranges: tuple) -> str:
    return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in ranges)
