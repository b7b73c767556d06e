"""The agent's RSS and CPU with 1, 20 and 100 idle apps, and what each app adds.

Usage: python bench/bench_footprint.py [--apps 1 20 100] [--window S] [--reps R]

`huddle run` supervises N stand-in apps (`sleep`, health type none), each its own clone of
one bare repo over file://. Two settings:
- polls out of the window (minimum = maximum = 1000 s): the fixed cost of N supervisors,
  with nothing but the loop, timers and the (type none) health ticks;
- the default poll interval (10..20 s): what N idle apps really cost, polls included.
After every app runs *and has passed its trial* (state `good` = `commit`; each app's verdict
rewrites state.json, a burst that must not land in the window; health is type none with the
default 10 s interval, but grace 1 s and retries 1 so the trial ends 11 s after the start) and
2 s settle, a window of S seconds samples the agent's VmRSS every 0.5 s and its CPU (own
utime+stime; reaped git children's cutime+cstime) at both ends, counting its `ls-remote` calls
(as bench_agent.idle_huddle does). R repetitions, medians; the growth per app is the slope
between the smallest and largest N, and between each pair of neighbours. Writes
bench/out/footprint.json.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from itertools import pairwise
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from bench.bench_agent import IDLE_START, derived  # noqa: E402
from bench.common import Agent, Origin, loadavg, wait_until, write_config  # noqa: E402

MODES = {"polls off": (1000, 1000), "default polls (10..20 s)": (10, 20)}


def idle_agent(
    origin: Origin, n: int, root: Path, window_s: float, minimum_s: float, maximum_s: float
) -> dict:
    for i in range(n):
        write_config(
            root / "configs",
            f"app{i:03d}",
            url=origin.url,
            local_path=root / "apps" / f"app{i:03d}",
            start=IDLE_START,
            minimum_s=minimum_s,
            maximum_s=maximum_s,
            health={"type": "none", "grace": 1, "retries": 1},
        )
    agent = Agent(root / "configs", root / "state", root / "agent.log")
    try:

        def all_good():
            state = agent.state()
            return len(state) == n and all(
                s.get("running") and s.get("commit") and s.get("good") == s.get("commit")
                for s in state.values()
            )

        wait_until(all_good, 300, f"{n} apps running and past their trial", interval_s=0.2)
        time.sleep(2)
        marks = {}
        result = common.Window(agent.pid).run(
            window_s,
            at_start=lambda: marks.update(start=agent.counts()),
            at_end=lambda: marks.update(end=agent.counts()),
        )
        result["polls"] = marks["end"].get("ls-remote", 0) - marks["start"].get("ls-remote", 0)
    finally:
        agent.stop()
    return result


def med(runs: list, key: str) -> float:
    return statistics.median(r[key] for r in runs)


def report(data: dict) -> str:
    p = data["params"]
    lines = [
        common.machine_line(data["machine"]),
        f"load average at end {data['load_end']}",
        f"reference: a venv python doing nothing has RSS "
        f"{data['python_baseline_kb'] / 1024:.1f} MB",
    ]
    for mode in MODES:
        runs = data["runs"][mode]
        lines += [
            "",
            f"### {mode}: {p['window']:g} s window, median of {p['reps']} runs",
            "",
            "| apps | RSS MB | RSS peak (HWM) MB | CPU own % of one core "
            "| CPU own + git % | polls / min |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for n in p["apps"]:
            r = runs[str(n)]
            lines.append(
                f"| {n} | {med(r, 'rss_kb_median') / 1024:.1f} "
                f"| {med(r, 'rss_kb_hwm') / 1024:.1f} | {med(r, 'cpu_own_pct'):.3f} "
                f"| {med(r, 'cpu_total_pct'):.3f} | {med(r, 'polls_per_min'):.0f} |"
            )
        lines += [
            "",
            "| growth per app | RSS KB | CPU own % | CPU own + git % |",
            "|---|---:|---:|---:|",
        ]
        sizes = sorted(p["apps"])
        pairs = list(pairwise(sizes)) + ([(sizes[0], sizes[-1])] if len(sizes) > 2 else [])
        for a, b in pairs:
            ra, rb = runs[str(a)], runs[str(b)]
            d = b - a
            lines.append(
                f"| {a} -> {b} apps | "
                f"{(med(rb, 'rss_kb_median') - med(ra, 'rss_kb_median')) / d:.0f} | "
                f"{(med(rb, 'cpu_own_pct') - med(ra, 'cpu_own_pct')) / d:.4f} | "
                f"{(med(rb, 'cpu_total_pct') - med(ra, 'cpu_total_pct')) / d:.4f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--apps", type=int, nargs="+", default=[1, 20, 100], help="app counts (default 1 20 100)"
    )
    parser.add_argument(
        "--window", type=float, default=20.0, help="measuring window in seconds (default 20)"
    )
    parser.add_argument("--reps", type=int, default=3, help="repetitions (default 3)")
    args = parser.parse_args()
    info = common.machine()
    print(common.machine_line(info), flush=True)
    root = common.temp_root("huddle-bench-footprint-")
    data = {"machine": info, "params": vars(args), "runs": {m: {} for m in MODES}}
    try:
        data["python_baseline_kb"] = common.baseline_python_rss_kb()
        (root / "origins").mkdir()
        origin = Origin(root / "origins", "app")  # every app clones the same repo
        for rep in range(args.reps):
            for mode, (lo, hi) in MODES.items():
                for n in args.apps:
                    print(
                        f"{mode}, {n} apps, run {rep + 1}/{args.reps} (load {loadavg()})",
                        file=sys.stderr,
                        flush=True,
                    )
                    work = root / f"{rep}-{hi}-{n}"
                    run = derived(idle_agent(origin, n, work, args.window, lo, hi))
                    data["runs"][mode].setdefault(str(n), []).append(run)
                    shutil.rmtree(work, ignore_errors=True)
        data["load_end"] = loadavg()
    finally:
        common.kill_tagged_leftovers(root)
        shutil.rmtree(root, ignore_errors=True)
    common.publish_results("footprint.json", data, report(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
