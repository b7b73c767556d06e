"""Helpers shared by the MQTT and watch tests (no tests here): a real paho subscriber that
records what a user of the broker would see, a loop-lateness ticker, and a throwaway CA."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion


class Observer:
    """Subscribes to `topic` on the broker and keeps every message it receives."""

    def __init__(self, broker, topic: str = "#", cafile: str | None = None) -> None:
        self.messages: list[paho.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        if cafile:
            self.client.tls_set(ca_certs=cafile)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "observer could not subscribe"

    def _on_message(self, client, userdata, msg) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def on(self, topic: str) -> list[paho.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def payloads(self, topic: str) -> list[dict]:
        return [json.loads(m.payload) for m in self.on(topic) if m.payload]

    def wait_for(
        self,
        topic: str,
        predicate: Callable[[dict, paho.MQTTMessage], bool],
        timeout_s: float = 10.0,
    ) -> paho.MQTTMessage:
        """The first message on `topic` whose JSON payload satisfies `predicate`."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for m in self.messages:
                    if m.topic == topic and m.payload and predicate(json.loads(m.payload), m):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:200]) for m in self.messages]
                    raise AssertionError(f"no matching message on {topic}; saw {seen}")
                self._cond.wait(left)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def await_message(obs: Observer, topic: str, predicate, timeout_s: float = 10.0):
    """Observer.wait_for without stopping the asyncio loop under test."""
    return await asyncio.get_running_loop().run_in_executor(
        None, obs.wait_for, topic, predicate, timeout_s
    )


class Ticker:
    """An asyncio task that should wake every `period_s`; `worst_late_s` is the largest delay
    it suffered, i.e. how long something blocked the loop."""

    def __init__(self, period_s: float = 0.05) -> None:
        self.period_s = period_s
        self.worst_late_s = 0.0
        self.ticks = 0
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.period_s)
            self.worst_late_s = max(self.worst_late_s, loop.time() - before - self.period_s)
            self.ticks += 1

    async def stop(self) -> None:
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass  # the cancellation we asked for


class Blackhole:
    """A TCP port that listens but never accepts: once its tiny backlog is full, a connect
    to it neither succeeds nor fails, like a broker behind a dropping firewall."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(0)
        self.port = self.listener.getsockname()[1]
        self.fillers = []
        for _ in range(4):  # fill the accept backlog so later SYNs go unanswered
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", self.port))
            self.fillers.append(s)
        time.sleep(0.1)

    def close(self) -> None:
        for s in self.fillers:
            s.close()
        self.listener.close()


def make_ca(directory: Path) -> dict:
    """A self-signed CA and a server certificate for 127.0.0.1 / localhost (openssl CLI)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def run(*argv: str) -> None:
        subprocess.run(["openssl", *argv], check=True, capture_output=True, cwd=d)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=huddle test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (d / "ext.cnf").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "basicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n"
    )
    run(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        "server.crt",
        "-extfile",
        "ext.cnf",
    )
    for name in ("ca.crt", "server.crt", "server.key"):
        (d / name).chmod(0o644)  # mosquitto may run as user mosquitto
    return {
        "cafile": str(d / "ca.crt"),
        "certfile": str(d / "server.crt"),
        "keyfile": str(d / "server.key"),
    }
