"""Issue 6: a fleet of huddle agents on one machine polling one git server: push-to-running
distribution, the server's request rate and CPU, and its load after an outage.

Usage: python bench/bench_fleet.py [--agents N] [--duration S] [--outage S] [--pushes P]
                                   [--observe S] [--minimum S] [--maximum S] [--seed N]

N agents (default 100), each its own `huddle run` process (bench/common.py's Agent: the
counting wrapper, so each agent's `ls-remote` calls can be read) with its own state dir and
one app, follow ONE repo on ONE `git daemon --verbose` on loopback (fleetlib.CountingGitDaemon:
every connection is stamped on arrival; its CPU includes the per-connection children), poll
`minimum`..`maximum` = 5..15 s, health none. The app is a stand-in: a shell that writes its
HUDDLE_COMMIT and the wall clock to a report file, then execs `sleep`, so "runs commit C" is
read from outside, at the moment the new process started. Working trees are cloned before the
agents start (over file://), so start-up is one `ls-remote` per agent, not a clone storm.

1. Steady: after every agent runs v0 and a settle, a window of S seconds (default 60): the
   server's requests/s, its CPU (own + children), the fleet's CPU (agents + their git), and
   the polls per agent (fairness).
2. Push: P commits (default 3), one at a time; for each, seconds from `git push` returning to
   each agent's app running it: min / median / p90 / p99 / max over all agents and pushes.
3. Outage: the daemon is killed for --outage seconds (default 60); a commit is pushed while it
   is down; then it returns on the same port. Observed for --observe seconds (default 240,
   longer while some agent has not deployed yet, up to the poll backoff cap): requests per
   second after the return (max in any 1 s bucket vs the steady mean, a histogram, a
   timeline) and, per agent, seconds from the return to running the commit pushed meanwhile.

`--scenario coordination` (issue 13) measures the fleet acting as one over a real Mosquitto
instead: N plain `huddle run --mqtt` agents polling every 9-11 minutes (so no agent polls
on its own during the run); (1) a push plus `huddle trigger --spread S`: seconds until every
agent runs it and the git server's busiest second; (2) a bad commit (its app exits at once)
pushed with `[rollout] canary` (3 canaries), `wait`, `spread` and a trigger: how many agents
ever ran it, and that every other agent logged the fleet's ban. Writes
bench/out/fleet-coordination.json.

Prints markdown tables; writes bench/out/fleet.json. Every process it starts (daemon, agents,
apps) is stopped at the end, on failure too.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.common import Agent, Origin, loadavg, write_config  # noqa: E402
from bench.fleetlib import (  # noqa: E402
    CountingGitDaemon,
    distribution,
    histogram,
    interrupt_on_signals,
    per_second,
    spark,
    tree_cpu_s,
)

# the stand-in app: report the commit it runs and when it started, then idle
STANDIN = (
    'echo "$HUDDLE_COMMIT $(date +%s.%N)" > {report}.tmp && mv {report}.tmp {report}; '
    "exec sleep 2147483647"
)
POLL_BACKOFF_CAP_S = 300.0  # huddle/app.py: the longest a poll waits after failures


class Fleet:
    def __init__(self, root: Path, url: str, n: int, minimum_s: float, maximum_s: float) -> None:
        self.root = root
        self.reports = root / "reports"
        self.reports.mkdir(parents=True)
        self.agents: list = []
        self.names = [f"a{i:03d}" for i in range(n)]
        self.url = url
        self.minimum_s, self.maximum_s = minimum_s, maximum_s

    def prepare(self, origin: Origin) -> None:
        for name in self.names:
            home = self.root / "fleet" / name
            home.mkdir(parents=True)
            common.git(
                "clone",
                "--quiet",
                "--branch",
                origin.branch,
                origin.url,
                str(home / "app"),
                cwd=home,
            )
            write_config(
                home / "configs",
                "app",
                url=self.url,
                local_path=home / "app",
                start=STANDIN.format(report=self.reports / name),
                minimum_s=self.minimum_s,
                maximum_s=self.maximum_s,
            )

    def start(self) -> list:
        started = []
        for name in self.names:
            home = self.root / "fleet" / name
            self.agents.append(Agent(home / "configs", home / "state", home / "agent.log"))
            started.append(time.time())
        return started

    def report(self, name: str):
        """(commit, started wall time) the agent's app wrote, or None."""
        try:
            commit, stamp = (self.reports / name).read_text().split()
            return commit, float(stamp)
        except (OSError, ValueError):
            return None  # not started yet (the file is renamed into place, never torn)

    def running(self, commit: str) -> dict:
        out = {}
        for name in self.names:
            got = self.report(name)
            if got and got[0] == commit:
                out[name] = got[1]
        return out

    def wait_all_run(self, commit: str, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.running(commit)
            if len(got) == len(self.names):
                return got
            dead = [a.pid for a in self.agents if a.proc.poll() is not None]
            if dead:
                raise RuntimeError(f"agents exited: {dead}")
            if time.monotonic() > deadline:
                missing = sorted(set(self.names) - set(got))
                raise TimeoutError(
                    f"{len(missing)} agents did not run {commit[:12]} within "
                    f"{timeout_s:g} s: {missing[:10]}"
                )
            time.sleep(0.1)

    def cpu(self) -> float:
        return sum(tree_cpu_s(a.pid) for a in self.agents)

    def rss_mb(self) -> float:
        return sum(common.rss_kb(a.pid) or 0 for a in self.agents) / 1024

    def polls(self) -> list:
        return [a.counts().get("ls-remote", 0) for a in self.agents]

    def stop(self) -> None:
        for agent in self.agents:
            if agent.proc.poll() is None:
                agent.proc.send_signal(signal.SIGTERM)
        for agent in self.agents:
            agent.stop(timeout_s=30)
        common.kill_tagged_leftovers(self.root)

    def log_problems(self) -> dict:
        tracebacks, errors = 0, 0
        for name in self.names:
            text = (self.root / "fleet" / name / "agent.log").read_text(errors="replace")
            tracebacks += text.count("Traceback")
            errors += sum(1 for line in text.splitlines() if " ERROR " in line or "ERROR:" in line)
        return {"tracebacks": tracebacks, "error_lines": errors}


def timeline_rows(buckets: list, width: int) -> list:
    rows = []
    for i in range(0, len(buckets), width):
        chunk = buckets[i : i + width]
        rows.append((i, i + len(chunk), sum(chunk), max(chunk)))
    return rows


def run(args) -> dict:
    rng = random.Random(args.seed)
    root = common.temp_root("huddle-bench-fleet-")
    data: dict = {"machine": common.machine(), "params": vars(args)}
    print(common.machine_line(data["machine"]), flush=True)
    daemon = CountingGitDaemon(root / "srv")
    fleet = None
    try:
        (root / "srv").mkdir()
        origin = Origin(root / "srv", "app")
        daemon.start()
        fleet = Fleet(root, daemon.url("app.git"), args.agents, args.minimum, args.maximum)
        fleet.prepare(origin)
        v0 = common.git("rev-parse", "HEAD", cwd=origin.work)
        print(f"starting {args.agents} agents (load {loadavg()})", file=sys.stderr, flush=True)
        t_start = time.time()
        starts = fleet.start()
        up = fleet.wait_all_run(v0, 300)
        data["startup"] = {
            "seconds_to_start_agents": starts[-1] - starts[0],
            "seconds_to_all_running": max(up.values()) - t_start,
        }
        time.sleep(args.settle)
        t_settled = time.time()
        start_buckets = per_second(daemon.connections, t_start, t_settled)
        data["startup"].update(max_requests_in_1s=max(start_buckets), per_second=start_buckets)

        # 1. steady window
        print(f"steady window {args.duration:g} s (load {loadavg()})", file=sys.stderr, flush=True)
        polls0 = fleet.polls()
        t0, srv0, fleet0 = time.time(), daemon.cpu(), fleet.cpu()
        rss = []
        while time.time() < t0 + args.duration:
            rss.append(fleet.rss_mb())
            time.sleep(min(2.0, max(0.0, t0 + args.duration - time.time())))
        t1, srv1, fleet1 = time.time(), daemon.cpu(), fleet.cpu()
        polls1 = fleet.polls()
        window = t1 - t0
        buckets = per_second(daemon.connections, t0, t0 + int(window))
        per_agent = [(b - a) * 60 / window for a, b in zip(polls0, polls1, strict=True)]
        data["steady"] = {
            "seconds": window,
            "requests": daemon.count_between(t0, t1),
            "requests_per_s": daemon.count_between(t0, t1) / window,
            "max_requests_in_1s": max(buckets),
            "histogram_1s": histogram(buckets),
            "server_cpu_s": srv1 - srv0,
            "server_cpu_pct": 100 * (srv1 - srv0) / window,
            "fleet_cpu_s": fleet1 - fleet0,
            "fleet_cpu_pct": 100 * (fleet1 - fleet0) / window,
            "fleet_rss_mb_median": sorted(rss)[len(rss) // 2],
            "polls_per_agent_per_min": distribution(per_agent),
            "expected_polls_per_agent_per_min": 60 / ((args.minimum + args.maximum) / 2),
            "load_end": loadavg(),
        }

        # 2. pushes
        latencies, per_push = [], []
        for k in range(args.pushes):
            time.sleep(rng.uniform(1, 4))
            print(f"push {k + 1}/{args.pushes} (load {loadavg()})", file=sys.stderr, flush=True)
            sha = origin.commit(f"v{k + 1}")
            pushed = time.time()
            got = fleet.wait_all_run(sha, args.maximum * 4 + 60)
            lat = [t - pushed for t in got.values()]
            latencies += lat
            per_push.append(distribution(lat))
        data["push"] = {
            "all": distribution(latencies),
            "per_push": per_push,
            "latencies": sorted(latencies),
        }

        # 3. outage
        time.sleep(args.maximum)
        print(f"outage {args.outage:g} s (load {loadavg()})", file=sys.stderr, flush=True)
        t_down = time.time()
        daemon.stop()
        time.sleep(args.outage / 2)
        sha = origin.commit("during outage")
        time.sleep(max(0.0, t_down + args.outage - time.time()))
        daemon.start()
        t_up = time.time()
        srv_up0, fleet_up0 = daemon.cpu(), fleet.cpu()
        deadline = t_up + POLL_BACKOFF_CAP_S + 60
        while True:
            got = fleet.running(sha)
            now = time.time()
            if (now >= t_up + args.observe and len(got) == len(fleet.names)) or now > deadline:
                break
            time.sleep(0.2)
        t_obs = time.time()
        after = per_second(daemon.connections, t_up, t_up + int(t_obs - t_up))
        late = [t - t_up for t in got.values()]
        steady_mean = data["steady"]["requests_per_s"]
        data["outage"] = {
            "down_s": t_up - t_down,
            "observed_s": t_obs - t_up,
            "agents_deployed": len(got),
            "agents": len(fleet.names),
            "deploy_after_return": distribution(late),
            "requests": sum(after),
            "mean_requests_per_s": sum(after) / max(1, len(after)),
            "max_requests_in_1s": max(after) if after else 0,
            "max_over_steady_mean": (max(after) / steady_mean) if after and steady_mean else None,
            "histogram_1s": histogram(after),
            "per_second": after,
            "timeline_10s": timeline_rows(after, 10),
            "first_60s_requests_per_s": sum(after[:60]) / max(1, len(after[:60])),
            "dropped_connections": len(daemon.dropped),
            "server_cpu_pct": 100 * (daemon.cpu() - srv_up0) / (t_obs - t_up),
            "fleet_cpu_pct": 100 * (fleet.cpu() - fleet_up0) / (t_obs - t_up),
        }
        data["load_end"] = loadavg()
        data["logs"] = fleet.log_problems()
    finally:
        if fleet is not None:
            fleet.stop()
        daemon.stop()
        common.kill_tagged_leftovers(root)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return data


def fmt(d: dict, keys=("min", "median", "p90", "p99", "max")) -> str:
    return " | ".join(f"{d[k]:.2f}" for k in keys)


def report(data: dict) -> str:
    p, s, o = data["params"], data["steady"], data["outage"]
    lines = [
        common.machine_line(data["machine"]),
        f"load average at end {data['load_end']}",
        "",
        f"{p['agents']} agents, one app each, poll {p['minimum']:g}..{p['maximum']:g} s,"
        f" one git daemon on loopback; agents up in "
        f"{data['startup']['seconds_to_all_running']:.1f} s, start-up burst max "
        f"{data['startup']['max_requests_in_1s']} requests in 1 s",
        "",
        "### Push to every agent running it (seconds from `git push` returning)",
        "",
        "| pushes | n | min | median | p90 | p99 | max |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, d in enumerate(data["push"]["per_push"]):
        lines.append(f"| push {i + 1} | {d['n']} | {fmt(d)} |")
    lines.append(f"| all | {data['push']['all']['n']} | {fmt(data['push']['all'])} |")
    pa = s["polls_per_agent_per_min"]
    lines += [
        "",
        f"### Steady window ({s['seconds']:.0f} s)",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| server requests/s (mean) | {s['requests_per_s']:.2f} |",
        f"| server max requests in any 1 s | {s['max_requests_in_1s']} |",
        f"| server CPU (daemon + children), % of one core | {s['server_cpu_pct']:.2f} |",
        f"| server CPU per request, ms | {1000 * s['server_cpu_s'] / max(1, s['requests']):.2f} |",
        f"| fleet CPU ({p['agents']} agents + their git), % of one core "
        f"| {s['fleet_cpu_pct']:.1f} |",
        f"| fleet RSS (agents only), MB | {s['fleet_rss_mb_median']:.0f} |",
        f"| polls per agent per minute: min / median / max (expected "
        f"{s['expected_polls_per_agent_per_min']:.1f}) | {pa['min']:.1f} / "
        f"{pa['median']:.1f} / {pa['max']:.1f} |",
        f"| 1 s histogram (requests: seconds) | {s['histogram_1s']} |",
        "",
        f"### After a {o['down_s']:.0f} s outage (observed {o['observed_s']:.0f} s "
        "after the return; a commit was pushed during the outage)",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| requests/s, whole observation | {o['mean_requests_per_s']:.2f} |",
        f"| requests/s, first 60 s | {o['first_60s_requests_per_s']:.2f} |",
        f"| max requests in any 1 s (steady mean {s['requests_per_s']:.2f}) | "
        f"{o['max_requests_in_1s']} ({o['max_over_steady_mean']:.1f}x) |",
        f"| connections dropped by the daemon | {o['dropped_connections']} |",
        f"| server CPU, % of one core | {o['server_cpu_pct']:.2f} |",
        f"| agents running the new commit | {o['agents_deployed']}/{o['agents']} |",
        f"| return -> running it, s: min / median / p90 / p99 / max | "
        f"{fmt(o['deploy_after_return']).replace(' | ', ' / ')} |",
        f"| 1 s histogram (requests: seconds) | {o['histogram_1s']} |",
        "",
        "Requests per 10 s after the return (sum, max in 1 s):",
        "",
        "```",
    ]
    for a, b, total, peak in o["timeline_10s"]:
        lines.append(f"{a:4d}-{b:<4d}s {total:4d} (max {peak:2d}/s) " + "#" * (total // 4))
    lines += [
        "```",
        "",
        "per-second timeline (one char per second, scaled to the max): ",
        "",
        "```",
        spark(o["per_second"]),
        "```",
        f"agent logs: {data['logs']['tracebacks']} tracebacks, "
        f"{data['logs']['error_lines']} ERROR lines",
    ]
    return "\n".join(lines)


# the coordination scenario's app: log every commit it ever ran; a `crash` commit exits
HISTORY = (
    'echo "$HUDDLE_COMMIT $(date +%s.%N)" >> {history}; '
    "grep -q crash mode.txt && exit 1; exec sleep 2147483647"
)


def coordination(args) -> dict:
    import json
    import subprocess

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from mosquitto import Broker  # tests/mosquitto.py: no pytest needed

    root = common.temp_root("huddle-bench-coord-")
    data: dict = {"machine": common.machine(), "params": vars(args)}
    print(common.machine_line(data["machine"]), flush=True)
    daemon = CountingGitDaemon(root / "srv")
    broker = Broker(root / "broker")
    procs: list = []
    names = [f"a{i:03d}" for i in range(args.agents)]
    hist = root / "history"
    hist.mkdir()

    def ran(commit: str) -> set:
        out = set()
        for name in names:
            path = hist / name
            if path.exists() and any(
                line.split()[0] == commit for line in path.read_text().splitlines() if line
            ):
                out.add(name)
        return out

    def wait_ran(commit: str, want: int, timeout_s: float) -> float:
        deadline = time.monotonic() + timeout_s
        while len(ran(commit)) < want:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(ran(commit))}/{want} agents ran {commit[:12]}")
            time.sleep(0.1)
        return time.time()

    def trigger(spread: float) -> float:
        subprocess.run(
            [
                common.PYTHON,
                "-m",
                "huddle",
                "trigger",
                "--mqtt",
                broker.url,
                "--spread",
                str(spread),
            ],
            check=True,
            capture_output=True,
            timeout=60,
            cwd=str(common.REPO_ROOT),
        )
        return time.time()

    try:
        (root / "srv").mkdir()
        origin = Origin(root / "srv", "app")
        daemon.start()
        broker.start()
        url = daemon.url("app.git")
        for name in names:
            home = root / "fleet" / name
            home.mkdir(parents=True)
            common.git("clone", "--quiet", "--branch", "main", url, str(home / "app"), cwd=home)
            config = {
                "repository": {
                    "remote path": url,
                    "local path": str(home / "app"),
                    "branch": "main",
                },
                "timing": {"minimum": 540, "maximum": 660},
                "application": {"start": HISTORY.format(history=hist / name), "stop timeout": 2},
                "health": {"type": "none", "grace": 2, "retries": 1, "interval": 1},
            }
            (home / "configs").mkdir()
            (home / "configs" / "app.json").write_text(json.dumps(config))
            log = open(home / "agent.log", "wb")
            procs.append(
                subprocess.Popen(
                    [
                        common.PYTHON,
                        "-m",
                        "huddle",
                        "run",
                        str(home / "configs"),
                        "--state-dir",
                        str(home / "state"),
                        "--mqtt",
                        broker.url,
                        "--device-id",
                        name,
                        "--heartbeat",
                        "300",
                    ],
                    cwd=str(common.REPO_ROOT),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        v0 = common.git("rev-parse", "HEAD", cwd=origin.work)
        t_start = time.time()
        wait_ran(v0, len(names), 600)
        data["start_s"] = round(time.time() - t_start, 1)
        time.sleep(args.settle)  # MQTT connected, subscriptions made

        # 1. a push plus a trigger
        v1 = origin.commit("v1")
        pushed = time.time()
        trigger(args.spread)
        done = wait_ran(v1, len(names), 300)
        lat = [
            t
            for name in names
            for line in (hist / name).read_text().splitlines()
            for c, t in [line.split()]
            if c == v1
        ]
        conns = per_second(daemon.connections, pushed, done + 1)
        data["trigger"] = {
            "spread_s": args.spread,
            "all_running_s": round(done - pushed, 2),
            "latency": distribution([float(t) - pushed for t in lat]),
            "requests": sum(conns),
            "busiest_second": max(conns or [0]),
            "per_second": conns,
        }
        print(
            f"trigger: all {len(names)} run v1 {done - pushed:.1f} s after the push; "
            f"busiest second {max(conns or [0])} requests",
            flush=True,
        )
        time.sleep(args.settle)

        # 2. a bad commit with rollout waves and fleet bans: the configs gain [rollout]
        for name, proc in zip(names, procs, strict=True):
            path = root / "fleet" / name / "configs" / "app.json"
            config = json.loads(path.read_text())
            config["rollout"] = {
                "canary": ["a00[0-2]"],
                "wait": args.wave_wait,
                "spread": args.wave_spread,
            }
            path.write_text(json.dumps(config))
            proc.send_signal(signal.SIGHUP)  # reload: the app restarts on v1
        time.sleep(args.settle + 5)
        bad = origin.commit("v2", mode="crash")
        pushed = time.time()
        trigger(args.spread)
        horizon = args.spread + args.wave_wait + args.wave_spread + 20
        time.sleep(horizon)
        banned = sum(
            1
            for name in names
            if "banned by the fleet"
            in (root / "fleet" / name / "agent.log").read_text(errors="replace")
        )
        ran_bad = sorted(ran(bad))
        data["waves"] = {
            "canaries": 3,
            "wave_wait_s": args.wave_wait,
            "wave_spread_s": args.wave_spread,
            "observed_s": horizon,
            "ran_bad": len(ran_bad),
            "ran_bad_names": ran_bad,
            "skipped_with_fleet_ban": banned,
        }
        print(
            f"waves: {len(ran_bad)} of {len(names)} agents ever ran the bad commit "
            f"({', '.join(ran_bad)}); {banned} logged the fleet ban",
            flush=True,
        )
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        common.kill_tagged_leftovers(root)
        daemon.stop()
        broker.kill()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return data


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=100, help="agents (default 100)")
    parser.add_argument(
        "--duration", type=float, default=60, help="steady window in seconds (default 60)"
    )
    parser.add_argument("--pushes", type=int, default=3, help="pushes timed (default 3)")
    parser.add_argument(
        "--outage", type=float, default=60, help="seconds the git server is down (default 60)"
    )
    parser.add_argument(
        "--observe",
        type=float,
        default=240,
        help="seconds observed after the server returns (default 240)",
    )
    parser.add_argument("--minimum", type=float, default=5, help="poll minimum (default 5)")
    parser.add_argument("--maximum", type=float, default=15, help="poll maximum (default 15)")
    parser.add_argument(
        "--settle",
        type=float,
        default=20,
        help="seconds after all agents run before measuring (default 20)",
    )
    parser.add_argument("--seed", type=int, default=6, help="harness random seed")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--scenario",
        choices=["polls", "coordination"],
        default="polls",
        help="polls (issue 6, default) or coordination (issue 13)",
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=10,
        help="coordination: trigger spread in seconds (default 10)",
    )
    parser.add_argument(
        "--wave-wait",
        type=float,
        default=20,
        help="coordination: [rollout] wait of non-canaries (default 20)",
    )
    parser.add_argument(
        "--wave-spread", type=float, default=60, help="coordination: [rollout] spread (default 60)"
    )
    args = parser.parse_args(argv)
    interrupt_on_signals()
    if args.scenario == "coordination":
        data = coordination(args)
        common.publish_results(
            "fleet-coordination.json",
            data,
            json.dumps({k: v for k, v in data.items() if k != "machine"}, default=str),
        )
        return 0
    data = run(args)
    common.publish_results("fleet.json", data, report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
