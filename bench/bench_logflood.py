"""Loop lag and logs size while an app floods its output, against the same loop without.

Usage: python bench/bench_logflood.py [--seconds S]

One asyncio loop in this process plays the agent: it starts an idle HTTP app through
`huddle.process.AppProcess` and health-checks it every 0.5 s with `huddle.health.check`, and a
ticker scheduled every 10 ms records how late each tick fires (the loop's lag). Phases, each
S seconds, in the same process one after the other:

- baseline: the idle app alone;
- flood 100 MB/s: beside it an app writing 64 KB blocks to stdout at 100 MB/s (seen in the field);
- flood, unbounded: the same as fast as it can (the pipe sets its pace);
- flood, yes: beside it `yes` (one short line, as fast as it can);
- previous huddle: the 100 MB/s flooder appending to its log file directly, and the loop
  running the old copy-and-truncate rotation once a second (as it did after each poll).

The logs directory is sampled every 50 ms (peak total and peak single file, against the cap:
10 MB per file, 4 files). Prints the machine and a markdown table; JSON to bench/out/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from huddle import applog  # noqa: E402
from huddle.applog import AppLog  # noqa: E402
from huddle.config import HealthConfig  # noqa: E402
from huddle.health import check  # noqa: E402
from huddle.process import AppProcess, child_environment  # noqa: E402
from tests.gitutil import write_app  # noqa: E402

PY = sys.executable
# writes 64 KB blocks to stdout, at most argv[1] MB/s (0: as fast as it can)
PY_FLOOD = r"""
import os, sys, time
block = (b"x" * 63 + b"\n") * 1024
rate = float(sys.argv[1]) * 1e6
start, sent = time.monotonic(), 0
while True:
    sent += os.write(1, block)
    ahead = sent / rate - (time.monotonic() - start) if rate else 0
    if ahead > 0:
        time.sleep(ahead)
"""
TICK_S = 0.010
CAP = applog.MAX_BYTES
FILES = applog.KEEP + 1


def copy_truncate(log_path: Path, max_bytes: int, keep: int = 3) -> None:
    """The rotation huddle ran after each poll before the pipe capture (for comparison)."""
    try:
        if log_path.stat().st_size <= max_bytes:
            return
    except FileNotFoundError:
        return
    for n in range(keep - 1, 0, -1):
        older = log_path.with_name(f"{log_path.name}.{n}")
        if older.exists():
            os.replace(older, log_path.with_name(f"{log_path.name}.{n + 1}"))
    with open(log_path, "rb") as src, open(log_path.with_name(f"{log_path.name}.1"), "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.truncate(log_path, 0)


def dir_sizes(logs: Path) -> list:
    sizes = []
    for entry in os.scandir(logs):
        try:
            sizes.append(entry.stat().st_size)
        except FileNotFoundError:
            continue  # rotated away while we looked
    return sizes


def percentile(values: list, p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))] if values else 0.0


async def phase(
    name: str, root: Path, seconds: float, flood: list | None, direct_file: bool = False
) -> dict:
    logs = root / name.replace(" ", "-").replace(",", "") / "logs"
    logs.mkdir(parents=True)
    loop = asyncio.get_running_loop()
    port = common.free_port()
    env = child_environment({})
    idle_app = write_app(root / "idle-app")  # the harness's web app, answering its checks
    idle = await AppProcess.start(
        [PY, str(idle_app), str(port)], cwd=root, env=env, log_path=logs / "idle.log"
    )
    flooder = None
    flood_fd = None
    through = [0]
    flood_log = logs / "flood.log"
    if flood is not None and direct_file:
        flood_fd = os.open(flood_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        flooder = await asyncio.create_subprocess_exec(
            *flood, stdout=flood_fd, stdin=asyncio.subprocess.DEVNULL, start_new_session=True
        )
        os.close(flood_fd)
    elif flood is not None:
        target = AppLog.for_path(flood_log)
        real_write = target.write

        def counting(data: bytes) -> None:
            through[0] += len(data)
            real_write(data)

        target.write = counting  # type: ignore[method-assign]
        flooder = await AppProcess.start(flood, cwd=root, env=env, log_path=flood_log)

    health = HealthConfig(type="http", port=port, timeout_s=2.0)
    lateness: list = []
    rotations: list = []
    peak_total = peak_file = 0
    checks = [0, 0]
    end = loop.time() + seconds
    await asyncio.sleep(0.5)  # the idle app binds its port

    async def health_loop():
        while loop.time() < end:
            result = await check(health)
            checks[0] += 1
            checks[1] += bool(result.ok)
            await asyncio.sleep(0.5)

    async def old_rotation():
        while loop.time() < end:
            await asyncio.sleep(1.0)
            t0 = time.perf_counter()
            copy_truncate(flood_log, CAP)
            rotations.append(time.perf_counter() - t0)

    done = loop.create_future()

    def tick(target: float) -> None:
        lateness.append(loop.time() - target)
        if target + TICK_S < end:
            loop.call_at(target + TICK_S, tick, target + TICK_S)
        elif not done.done():
            done.set_result(None)

    async def sample():
        nonlocal peak_total, peak_file
        while not done.done():
            sizes = dir_sizes(logs)
            peak_total = max(peak_total, sum(sizes))
            peak_file = max(peak_file, max(sizes, default=0))
            await asyncio.sleep(0.05)

    first = loop.time() + TICK_S
    loop.call_at(first, tick, first)
    tasks = [asyncio.ensure_future(health_loop()), asyncio.ensure_future(sample())]
    if direct_file:
        tasks.append(asyncio.ensure_future(old_rotation()))
    await done
    await asyncio.gather(*tasks)
    if isinstance(flooder, AppProcess):
        await flooder.stop(2)
    elif flooder is not None:
        flooder.kill()
        await flooder.wait()
    await idle.stop(2)
    on_disk = sum(dir_sizes(logs))
    if direct_file:
        through[0] = on_disk  # lower bound: what the rotation did not overwrite
    return {
        "phase": name,
        "ticks": len(lateness),
        "lag_p50_ms": percentile(lateness, 0.50) * 1e3,
        "lag_p99_ms": percentile(lateness, 0.99) * 1e3,
        "lag_max_ms": max(lateness) * 1e3,
        "peak_logs_mb": peak_total / 1e6,
        "peak_file_mb": peak_file / 1e6,
        "logged_mb_per_s": through[0] / 1e6 / seconds,
        "rotation_max_ms": max(rotations) * 1e3 if rotations else None,
        "health_ok": checks[1],
        "health_checks": checks[0],
    }


async def run_all(seconds: float) -> list:
    root = common.temp_root("huddle-logflood-")
    try:
        return [
            await phase("baseline", root, seconds, None),
            await phase("flood 100 MB/s", root, seconds, [PY, "-c", PY_FLOOD, "100"]),
            await phase("flood, unbounded", root, seconds, [PY, "-c", PY_FLOOD, "0"]),
            await phase("flood, yes", root, seconds, ["yes", "flood line"]),
            await phase(
                "previous huddle, 100 MB/s",
                root,
                seconds,
                [PY, "-c", PY_FLOOD, "100"],
                direct_file=True,
            ),
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)


def table(results: list) -> str:
    base = results[0]
    lines = [
        "| phase | lag p50 / p99 / max, ms | max lag / baseline's | peak logs dir, MB "
        "(cap 4 x 10.5) | peak file, MB (cap 10.5) | logged, MB/s | health ok |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        note = (
            f" (copy-truncate up to {r['rotation_max_ms']:.0f} ms)"
            if r["rotation_max_ms"] is not None
            else ""
        )
        lines.append(
            f"| {r['phase']}{note} | {r['lag_p50_ms']:.2f} / {r['lag_p99_ms']:.2f} / "
            f"{r['lag_max_ms']:.2f} | {r['lag_max_ms'] / base['lag_max_ms']:.1f} | "
            f"{r['peak_logs_mb']:.1f} | {r['peak_file_mb']:.1f} | "
            f"{r['logged_mb_per_s']:.0f} | {r['health_ok']}/{r['health_checks']} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    args = parser.parse_args()
    info = common.machine()
    print(common.machine_line(info))
    results = asyncio.run(run_all(args.seconds))
    common.publish_results(
        "logflood.json",
        {
            "machine": info,
            "seconds": args.seconds,
            "cap_bytes": CAP,
            "files": FILES,
            "results": results,
        },
        table(results),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
