# The agent: one app, its version pointer and its status, driven by cooperative asyncio tasks.
#
# `run` starts the app, then two tasks, huddle_poll.poll (the poll timer and sync cycle) and
# huddle_health.supervise (health checks, rollback, restarts), and itself reports over MQTT:
# status at start and every `heartbeat` seconds, and at once on every change (`note`). The
# tiny MQTT client blocks, but only for its bounded timeout; a broker that is down costs one
# failed connect per backoff step (capped, jittered, reset on success), so it never stops
# deploys and health checks. The last will, retained, is `{"device": ID, "state": "offline"}`,
# also sent on a clean exit; URL credentials are only used to connect.
# The app: the active version's directory goes first on `sys.path`, the module named by `main`
# is imported and its `main()` called. A coroutine it returns runs as a task beside the agent's
# own; a plain return means the app has finished its work (not a failure); an exception at
# import, in `main()` or in the task is a failure. `stop` cancels the task and forgets every
# module the app imported, so the next version's modules of the same names load fresh.
# Memory: every agent module is compiled once at boot (main.py), while the heap is empty, and
# stays; nothing but the app is compiled later. Each function object costs about 100 bytes for
# good and each distinct name a qstr, so functions are few and names short and shared.
import asyncio
import gc
import json
import sys
import time
from random import random
from huddle_os import ticks_ms, ticks_diff, ticks_add, join, log
from huddle_store import load

VERSION = "0.2.0-micro"


class Agent:
    commit = active = last_error = healthy = started_ms = mqtt = retry_ms = None
    task = error = mods = path = None  # the app: its task, its failure, sys.modules before it
    restarts = crashes = failures = peak = fails = 0
    trial = up = done = False  # up: connected to the broker; done: the app finished its work

    def __init__(self, cfg):
        self.cfg = cfg
        self.root = cfg["dir"]
        self.state = {"previous": None, "previous_commit": None, "good": None, "bad": [],
                      "last_deploy": None, "branch": None}
        self.buf = bytearray(512)  # the one chunk buffer of every download and copy
        self.boot_ms = ticks_ms()
        load(self)  # pointer, state, then cleanup

    def heap(self):
        # debug: samples live heap use, so a benchmark can report the peak
        if self.cfg["debug"] and hasattr(gc, "mem_alloc"):
            gc.collect()
            self.peak = max(self.peak, gc.mem_alloc())

    def note(self, error=None):
        if error:
            self.last_error = error
            log(error)
        self.report()

    def launch(self):
        # starts the active version's app
        self.trial = self.commit is not None and self.commit != self.state["good"]
        self.started_ms = ticks_ms()
        self.failures = 0
        self.healthy = self.error = None
        self.done = False
        log("starting %s from %s%s" % (self.cfg["main"], self.active,
                                       " (on trial)" if self.trial else ""))
        self.path = join(self.root, self.active)
        self.mods = set(sys.modules)
        sys.path.insert(0, self.path)
        gc.collect()  # the app compiles now: give it the biggest free blocks
        try:
            r = __import__(self.cfg["main"]).main()
            if hasattr(r, "send") and hasattr(r, "throw"):
                self.task = asyncio.create_task(self.guard(r))
            else:
                self.done = True
        except Exception as e:  # the app's own failure, to be reported and counted
            self.error = "%s at start: %s" % (type(e).__name__, e)
        self.note()

    async def guard(self, coro):
        try:
            await coro
            self.done = True
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the app crashed: recorded, counted, never kills the agent
            self.error = "%s: %s" % (type(e).__name__, e)

    async def stop(self):
        task, self.task = self.task, None
        if task is not None and not task.done():
            task.cancel()
            try:
                await task
            except BaseException:  # CancelledError or the app's last words: it is stopped
                pass
        if self.path in sys.path:
            sys.path.remove(self.path)
        if self.mods is not None:
            for name in list(sys.modules):
                if name not in self.mods:
                    del sys.modules[name]
        self.mods = None
        self.done = False

    async def run(self):
        cfg = self.cfg
        if cfg["mqtt"]:
            from mqtt import MQTTClient, parse_url
            host, port, user, password, tls = parse_url(cfg["mqtt"])
            self.topic = "huddle/%s/status" % cfg["device"]
            self.offline = json.dumps({"device": cfg["device"], "state": "offline"})
            c = self.mqtt = MQTTClient("huddle-" + cfg["device"], host, port, user, password,
                                       int(cfg["heartbeat"] * 2) + 10, tls,
                                       min(cfg["timeout"], 5))
            c.set_last_will(self.topic, self.offline)
            self.report()  # connects before the app takes its share of the heap
        if self.active:
            self.launch()
        from huddle_poll import poll
        from huddle_health import supervise
        tasks = [asyncio.create_task(poll(self)), asyncio.create_task(supervise(self))]
        try:
            while True:
                self.report()
                await asyncio.sleep(cfg["heartbeat"])
        finally:
            for t in tasks:
                t.cancel()
            await self.stop()
            c = self.mqtt
            if self.up:
                try:
                    c.publish(self.topic, self.offline, True, 1)
                    c.disconnect()
                except OSError:  # leaving anyway: the broker will send the will instead
                    c.close()

    def report(self):
        # publishes the status (retained, QoS 1) and reads what the broker sent
        c = self.mqtt
        if c is None or (self.retry_ms is not None
                         and ticks_diff(self.retry_ms, ticks_ms()) > 0):
            return
        cfg = self.cfg
        out = {"device": cfg["device"], "state": "online", "ts": int(time.time()),
               "uptime": ticks_diff(ticks_ms(), self.boot_ms) // 1000, "version": VERSION,
               "apps": {cfg["main"]: {
                   "commit": self.commit, "branch": self.state["branch"],
                   "running": self.task is not None and not self.done and self.error is None,
                   "healthy": self.healthy, "restarts": self.restarts,
                   "last_deploy": self.state["last_deploy"], "last_error": self.last_error}}}
        if cfg["debug"]:
            self.heap()
            out["heap_peak"] = self.peak
        try:
            if not self.up:
                c.connect()
                log("mqtt: connected to %s:%d" % (c.host, c.port))
                self.up = True
            c.publish(self.topic, json.dumps(out), True, 1)
            c.poll()
        except OSError as e:
            self.fails += 1
            # reconnect at least about once per heartbeat: a late status is a stale one
            delay = min(2 ** min(self.fails, 8), 60, max(5, c.keepalive // 2)) * \
                (0.5 + random() / 2)
            self.retry_ms = ticks_add(ticks_ms(), int(delay * 1000))
            log("mqtt: %s (retry in %ds)" % (e, delay))
            self.up = False
            c.close()
            return
        self.fails = 0
        self.retry_ms = None
