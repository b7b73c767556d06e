"""CPU cost of one health check, against a bare connect in the same process.

Usage: python bench/bench_health.py [-n RUNS]

A child process serves loopback HTTP (200 with a small body) and a line echo ("ping\\n" ->
"pong\\n"), so only the checker's CPU is measured here. For each case the script runs N
sequential operations in one asyncio loop after a warm-up and reports CPU per operation from
`time.process_time()` and from `getrusage` (user + system), and its ratio to the baseline: a
bare `asyncio.open_connection` + close to the same server. Prints the machine and a markdown
table.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import cpu_model  # noqa: E402
from huddle.config import HealthConfig  # noqa: E402
from huddle.health import check  # noqa: E402

SERVER = r"""
import asyncio, sys

async def http(reader, writer):
    try:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 12\r\n"
                     b"Connection: close\r\n\r\nstatus: PONG")
        await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass  # the checker hung up first: fine for a benchmark
    writer.close()

async def echo(reader, writer):
    try:
        if await reader.readline() == b"ping\n":
            writer.write(b"pong\n")
            await writer.drain()
        await reader.read(1)   # wait for the client to hang up
    except ConnectionError:
        pass  # the checker hung up first: fine for a benchmark
    writer.close()

async def main():
    a = await asyncio.start_server(http, "127.0.0.1", 0, backlog=512)
    b = await asyncio.start_server(echo, "127.0.0.1", 0, backlog=512)
    print(a.sockets[0].getsockname()[1], b.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def rusage_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def measure(operation, runs: int) -> tuple[float, float, float]:
    """(process_time, rusage, wall) seconds per operation, after a warm-up."""
    for _ in range(max(runs // 10, 10)):
        await operation()
    cpu0, rus0, wall0 = time.process_time(), rusage_s(), time.perf_counter()
    for _ in range(runs):
        await operation()
    return (
        (time.process_time() - cpu0) / runs,
        (rusage_s() - rus0) / runs,
        (time.perf_counter() - wall0) / runs,
    )


async def bench(http_port: int, echo_port: int, runs: int) -> list:
    async def bare_connect():
        _, writer = await asyncio.open_connection("127.0.0.1", http_port)
        writer.transport.close()

    http_cfg = HealthConfig(type="http", port=http_port, path="/healthz")
    http_expect_cfg = HealthConfig(type="http", port=http_port, path="/healthz", expect=b"PONG")
    socket_cfg = HealthConfig(type="socket", port=echo_port, send=b"ping\n", expect=b"pong")

    def checking(cfg):
        async def operation():
            result = await check(cfg)
            assert result.ok, result

        return operation

    cases = [
        ("bare open_connection + close (baseline)", bare_connect),
        ("http check", checking(http_cfg)),
        ("http check with expect (body read)", checking(http_expect_cfg)),
        ("socket check (send ping, expect pong)", checking(socket_cfg)),
    ]
    return [(name, await measure(operation, runs)) for name, operation in cases]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=1000)
    runs = parser.parse_args().runs
    server = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    try:
        http_port, echo_port = map(int, server.stdout.readline().split())
        rows = asyncio.run(bench(http_port, echo_port, runs))
    finally:
        server.kill()
        server.wait()
    print(
        f"machine: {platform.platform()}; CPU: {cpu_model()}; "
        f"Python {platform.python_version()} ({platform.python_implementation()}); "
        f"N = {runs} per case\n"
    )
    base_cpu, base_rus = rows[0][1][0], rows[0][1][1]
    print("| case | process_time µs/op | rusage µs/op | wall µs/op | CPU × baseline |")
    print("|---|---:|---:|---:|---:|")
    for name, (cpu, rus, wall) in rows:
        print(
            f"| {name} | {cpu * 1e6:.0f} | {rus * 1e6:.0f} | {wall * 1e6:.0f} "
            f"| {cpu / base_cpu:.2f} (rusage {rus / base_rus:.2f}) |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
