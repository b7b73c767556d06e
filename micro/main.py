# The micro agent's entry point: `micropython main.py CONFIG [--once]`, from any directory.
#
# On a board the same file starts from flash at boot without arguments and reads
# `device.json` beside it. `--once` runs a single sync cycle and exits 0 when the device is up
# to date afterwards (already, or after installing), 1 when the cycle failed (the old version
# is still in place), 3 when the published commit was rolled back before (the device stays on
# its version); 2 means the config is invalid. Without `--once` the agent runs until killed,
# and Ctrl-C publishes the offline status and exits 0; it never exits on its own: a
# MemoryError anywhere (at boot too) starts it again after a pause, and on a board three in a
# row reset the board. Memory: the config checker is compiled, used and forgotten first; then
# every other module is compiled once and kept. This file holds as little as it can: it stays
# in RAM for the whole run.
import sys

try:  # no line numbers in the bytecode: about 1 KB less code resident (tracebacks lose lines)
    import micropython

    micropython.opt_level(3)
except ImportError:  # CPython
    pass
# the agent's modules are the ones beside this file, then the frozen ones (asyncio), whatever
# the working directory or MICROPYPATH; the rest of the path stays for the app (/lib)
sys.path[:] = [sys.path[0], ".frozen"] + [p for p in sys.path[1:] if p != ".frozen"]


def boot(argv):
    # the boot-only steps, each compiled, run and forgotten in turn: the options and the config
    # (-> (cfg, once), or 2 when it is invalid, every problem shown), then what is on flash and
    # which modules to compile (-> (cfg, once, (commit, active, state), names)), each through
    # huddle_os.call. In a function of its own: the GC is conservative and scans main()'s
    # frame for the whole run, stale value-stack slots included, where a step's module object
    # would stay reachable (the config checker's 5 KB was still resident at the peak); this
    # frame is gone on return
    import gc

    from huddle_os import call

    for step in ("huddle_config", "huddle_start"):
        argv = call(step, "boot", argv)
        gc.collect()
        if argv == 2:
            break
    return argv


def main(argv):
    import gc

    started = boot(argv)
    if started == 2:
        return 2
    cfg, once, start, names = started
    del started
    # every agent module is compiled now, while the heap is still empty and unfragmented, and
    # kept: later only the app is compiled (huddle_start says which, in what order)
    for name in names:
        __import__(name)
        gc.collect()
    del names, name
    import asyncio

    if hasattr(asyncio, "core"):  # MicroPython: a fresh loop, without what a failed run left
        asyncio.new_event_loop()
    from huddle_agent import Agent

    agent = Agent(cfg, *start)
    del start
    if once:
        from huddle_poll import cycle

        return {"current": 0, "installed": 0, "bad": 3}.get(asyncio.run(cycle(agent)), 1)
    from huddle_health import supervise
    from huddle_poll import poll

    asyncio.run(agent.run(poll, supervise))


def forever(argv):
    import time

    fails = 0
    while True:
        try:
            return main(argv)
        except KeyboardInterrupt:
            return 0
        except MemoryError:  # a heap too small or too fragmented: start again, never exit
            fails += 1
        if "--once" in argv:
            return 1  # the cycle failed: the old version is still in place
        try:
            print("huddle: MemoryError: starting again (%d)" % fails)
            if fails >= 3:
                from machine import reset

                reset()  # a board starts clean
        except (ImportError, MemoryError):  # no machine.reset (unix port, CPython)
            pass
        time.sleep(min(fails, 30))


sys.exit(forever(sys.argv[1:]))
