# The micro agent's entry point: `micropython main.py CONFIG [--once]`.
#
# On a board the same file starts from flash at boot without arguments and reads
# `device.json` beside it. `--once` runs a single sync cycle and exits 0 when the device is up
# to date afterwards (already, or after installing), 1 when the cycle failed (the old version
# is still in place), 3 when the published commit was rolled back before (the device stays on
# its version); 2 means the config is invalid. Without `--once` the agent runs until killed,
# and Ctrl-C publishes the offline status and exits 0. Memory: the config checker is compiled,
# used and forgotten first; then every other module is compiled once and kept.
import sys
try:  # no line numbers in the bytecode: about 1 KB less code resident (tracebacks lose lines)
    import micropython
    micropython.opt_level(3)
except ImportError:  # CPython
    pass


def main(argv):
    import gc
    import huddle_config
    try:
        cfg = huddle_config.boot(argv)  # options and config checked, or 2 (all problems shown)
    finally:
        del sys.modules["huddle_config"]  # needed once only: give its RAM back
        del huddle_config
        gc.collect()
    if cfg == 2:
        return 2
    cfg, once, start = cfg
    # every agent module the config needs (TLS contexts and the health probe only when it has
    # them) is compiled now, while the heap is still empty and unfragmented, and kept: later
    # only the app is compiled, and no agent module is looked up in the app's directory. Each
    # comes with what it imports, in the order measured to need the smallest heap (the HTTP
    # layer first, then sync before stage before poll).
    names = ["huddle_http"] + (["mqtt"] if cfg["mqtt"] and not once else [])
    tls = cfg["manifest"][:6] == "https:" or (cfg["mqtt"] and cfg["mqtt"][4] and not once)
    names += ["huddle_tls"] if tls else []
    names += ["huddle_agent", "huddle_sync", "huddle_stage", "huddle_poll"]
    names += [] if once else ["huddle_health"]
    names += [] if once or cfg["health"]["type"] == "none" else ["huddle_probe"]
    for name in names:
        __import__(name)
        gc.collect()
    del names
    import asyncio
    from huddle_agent import Agent
    agent = Agent(cfg, *start)
    del start
    try:
        if once:
            from huddle_poll import cycle
            return {"current": 0, "installed": 0, "bad": 3}.get(asyncio.run(cycle(agent)), 1)
        import huddle_poll
        import huddle_health
        asyncio.run(agent.run(huddle_poll.poll, huddle_health.supervise))
    except KeyboardInterrupt:
        pass
    return 0


sys.exit(main(sys.argv[1:]))
