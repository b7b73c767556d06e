"""The agent's footprint, the cost of a poll, and push-to-serving latency, beside a
naive `git fetch && git reset --hard` shell loop over the same repos.

Usage: python bench/bench_agent.py [--duration S] [--apps N] [--reps R] [--pushes P]

1. Idle: N apps (each its own bare repo over file://, app `sleep`, health none, poll every
   5..10 s) under `huddle run`, then under bench/naive_peer.sh (one loop, sleep 5..10 s per
   round). After all apps run and 2 s settle, a window of S seconds samples VmRSS of the agent
   (or of the bash loop) every 0.5 s, and its CPU (utime+stime) and its reaped children's CPU
   (cutime+cstime: git, sleep) at both ends. Polls in the window are counted (git ls-remote
   calls inside the agent via a counting runner; the loop counts its own), so CPU per
   no-change poll = (own + children CPU) / polls. R repetitions, alternating; medians.
2. Poll cost in-process: `GitRepo.remote_head` (what huddle runs per poll) against the naive
   loop's `git fetch` + `git reset --hard` + `git rev-parse`, CPU of the caller and of git.
3. Latency: one app serving HTTP, minimum = maximum = 1 s; P pushes that change what it serves,
   timed from `git push` returning to the first GET (polled every 20 ms) returning the new body.

Prints markdown tables; writes bench/out/agent.json.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.common import (  # noqa: E402
    Agent,
    NaivePeer,
    Origin,
    clone_origin,
    http_get,
    loadavg,
    server_command,
    summary,
    wait_until,
    write_config,
)

IDLE_START = "sleep 1000000"


# -- 1. idle footprint -------------------------------------------------------------------------


def idle_huddle(
    origins: list,
    root: Path,
    duration_s: float,
    http: bool = False,
    minimum_s: float = 5,
    maximum_s: float = 10,
) -> dict:
    """http: the apps are HTTP servers checked every 10 s (the default interval)."""
    configs, apps = root / "configs", root / "apps"
    for i, origin in enumerate(origins):
        port = common.free_port()
        write_config(
            configs,
            f"app{i:02d}",
            url=origin.url,
            local_path=apps / f"app{i:02d}",
            start=server_command(port) if http else IDLE_START,
            minimum_s=minimum_s,
            maximum_s=maximum_s,
            health={"type": "http", "port": port} if http else None,
        )
    agent = Agent(configs, root / "state", root / "agent.log")
    try:

        def all_running():
            state = agent.state()
            return len(state) == len(origins) and all(
                s.get("running") and s.get("pid") for s in state.values()
            )

        try:
            wait_until(all_running, 120, "all apps running under huddle", interval_s=0.1)
        except TimeoutError:
            log = (root / "agent.log").read_text(errors="replace")
            print(f"agent log tail:\n{log[-4000:]}\nstate: {agent.state()}", file=sys.stderr)
            raise
        time.sleep(2)
        marks = {}
        result = common.Window(agent.pid).run(
            duration_s,
            at_start=lambda: marks.update(start=agent.counts()),
            at_end=lambda: marks.update(end=agent.counts()),
        )
        calls = {
            k: v - marks["start"].get(k, 0)
            for k, v in marks["end"].items()
            if v - marks["start"].get(k, 0)
        }
        result.update(polls=calls.get("ls-remote", 0), git_calls=calls)
    finally:
        agent.stop()
    return result


def idle_naive(origins: list, root: Path, duration_s: float) -> dict:
    apps = root / "apps"
    apps.mkdir(parents=True)
    specs = [
        (clone_origin(o, apps / f"app{i:02d}"), o.branch, IDLE_START) for i, o in enumerate(origins)
    ]
    peer = NaivePeer(specs, 5, 10, root)
    try:
        peer.wait_ready(120)
        time.sleep(2)
        marks = {}
        result = common.Window(peer.pid).run(
            duration_s,
            at_start=lambda: marks.update(start=peer.polls()),
            at_end=lambda: marks.update(end=peer.polls()),
        )
        result.update(polls=marks["end"] - marks["start"])
    finally:
        peer.stop()
    return result


# -- 2. poll cost in-process -------------------------------------------------------------------


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def poll_cost(origin: Origin, root: Path, runs: int) -> dict:
    from huddle.git import GitRepo

    huddle_tree = clone_origin(origin, root / "huddle-tree")
    naive_tree = clone_origin(origin, root / "naive-tree")
    repo = GitRepo(huddle_tree)

    async def remote_heads(n: int) -> None:
        for _ in range(n):
            await repo.remote_head("origin", origin.branch)

    def naive_polls(n: int) -> None:
        for _ in range(n):
            common.git("fetch", "-q", "origin", origin.branch, cwd=naive_tree)
            common.git("reset", "-q", "--hard", f"origin/{origin.branch}", cwd=naive_tree)
            common.git("rev-parse", "HEAD", cwd=naive_tree)

    def measure(operation) -> dict:
        operation(max(5, runs // 10))  # warm-up: page cache, first-call imports
        own0, kids0, wall0 = time.process_time(), children_cpu_s(), time.perf_counter()
        operation(runs)
        return {
            "own_ms": (time.process_time() - own0) / runs * 1e3,
            "git_ms": (children_cpu_s() - kids0) / runs * 1e3,
            "wall_ms": (time.perf_counter() - wall0) / runs * 1e3,
        }

    return {
        "huddle remote_head (git ls-remote)": measure(lambda n: asyncio.run(remote_heads(n))),
        "naive fetch + reset --hard + rev-parse": measure(naive_polls),
    }


# -- 3. push-to-serving latency ----------------------------------------------------------------


def serving(port: int, body: str | None = None) -> bool:
    status, got = http_get(port, timeout_s=0.3)
    return status == 200 and (body is None or got == body)


def push_latencies(origin: Origin, port: int, pushes: int, tag: str) -> list:
    wait_until(
        lambda: serving(port), 60, f"the app on port {port} serving ({tag})", interval_s=0.05
    )
    latencies = []
    for k in range(1, pushes + 1):
        time.sleep(random.uniform(0.3, 1.3))  # decorrelate the push from the poll phase
        message = f"{tag} v{k} {random.random()}"
        origin.commit(message)
        pushed = origin.pushed_at
        wait_until(
            lambda message=message: serving(port, message),
            60,
            f"push {k} served ({tag})",
            interval_s=0.02,
        )
        latencies.append(time.monotonic() - pushed)
    return latencies


def latency_huddle(origin: Origin, root: Path, pushes: int) -> list:
    port = common.free_port()
    health = {"type": "http", "port": port, "interval": 1, "grace": 1, "retries": 2, "timeout": 1}
    write_config(
        root / "configs",
        "web",
        url=origin.url,
        local_path=root / "web",
        start=server_command(port),
        minimum_s=1,
        maximum_s=1,
        health=health,
    )
    agent = Agent(root / "configs", root / "state", root / "agent.log")
    try:
        return push_latencies(origin, port, pushes, "huddle")
    finally:
        agent.stop()


def latency_naive(origin: Origin, root: Path, pushes: int) -> list:
    port = common.free_port()
    root.mkdir(parents=True)
    tree = clone_origin(origin, root / "web")
    peer = NaivePeer([(tree, origin.branch, server_command(port))], 1, 1, root)
    try:
        return push_latencies(origin, port, pushes, "naive")
    finally:
        peer.stop()


# -- report ------------------------------------------------------------------------------------


def med(runs: list, key: str) -> float:
    return statistics.median(r[key] for r in runs)


def derived(run: dict) -> dict:
    seconds = run["seconds"]
    polls = max(run["polls"], 1)
    return {
        **run,
        "cpu_own_pct": run["cpu_own_s"] / seconds * 100,
        "cpu_total_pct": (run["cpu_own_s"] + run["cpu_children_s"]) / seconds * 100,
        "polls_per_min": run["polls"] / seconds * 60,
        "own_ms_per_poll": run["cpu_own_s"] / polls * 1e3,
        "children_ms_per_poll": run["cpu_children_s"] / polls * 1e3,
        "total_ms_per_poll": (run["cpu_own_s"] + run["cpu_children_s"]) / polls * 1e3,
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "n/a"


def report(data: dict) -> str:
    h, n = data["idle"]["huddle"], data["idle"]["naive"]
    apps, duration = data["params"]["apps"], data["params"]["duration"]
    lines = [
        common.machine_line(data["machine"]),
        f"load average at end {data['load_end']}",
        "",
        f"### Idle: {apps} apps, poll 5..10 s, {duration:g} s window, median of {len(h)} runs",
        "",
        "| measure | huddle | naive peer | huddle / naive |",
        "|---|---:|---:|---:|",
    ]
    rows = [
        ("RSS median, MB (agent / bash loop only)", "rss_kb_median", 1 / 1024, "{:.1f}"),
        ("RSS max in window, MB", "rss_kb_max", 1 / 1024, "{:.1f}"),
        ("CPU own, % of one core", "cpu_own_pct", 1, "{:.3f}"),
        ("CPU own + children (git), % of one core", "cpu_total_pct", 1, "{:.3f}"),
        ("no-change polls per minute (all apps)", "polls_per_min", 1, "{:.0f}"),
        ("CPU per no-change poll: own, ms", "own_ms_per_poll", 1, "{:.2f}"),
        ("CPU per no-change poll: children (git), ms", "children_ms_per_poll", 1, "{:.2f}"),
        ("CPU per no-change poll: total, ms", "total_ms_per_poll", 1, "{:.2f}"),
    ]
    for label, key, scale, fmt in rows:
        a, b = med(h, key) * scale, med(n, key) * scale
        lines.append(f"| {label} | {fmt.format(a)} | {fmt.format(b)} | {ratio(a, b)} |")
    if data["idle"].get("huddle_http"):
        hh = data["idle"]["huddle_http"]
        lines += [
            "",
            f"huddle with {apps} HTTP apps, each checked every 10 s (median of "
            f"{len(hh)}): RSS {med(hh, 'rss_kb_median') / 1024:.1f} MB, CPU own "
            f"{med(hh, 'cpu_own_pct'):.3f} %, own + children "
            f"{med(hh, 'cpu_total_pct'):.3f} % of one core, "
            f"{med(hh, 'polls_per_min'):.0f} polls/min",
        ]
    lines += [
        "",
        f"reference: a venv python doing nothing has RSS "
        f"{data['python_baseline_kb'] / 1024:.1f} MB",
        "",
        "per run (RSS median MB, CPU own+children %, polls):",
        "huddle: "
        + "; ".join(
            f"{r['rss_kb_median'] / 1024:.1f} MB, {r['cpu_total_pct']:.3f} %, {r['polls']}"
            for r in h
        ),
        "naive:  "
        + "; ".join(
            f"{r['rss_kb_median'] / 1024:.1f} MB, {r['cpu_total_pct']:.3f} %, {r['polls']}"
            for r in n
        ),
        "",
        f"### One no-change poll in-process over file:// "
        f"(median of {data['params']['reps']} x {data['params']['poll_runs']} calls)",
        "",
        "| operation | caller CPU ms | git CPU ms | total CPU ms | wall ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, reps in data["poll_cost"].items():
        own, kids = med(reps, "own_ms"), med(reps, "git_ms")
        lines.append(
            f"| {name} | {own:.2f} | {kids:.2f} | {own + kids:.2f} | {med(reps, 'wall_ms'):.2f} |"
        )
    lh, ln = summary(data["latency"]["huddle"]), summary(data["latency"]["naive"])
    lines += [
        "",
        f"### Push to serving, one HTTP app, poll every 1 s, {lh['n']} pushes each",
        "",
        "| seconds | huddle | naive peer | huddle / naive |",
        "|---|---:|---:|---:|",
    ]
    for key in ("median", "p90", "max"):
        lines.append(f"| {key} | {lh[key]:.3f} | {ln[key]:.3f} | {ratio(lh[key], ln[key])} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--duration", type=float, default=60.0, help="idle window in seconds (default 60)"
    )
    parser.add_argument("--apps", type=int, default=20, help="idle apps (default 20)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--pushes", type=int, default=10, help="pushes per peer (default 10)")
    parser.add_argument(
        "--with-health",
        action="store_true",
        help="also run huddle idle with HTTP apps checked every 10 s",
    )
    parser.add_argument(
        "--poll-runs",
        type=int,
        default=100,
        help="calls per in-process poll measurement (default 100)",
    )
    args = parser.parse_args()
    info = common.machine()
    print(common.machine_line(info), flush=True)
    root = common.temp_root("huddle-bench-agent-")
    data = {
        "machine": info,
        "params": vars(args),
        "idle": {"huddle": [], "naive": []},
        "poll_cost": {},
        "latency": {},
    }
    try:
        data["python_baseline_kb"] = common.baseline_python_rss_kb()
        origins_dir = root / "origins"
        origins_dir.mkdir()
        origins = [Origin(origins_dir, f"app{i:02d}") for i in range(args.apps)]
        for rep in range(args.reps):
            for kind, run in (("huddle", idle_huddle), ("naive", idle_naive)):
                print(
                    f"idle {kind} run {rep + 1}/{args.reps} ({args.duration:g} s, load "
                    f"{loadavg()})",
                    file=sys.stderr,
                    flush=True,
                )
                result = derived(run(origins, root / f"idle-{kind}-{rep}", args.duration))
                data["idle"][kind].append(result)
        if args.with_health:
            for rep in range(args.reps):
                print(
                    f"idle huddle with health checks, run {rep + 1}/{args.reps} (load {loadavg()})",
                    file=sys.stderr,
                    flush=True,
                )
                data["idle"].setdefault("huddle_http", []).append(
                    derived(
                        idle_huddle(origins, root / f"idle-http-{rep}", args.duration, http=True)
                    )
                )
        print(f"poll cost in-process (load {loadavg()})", file=sys.stderr, flush=True)
        for rep in range(args.reps):
            for name, value in poll_cost(origins[0], root / f"poll-{rep}", args.poll_runs).items():
                data["poll_cost"].setdefault(name, []).append(value)
        print(f"push-to-serving latency (load {loadavg()})", file=sys.stderr, flush=True)
        web = Origin(origins_dir, "web")
        data["latency"]["huddle"] = latency_huddle(web, root / "lat-huddle", args.pushes)
        data["latency"]["naive"] = latency_naive(web, root / "lat-naive", args.pushes)
        data["load_end"] = loadavg()
    finally:
        common.kill_tagged_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)
    data["summary"] = {"latency": {k: summary(v) for k, v in data["latency"].items()}}
    common.publish_results("agent.json", data, report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
