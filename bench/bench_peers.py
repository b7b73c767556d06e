"""huddle beside what people use instead, in one run, on the same repo and app.

Usage: python bench/bench_peers.py [--reps R] [--pushes P] [--idle S] [--no-ansible]

Peers, each following the same bare repo over file:// and running the same tiny HTTP app
(the harness's `app.py`) from its own checkout, polling every 1 s:
- huddle: `huddle run` with one app config (health type none, minimum = maximum = 1 s);
- naive: bench/naive_peer.sh, `git fetch && git reset --hard`, restart when HEAD moved;
- ansible-pull: `ansible-pull -U file://... -C main -d CHECKOUT -i INVENTORY --only-if-changed
  PLAYBOOK` in a bash loop with 1 s between runs; the playbook restarts the app; inventory is
  localhost with ansible_connection=local. ansible-core comes from PyPI in the bench's own venv
  (`.venv-bench`, made by `make bench`; or $ANSIBLE_PULL).

Per peer and repetition:
1. one no-change poll, CPU (the caller and every child it reaped) and wall: huddle's agent
   polling every 0.05 s for a window, CPU / polls (see bench_pollfloor.py); the naive loop's
   fetch + reset --hard + rev-parse, 20 times from bash; ansible-pull, 3 runs with no change;
2. running at a 1 s poll for S idle seconds: CPU of the peer's process tree (own + reaped
   children) as % of one core;
3. P pushes, each timed from `git push` returning to the first GET (every 20 ms) that serves
   the new body;
4. peak RSS of the peer's process tree (the agent or loop plus its git / ansible children;
   the app excluded), sampled every 20 ms through 2 and 3; and the root process's own RSS.
Repetitions alternate peers; medians. Ratios are huddle / peer. Writes bench/out/peers.json.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.bench_agent import push_latencies  # noqa: E402
from bench.bench_pollfloor import agent_per_poll  # noqa: E402
from bench.common import (  # noqa: E402
    Agent,
    AnsiblePeer,
    NaivePeer,
    Origin,
    TreePeak,
    clone_origin,
    loadavg,
    server_command,
    skip_app,
    write_config,
)

PEERS = ("huddle", "naive", "ansible-pull")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_children(run) -> tuple:
    """(CPU s of the children run() reaped, wall s)."""
    kids0, wall0 = children_cpu_s(), time.perf_counter()
    run()
    return children_cpu_s() - kids0, time.perf_counter() - wall0


# -- 1. one no-change poll -----------------------------------------------------------------


def poll_huddle(origin: Origin, work: Path, window_s: float) -> dict:
    r = agent_per_poll(origin.url, False, work, window_s)
    return {
        "cpu_ms": r["own_ms"] + r["git_ms"],
        "own_ms": r["own_ms"],
        "wall_ms": r["wall_ms"],
        "n": r["polls"],
    }


def poll_naive(origin: Origin, work: Path, calls: int = 20) -> dict:
    tree = clone_origin(origin, work / "naive-poll")
    script = (
        f"cd {tree} && for i in $(seq {calls}); do git fetch -q origin {origin.branch} "
        f"&& git reset -q --hard origin/{origin.branch} && git rev-parse HEAD >/dev/null "
        f"|| exit 1; done"
    )
    cpu, wall = timed_children(
        lambda: subprocess.run(["bash", "-c", script], check=True, env=common.GIT_ENV, timeout=300)
    )
    return {"cpu_ms": cpu / calls * 1e3, "wall_ms": wall / calls * 1e3, "n": calls}


def poll_ansible(peer: AnsiblePeer, runs: int = 3) -> dict:
    """peer's checkout is current: every run finds no change and skips the playbook."""
    cpus, walls = [], []
    with TreePeak(os.getpid(), skip=lambda pid: pid == os.getpid()) as peak:
        for _ in range(runs):
            result = []
            cpu, wall = timed_children(lambda result=result: result.append(peer.pull_once()))
            if result[0].returncode != 0 or "has not changed" not in result[0].stdout:
                raise RuntimeError(
                    f"ansible-pull no-change run failed: {result[0].stdout[-2000:]}"
                    f"{result[0].stderr[-2000:]}"
                )
            cpus.append(cpu)
            walls.append(wall)
    # the sampled tree is this process's children: ansible-pull and what it forks
    return {
        "cpu_ms": statistics.median(cpus) * 1e3,
        "wall_ms": statistics.median(walls) * 1e3,
        "n": runs,
        "peak_rss_kb": max(0, peak.peak_kb - (common.rss_kb(os.getpid()) or 0)),
    }


# -- 2-4. running at 1 s: idle CPU, push-to-serving, peak RSS --------------------------------


def running(pid: int, origin: Origin, port: int, idle_s: float, pushes: int, tag: str) -> dict:
    common.wait_until(
        lambda: common.http_get(port, timeout_s=0.3)[0], 120, f"{tag} serving", interval_s=0.05
    )
    time.sleep(1)
    with TreePeak(pid, skip=skip_app()) as peak:
        tree_cpu0 = tree_cpu_s(pid)
        own = common.Window(pid).run(idle_s, step_s=0.5)
        idle_cpu = tree_cpu_s(pid) - tree_cpu0
        latencies = push_latencies(origin, port, pushes, tag)
    return {
        "idle_cpu_pct": idle_cpu / own["seconds"] * 100,
        "idle_s": own["seconds"],
        "root_rss_kb": own["rss_kb_median"],
        "peak_rss_kb": peak.peak_kb,
        "rss_samples": peak.samples,
        "latencies": latencies,
    }


def tree_cpu_s(pid: int) -> float:
    """The root's own CPU and its reaped children's, plus the live (unreaped) children's own
    CPU, except the app's (a live ansible-pull at the window's edge counts its share so far)."""
    total = common.total_cpu_s(pid)
    for child in common.tree_pids(pid, skip_app()):
        if child != pid:
            try:
                total += common.cpu_s(child)[0]
            except OSError:
                pass  # exited between the scan and the read: reaped into its parent
    return total


def run_huddle(origin: Origin, work: Path, idle_s: float, pushes: int) -> dict:
    port = common.free_port()
    write_config(
        work / "configs",
        "web",
        url=origin.url,
        local_path=work / "web",
        start=server_command(port),
        minimum_s=1,
        maximum_s=1,
    )
    agent = Agent(work / "configs", work / "state", work / "agent.log")
    try:
        return running(agent.pid, origin, port, idle_s, pushes, "huddle")
    finally:
        agent.stop()


def run_naive(origin: Origin, work: Path, idle_s: float, pushes: int) -> dict:
    port = common.free_port()
    work.mkdir(parents=True)
    tree = clone_origin(origin, work / "web")
    peer = NaivePeer([(tree, origin.branch, server_command(port))], 1, 1, work)
    try:
        return running(peer.pid, origin, port, idle_s, pushes, "naive")
    finally:
        peer.stop()


def run_ansible(ansible_pull: str, origin: Origin, work: Path, idle_s: float, pushes: int) -> dict:
    port = common.free_port()
    peer = AnsiblePeer(ansible_pull, origin.url, origin.branch, server_command(port), work)
    try:
        first = peer.pull_once()  # clones and starts the app (the playbook runs)
        if first.returncode != 0:
            raise RuntimeError(f"ansible-pull failed: {first.stdout[-3000:]}{first.stderr[-2000:]}")
        poll = poll_ansible(peer)
        peer.start()
        result = running(peer.pid, origin, port, idle_s, pushes, "ansible-pull")
        result["poll"] = poll
        return result
    finally:
        peer.stop()


# -- report --------------------------------------------------------------------------------


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def metrics(data: dict, peer: str) -> dict:
    reps = data["runs"].get(peer)
    if not reps:
        return {}
    lat = [x for r in reps for x in r["latencies"]]
    s = common.summary(lat)
    return {
        "poll_cpu_ms": med(r["poll"]["cpu_ms"] for r in reps),
        "poll_wall_ms": med(r["poll"]["wall_ms"] for r in reps),
        "idle_cpu_pct": med(r["idle_cpu_pct"] for r in reps),
        "latency_median_s": s["median"],
        "latency_p90_s": s["p90"],
        "latency_max_s": s["max"],
        "peak_rss_mb": med(max(r["peak_rss_kb"], r["poll"].get("peak_rss_kb", 0)) for r in reps)
        / 1024,
        "root_rss_mb": med(r["root_rss_kb"] for r in reps) / 1024,
    }


ROWS = [
    ("one no-change poll: CPU ms (caller + children)", "poll_cpu_ms", "{:.1f}"),
    ("one no-change poll: wall ms", "poll_wall_ms", "{:.1f}"),
    ("idle at 1 s polls: CPU % of one core (tree)", "idle_cpu_pct", "{:.2f}"),
    ("push to serving at 1 s polls: median s", "latency_median_s", "{:.2f}"),
    ("push to serving: p90 s", "latency_p90_s", "{:.2f}"),
    ("push to serving: max s", "latency_max_s", "{:.2f}"),
    ("peak RSS, MB (process tree, app excluded)", "peak_rss_mb", "{:.1f}"),
    ("RSS of the agent / loop process alone, MB", "root_rss_mb", "{:.1f}"),
]


def ratio(a: float, b: float) -> str:
    if not b:
        return "n/a"
    r = a / b
    return f"{r:.4f} (1/{1 / r:.0f})" if 0 < r < 0.1 else f"{r:.2f}"


def report(data: dict) -> str:
    p = data["params"]
    peers = [peer for peer in PEERS if data["runs"].get(peer)]
    m = {peer: metrics(data, peer) for peer in peers}
    others = [peer for peer in peers if peer != "huddle"]
    head = (
        "| measure | "
        + " | ".join(peers)
        + " | "
        + " | ".join(f"huddle / {o}" for o in others)
        + " |"
    )
    lines = [
        common.machine_line(data["machine"]),
        f"load average at end {data['load_end']}",
        "",
        f"### Peers side by side: one app, same repo (file://), poll every 1 s; "
        f"medians of {p['reps']} runs, {p['pushes']} pushes per run",
        "",
        head,
        "|---|" + "---:|" * (len(peers) + len(others)),
    ]
    for label, key, spec in ROWS:
        cells = [spec.format(m[peer][key]) for peer in peers]
        ratios = [ratio(m["huddle"][key], m[o][key]) for o in others]
        lines.append(f"| {label} | " + " | ".join(cells) + " | " + " | ".join(ratios) + " |")
    if data.get("skipped"):
        lines += ["", f"skipped: {data['skipped']}"]
    lines += [
        "",
        "no-change polls measured per run: "
        + "; ".join(f"{peer} {data['runs'][peer][0]['poll']['n']}" for peer in peers),
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument("--pushes", type=int, default=5, help="pushes per run (default 5)")
    parser.add_argument(
        "--idle", type=float, default=10.0, help="idle window at 1 s polls, seconds (default 10)"
    )
    parser.add_argument(
        "--poll-window",
        type=float,
        default=10.0,
        help="huddle's per-poll CPU window, seconds (default 10)",
    )
    parser.add_argument("--no-ansible", action="store_true", help="leave ansible-pull out")
    args = parser.parse_args()
    info = common.machine()
    print(common.machine_line(info), flush=True)
    ansible_pull = None if args.no_ansible else common.find_ansible_pull()
    data = {"machine": info, "params": vars(args), "runs": {}, "skipped": None}
    if ansible_pull:
        version = subprocess.run(
            [ansible_pull, "--version"], capture_output=True, text=True, timeout=60
        ).stdout.splitlines()
        info["ansible"] = version[0] if version else "unknown"
    elif not args.no_ansible:
        data["skipped"] = (
            "ansible-pull not found (run `make bench`, which installs "
            "ansible-core into .venv-bench, or set $ANSIBLE_PULL)"
        )
        print(data["skipped"], file=sys.stderr)
    root = common.temp_root("huddle-bench-peers-")
    try:
        origins = root / "origins"
        origins.mkdir()
        origin = Origin(origins, "web")
        for rep in range(args.reps):
            for peer in PEERS:
                if peer == "ansible-pull" and not ansible_pull:
                    continue
                print(
                    f"{peer} run {rep + 1}/{args.reps} (load {loadavg()})",
                    file=sys.stderr,
                    flush=True,
                )
                work = root / f"{peer}-{rep}"
                if peer == "huddle":
                    result = run_huddle(origin, work, args.idle, args.pushes)
                    result["poll"] = poll_huddle(origin, work / "poll", args.poll_window)
                elif peer == "naive":
                    result = run_naive(origin, work, args.idle, args.pushes)
                    result["poll"] = poll_naive(origin, work)
                else:
                    result = run_ansible(ansible_pull, origin, work, args.idle, args.pushes)
                data["runs"].setdefault(peer, []).append(result)
        data["load_end"] = loadavg()
    finally:
        common.kill_tagged_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)
    data["summary"] = {peer: metrics(data, peer) for peer in PEERS if data["runs"].get(peer)}
    common.publish_results("peers.json", data, report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
