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
- A private CA (config `ca`, PEM, DER or a bundle): both runtimes install from an HTTPS site
  whose certificate it signed, refuse one it did not sign or that is for another name (before
  any request; the old version stays), and report to an mqtts broker only when it vouches for
  it. A `ca` that is not a non-empty string, unreadable, not a certificate, or set without
  any TLS to verify is a config error (exit 2, one `FILE: ca: reason` line).
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys

import pytest

from tests.microutil import (
    ManifestServer,
    Repo,
    pointer,
    publish,
    run_micro,
    version_files,
    wait_for,
)
from tests.mosquitto import free_port
from tests.test_micro_agent import _start, _state, _stop, _wait_rolled_back
from tests.test_micro_mqtt import Watcher
from tests.test_micro_sync import V1, V2, _assert_still_v1, _config, _install_v1

# an app whose main() returns a coroutine serving a line protocol on {port}: each connection
# sends a line, and {handle} (the rest of `handle`, indented) answers it; the same code on
# MicroPython's asyncio and CPython's
SERVER_APP = """import asyncio

async def handle(r, w):
    await r.readline()
{handle}

async def serve():
    # the server closes when the agent cancels the app, freeing the port for the next version
    async with await asyncio.start_server(handle, "127.0.0.1", {port}):
        while True:
            await asyncio.sleep(1)

def main():
    return serve()
"""
REPLY = """    w.write({reply!r})
    await w.drain()
    w.close()
    await w.wait_closed()"""
SILENT = "    await asyncio.sleep(60)"  # accepts, never answers
# "pong", a byte every 0.4 s: 1.6 s in all, each byte well within a 1 s timeout
TRICKLE = """    for b in (b"p", b"o", b"n", b"g\\n"):
        await asyncio.sleep(0.4)
        w.write(b)
        await w.drain()
    w.close()
    await w.wait_closed()"""


def server_app(port: int, handle: str) -> dict:
    return {"app.py": SERVER_APP.format(port=port, handle=handle).encode()}


# an app that runs but never listens
IDLE_APP = """import asyncio

async def idle():
    while True:
        await asyncio.sleep(1)

def main():
    return idle()
"""


def line_app(port: int, reply: bytes | None) -> dict:
    """The line server answering `reply`, or with None an app that does not listen."""
    if reply is None:
        return {"app.py": IDLE_APP.encode()}
    return server_app(port, REPLY.format(reply=reply))


def socket_check(port: int, **changes) -> dict:
    check = {
        "type": "socket",
        "port": port,
        "send": "ping\n",
        "expect": "pong",
        "grace": 0.3,
        "interval": 1,
        "retries": 2,
        "timeout": 1,
    }
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


def _openssl(cwd, *args):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _serve_tls(tmp_path, cert, key):
    """Like conftest's `site`, over HTTPS with `cert`: (repo, out, server, manifest URL); the
    caller stops the server."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    repo = Repo(tmp_path / "repo")
    out = tmp_path / "pub"
    server = ManifestServer(out)
    # the handshake happens in each request's thread, so a client that fails it blocks nothing
    server.httpd.socket = ctx.wrap_socket(
        server.httpd.socket, server_side=True, do_handshake_on_connect=False
    )
    default_error = server.httpd.handle_error

    def handle_error(request, client_address):  # a refused handshake is what some tests want
        if not isinstance(sys.exc_info()[1], ssl.SSLError):
            default_error(request, client_address)

    server.httpd.handle_error = handle_error
    server.start()
    return repo, out, server, f"https://127.0.0.1:{server.port}/manifest.txt"


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and its key, made once per module (RSA key
    generation is most of these tests' setup time; the files are only read)."""
    d = tmp_path_factory.mktemp("self-signed")
    _openssl(
        d,
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "key.pem",
        "-out",
        "cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=127.0.0.1",
        "-addext",
        "subjectAltName=IP:127.0.0.1",
    )
    return d / "cert.pem", d / "key.pem"


@pytest.fixture
def tls_site(tmp_path, self_signed):
    """Over HTTPS with a self-signed certificate for 127.0.0.1: (repo, out, server, URL)."""
    site = _serve_tls(tmp_path, *self_signed)
    yield site
    site[2].stop()


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A private CA and what it signed, made once per module (read only by the tests): ca.pem
    (that CA), ca.der (the same in DER), other.pem (another CA, which signed nothing here),
    bundle.pem (other.pem then ca.pem), server.pem/server.key (127.0.0.1, signed by ca.pem)."""
    d = tmp_path_factory.mktemp("pki")
    for name in ("ca", "other"):
        _openssl(
            d,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            name + ".key",
            "-out",
            name + ".pem",
            "-days",
            "2",
            "-subj",
            "/CN=huddle test " + name,
        )
    _openssl(d, "x509", "-in", "ca.pem", "-outform", "DER", "-out", "ca.der")
    (d / "bundle.pem").write_text((d / "other.pem").read_text() + (d / "ca.pem").read_text())
    _openssl(
        d,
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1\n")
    _openssl(
        d,
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    )
    return d


@pytest.fixture
def ca_site(tmp_path, pki):
    """Over HTTPS with a certificate for 127.0.0.1 (subjectAltName IP:127.0.0.1) signed by a
    private CA: (repo, out, server, URL, pki directory; see `pki`)."""
    site = _serve_tls(tmp_path, pki / "server.pem", pki / "server.key")
    yield (*site, pki)
    site[2].stop()


@pytest.mark.parametrize("v2_reply,reason", [(b"nope\n", "'pong' not received"), (None, "refused")])
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
        _wait_rolled_back(dev, c2, c1, proc, log)
        assert _state(dev)["good"] == c1
        text = log.read_text()
        assert "installed " + c2 in text
        why = [ln for ln in text.splitlines() if ln.startswith("huddle: rolling back " + c2)]
        assert len(why) == 1 and ": health: " in why[0] and reason in why[0].lower(), text
        # v1 runs again and answers
        wait_for(
            lambda: ask(port, b"ping\n") == b"pong\n", what="v1 serving again", proc=proc, log=log
        )
    finally:
        _stop(proc)


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_a_version_no_check_passed_for_is_rolled_back_at_the_end_of_its_trial(
    tmp_path, site, runtime
):
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
        c2 = repo.commit(server_app(port, SILENT))
        publish(repo, out)
        _wait_rolled_back(dev, c2, c1, proc, log)
        assert _state(dev)["good"] == c1
        assert c2 + " is good now" not in log.read_text()
    finally:
        _stop(proc)


def test_a_check_answered_byte_by_byte_past_its_timeout_fails(tmp_path, site):
    # the timeout bounds the whole exchange, not each read: a reply that trickles in over
    # 1.6 s fails a 1 s check although every byte comes within 1 s of the last
    repo, out, server = site
    dev = tmp_path / "device"
    port = free_port()
    c1 = repo.commit(line_app(port, b"pong\n"))
    publish(repo, out)
    proc, log = _start(tmp_path, server, port, health=socket_check(port))
    try:
        wait_for(lambda: _state(dev).get("good") == c1, what="v1 good", proc=proc, log=log)
        c2 = repo.commit(server_app(port, TRICKLE))
        publish(repo, out)
        _wait_rolled_back(dev, c2, c1, proc, log)
        assert "too slow" in log.read_text()
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


@pytest.mark.parametrize(
    "publish_key,reason", [(None, "not signed"), ("other", "hmac does not match")]
)
def test_key_guards_unverified_https(tmp_path, tls_site, publish_key, reason):
    repo, out, server, url = tls_site
    c1, cfg = _install_v1(tmp_path, (repo, out, server), manifest=url, key="k1")
    repo.commit(V2)
    publish(repo, out, key=publish_key)
    refused = run_micro("micropython", cfg, "--once")
    _assert_still_v1(tmp_path, c1, refused, reason)


@pytest.mark.parametrize("ca", ["ca.pem", "ca.der", "bundle.pem"])
@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_ca_verifies_the_manifest_server_and_installs(tmp_path, ca_site, runtime, ca):
    # the same config on both runtimes: PEM, DER, or a PEM bundle with the right CA among others
    repo, out, server, url, pki = ca_site
    c1 = repo.commit(V1)
    publish(repo, out)
    cfg = _config(tmp_path, server, manifest=url, ca=str(pki / ca))
    done = run_micro(runtime, cfg, "--once")
    assert done.returncode == 0, done.stdout
    dev = tmp_path / "device"
    assert pointer(dev)["commit"] == c1
    assert version_files(dev) == V1
    assert any("/blobs/" in p for p in server.requests)  # the files came over https


@pytest.mark.parametrize("case", ["another CA", "another name"])
@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_ca_refuses_a_server_it_does_not_vouch_for(tmp_path, ca_site, runtime, case):
    # v1 is installed over verified https; then the device trusts another CA only (or asks
    # for a name the certificate does not carry): v2 is refused before any request, v1 stays
    repo, out, server, url, pki = ca_site
    c1 = repo.commit(V1)
    publish(repo, out)
    assert (
        run_micro(
            runtime, _config(tmp_path, server, manifest=url, ca=str(pki / "ca.pem")), "--once"
        ).returncode
        == 0
    )
    repo.commit(V2)
    publish(repo, out)
    server.requests.clear()
    if case == "another CA":
        cfg = _config(tmp_path, server, manifest=url, ca=str(pki / "other.pem"))
    else:  # localhost is 127.0.0.1, but the certificate is for IP:127.0.0.1 only
        cfg = _config(
            tmp_path, server, manifest=url.replace("127.0.0.1", "localhost"), ca=str(pki / "ca.pem")
        )
    refused = run_micro(runtime, cfg, "--once")
    reason = {"micropython": "TLS handshake failed", "cpython": "CERTIFICATE_VERIFY_FAILED"}
    _assert_still_v1(tmp_path, c1, refused, reason[runtime])
    why = {
        "another CA": ("not correctly signed", "unable to get local issuer"),
        "another name": ("Common Name", "Hostname mismatch"),
    }[case]
    assert why[runtime == "cpython"] in refused.stdout
    assert "Traceback" not in refused.stdout
    assert server.requests == []  # not even the manifest was asked for


@pytest.mark.parametrize(
    "value,reason",
    [
        (5, "ca: must be a non-empty string"),
        ("", "ca: must be a non-empty string"),
        (["ca.pem"], "ca: must be a non-empty string"),
        ("missing.pem", "ca: cannot read"),
        ("garbage.pem", "ca: {pki}/garbage.pem: not a PEM or DER CA certificate"),
        ("empty.pem", "ca: {pki}/empty.pem: not a PEM or DER CA certificate"),
        ("ca.pem+http", "ca: needs an https:// manifest or an mqtts:// broker"),
    ],
)
@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_a_bad_ca_is_a_config_error(tmp_path, ca_site, runtime, value, reason):
    repo, out, server, url, pki = ca_site
    (pki / "garbage.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
    )
    (pki / "empty.pem").write_text("")
    manifest = url
    if value == "ca.pem+http":
        value, manifest = "ca.pem", server.url
    if isinstance(value, str) and value:
        value = str(pki / value)
    cfg = _config(tmp_path, server, manifest=manifest, ca=value)
    bad = run_micro(runtime, cfg, "--once")
    assert bad.returncode == 2, bad.stdout
    lines = [ln for ln in bad.stdout.splitlines() if ln.startswith("huddle: ")]
    assert len(lines) == 1 and lines[0].startswith(f"huddle: {cfg}: "), bad.stdout
    assert reason.format(pki=pki) in lines[0], bad.stdout
    assert "Traceback" not in bad.stdout
    assert not (tmp_path / "device").exists() and server.requests == []


@pytest.mark.parametrize("trusted", ["broker's CA", "another CA"])
@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_ca_verifies_the_mqtts_broker(tmp_path, site, tls_broker, runtime, trusted):
    # the agent (plain http manifest) reports to an mqtts broker whose certificate a private
    # CA signed: it connects and publishes its status when `ca` is that CA, and never does
    # (each try is a TLS failure in the log) when it is another one
    broker, ca = tls_broker, tls_broker.cafile
    repo, out, server = site
    repo.commit(V1)
    publish(repo, out)
    if trusted == "another CA":
        ca = str(tmp_path / "other.pem")
        _openssl(
            tmp_path,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "other.key",
            "-out",
            ca,
            "-days",
            "2",
            "-subj",
            "/CN=huddle test other",
        )
    watcher = Watcher(broker, "huddle/dev1/status", ca=tls_broker.cafile)
    proc, log = _start(
        tmp_path,
        server,
        free_port(),
        runtime,
        health={"type": "none"},
        mqtt=f"mqtts://localhost:{broker.port}",
        ca=ca,
        heartbeat=1,
    )
    try:
        if trusted == "another CA":
            reason = (
                "TLS handshake failed" if runtime == "micropython" else "CERTIFICATE_VERIFY_FAILED"
            )
            wait_for(
                lambda: log.read_text().count(reason) >= 2,
                what="two refused connects",
                proc=proc,
                log=log,
            )
            assert "mqtt: connected" not in log.read_text()
            assert watcher.quiet(1)
        else:
            wait_for(
                lambda: "mqtt: connected to localhost:" in log.read_text(),
                what="mqtts connect",
                proc=proc,
                log=log,
            )
            payload, _ = watcher.get(10)
            assert b'"device": "dev1"' in payload and b'"state": "offline"' not in payload
    finally:
        _stop(proc)
        watcher.close()
