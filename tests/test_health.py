"""huddle.health against real sockets on 127.0.0.1: honest servers and hostile ones.

Every server here is a small asyncio server on a free loopback port, inside the test's own
loop. `run` fails a test on anything the loop or the garbage collector complains about
(unclosed transports or sockets, "Task exception was never retrieved"), so leaks are
failures too. Timeouts are short (0.3 s) and only hang guards are timed.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import struct
import warnings

import pytest

from huddle.config import HealthConfig
from huddle.health import BODY_CAP, HealthResult, Resolver, check, request_bytes
from tests.gitutil import free_port

SHORT_S = 0.3
HANG_GUARD_S = 10.0


def run(coro):
    """asyncio.run(coro), failing on loop errors and ResourceWarnings (leaked sockets)."""
    problems = []

    async def main():
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: problems.append(ctx))
        return await asyncio.wait_for(coro, HANG_GUARD_S)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = asyncio.run(main())
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not problems, problems
    assert not leaks, leaks
    return result


class Peer:
    """A TCP server on a free loopback port running `handler(reader, writer)` per connection;
    records what each client sent before its request head ended."""

    def __init__(self, handler):
        self.handler = handler
        self.tasks = set()
        self.requests = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader, writer):
        self.tasks.add(asyncio.current_task())
        try:
            await self.handler(self, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the checker hung up (it aborts on failure, or stops reading): expected
        except asyncio.CancelledError:
            pass  # the test is over
        finally:
            writer.transport.abort()

    async def read_request(self, reader):
        self.requests.append(await reader.readuntil(b"\r\n\r\n"))


def http_cfg(port, **kw):
    kw.setdefault("timeout_s", 2.0)
    return HealthConfig(type="http", host="127.0.0.1", port=port, **kw)


def socket_cfg(port, **kw):
    kw.setdefault("timeout_s", 2.0)
    return HealthConfig(type="socket", host="127.0.0.1", port=port, **kw)


def replying(*parts, pause_s=0.0, then_close=True):
    """A handler that reads the request, writes `parts` (pausing between them), closes."""

    async def handler(peer, reader, writer):
        await peer.read_request(reader)
        for part in parts:
            writer.write(part)
            await writer.drain()
            if pause_s:
                await asyncio.sleep(pause_s)
        if then_close:
            writer.close()
        else:
            await asyncio.Event().wait()

    return handler


async def silent(peer, reader, writer):
    await asyncio.Event().wait()  # accept, then never say a word


async def check_against(handler, make_cfg=http_cfg, **kw) -> HealthResult:
    async with Peer(handler) as peer:
        return await check(make_cfg(peer.port, **kw))


def http_check(handler, **kw) -> HealthResult:
    return run(check_against(handler, **kw))


OK_200 = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# -- http statuses ------------------------------------------------------------------------


def test_http_200_passes_and_sends_a_proper_request():
    async def scenario():
        async with Peer(replying(OK_200)) as peer:
            result = await check(http_cfg(peer.port, path="/healthz"))
            return result, peer.requests[0], peer.port

    result, request, port = run(scenario())
    assert result.ok, result
    assert result.detail.startswith("HTTP 200 in ") and result.detail.endswith(" ms")
    lines = request.decode().split("\r\n")
    assert lines[0] == "GET /healthz HTTP/1.1"
    assert f"Host: 127.0.0.1:{port}" in lines
    assert "Connection: close" in lines and "User-Agent: huddle-health" in lines


def test_host_header_omits_port_80_and_brackets_ipv6():
    assert b"\r\nHost: 127.0.0.1\r\n" in request_bytes(http_cfg(80))
    for host in ("::1", "[::1]"):
        cfg = HealthConfig(type="http", host=host, port=8080)
        assert b"\r\nHost: [::1]:8080\r\n" in request_bytes(cfg)


def test_http_500_fails():
    result = http_check(replying(b"HTTP/1.1 500 Internal Server Error\r\n\r\n"))
    assert not result.ok
    assert result.detail == "status 500 not in 200-399"


def test_redirect_is_just_a_status():
    moved = b"HTTP/1.1 301 Moved Permanently\r\nLocation: /elsewhere\r\n\r\n"
    assert http_check(replying(moved)).ok
    strict = http_check(replying(moved), status=((200, 200),))
    assert not strict.ok and strict.detail == "status 301 not in 200"


def test_interim_103_is_skipped():
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    result = http_check(replying(early, OK_200))
    assert result.ok and result.detail.startswith("HTTP 200"), result


# -- connection failures and hostile peers ------------------------------------------------


def test_connection_refused():
    result = run(check(http_cfg(free_port())))
    assert not result.ok and result.detail == "connect refused"


def test_peer_that_never_answers_times_out():
    result = http_check(silent, timeout_s=SHORT_S)
    assert not result.ok
    assert result.detail == "timeout reading status line after 0.3 s"


def test_trickling_peer_times_out():
    trickle = [bytes([b]) for b in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"x" * 100]
    result = http_check(replying(*trickle, pause_s=0.1), timeout_s=SHORT_S)
    assert not result.ok
    assert "timeout" in result.detail


@pytest.mark.parametrize(
    "reply",
    [
        b"SSH-2.0-OpenSSH_9.6\r\n",  # not HTTP at all, and no end of headers
        b"HTTP/1.1 OK\r\n\r\n",  # no status code
        b"HTTP/1.1 2000 OK\r\n\r\n",  # four digits
        b"\x16\x03\x01\x00\xa5\x01\x00\x00",  # a TLS record
    ],
)
def test_garbage_status_line_fails_clearly(reply):
    result = http_check(replying(reply, then_close=False))
    assert not result.ok
    assert result.detail.startswith("garbage status line: "), result


def test_malformed_header_fails():
    result = http_check(replying(b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"))
    assert not result.ok and result.detail.startswith("malformed header line"), result


def test_oversized_headers_fail():
    pad = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 100) for i in range(200))  # ~22 KiB
    result = http_check(replying(b"HTTP/1.1 200 OK\r\n" + pad + b"\r\n"))
    assert not result.ok and result.detail == "headers exceed 16 KiB"


def test_endless_header_line_fails_without_waiting_for_timeout():
    endless = [b"HTTP/1.1 200 OK\r\nX-Pad: "] + [b"a" * 4096] * 8
    result = http_check(replying(*endless, then_close=False), timeout_s=HANG_GUARD_S / 2)
    assert not result.ok and result.detail == "headers exceed 16 KiB"


def test_peer_closing_before_status_line_fails():
    result = http_check(replying())
    assert not result.ok and result.detail == "connection closed before status line"


def test_reset_mid_response_fails():
    async def resetting(peer, reader, writer):
        await peer.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Half: ")
        await writer.drain()
        await asyncio.sleep(0.05)  # let the checker read that far and wait for more
        writer.get_extra_info("socket").setsockopt(
            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
        )
        writer.transport.abort()  # linger 0: the close is a RST

    result = http_check(resetting)
    assert not result.ok
    assert result.detail == "connection reset reading headers"


# -- bodies -------------------------------------------------------------------------------


def endless_body(first=b""):
    """Headers of a close-delimited body, `first`, then 'x' forever."""

    async def handler(peer, reader, writer):
        await peer.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + first)
        while True:
            writer.write(b"x" * 65536)
            await writer.drain()

    return handler


def test_huge_body_is_not_read_without_expect():
    # if the check read the endless body it could only end in a timeout
    result = http_check(endless_body())
    assert result.ok and result.detail.startswith("HTTP 200"), result


def test_huge_body_without_the_expected_bytes_fails_at_the_cap():
    result = http_check(endless_body(), expect=b"PONG")
    assert not result.ok
    assert result.detail == f"expected b'PONG' not in first {BODY_CAP // 1024} KiB of body"


def test_huge_body_with_the_expected_bytes_early_passes():
    result = http_check(endless_body(first=b"status: PONG\n"), expect=b"PONG")
    assert result.ok and result.detail.startswith("HTTP 200 with b'PONG'"), result


def test_chunked_body_with_expect_split_across_chunks():
    reply = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"6;ext=1\r\nstate:\r\n",
        b"2\r\nPO\r\n",
        b"2\r\nNG\r\n",
        b"0\r\n\r\n",
    )
    result = http_check(replying(*reply, pause_s=0.02), expect=b"state:PONG")
    assert result.ok, result  # only the decoded body holds b"state:PONG"


def test_chunked_body_without_expect_fails():
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nPING\r\n0\r\n\r\n"
    result = http_check(replying(reply), expect=b"PONG")
    assert not result.ok and result.detail == "HTTP 200 but expected b'PONG' not in body"


def test_bad_chunk_size_fails():
    reply = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nPONG\r\n0\r\n\r\n"
    result = http_check(replying(reply), expect=b"PONG")
    assert not result.ok and result.detail.startswith("bad chunk size line"), result


def test_close_delimited_body():
    head = b"HTTP/1.0 200 OK\r\n\r\n"
    assert http_check(replying(head, b"all ", b"good: PONG"), expect=b"PONG").ok
    result = http_check(replying(head, b"all bad"), expect=b"PONG")
    assert not result.ok and "not in body" in result.detail


def test_content_length_body_ends_where_it_says():
    sized = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nstate: OK"
    assert http_check(replying(sized, then_close=False), expect=b"OK").ok  # no EOF needed
    result = http_check(replying(sized + b"PONG"), expect=b"PONG")  # beyond the length
    assert not result.ok and "not in body" in result.detail


def test_timeout_reading_body():
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"
    result = http_check(replying(head, then_close=False), expect=b"PONG", timeout_s=SHORT_S)
    assert not result.ok and result.detail == "timeout reading body after 0.3 s"


# -- socket checks ------------------------------------------------------------------------


def echoing(reply, *, close_early=False):
    async def handler(peer, reader, writer):
        peer.requests.append(await reader.readline())
        if close_early:
            return
        writer.write(reply)
        await writer.drain()
        await asyncio.Event().wait()  # stay open: the check must stop at the match

    return handler


def socket_check(handler, **kw) -> HealthResult:
    return run(check_against(handler, make_cfg=socket_cfg, **kw))


def test_socket_send_and_expect():
    result = socket_check(echoing(b"hello PONG\n"), send=b"PING\n", expect=b"PONG")
    assert result.ok and result.detail.startswith("reply matched in "), result


def test_socket_wrong_reply_fails():
    result = socket_check(echoing(b"NOPE\n"), send=b"PING\n", expect=b"PONG", timeout_s=SHORT_S)
    assert not result.ok
    assert result.detail == "timeout waiting for b'PONG' after 0.3 s"


def test_socket_peer_closing_early_fails():
    result = socket_check(echoing(b"", close_early=True), send=b"PING\n", expect=b"PONG")
    assert not result.ok
    assert result.detail == "connection closed before b'PONG' (got b'')"


def test_socket_connect_only():
    assert socket_check(silent).ok
    assert not run(check(socket_cfg(free_port()))).ok


def test_original_watchdog_ping_pong():
    async def scenario():
        async with Peer(echoing(b"pong\n")) as peer:
            result = await check(socket_cfg(peer.port, send=b"ping\n", expect=b"pong"))
            return result, peer.requests

    result, requests = run(scenario())
    assert result.ok, result
    assert requests == [b"ping\n"]


# -- the loop -----------------------------------------------------------------------------


def test_twenty_stalled_checks_share_one_loop():
    async def scenario():
        async with Peer(silent) as peer:
            cfg = http_cfg(peer.port, timeout_s=SHORT_S)
            return await asyncio.wait_for(
                asyncio.gather(*(check(cfg) for _ in range(20))), HANG_GUARD_S / 2
            )

    results = run(scenario())
    assert len(results) == 20
    assert all(not r.ok and r.detail.startswith("timeout") for r in results)


def test_cancelled_check_leaks_nothing():
    async def scenario():
        async with Peer(silent) as peer:
            task = asyncio.ensure_future(check(http_cfg(peer.port)))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    run(scenario())  # `run` fails on the unclosed transport a leak would leave


def test_type_none_passes():
    assert run(check(HealthConfig())).ok


def test_elapsed_comes_from_the_clock_seam():
    ticks = iter([100.0, 100.005, 100.007])

    async def scenario():
        async with Peer(replying(OK_200)) as peer:
            return await check(http_cfg(peer.port), clock=lambda: next(ticks))

    result = run(scenario())
    assert result.detail == "HTTP 200 in 5 ms" and result.elapsed_s == pytest.approx(0.007)


# -- names --------------------------------------------------------------------------------


class FakeLookup:
    def __init__(self, answer="127.0.0.1", delay_s=0.0):
        self.answer, self.delay_s, self.names = answer, delay_s, []

    async def __call__(self, name):
        self.names.append(name)
        await asyncio.sleep(self.delay_s)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_localhost_and_literals_need_no_lookup():
    lookup = FakeLookup(answer=OSError("must not be called"))
    resolver = Resolver(lookup)

    async def scenario():
        return [
            await resolver.resolve(h)
            for h in ("localhost", "app.localhost", "10.0.0.1", "::1", "[::1]")
        ]

    assert run(scenario()) == ["127.0.0.1", "127.0.0.1", "10.0.0.1", "::1", "::1"]
    assert lookup.names == []


def test_names_are_looked_up_once_and_cached():
    lookup = FakeLookup(delay_s=0.05)
    resolver = Resolver(lookup)

    async def scenario():
        async with Peer(replying(OK_200)) as peer:
            cfg = HealthConfig(type="http", host="App.Example", port=peer.port)
            first = await asyncio.gather(*(check(cfg, resolver=resolver) for _ in range(5)))
            again = await check(cfg, resolver=resolver)
            return first + [again]

    results = run(scenario())
    assert all(r.ok for r in results), results
    assert lookup.names == ["app.example"]


def test_expired_answers_are_looked_up_again():
    now = [0.0]
    lookup = FakeLookup()
    resolver = Resolver(lookup, ttl_s=60.0, clock=lambda: now[0])

    async def scenario():
        await resolver.resolve("db")
        now[0] = 59.0
        await resolver.resolve("db")
        now[0] = 61.0
        await resolver.resolve("db")

    run(scenario())
    assert lookup.names == ["db", "db"]


def test_unresolvable_name_fails_the_check():
    resolver = Resolver(FakeLookup(answer=OSError(-2, "Name or service not known")))
    cfg = HealthConfig(type="socket", host="nowhere.invalid", port=1)
    result = run(check(cfg, resolver=resolver))
    assert not result.ok
    assert result.detail == "cannot resolve nowhere.invalid: Name or service not known"


def test_slow_lookup_is_bounded_by_the_check_deadline():
    resolver = Resolver(FakeLookup(delay_s=HANG_GUARD_S))
    cfg = HealthConfig(type="socket", host="slow.example", port=1, timeout_s=SHORT_S)

    async def scenario():
        result = await check(cfg, resolver=resolver)
        for task in asyncio.all_tasks() - {asyncio.current_task()}:
            task.cancel()  # the shared lookup outlives one check by design; end it here
        return result

    result = run(scenario())
    assert not result.ok and result.detail == "timeout resolving slow.example after 0.3 s"


# -- closing ------------------------------------------------------------------------------


def test_failed_check_resets_and_passed_check_closes():
    async def watching(peer, reader, writer):
        await peer.read_request(reader)
        writer.write(peer.reply)
        await writer.drain()
        try:
            peer.requests.append(b"eof" if await reader.read(1) == b"" else b"data")
        except ConnectionResetError:
            peer.requests.append(b"reset")

    async def how_it_ended(reply):
        async with Peer(watching) as peer:
            peer.reply = reply
            result = await check(http_cfg(peer.port))
            while len(peer.requests) < 2:
                await asyncio.sleep(0.01)
            return result.ok, peer.requests[1]

    assert run(how_it_ended(OK_200)) == (True, b"eof")
    assert run(how_it_ended(b"HTTP/1.1 503 Busy\r\n\r\n")) == (False, b"reset")
