# The agent: one app, its version pointer and its status, driven by cooperative asyncio tasks.
#
# `run` starts the app, then two tasks, huddle_poll.poll (the poll timer and sync cycle) and
# huddle_health.supervise (health checks, rollback, restarts), and itself reports over MQTT:
# status at start and every `heartbeat` seconds, and at once on every change (`note`). The
# tiny MQTT client blocks, but only for its bounded timeout; a broker that is down costs one
# failed connect per backoff step (capped, jittered, reset on success), so it never stops
# deploys and health checks. The last will, retained, is `{"device": ID, "state": "offline"}`,
# also sent on a clean exit; URL credentials are only used to connect.
# Memory: only the steady loop stays compiled (this module, huddle_poll, huddle_health,
# huddle_app, huddle_http, huddle_os, the MQTT session), each small, because compiling from
# source needs about 150 bytes of heap per line for a moment. huddle_os.call compiles the sync
# stack (huddle_manifest, huddle_stage, huddle_switch and what they import) one module at a
# time when a poll found a new commit, and forgets each afterwards. No asyncio.Event (1 KB).
import asyncio
import gc
import json
import time
from random import random
from huddle_os import ticks_ms, ticks_diff, ticks_add, join, log, call
from huddle_app import App

VERSION = "0.2.0-micro"


class Agent:
    commit = active = last_error = healthy = started_ms = mqtt = retry_ms = None
    restarts = crashes = failures = peak = fails = 0
    trial = up = False  # up: connected to the broker

    def __init__(self, cfg):
        self.cfg = cfg
        self.root = cfg["dir"]
        self.state = {"previous": None, "previous_commit": None, "good": None, "bad": [],
                      "last_deploy": None, "branch": None}
        self.buf = bytearray(512)  # the one chunk buffer of every download and copy
        self.app = App(cfg["main"])
        self.boot_ms = ticks_ms()
        call("huddle_store", "load", self)  # pointer, state, then cleanup

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
        self.trial = self.commit is not None and self.commit != self.state["good"]
        self.started_ms = ticks_ms()
        self.failures = 0
        self.healthy = None
        log("starting %s from %s%s" % (self.cfg["main"], self.active,
                                       " (on trial)" if self.trial else ""))
        self.app.start(join(self.root, self.active))
        self.note()

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
            await self.app.stop()
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
        try:
            if not self.up:
                c.connect()
                log("mqtt: connected to %s:%d" % (c.host, c.port))
                self.up = True
            c.publish(self.topic, self.payload(), True, 1)
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

    def payload(self):
        app = self.app
        out = {"device": self.cfg["device"], "state": "online", "ts": int(time.time()),
               "uptime": ticks_diff(ticks_ms(), self.boot_ms) // 1000, "version": VERSION,
               "apps": {self.cfg["main"]: {
                   "commit": self.commit, "branch": self.state["branch"],
                   "running": app.task is not None and not app.finished and app.error is None,
                   "healthy": self.healthy, "restarts": self.restarts,
                   "last_deploy": self.state["last_deploy"], "last_error": self.last_error}}}
        if self.cfg["debug"]:
            self.heap()
            out["heap_peak"] = self.peak
        return json.dumps(out)
