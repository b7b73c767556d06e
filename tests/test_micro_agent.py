"""The long-running micro agent on the real MicroPython unix port: apps run beside the agent,
versions switch in-process, failing versions roll back and stay banned, a newer good commit is
installed; status, heartbeat and last will over a real Mosquitto (subscribed with paho)."""

from __future__ import annotations

import json
import os
import queue
import signal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from tests.microutil import device_config, pointer, publish, start_micro, wait_for
from tests.mosquitto import free_port

APP = """import asyncio
PORT = {port}

async def handle(r, w):
    while True:
        line = await r.readline()
        if not line or line in (b"\\r\\n", b"\\n"):
            break
    w.write(b"HTTP/1.0 {status} X\\r\\nContent-Length: 2\\r\\n\\r\\nok")
    await w.drain()
    w.close()
    await w.wait_closed()

async def serve():
    {crash}
    srv = await asyncio.start_server(handle, "127.0.0.1", PORT)
    try:
        while True:
            await asyncio.sleep(1)
    finally:
        srv.close()
        await srv.wait_closed()

def main():
    {at_start}
    return serve()
"""


def app(port, status=200, crash=False, raise_at_import=False, version=0):
    src = APP.format(
        port=port,
        status=status,
        crash="await asyncio.sleep(0.2)\n    raise ValueError('crashed')" if crash else "pass",
        at_start="pass",
    )
    if raise_at_import:
        src = "raise RuntimeError('broken at import')\n" + src
    return {"app.py": src.encode(), "VERSION": str(version).encode()}


def _state(dev):
    try:
        return json.loads((dev / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def _wait_rolled_back(dev, bad, good, proc, log):
    # state.json (bad list) is written before the pointer moves back: waits for both
    wait_for(
        lambda: bad in _state(dev).get("bad", []) and pointer(dev)["commit"] == good,
        what="rollback of " + bad,
        proc=proc,
        log=log,
    )


def http_check(port, path="/health"):
    # a quick HTTP health check: grace and interval 0.3 s, two failures in a row count
    return {
        "type": "http",
        "port": port,
        "path": path,
        "grace": 0.3,
        "interval": 0.3,
        "retries": 2,
        "timeout": 1,
    }


def _start(tmp_path, server, port, runtime="micropython", **extra):
    cfg = device_config(tmp_path, server, **{"health": http_check(port), **extra})
    log = tmp_path / "agent.log"
    return start_micro(runtime, cfg, log=log), log


def _stop(proc):
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_failing_versions_roll_back_and_stay_banned(tmp_path, site, runtime):
    repo, out, server = site
    dev = tmp_path / "device"
    port = free_port()
    c1 = repo.commit(app(port, version=1))
    publish(repo, out)
    proc, log = _start(tmp_path, server, port, runtime)
    try:
        wait_for(lambda: _state(dev).get("good") == c1, what="v1 good", proc=proc, log=log)
        for bad in (
            app(port, raise_at_import=True, version=2),
            app(port, crash=True, version=3),
            app(port, status=500, version=4),
        ):
            cbad = repo.commit(bad)
            publish(repo, out)
            _wait_rolled_back(dev, cbad, c1, proc, log)
            assert _state(dev)["good"] == c1
            # the bad commit is still published: several more polls never reinstall it
            seen = server.requests.count("/manifest.txt")
            wait_for(
                lambda seen=seen: server.requests.count("/manifest.txt") >= seen + 3,
                what="more polls",
                proc=proc,
                log=log,
            )
            assert pointer(dev)["commit"] == c1
            assert log.read_text().count("installed " + cbad) == 1
        c5 = repo.commit(app(port, version=5))
        publish(repo, out)
        wait_for(lambda: _state(dev).get("good") == c5, what="v5 good", proc=proc, log=log)
        assert pointer(dev)["commit"] == c5
        text = log.read_text()
        assert "broken at import" in text and "crashed" in text and "HTTP 500" in text
    finally:
        _stop(proc)


class Subscriber:
    def __init__(self, broker):
        self.messages: queue.Queue = queue.Queue()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("huddle/+/status", qos=1)
        self.client.on_message = lambda c, u, m: self.messages.put(
            (m.topic, json.loads(m.payload), m.retain)
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def next(self, predicate, what, timeout=60):
        while True:
            try:
                topic, payload, retain = self.messages.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no status message: " + what) from None
            if predicate(payload):
                return topic, payload, retain

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def test_status_heartbeat_and_last_will(tmp_path, site, broker):
    repo, out, server = site
    port = free_port()
    c1 = repo.commit(app(port, version=1))
    publish(repo, out)
    sub = Subscriber(broker)
    proc, log = _start(
        tmp_path, server, port, mqtt=broker.url.replace("://", "://u:secret@"), heartbeat=0.5
    )
    try:

        def healthy(p):
            a = p.get("apps", {}).get("app", {})
            return a.get("commit") == c1 and a.get("healthy") is True

        topic, status, retain = sub.next(healthy, "healthy v1")
        assert topic == "huddle/dev1/status"
        assert set(status) == {"device", "state", "ts", "uptime", "version", "apps"}
        assert status["device"] == "dev1" and status["state"] == "online"
        assert set(status["apps"]["app"]) == {
            "commit",
            "branch",
            "running",
            "healthy",
            "restarts",
            "last_deploy",
            "last_error",
        }
        assert status["apps"]["app"]["branch"] == "main"
        assert status["apps"]["app"]["running"] is True
        beats = [sub.next(healthy, "heartbeat")[1] for _ in range(3)]
        assert beats[-1]["uptime"] >= status["uptime"]
        assert "secret" not in log.read_text()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        _, will, _ = sub.next(lambda p: p.get("state") == "offline", "last will")
        assert will == {"device": "dev1", "state": "offline"}
    finally:
        _stop(proc)
        sub.close()


def test_broker_down_never_stops_updates(tmp_path, site, broker):
    repo, out, server = site
    dev = tmp_path / "device"
    port = free_port()
    broker.stop()
    c1 = repo.commit(app(port, version=1))
    publish(repo, out)
    proc, log = _start(tmp_path, server, port, mqtt=broker.url, heartbeat=0.5)
    try:
        wait_for(
            lambda: _state(dev).get("good") == c1,
            what="v1 good while the broker is down",
            proc=proc,
            log=log,
        )
        c2 = repo.commit(app(port, version=2))
        publish(repo, out)
        wait_for(lambda: _state(dev).get("good") == c2, what="v2 good", proc=proc, log=log)
        broker.start()
        sub = Subscriber(broker)
        try:
            sub.next(
                lambda p: p.get("apps", {}).get("app", {}).get("commit") == c2,
                "status after the broker came back",
            )
        finally:
            sub.close()
    finally:
        _stop(proc)


def test_a_version_out_of_memory_at_start_is_retried_then_rolled_back(tmp_path, site):
    # a MemoryError at start may be the agent's fragmented heap rather than the version, so a
    # version on trial gets three restarts first; one that never fits is still rolled back
    repo, out, server = site
    dev = tmp_path / "device"
    port = free_port()
    c1 = repo.commit(app(port, version=1))
    publish(repo, out)
    proc, log = _start(tmp_path, server, port)
    try:
        wait_for(lambda: _state(dev).get("good") == c1, what="v1 good", proc=proc, log=log)
        v2 = app(port, version=2)
        v2["app.py"] = b"raise MemoryError('too big for this board')\n" + v2["app.py"]
        c2 = repo.commit(v2)
        publish(repo, out)
        _wait_rolled_back(dev, c2, c1, proc, log)
        text = log.read_text()
        assert text.count("starting app from v-" + c2[:12]) == 4, text
        assert text.count("rolling back " + c2) == 1
        wait_for(
            lambda: (
                _state(dev).get("good") == c1
                and "starting app from v-" + c1[:12] in log.read_text().split("rolling back")[-1]
            ),
            what="v1 again",
            proc=proc,
            log=log,
        )
    finally:
        _stop(proc)
