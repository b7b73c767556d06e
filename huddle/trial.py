"""A deploy's trial and how it ends: good, rolled back, or given up.

A deploy puts its commit *on trial*: it must stay up (and healthy, when a check is configured)
through `grace + retries × interval`. A commit that exits or turns unhealthy on trial is rolled
back to the last good commit and remembered as bad for good; a rollback whose own trial fails
leaves the app stopped with the reason in state instead of flapping.

This module owns only that verdict. `TrialJudge` is a mixin of the app controller rather than
a separate object, because every verdict acts on the controller's own state, process and tree
(stop the app, check out the good commit, start it again on a new trial); the controller
decides *when* to judge (its supervisor's deadline, an exit, failed checks), this decides
*what* follows.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

from huddle.errors import HuddleError

if TYPE_CHECKING:
    from huddle.config import AppConfig
    from huddle.git import GitRepo
    from huddle.process import AppProcess
    from huddle.state import AppState


@dataclass
class Trial:
    commit: str
    deadline: float
    rollback: bool  # True: this is the good commit we rolled back to


class TrialJudge:
    """Mixed into AppController; also uses its now, wall_clock, changed, event, error,
    run_hooks, start_app and stop_app."""
    config: AppConfig
    state: AppState
    git: GitRepo
    proc: Optional[AppProcess]
    trial: Optional[Trial]

    def new_trial(self, commit: str, rollback: bool) -> Trial:
        h = self.config.health
        return Trial(commit, self.now() + h.grace_s + h.retries * h.interval_s, rollback)

    async def judge_trial(self) -> None:
        trial = self.trial
        healthy = self.config.health.type == "none" or self.state.healthy is True
        if healthy and self.proc is not None and self.proc.running:
            self.trial = None
            self.state.good = trial.commit
            self.state.healthy = True
            self.state.stopped_reason = None
            if not trial.rollback:  # after a rollback, the error says which commit failed
                self.state.last_error = None
            self.event("good", f"{trial.commit[:12]} passed its health window")
            self.changed()
            return
        await self.fail_trial(f"not healthy at the end of its window "
                              f"({self.state.health_detail or 'no successful check'})")

    async def fail_trial(self, reason: str) -> None:
        trial, bad = self.trial, self.state.commit
        self.trial = None
        await self.stop_app("failed trial")
        good = self.state.good
        if trial is not None and trial.rollback:
            self.give_up(f"rollback to {bad[:12]} failed: {reason}")
            return
        if bad and bad != good and bad not in self.state.bad:
            self.state.bad.append(bad)
        if not good or good == bad:
            self.give_up(f"{(bad or '-')[:12]} failed ({reason}) and there is no good commit "
                         "to roll back to")
            return
        self.event("rollback", f"{bad[:12]} failed ({reason}); rolling back to {good[:12]}",
                   bad)
        self.state.last_error = f"rolled back {bad[:12]}: {reason}"
        try:
            await self.git.checkout(good, self.config.repository.branch)
            if self.config.application.install:
                await self.run_hooks([self.config.application.install], "install", good)
        except HuddleError as exc:
            self.give_up(f"rollback to {good[:12]} failed: {exc}")
            return
        self.state.commit = good
        self.state.deployed_at = self.wall_clock()
        await self.start_app(trial=True, reason="rollback", rollback=True)

    def give_up(self, message: str) -> None:
        """Leave the app stopped with a clear reason; only a new commit (or an agent
        restart) tries again."""
        self.state.stopped_reason = message
        self.event("error", message)
        self.error(message + "; app left stopped")
