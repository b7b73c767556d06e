"""The SPEC's memory requirement as a functional test: the micro agent's whole cycle, agent and
MQTT client compiled from source, runs on the MicroPython unix port with `-X heapsize=48K`.

One long-running agent installs a first version (a 150 KB file and an app), reports it over a
real Mosquitto, installs an update while that app runs, and keeps sending heartbeats for it.
A MemoryError anywhere in its output (also one the agent survived, which it logs as "memory
allocation failed"), or an exit, fails the test. Not a timing test: the
deadlines are liveness bounds. `bench/bench_micro_heap.py` finds the smallest heap instead.
"""
from __future__ import annotations

import json
import os
import queue
import signal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.microutil import ManifestServer, Repo, publish, start_micro, write_config

APP = b"""import asyncio

async def blink():
    while True:
        await asyncio.sleep(0.2)

def main():
    return blink()
"""


def out_of_memory(text: str) -> bool:
    return "MemoryError" in text or "memory allocation failed" in text


@pytest.mark.xfail(strict=True, reason="not met yet: on the 64-bit unix port the agent's modules, "
                   "all compiled at boot, need 51K (the last compiles need 1-1.5 KB blocks "
                   "the fragmented heap no longer has) and the run has under 1 KB to spare "
                   "there; this scenario passes at 54K; the full cycle's live peak is 45.1 KB "
                   "(bench/bench_micro_heap.py, docs/micro.md); the SPEC asks for 48K")
def test_full_cycle_in_a_48k_heap(tmp_path, broker):
    repo = Repo(tmp_path / "repo")
    out = tmp_path / "pub"
    c1 = repo.commit({"app.py": APP, "data/blob.bin": os.urandom(150 * 1024)})
    publish(repo, out)
    server = ManifestServer(out).start()
    msgs: queue.Queue = queue.Queue()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, u, f, rc, p: c.subscribe("huddle/heap48/status", qos=1)
    sub.on_message = lambda c, u, m: msgs.put(json.loads(m.payload))
    sub.connect(broker.host, broker.port)
    sub.loop_start()
    cfg = write_config(tmp_path / "device.json", device="heap48", manifest=server.url,
                       dir=str(tmp_path / "device"), minimum=0.3, maximum=0.6, main="app",
                       timeout=5, mqtt=broker.url, heartbeat=0.5,
                       health={"type": "none", "grace": 0.3, "interval": 0.3})
    log = tmp_path / "agent.log"
    proc = start_micro("micropython", cfg, log=log, heap="48K")

    def beats(commit, count, what):
        seen, waited = 0, 0
        while seen < count:
            assert proc.poll() is None, f"agent exited ({what})\n{log.read_text()[-3000:]}"
            assert not out_of_memory(log.read_text()), log.read_text()[-3000:]
            try:
                status = msgs.get(timeout=1)  # short, so a dead agent fails the test at once
            except queue.Empty:
                waited += 1
                assert waited < 60, f"no status: {what}\n{log.read_text()[-3000:]}"
                continue
            app = status.get("apps", {}).get("app", {})
            if app.get("commit") == commit and app.get("running"):
                seen += 1

    try:
        beats(c1, 2, "first install")
        c2 = repo.commit({"app.py": APP.replace(b"0.2", b"0.3"),
                          "data/blob.bin": os.urandom(150 * 1024)})
        publish(repo, out)
        beats(c2, 3, "update while the app runs")
        assert not out_of_memory(log.read_text()), log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
        sub.disconnect()
        sub.loop_stop()
        server.stop()
