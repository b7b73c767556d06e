"""What the rest of the fleet says about one app's commits: the seam between an app's state
machine and fleet coordination.

The machine asks three questions and reports two facts; it never knows how the answers are
shared. `LocalOnly` (no broker) answers "nothing known, no wait". The MQTT implementation
shares bans between devices following the same remote and branch, and spreads a new commit
over rollout waves. The rules it must keep: a fleet ban can only keep a device on what it
runs (it never makes a device deploy anything), and a rollout delay only postpones.
"""

from __future__ import annotations

from typing import Protocol


class AppFleet(Protocol):
    def banned(self, commit: str) -> str | None:
        """Why the fleet has banned `commit` (e.g. "banned by pi-17 at ..."), or None."""

    def rollout_delay_s(self, commit: str) -> float:
        """How long after first seeing `commit` this device waits before deploying it."""

    def ban(self, commit: str, reason: str) -> None:
        """This device banned `commit` (its fallback ran healthily): tell the fleet."""

    def clear(self, commits: tuple[str, ...]) -> None:
        """`huddle retry`: lift these bans (every ban when empty) fleet-wide."""


class LocalOnly:
    """No fleet: every device decides alone."""

    def banned(self, commit: str) -> str | None:
        return None

    def rollout_delay_s(self, commit: str) -> float:
        return 0.0

    def ban(self, commit: str, reason: str) -> None:
        return None

    def clear(self, commits: tuple[str, ...]) -> None:
        return None
