"""The agent: one asyncio loop running every app's controller until SIGTERM or SIGINT.

It owns what the apps share: the state file (saved atomically whenever any app's state
changes), the reporter, and the stop signal. Each controller's failures are its own: an app
whose git remote is down or whose hook hangs never delays another's poll, because each app's
work is a separate coroutine and nothing in the loop blocks. On Python < 3.12 asyncio would
watch child processes with a thread each; the pidfd watcher keeps the agent single-threaded.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

from huddle.app import AppController
from huddle.config import AppConfig
from huddle.report import NullReporter, Reporter
from huddle.state import AppState, StateStore

log = logging.getLogger("huddle.agent")


def use_pidfd_child_watcher() -> None:
    """asyncio < 3.12 defaults to a thread per child; pidfds need none (Linux >= 5.3)."""
    if sys.version_info >= (3, 12):
        return  # asyncio already uses pidfds where the kernel has them
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            watcher = asyncio.PidfdChildWatcher()
            watcher.attach_loop(asyncio.get_running_loop())
            asyncio.set_child_watcher(watcher)
        except (AttributeError, OSError) as exc:
            log.warning("no pidfd child watcher (%s); asyncio will use a thread per child", exc)


def app_tag(state_dir: Path, name: str) -> str:
    """Identifies this app of this agent in its processes' environment."""
    digest = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
    return f"{digest}:{name}"


class Agent:
    def __init__(self, configs: List[AppConfig], store: StateStore,
                 reporter: Optional[Reporter] = None) -> None:
        self.configs = configs
        self.store = store
        self.reporter: Reporter = reporter or NullReporter()
        self.states: Dict[str, AppState] = {}
        self.controllers: Dict[str, AppController] = {}
        self.started = time.time()
        self.stop_requested: Optional[asyncio.Event] = None
        self.save_pending = False

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
        except Exception as exc:  # a full disk must not stop supervision; it is logged
            log.error("cannot save state: %s", exc)

    def apps_snapshot(self) -> dict:
        """The `apps` object of the MQTT status payload."""
        out = {}
        for name, s in self.states.items():
            out[name] = {"commit": s.commit, "branch": s.branch, "running": s.running,
                         "healthy": s.healthy, "restarts": s.restarts,
                         "last_deploy": s.deployed_at, "last_error": s.last_error}
        return out

    def request_stop(self) -> None:
        if self.stop_requested is not None:
            self.stop_requested.set()

    async def run(self) -> int:
        use_pidfd_child_watcher()
        loop = asyncio.get_running_loop()
        self.stop_requested = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        previous = self.store.load()
        log_dir = self.store.log_dir()
        for config in self.configs:
            state = previous.get(config.name, AppState())
            self.states[config.name] = state
            self.controllers[config.name] = AppController(
                config, state, log_dir=log_dir, tag=app_tag(self.store.dir, config.name),
                changed=self.state_changed, reporter=self.reporter)
        # apps removed from the configs keep their record (their history is not ours to drop)
        for name, state in previous.items():
            self.states.setdefault(name, state)
        self.save_state()
        await self.reporter.start()
        tasks = {name: asyncio.ensure_future(c.run()) for name, c in self.controllers.items()}
        log.info("huddle agent running %d app(s): %s", len(tasks), ", ".join(tasks))
        stop_wait = asyncio.ensure_future(self.stop_requested.wait())
        try:
            pending = set(tasks.values()) | {stop_wait}
            while not stop_wait.done():
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done - {stop_wait}:
                    # a controller only ends by a bug: log it, keep the other apps running
                    name = next(n for n, t in tasks.items() if t is task)
                    exc = task.exception() if not task.cancelled() else None
                    log.error("app %s controller stopped: %r", name, exc, exc_info=exc)
        finally:
            log.info("stopping apps")
            for task in tasks.values():
                task.cancel()
            await asyncio.gather(*tasks.values(), return_exceptions=True)
            stop_wait.cancel()
            self.save_state()
            await self.reporter.close()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return 0
