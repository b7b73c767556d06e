"""The micro agent's socket health check and its https manifests, on the real MicroPython unix
port (and CPython where it says so), against real servers on loopback.

- Socket check (both runtimes): an app serving a line protocol over TCP becomes good when it
  answers the configured `send` with the `expect`ed reply; a later version that answers
  something else, or does not listen, is rolled back to the good one, banned, and the log
  says why; the good one then serves again.
- HTTPS manifests served with a throwaway self-signed certificate: MicroPython installs over
  them (a board has no CA store: it encrypts without verifying, by design); CPython verifies
  and refuses, leaving the old version; with a `key`, an unsigned or wrongly signed manifest
  is refused over that unverified TLS (the HMAC is what protects integrity there).
"""
from __future__ import annotations

import socket
import ssl
import subprocess
import sys
from typing import Optional

import pytest

from tests.microutil import (ManifestServer, Repo, pointer, publish, run_micro,
                             version_files, wait_for)
from tests.mosquitto import free_port
from tests.test_micro_agent import _start, _state, _stop
from tests.test_micro_sync import V1, V2, _assert_still_v1, _install_v1

# an app whose main() returns a coroutine serving one line per connection, answered by REPLY;
# the same code on MicroPython's asyncio and CPython's
LINE_APP = """import asyncio
PORT = {port}
REPLY = {reply!r}

async def handle(r, w):
    await r.readline()
    w.write(REPLY)
    await w.drain()
    w.close()
    await w.wait_closed()

async def serve():
    # the server closes when the agent cancels the app, freeing the port for the next version
    async with await asyncio.start_server(handle, "127.0.0.1", PORT):
        while True:
            await asyncio.sleep(1)

def main():
    return serve()
"""


# an app that accepts connections and never answers
SILENT_APP = """import asyncio

async def handle(r, w):
    await r.readline()
    await asyncio.sleep(60)

async def serve():
    async with await asyncio.start_server(handle, "127.0.0.1", {port}):
        while True:
            await asyncio.sleep(1)

def main():
    return serve()
"""


# an app that runs but never listens
IDLE_APP = """import asyncio

async def idle():
    while True:
        await asyncio.sleep(1)

def main():
    return idle()
"""


def line_app(port: int, reply: Optional[bytes]) -> dict:
    """The line server answering `reply`, or with None an app that does not listen."""
    src = IDLE_APP if reply is None else LINE_APP.format(port=port, reply=reply)
    return {"app.py": src.encode()}


def socket_check(port: int, **changes) -> dict:
    check = {"type": "socket", "port": port, "send": "ping\n", "expect": "pong", "grace": 0.3,
             "interval": 1, "retries": 2, "timeout": 1}
    return dict(check, **changes)


def ask(port: int, line: bytes) -> bytes:
    """What the server on `port` answers to `line` (b"" when nothing listens)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(line)
            reply = b""
            while True:
                data = s.recv(256)
                if not data:
                    return reply
                reply += data
    except OSError:
        return b""


@pytest.fixture
def tls_site(tmp_path):
    """Like conftest's `site`, over HTTPS with a self-signed certificate for 127.0.0.1:
    (repo, out, server, manifest URL)."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout",
                    str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    repo = Repo(tmp_path / "repo")
    out = tmp_path / "pub"
    server = ManifestServer(out)
    # the handshake happens in each request's thread, so a client that fails it blocks nothing
    server.httpd.socket = ctx.wrap_socket(server.httpd.socket, server_side=True,
                                          do_handshake_on_connect=False)
    default_error = server.httpd.handle_error

    def handle_error(request, client_address):  # a refused handshake is what some tests want
        if not isinstance(sys.exc_info()[1], ssl.SSLError):
            default_error(request, client_address)

    server.httpd.handle_error = handle_error
    server.start()
    yield repo, out, server, f"https://127.0.0.1:{server.port}/manifest.txt"
    server.stop()


@pytest.mark.parametrize("v2_reply,reason", [(b"nope\n", "'pong' not received"),
                                             (None, "refused")])
@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_socket_check_keeps_the_answering_version(tmp_path, site, runtime, v2_reply, reason):
    repo, out, server = site
    dev = tmp_path / "device"
    port = free_port()
    c1 = repo.commit(line_app(port, b"pong\n"))
    publish(repo, out)
    proc, log = _start(tmp_path, server, port, runtime, health=socket_check(port))
    try:
        wait_for(lambda: _state(dev).get("good") == c1, what="v1 good", proc=proc, log=log)
        assert ask(port, b"ping\n") == b"pong\n"
        c2 = repo.commit(line_app(port, v2_reply))
        publish(repo, out)
        # state.json (bad list) is written before the pointer moves back: wait for both
        wait_for(lambda: c2 in _state(dev).get("bad", []) and pointer(dev)["commit"] == c1,
                 what="rollback of v2", proc=proc, log=log)
        assert _state(dev)["good"] == c1
        text = log.read_text()
        assert "installed " + c2 in text
        why = [ln for ln in text.splitlines() if ln.startswith("huddle: rolling back " + c2)]
        assert len(why) == 1 and ": health: " in why[0] and reason in why[0].lower(), text
        # v1 runs again and answers
        wait_for(lambda: ask(port, b"ping\n") == b"pong\n", what="v1 serving again",
                 proc=proc, log=log)
    finally:
        _stop(proc)


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_a_version_no_check_passed_for_is_rolled_back_at_the_end_of_its_trial(
        tmp_path, site, runtime):
    # each check waits out its 1 s timeout, longer than the interval: the trial window (grace
    # + retries x interval) ends before `retries` failures are counted, and a version whose
    # last check failed must not become good then (it did, before)
    repo, out, server = site
    dev = tmp_path / "device"
    port = free_port()
    c1 = repo.commit(line_app(port, b"pong\n"))
    publish(repo, out)
    check = socket_check(port, interval=0.3, retries=3, timeout=1)
    proc, log = _start(tmp_path, server, port, runtime, health=check)
    try:
        wait_for(lambda: _state(dev).get("good") == c1, what="v1 good", proc=proc, log=log)
        c2 = repo.commit({"app.py": SILENT_APP.format(port=port).encode()})
        publish(repo, out)
        wait_for(lambda: c2 in _state(dev).get("bad", []) and pointer(dev)["commit"] == c1,
                 what="rollback of v2", proc=proc, log=log)
        assert _state(dev)["good"] == c1
        assert c2 + " is good now" not in log.read_text()
    finally:
        _stop(proc)


def test_micropython_installs_over_unverified_https(tmp_path, tls_site):
    repo, out, server, url = tls_site
    c1, _ = _install_v1(tmp_path, (repo, out, server), manifest=url)
    dev = tmp_path / "device"
    assert pointer(dev)["commit"] == c1
    assert version_files(dev) == V1
    assert any("/blobs/" in p for p in server.requests)  # the files came over https


def test_cpython_refuses_a_self_signed_manifest_server(tmp_path, tls_site):
    repo, out, server, url = tls_site
    c1, cfg = _install_v1(tmp_path, (repo, out, server), manifest=url)
    repo.commit(V2)
    publish(repo, out)
    server.requests.clear()
    refused = run_micro("cpython", cfg, "--once")
    _assert_still_v1(tmp_path, c1, refused, "CERTIFICATE_VERIFY_FAILED")
    assert server.requests == []  # not even the manifest was asked for


@pytest.mark.parametrize("publish_key,reason", [(None, "not signed"),
                                                ("other", "hmac does not match")])
def test_key_guards_unverified_https(tmp_path, tls_site, publish_key, reason):
    repo, out, server, url = tls_site
    c1, cfg = _install_v1(tmp_path, (repo, out, server), manifest=url, key="k1")
    repo.commit(V2)
    publish(repo, out, key=publish_key)
    refused = run_micro("micropython", cfg, "--once")
    _assert_still_v1(tmp_path, c1, refused, reason)
