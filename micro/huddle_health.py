# The supervisor: health checks, the trial window, rollback and restarts.
#
# `supervise` wakes every health interval (an app that died is noticed then) and counts failed
# checks after `grace`. A version on trial (not yet good) that fails goes back to the previous
# version (huddle_store.back); its commit is banned only when that fallback then runs
# healthily through its own window. If the fallback fails too, the environment is at fault,
# not the version: neither is banned, and the newest runs again, restarted with capped
# exponential backoff until it passes. A good version that fails, and a failing first version
# with nothing to go back to, are restarted with that backoff too: the app is never left
# stopped. The trial ends after grace + retries x interval: the commit becomes good if its
# last check passed (or no check is configured), else it fails like any other. The check
# itself is huddle_probe's, compiled at boot only when the config has one (main.py).
import asyncio
from random import random

from huddle_app import launch, stop
from huddle_os import call, log, ticks_diff, ticks_ms


async def supervise(a):
    h = a.cfg["health"]
    kind = h["type"]
    window = h["grace"] + (h["retries"] * h["interval"] if kind != "none" else 0)
    a.crashes = 0  # restarts in a row, for the backoff
    a.no_fallback = False  # the fallback failed as well: the newest runs, no rollback
    while True:
        await asyncio.sleep(h["interval"])
        if a.started_ms is None:
            continue
        age = ticks_diff(ticks_ms(), a.started_ms) / 1000
        why = a.error
        if why is None and kind != "none" and age >= h["grace"]:
            t = a.started_ms
            from huddle_probe import probe  # loaded at boot (main.py): a lookup, no compile

            why = await probe(h)
            if a.started_ms != t:  # the app was replaced (an install) or restarted meanwhile:
                continue  # this result and age were the old one's
            was = a.healthy
            a.healthy = why is None
            a.failures = 0 if why is None else a.failures + 1
            if was != a.healthy:
                a.note(why)
            if a.failures < h["retries"]:
                why = None
        if why is None and a.trial and age >= window and kind != "none" and not a.healthy:
            why = "not healthy at the end of trial"  # its last check failed, or none came back
        s = a.state
        if why:
            a.note(why)
            await stop(a)
            # a MemoryError may be the agent's fragmented heap rather than the version: three
            # restarts (with backoff) before it counts against a version
            memory = why[:11] == "MemoryError" and a.crashes < 3
            if s["suspect"] and not memory:
                log(
                    "%s fails as well: the environment, not %s; running it again"
                    % (a.commit, s["suspect"])
                )
                s["suspect"] = None
                call("huddle_store", "swap", a)
                a.no_fallback = True
            elif (
                a.trial
                and not a.no_fallback
                and not memory
                and call("huddle_store", "back", a, why)
            ):
                launch(a)
                continue
            a.crashes += 1
            a.restarts += 1
            delay = min(2 ** min(a.crashes, 8), 60) * (0.5 + random() / 2)
            log("restarting %s in %.1fs" % (a.cfg["main"], delay))
            a.started_ms = None
            await asyncio.sleep(delay)
            if a.started_ms is None:  # else an install started a version meanwhile
                launch(a)
        elif age >= window and (kind == "none" or a.healthy):
            a.crashes = 0
            a.no_fallback = False
            if s["suspect"]:  # the fallback runs healthily: the version it replaced was bad
                bad, s["suspect"] = s["suspect"], None
                log("%s is bad: %s runs healthily without it" % (bad, a.commit))
                call("huddle_store", "ban", a, bad)
                a.note()
            if a.trial:
                a.trial = False
                s["good"] = a.commit
                call("huddle_store", "save", a)
                log("%s is good now" % a.commit)
                a.note()
