"""The agent: one asyncio loop running every app's state machine until SIGTERM or SIGINT.

It owns what the apps share: the state file (saved atomically whenever any app's state
changes), the reporter, the signals, and the set of apps. Each app's failures are its own:
an app whose git remote is down or whose hook hangs never delays another's poll, because
each app is a separate task and nothing in the loop blocks. Children are watched through
pidfds read by the loop (huddle/children.py), so no thread waits for any of them.

SIGHUP (`huddle reload`) rereads the config paths: new apps start, removed apps stop (their
trees stay) and leave the state and the reports, changed apps restart with their new config,
and untouched apps are not disturbed. A file that no longer validates is reported and its app
keeps running as it was: a typo in an edit must not take a working app down.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from huddle.app import AppController
from huddle.children import become_subreaper
from huddle.config import AppConfig, load_paths
from huddle.errors import HuddleError
from huddle.events import PollSoon
from huddle.fleetpolicy import AppFleet, LocalOnly
from huddle.report import NullReporter, Reporter
from huddle.requests import take_retry
from huddle.state import AppState, StateStore

log = logging.getLogger("huddle.agent")


def app_tag(state_dir: Path, name: str) -> str:
    """Identifies this app of this agent in its processes' environment."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return f"{digest}:{name}"


class Agent:
    def __init__(
        self,
        configs: list[AppConfig],
        store: StateStore,
        reporter: Reporter | None = None,
        paths: Sequence[Path] = (),
    ) -> None:
        self.configs = configs
        self.paths = list(paths)  # what a reload rereads
        self.store = store
        self.reporter: Reporter = reporter or NullReporter()
        self.states: dict[str, AppState] = {}
        self.controllers: dict[str, AppController] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.started = time.time()
        self.stop_requested: asyncio.Event | None = None
        self.save_pending = False
        self.save_error: str | None = None  # reported once, not at every change
        self.reloading: asyncio.Task[None] | None = None
        # fleet coordination per app (shared bans, rollout waves); set by the MQTT wiring
        self.fleet_for: Callable[[AppConfig], AppFleet] = lambda config: LocalOnly()

    def state_changed(self) -> None:
        """Schedule one save for this loop turn: a burst of changes (100 apps ending their
        trials together) costs one atomic write, not one per app."""
        if not self.save_pending:
            self.save_pending = True
            asyncio.get_running_loop().call_soon(self.save_state)

    def save_state(self) -> None:
        self.save_pending = False
        try:
            self.store.save(self.states)
        except HuddleError as exc:  # a full or read-only disk must not stop supervision
            if str(exc) != self.save_error:
                log.error("%s (apps keep running; retried at every change)", exc)
            self.save_error = str(exc)
        else:
            if self.save_error:
                log.info("state saved again after: %s", self.save_error)
            self.save_error = None

    def apps_snapshot(self) -> dict:
        """The `apps` object of the MQTT status payload."""
        out = {}
        for name, s in self.states.items():
            out[name] = {
                "commit": s.commit,
                "branch": s.branch,
                "state": s.state,
                "running": s.running,
                "healthy": s.healthy,
                "restarts": s.restarts,
                "last_deploy": s.deployed_at,
                "last_error": s.last_error,
            }
        return out

    def request_stop(self) -> None:
        if self.stop_requested is not None:
            self.stop_requested.set()

    def request_reload(self) -> None:
        if self.reloading is None or self.reloading.done():
            self.reloading = asyncio.ensure_future(self.reload())
        else:
            log.info("reload already under way; this SIGHUP is folded into it")

    def poll_soon(self, app: str, delay_s: float) -> None:
        """Have `app` poll within `delay_s` (a fleet trigger); never later than its timer."""
        controller = self.controllers.get(app)
        if controller is not None:
            controller.post(PollSoon(delay_s))

    # -- apps -------------------------------------------------------------------------------
    def start_app(self, config: AppConfig) -> None:
        state = self.states.setdefault(config.name, AppState())
        controller = AppController(
            config,
            state,
            log_dir=self.store.log_dir(),
            tag=app_tag(self.store.dir, config.name),
            changed=self.state_changed,
            reporter=self.reporter,
            take_retry=functools.partial(take_retry, self.store.dir, config.name),
            fleet=self.fleet_for(config),
        )
        self.controllers[config.name] = controller
        task = self.tasks[config.name] = asyncio.ensure_future(controller.run())
        task.add_done_callback(lambda t: self.app_ended(config, t))

    def app_ended(self, config: AppConfig, task: asyncio.Task[None]) -> None:
        """A machine only ends on its own by a bug: log it and start the app's machine
        again a second later; the other apps go on."""
        if task.cancelled() or self.tasks.get(config.name) is not task:
            return
        log.error(
            "app %s stopped by an internal error; restarting its controller",
            config.name,
            exc_info=task.exception(),
        )
        del self.tasks[config.name], self.controllers[config.name]
        asyncio.get_running_loop().call_later(1.0, self.restart_app, config)

    def restart_app(self, config: AppConfig) -> None:
        if config.name not in self.tasks:  # unless a reload started it meanwhile
            self.start_app(config)

    async def stop_app(self, name: str) -> None:
        """Stop one app's machine (it stops its process); its tree stays."""
        task = self.tasks.pop(name)
        self.controllers.pop(name)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    async def reload(self) -> None:
        configs, problems = load_paths(self.paths, self.store.dir)
        broken = {str(p.file) for p in problems}
        for problem in problems:
            log.error("reload: %s (skipped)", problem)
        wanted = {c.name: c for c in configs}
        for name, controller in list(self.controllers.items()):
            if name in wanted:
                if wanted[name] != controller.config:
                    log.info("reload: %s changed; restarting it with its new config", name)
                    await self.stop_app(name)
                    self.start_app(wanted[name])
            elif str(controller.config.source) in broken:
                log.warning("reload: %s keeps running with its previous config", name)
            else:
                log.info("reload: %s removed; stopping it (its tree stays)", name)
                await self.stop_app(name)
                self.states.pop(name, None)
        for name, config in wanted.items():
            if name not in self.controllers:
                log.info("reload: %s added", name)
                self.start_app(config)
        self.state_changed()
        self.reporter.changed()
        log.info("reloaded: %d app(s): %s", len(self.controllers), ", ".join(self.controllers))

    # -- the loop -----------------------------------------------------------------------------
    async def run(self) -> int:
        # orphans of apps (a daemon that double-forked) are re-parented to us, not to init:
        # so they are reaped, and an app's stop can find them
        become_subreaper()
        loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        # apps no longer configured leave the state: it describes what this agent runs
        self.states.update(self.store.load())
        for warning in self.store.load_warnings:
            log.warning("%s", warning)
        for name in set(self.states) - {c.name for c in self.configs}:
            del self.states[name]
        for config in self.configs:
            self.start_app(config)
        self.save_state()
        await self.reporter.start()
        log.info("huddle agent running %d app(s): %s", len(self.tasks), ", ".join(self.tasks))
        try:
            await self.stop_requested.wait()
        finally:
            log.info("stopping apps")
            if self.reloading is not None:
                self.reloading.cancel()
            tasks = list(self.tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.save_state()
            await self.reporter.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        return 0
