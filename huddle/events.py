"""What an app's state machine reacts to: one small record per kind of happening.

Every source posts into the app's one queue and never touches its state: the process watcher
(`Exited`), a health check task (`Checked`), a poll task (`Polled`), a git/hook task
(`TreeReady`), a timer (`Deadline`), the agent (`PollSoon`, `Retry`). The machine reads them
one at a time, so nothing about an app changes while another event about it is half handled.
A record that names a process is about that process only: the machine drops it once the
process is no longer the current one (a late exit or check of a replaced version).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from huddle.errors import HuddleError


@dataclass(frozen=True)
class Exited:
    proc: Any  # the AppProcess that exited
    code: int | None  # None when adopted (only a parent can read the status)


@dataclass(frozen=True)
class Checked:
    proc: Any
    ok: bool
    detail: str


@dataclass(frozen=True)
class Polled:
    commit: str | None  # the branch's commit on the remote
    error: HuddleError | OSError | None = None


@dataclass(frozen=True)
class TreeReady:
    """A git/hook task ended. `purpose` says what it was for:
    "prepare" (first look at the tree), "deploy" (a new commit beside the running app) or
    "switch" (the tree moved to a known commit for a rollback or a retry)."""

    purpose: str
    commit: str | None
    error: HuddleError | OSError | None = None
    first: bool = False  # prepare: the commit was never deployed from this tree
    refused: HuddleError | None = None  # prepare: the tree's head may not run (unsigned)


@dataclass(frozen=True)
class Deadline:
    kind: str  # "poll", "check", "trial", "restart"
    token: int  # stale timers (re-armed since) carry an old token


@dataclass(frozen=True)
class PollSoon:
    """Poll within `delay_s` (a fleet trigger); never later than the timer would."""

    delay_s: float


@dataclass(frozen=True)
class Retry:
    """Clear bans (all of them when `commits` is empty) and look at the branch again."""

    commits: tuple[str, ...] = ()
