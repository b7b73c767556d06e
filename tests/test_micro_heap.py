"""The micro agent's memory as boards run it, as a functional test: the whole cycle
(tests/heapcycle.py: install 150 KB and an app, report over a real Mosquitto, install an update
beside the running app, heartbeats), with MQTT and a manifest key, on the 32-bit MicroPython
unix port (../shared/micropython32, or HUDDLE_MICROPYTHON32; skipped with where to get it when
missing) with the agent compiled by `mpy-cross -march=x86 -O3`, as `huddle flash` compiles it.

What must hold in every run at HEAP: the cycle completes, the agent never exits, and no commit
is banned. In a heap this small an allocation can still fail now and then (the heap is
fragmented, not full): the agent must survive that (a sync or a report is retried, an app start
is retried before it counts against the version) rather than stop or roll back a good version.
How often a run meets no MemoryError at all, per heap size, is the benchmark's
(`bench/bench_micro_heap.py`, figures in docs/micro.md), not a test's. That a heap too small
for any of it never makes the agent exit is tests/test_micro_apps.py's starved-agent test.
"""

from __future__ import annotations

from tests.heapcycle import run_cycle
from tests.microutil import compile_agent, need_micropython32

HEAP = "32K"  # clean in 8 of 8 runs, and 31K completes in every run (docs/micro.md, "Memory")


def test_full_cycle_on_a_32bit_port_from_mpy(tmp_path, broker, capsys):
    need_micropython32()
    agent = compile_agent(tmp_path / "agent")
    cycle = run_cycle(tmp_path / "run", broker, HEAP, device="heap32", agent=agent)
    tail = cycle.log[-3000:]
    assert cycle.exited is None, f"the agent exited ({cycle.exited})\n{tail}"
    assert cycle.completed, f"the update never ran with heartbeats\n{tail}"
    assert cycle.bad == [], f"a good commit was banned: {cycle.bad}\n{tail}"
    assert "Traceback" not in cycle.log, tail
    with capsys.disabled():
        print(
            f"\n{HEAP} cycle (32-bit, .mpy): heap peak {cycle.heap_peak} B; MemoryErrors "
            f"survived: {len(cycle.out_of_memory)}"
        )
