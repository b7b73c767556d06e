# The supervisor: health checks, the trial window, rollback and restarts.
#
# `supervise` wakes every health interval (an app that died is noticed then); it counts failed
# checks after `grace`; a version on trial (not yet good) that fails is rolled back
# (huddle_store.back) and its commit is never installed again; a good version that fails is
# restarted with capped exponential backoff. The trial ends after grace + retries x interval:
# the commit becomes good if its last check passed (or no check is configured), else it is
# rolled back as well (as the host agent does). The check itself is huddle_probe's, compiled at
# boot only when the config has one (main.py).
import asyncio
from random import random
from huddle_os import ticks_ms, ticks_diff, log
from huddle_store import back, save


async def supervise(a):
    h = a.cfg["health"]
    kind = h["type"]
    window = h["grace"] + (h["retries"] * h["interval"] if kind != "none" else 0)
    a.crashes = 0  # restarts in a row, for the backoff
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
        if why:
            a.note(why)
            await a.stop()
            # a MemoryError may be the agent's fragmented heap rather than the version: it gets
            # three restarts (with backoff) before it counts against a version on trial
            if a.trial and (why[:11] != "MemoryError" or a.crashes >= 3):
                if back(a, why):
                    a.launch()
                    continue
                a.trial = False  # nothing to go back to: keep restarting this one
            a.crashes += 1
            a.restarts += 1
            delay = min(2 ** min(a.crashes, 8), 60) * (0.5 + random() / 2)
            log("restarting %s in %.1fs" % (a.cfg["main"], delay))
            a.started_ms = None
            await asyncio.sleep(delay)
            a.launch()
        elif age >= window:
            a.crashes = 0
            if a.trial:
                a.trial = False
                a.state["good"] = a.commit
                save(a)
                log("%s is good now" % a.commit)
                a.note()
