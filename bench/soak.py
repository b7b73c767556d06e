"""A soak of one agent with 20 apps under random faults; checks that it converges.

Usage: python bench/soak.py [--minutes M] [--apps N] [--seed S] [--settle S] [--agent-kills K]

Not part of `make bench` nor of CI: it runs for 30 minutes by default.

One `huddle run` (with `--mqtt` to a real Mosquitto) follows N apps (default 20), each its own
repo on one `git daemon` on loopback; each app is bench/common.py's tiny HTTP server, checked
over HTTP (interval 1, timeout 1, retries 2, grace 1; trial 3 s), poll 1..3 s, stop timeout 2.
Every working tree holds an untracked file that must survive. A driver with a seeded random
generator injects a fault every 1..4 s:

- pushes: a good commit, one that crashes at start, one that answers HTTP 500 (a bad commit is
  pushed only on top of a good one the agent has already judged good, so the newest good
  commit is always the right end state);
- app faults: SIGKILL of the app, SIGSTOP (a hang), only to an app out of its trial window
  (an exit on trial is a rollback by design, which would bury a good commit);
- infrastructure: the git daemon down for 5..45 s, the broker down for 5..60 s;
- the agent SIGKILLed (at most --agent-kills times, default 6) and restarted 0.5..5 s later.

Each fault is then watched until it is survived (the app runs again under a new pid; the good
commit is judged good; the bad one is in `bad` and the app healthy on a good commit; every app
polls again after the git server returns; a fresh status arrives after the broker returns;
every app runs exactly once under the new agent), or superseded (a newer push to that app came
first), or failed at the end. Then the faults stop, the servers return, and the driver waits
up to --settle seconds (default 400: the poll backoff caps at 300 s) for the invariants:

1. every app runs its newest good commit, healthy, and serves its message (HTTP 200);
2. exactly one process per app (HUDDLE_APP=<tag> in /proc/PID/environ), the one in state;
3. every untracked file is intact;
4. state.json is valid and complete; no commit we pushed as good is listed as bad;
5. the agent's logs hold no traceback and no "controller stopped";
6. the retained MQTT status says online with every app's newest good commit;
7. SIGTERM stops the agent with exit 0 and leaves no app process behind.

Prints a markdown report, writes bench/out/soak.json; exits 1 if any invariant fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.common import PYTHON, REPO_ROOT, Origin, http_get, loadavg, read_state  # noqa: E402
from bench.fleetlib import (  # noqa: E402
    CountingGitDaemon,
    alive,
    interrupt_on_signals,
    kill_tagged,
    tagged_processes,
)
from huddle.agent import app_tag  # noqa: E402
from tests.mosquitto import Broker  # noqa: E402

HEALTH = {"type": "http", "interval": 1, "timeout": 1, "retries": 2, "grace": 1}
TRIAL_S = 1 + 2 * 1
APP_FAULT_DEADLINE_S = 200.0  # restart backoff caps at 60 s; plus an agent's downtime
GIT_DEADLINE_S = 420.0  # poll backoff caps at 300 s
WEIGHTS = {
    "push good": 30,
    "push crash": 8,
    "push 500": 8,
    "kill app": 16,
    "hang app": 10,
    "git down": 4,
    "broker down": 4,
    "kill agent": 3,
}
STATE_KEYS = {"commit", "good", "bad", "pid", "restarts", "healthy", "last_error", "deployed_at"}


class SoakAgent:
    """`huddle run` as its own process; SIGKILLed and restarted by the driver."""

    def __init__(self, root: Path, configs: Path, mqtt_url: str) -> None:
        self.root, self.configs, self.mqtt_url = root, configs, mqtt_url
        self.state_dir = root / "state"
        self.proc = None
        self.starts = 0
        self.logs: list = []

    def start(self) -> None:
        self.starts += 1
        log_path = self.root / f"agent-{self.starts}.log"
        self.logs.append(log_path)
        with open(log_path, "wb") as log:
            env = {k: v for k, v in os.environ.items() if not k.startswith("HUDDLE_")}
            # huddle as it was at the start: -S so the editable install's finder does not
            # win over the copy; the venv's site-packages (paho) come after it
            site = sysconfig.get_paths()["purelib"]
            env["PYTHONPATH"] = os.pathsep.join([str(self.root / "snapshot"), site])
            self.proc = subprocess.Popen(
                [
                    PYTHON,
                    "-S",
                    "-m",
                    "huddle",
                    "run",
                    str(self.configs),
                    "--state-dir",
                    str(self.state_dir),
                    "--mqtt",
                    self.mqtt_url,
                    "--device-id",
                    "soak",
                    "--log-level",
                    "info",
                ],
                cwd=str(self.root),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.running:
            self.proc.kill()
            self.proc.wait()

    def stop(self, timeout_s: float = 60) -> int:
        if self.running:
            common.terminate(self.proc, timeout_s)
        return self.proc.returncode if self.proc else 0


class StatusWatcher:
    """Subscribes to huddle/soak/status; remembers every message's arrival and payload."""

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.messages: list = []
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-watch")
        self.client.reconnect_delay_set(1, 2)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("huddle/soak/status", 1)
        self.client.on_message = self.on_message
        self.client.connect_async("127.0.0.1", port, keepalive=10)
        self.client.loop_start()

    def on_message(self, client, userdata, msg) -> None:
        try:
            self.messages.append((time.time(), json.loads(msg.payload)))
        except ValueError:
            self.messages.append(
                (time.time(), {"unparsable": msg.payload[:200].decode(errors="replace")})
            )

    def since(self, t: float) -> list:
        return [m for at, m in list(self.messages) if at >= t]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_status(port: int, timeout_s: float = 10) -> dict:
    """The retained status as a fresh subscriber gets it ({} if none arrives)."""
    import paho.mqtt.client as mqtt

    got: list = []
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="soak-final")
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("huddle/soak/status", 1)
    client.on_message = lambda c, u, msg: got.append(json.loads(msg.payload))
    try:
        client.connect("127.0.0.1", port, keepalive=10)
        client.loop_start()
        common.wait_until(lambda: got, timeout_s, "the retained status", interval_s=0.05)
    except (OSError, TimeoutError):
        return {}
    finally:
        client.disconnect()
        client.loop_stop()
    return got[0]


class Soak:
    def __init__(self, args) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.root = common.temp_root("huddle-soak-")
        self.names = [f"app{i:02d}" for i in range(args.apps)]
        self.daemon = CountingGitDaemon(self.root / "srv")
        self.broker = Broker(self.root / "broker")
        self.agent = None
        self.watcher = None
        self.origins: dict = {}
        self.ports: dict = {}
        self.keep: dict = {}  # untracked file -> content
        self.expected: dict = {}  # app -> newest good commit pushed
        self.messages: dict = {}  # commit -> the body it serves
        self.good_pushed: dict = {n: set() for n in self.names}
        self.bad_pushed: dict = {n: set() for n in self.names}
        self.last_push: dict = {}
        self.hung: set = set()  # pids we SIGSTOPped
        self.pending: list = []  # open fault checks
        self.restores: list = []  # (time, what)
        self.counts = {
            k: {"injected": 0, "survived": 0, "superseded": 0, "failed": 0, "skipped": 0}
            for k in WEIGHTS
        }
        self.failures: list = []  # fault checks that failed, with their evidence
        self.duplicates: list = []  # moments with two live processes of one app
        self.agent_kills = 0
        self.t_start = time.time()

    # -- set-up ---------------------------------------------------------------------------
    def setup(self) -> None:
        # the agent runs a copy of huddle/: colleagues may edit the tree during a long soak,
        # and a restarted agent must run the same code as the first one
        shutil.copytree(
            REPO_ROOT / "huddle",
            self.root / "snapshot" / "huddle",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        srv = self.root / "srv"
        srv.mkdir()
        configs = self.root / "configs"
        for name in self.names:
            origin = Origin(srv, name)
            self.origins[name] = origin
            sha = common.git("rev-parse", "HEAD", cwd=origin.work)
            self.expected[name] = sha
            self.good_pushed[name].add(sha)
            self.messages[sha] = "v0"
            tree = self.root / "apps" / name
            common.git("clone", "--quiet", "--branch", "main", origin.url, str(tree), cwd=self.root)
            for rel in ("keep.txt", "data/keep.txt"):
                path = tree / rel
                path.parent.mkdir(exist_ok=True)
                path.write_text(f"{name} {rel} {self.rng.random()}\n")
                self.keep[path] = path.read_text()
            self.ports[name] = common.free_port()
            common.write_config(
                configs,
                name,
                url=f"git://127.0.0.1:{self.daemon.port}/{name}.git",
                local_path=tree,
                start=common.server_command(self.ports[name]),
                minimum_s=1,
                maximum_s=3,
                health=dict(HEALTH, port=self.ports[name]),
            )
            cfg = json.loads((configs / f"{name}.json").read_text())
            cfg["application"]["stop timeout"] = 2
            (configs / f"{name}.json").write_text(json.dumps(cfg, indent=2))
        self.daemon.start()
        self.broker.start()
        self.watcher = StatusWatcher(self.broker.port)
        self.agent = SoakAgent(self.root, configs, self.broker.url)
        self.agent.start()
        self.tag_prefix = app_tag(self.agent.state_dir, "x")[:-1]
        common.wait_until(
            lambda: self.all_settled(), 120, "every app good at start", interval_s=0.2
        )

    # -- observation ----------------------------------------------------------------------
    def state(self) -> dict:
        return read_state(self.agent.state_dir)

    def app_ok(self, name: str, s: dict) -> bool:
        a = s.get(name, {})
        return (
            a.get("commit") == a.get("good") == self.expected[name]
            and a.get("running")
            and a.get("healthy") is True
            and bool(a.get("pid"))
        )

    def all_settled(self) -> bool:
        s = self.state()
        return all(self.app_ok(n, s) for n in self.names)

    def quiet(self, name: str, s: dict) -> bool:
        """Out of any trial: good, judged, healthy, deployed more than a trial ago."""
        a = s.get(name, {})
        return (
            a.get("commit") == a.get("good")
            and a.get("running")
            and a.get("healthy") is True
            and a.get("pid")
            and a.get("pid") not in self.hung
            and time.time() - (a.get("deployed_at") or 0) > TRIAL_S + 2
        )

    def one_process(self, name: str, s: dict, tagged: dict) -> bool:
        pids = tagged.get(self.tag_prefix + name, [])
        return len(pids) == 1 and pids[0] == s.get(name, {}).get("pid")

    # -- faults ---------------------------------------------------------------------------
    def watch(self, kind: str, name, check, deadline_s: float, **info) -> None:
        self.counts[kind]["injected"] += 1
        self.pending.append(
            {
                "kind": kind,
                "app": name,
                "check": check,
                "deadline": time.time() + deadline_s,
                "at": round(time.time() - self.t_start, 1),
                **info,
            }
        )

    def push(self, kind: str) -> None:
        mode = kind.split()[1]
        s = self.state()
        if mode == "good":
            name = self.rng.choice(self.names)
        else:  # on top of a good commit the agent has judged good, so the end state is clear
            ready = [
                n for n in self.names if self.quiet(n, s) and s[n].get("good") == self.expected[n]
            ]
            if not ready or not self.agent.running:
                self.counts[kind]["skipped"] += 1
                return
            name = self.rng.choice(ready)
        self.supersede(name)
        body = f"{name} {len(self.messages)} {mode}"
        sha = self.origins[name].commit(body, mode="ok" if mode == "good" else mode)
        self.messages[sha] = body
        if mode == "good":
            self.expected[name] = sha
            self.good_pushed[name].add(sha)

            def check(st, tg, n=name, c=sha):
                return st.get(n, {}).get("good") == c and st[n].get("commit") == c
        else:
            self.bad_pushed[name].add(sha)

            def check(st, tg, n=name, c=sha):
                return c in st.get(n, {}).get("bad", []) and self.app_ok(n, st)

        self.watch(kind, name, check, APP_FAULT_DEADLINE_S, commit=sha[:12])

    def supersede(self, name: str) -> None:
        s, tagged = self.state(), tagged_processes(self.tag_prefix)
        self.evaluate(s, tagged)
        for item in self.pending:
            if item["app"] == name and item["kind"].startswith("push"):
                item["superseded"] = True

    def app_fault(self, kind: str) -> None:
        s = self.state()
        ready = [n for n in self.names if self.quiet(n, s)]
        if not ready:
            self.counts[kind]["skipped"] += 1
            return
        name = self.rng.choice(ready)
        pid = s[name]["pid"]
        if not alive(pid):
            self.counts[kind]["skipped"] += 1
            return
        if kind == "kill app":
            os.kill(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGSTOP)
            self.hung.add(pid)

        def check(st, tg, n=name, old=pid):
            return (
                st.get(n, {}).get("pid") not in (None, old)
                and st[n].get("running")
                and st[n].get("healthy") is True
                and not alive(old)
            )

        self.watch(kind, name, check, APP_FAULT_DEADLINE_S, pid=pid)

    def git_down(self) -> None:
        if not self.daemon.running or any(p["kind"] == "git down" for p in self.pending):
            self.counts["git down"]["skipped"] += 1
            return
        self.daemon.stop()
        down_s = self.rng.uniform(5, 45)
        self.restores.append((time.time() + down_s, "git"))
        self.watch(
            "git down", None, self.polling_again, GIT_DEADLINE_S + down_s, down_s=round(down_s, 1)
        )

    def polling_again(self, s: dict, tagged: dict) -> bool:
        return self.daemon.running and not any(
            "retrying in" in (s.get(n, {}).get("last_error") or "") for n in self.names
        )

    def broker_down(self) -> None:
        if self.broker.proc is None or any(p["kind"] == "broker down" for p in self.pending):
            self.counts["broker down"]["skipped"] += 1
            return
        self.broker.stop()
        down_s = self.rng.uniform(5, 60)
        back_at = time.time() + down_s
        self.restores.append((back_at, "broker"))
        self.watch(
            "broker down",
            None,
            lambda st, tg, t=back_at: (
                self.broker.proc is not None
                and any(m.get("state") == "online" for m in self.watcher.since(t))
            ),
            down_s + 120,
            down_s=round(down_s, 1),
        )

    def kill_agent(self) -> None:
        if self.agent_kills >= self.args.agent_kills or not self.agent.running:
            self.counts["kill agent"]["skipped"] += 1
            return
        self.agent_kills += 1
        self.agent.kill()
        down_s = self.rng.uniform(0.5, 5)
        self.restores.append((time.time() + down_s, "agent"))
        left = set(self.names)

        def all_once(st: dict, tg: dict, left=left) -> bool:
            if not self.agent.running:
                return False
            for n in list(left):
                a = st.get(n, {})
                if a.get("running") and a.get("healthy") is True and self.one_process(n, st, tg):
                    left.discard(n)
            return not left

        self.watch(
            "kill agent", None, all_once, APP_FAULT_DEADLINE_S + down_s, down_s=round(down_s, 1)
        )

    def restore_due(self, force: bool = False) -> None:
        now = time.time()
        for item in sorted(self.restores):
            at, what = item
            if at > now and not force:
                continue
            self.restores.remove(item)
            if what == "git":
                self.daemon.start()
            elif what == "broker":
                self.broker.start()
            elif what == "agent":
                self.agent.start()

    def evaluate(self, s: dict, tagged: dict, final: bool = False) -> None:
        now = time.time()
        for item in list(self.pending):
            try:
                ok = item["check"](s, tagged)
            except (KeyError, TypeError, AttributeError):
                ok = False  # state of an app not written yet: not recovered
            if ok:
                outcome = "survived"
            elif item.get("superseded"):
                outcome = "superseded"
            elif final or now > item["deadline"]:
                outcome = "failed"
                self.failures.append({k: v for k, v in item.items() if k != "check"})
            else:
                continue
            self.counts[item["kind"]][outcome] += 1
            self.pending.remove(item)

    def look(self) -> None:
        s, tagged = self.state(), tagged_processes(self.tag_prefix)
        for tag, pids in tagged.items():
            if len(pids) > 1:
                self.duplicates.append(
                    {"t": round(time.time() - self.t_start, 1), "tag": tag, "pids": pids}
                )
        self.evaluate(s, tagged)

    # -- the run --------------------------------------------------------------------------
    def drive(self) -> None:
        end = time.time() + self.args.minutes * 60
        kinds, weights = list(WEIGHTS), list(WEIGHTS.values())
        next_fault = time.time() + self.rng.uniform(1, 4)
        last_note = 0.0
        while time.time() < end:
            self.restore_due()
            if not self.agent.running and not any(w == "agent" for _, w in self.restores):
                raise RuntimeError(f"the agent exited by itself ({self.agent.proc.returncode})")
            if time.time() >= next_fault:
                kind = self.rng.choices(kinds, weights)[0]
                if kind.startswith("push"):
                    self.push(kind)
                elif kind in ("kill app", "hang app"):
                    self.app_fault(kind)
                elif kind == "git down":
                    self.git_down()
                elif kind == "broker down":
                    self.broker_down()
                else:
                    self.kill_agent()
                next_fault = time.time() + self.rng.uniform(1, 4)
            self.look()
            if time.time() - last_note > 60:
                last_note = time.time()
                done = {k: v["injected"] for k, v in self.counts.items()}
                print(
                    f"{(time.time() - self.t_start) / 60:.1f} min: injected {done}; "
                    f"open {len(self.pending)}; load {loadavg()}",
                    file=sys.stderr,
                    flush=True,
                )
            time.sleep(0.5)

    def settle(self) -> float:
        """Faults stop, servers return; wait for the invariants. Returns the wait."""
        self.restore_due(force=True)
        t0 = time.time()
        deadline = t0 + self.args.settle
        while time.time() < deadline:
            self.look()
            if not self.pending and self.all_settled():
                tagged = tagged_processes(self.tag_prefix)
                s = self.state()
                if all(self.one_process(n, s, tagged) for n in self.names):
                    break
            time.sleep(1)
        waited = time.time() - t0
        time.sleep(5)  # settled must stay settled
        self.look()
        self.evaluate(self.state(), tagged_processes(self.tag_prefix), final=True)
        return waited

    # -- invariants -----------------------------------------------------------------------
    def invariants(self) -> dict:
        out = {}
        s = self.state()
        wrong = {}
        for n in self.names:
            a = s.get(n, {})
            got = http_get(self.ports[n], timeout_s=2)
            want = self.messages[self.expected[n]]
            if not self.app_ok(n, s) or got != (200, want):
                wrong[n] = {
                    "want": self.expected[n][:12],
                    "commit": (a.get("commit") or "")[:12],
                    "good": (a.get("good") or "")[:12],
                    "healthy": a.get("healthy"),
                    "running": a.get("running"),
                    "http": got,
                    "state": a.get("state"),
                    "last_error": a.get("last_error"),
                }
        out["1 newest good commit, healthy, serving"] = (not wrong, wrong)
        tagged = tagged_processes(self.tag_prefix)
        extra = {
            t: p for t, p in tagged.items() if t.split(":", 1)[1] not in self.names or len(p) != 1
        }
        off = {
            n: {"tagged": tagged.get(self.tag_prefix + n), "state": s.get(n, {}).get("pid")}
            for n in self.names
            if not self.one_process(n, s, tagged)
        }
        out["2 exactly one process per app"] = (
            not extra and not off,
            {"extra": extra, "mismatch": off, "duplicate sightings": self.duplicates},
        )
        lost = [str(p) for p, text in self.keep.items() if not p.exists() or p.read_text() != text]
        out["3 untracked files intact"] = (not lost, {"lost": lost, "files": len(self.keep)})
        problems = []
        try:
            raw = json.loads((self.agent.state_dir / "state.json").read_text())
            for n in self.names:
                if not STATE_KEYS <= set(raw.get(n, {})):
                    problems.append(f"{n}: missing {sorted(STATE_KEYS - set(raw.get(n, {})))}")
                buried = set(raw.get(n, {}).get("bad", [])) & self.good_pushed[n]
                if buried:
                    problems.append(f"{n}: good commits listed as bad: {sorted(buried)}")
        except (OSError, ValueError) as exc:
            problems.append(f"unreadable: {exc}")
        out["4 state.json valid, no good commit in bad"] = (not problems, problems)
        bad_lines = []
        for path in self.agent.logs:
            for line in path.read_text(errors="replace").splitlines():
                if "Traceback" in line or "controller stopped" in line:
                    bad_lines.append(f"{path.name}: {line}")
        out["5 agent logs free of tracebacks"] = (not bad_lines, bad_lines[:20])
        status = retained_status(self.broker.port)
        mqtt_wrong = {
            n: (status.get("apps", {}).get(n) or {}).get("commit")
            for n in self.names
            if (status.get("apps", {}).get(n) or {}).get("commit") != self.expected[n]
        }
        out["6 retained MQTT status online and current"] = (
            status.get("state") == "online" and not mqtt_wrong,
            {"state": status.get("state"), "wrong commits": mqtt_wrong},
        )
        code = self.agent.stop()
        time.sleep(0.5)
        left = tagged_processes(self.tag_prefix)
        out["7 SIGTERM: exit 0, no app left"] = (
            code == 0 and not left,
            {"exit": code, "left": left},
        )
        return out

    def cleanup(self) -> None:
        for pid in self.hung:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass  # gone: the agent replaced it
        if self.agent is not None:
            self.agent.kill()
            kill_tagged(self.tag_prefix)
        if self.watcher is not None:
            self.watcher.close()
        self.broker.kill()
        self.daemon.stop()
        common.kill_tagged_leftovers(self.root)
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)


def report(data: dict) -> str:
    lines = [
        common.machine_line(data["machine"]),
        f"load average at end {data['load_end']}",
        "",
        f"{data['params']['apps']} apps, {data['params']['minutes']:g} min of faults "
        f"(seed {data['params']['seed']}), settled after {data['settle_s']:.0f} s; "
        f"agent started {data['agent_starts']} times; git server "
        f"{data['git_connections']} connections",
        "",
        "| fault | injected | survived | superseded | failed | skipped (no target) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for kind, c in data["counts"].items():
        lines.append(
            f"| {kind} | {c['injected']} | {c['survived']} | {c['superseded']} "
            f"| {c['failed']} | {c['skipped']} |"
        )
    lines += ["", "| invariant | result |", "|---|---|"]
    for name, (ok, _) in data["invariants"].items():
        lines.append(f"| {name} | {'PASS' if ok else 'FAIL'} |")
    for name, (ok, detail) in data["invariants"].items():
        if not ok:
            lines.append(f"\n{name}: {json.dumps(detail, default=str)[:3000]}")
    if data["failures"]:
        lines.append("\nfailed fault checks: " + json.dumps(data["failures"], default=str)[:3000])
    lines.append(f"\nrestarts per app (state): {data['restarts']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=30, help="fault phase (default 30)")
    parser.add_argument("--apps", type=int, default=20, help="apps (default 20)")
    parser.add_argument("--seed", type=int, default=6, help="random seed (default 6)")
    parser.add_argument(
        "--settle",
        type=float,
        default=400,
        help="longest wait for convergence, seconds (default 400)",
    )
    parser.add_argument(
        "--agent-kills", type=int, default=6, help="most agent SIGKILLs (default 6)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    info = common.machine()
    print(common.machine_line(info), flush=True)
    soak = Soak(args)
    data = {"machine": info, "params": vars(args)}
    interrupt_on_signals()
    try:
        soak.setup()
        soak.drive()
        data["settle_s"] = soak.settle()
        data["restarts"] = {n: a.get("restarts") for n, a in soak.state().items()}
        data["invariants"] = soak.invariants()
        data["counts"] = soak.counts
        data["failures"] = soak.failures
        data["agent_starts"] = soak.agent.starts
        data["git_connections"] = len(soak.daemon.connections)
        data["load_end"] = loadavg()
    finally:
        soak.cleanup()
    path = common.write_json("soak.json", data)
    print()
    print(report(data))
    print(
        f"\n(JSON: {os.path.relpath(path)}; root {soak.root}{' kept' if args.keep else ' removed'})"
    )
    return 0 if all(ok for ok, _ in data["invariants"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
