"""Helpers of the fleet simulation and the soak: a request-counting git daemon, process-tree
CPU from /proc, tagged-process counting, percentile summaries and per-second timelines.

The git server is the real `git daemon --verbose` on loopback (as in tests/gitutil.py, whose
GitDaemon this mirrors instead of importing it, because that module needs pytest): its stderr
is read continuously by a thread that stamps every `Connection from` line with the wall clock
on arrival, which is the request log the rate figures come from (one git call over git:// is
one connection). It can be stopped and started again on the same port. Its CPU is the daemon's
own plus the reaped children's (`git daemon --serve` per connection and its `upload-pack`),
both read from /proc/PID/stat, so the figure covers everything the server spent.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from bench.common import GIT_ENV, cpu_s, free_port
from huddle.process import start_time


class CountingGitDaemon:
    """`git daemon` exporting every repo under base_path at git://127.0.0.1:PORT/NAME."""

    def __init__(
        self, base_path: Path, port: int | None = None, max_connections: int | None = None
    ) -> None:
        self.base_path = Path(base_path)
        self.port = port or free_port()
        self.max_connections = max_connections  # None: git's default (32)
        self.proc: subprocess.Popen | None = None
        self.reader: threading.Thread | None = None
        self.connections: list = []  # wall-clock time of each `Connection from` line
        self.dropped: list = []  # "Too many children, dropping connection"
        self.cpu_before_stop = 0.0  # CPU of earlier incarnations (own + children)
        self.starts = 0

    def url(self, repo: str) -> str:
        return f"git://127.0.0.1:{self.port}/{repo}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> CountingGitDaemon:
        # the dashed binary itself: `git daemon` would run it as a child of a `git` wrapper,
        # whose /proc figures include the daemon's CPU only once it exits
        exec_path = subprocess.run(
            ["git", "--exec-path"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        argv = [
            os.path.join(exec_path, "git-daemon"),
            "--export-all",
            "--reuseaddr",
            f"--base-path={self.base_path}",
            "--listen=127.0.0.1",
            f"--port={self.port}",
            "--verbose",
        ]
        if self.max_connections is not None:
            argv.append(f"--max-connections={self.max_connections}")
        argv.append(str(self.base_path))
        ready = threading.Event()
        lines: list = []
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=GIT_ENV,
            start_new_session=True,
        )

        def drain(stream) -> None:  # read continuously: a full pipe would stall the daemon
            for raw in stream:
                now = time.time()
                if b"Connection from" in raw:
                    self.connections.append(now)
                elif b"Too many children" in raw:
                    self.dropped.append(now)
                elif b"Ready to rumble" in raw:
                    ready.set()
                if not ready.is_set():
                    lines.append(raw.decode(errors="replace"))

        self.reader = threading.Thread(target=drain, args=(self.proc.stderr,), daemon=True)
        self.reader.start()
        deadline = time.monotonic() + timeout_s
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("git daemon did not start: " + "".join(lines))
        self.starts += 1
        return self

    def cpu(self) -> float:
        """Seconds of CPU of this daemon (all incarnations): own + reaped children."""
        total = self.cpu_before_stop
        if self.running:
            try:
                own, kids = cpu_s(self.proc.pid)
                total += own + kids
            except OSError:
                pass  # exited just now: its last figures are lost with it
        return total

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.cpu_before_stop = self.cpu()
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # already gone
            self.proc.wait()
        if self.reader is not None:
            self.reader.join(5)  # EOF once every forked child of the daemon is gone
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None
        self.reader = None

    def count_between(self, t0: float, t1: float) -> int:
        return sum(1 for t in list(self.connections) if t0 <= t < t1)


# -- processes ---------------------------------------------------------------------------------


def interrupt_on_signals() -> None:
    """SIGTERM and SIGINT raise KeyboardInterrupt, so `finally` blocks stop every process the
    benchmark started (a background job starts with SIGINT ignored; SIGTERM would just end
    Python)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, interrupt)


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie."""
    return start_time(pid) is not None  # huddle's own check: None when gone or a zombie


def tagged_processes(tag_prefix: str) -> dict:
    """{HUDDLE_APP value: [pids]} of live processes whose tag starts with tag_prefix."""
    needle = f"HUDDLE_APP={tag_prefix}".encode()
    found: dict = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue  # gone, or not ours to read
        for item in env:
            if item.startswith(needle):
                if alive(int(entry.name)):
                    tag = item.split(b"=", 1)[1].decode(errors="replace")
                    found.setdefault(tag, []).append(int(entry.name))
                break
    return found


def kill_tagged(tag_prefix: str) -> int:
    """SIGKILL (group and process) of every live process tagged tag_prefix*; returns count."""
    killed = 0
    for pids in tagged_processes(tag_prefix).values():
        for pid in pids:
            for kill in (os.killpg, os.kill):
                try:
                    kill(pid, signal.SIGKILL)
                except OSError:
                    pass  # gone already, or not a group leader
            killed += 1
    return killed


def tree_cpu_s(pid: int) -> float:
    """own + reaped children's CPU seconds of one live process (0 when it is gone)."""
    try:
        own, kids = cpu_s(pid)
    except (OSError, ValueError, IndexError):
        return 0.0  # exited: its CPU went to its parent (us) and is not counted here
    return own + kids


# -- statistics --------------------------------------------------------------------------------


def nearest_rank(values: list, p: float) -> float:
    return values[max(0, math.ceil(p * len(values)) - 1)]


def distribution(values: list) -> dict:
    values = sorted(values)
    if not values:
        return {"n": 0}
    mid = len(values) // 2
    median = values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2
    return {
        "n": len(values),
        "min": values[0],
        "median": median,
        "p90": nearest_rank(values, 0.9),
        "p99": nearest_rank(values, 0.99),
        "max": values[-1],
        "mean": sum(values) / len(values),
    }


def per_second(times: list, t0: float, t1: float) -> list:
    """Counts of events in each whole second [t0 + i, t0 + i + 1) up to t1."""
    buckets = [0] * max(0, int(math.ceil(t1 - t0)))
    for t in times:
        i = int(t - t0)
        if t0 <= t < t1 and 0 <= i < len(buckets):
            buckets[i] += 1
    return buckets


def histogram(buckets: list) -> dict:
    """{requests in a second: number of such seconds}."""
    out: dict = {}
    for n in buckets:
        out[n] = out.get(n, 0) + 1
    return dict(sorted(out.items()))


def spark(values: list, width: int = 1) -> str:
    """A one-line text timeline: one character per `width` values (their sum)."""
    bars = " .:-=+*#%@"
    sums = [sum(values[i : i + width]) for i in range(0, len(values), width)]
    top = max(sums) if sums else 0
    if not top:
        return " " * len(sums)
    return "".join(bars[min(len(bars) - 1, int(round(s / top * (len(bars) - 1))))] for s in sums)
