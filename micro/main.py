"""The micro agent's entry point: `micropython main.py CONFIG [--once]`.

On a board the same file starts from flash at boot without arguments and reads
`device.json` beside it. `--once` runs a single sync cycle and exits 0 when the device is up
to date afterwards (already, or after installing), 1 when the cycle failed (the old version
is still in place), 3 when the published commit was rolled back before (the device stays on
its version); 2 means the config is invalid. Without `--once` the agent runs until killed,
and Ctrl-C publishes the offline status and exits 0.
"""
import sys


def _load(path):
    """The checked config or None (problems printed); its module is dropped afterwards."""
    import huddle_config
    try:
        return huddle_config.load(path)
    except huddle_config.ConfigError as e:
        for line in str(e).split("\n"):
            print("huddle: " + line)
        return None
    finally:
        del sys.modules["huddle_config"]  # needed once only: give its RAM back
        del huddle_config
        import gc
        gc.collect()


def _preload(cfg):
    """Compiles every module the agent will need now, biggest first, while the heap is still
    empty: compiling from source needs several times a module's final size for a moment,
    which a 48 KB heap cannot find later, beside a running app."""
    import gc
    names = ["huddle_sync", "huddle_manifest", "huddle_http", "huddle_agent"]
    if cfg["mqtt"] and "--once" not in sys.argv:
        names = ["mqtt", "huddle_status"] + names
    for name in names:
        __import__(name)
        gc.collect()


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    flags = [a for a in argv if a.startswith("--")]
    for f in flags:
        if f != "--once":
            print("huddle: unknown option " + f)
            return 2
    cfg = _load(args[0] if args else "device.json")
    if cfg is None:
        return 2
    _preload(cfg)
    import asyncio
    from huddle_agent import Agent
    agent = Agent(cfg)
    try:
        if "--once" in flags:
            return asyncio.run(agent.once())
        asyncio.run(agent.run())
    except KeyboardInterrupt:
        return 0
    return 0


sys.exit(main(sys.argv[1:]))
