"""What huddle's no-change poll costs against the floor, one `git ls-remote`.

Usage: python bench/bench_pollfloor.py [--calls N] [--reps R] [--window S]

The cheapest possible change check is one round trip to the remote: `git ls-remote URL REF`.
For each kind of remote on loopback — `file://`, `git://` (git daemon; protocol v2, git's
default, and v1 forced with `-c protocol.version=1`) and smart HTTP (git http-backend behind a
small threaded WSGI-style server, its own process) — this measures:

1. the floor: N calls of `git ls-remote` from a bash loop (wall and CPU of bash + git per
   call), and N calls through `subprocess.run` from Python (the cheapest a Python caller can
   do: the caller's CPU, git's CPU, wall);
2. huddle in-process: N calls of `GitRepo.remote_head` (what the agent runs per poll), same
   three figures; the git daemon's or HTTP server's CPU per call is given beside;
3. the agent: `huddle run` with one app polling that remote every 0.05 s for S seconds; its
   own CPU (utime+stime) and its git children's CPU (cutime+cstime) divided by the polls it
   made (counted inside the agent), so the loop, timers and logging are included.

The v1 rows of huddle pass protocol.version=1 through git's GIT_CONFIG_COUNT environment, which
is what huddle would do by default for git:// remotes if the v2 delay is real. R repetitions,
medians. Prints markdown tables; writes bench/out/pollfloor.json.
"""

from __future__ import annotations

import argparse
import asyncio
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
from bench.common import Agent, GitServers, Origin, loadavg, write_config  # noqa: E402

# (label, server kind, protocol v1 forced)
REMOTES = [
    ("file://", "file", False),
    ("git:// v2 (default)", "git", False),
    ("git:// v1", "git", True),
    ("smart HTTP", "http", False),
]
V1_ENV = {
    "GIT_CONFIG_COUNT": "1",
    "GIT_CONFIG_KEY_0": "protocol.version",
    "GIT_CONFIG_VALUE_0": "1",
}


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class ServerCPU:
    """CPU the remote's server process (and its reaped children) spent during a block."""

    def __init__(self, servers: GitServers, kind: str) -> None:
        self.pid = servers.server_pid(kind)
        self.ms = None

    def total_s(self) -> float:
        # `git daemon` is a git process waiting for its git-daemon child: sum the tree
        total = 0.0
        for pid in common.tree_pids(self.pid):
            try:
                total += common.total_cpu_s(pid)
            except OSError:
                pass  # a connection's child that just exited: its parent reaps it
        return total

    def __enter__(self):
        self.start = self.total_s() if self.pid else None
        return self

    def __exit__(self, *exc):
        if self.pid:
            time.sleep(0.05)  # let the daemon reap its last upload-pack
            self.ms = (self.total_s() - self.start) * 1e3


def ls_remote_argv(url: str, v1: bool) -> list:
    return [
        "git",
        *(["-c", "protocol.version=1"] if v1 else []),
        "ls-remote",
        url,
        "refs/heads/main",
    ]


def floor_shell(url: str, v1: bool, calls: int, servers, kind) -> dict:
    argv = " ".join(ls_remote_argv(url, v1))
    script = f"for i in $(seq {calls}); do {argv} >/dev/null || exit 1; done"
    with ServerCPU(servers, kind) as server:
        kids0, wall0 = children_cpu_s(), time.perf_counter()
        subprocess.run(["bash", "-c", script], check=True, env=common.GIT_ENV, timeout=600)
        wall, cpu = time.perf_counter() - wall0, children_cpu_s() - kids0
    return {
        "wall_ms": wall / calls * 1e3,
        "cpu_ms": cpu / calls * 1e3,
        "server_ms": server.ms / calls if server.ms is not None else None,
    }


def floor_python(url: str, v1: bool, calls: int) -> dict:
    argv = ls_remote_argv(url, v1)
    own0, kids0, wall0 = time.process_time(), children_cpu_s(), time.perf_counter()
    for _ in range(calls):
        subprocess.run(argv, capture_output=True, check=True, env=common.GIT_ENV, timeout=60)
    return {
        "own_ms": (time.process_time() - own0) / calls * 1e3,
        "git_ms": (children_cpu_s() - kids0) / calls * 1e3,
        "wall_ms": (time.perf_counter() - wall0) / calls * 1e3,
    }


def huddle_inprocess(tree: Path, v1: bool, calls: int, servers, kind) -> dict:
    from huddle.git import GitRepo

    repo = GitRepo(tree, env={**os.environ, **(V1_ENV if v1 else {})})

    async def polls(n: int) -> None:
        for _ in range(n):
            await repo.remote_head("origin", "main")

    asyncio.run(polls(5))  # warm-up
    with ServerCPU(servers, kind) as server:
        own0, kids0, wall0 = time.process_time(), children_cpu_s(), time.perf_counter()
        asyncio.run(polls(calls))
        result = {
            "own_ms": (time.process_time() - own0) / calls * 1e3,
            "git_ms": (children_cpu_s() - kids0) / calls * 1e3,
            "wall_ms": (time.perf_counter() - wall0) / calls * 1e3,
        }
    result["server_ms"] = server.ms / calls if server.ms is not None else None
    return result


def agent_per_poll(url: str, v1: bool, root: Path, window_s: float) -> dict:
    """One app polling every 0.05 s under `huddle run`: CPU per no-change poll."""
    write_config(
        root / "configs",
        "app",
        url=url,
        local_path=root / "tree",
        start="sleep 1000000",
        minimum_s=0.05,
        maximum_s=0.05,
    )
    agent = Agent(
        root / "configs", root / "state", root / "agent.log", extra_env=V1_ENV if v1 else None
    )
    try:
        common.wait_until(
            lambda: agent.state().get("app", {}).get("running"),
            60,
            "the app running under huddle",
            interval_s=0.05,
        )
        time.sleep(1)
        marks = {}
        window = common.Window(agent.pid).run(
            window_s,
            step_s=1.0,
            at_start=lambda: marks.update(start=agent.counts()),
            at_end=lambda: marks.update(end=agent.counts()),
        )
    finally:
        agent.stop()
    polls = marks["end"].get("ls-remote", 0) - marks["start"].get("ls-remote", 0)
    other = {
        k: v - marks["start"].get(k, 0)
        for k, v in marks["end"].items()
        if k != "ls-remote" and v - marks["start"].get(k, 0)
    }
    n = max(polls, 1)
    return {
        "polls": polls,
        "other_git_calls": other,
        "seconds": window["seconds"],
        "own_ms": window["cpu_own_s"] / n * 1e3,
        "git_ms": window["cpu_children_s"] / n * 1e3,
        "wall_ms": window["seconds"] / n * 1e3 - 50.0,  # minus the 0.05 s sleep
        "rss_kb": window["rss_kb_median"],
    }


def add_tags(bare: Path, count: int) -> None:
    """count tags on the branch's commit, written as packed-refs (a repo with a long history
    of releases: what protocol v1 advertises in full and v2 filters on the server)."""
    sha = common.git("rev-parse", "refs/heads/main", cwd=bare)
    with open(bare / "packed-refs", "a") as fh:
        for i in range(count):
            fh.write(f"{sha} refs/tags/release-{i:05d}\n")


def many_refs(servers: GitServers, calls: int, reps: int) -> dict:
    """Shell-floor ls-remote of one branch in a repo with many tags, git:// v2 against v1."""
    out = {}
    for label, v1 in (("v2", False), ("v1", True)):
        runs = [
            floor_shell(servers.url("git", "tags.git"), v1, calls, servers, "git")
            for _ in range(reps)
        ]
        out[label] = runs
    return out


def med(runs: list, key: str):
    values = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(values) if values else None


def fmt(value, spec="{:.2f}") -> str:
    return "n/a" if value is None else spec.format(value)


def report(data: dict) -> str:
    p = data["params"]
    lines = [
        common.machine_line(data["machine"]),
        f"load average at end {data['load_end']}",
        "",
        f"### One no-change poll against the floor (medians of {p['reps']} runs of "
        f"{p['calls']} calls; agent: {p['window']:g} s windows at 0.05 s polls)",
        "",
        "| remote | floor: shell loop `git ls-remote` CPU / wall ms "
        "| floor: Python `subprocess.run` caller + git CPU / wall ms "
        "| huddle `remote_head` caller + git CPU / wall ms "
        "| agent per poll: own + git CPU / wall ms | server CPU ms per call "
        "| huddle agent / shell floor, CPU |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, _, _ in REMOTES:
        r = data["remotes"][label]
        sh, py, hu, ag = r["shell"], r["python"], r["huddle"], r["agent"]
        sh_cpu = med(sh, "cpu_ms")
        ag_cpu = med(ag, "own_ms") + med(ag, "git_ms")
        lines.append(
            f"| {label} | {fmt(sh_cpu)} / {fmt(med(sh, 'wall_ms'))} "
            f"| {fmt(med(py, 'own_ms'))} + {fmt(med(py, 'git_ms'))} / {fmt(med(py, 'wall_ms'))} "
            f"| {fmt(med(hu, 'own_ms'))} + {fmt(med(hu, 'git_ms'))} / {fmt(med(hu, 'wall_ms'))} "
            f"| {fmt(med(ag, 'own_ms'))} + {fmt(med(ag, 'git_ms'))} / {fmt(med(ag, 'wall_ms'))} "
            f"| {fmt(med(hu, 'server_ms'))} | {ag_cpu / sh_cpu:.2f} |"
        )
    lines += [
        "",
        "agent polls per window: "
        + "; ".join(
            f"{label} {', '.join(str(a['polls']) for a in data['remotes'][label]['agent'])}"
            for label, _, _ in REMOTES
        ),
    ]
    v2, v1 = data["remotes"]["git:// v2 (default)"], data["remotes"]["git:// v1"]
    lines += [
        "",
        f"git:// protocol v2 - v1, wall per call: shell floor "
        f"{med(v2['shell'], 'wall_ms') - med(v1['shell'], 'wall_ms'):+.1f} ms, huddle "
        f"{med(v2['huddle'], 'wall_ms') - med(v1['huddle'], 'wall_ms'):+.1f} ms",
    ]
    tags = data.get("many_refs")
    if tags:
        lines += [
            "",
            f"### git:// with {p['tags']} tags beside the branch (shell floor, "
            f"median of {p['reps']} runs)",
            "",
            "| protocol | client CPU ms | server CPU ms | wall ms |",
            "|---|---:|---:|---:|",
        ]
        for label in ("v2", "v1"):
            runs = tags[label]
            lines.append(
                f"| {label} | {fmt(med(runs, 'cpu_ms'))} | "
                f"{fmt(med(runs, 'server_ms'))} | {fmt(med(runs, 'wall_ms'))} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50, help="calls per run (default 50)")
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    parser.add_argument(
        "--window", type=float, default=15.0, help="agent window in seconds (default 15)"
    )
    parser.add_argument(
        "--tags",
        type=int,
        default=5000,
        help="tags in the many-refs repo for v1 vs v2 (default 5000; 0: skip)",
    )
    args = parser.parse_args()
    info = common.machine()
    print(common.machine_line(info), flush=True)
    root = common.temp_root("huddle-bench-pollfloor-")
    data = {"machine": info, "params": vars(args), "remotes": {}}
    servers = None
    try:
        origins = root / "origins"
        origins.mkdir()
        Origin(origins, "web")
        if args.tags:
            Origin(origins, "tags")
            add_tags(origins / "tags.git", args.tags)
        servers = GitServers(origins)
        for label, kind, v1 in REMOTES:
            url = servers.url(kind, "web.git")
            tree = root / f"tree-{kind}{'-v1' if v1 else ''}"
            common.git("clone", "--quiet", "--branch", "main", url, str(tree), cwd=root)
            runs = {"shell": [], "python": [], "huddle": [], "agent": []}
            for rep in range(args.reps):
                print(
                    f"{label}: run {rep + 1}/{args.reps} (load {loadavg()})",
                    file=sys.stderr,
                    flush=True,
                )
                runs["shell"].append(floor_shell(url, v1, args.calls, servers, kind))
                runs["python"].append(floor_python(url, v1, args.calls))
                runs["huddle"].append(huddle_inprocess(tree, v1, args.calls, servers, kind))
                runs["agent"].append(
                    agent_per_poll(url, v1, root / f"agent-{kind}-{v1}-{rep}", args.window)
                )
            data["remotes"][label] = runs
        if args.tags:
            print(
                f"git:// v2 vs v1 with {args.tags} tags (load {loadavg()})",
                file=sys.stderr,
                flush=True,
            )
            data["many_refs"] = many_refs(servers, args.calls, args.reps)
        data["load_end"] = loadavg()
    finally:
        if servers is not None:
            servers.stop()
        common.kill_tagged_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)
    common.publish_results("pollfloor.json", data, report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
