"""The SPEC's memory requirement as a functional test: the micro agent's whole cycle, agent and
MQTT client compiled from source, runs on the MicroPython unix port with `-X heapsize=48K`
(tests/heapcycle.py: install 150 KB and an app, report over a real Mosquitto, install an
update beside the running app, heartbeats).

What must hold in every run: the cycle completes, the agent never exits, and no commit is
banned. In a heap this small an allocation can still fail now and then (the heap is
fragmented, not full): the agent must survive that (a sync or a report is retried, an app
start is retried before it counts against the version) rather than stop or roll back a good
version. How often a run meets no MemoryError at all, per heap size, is the benchmark's
(`bench/bench_micro_heap.py`, bench/RESULTS.md), not a test's.
"""
from __future__ import annotations

from tests.heapcycle import run_cycle


def test_full_cycle_in_a_48k_heap(tmp_path, broker, capsys):
    cycle = run_cycle(tmp_path, broker, "48K", device="heap48")
    tail = cycle.log[-3000:]
    assert cycle.exited is None, f"the agent exited ({cycle.exited})\n{tail}"
    assert cycle.completed, f"the update never ran with heartbeats\n{tail}"
    assert cycle.bad == [], f"a good commit was banned: {cycle.bad}\n{tail}"
    assert "Traceback" not in cycle.log, tail
    with capsys.disabled():
        print(f"\n48K cycle: heap peak {cycle.heap_peak} B; MemoryErrors survived: "
              f"{len(cycle.out_of_memory)}")
