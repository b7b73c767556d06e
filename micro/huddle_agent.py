# The agent: one app, its version pointer and its status, driven by cooperative asyncio tasks.
#
# `run` starts the app, then two tasks that main.py passes it, huddle_poll.poll (the poll timer
# and sync cycle) and huddle_health.supervise (health checks, rollback, restarts), and itself
# reports over MQTT: status at start and every `heartbeat` seconds, and at once on every change
# (`note`). The MQTT client's calls are coroutines on a non-blocking socket, so a slow broker
# never holds up the app or the health checks; a broker that is down costs one failed connect
# per backoff step (capped, jittered, reset on success). The last will, retained, is
# `{"device": ID, "state": "offline"}`, also sent on a clean exit; URL credentials are only
# used to connect.
# The app (`launch` is huddle_store.launch, `stop` huddle_os.stop, bound as methods): the
# active version's directory becomes the current one, "" goes first on `sys.path`, the module
# named by `main`
# is imported and its `main()` called. A coroutine it returns runs as a task beside the agent's
# own; a plain return means the app has finished its work (not a failure); an exception at
# import, in `main()` or in the task is a failure. `stop` cancels the task and forgets every
# module the app imported, so the next version's modules of the same names load fresh.
# Memory: every agent module is compiled once at boot (main.py), while the heap is empty, and
# stays; nothing but the app is compiled later. Each function object costs about 100 bytes for
# good and each distinct name a qstr and an entry in the compiler's per-module table (one
# contiguous block while the module compiles), so functions are few and names shared.
import asyncio
import json
import time
from random import random
from huddle_os import ticks_ms, ticks_diff, ticks_add, log, heap, stop
from huddle_store import cleanup, launch

# self.m holds what only this module uses, by index (an attribute name each would cost a
# qstr and an entry in the compiler's name table, which needs one contiguous block at boot):
# 0 MQTT client, 1 retry_ms (no connect before), 2 app task, 3 sys.modules before the app,
# 4 heap peak, 5 failed connects in a row, 6 connected, 7 the app finished its work,
# 8 boot ticks_ms, 9 status topic, 10 offline status, 11 "connected" log line, 12 retry cap (s),
# 13 a change to report


class Agent:
    commit = active = last_error = healthy = started_ms = error = None
    restarts = failures = 0
    trial = False

    def __init__(self, cfg, commit, active, state):
        # what huddle_start read from flash; then the leftovers of a kill go
        self.cfg, self.root, self.commit, self.active, self.state = \
            cfg, cfg["dir"], commit, active, state
        self.m = [None, None, None, None, 0, 0, False, False, ticks_ms(), None, None, None, 5,
                  False]
        cleanup(self)

    # the app's start lives in huddle_store, its stop and the heap sampler in huddle_os, whose
    # compile-time name tables have room for their names (this module's had not)
    heap = heap
    launch = launch
    stop = stop


    async def run(self, *f):
        # f: the agent's tasks, huddle_poll.poll and huddle_health.supervise (passed by main.py)
        cfg, m = self.cfg, self.m
        if cfg["mqtt"]:
            from huddle_mqtt import MQTTClient
            a, m[9], m[10], m[11], m[12] = cfg["mqtt"]  # worked out at boot (huddle_start)
            c = m[0] = MQTTClient(*a)
            c.set_last_will(m[9], m[10])
            await self.report()  # connects before the app takes its share of the heap
        if self.active:
            self.launch()
        tasks = []
        for t in f:
            tasks.append(asyncio.create_task(t(self)))
        try:
            while True:
                # a status every heartbeat, and within 0.1 s of a change (note); without MQTT
                # there is nothing to do here
                m[13] = False
                await self.report()
                for i in range(len(f)):
                    if tasks[i].done():  # it died (a MemoryError, say): the agent goes on
                        log("restarting a failed task")
                        tasks[i] = asyncio.create_task(f[i](self))
                t = ticks_ms()
                while not m[13] and ticks_diff(ticks_ms(), t) < cfg["heartbeat"] * 1000:
                    await asyncio.sleep(0.1 if m[0] else cfg["heartbeat"])
        finally:
            for t in tasks:
                t.cancel()
            await self.stop()
            c = m[0]
            if m[6]:
                try:
                    await c.publish(m[9], m[10], True, 1)
                    await c.disconnect()
                except OSError:  # leaving anyway: the broker will send the will instead
                    c.close()

    def note(self, error=None):
        # records an error; the status goes out at once (run's loop sees m[13])
        if error:
            self.last_error = error
            log(error)
        self.m[13] = True

    async def report(self):
        # publishes the status (retained, QoS 1) and reads what the broker sent; a broker that
        # is down costs one failed connect per backoff step
        m = self.m
        c = m[0]
        if c is None or (m[1] is not None and ticks_diff(m[1], ticks_ms()) > 0):
            return
        cfg, s = self.cfg, self.state
        # the SPEC's keys, as long strings (objects, not qstrs; see above)
        app = dict(zip("commit branch running healthy restarts last_deploy last_error".split(), (
            self.commit, s["branch"], m[2] is not None and not m[7] and self.error is None,
            self.healthy, self.restarts, s["last_deploy"], self.last_error)))
        v = [cfg["device"], "online", int(time.time()), ticks_diff(ticks_ms(), m[8]) // 1000,
             "0.2.0-micro", {cfg["main"]: app}]
        if cfg["debug"]:
            self.heap()
            v.append(m[4])
        try:
            if not m[6]:
                await c.connect()
                log(m[11])
                m[6] = True
            await c.publish(m[9], json.dumps(dict(zip(
                "device state ts uptime version apps heap_peak".split(), v))), True, 1)
            await c.poll()
        except (OSError, MemoryError) as e:  # either way the session may be half-written
            m[5] += 1
            delay = min(2 ** min(m[5], 8), 60, m[12]) * (0.5 + random() / 2)
            m[1] = ticks_add(ticks_ms(), int(delay * 1000))
            log("mqtt: %s (retry in %ds)" % (e, delay))
            m[6] = False
            c.close()
            return
        m[5] = 0
        m[1] = None
