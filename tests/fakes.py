"""Fakes for driving an AppController in virtual time: a fake remote, working tree,
processes and health check (`World`), and a controller wired to them (`controller`)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from huddle.app import AppController
from huddle.config import AppConfig, ApplicationConfig, HealthConfig, RepositoryConfig, TimingConfig
from huddle.health import HealthResult
from huddle.state import AppState


def sha(n: int) -> str:
    return f"{n:040x}"


class World:
    """The fake remote, working tree, processes and health of one app."""

    def __init__(self) -> None:
        self.remote = sha(1)
        self.local: set = set()
        self.tree = None  # the commit checked out in the working tree
        self.cloned = False
        self.calls: list = []  # (virtual time, git verb)
        self.remote_error = None
        self.fetch_error: dict = {}  # commit -> error its fetch raises
        self.remote_delay_s = 0.0
        self.crash_after_s: dict = {}  # commit -> seconds after start it exits with 1
        self.unhealthy: set = set()  # commits whose health check fails
        self.starts: list = []  # (time, commit)
        self.procs: list = []
        self.next_pid = 100

    # git seam
    def is_clone(self) -> bool:
        return self.cloned

    async def clone(self, url, remote, branch) -> None:
        self.calls.append((now(), "clone"))
        self.cloned, self.tree = True, self.remote
        self.local.add(self.remote)

    async def ensure_remote(self, remote, url) -> None:
        return None

    async def adoption_problem(self, remote, url, branch):
        return None

    async def head(self):
        return self.tree

    async def has_commit(self, commit) -> bool:
        return commit in self.local

    async def remote_head(self, remote, branch) -> str:
        self.calls.append((now(), "ls-remote"))
        await asyncio.sleep(self.remote_delay_s)
        if self.remote_error:
            raise self.remote_error
        return self.remote

    async def fetch(self, remote, branch) -> str:
        self.calls.append((now(), "fetch"))
        if self.remote in self.fetch_error:
            raise self.fetch_error[self.remote]
        self.local.add(self.remote)
        return self.remote

    async def checkout(self, commit, branch) -> None:
        self.calls.append((now(), "checkout"))
        self.tree = commit

    # process seam
    async def start_process(self, argv, *, cwd, env, log_path):
        commit = env["HUDDLE_COMMIT"]
        proc = FakeProcess(self.next_pid, commit)
        self.next_pid += 1
        self.starts.append((now(), commit))
        self.procs.append(proc)
        after = self.crash_after_s.get(commit)
        if after is not None:
            asyncio.get_running_loop().call_later(after, proc.exit, 1)
        return proc

    def running(self):
        return [p for p in self.procs if p.running]

    # health seam
    async def health(self, cfg):
        live = self.running()
        ok = bool(live) and live[-1].commit not in self.unhealthy
        return HealthResult(ok, "HTTP 200" if ok else "HTTP 500", 0.001)


class FakeProcess:
    def __init__(self, pid: int, commit: str) -> None:
        self.pid, self.commit = pid, commit
        self.exited = asyncio.get_running_loop().create_future()
        self.adopted, self.start_ticks, self.boot_id = False, None, None

    @property
    def running(self) -> bool:
        return not self.exited.done()

    def exit(self, code: int) -> None:
        if not self.exited.done():
            self.exited.set_result(code)

    async def stop(self, timeout_s: float):
        self.exit(-15)
        return self.exited.result()


def now() -> float:
    return asyncio.get_running_loop().time()


def make_config(
    tmp_path: Path, health: str = "http", minimum=5.0, maximum=10.0, grace=2.0
) -> AppConfig:
    return AppConfig(
        name="web",
        source=tmp_path / "web.json",
        repository=RepositoryConfig(local_path=tmp_path / "web", remote_path="/origin.git"),
        timing=TimingConfig(minimum, maximum),
        application=ApplicationConfig(start=("web",), stop_timeout_s=1.0),
        health=HealthConfig(
            type=health,
            port=8080 if health != "none" else None,
            interval_s=1.0,
            timeout_s=0.5,
            retries=2,
            grace_s=grace,
        ),
    )


def controller(world: World, tmp_path: Path, state: AppState = None, **kw) -> AppController:
    c = AppController(
        make_config(tmp_path, **kw),
        state or AppState(),
        log_dir=tmp_path / "logs",
        tag=f"unit-test-{id(world)}",
        git=world,
        start_process=world.start_process,
        health_check=world.health,
    )
    return c
