"""How small a MicroPython heap the micro agent fits in, measured as boards run it.

The cycle is tests/heapcycle.py's (the heap test's): `micropython -X heapsize=N main.py CONFIG`
with MQTT and a manifest key configured (`debug` on, so the agent samples `gc.mem_alloc()`
after a collection) installs a published branch with a 150 KB file and an app, reports over a
real Mosquitto, installs an update (another 150 KB) beside the running app and sends three
heartbeats for it. A `--once` sync of the same branch (same config) is counted too.

Four variants: the 32-bit unix port (../shared/micropython32, what boards are) or the 64-bit
PyPI port, each with the agent compiled by mpy-cross (-march=x86 / x64, -O3, as `huddle flash`
does) or from source. On a heap this small the outcome varies from run to run (which
allocation meets which hole depends on ports, commit ids and task timing), so each size is run
several times and the table counts: clean runs (no MemoryError at all), runs that completed
although the agent met a MemoryError and retried, runs that did not complete, agent exits and
commits banned. Also prints the resident cost of each module on the 32-bit port from .mpy.

    python bench/bench_micro_heap.py --variant 32-mpy --sizes 34,36,38 --runs 10 \\
        --once-sizes 22,24,26 --once-runs 5
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.heapcycle import APP, KEY, run_cycle  # noqa: E402
from tests.microutil import (  # noqa: E402
    MICRO,
    MICROPYTHON,
    MICROPYTHON32,
    ManifestServer,
    Repo,
    compile_agent,
    micro_cmd,
    micro_env,
    publish,
    write_config,
)
from tests.mosquitto import Broker  # noqa: E402

# name -> (runtime, mpy-cross -march or None for source)
VARIANTS = {
    "32-mpy": ("micropython32", "x86"),
    "32-src": ("micropython32", None),
    "64-mpy": ("micropython", "x64"),
    "64-src": ("micropython", None),
}
TIMEOUT_S = 60


def once_cycle(heap_k, work, server, broker, runtime, agent):
    dev = work / f"once-{heap_k}-{time.monotonic_ns()}"
    cfg = write_config(
        work / f"once{heap_k}.json",
        device="once",
        manifest=server.url,
        dir=str(dev),
        minimum=1,
        maximum=2,
        main="app",
        timeout=5,
        key=KEY,
        mqtt=broker.url,
    )
    proc = subprocess.run(
        micro_cmd(runtime, cfg, "--once", heap=f"{heap_k}K", agent=agent),
        env=micro_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=TIMEOUT_S,
    )
    return proc.returncode == 0


PROBE = """
import gc, sys
sys.path[:] = [sys.path[0], ".frozen"]
gc.collect()
print("base", gc.mem_alloc())
for name in sys.argv[1:]:
    gc.collect()
    a = gc.mem_alloc()
    __import__(name)
    gc.collect()
    print(name, gc.mem_alloc() - a)
"""
# the modules in the order a long-running agent with MQTT and a key loads them: the resident
# ones at boot, then what a sync loads for one step each (huddle_poll.step)
MODULES = [
    "huddle_http",
    "huddle_mqtt",
    "huddle_app",
    "huddle_agent",
    "huddle_poll",
    "huddle_health",
    "huddle_sync",
    "huddle_hmac",
    "huddle_stage",
]


def module_costs(agent):
    """{module: bytes kept after importing it, in MODULES order} on the 32-bit port."""
    (agent / "probe.py").write_text(PROBE)
    out = subprocess.run(
        [str(MICROPYTHON32), "-X", "heapsize=1M", str(agent / "probe.py"), "asyncio", *MODULES],
        env=micro_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return {k: int(v) for k, v in (line.split() for line in out.stdout.splitlines())}


def median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variant", choices=VARIANTS, default="32-mpy")
    ap.add_argument("--sizes", default="34,36,38")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--once-sizes", default="22,24,26")
    ap.add_argument("--once-runs", type=int, default=5)
    ap.add_argument("--modules", action="store_true", help="also the per-module table")
    args = ap.parse_args()
    runtime, march = VARIANTS[args.variant]
    binary = MICROPYTHON32 if runtime == "micropython32" else MICROPYTHON
    if not binary.exists():
        print(f"{binary} is missing", file=sys.stderr)
        return 2
    sizes = [int(k) for k in args.sizes.split(",") if k]
    once_sizes = [int(k) for k in args.once_sizes.split(",") if k]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        agent = compile_agent(work / "agent", march=march) if march else MICRO
        repo = Repo(work / "repo")
        repo.commit({"app.py": APP, "data/blob.bin": os.urandom(150 * 1024)})
        publish(repo, work / "pub", key=KEY)
        server = ManifestServer(work / "pub").start()
        broker = Broker(work / "broker").start()
        try:
            cycles = {
                k: [
                    run_cycle(
                        work / f"c{k}-{i}",
                        broker,
                        f"{k}K",
                        device=f"b{k}-{i}",
                        runtime=runtime,
                        agent=agent,
                    )
                    for i in range(args.runs)
                ]
                for k in sizes
            }
            once = {
                k: sum(
                    once_cycle(k, work, server, broker, runtime, agent)
                    for _ in range(args.once_runs)
                )
                for k in once_sizes
            }
            agent32 = compile_agent(work / "agent32", march="x86")
            costs = module_costs(agent32) if args.modules else {}
            sizes_b = {m: (agent32 / f"{m}.mpy").stat().st_size for m in MODULES}
        finally:
            server.stop()
            broker.kill()
    u = platform.uname()
    print(
        f"machine: {u.system} {u.release} {u.machine}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; variant {args.variant}: {binary}"
        f"{' with mpy-cross -march=' + march + ' -O3' if march else ', from source'}"
    )
    print()
    print(
        "| variant | heap | clean (no MemoryError) | completed, MemoryErrors survived "
        "| not completed | agent exited | commits banned | live heap peak (median) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for k, runs in cycles.items():
        n = len(runs)
        clean = sum(c.clean for c in runs)
        survived = sum(c.completed and not c.clean for c in runs)
        print(
            f"| {args.variant} | {k}K | {clean}/{n} | {survived}/{n} | "
            f"{sum(not c.completed for c in runs)}/{n} | "
            f"{sum(c.exited is not None for c in runs)} | {sum(bool(c.bad) for c in runs)} | "
            f"{median(c.heap_peak for c in runs)} B |"
        )
    print()
    print(
        f"`--once` sync, runs that installed out of {args.once_runs}: "
        + ", ".join(f"{k}K {n}" for k, n in once.items())
    )
    if costs:
        print()
        print(
            f"Resident after import, 32-bit port, .mpy -O3 (interpreter at start "
            f"{costs.get('base')} B, frozen asyncio {costs.get('asyncio')} B):"
        )
        print()
        print("| module | lines | .mpy bytes | resident after import |")
        print("|---|---|---|---|")
        for name in MODULES:
            lines = len((MICRO / f"{name}.py").read_text().splitlines())
            print(f"| {name} | {lines} | {sizes_b[name]} | {costs.get(name, '?')} B |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
