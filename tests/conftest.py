"""Shared fixtures: real services on loopback."""
from __future__ import annotations

import pytest

from tests.mosquitto import Broker


@pytest.fixture
def broker(tmp_path):
    """A real Mosquitto on a free loopback port; stopped after the test."""
    b = Broker(tmp_path / "broker").start()
    yield b
    b.kill()
