"""Shared fixtures: real services on loopback (git remotes, a broker, a publish site) and
`huddle run` agents that are killed, with every app they started, at teardown."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from tests.gitutil import Agent, GitDaemon, SmartHTTP
from tests.microutil import ManifestServer, Repo
from tests.mosquitto import Broker
from tests.test_mqtt_support import make_ca


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto on a free loopback port; stopped after the test."""
    b = Broker(tmp_path / "broker").start()
    yield b
    b.kill()


@pytest.fixture
def tls_broker(tmp_path):
    """A real Mosquitto speaking TLS with a certificate of a private CA (`.cafile`)."""
    # pytest's tmp dirs are 0700; mosquitto, dropped to its own user, must read the PKI
    pki = Path(tempfile.mkdtemp(prefix="huddle-pki-"))
    pki.chmod(0o755)
    try:
        tls = make_ca(pki)
        b = Broker(tmp_path / "broker", tls=tls).start()
        b.cafile = tls["cafile"]
        yield b
        b.kill()
    finally:
        shutil.rmtree(pki)


@pytest.fixture
def site(tmp_path):
    """A repo to publish from, its publish dir, and a loopback HTTP server serving it."""
    repo = Repo(tmp_path / "repo")
    out = tmp_path / "pub"
    server = ManifestServer(out).start()
    yield repo, out, server
    server.stop()


@pytest.fixture
def git_daemon(tmp_path):
    base = tmp_path / "daemon-root"
    base.mkdir()
    daemon = GitDaemon(base).start()
    yield daemon
    daemon.stop()


@pytest.fixture
def smart_http(tmp_path):
    root = tmp_path / "http-root"
    root.mkdir()
    server = SmartHTTP(root)
    yield server
    server.stop()


@pytest.fixture
def agent_factory(tmp_path):
    """Agent(name) factory; every agent and app it started is killed at teardown."""
    made = []

    def make(name: str = "agent") -> Agent:
        a = Agent(tmp_path, name)
        made.append(a)
        return a

    yield make
    for a in made:
        a.cleanup()
