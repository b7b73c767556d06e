"""How the agent tells the outside world what it is doing.

The agent owns a Reporter and calls three cheap, non-blocking methods on it: `changed()` when
any app's state changed (the reporter coalesces and publishes the status soon), `event()` for
one deploy / rollback / restart / health change, and `close()` on a clean exit. `NullReporter`
is used when no broker is configured; the MQTT implementation lives in `huddle.mqtt` so the core
never imports paho unless asked to.

The status snapshot the agent hands to a reporter (`apps_snapshot()`) is, per app name:
  {"commit", "branch", "running", "healthy", "restarts", "last_deploy", "last_error"}
exactly the `apps` object of the `huddle/<device>/status` payload (docs/mqtt.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

AppsSnapshot = Callable[[], dict]

# event names used on huddle/<device>/events
EVENTS = ("deploy", "rollback", "restart", "health", "good", "adopt", "error")


class Reporter(Protocol):
    async def start(self) -> None: ...

    def changed(self) -> None: ...

    def event(self, app: str, event: str, commit: str | None, detail: str) -> None: ...

    async def close(self) -> None: ...


class NullReporter:
    """Reports nothing: the agent without a broker."""

    async def start(self) -> None:
        return None

    def changed(self) -> None:
        return None

    def event(self, app: str, event: str, commit: str | None, detail: str) -> None:
        return None

    async def close(self) -> None:
        return None
