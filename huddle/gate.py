"""Whether a commit seen on the branch may be deployed now, for one app.

A poll that sees a new head asks the gate. It says no, with a reason to show once, when the
commit is banned here or by the fleet, when its rollout wave has not come yet (and when to
look again), or when its last deploy failed and its backoff has not ended. A deploy that
failed is remembered here: retried with capped backoff, or, when it was refused as it stands
(`RefusedError`: untracked files in its way, an untrusted signature), only once the branch
has moved on. Only the newest head is remembered: a branch that moves clears the past.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from huddle.backoff import Backoff
from huddle.errors import HuddleError, RefusedError
from huddle.fleetpolicy import AppFleet
from huddle.state import AppState

DEPLOY_RETRY_CAP_S = 300.0


@dataclass(frozen=True)
class Answer:
    deploy: bool
    why_not: str | None = None  # said once per commit and kind (log, state, event)
    look_again_s: float | None = None
    kind: str = ""  # what holds it back: "banned" or "wave"


@dataclass
class _Failed:
    commit: str
    not_before: float  # inf: until the branch moves to another commit
    backoff: Backoff


class DeployGate:
    def __init__(
        self, state: AppState, fleet: AppFleet, *, retry_base_s: float, rng: random.Random
    ) -> None:
        self.state = state
        self.fleet = fleet
        self.retry_base_s = retry_base_s
        self.rng = rng
        self.first_seen: dict[str, float] = {}  # commit -> when a poll first saw it
        self.failed: _Failed | None = None

    def ask(self, commit: str, now: float) -> Answer:
        if commit in self.state.bad:
            return Answer(False)
        banned = self.fleet.banned(commit)
        if banned is not None:
            return Answer(False, f"skipping {commit[:12]}: {banned}", kind="banned")
        first = self.first_seen.setdefault(commit, now)
        if len(self.first_seen) > 16:  # only the last few heads matter
            self.first_seen = {commit: first}
        wait_s = first + self.fleet.rollout_delay_s(commit) - now
        if wait_s > 0:
            why = f"{commit[:12]} waits for its rollout wave ({wait_s:.0f} s more)"
            return Answer(False, why, wait_s, kind="wave")
        failed = self.failed
        if failed is not None and failed.commit == commit:
            return Answer(now >= failed.not_before)
        self.failed = None  # the branch moved on: an older failure no longer matters
        return Answer(True)

    def deploy_failed(self, commit: str, exc: HuddleError | OSError, now: float) -> float:
        """Remember a failed deploy; returns the delay before it is tried again (inf: when
        the branch moves)."""
        if isinstance(exc, RefusedError):
            self.failed = _Failed(commit, math.inf, Backoff(1.0, 1.0))
            return math.inf
        failed = self.failed
        if failed is None or failed.commit != commit:
            failed = _Failed(commit, 0.0, Backoff(self.retry_base_s, DEPLOY_RETRY_CAP_S, self.rng))
        delay = failed.backoff.failed()
        failed.not_before = now + delay
        self.failed = failed
        return delay

    def deployed(self) -> None:
        self.failed = None

    def clear(self) -> bool:
        """`huddle retry`: forget a failure or refusal; returns whether there was one."""
        had, self.failed = self.failed is not None, None
        return had
