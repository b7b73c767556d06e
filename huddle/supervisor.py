"""What an app's machine needs to know about its process beyond start and stop: which
process a previous agent left running (adopted, or stopped when it is a stray copy), and how
its health checks add up to a verdict.

`HealthCount` is the check arithmetic of one process: failures inside `grace` do not count,
a passing check clears the count, and `retries` consecutive failures are a verdict. With no
check configured, staying up through `grace` is the check. The machine decides what a
verdict means (a restart, or the end of a trial).
"""

from __future__ import annotations

import logging
from enum import Enum
from pathlib import Path

from huddle.config import HealthConfig
from huddle.process import AppProcess, find_tagged, is_same_process

log = logging.getLogger("huddle.app")


class Verdict(Enum):
    HEALTHY = "healthy"  # the check passed
    GRACE = "grace"  # failed, but inside the grace period: not counted
    FAILING = "failing"  # failed, fewer than `retries` times in a row
    FAILED = "failed"  # failed `retries` times in a row


class HealthCount:
    def __init__(self, cfg: HealthConfig, started_at: float) -> None:
        self.cfg = cfg
        self.started_at = started_at
        self.failures = 0
        self.last_check = -float("inf")

    def next_check_at(self) -> float:
        # a first look soon after the start (an HTTP app is often up within a second);
        # without a check, surviving the grace period is the first "check"
        first = self.started_at + (
            self.cfg.grace_s if self.cfg.type == "none" else min(self.cfg.grace_s, 1.0)
        )
        return max(first, self.last_check + self.cfg.interval_s)

    def begin(self, now: float) -> None:
        """A check starts now: the next one is due an interval after this start, not after
        its answer (a hung app whose checks each run into their timeout is still checked
        every interval)."""
        self.last_check = now

    def record(self, ok: bool, now: float) -> Verdict:
        if ok:
            self.failures = 0
            return Verdict.HEALTHY
        if now < self.started_at + self.cfg.grace_s:
            return Verdict.GRACE
        self.failures += 1
        return Verdict.FAILED if self.failures >= self.cfg.retries else Verdict.FAILING


async def adopt_or_stop_strays(
    name: str,
    recorded: tuple[int | None, int | None, str | None],
    tag: str,
    log_path: Path,
    stop_timeout_s: float,
) -> AppProcess | None:
    """Exactly one copy runs: adopt the process a previous agent recorded (pid, kernel start
    time, boot id) if it is really that process, and stop any other process carrying this
    app's tag (started by an agent that died before it could record it)."""
    pid, pid_start, boot = recorded
    adopted = None
    if pid and pid_start is not None and is_same_process(pid, pid_start, boot):
        adopted = AppProcess.adopt(pid, log_path=log_path)
    for stray_pid in find_tagged(tag):
        if adopted is None or stray_pid != adopted.pid:
            stray = AppProcess.adopt(stray_pid)
            if stray is not None:
                log.warning("%s: stopping orphan pid %d of this app", name, stray_pid)
                await stray.stop(stop_timeout_s)
    return adopted
