"""Run every benchmark script in bench/ that exists and print their tables (`make bench`).

Usage: python bench/run.py [--only NAME ...] [--skip NAME ...]

Each `bench/bench_*.py` runs in turn as its own process with this interpreter (the venv's,
so footprints are measured without the pyenv shim's extra modules) and its default settings,
with its output passed through as it comes; the known ones first, in an order that puts the
long ones last (the fleet simulation last of all; `--skip fleet` leaves it out). The soak
(`bench/soak.py`) is not a `bench_*` script and never runs here. A script that fails is
reported and the others still run; the exit status is non-zero if any failed. Each script
writes its own JSON to bench/out/; this one adds bench/out/run.json (what ran, how long, the
machine).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ORDER = [
    "bench_health",
    "bench_logflood",
    "bench_micro_heap",
    "bench_pollfloor",
    "bench_peers",
    "bench_recovery",
    "bench_footprint",
    "bench_agent",
    "bench_fleet",
]


def scripts() -> list:
    found = {p.stem: p for p in BENCH_DIR.glob("bench_*.py")}
    known = [found.pop(name) for name in ORDER if name in found]
    return known + [found[name] for name in sorted(found)]


def names(given: list) -> set:
    return {n if n.startswith("bench_") else f"bench_{n}" for n in given}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only these (e.g. bench_agent or agent)"
    )
    parser.add_argument(
        "--skip", nargs="+", metavar="NAME", default=[], help="leave these out (e.g. fleet)"
    )
    args = parser.parse_args()
    selected = scripts()
    known = {p.stem for p in selected}
    missing = (names(args.only or []) | names(args.skip)) - known
    if missing:
        print(f"run.py: no such benchmark: {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    if args.only:
        selected = [p for p in selected if p.stem in names(args.only)]
    selected = [p for p in selected if p.stem not in names(args.skip)]
    results = []
    for script in selected:
        print(f"\n## {script.stem}\n", flush=True)
        started = time.monotonic()
        code = subprocess.call([sys.executable, str(script)], cwd=str(BENCH_DIR.parent))
        results.append((script.stem, code, time.monotonic() - started))
    print("\n## summary\n\n| benchmark | status | seconds |\n|---|---|---:|")
    for name, code, seconds in results:
        print(f"| {name} | {'ok' if code == 0 else f'FAILED (exit {code})'} | {seconds:.0f} |")
    sys.path.insert(0, str(BENCH_DIR.parent))
    from bench import common

    path = common.write_json(
        "run.json",
        {
            "machine": common.machine(),
            "benchmarks": [{"name": n, "exit": c, "seconds": round(s, 1)} for n, c, s in results],
        },
    )
    print(f"\n(JSON: {path.relative_to(BENCH_DIR.parent)}, and one file per benchmark beside it)")
    return 0 if all(code == 0 for _, code, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
