"""One app's lifecycle: a state machine that reads one queue of events.

The states and their transitions are in huddle/states.py; this module is the table's code.
Everything that happens to an app arrives as an event (huddle/events.py): its process exited,
a health check came back, a poll or a git/hook task ended, a timer fired, the agent asked
for a poll or a retry. `run` reads them one at a time from the app's mailbox
(huddle/mailbox.py) and `enter` is the only place the state changes (it logs the move and
reports it), so no lock is needed and no event is half handled when the next arrives. Work
that takes time runs in child tasks that post their result: at most one git/hook task (a
poll, a deploy, a rollback's checkout; huddle/tree.py) and one health check. Processes are
started and stopped here, awaited briefly (the stop timeout bounds it).

The policy, which keeps a device serving whenever any version can run:

- A deploy happens beside the running version (fetch, checkout, hooks, install) and puts the
  new commit on **trial**: it must stay up (and healthy, with a check) through
  `grace + retries × interval`. Passing makes it the **good** commit.
- A commit that fails its trial is rolled back to its **fallback** (the good commit, else the
  newest earlier one that was healthy when superseded), which goes on trial in turn. Only
  when the fallback then passes is the failed commit banned (`bad`). If the fallback fails
  too, the environment is at fault (a port still taken, a database not up): nothing is
  banned and the newest commit is retried after a capped, jittered delay (**crashloop**),
  then its fallback again, until one runs.
- With no fallback, a failing commit is retried the same way: never left stopped.
- Outside a trial, a crash or `retries` failed checks restart the app with capped backoff.
- A failed deploy (fetch, hooks, install) leaves the running version serving and its tree in
  place; the commit is retried with backoff, a newer one at the next poll. A refusal (the
  commit would overwrite untracked files) waits for the branch to move.
- Only the user stops an app (config removed, agent stopping).

The seams (git, process factory, health check, rng, clock) let unit tests drive this in
virtual time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huddle.applog import AppLog
from huddle.backoff import Backoff
from huddle.config import AppConfig
from huddle.errors import HuddleError
from huddle.events import Checked, Deadline, Exited, Polled, PollSoon, Retry, TreeReady
from huddle.fleetpolicy import AppFleet, LocalOnly
from huddle.gate import DeployGate
from huddle.git import GitRepo
from huddle.hooks import append_log
from huddle.mailbox import Event, Mailbox
from huddle.process import TAG_VAR, AppProcess, child_environment
from huddle.report import NullReporter, Reporter
from huddle.state import AppState
from huddle.states import State, allowed
from huddle.supervisor import HealthCount, Verdict, adopt_or_stop_strays
from huddle.tree import Tree

log = logging.getLogger("huddle.app")

RESTART_BACKOFF_S = (1.0, 60.0)
POLL_BACKOFF_CAP_S = 300.0
STABLE_AFTER_S = 60.0  # an app up this long has its crash count forgiven


@dataclass
class Trial:
    commit: str
    deadline: float
    suspect: str | None = None  # a fallback's trial: the commit banned if this one passes


class AppController:
    def __init__(
        self,
        config: AppConfig,
        state: AppState,
        *,
        log_dir: Path,
        tag: str,
        changed: Callable[[], None] = lambda: None,
        reporter: Reporter | None = None,
        git: GitRepo | None = None,
        start_process: Callable[..., Awaitable[AppProcess]] | None = None,
        health_check: Callable[..., Awaitable[Any]] | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
        take_retry: Callable[[], tuple[str, ...] | None] = lambda: None,
        fleet: AppFleet | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.state = state
        self.log_path = log_dir / f"{config.name}.log"
        self.tag = tag
        self._changed = changed
        self.reporter: Reporter = reporter or NullReporter()
        repo = config.repository
        self.git = git or GitRepo(repo.local_path, repo.executable)
        self.tree = Tree(config, self.git, log_path=self.log_path, env_for=self.app_env)
        self.start_process = start_process or AppProcess.start
        if health_check is None:
            from huddle import health

            health_check = health.check
        self.health_check = health_check
        self.rng = rng or random.Random()
        self.wall_clock = wall_clock
        self.take_retry = take_retry  # a `huddle retry` waiting for this app's next poll
        self.fleet: AppFleet = fleet or LocalOnly()
        self.gate = DeployGate(
            state, self.fleet, retry_base_s=config.timing.maximum_s, rng=self.rng
        )
        self.skip_noted: tuple[str, str] | None = None  # (commit, kind) last said of a skip
        self.current = State.STOPPED
        self.box = Mailbox(config.name)
        self.proc: AppProcess | None = None
        self.trial: Trial | None = None
        self.newest: str | None = state.commit  # the commit the app should end up running
        # the process a previous agent recorded, to adopt once the tree is ready
        self.recorded = (state.pid, state.pid_start, state.boot_id)
        self.checking: asyncio.Task[None] | None = None
        self.after_work: Callable[[], Awaitable[None]] | None = None
        self.pending_suspect: str | None = None  # the switch under way is a rollback of it
        self.poll_due = False
        self.tree_ready = False
        self.poll_error = False  # last_error came from polling: a good poll clears it
        self.health = HealthCount(config.health, 0.0)  # of the current process
        self.poll_backoff = Backoff(config.timing.maximum_s, POLL_BACKOFF_CAP_S, self.rng)
        self.restart_backoff = Backoff(*RESTART_BACKOFF_S, rng=self.rng)
        AppLog.for_path(self.log_path).on_problem = self.log_problem

    # -- the one place the state changes ----------------------------------------------------
    def enter(self, new: State, why: str) -> None:
        old = self.current
        if not allowed(old, new):
            raise RuntimeError(f"{self.name}: {old} -> {new} is not a transition ({why})")
        self.current = new
        self.state.state = new.value
        if new is not old:
            log.info("%s: %s -> %s (%s)", self.name, old, new, why)
            self.reporter.event(self.name, "state", self.state.commit, f"{old} -> {new}: {why}")
        self.changed()

    # -- small helpers ------------------------------------------------------------------------
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def changed(self) -> None:
        running = self.proc is not None and self.proc.running
        self.state.running = running
        self.state.pid = self.proc.pid if self.proc is not None and running else None
        self.state.pid_start = self.proc.start_ticks if self.proc is not None and running else None
        self.state.boot_id = self.proc.boot_id if self.proc is not None and running else None
        self._changed()
        self.reporter.changed()

    def event(self, kind: str, detail: str, commit: str | None = None) -> None:
        log.info("%s: %s %s", self.name, kind, detail)
        self.reporter.event(self.name, kind, commit or self.state.commit, detail)

    def error(self, message: str) -> None:
        log.error("%s: %s", self.name, message)
        self.state.last_error = message
        self.changed()

    def log_problem(self, message: str | None) -> None:
        """The app's log file cannot be written (its output goes to the agent's stderr
        meanwhile), or, with None, can be again."""
        if message is not None:
            self.error(f"app log: {message}")
        elif (self.state.last_error or "").startswith("app log:"):
            self.state.last_error = None
            self.changed()

    def app_env(self, commit: str | None = None) -> dict[str, str]:
        """The app's (and its hooks') environment; `commit` is the one being installed."""
        app = self.config.application
        return child_environment(
            {
                **(app.environment if app is not None else {}),
                TAG_VAR: self.tag,
                "HUDDLE_APP_NAME": self.name,
                "HUDDLE_COMMIT": commit or self.state.commit or "",
            }
        )

    def post(self, event: Event) -> None:
        self.box.post(event)

    # -- the consumer -----------------------------------------------------------------------
    async def run(self) -> None:
        """Run until cancelled; then stop the app gracefully."""
        self.state.branch = self.config.repository.branch
        self.enter(State.SYNCING, "agent started")
        self.start_prepare()
        try:
            while True:
                await self.handle(await self.box.get())
        finally:
            await asyncio.shield(self.shutdown("agent stopping"))

    async def handle(self, event: Event) -> None:
        if isinstance(event, Deadline):
            if self.box.fresh(event):  # else re-armed or disarmed since
                await self.DEADLINES[event.kind](self)
        elif isinstance(event, Exited):
            if event.proc is self.proc:
                await self.on_exit(event.code)
        elif isinstance(event, Checked):
            self.checking = None
            if event.proc is self.proc:
                await self.on_checked(event.ok, event.detail)
        elif isinstance(event, (Polled, TreeReady)):
            self.box.work_done()
            if isinstance(event, Polled):
                await self.on_polled(event)
            else:
                await self.on_tree_ready(event)
            if not self.box.busy and self.after_work is not None:
                pending, self.after_work = self.after_work, None
                await pending()
            if not self.box.busy and self.poll_due:
                self.poll_due = False
                await self.on_poll_deadline()
        elif isinstance(event, PollSoon):
            if self.box.due_in("poll") > event.delay_s:
                self.box.arm("poll", event.delay_s)
        elif isinstance(event, Retry):
            self.on_retry(event.commits)
        else:
            raise TypeError(f"unknown event {event!r}")

    async def shutdown(self, reason: str) -> None:
        await self.box.close()
        if self.checking is not None:
            self.checking.cancel()
            await asyncio.gather(self.checking, return_exceptions=True)
            self.checking = None
        await self.stop_process(reason)
        self.state.healthy = None
        self.enter(State.STOPPED, reason)

    # -- the tree: prepare, poll, deploy ----------------------------------------------------
    def start_prepare(self) -> None:
        async def prepare() -> Event:
            prepared = await self.tree.prepare(self.state)
            return TreeReady(
                "prepare", prepared.commit, first=prepared.first, refused=prepared.refused
            )

        self.box.start_work(prepare(), lambda exc: TreeReady("prepare", None, exc))

    def arm_poll(self, *, first_look: bool = False) -> None:
        t = self.config.timing
        # a fleet restarted together (a power cut) spreads its first look over an interval
        self.box.arm("poll", self.rng.uniform(0 if first_look else t.minimum_s, t.maximum_s))

    def poll_failed(self, exc: HuddleError | OSError) -> None:
        delay = max(self.config.timing.minimum_s, self.poll_backoff.failed())
        self.error(f"{exc} (retrying in {delay:.0f} s)")
        self.poll_error = True
        self.box.arm("poll", delay)

    async def on_poll_deadline(self) -> None:
        if self.box.busy:
            self.poll_due = True  # after the running task: polls never overlap git work
            return
        if not self.tree_ready:
            self.start_prepare()
            return
        requested = self.take_retry()
        if requested is not None:
            self.on_retry(requested, poll=False)

        async def poll() -> Event:
            repo = self.config.repository
            return Polled(await self.git.remote_head(repo.remote, repo.branch))

        self.box.start_work(poll(), lambda exc: Polled(None, exc))

    async def on_polled(self, event: Polled) -> None:
        if event.error is not None or event.commit is None:
            self.poll_failed(event.error or HuddleError("no commit"))
            return
        self.poll_backoff.reset()
        self.arm_poll()
        if self.poll_error:
            self.poll_error = False
            self.state.last_error = None
            self.changed()
        commit = event.commit
        if not self.wants(commit):
            return
        self.start_deploy(commit)

    def wants(self, commit: str) -> bool:
        """Whether a commit seen on the branch should be deployed now."""
        if commit in (self.state.commit, self.newest):
            return False
        answer = self.gate.ask(commit, self.now())
        if answer.why_not is not None:
            self.note_skip(commit, answer.why_not, answer.kind)
        if answer.look_again_s is not None:
            self.box.arm("poll", min(self.box.due_in("poll"), answer.look_again_s))
        return answer.deploy

    def note_skip(self, commit: str, message: str, kind: str) -> None:
        """Say once per commit and reason why it is not deployed (log, state and an event):
        a commit that waited for its wave and is then banned by the fleet says both."""
        if self.skip_noted == (commit, kind):
            return
        self.skip_noted = (commit, kind)
        self.state.last_error = message
        self.event("skip", message, commit)
        self.changed()

    def start_deploy(self, commit: str) -> None:
        running = self.state.commit

        async def deploy() -> Event:
            return TreeReady("deploy", await self.tree.deploy(commit, running))

        self.box.start_work(deploy(), lambda exc: TreeReady("deploy", commit, exc))

    async def on_tree_ready(self, event: TreeReady) -> None:
        if event.purpose == "prepare":
            await self.on_prepared(event)
        elif event.purpose == "deploy":
            await self.on_deployed(event)
        else:
            await self.on_switched(event)

    async def on_prepared(self, event: TreeReady) -> None:
        if event.error is not None:
            self.poll_failed(event.error)
            return
        cloned = not self.tree_ready and event.first and self.state.commit is None
        self.tree_ready = True
        self.poll_backoff.reset()
        self.arm_poll(first_look=not cloned)
        commit = event.commit
        if event.refused is not None:
            self.error(str(event.refused))
            self.event("error", str(event.refused))
        if commit is None:
            return  # an empty branch, or a head that may not run: wait for a commit
        if event.first:
            self.state.commit = self.newest = commit
            self.state.deployed_at = self.wall_clock()
            self.event("deploy", f"deploying {commit[:12]} (first deploy from this tree)", commit)
        if self.config.application is None:
            self.state.good = commit
            self.enter(State.SYNC_ONLY, f"tree at {commit[:12]}")
            return
        if not await self.adopt():
            await self.launch(trial=self.state.commit != self.state.good, reason="start")

    async def on_deployed(self, event: TreeReady) -> None:
        commit = event.commit or ""
        if event.error is not None:
            self.deploy_failed(commit, event.error)
            return
        self.gate.deployed()
        if commit == self.state.commit or commit in self.state.bad:
            return  # the branch moved back while we fetched
        previous = self.state.commit
        if self.config.application is None:
            self.state.commit = self.state.good = self.newest = commit
            self.state.deployed_at = self.wall_clock()
            self.event("deploy", f"tree at {commit[:12]} (was {(previous or '-')[:12]})", commit)
            self.enter(State.SYNC_ONLY, f"tree at {commit[:12]}")
            return
        if self.current is State.TRIAL and previous and self.up_and_healthy():
            self.state.fallback = previous  # healthy when superseded: a fallback candidate
        await self.stop_process("deploy")
        self.state.commit = self.newest = commit
        self.state.deployed_at = self.wall_clock()
        self.event("deploy", f"deploying {commit[:12]} (was {(previous or '-')[:12]})", commit)
        await self.launch(trial=True, reason="deploy")

    def deploy_failed(self, commit: str, exc: HuddleError | OSError) -> None:
        delay = self.gate.deploy_failed(commit, exc, self.now())
        keeps = "the running version keeps serving; " if self.proc is not None else ""
        if delay == math.inf:
            self.error(
                f"refused to deploy {commit[:12]}: {exc}; {keeps}a new commit on the "
                "branch is tried"
            )
        else:
            self.error(
                f"deploy of {commit[:12]} failed: {exc}; {keeps}retrying in "
                f"{delay:.0f} s or when the branch moves"
            )
        self.event("error", self.state.last_error or "", commit)

    # -- starting and stopping the process ----------------------------------------------------
    def stop_timeout_s(self) -> float:
        app = self.config.application
        return app.stop_timeout_s if app is not None else 10.0

    async def launch(self, *, trial: bool, reason: str, suspect: str | None = None) -> None:
        """Start the process at state.commit; on trial, or as the good commit."""
        commit = self.state.commit or ""
        if self.proc is not None:
            raise RuntimeError(f"{self.name}: a second process while one runs")
        app = self.config.application
        assert app is not None
        self.state.healthy = None
        self.state.health_detail = None
        self.box.disarm("restart")
        try:
            proc = await self.start_process(
                app.start,
                cwd=self.config.repository.local_path,
                env=self.app_env(),
                log_path=self.log_path,
            )
        except HuddleError as exc:
            self.trial = Trial(commit, self.now(), suspect) if trial else None
            await self.process_failed(f"cannot start: {exc}")
            return
        append_log(self.log_path, f"--- huddle: started pid {proc.pid} at {commit[:12]} ({reason})")
        self.up(proc, trial=trial, suspect=suspect, why=f"{commit[:12]} started ({reason})")

    def up(self, proc: AppProcess, *, trial: bool, suspect: str | None = None, why: str) -> None:
        """`proc` now runs state.commit: watch its exit and health, and put it on trial."""
        self.proc = proc
        self.health = HealthCount(self.config.health, self.now())
        proc.exited.add_done_callback(lambda f: self.post(Exited(proc, _exit_code(f))))
        self.box.arm("check", self.health.next_check_at() - self.now())
        self.trial = None
        if trial:
            h = self.config.health
            window_s = h.grace_s + h.retries * h.interval_s
            self.trial = Trial(self.state.commit or "", self.now() + window_s, suspect)
            self.box.arm("trial", window_s)
            self.enter(State.TRIAL, f"{why}, on trial")
        else:
            self.enter(State.RUNNING, why)

    async def stop_process(self, reason: str) -> None:
        proc, self.proc = self.proc, None
        self.trial = None
        for kind in ("check", "trial"):
            self.box.disarm(kind)
        if proc is not None and proc.running:
            code = await proc.stop(self.stop_timeout_s())
            append_log(
                self.log_path, f"--- huddle: stopped pid {proc.pid} ({reason}), status {code}"
            )
        self.changed()

    async def adopt(self) -> bool:
        """Adopt the process a previous agent left running (stopping stray copies); returns
        whether there was one."""
        recorded, self.recorded = self.recorded, (None, None, None)
        proc = await adopt_or_stop_strays(
            self.name, recorded, self.tag, self.log_path, self.stop_timeout_s()
        )
        if proc is None:
            return False
        self.event("adopt", f"adopted running pid {proc.pid} left by a previous agent")
        self.up(proc, trial=self.state.commit != self.state.good, why=f"adopted pid {proc.pid}")
        self.box.arm("check", 0.0)
        return True

    # -- verdicts -------------------------------------------------------------------------------
    async def on_exit(self, code: int | None) -> None:
        detail = "exited" + (f" with status {code}" if code is not None else "")
        proc = self.proc
        append_log(self.log_path, f"--- huddle: pid {proc.pid if proc else '?'} {detail}")
        await self.process_failed(f"app {detail}")

    async def process_failed(self, reason: str) -> None:
        """The process exited, could not start, or failed its checks `retries` times."""
        ran_s = self.now() - self.health.started_at if self.proc is not None else 0.0
        self.state.healthy = False
        if self.trial is not None:
            await self.fail_trial(reason)
            return
        await self.stop_process("failed")
        if ran_s >= STABLE_AFTER_S:
            self.restart_backoff.reset()
        delay = self.restart_backoff.failed()
        self.error(f"{reason}; restarting in {delay:.1f} s")
        self.box.arm("restart", delay)
        self.enter(State.BACKOFF, reason)

    async def fail_trial(self, reason: str) -> None:
        trial = self.trial
        assert trial is not None
        await self.stop_process("failed trial")
        if self.box.busy:
            # a deploy is under way: it lands a newer commit, or else we continue here
            self.after_work = lambda: self.after_failed_trial(trial, reason)
            self.state.last_error = f"{trial.commit[:12]} failed its trial: {reason}"
            self.enter(State.SYNCING, f"{trial.commit[:12]} failed; a deploy is under way")
            return
        await self.after_failed_trial(trial, reason)

    async def after_failed_trial(self, trial: Trial, reason: str) -> None:
        if self.proc is not None:
            return  # the deploy that was under way started a newer commit
        failed = trial.commit
        if trial.suspect is not None:
            # the fallback failed too: blame the environment, ban nothing, retry the newest
            self.crashloop(
                f"{failed[:12]} failed as well ({reason}) after "
                f"{trial.suspect[:12]} failed: the environment is at fault, "
                "nothing is banned"
            )
            return
        fallback = self.fallback_for(failed)
        if fallback is None:
            self.crashloop(f"{failed[:12]} failed ({reason}) and nothing earlier ran healthily")
            return
        self.event(
            "rollback", f"{failed[:12]} failed ({reason}); rolling back to {fallback[:12]}", failed
        )
        self.state.last_error = f"rolled back {failed[:12]}: {reason}"
        self.switch_to(fallback, suspect=failed, why=f"rolling back to {fallback[:12]}")

    def fallback_for(self, failed: str) -> str | None:
        for commit in (self.state.good, self.state.fallback):
            if commit and commit != failed and commit not in self.state.bad:
                return commit
        return None

    def crashloop(self, reason: str) -> None:
        delay = self.restart_backoff.failed()
        target = self.newest or self.state.commit or "-"
        self.error(f"{reason}; retrying {target[:12]} in {delay:.1f} s")
        self.box.arm("restart", delay)
        self.enter(State.CRASHLOOP, reason)

    def switch_to(self, commit: str, *, suspect: str | None, why: str) -> None:
        """Move the tree to a commit deployed before, then start it on trial."""
        self.enter(State.SYNCING, why)
        running = self.state.commit

        async def switch() -> Event:
            await self.tree.switch(commit, running)
            return TreeReady("switch", commit)

        self.pending_suspect = suspect
        self.box.start_work(switch(), lambda exc: TreeReady("switch", commit, exc))

    async def on_switched(self, event: TreeReady) -> None:
        suspect, self.pending_suspect = self.pending_suspect, None
        if event.error is not None:
            self.crashloop(f"cannot move the tree to {(event.commit or '-')[:12]}: {event.error}")
            return
        self.state.commit = event.commit
        self.state.deployed_at = self.wall_clock()
        await self.launch(trial=True, reason="rollback" if suspect else "retry", suspect=suspect)

    def pass_trial(self) -> None:
        trial = self.trial
        assert trial is not None
        self.trial = None
        self.box.disarm("trial")
        self.state.good = trial.commit
        self.state.fallback = None
        self.state.healthy = True
        self.restart_backoff.reset()
        if trial.suspect is not None:
            if trial.suspect not in self.state.bad:
                self.state.bad.append(trial.suspect)
            self.newest = trial.commit
            reason = (
                f"{trial.suspect[:12]} is banned: its fallback {trial.commit[:12]} runs healthily"
            )
            self.event("ban", reason, trial.suspect)
            self.fleet.ban(trial.suspect, self.state.last_error or reason)
        else:
            self.state.last_error = None
        self.event("good", f"{trial.commit[:12]} passed its health window", trial.commit)
        self.enter(State.RUNNING, f"{trial.commit[:12]} passed its window")

    def up_and_healthy(self) -> bool:
        up = self.proc is not None and self.proc.running
        return up and (self.config.health.type == "none" or self.state.healthy is True)

    # -- timers ---------------------------------------------------------------------------------
    async def on_trial_deadline(self) -> None:
        if self.trial is None:
            return
        if self.up_and_healthy():
            self.pass_trial()
            return
        await self.process_failed(
            f"not healthy at the end of its window "
            f"({self.state.health_detail or 'no successful check'})"
        )

    async def on_restart_deadline(self) -> None:
        if self.current is State.BACKOFF:
            self.state.restarts += 1
            self.event("restart", f"restart #{self.state.restarts}")
            await self.launch(trial=False, reason="restart")
        elif self.current is State.CRASHLOOP:
            self.state.restarts += 1
            target = self.newest or self.state.commit
            if target is None:
                return
            self.event("restart", f"retry #{self.state.restarts} of {target[:12]}", target)
            if self.box.busy:
                self.box.arm("restart", 1.0)  # a deploy is under way; look again shortly
                return
            self.switch_to(target, suspect=None, why=f"retrying {target[:12]}")

    # -- health -----------------------------------------------------------------------------
    async def on_check_deadline(self) -> None:
        proc = self.proc
        if proc is None or self.checking is not None:
            return
        self.health.begin(self.now())
        if self.config.health.type == "none":
            await self.on_checked(True, "running")
            return

        async def check() -> None:
            try:
                result = await self.health_check(self.config.health)
                self.post(Checked(proc, result.ok, result.detail))
            except Exception as exc:  # a check must end in a verdict, never in silence
                log.exception("%s: health check raised", self.name)
                self.post(Checked(proc, False, f"check error: {exc!r}"))

        self.checking = asyncio.ensure_future(check())

    async def on_checked(self, ok: bool, detail: str) -> None:
        verdict = self.health.record(ok, self.now())
        self.box.arm("check", self.health.next_check_at() - self.now())
        if verdict is Verdict.HEALTHY:
            if self.now() - self.health.started_at >= STABLE_AFTER_S and self.trial is None:
                self.restart_backoff.reset()
            if self.state.healthy is not True:
                self.state.healthy, self.state.health_detail = True, detail
                self.event("health", f"healthy: {detail}")
                self.changed()
            return
        if verdict is Verdict.GRACE:
            return
        self.state.health_detail = detail
        if verdict is Verdict.FAILING:
            return
        if self.state.healthy is not False:
            self.event("health", f"unhealthy: {detail}")
        self.state.healthy = False
        self.changed()  # report the verdict now, not after the stop timeout
        await self.process_failed(f"unhealthy {self.config.health.retries} times ({detail})")

    # -- the user's requests ---------------------------------------------------------------
    def on_retry(self, commits: tuple[str, ...], *, poll: bool = True) -> None:
        bad = self.state.bad
        cleared = [c for c in bad if not commits or any(c.startswith(p) for p in commits)]
        self.fleet.clear(commits)
        refused = self.gate.clear()
        if not cleared and not refused:
            return
        self.state.bad = [c for c in bad if c not in cleared]
        self.skip_noted = None
        self.event("retry", "cleared " + (", ".join(c[:12] for c in cleared) or "a refusal"))
        self.changed()
        if poll:
            self.post(PollSoon(0.0))

    DEADLINES: dict[str, Callable[[AppController], Awaitable[None]]] = {
        "poll": on_poll_deadline,
        "check": on_check_deadline,
        "trial": on_trial_deadline,
        "restart": on_restart_deadline,
    }


def _exit_code(future: asyncio.Future[Any]) -> int | None:
    if future.cancelled() or future.exception() is not None:
        return None
    result = future.result()
    return result if isinstance(result, int) else None
