"""How fast huddle notices a failed app and recovers, and how fast a bad commit is
rolled back; measured from outside.

Usage: python bench/bench_recovery.py [--reps R] [--timeout S]

One app (bench/common.py's tiny HTTP server) under `huddle run`, health http with
`interval` 1, `retries` 2, `grace` 1 (and `timeout` S, default 1; the hang case also runs with
the default timeout 3), poll minimum = maximum = 1 s. The harness polls the app's HTTP endpoint
and state.json every 20 ms:

- kill -9 of the app, three times in a row per agent (the 2nd and 3rd show the restart
  backoff, which only resets after 60 s of stable running); each repetition is a fresh agent;
- SIGSTOP of the app (a hang: it accepts connections and never answers);
- a pushed commit that crashes at start, and one that answers HTTP 500: time from `git push`
  returning to the rollback being complete (the good commit serving again and state.json
  listing the bad commit in `bad`), split at the moment state.json shows the bad commit
  deployed.

Prints markdown tables; writes bench/out/recovery.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.common import (  # noqa: E402
    Agent,
    Origin,
    http_get,
    loadavg,
    server_command,
    summary,
    wait_until,
    write_config,
)

STEP_S = 0.02
LIMIT_S = 60.0
KILLS_PER_AGENT = 3


def start_agent(origin: Origin, root: Path, timeout_s: float) -> tuple:
    port = common.free_port()
    health = {
        "type": "http",
        "port": port,
        "interval": 1,
        "retries": 2,
        "grace": 1,
        "timeout": timeout_s,
    }
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
    return Agent(root / "configs", root / "state", root / "agent.log"), port


def app_state(agent: Agent) -> dict:
    return agent.state().get("web", {})


def serves(port: int, body: str) -> bool:
    status, got = http_get(port, timeout_s=0.3)
    return status == 200 and got == body


def wait_good(agent: Agent, port: int, sha: str, body: str) -> None:
    def settled():
        s = app_state(agent)
        return s.get("good") == sha and s.get("healthy") and s.get("running") and serves(port, body)

    wait_until(settled, LIMIT_S, f"{sha[:12]} good and serving", interval_s=0.05)


def watch(until, marks: dict, probes: dict, started: float) -> dict:
    """Poll every STEP_S; record the first time each probe is true; stop when `until`."""
    end = started + LIMIT_S
    while time.monotonic() < end:
        now = time.monotonic()
        for name, probe in probes.items():
            if name not in marks and probe():
                marks[name] = now - started
        if until(marks):
            return marks
        time.sleep(max(0.0, STEP_S - (time.monotonic() - now)))
    raise TimeoutError(f"no recovery within {LIMIT_S:g} s (so far: {marks})")


# -- app failures ------------------------------------------------------------------------------


def app_failure(origin: Origin, root: Path, how: int, timeout_s: float, kills: int) -> list:
    """Fresh agent; `kills` times: signal the app, time detection and recovery."""
    agent, port = start_agent(origin, root, timeout_s)
    body = (origin.work / "version.txt").read_text().strip()
    sha = common.git("rev-parse", "HEAD", cwd=origin.work)
    results = []
    try:
        wait_good(agent, port, sha, body)
        for _ in range(kills):
            old = app_state(agent)["pid"]
            started = time.monotonic()
            os.kill(old, how)

            def detected(old: int = old) -> bool:
                s = app_state(agent)
                return s.get("pid") != old or not s.get("running") or s.get("healthy") is False

            def healthy_again(old: int = old) -> bool:
                s = app_state(agent)
                return s.get("pid") not in (None, old) and s.get("healthy") is True

            marks = watch(
                lambda m: "serving" in m and "healthy" in m,
                {},
                {
                    "detected": detected,
                    "serving": lambda: serves(port, body),
                    "healthy": healthy_again,
                },
                started,
            )
            marks["restarts"] = app_state(agent).get("restarts")
            results.append(marks)
            time.sleep(0.5)
    finally:
        agent.stop()
        common.kill_tagged_leftovers(root)
    return results


# -- bad commits -------------------------------------------------------------------------------


def rollbacks(origin: Origin, root: Path, reps: int, timeout_s: float) -> dict:
    agent, port = start_agent(origin, root, timeout_s)
    out = {"crash": [], "500": []}
    try:
        for rep in range(reps):
            for mode in ("crash", "500"):
                good_body = f"good {mode} {rep} {time.time()}"
                good = origin.commit(good_body)
                wait_good(agent, port, good, good_body)
                time.sleep(0.3)
                bad = origin.commit(f"bad {mode} {rep}", mode=mode)
                started = origin.pushed_at
                marks: dict = {}
                # "serving good" counts only after the bad commit was deployed (before, the
                # good app is still up and would answer at once)
                watch(
                    lambda m: "serving good" in m and "bad recorded" in m,
                    marks,
                    {
                        "deployed": lambda bad=bad: app_state(agent).get("commit") == bad,
                        "serving good": lambda marks=marks, body=good_body: (
                            "deployed" in marks and serves(port, body)
                        ),
                        "bad recorded": lambda bad=bad: bad in (app_state(agent).get("bad") or []),
                    },
                    started,
                )
                marks["complete"] = max(marks["serving good"], marks["bad recorded"])
                marks["deployed to complete"] = marks["complete"] - marks["deployed"]
                marks["last_error"] = app_state(agent).get("last_error")
                out[mode].append(marks)
                time.sleep(0.5)  # the ban follows the fallback's own trial: it has ended
    finally:
        agent.stop()
        common.kill_tagged_leftovers(root)
    return out


# -- report ------------------------------------------------------------------------------------


def cell(values: list) -> str:
    s = summary(values)
    return f"{s['median']:.2f} / {s['max']:.2f}" if s["n"] else "-"


def report(data: dict) -> str:
    p = data["params"]
    lines = [
        common.machine_line(data["machine"]),
        f"load average at end {data['load_end']}",
        "",
        f"### App failure to healthy again (interval 1, retries 2, grace 1; "
        f"{p['reps']} agents each; seconds, median / max)",
        "",
        "| failure | n | state shows it | serving again (HTTP 200) | healthy in state |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, runs in data["failures"].items():
        lines.append(
            f"| {name} | {len(runs)} | {cell([r['detected'] for r in runs])} "
            f"| {cell([r['serving'] for r in runs])} "
            f"| {cell([r['healthy'] for r in runs])} |"
        )
    lines += [
        "",
        f"### Bad commit to rollback complete (poll every 1 s, health timeout "
        f"{p['timeout']:g} s; {p['reps']} pushes each; seconds, median / max)",
        "",
        "| bad commit | n | push -> deployed | deployed -> the good commit serves again "
        "| deployed -> rollback complete (bad banned) | push -> rollback complete |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    names = {"crash": "crashes at start", "500": "serves HTTP 500"}
    for mode, runs in data["rollbacks"].items():
        lines.append(
            f"| {names[mode]} | {len(runs)} | {cell([r['deployed'] for r in runs])} "
            f"| {cell([r['serving good'] - r['deployed'] for r in runs])} "
            f"| {cell([r['deployed to complete'] for r in runs])} "
            f"| {cell([r['complete'] for r in runs])} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions (default 5)")
    parser.add_argument(
        "--timeout", type=float, default=1.0, help="health timeout in seconds (default 1)"
    )
    args = parser.parse_args()
    info = common.machine()
    print(common.machine_line(info), flush=True)
    root = common.temp_root("huddle-bench-recovery-")
    data = {"machine": info, "params": vars(args), "failures": {}, "rollbacks": {}}
    cases = [
        (
            f"kill -9, {n + 1}{'st' if n == 0 else 'nd' if n == 1 else 'rd'} in a row",
            signal.SIGKILL,
            args.timeout,
            n,
        )
        for n in range(KILLS_PER_AGENT)
    ]
    try:
        origin = Origin(root, "web")
        for rep in range(args.reps):
            print(
                f"failures rep {rep + 1}/{args.reps} (load {loadavg()})",
                file=sys.stderr,
                flush=True,
            )
            runs = app_failure(
                origin, root / f"kill-{rep}", signal.SIGKILL, args.timeout, KILLS_PER_AGENT
            )
            for (name, _, _, _n), marks in zip(cases, runs, strict=True):
                data["failures"].setdefault(name, []).append(marks)
            for timeout_s in sorted({args.timeout, 3.0}):
                name = f"SIGSTOP (hang), timeout {timeout_s:g} s"
                runs = app_failure(
                    origin, root / f"stop-{rep}-{timeout_s:g}", signal.SIGSTOP, timeout_s, 1
                )
                data["failures"].setdefault(name, []).extend(runs)
        print(f"rollbacks (load {loadavg()})", file=sys.stderr, flush=True)
        data["rollbacks"] = rollbacks(origin, root / "rollback", args.reps, args.timeout)
        data["load_end"] = loadavg()
    finally:
        common.kill_tagged_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)
    common.publish_results("recovery.json", data, report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
