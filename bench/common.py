"""Shared helpers of huddle's benchmarks: the machine, /proc sampling, origin repos, peers.

Benchmarks measure real processes from outside, the way a user's monitoring would: the agent
(or its peer) runs as its own process, RSS comes from /proc/PID/status (VmRSS), CPU from
/proc/PID/stat (utime+stime for the process itself, cutime+cstime for the children it has
reaped, i.e. git and hooks). Origins, ports, waits and the web app they deploy are the test
harness's (tests/gitutil.py): the app's answer depends on files in the commit, so a
benchmark can push a new version, a crashing one or one that answers 500. The naive peer is
`naive_peer.sh` beside this file: the `git fetch && git reset --hard` shell loop people write.
Everything lives under one temporary directory per run; every wait is bounded.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

# The harness's helpers, also used as common.NAME by the benchmarks (`X as X`: re-exported)
from tests.gitutil import GitDaemon, git_env
from tests.gitutil import Origin as HarnessOrigin
from tests.gitutil import free_port as free_port
from tests.gitutil import git as git
from tests.gitutil import http_get as http_get
from tests.gitutil import wait_until as wait_until
from tests.gitutil import write_config as harness_write_config

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
OUT_DIR = BENCH_DIR / "out"
NAIVE_PEER = BENCH_DIR / "naive_peer.sh"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PYTHON = sys.executable  # the venv python: apps and agent share it

# -- the machine ------------------------------------------------------------------------------


def _first(cmd: list) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"  # a missing tool only blanks one field of the description


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass  # not Linux: fall back to what platform knows
    return platform.processor() or "unknown"


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"  # not Linux


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": f"{platform.python_version()} ({sys.executable})",
        "git": _first(["git", "--version"]),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "loadavg": loadavg(),
        "huddle": huddle_version(),
    }


def huddle_version() -> str:
    """The commit the benchmarked huddle/ comes from, "+dirty" when its files differ."""
    head = _first(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"])
    dirty = _first(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--", "huddle"])
    return head + ("+dirty" if dirty else "")


def machine_line(info: dict) -> str:
    return (
        f"machine: {info['cpu']}, {info['cores']} cores, Linux {info['kernel']}, "
        f"Python {info['python']}, {info['git']}; {info['date']}; "
        f"load average at start {info['loadavg']}; huddle {info.get('huddle', '?')}"
    )


# -- /proc sampling ---------------------------------------------------------------------------


def rss_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None  # the process is gone
    return None


def hwm_kb(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None  # the process is gone
    return None


def cpu_s(pid: int) -> tuple:
    """(own utime+stime, reaped children's cutime+cstime) in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    rest = stat[stat.rfind(")") + 2 :].split()  # fields from 3 on; comm may hold spaces
    utime, stime, cutime, cstime = (int(x) for x in rest[11:15])
    return (utime + stime) / CLK_TCK, (cutime + cstime) / CLK_TCK


class Window:
    """Samples one process's RSS every `step_s` and its CPU at both ends of a window."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.rss: list = []

    def run(
        self,
        duration_s: float,
        step_s: float = 0.5,
        at_start: Callable[[], None] = lambda: None,
        at_end: Callable[[], None] = lambda: None,
    ) -> dict:
        at_start()
        own0, kids0 = cpu_s(self.pid)
        t0 = time.monotonic()
        end = t0 + duration_s
        while True:
            kb = rss_kb(self.pid)
            if kb is None:
                raise RuntimeError(f"process {self.pid} exited during the measurement")
            self.rss.append(kb)
            now = time.monotonic()
            if now >= end:
                break
            time.sleep(min(step_s, end - now))
        own1, kids1 = cpu_s(self.pid)
        elapsed = time.monotonic() - t0
        at_end()
        return {
            "seconds": elapsed,
            "rss_kb_median": statistics.median(self.rss),
            "rss_kb_max": max(self.rss),
            "rss_kb_hwm": hwm_kb(self.pid),
            "cpu_own_s": own1 - own0,
            "cpu_children_s": kids1 - kids0,
            "samples": len(self.rss),
        }


# -- small utilities --------------------------------------------------------------------------


def read_state(state_dir: Path) -> dict:
    try:
        return json.loads((Path(state_dir) / "state.json").read_text())
    except (OSError, ValueError):
        return {}  # not written yet (atomic renames mean never torn)


def summary(values: list) -> dict:
    values = sorted(values)
    if not values:
        return {"n": 0}
    p90 = values[max(0, math.ceil(0.9 * len(values)) - 1)]  # nearest rank
    return {
        "n": len(values),
        "median": statistics.median(values),
        "p90": p90,
        "min": values[0],
        "max": values[-1],
    }


def temp_root(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


def write_json(name: str, data: dict) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / name
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def publish_results(name: str, data: dict, table: str) -> None:
    """Every benchmark's ending: the JSON to bench/out/NAME, the table to stdout."""
    path = write_json(name, data)
    print()
    print(table)
    print(f"\n(JSON: {os.path.relpath(path)})")


def terminate(proc: subprocess.Popen, timeout_s: float) -> None:
    """SIGTERM, wait up to timeout_s, then SIGKILL: how every process a benchmark started
    is stopped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- origins: bare repos holding a tiny web app ---------------------------------------------

GIT_ENV = git_env()  # the environment every git, peer and hook of a benchmark runs with


class Origin:
    """The harness's origin (tests/gitutil.Origin) holding its web app, first at version v0.
    `commit(message, mode)` pushes a new version that serves `message` (mode: ok, crash,
    500, hang) and `pushed_at` is time.monotonic() right after that push returned."""

    def __init__(self, root: Path, name: str, branch: str = "main") -> None:
        self.repo = HarnessOrigin(root, name, branch)
        self.branch, self.bare, self.work = branch, self.repo.bare, self.repo.work
        self.url = self.repo.url
        self.pushed_at = 0.0
        self.commit("v0")

    def commit(self, message: str, mode: str = "ok") -> str:
        sha = self.repo.app_commit(message, mode)
        self.pushed_at = time.monotonic()
        return sha


def clone_origin(origin: Origin, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    git("clone", "--quiet", "--branch", origin.branch, origin.url, str(dest), cwd=dest.parent)
    return dest


def server_command(port: int) -> str:
    return f"{PYTHON} app.py {port}"


# -- the agent under test ---------------------------------------------------------------------

# Runs `huddle run` in-process after wrapping the command runner with a counter of git
# subcommands; SIGUSR1 writes the counts to $BENCH_COUNT_FILE (and exit does once more). The
# wrapper is an integer increment per child process: it changes neither RSS nor CPU measurably.
COUNTING_AGENT = r"""
import json, os, signal, sys
import huddle.runner as runner
counts = {}
real = runner.run_command
async def counting(argv, **kw):
    key = str(argv[1]) if len(argv) > 1 else str(argv[0])
    counts[key] = counts.get(key, 0) + 1
    return await real(argv, **kw)
runner.run_command = counting
def dump(*_):
    path = os.environ["BENCH_COUNT_FILE"]
    with open(path + ".tmp", "w") as fh:
        json.dump(counts, fh)
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR1, dump)
import atexit; atexit.register(dump)
from huddle.cli import main
sys.exit(main(sys.argv[1:]))
"""


def write_config(
    config_dir: Path,
    name: str,
    *,
    url: str,
    local_path: Path,
    start: str,
    minimum_s: float,
    maximum_s: float,
    health: dict | None = None,
    branch: str = "main",
) -> Path:
    """CONFIG_DIR/NAME.json for one app with huddle's defaults apart from these (stop
    timeout 10 s; no health check unless given)."""
    config: dict = {
        "repository": {"remote path": url, "local path": str(local_path), "branch": branch},
        "timing": {"minimum": minimum_s, "maximum": maximum_s},
        "application": {"start": start},
    }
    if health:
        config["health"] = health
    return harness_write_config(config_dir / f"{name}.json", config)


class Agent:
    """`huddle run CONFIG_DIR --state-dir STATE` as a child process (counting wrapper)."""

    def __init__(
        self, config_dir: Path, state_dir: Path, log_path: Path, extra_env: dict | None = None
    ) -> None:
        self.state_dir = state_dir
        self.count_file = state_dir.parent / f"{state_dir.name}.counts.json"
        self.log = open(log_path, "ab")
        env = dict(os.environ, BENCH_COUNT_FILE=str(self.count_file), **(extra_env or {}))
        env.pop("HUDDLE_MQTT", None)
        self.proc = subprocess.Popen(
            [
                PYTHON,
                "-c",
                COUNTING_AGENT,
                "run",
                str(config_dir),
                "--state-dir",
                str(state_dir),
                "--log-level",
                "info",
            ],
            cwd=str(REPO_ROOT),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=self.log,
        )
        self.pid = self.proc.pid

    def counts(self) -> dict:
        """Git subcommand counts so far (asks the agent with SIGUSR1)."""
        before = self.count_file.stat().st_mtime_ns if self.count_file.exists() else 0
        os.kill(self.pid, signal.SIGUSR1)
        wait_until(
            lambda: self.count_file.exists() and self.count_file.stat().st_mtime_ns != before,
            5,
            "agent counts",
            interval_s=0.005,
        )
        return json.loads(self.count_file.read_text())

    def state(self) -> dict:
        return read_state(self.state_dir)

    def stop(self, timeout_s: float = 30) -> int:
        terminate(self.proc, timeout_s)
        self.log.close()
        return self.proc.returncode


class NaivePeer:
    """naive_peer.sh over clones; SIGUSR1 makes it write its poll count to COUNT_FILE."""

    def __init__(self, apps: list, minimum_s: int, maximum_s: int, work: Path) -> None:
        """apps: (clone dir, branch, start command) triples."""
        self.count_file = work / "naive.count"
        self.ready_file = work / "naive.ready"
        self.log = open(work / "naive.log", "ab")
        argv = [
            "bash",
            str(NAIVE_PEER),
            str(minimum_s),
            str(maximum_s),
            str(self.count_file),
            str(self.ready_file),
        ]
        for directory, branch, start in apps:
            argv += [str(directory), branch, start]
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, env=GIT_ENV
        )
        self.pid = self.proc.pid

    def wait_ready(self, timeout_s: float = 60) -> None:
        wait_until(
            self.ready_file.exists, timeout_s, "the naive peer's first round", interval_s=0.05
        )

    def polls(self) -> int:
        before = self.count_file.stat().st_mtime_ns if self.count_file.exists() else 0
        os.kill(self.pid, signal.SIGUSR1)
        wait_until(
            lambda: self.count_file.exists() and self.count_file.stat().st_mtime_ns != before,
            30,
            "peer count",
            interval_s=0.005,
        )
        return int(self.count_file.read_text().split()[0])

    def stop(self, timeout_s: float = 30) -> int:
        terminate(self.proc, timeout_s)
        self.log.close()
        return self.proc.returncode


def baseline_python_rss_kb() -> int:
    """RSS of this venv's python doing nothing (the floor any Python agent starts from)."""
    proc = subprocess.Popen(
        [PYTHON, "-c", "import time; print(flush=True); time.sleep(30)"], stdout=subprocess.PIPE
    )
    try:
        proc.stdout.readline()
        time.sleep(0.2)
        return rss_kb(proc.pid) or 0
    finally:
        proc.kill()
        proc.wait()


def kill_tagged_leftovers(root: Path) -> None:
    """Kill any process whose cwd is under root (apps a crashed benchmark left behind)."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{entry.name}/cwd")
        except OSError:
            continue  # gone or not ours
        if cwd.startswith(str(root) + os.sep) or cwd == str(root):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except OSError:
                pass  # already gone


# -- process trees (peers that fork: ansible-pull, git helpers) -------------------------------


def children_map() -> dict:
    """ppid -> [pid] for every live process (one /proc scan)."""
    kids: dict = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue  # exited during the scan
        ppid = int(stat[stat.rfind(")") + 2 :].split()[1])
        kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""  # gone


def tree_pids(root_pid: int, skip: Callable[[int], bool] = lambda pid: False) -> list:
    """root_pid and its descendants, leaving out (with their subtrees) those skip() names."""
    kids = children_map()
    out, todo = [], [root_pid]
    while todo:
        pid = todo.pop()
        if pid != root_pid and skip(pid):
            continue
        out.append(pid)
        todo.extend(kids.get(pid, ()))
    return out


def tree_rss_kb(root_pid: int, skip: Callable[[int], bool] = lambda pid: False) -> int:
    return sum(rss_kb(pid) or 0 for pid in tree_pids(root_pid, skip))


class TreePeak:
    """Samples the summed VmRSS of a process tree every step_s in a thread; `peak_kb` is the
    largest sum seen, `samples` how many were taken. Short-lived children (a git call lasts a
    few ms) are caught only when a sample lands on them: for forking peers whose children live
    for seconds (ansible-pull) the sum is what matters."""

    def __init__(
        self, root_pid: int, skip: Callable[[int], bool] = lambda pid: False, step_s: float = 0.02
    ) -> None:
        import threading

        self.root_pid, self.skip, self.step_s = root_pid, skip, step_s
        self.peak_kb = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            kb = tree_rss_kb(self.root_pid, self.skip)
            self.peak_kb = max(self.peak_kb, kb)
            self.samples += 1
            self._stop.wait(self.step_s)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)


def skip_app(marker: str = "app.py") -> Callable[[int], bool]:
    """skip() for tree sampling: the deployed app (and its children) is not the peer."""
    return lambda pid: marker in cmdline(pid)


# -- git servers on loopback (the fixtures of tests/gitutil.py, run as separate processes so
#    their CPU never lands in the measuring process) --------------------------------------------

SMART_HTTP_SERVER = r"""
import sys, time
sys.path.insert(0, sys.argv[2])
from tests.gitutil import SmartHTTP
server = SmartHTTP(sys.argv[1])
print(server.port, flush=True)
try:
    sys.stdin.read()        # until the benchmark closes our stdin
finally:
    server.stop()
"""


class GitServers:
    """`git daemon` (git://) and smart HTTP (git http-backend) exporting the bare repos under
    base, both on loopback, each its own process; `url(kind, name)` for kind in
    file / git / http."""

    def __init__(self, base: Path) -> None:
        self.base = Path(base)
        self.daemon = GitDaemon(self.base).start()
        self.http = subprocess.Popen(
            [PYTHON, "-c", SMART_HTTP_SERVER, str(self.base), str(REPO_ROOT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.http_port = int(self.http.stdout.readline())

    def url(self, kind: str, name: str) -> str:
        if kind == "file":
            return (self.base / name).as_uri()
        if kind == "git":
            return self.daemon.url(name)
        if kind == "http":
            return f"http://127.0.0.1:{self.http_port}/{name}"
        raise ValueError(kind)

    def server_pid(self, kind: str) -> int | None:
        return {
            "git": self.daemon.proc.pid if self.daemon.proc else None,
            "http": self.http.pid,
        }.get(kind)

    def stop(self) -> None:
        self.daemon.stop()
        if self.http.poll() is None:
            self.http.stdin.close()
            try:
                self.http.wait(10)
            except subprocess.TimeoutExpired:
                self.http.kill()
                self.http.wait()


def total_cpu_s(pid: int) -> float:
    """A process's own CPU plus its reaped children's (e.g. git daemon and its upload-packs)."""
    own, kids = cpu_s(pid)
    return own + kids


# -- ansible-pull, the configuration-management peer --------------------------------------------

ANSIBLE_PLAYBOOK = """\
# Restart the app from the checkout ansible-pull just updated (run only when it changed).
- hosts: localhost
  gather_facts: false
  tasks:
    - name: restart the app
      ansible.builtin.shell: |
        if [ -s {pidfile} ]; then
          old=$(cat {pidfile})
          kill -TERM -- -$old 2>/dev/null
          for i in $(seq 100); do kill -0 $old 2>/dev/null || break; sleep 0.05; done
        fi
        setsid {start} >> {log} 2>&1 < /dev/null &
        echo $! > {pidfile}
      args:
        chdir: "{checkout}"
        executable: /bin/bash       # dash's kill cannot signal a process group
"""

# One ansible-pull per round, then the interval; SIGTERM stops the loop and the app.
ANSIBLE_LOOP = """\
trap 'kill $child 2>/dev/null; wait; [ -s "$PIDFILE" ] && kill -TERM -- -$(cat "$PIDFILE"); \
exit 0' TERM INT
while true; do
    "$ANSIBLE_PULL" -U "$URL" -C "$BRANCH" -d "$CHECKOUT" -i "$INVENTORY" --only-if-changed \
        "$PLAYBOOK" >> "$LOG" 2>&1 &
    child=$!; wait $child
    : > "$ROUNDS/$(date +%s%N)"
    sleep "$INTERVAL" & child=$!; wait $child
done
"""


def find_ansible_pull() -> str | None:
    """ansible-pull of the bench's own venv (made by `make bench`), else $ANSIBLE_PULL or PATH."""
    import shutil

    for candidate in (
        os.environ.get("ANSIBLE_PULL"),
        str(REPO_ROOT / ".venv-bench" / "bin" / "ansible-pull"),
        shutil.which("ansible-pull"),
    ):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


class AnsiblePeer:
    """`ansible-pull -U URL -C BRANCH -d CHECKOUT --only-if-changed PLAYBOOK` in a bash loop
    with `interval_s` between runs; the playbook (outside the repo) restarts the app from the
    checkout. Inventory: localhost with ansible_connection=local and the bench venv's python."""

    def __init__(
        self,
        ansible_pull: str,
        url: str,
        branch: str,
        start: str,
        work: Path,
        interval_s: float = 1.0,
    ) -> None:
        self.ansible_pull = ansible_pull
        self.work = work
        work.mkdir(parents=True, exist_ok=True)
        self.checkout = work / "checkout"
        self.pidfile = work / "app.pid"
        self.rounds = work / "rounds"
        self.rounds.mkdir(exist_ok=True)
        self.inventory = work / "inventory"
        python = Path(ansible_pull).parent / "python"
        self.inventory.write_text(
            f"localhost ansible_connection=local ansible_python_interpreter={python}\n"
        )
        self.playbook = work / "restart.yml"
        self.playbook.write_text(
            ANSIBLE_PLAYBOOK.format(
                pidfile=self.pidfile, start=start, log=work / "app.log", checkout=self.checkout
            )
        )
        self.env = dict(
            GIT_ENV,
            ANSIBLE_HOME=str(work / "ansible-home"),
            ANSIBLE_LOCAL_TEMP=str(work / "ansible-tmp"),
            ANSIBLE_NOCOLOR="1",
            ANSIBLE_LOCALHOST_WARNING="False",
            ANSIBLE_RETRY_FILES_ENABLED="False",
            LC_ALL="C.UTF-8",
            ANSIBLE_PULL=ansible_pull,
            URL=url,
            BRANCH=branch,
            CHECKOUT=str(self.checkout),
            INVENTORY=str(self.inventory),
            PLAYBOOK=str(self.playbook),
            LOG=str(work / "ansible.log"),
            ROUNDS=str(self.rounds),
            PIDFILE=str(self.pidfile),
            INTERVAL=f"{interval_s:g}",
        )
        self.proc: subprocess.Popen | None = None

    def pull_argv(self) -> list:
        return [
            self.ansible_pull,
            "-U",
            self.env["URL"],
            "-C",
            self.env["BRANCH"],
            "-d",
            str(self.checkout),
            "-i",
            str(self.inventory),
            "--only-if-changed",
            str(self.playbook),
        ]

    def pull_once(self) -> subprocess.CompletedProcess:
        """One ansible-pull run in the foreground (the loop must not be running)."""
        return subprocess.run(
            self.pull_argv(), env=self.env, capture_output=True, text=True, timeout=300
        )

    def start(self) -> AnsiblePeer:
        self.proc = subprocess.Popen(
            ["bash", "-c", ANSIBLE_LOOP],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.pid = self.proc.pid
        return self

    def rounds_done(self) -> int:
        return len(os.listdir(self.rounds))

    def stop(self, timeout_s: float = 60) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout_s)
        if self.pidfile.exists():
            try:
                os.killpg(int(self.pidfile.read_text().split()[0]), signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                pass  # the app is gone already
