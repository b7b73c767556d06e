"""Shared fixtures: real services on loopback."""
from __future__ import annotations

import pytest

from tests.microutil import ManifestServer, Repo
from tests.mosquitto import Broker


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto on a free loopback port; stopped after the test."""
    b = Broker(tmp_path / "broker").start()
    yield b
    b.kill()


@pytest.fixture
def site(tmp_path):
    """A repo to publish from, its publish dir, and a loopback HTTP server serving it."""
    repo = Repo(tmp_path / "repo")
    out = tmp_path / "pub"
    server = ManifestServer(out).start()
    yield repo, out, server
    server.stop()
