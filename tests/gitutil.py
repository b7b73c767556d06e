"""The harness of the tests and the benchmarks: real git remotes, the one tiny web app they
deploy, free ports, bounded waits and a `huddle run` agent. bench/common.py builds on it.

- `Origin`: a bare repository plus a work clone that commits and pushes to it. `app_commit()`
  commits the tiny HTTP app below; what it does (serve, crash, return 500, hang, ignore
  SIGTERM, fail or hang its install) is decided by the committed content, as a real bad
  commit would be.
- `GitDaemon`: `git daemon` on a free loopback port, ready once its stderr says so; can be
  stopped and started again on the same port (a remote that goes away and comes back).
- `SmartHTTP`: `git http-backend` as CGI behind a small threaded HTTP server on loopback,
  optionally demanding Basic auth (401) so auth failures can be tested.
- `git_wrapper()`: a shell script to use as `executable` that logs each argv, then runs git
  (optionally with extra `-c` options, or sleeping first to simulate a hung remote).
- `Agent`: `huddle run` as a subprocess with its own state dir; `wait()` polls state.json with
  a deadline; teardown kills the agent and every process tagged as one of its apps.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from huddle.agent import app_tag
from huddle.git import GitRepo
from huddle.process import TAG_VAR, start_time

# In CI (`.ci/run` sets CI) a missing tool or interpreter is a failure, never a skip: a skip
# there would hide what the suite did not test. Elsewhere a test says what is missing and skips.
IN_CI = bool(os.environ.get("CI"))


def needs_tool(name: str) -> Any:
    """Skip where `name` is not installed, except in CI, where the test runs and fails."""
    import pytest

    return pytest.mark.skipif(
        shutil.which(name) is None and not IN_CI, reason=f"{name} is not installed"
    )


PY = sys.executable
GIT = shutil.which("git") or "git"

# The deployed app. Its behaviour comes from files in its own tree: version.txt is what it
# serves, mode.txt says how it misbehaves. Environment knobs let a test flip it at run time.
APP_PY = r"""
import os, signal, socket, socketserver, subprocess, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

here = Path(__file__).resolve().parent
version = (here / "version.txt").read_text().strip()
mode = (here / "mode.txt").read_text().strip() if (here / "mode.txt").exists() else "ok"
port = int(sys.argv[1])
print(f"app version={version} mode={mode} pid={os.getpid()} "
      f"GREETING={os.environ.get('GREETING')}", flush=True)
if mode == "crash":
    print("crashing on purpose", file=sys.stderr, flush=True)
    sys.exit(3)
if mode == "ignoreterm":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.environ.get("APP_CHILD_PIDFILE"):
    child = subprocess.Popen(["sleep", "300"])
    Path(os.environ["APP_CHILD_PIDFILE"]).write_text(str(child.pid))
crash_file = os.environ.get("APP_CRASH_FILE")
if crash_file:
    def watch():
        while not os.path.exists(crash_file):
            time.sleep(0.05)
        print("crash file found, exiting", flush=True)
        os._exit(4)
    threading.Thread(target=watch, daemon=True).start()

if "--socket" in sys.argv:
    class Line(socketserver.StreamRequestHandler):
        def handle(self):
            request = self.request.recv(1024)  # the check sends no newline
            good = request.strip() == b"watchdog" and mode == "ok"
            self.wfile.write(b"OK\n" if good else b"NO\n")
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    socketserver.ThreadingTCPServer(("127.0.0.1", port), Line).serve_forever()

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if mode == "hang":
            time.sleep(3600)
        if self.path.startswith("/env/"):
            body = os.environ.get(self.path[5:], "").encode()
        else:
            body = version.encode()
        self.send_response(500 if mode == "500" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

ThreadingHTTPServer.allow_reuse_address = True
ThreadingHTTPServer.daemon_threads = True
ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""

INSTALL_SH = {
    "ok": 'echo "installed $(cat version.txt)" > installed.txt\n'
    'echo "$HUDDLE_COMMIT" > installed-commit.txt\n',
    "fail": 'echo "install is broken on purpose" >&2\nexit 7\n',
    "hang": "sleep 600\n",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    return free_port()


def git_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
        GIT_TERMINAL_PROMPT="0",
        LC_ALL="C",
        GIT_CONFIG_NOSYSTEM="1",
        HOME=os.environ.get("HOME", "/root"),
    )
    return env


def git(*args, cwd=None, check=True) -> str:
    result = subprocess.run(
        [GIT, *map(str, args)], cwd=cwd, env=git_env(), text=True, capture_output=True, timeout=60
    )
    if check and result.returncode != 0:
        raise AssertionError(f"git {' '.join(map(str, args))} failed: {result.stderr}")
    return result.stdout.strip()


class Origin:
    """A bare repo `NAME.git` under root and a work clone that pushes to it."""

    def __init__(self, root: Path, name: str = "app", branch: str = "main") -> None:
        self.root = Path(root)
        self.name = name
        self.branch = branch
        self.bare = self.root / f"{name}.git"
        self.work = self.root / f"{name}-work"
        self.root.mkdir(parents=True, exist_ok=True)
        git("init", "-q", "--bare", "-b", branch, self.bare)
        git("init", "-q", "-b", branch, self.work)
        git("remote", "add", "origin", self.bare, cwd=self.work)

    @property
    def url(self) -> str:
        return self.bare.as_uri()

    def commit(self, files: dict, message: str = "change", push: bool = True) -> str:
        """Write (str), or delete (None) files, commit everything and push; returns the sha."""
        for rel, content in files.items():
            path = self.work / rel
            if content is None:
                path.unlink()
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content)
        git("add", "-A", cwd=self.work)
        git("commit", "-q", "--allow-empty", "-m", message, cwd=self.work)
        if push:
            self.push()
        return self.head()

    def push(self) -> None:
        git("push", "-q", "--force", "origin", f"HEAD:refs/heads/{self.branch}", cwd=self.work)

    def head(self) -> str:
        return git("rev-parse", "HEAD", cwd=self.work)

    def app_commit(
        self, version: str, mode: str = "ok", install: str | None = None, extra: dict | None = None
    ) -> str:
        files = app_files(version, mode)
        if install is not None:
            files["install.sh"] = INSTALL_SH[install]
        files.update(extra or {})
        return self.commit(files, f"{version} ({mode})")


def app_files(version: str, mode: str = "ok") -> dict:
    """The web app's files: `python app.py PORT` serves `version` and misbehaves as `mode` says."""
    return {"app.py": APP_PY, "version.txt": version + "\n", "mode.txt": mode + "\n"}


def write_app(directory: Path, version: str = "v1", mode: str = "ok") -> Path:
    """The web app written into directory (no git): for running it without a deploy."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in app_files(version, mode).items():
        (directory / name).write_text(content)
    return directory / "app.py"


def git_wrapper(
    path: Path,
    log: Path | None = None,
    extra_args: str = "",
    sleep_on: str = "",
    pidfile: Path | None = None,
) -> Path:
    """A git `executable` that records each call's argv (one line) in `log`, then runs git
    with `extra_args` first; with `sleep_on`, a call whose argv mentions it hangs instead."""
    lines = ["#!/bin/sh"]
    if log is not None:
        lines.append(f'printf "%s\\n" "$*" >> {shlex.quote(str(log))}')
    if sleep_on:
        lines.append(f'case "$*" in *{sleep_on}*)')
        lines.append(f"  sleep 300 & echo $! > {shlex.quote(str(pidfile or '/dev/null'))}; wait;;")
        lines.append("esac")
    lines.append(f'exec {shlex.quote(GIT)} {extra_args} "$@"')
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o755)
    return path


def read_calls(log: Path) -> list:
    try:
        return log.read_text().splitlines()
    except FileNotFoundError:
        return []


def git_subcommand(line: str) -> str:
    """The subcommand of a logged argv line (skipping `-c x=y` options)."""
    words = line.split()
    i = 0
    while i < len(words) and words[i].startswith("-"):
        i += 2 if words[i] in ("-c", "-C") else 1
    return words[i] if i < len(words) else ""


def alive(pid: int) -> bool:
    """True while pid exists and is not a zombie (PID 1 here may not reap)."""
    return start_time(pid) is not None  # huddle's own check: None when gone or a zombie


def wait_until(pred: Callable, timeout_s: float, what: str, interval_s: float = 0.05):
    """pred()'s first truthy value, polled every interval_s; TimeoutError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(interval_s)


def http_get(port: int, path: str = "/", timeout_s: float = 2.0) -> tuple:
    """(status, body) or (None, error) from the app on loopback (None: down, refusing, hung
    or half-started)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except (OSError, http.client.HTTPException) as exc:
        return None, str(exc) or type(exc).__name__
    finally:
        conn.close()


def tagged_pids(prefix: str) -> list:
    """Live processes whose HUDDLE_APP tag starts with prefix (one entry per process)."""
    needle = f"{TAG_VAR}={prefix}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            env = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(item.startswith(needle) for item in env) and alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def kill_tree_of_tag(prefix: str) -> None:
    for pid in tagged_pids(prefix):
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except OSError:
                pass  # gone already, or not a group leader


async def deploy(repo: GitRepo, branch: str = "main") -> str:
    """What a deploy does to the tree: ls-remote, fetch when the commit is missing, checkout."""
    sha = await repo.remote_head("origin", branch)
    if not await repo.has_commit(sha):
        assert await repo.fetch("origin", branch) == sha
    await repo.checkout(sha, branch)
    return sha


# -- git daemon ---------------------------------------------------------------------------


class GitDaemon:
    """`git daemon` exporting base_path on a loopback port; restartable on the same port."""

    def __init__(self, base_path: Path, port: int | None = None) -> None:
        self.base_path = Path(base_path)
        self.port = port or free_port()
        self.proc: subprocess.Popen | None = None
        self.lines: list = []

    def url(self, repo: str) -> str:
        return f"git://127.0.0.1:{self.port}/{repo}"

    def start(self) -> GitDaemon:
        ready = threading.Event()
        self.proc = subprocess.Popen(
            [
                GIT,
                "daemon",
                "--export-all",
                "--reuseaddr",
                f"--base-path={self.base_path}",
                "--listen=127.0.0.1",
                f"--port={self.port}",
                "--verbose",
                str(self.base_path),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=git_env(),
            start_new_session=True,
        )

        def drain(stream):  # read continuously: a full pipe would stall the daemon
            for raw in stream:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                if "Ready to rumble" in line:
                    ready.set()

        self.reader = threading.Thread(target=drain, args=(self.proc.stderr,), daemon=True)
        self.reader.start()
        deadline = time.monotonic() + 10
        while not ready.wait(0.05):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("git daemon did not start: " + "".join(self.lines))
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self.reader.join(5)  # EOF once every forked child of the daemon is gone
            self.proc.stderr.close()
        self.proc = None


# -- smart HTTP ---------------------------------------------------------------------------


class _CGIHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    server: _Server

    def do_GET(self):
        self.run_backend()

    def do_POST(self):
        self.run_backend()

    def log_message(self, *args):
        pass  # quiet tests

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(body)
                body += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def run_backend(self):
        self.server.requests.append(f"{self.command} {self.path}")
        if self.server.require_auth and not self.headers.get("Authorization"):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="huddle-test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        body = self.read_body()
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_ADDR": "127.0.0.1",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_PROJECT_ROOT": str(self.server.root),
            "HOME": os.environ.get("HOME", "/"),
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        out = subprocess.run(
            [GIT, "http-backend"], input=body, env=env, capture_output=True, timeout=60
        ).stdout
        cut = min(
            (i for i in (out.find(b"\r\n\r\n"), out.find(b"\n\n")) if i >= 0), default=len(out)
        )
        head, payload = out[:cut], out[cut:].lstrip(b"\r\n") if cut < len(out) else b""
        status, headers = 200, []
        for line in head.decode(errors="replace").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    root: Path
    require_auth = False
    requests: list


class SmartHTTP:
    """`git http-backend` serving the repos under root at http://127.0.0.1:PORT/NAME."""

    def __init__(self, root: Path, require_auth: bool = False) -> None:
        self.server = _Server(("127.0.0.1", 0), _CGIHandler)
        self.server.root = Path(root)
        self.server.require_auth = require_auth
        self.server.requests = []
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, repo: str) -> str:
        return f"http://127.0.0.1:{self.port}/{repo}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# -- the agent ----------------------------------------------------------------------------


def deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def app_config(remote_path: str, local_path: Path, port: int, **sections) -> dict:
    """A JSON app config with test timings (poll 0.2-0.5 s, trial 0.5 + 2 x 0.5 s);
    keyword arguments deep-merge per section (a None value removes a key or section)."""
    base = {
        "repository": {"remote path": remote_path, "local path": str(local_path), "branch": "main"},
        "timing": {"minimum": 0.2, "maximum": 0.5},
        "application": {"start": f"{PY} app.py {port}", "stop timeout": 1},
        "health": {
            "type": "http",
            "port": port,
            "interval": 0.5,
            "timeout": 1,
            "retries": 2,
            "grace": 0.5,
        },
    }
    return deep_merge(base, sections)


def write_config(path: Path, config: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2))
    return path


def make_app(tmp_path: Path, name: str = "web", origin: Origin | None = None, **sections):
    """An origin for the app and a config deploying it from there; returns
    (origin, port, config path). Keyword arguments deep-merge into the config's sections."""
    origin = origin or Origin(tmp_path / "remotes", name)
    port = free_port()
    config = app_config(origin.url, tmp_path / "apps" / name, port, **sections)
    return origin, port, write_config(tmp_path / "configs" / f"{name}.json", config)


class Agent:
    """`huddle run` in a subprocess with its own state dir."""

    def __init__(self, tmp: Path, name: str = "agent") -> None:
        self.dir = Path(tmp) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = self.dir / "state"
        self.proc: subprocess.Popen | None = None
        self.runs = 0
        self.log_path = self.dir / "agent-0.log"

    @property
    def tag_prefix(self) -> str:
        return app_tag(self.state_dir, "x")[:-1]  # "<digest>:" shared by every app

    def tag(self, app: str) -> str:
        return app_tag(self.state_dir, app)

    def start(self, *paths, env: dict | None = None) -> Agent:
        self.runs += 1
        self.log_path = self.dir / f"agent-{self.runs}.log"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.log_file = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [
                PY,
                "-m",
                "huddle",
                "run",
                *map(str, paths),
                "--state-dir",
                str(self.state_dir),
                "--log-level",
                "debug",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        return self

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def state(self) -> dict:
        try:
            return json.loads((self.state_dir / "state.json").read_text())
        except FileNotFoundError:
            return {}

    def app(self, name: str) -> dict:
        return self.state().get(name, {})

    def app_log(self, name: str) -> str:
        try:
            return (self.state_dir / "logs" / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def starts(self, name: str, commit: str) -> int:
        """How many times the app log says a process was started at this commit."""
        return len(re.findall(rf"started pid \d+ at {commit[:12]}", self.app_log(name)))

    def wait(self, pred: Callable[[dict], object], what: str, timeout_s: float = 20.0):
        """Poll state.json until pred(state) is truthy; fail with the evidence if not."""
        deadline = time.monotonic() + timeout_s
        while True:
            state = self.state()
            value = pred(state)
            if value:
                return value
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"agent exited ({self.proc.returncode}) while waiting for "
                    f"{what}\nstate: {json.dumps(state, indent=1)}\n"
                    f"output:\n{self.output()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out after {timeout_s} s waiting for {what}\n"
                    f"state: {json.dumps(state, indent=1)}\n"
                    f"output:\n{self.output()[-4000:]}"
                )
            time.sleep(0.05)

    def wait_app(
        self, name: str, pred: Callable[[dict], object], what: str, timeout_s: float = 20.0
    ):
        return self.wait(lambda s: pred(s.get(name, {})), f"{name}: {what}", timeout_s)

    def wait_good(self, name: str, commit: str, timeout_s: float = 20.0) -> dict:
        """Until `commit` is deployed, passed its trial and runs."""
        return self.wait_app(
            name,
            lambda a: (
                a
                if (
                    a.get("commit") == commit
                    and a.get("good") == commit
                    and a.get("running")
                    and a.get("pid")
                )
                else None
            ),
            f"{commit[:12]} deployed and good",
            timeout_s,
        )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 15.0) -> int:
        """SIGTERM, wait for the exit; returns the exit status."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        finally:
            self.log_file.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc is not None:
            self.log_file.close()

    def status(self, *args) -> subprocess.CompletedProcess:
        return subprocess.run(
            [PY, "-m", "huddle", "status", "--state-dir", str(self.state_dir), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )

    def cleanup(self) -> None:
        self.kill()
        kill_tree_of_tag(self.tag_prefix)


# -- smart HTTP with faults: a real token, a trickling answer -----------------------------


class _Trickle:
    """A response stream that lets `fast` bytes through, then `chunk` bytes per `delay_s`:
    a slow link, on which a fetch's timeout fires mid-transfer."""

    def __init__(self, raw, fast: int, chunk: int, delay_s: float) -> None:
        self.raw, self.fast, self.chunk, self.delay_s = raw, fast, chunk, delay_s

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            n = len(view) if self.fast >= len(view) else max(self.fast, self.chunk)
            self.raw.write(view[:n])
            self.raw.flush()
            self.fast -= min(self.fast, n)
            view = view[n:]
            if view and not self.fast:
                time.sleep(self.delay_s)
        return len(data)

    def flush(self) -> None:
        self.raw.flush()

    def __getattr__(self, name):
        return getattr(self.raw, name)


class _FaultyHandler(_CGIHandler):
    def run_backend(self):
        server = self.server
        if server.basic and self.headers.get("Authorization") != server.basic:
            self.server.requests.append(f"{self.command} {self.path} -> 401")
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="huddle-test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if server.trickle is not None and self.command == "POST":
            self.wfile = _Trickle(self.wfile, *server.trickle)
        super().run_backend()


class FaultySmartHTTP(SmartHTTP):
    """SmartHTTP that demands exactly `user:password` (Basic) when given, and whose pack
    answers trickle after `trickle=(fast_bytes, chunk_bytes, delay_s)` when set (settable
    between calls: `server.server.trickle = None` makes the link fast again)."""

    def __init__(
        self, root: Path, user: str = "", password: str = "", trickle: tuple | None = None
    ) -> None:
        import base64

        super().__init__(root)
        self.server.RequestHandlerClass = _FaultyHandler
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self.server.basic = f"Basic {token}" if user or password else ""
        self.server.trickle = trickle


def cmdlines_containing(needle: str) -> list:
    """(pid, argv) of every live process whose command line contains needle."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                raw = Path(f"/proc/{entry.name}/cmdline").read_bytes()
            except OSError:
                continue
            if needle.encode() in raw:
                found.append((int(entry.name), raw.replace(b"\0", b" ").decode(errors="replace")))
    return found


def files_containing(root: Path, needle: str) -> list:
    """Every file under root whose bytes contain needle (compressed git objects excepted)."""
    hits = []
    for path in Path(root).rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if needle.encode() in path.read_bytes():
                    hits.append(path)
            except OSError:
                continue
    return hits


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "3m"):
    """A tmpfs of `size` mounted at path (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        import pytest  # only here: the benchmarks import this module without pytest

        pytest.skip("mounting a tmpfs for a full disk needs root")
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True, timeout=30
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], timeout=30)
