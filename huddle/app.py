"""The controller of one app: follow its branch, keep it running, put deploys on trial.

Two coroutines per app share one lock: the *poller* wakes at a jittered interval (uniform in
[minimum, maximum], or a capped backoff after failures), asks the remote for the branch's
commit in one round trip and deploys it when it moved; the *supervisor* waits for whichever
comes first of the app's exit, its next health check and the end of a deploy's trial window.
Neither ever blocks the loop: git, hooks and the app are child processes awaited by it.

A deploy puts its commit *on trial* (huddle/trial.py decides how a trial ends: good, rolled
back, or given up). Outside a trial, a crash or `retries` failed checks restart the app with
capped exponential backoff.

The seams (git, process factory, health check, rng) let unit tests drive this in virtual time.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from pathlib import Path
from typing import Awaitable, Callable, Optional

from huddle.backoff import Backoff
from huddle.config import AppConfig
from huddle.errors import HuddleError
from huddle.git import GitRepo, redact
from huddle.hooks import append_log, run_hooks
from huddle.process import TAG_VAR, AppProcess, find_tagged, is_same_process, rotate_log
from huddle.report import NullReporter, Reporter
from huddle.state import AppState
from huddle.trial import Trial, TrialJudge

log = logging.getLogger("huddle.app")

RESTART_BACKOFF_S = (1.0, 60.0)
POLL_BACKOFF_CAP_S = 300.0
STABLE_AFTER_S = 60.0         # an app up this long has its crash count forgiven
LOG_MAX_BYTES = 10 * 1024 * 1024


class AppController(TrialJudge):
    def __init__(self, config: AppConfig, state: AppState, *, log_dir: Path, tag: str,
                 changed: Callable[[], None] = lambda: None,
                 reporter: Reporter = NullReporter(), git: Optional[GitRepo] = None,
                 start_process: Optional[Callable[..., Awaitable[AppProcess]]] = None,
                 health_check: Optional[Callable] = None,
                 rng: Optional[random.Random] = None, wall_clock: Callable[[], float] = time.time):
        self.config = config
        self.name = config.name
        self.state = state
        self.log_path = log_dir / f"{config.name}.log"
        self.tag = tag
        self._changed = changed
        self.reporter = reporter
        repo = config.repository
        self.git = git or GitRepo(repo.local_path, repo.executable)
        self.start_process = start_process or AppProcess.start
        self.log_dir = log_dir
        if health_check is None:
            from huddle import health
            health_check = health.check
        self.health_check = health_check
        self.rng = rng or random.Random()
        self.wall_clock = wall_clock
        self.lock = asyncio.Lock()
        self.proc: Optional[AppProcess] = None
        self.proc_started = 0.0
        self.trial: Optional[Trial] = None
        self.tree_ready = False
        self.health_failures = 0
        self.last_check = 0.0
        self.poll_error = False  # last_error came from polling: a good poll clears it
        self.poll_backoff = Backoff(config.timing.maximum_s, POLL_BACKOFF_CAP_S, self.rng)
        self.restart_backoff = Backoff(*RESTART_BACKOFF_S, rng=self.rng)
        self.wakeup = asyncio.Event()

    # -- small helpers -------------------------------------------------------------------
    def now(self) -> float:
        return asyncio.get_running_loop().time()

    def changed(self) -> None:
        self.state.running = self.proc is not None and self.proc.running
        self.state.pid = self.proc.pid if self.state.running else None
        self.state.pid_start = self.proc.start_ticks if self.state.running else None
        self.state.boot_id = self.proc.boot_id if self.state.running else None
        self._changed()
        self.reporter.changed()

    def event(self, kind: str, detail: str, commit: Optional[str] = None) -> None:
        log.info("%s: %s %s", self.name, kind, detail)
        self.reporter.event(self.name, kind, commit or self.state.commit, detail)

    def error(self, message: str) -> None:
        log.error("%s: %s", self.name, message)
        self.state.last_error = message
        self.changed()

    def app_env(self, commit: Optional[str] = None) -> dict:
        """The app's environment; `commit` is the one being installed, when not yet deployed."""
        env = dict(os.environ)
        env.update(self.config.application.environment)
        env[TAG_VAR] = self.tag
        env["HUDDLE_APP_NAME"] = self.name
        env["HUDDLE_COMMIT"] = commit or self.state.commit or ""
        return env

    # -- the two coroutines --------------------------------------------------------------
    async def run(self) -> None:
        """Run until cancelled; then stop the app gracefully."""
        self.state.branch = self.config.repository.branch
        self.state.stopped_reason = None
        tasks = [asyncio.ensure_future(self.poll_loop()),
                 asyncio.ensure_future(self.supervise_loop())]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.shield(self.stop_app("agent stopping"))

    async def poll_loop(self) -> None:
        timing = self.config.timing
        delay = 0.0  # the app starts from its existing tree at once
        while True:
            await asyncio.sleep(delay)
            try:
                async with self.lock:
                    if self.tree_ready:
                        await self.poll_once()
                        delay = self.rng.uniform(timing.minimum_s, timing.maximum_s)
                    elif await self.prepare_tree():
                        delay = self.rng.uniform(timing.minimum_s, timing.maximum_s)
                    else:
                        # no remote contact yet: the first look waits a jittered share of
                        # the interval, so a fleet restarted together (a power cut, a config
                        # push) does not poll its server in one burst
                        delay = self.rng.uniform(0, timing.maximum_s)
                self.poll_backoff.reset()
            except (HuddleError, OSError) as exc:
                # OSError: the disk or permissions beneath git, e.g. a full disk on rename
                delay = max(self.config.timing.minimum_s, self.poll_backoff.failed())
                self.error(f"{exc} (retrying in {delay:.0f} s)")
                self.poll_error = True
            try:
                rotate_log(self.log_path, LOG_MAX_BYTES)
            except OSError as exc:
                log.warning("%s: cannot rotate %s: %s", self.name, self.log_path, exc)

    async def supervise_loop(self) -> None:
        while True:
            proc = self.proc
            waiters = [asyncio.ensure_future(self.wakeup.wait())]
            if proc is not None and proc.running:
                waiters.append(proc.exited)
            timeout = self.next_deadline() - self.now() if proc is not None else None
            await asyncio.wait(waiters, timeout=max(0.0, timeout) if timeout is not None
                               else None, return_when=asyncio.FIRST_COMPLETED)
            waiters[0].cancel()
            self.wakeup.clear()
            if proc is None or proc is not self.proc:
                continue  # replaced (deploy, rollback) or not started yet
            if not proc.running:
                async with self.lock:
                    if proc is self.proc:
                        await self.on_exit(proc)
                continue
            if self.trial and self.now() >= self.trial.deadline:
                async with self.lock:
                    if proc is self.proc:
                        await self.judge_trial()
                continue
            if self.now() >= self.next_check_at():
                await self.check_health(proc)

    # -- polling and deploying -----------------------------------------------------------
    async def prepare_tree(self) -> bool:
        """Clone or adopt the working tree; returns True when it was just cloned."""
        repo = self.config.repository
        cloned = False
        if not self.git.is_clone():
            if not repo.remote_path:
                raise HuddleError(f"{repo.local_path} is not a git clone and `remote path` "
                                  "is empty: nothing to clone from")
            log.info("%s: cloning %s into %s", self.name, redact(repo.remote_path),
                     repo.local_path)
            await self.git.clone(repo.remote_path, repo.remote, repo.branch)
            cloned = True
        await self.git.ensure_remote(repo.remote, repo.remote_path)
        head = await self.git.head()
        if not cloned and self.state.commit and head != self.state.commit \
                and await self.git.has_commit(self.state.commit):
            # killed mid-deploy: the tree must match what state says is deployed
            await self.git.checkout(self.state.commit, repo.branch)
            head = self.state.commit
        await self.adopt_or_clear_orphans()
        if self.proc is None and head and head in self.state.bad:
            self.give_up(f"{head[:12]} is a rolled-back commit; waiting for a newer one")
        elif self.proc is None and head:
            if self.state.commit != head:
                # never deployed from this tree (fresh clone, or a clone made by hand): it
                # gets its hooks and install like any deploy; a failure is retried next poll
                await self.install_tree(head)
                self.state.commit = head
                self.state.deployed_at = self.wall_clock()
                self.event("deploy", f"deploying {head[:12]} (first deploy from this tree)",
                           head)
            await self.start_app(trial=self.state.commit != self.state.good, reason="start")
        self.tree_ready = True
        return cloned

    async def install_tree(self, commit: str) -> None:
        app = self.config.application
        await self.run_hooks(app.post_pull, "post-pull", commit)
        if app.install:
            await self.run_hooks([app.install], "install", commit)

    async def adopt_or_clear_orphans(self) -> None:
        """Exactly one copy runs: adopt the recorded process if it is really ours, stop any
        other process carrying this app's tag (started by an agent that died too soon)."""
        s = self.state
        if s.pid and is_same_process(s.pid, s.pid_start, s.boot_id):
            adopted = AppProcess.adopt(s.pid)
            if adopted is not None:
                self.proc, self.proc_started = adopted, self.now()
                if s.commit != s.good:
                    self.trial = self.new_trial(s.commit, rollback=False)
                log.info("%s: adopted running pid %d", self.name, s.pid)
                self.event("adopt", f"adopted pid {s.pid} left by a previous agent")
                self.changed()
                self.wakeup.set()
        for pid in find_tagged(self.tag):
            if self.proc is None or pid != self.proc.pid:
                orphan = AppProcess.adopt(pid)
                if orphan is not None:
                    log.warning("%s: stopping orphan pid %d of this app", self.name, pid)
                    await orphan.stop(self.config.application.stop_timeout_s)

    async def poll_once(self) -> None:
        repo = self.config.repository
        remote = await self.git.remote_head(repo.remote, repo.branch)
        if self.poll_error:
            self.poll_error = False
            self.state.last_error = None
            self.changed()
        if remote == self.state.commit or remote in self.state.bad:
            return
        await self.deploy(remote)

    async def run_hooks(self, commands, what: str, commit: Optional[str] = None) -> None:
        await run_hooks(commands, what, cwd=self.config.repository.local_path,
                        env=self.app_env(commit), log_path=self.log_path)

    def append_log(self, text: str) -> None:
        append_log(self.log_path, text)

    async def deploy(self, commit: str) -> None:
        repo, app = self.config.repository, self.config.application
        await self.run_hooks(app.pre_pull, "pre-pull")
        if not await self.git.has_commit(commit):
            commit = await self.git.fetch(repo.remote, repo.branch)
            if commit == self.state.commit or commit in self.state.bad:
                return
        previous = self.state.commit
        log.info("%s: deploying %s (was %s)", self.name, commit[:12], (previous or "-")[:12])
        await self.git.checkout(commit, repo.branch)
        try:
            await self.install_tree(commit)
        except HuddleError:
            if previous:  # the running app keeps a tree that matches it
                await self.git.checkout(previous, repo.branch)
            raise
        self.state.commit = commit
        self.state.deployed_at = self.wall_clock()
        self.state.stopped_reason = None
        await self.stop_app("deploy")
        self.event("deploy", f"deploying {commit[:12]}", commit)
        await self.start_app(trial=True, reason="deploy")

    # -- running the app -----------------------------------------------------------------
    async def start_app(self, trial: bool, reason: str, rollback: bool = False) -> None:
        self.health_failures = 0
        self.state.healthy = None
        self.state.health_detail = None
        self.trial = self.new_trial(self.state.commit, rollback) if trial else None
        try:
            self.proc = await self.start_process(
                self.config.application.start, cwd=self.config.repository.local_path,
                env=self.app_env(), log_path=self.log_path)
        except HuddleError as exc:
            self.proc = None
            self.changed()
            if trial:
                await self.fail_trial(str(exc))
            else:
                self.error(str(exc))
            return
        self.proc_started = self.now()
        self.append_log(f"--- huddle: started pid {self.proc.pid} at "
                        f"{(self.state.commit or '-')[:12]} ({reason})")
        self.changed()
        self.wakeup.set()

    async def stop_app(self, reason: str) -> None:
        proc, self.proc = self.proc, None
        self.trial = None
        if proc is not None and proc.running:
            code = await proc.stop(self.config.application.stop_timeout_s)
            self.append_log(f"--- huddle: stopped pid {proc.pid} ({reason}), status {code}")
        self.changed()
        self.wakeup.set()

    async def on_exit(self, proc: AppProcess) -> None:
        code = proc.exited.result()
        detail = "exited" + (f" with status {code}" if code is not None else "")
        self.append_log(f"--- huddle: pid {proc.pid} {detail}")
        self.proc = None
        self.state.healthy = False
        if self.trial:
            await self.fail_trial(f"app {detail}")
            return
        if self.now() - self.proc_started >= STABLE_AFTER_S:
            self.restart_backoff.reset()
        delay = self.restart_backoff.failed()
        self.error(f"app {detail}; restarting in {delay:.1f} s")
        await self.restart_later(delay, proc)

    async def restart_later(self, delay: float, old: AppProcess) -> None:
        self.lock.release()  # a deploy may run while we wait
        try:
            await asyncio.sleep(delay)
        finally:
            await self.lock.acquire()
        if self.proc is None and not self.state.stopped_reason and self.state.commit:
            self.state.restarts += 1
            self.event("restart", f"restart #{self.state.restarts} after pid {old.pid} failed")
            await self.start_app(trial=False, reason="restart")

    # -- health --------------------------------------------------------------------------
    def next_check_at(self) -> float:
        h = self.config.health
        first = self.proc_started + (h.grace_s if h.type == "none" else min(h.grace_s, 1.0))
        return max(first, self.last_check + h.interval_s)

    def next_deadline(self) -> float:
        deadline = self.next_check_at()
        if self.trial:
            deadline = min(deadline, self.trial.deadline)
        return deadline

    async def check_health(self, proc: AppProcess) -> None:
        h = self.config.health
        self.last_check = self.now()
        if h.type == "none":
            ok, detail = True, "running"
        else:
            result = await self.health_check(h)
            ok, detail = result.ok, result.detail
        if proc is not self.proc or not proc.running:
            return  # the app changed while we looked: this verdict is about a gone process
        in_grace = self.now() < self.proc_started + h.grace_s
        if ok:
            self.health_failures = 0
            if self.now() - self.proc_started >= STABLE_AFTER_S:
                self.restart_backoff.reset()
            if self.state.healthy is not True:
                self.state.healthy, self.state.health_detail = True, detail
                self.event("health", f"healthy: {detail}")
                self.changed()
            return
        if in_grace:
            return
        self.health_failures += 1
        self.state.health_detail = detail
        if self.health_failures < h.retries:
            return
        was_healthy = self.state.healthy
        self.state.healthy = False
        if was_healthy is not False:
            self.event("health", f"unhealthy: {detail}")
        self.changed()  # report the verdict now, not after the stop timeout
        async with self.lock:
            if proc is not self.proc:
                return
            if self.trial:
                await self.fail_trial(f"unhealthy {h.retries} times: {detail}")
                return
            await self.stop_app("unhealthy")
            delay = self.restart_backoff.failed()
            self.error(f"unhealthy {h.retries} times ({detail}); restarting in {delay:.1f} s")
            await self.restart_later(delay, proc)
