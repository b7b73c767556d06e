# The agent: one app, its version pointer and its status, driven by cooperative asyncio tasks.
#
# `run` starts the app (huddle_app), then two tasks that main.py passes it, huddle_poll.poll
# (the poll timer and sync cycle) and huddle_health.supervise (health checks, rollback,
# restarts), restarts either if it dies (a MemoryError, say), and itself reports over MQTT:
# status at start and every `heartbeat` seconds, and at once on every change (`note`). The
# MQTT client's calls are coroutines on a non-blocking socket, so a slow broker never holds up
# the app or the health checks; a broker that is down costs one failed connect per backoff step
# (capped, jittered, reset on success). The last will, retained, is
# `{"device": ID, "state": "offline"}`, also sent on a clean exit; URL credentials are only
# used to connect. A MemoryError while reporting is a failed report, retried like a dead
# broker: nothing here ends the agent.
import asyncio
import gc
import json
import time
from random import random

from huddle_os import call, log, ticks_add, ticks_diff, ticks_ms

VERSION = "0.2.0-micro"


class Agent:
    def __init__(self, cfg, commit, active, state):
        # what huddle_start read from flash; then the leftovers of a kill go
        self.cfg, self.root, self.commit, self.active, self.state = (
            cfg,
            cfg["dir"],
            commit,
            active,
            state,
        )
        self.boot_ms = ticks_ms()
        # set here, not as class attributes: an instance sets them all in a long run, and
        # class defaults would hold every name a second time (a class dict of 250 B)
        # the app (huddle_app): its task, the modules and sockets it loaded, whether it
        # finished its work, when it started, its error and health
        self.task = self.modules = self.aside = self.sockets = None
        self.last_error = self.healthy = self.started_ms = self.error = None
        self.restarts = self.failures = self.crashes = self.heap_peak = 0
        self.trial = self.finished = self.changed = False
        # the MQTT session: client, whether it is connected, failed connects in a row and
        # when to try again
        self.mqtt = self.retry_ms = self.topic = None
        self.connected = False
        self.mqtt_fails = 0
        call("huddle_store", "cleanup", self)

    async def run(self, poll, supervise):
        # huddle_app is loaded at boot only for the long-running agent (--once runs no app):
        # this finds it in sys.modules, before the app's directory is on the path
        from huddle_app import launch, stop

        cfg = self.cfg
        if cfg["mqtt"]:
            from huddle_mqtt import MQTTClient

            # worked out at boot (huddle_start.mqtt)
            args, self.topic, self.offline, self.hello, self.retry_cap_s = cfg["mqtt"]
            self.mqtt = MQTTClient(*args)
            self.mqtt.set_last_will(self.topic, self.offline)
            await self.report()  # connects before the app takes its share of the heap
        if self.active:
            launch(self)
        jobs = (poll, supervise)
        tasks = [asyncio.create_task(job(self)) for job in jobs]
        try:
            while True:
                # a status every heartbeat, and within 0.1 s of a change (note); without MQTT
                # there is nothing to do here
                self.changed = False
                await self.report()
                for i in range(len(jobs)):
                    if tasks[i].done():  # it died (a MemoryError, say): the agent goes on
                        log("restarting a failed task")
                        tasks[i] = asyncio.create_task(jobs[i](self))
                t = ticks_ms()
                while not self.changed and ticks_diff(ticks_ms(), t) < cfg["heartbeat"] * 1000:
                    await asyncio.sleep(0.1 if self.mqtt else cfg["heartbeat"])
        finally:
            for t in tasks:
                t.cancel()
            await stop(self)
            if self.connected:
                try:
                    await self.mqtt.publish(self.topic, self.offline, True, 1)
                    await self.mqtt.disconnect()
                except Exception:  # leaving anyway (a dead broker, no memory): the broker
                    self.mqtt.close()  # sends the will instead

    def note(self, error=None):
        # records an error; the status goes out at once (run's loop sees `changed`)
        if error:
            self.last_error = error
            log(error)
        self.changed = True

    def sample_heap(self):
        # with `debug`, the live heap's peak (for benchmarks)
        if self.cfg["debug"] and hasattr(gc, "mem_alloc"):
            gc.collect()
            self.heap_peak = max(self.heap_peak, gc.mem_alloc())

    def status(self):
        cfg, s = self.cfg, self.state
        app = {
            "commit": self.commit,
            "branch": s["branch"],
            "running": self.task is not None and not self.finished and self.error is None,
            "healthy": self.healthy,
            "restarts": self.restarts,
            "last_deploy": s["last_deploy"],
            "last_error": self.last_error,
        }
        status = {
            "device": cfg["device"],
            "state": "online",
            "ts": int(time.time()),
            "uptime": ticks_diff(ticks_ms(), self.boot_ms) // 1000,
            "version": VERSION,
            "apps": {cfg["main"]: app},
        }
        if cfg["debug"]:
            self.sample_heap()
            status["heap_peak"] = self.heap_peak
        return status

    async def report(self):
        # publishes the status (retained, QoS 1) and reads what the broker sent; a broker that
        # is down, or a heap too full to build the message, costs one try per backoff step
        c = self.mqtt
        if c is None or (self.retry_ms is not None and ticks_diff(self.retry_ms, ticks_ms()) > 0):
            return
        try:
            if not self.connected:
                await c.connect()
                log(self.hello)
                self.connected = True
            # bytes, made before the first await: the client then keeps no second copy, and the
            # status and its str are garbage while the message waits for its PUBACK
            await c.publish(self.topic, json.dumps(self.status()).encode(), True, 1)
            await c.poll()
        except (OSError, MemoryError) as e:  # either way the session may be half-written
            c.close()
            self.connected = False
            self.mqtt_fails += 1
            delay = min(2 ** min(self.mqtt_fails, 8), 60, self.retry_cap_s) * (0.5 + random() / 2)
            self.retry_ms = ticks_add(ticks_ms(), int(delay * 1000))
            log("mqtt: %s (retry in %ds)" % (e, delay))
            return
        self.mqtt_fails = 0
        self.retry_ms = None
