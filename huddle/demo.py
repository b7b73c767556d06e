"""`huddle demo`: the whole promise in one minute, on this machine, narrated.

It makes a throwaway origin repository holding a tiny web app, runs the real agent on it in
this process (the same Agent, controller, git and health code as `huddle run`), and then
plays three acts: the first deploy, a new commit rolling out, and a broken commit being
rolled back to the last good one. Every step is timed from the moment of the push. The agent's
own events are narrated through a reporter, and everything lives in one temporary directory
that is removed at the end, whatever happens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

from huddle.agent import Agent
from huddle.config import AppConfig, ApplicationConfig, HealthConfig, RepositoryConfig, TimingConfig
from huddle.errors import HuddleError
from huddle.runner import run_command
from huddle.state import StateStore

APP_SOURCE = '''\
"""The demo's web app: serves version.txt; refuses to start when it says `broken`."""
import http.server
import sys

VERSION = open("version.txt").read().strip()
if VERSION.startswith("broken"):
    sys.exit("this commit is broken on purpose: " + VERSION)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("hello from " + VERSION + "\\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
'''

GIT_ENV = {
    "GIT_AUTHOR_NAME": "huddle demo",
    "GIT_AUTHOR_EMAIL": "demo@huddle.invalid",
    "GIT_COMMITTER_NAME": "huddle demo",
    "GIT_COMMITTER_EMAIL": "demo@huddle.invalid",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
    "PATH": "/usr/bin:/bin",
}
STEP_TIMEOUT_S = 60.0


class Narrator:
    """Prints each line with the seconds since the act began; doubles as the agent's
    reporter so its deploy, rollback and health events join the story."""

    def __init__(self) -> None:
        self.act_started = time.monotonic()

    def act(self, title: str) -> None:
        self.act_started = time.monotonic()
        print(f"\n== {title}", flush=True)

    def say(self, text: str) -> None:
        print(f"  [{time.monotonic() - self.act_started:5.1f}s] {text}", flush=True)

    # Reporter interface
    async def start(self) -> None:
        return None

    def changed(self) -> None:
        return None

    def event(self, app: str, event: str, commit: str | None, detail: str) -> None:
        self.say(f"agent: {event}: {detail}")

    async def close(self) -> None:
        return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def fetch(port: int) -> str | None:
    """GET / on the app, as a user's browser would; None unless it answers 200."""
    writer = None
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1)
        writer.write(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        reply = await asyncio.wait_for(reader.read(65536), 1)
    except (OSError, asyncio.TimeoutError):
        return None
    finally:
        if writer is not None:
            writer.close()
    head, _, body = reply.partition(b"\r\n\r\n")
    return body.decode(errors="replace").strip() if head.startswith(b"HTTP/1.0 200") else None


class Demo:
    def __init__(self, root: Path, narrator: Narrator) -> None:
        self.root = root
        self.say = narrator.say
        self.narrator = narrator
        self.origin = root / "origin.git"
        self.work = root / "work"
        self.port = free_port()
        self.agent_task: asyncio.Future | None = None
        self.env = dict(GIT_ENV, PATH=__import__("os").environ.get("PATH", GIT_ENV["PATH"]))

    async def git(self, *args: str, cwd: Path | None = None) -> str:
        result = await run_command(
            ["git", *args], cwd=str(cwd or self.work), env=self.env, timeout_s=30
        )
        return result.stdout.strip()

    async def commit(self, version: str, message: str) -> str:
        (self.work / "version.txt").write_text(version + "\n")
        await self.git("add", "-A")
        await self.git("commit", "-q", "-m", message)
        await self.git("push", "-q", "origin", "HEAD:main")
        return (await self.git("rev-parse", "HEAD"))[:12]

    async def make_origin(self) -> None:
        await self.git("init", "-q", "--bare", "-b", "main", str(self.origin), cwd=self.root)
        await self.git("clone", "-q", str(self.origin), str(self.work), cwd=self.root)
        await self.git("checkout", "-q", "-b", "main")
        (self.work / "app.py").write_text(APP_SOURCE)

    def config(self) -> AppConfig:
        return AppConfig(
            name="web",
            source=self.root / "web.json",
            repository=RepositoryConfig(
                local_path=self.root / "deploy" / "web", remote_path=str(self.origin), branch="main"
            ),
            timing=TimingConfig(1.0, 2.0),
            application=ApplicationConfig(
                start=(sys.executable, "app.py", str(self.port)), stop_timeout_s=2.0
            ),
            health=HealthConfig(
                type="http",
                port=self.port,
                path="/",
                interval_s=1.0,
                timeout_s=1.0,
                retries=2,
                grace_s=1.0,
            ),
        )

    async def until(self, what: str, predicate) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while not predicate():
            if self.agent_task is not None and self.agent_task.done():
                raise HuddleError("demo: the agent stopped")
            if time.monotonic() > deadline:
                raise HuddleError(f"demo: gave up waiting for {what}")
            await asyncio.sleep(0.05)

    async def serving(self, text: str) -> None:
        deadline = time.monotonic() + STEP_TIMEOUT_S
        while True:
            got = await fetch(self.port)
            if got == text:
                self.say(f"GET http://127.0.0.1:{self.port}/ -> {got!r}")
                return
            if time.monotonic() > deadline or (self.agent_task and self.agent_task.done()):
                raise HuddleError(f"demo: the app never served {text!r} (last: {got!r})")
            await asyncio.sleep(0.05)

    async def play(self) -> None:
        n = self.narrator
        store = StateStore(self.root / "state")
        agent = Agent([self.config()], store, reporter=n)
        n.act("Act 1: a device meets its app")
        await self.make_origin()
        first = await self.commit("v1", "v1: first release")
        n.say(f"origin repo at {self.origin} has a tiny web app, commit {first} (v1)")
        n.say("starting the agent: poll every 1-2 s, HTTP health check every 1 s")
        agent_task = self.agent_task = asyncio.ensure_future(agent.run())
        try:
            await self.serving("hello from v1")
            await self.until("v1 to be judged good", lambda: agent.states["web"].good)
            n.say(f"state: v1 passed its health window; good = {first}")

            n.act("Act 2: a new commit rolls out")
            second = await self.commit("v2", "v2: a new feature")
            n.say(f"pushed {second} (v2); nobody tells the device")
            await self.serving("hello from v2")
            await self.until(
                "v2 to be judged good", lambda: (agent.states["web"].good or "").startswith(second)
            )
            n.say("v2 is live and good")

            n.act("Act 3: a broken commit is rolled back")
            broken = await self.commit("broken v3", "v3: oops, exits at start")
            n.say(f"pushed {broken}, which exits as soon as it starts")
            await self.until(
                "the rollback", lambda: any(c.startswith(broken) for c in agent.states["web"].bad)
            )
            await self.serving("hello from v2")
            await self.until(
                "v2 to pass its window again",
                lambda: (
                    agent.controllers["web"].trial is None and agent.states["web"].healthy is True
                ),
            )
            state = agent.states["web"]
            n.say(
                f"rolled back: serving v2 again; bad = {[c[:12] for c in state.bad]}; "
                f"{broken} will not be deployed again"
            )
            n.act("The state file (huddle status --json) says")
            print(
                json.dumps(
                    {
                        "web": {
                            k: getattr(state, k)
                            for k in ("commit", "good", "bad", "healthy", "restarts", "last_error")
                        }
                    },
                    indent=2,
                )
            )
        finally:
            agent.request_stop()
            await asyncio.wait_for(agent_task, 30)


def run_demo(keep: bool = False) -> int:
    if not shutil.which("git"):
        raise HuddleError("the demo needs git on PATH")
    logging.getLogger("huddle").setLevel(logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="huddle-demo-"))
    narrator = Narrator()
    print(f"huddle demo: everything happens in {root}", flush=True)
    try:
        asyncio.run(Demo(root, narrator).play())
        print("\nDemo complete: deploy, update and rollback, with no one pushing to the device.")
        return 0
    finally:
        if keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


def demo_command(args: argparse.Namespace) -> int:
    """`huddle demo [--keep]`."""
    return run_demo(keep=args.keep)
