# The micro agent's entry point: `micropython main.py CONFIG [--once]`.
#
# On a board the same file starts from flash at boot without arguments and reads
# `device.json` beside it. `--once` runs a single sync cycle and exits 0 when the device is up
# to date afterwards (already, or after installing), 1 when the cycle failed (the old version
# is still in place), 3 when the published commit was rolled back before (the device stays on
# its version); 2 means the config is invalid. Without `--once` the agent runs until killed,
# and Ctrl-C publishes the offline status and exits 0. Memory: the config checker is compiled,
# used and forgotten first; then every other module is compiled once and kept. This file holds
# as little as it can: it stays in RAM for the whole run.
import sys
try:  # no line numbers in the bytecode: about 1 KB less code resident (tracebacks lose lines)
    import micropython
    micropython.opt_level(3)
except ImportError:  # CPython
    pass


def main(argv):
    import gc
    boot = argv
    # boot-only steps, each compiled, run and forgotten in turn: the options and the config
    # (-> (cfg, once), or 2 when it is invalid, every problem shown), then what is on flash and
    # which modules to compile (-> (cfg, once, (commit, active, state), names))
    for step in ("huddle_config", "huddle_start"):
        boot = __import__(step).boot(boot)
        del sys.modules[step]
        gc.collect()
        if boot == 2:
            return 2
    cfg, once, start, names = boot
    del boot, step
    # every agent module is compiled now, while the heap is still empty and unfragmented, and
    # kept: later only the app is compiled (huddle_start says which, in what order)
    for name in names:
        __import__(name)
        gc.collect()
    del names, name
    if cfg["ca"]:  # the context huddle_start made from the `ca` file: TLS verifies with it
        sys.modules["huddle_tls"].default = cfg["ca"]
    import asyncio
    from huddle_agent import Agent
    agent = Agent(cfg, *start)
    del start
    try:
        if once:
            from huddle_poll import cycle
            return {"current": 0, "installed": 0, "bad": 3}.get(asyncio.run(cycle(agent)), 1)
        from huddle_poll import poll
        from huddle_health import supervise
        asyncio.run(agent.run(poll, supervise))
    except KeyboardInterrupt:
        pass
    return 0


sys.exit(main(sys.argv[1:]))
