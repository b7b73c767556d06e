"""The agent: three cooperative asyncio tasks around one store, one app and one status.

- `_poll`: waits a random interval between `minimum` and `maximum`, runs a sync cycle; after
  a failure the wait doubles per consecutive failure (capped at 16 x maximum, still jittered)
  and resets on success. It does not install while a new version is on trial.
- `_supervise`: wakes every health interval or when the app dies; counts failed checks after
  `grace`; a version on trial (not yet good) that fails is rolled back and its commit is never
  installed again; a good version that fails is restarted with capped exponential backoff.
  The trial ends, and the commit becomes good, after grace + retries x interval.
- `_report`: publishes status at start, on every change and every `heartbeat` seconds.
Switching versions: on a board with `machine.reset` the pointer is switched and the board
resets into the new version; elsewhere (unix port, CPython) the app is swapped in-process.
"""
import asyncio
import random
import time
from huddle_os import ticks_ms, ticks_diff, log
from huddle_store import Store
from huddle_app import App

VERSION = "0.2.0-micro"
CHUNK = 512


class Agent:
    def __init__(self, cfg):
        self.cfg = cfg
        self.health = cfg["health"]
        self.store = Store(cfg["dir"])
        self.buf = bytearray(CHUNK)
        self.app = App(cfg["main"])
        self.last_error = None
        self.healthy = None
        self.restarts = 0
        self.crashes = 0
        self.failures = 0
        self.started_ms = None
        self.trial = False
        self.boot_ms = ticks_ms()
        self.peak = 0
        self.wake = None
        self.changed = None
        self.status = None

    def heap(self):
        """debug: samples heap use, so a benchmark can report the peak."""
        if self.cfg["debug"]:
            import gc
            if hasattr(gc, "mem_alloc"):  # live data after a collection, not garbage
                gc.collect()
                self.peak = max(self.peak, gc.mem_alloc())

    def _note(self, error=None):
        if error:
            self.last_error = error
            log(error)
        if self.changed is not None:
            self.changed.set()

    async def cycle(self):
        """One sync cycle: 'current', 'installed', 'bad' or 'failed' (reason in last_error)."""
        import gc
        gc.collect()
        from huddle_sync import sync
        try:
            result, commit, _ = await sync(self.cfg, self.store, self.buf,
                                           int(time.time()), self.heap)
        except Exception as e:  # any failure leaves the old version: report and carry on
            self._note("sync: %s: %s" % (type(e).__name__, e))
            return "failed"
        if result == "bad":
            log("published commit %s was rolled back before; staying on %s"
                % (commit, self.store.commit))
        elif result == "installed":
            self.last_error = None
            self._note()
        return result

    async def once(self):
        self.store.cleanup()
        result = await self.cycle()
        return {"current": 0, "installed": 0, "bad": 3}.get(result, 1)

    # -- the long-running agent --------------------------------------------------------------

    async def run(self):
        self.wake = asyncio.Event()
        self.changed = asyncio.Event()
        self.store.cleanup()
        if self.cfg["mqtt"]:
            from huddle_status import Status
            self.status = Status(self.cfg["mqtt"], self.cfg["device"], self.cfg["timeout"],
                                 int(self.cfg["heartbeat"] * 2) + 10)
        if self.store.active:
            self._launch()
        tasks = [asyncio.create_task(self._poll()), asyncio.create_task(self._supervise())]
        try:
            await self._report()
        finally:
            for t in tasks:
                t.cancel()
            await self.app.stop()
            if self.status:
                self.status.close()

    def _launch(self):
        self.trial = self.store.in_trial()
        self.started_ms = ticks_ms()
        self.failures = 0
        self.healthy = None
        log("starting %s from %s%s" % (self.cfg["main"], self.store.active,
                                       " (on trial)" if self.trial else ""))
        self.app.start(self.store.active_dir())
        self.app.on_exit = self.wake.set
        if self.app.error:
            self.wake.set()
        self._note()

    def _window_ms(self):
        h = self.health
        extra = h["retries"] * h["interval"] if h["type"] != "none" else 0
        return int((h["grace"] + extra) * 1000)

    async def _poll(self):
        cfg = self.cfg
        fails = 0
        delay = 0
        while True:
            await asyncio.sleep(delay)
            result = "trial" if self.trial else await self.cycle()
            if result == "failed":
                fails += 1
            else:
                fails = 0
            delay = random.uniform(cfg["minimum"], cfg["maximum"]) * 2 ** min(fails, 8)
            delay = min(delay, 16 * cfg["maximum"])
            if result == "installed":
                await self._switch()

    async def _switch(self):
        try:
            import machine
            reset = machine.reset
        except (ImportError, AttributeError):  # unix port / CPython: swap in-process
            reset = None
        if reset is not None:
            log("resetting into " + self.store.active)
            if self.status:
                self.status.close()
            reset()
        await self.app.stop()
        self._launch()

    async def _supervise(self):
        h = self.health
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), h["interval"])
            except asyncio.TimeoutError:
                pass  # the regular health interval
            self.wake.clear()
            if self.started_ms is None:
                continue
            age = ticks_diff(ticks_ms(), self.started_ms)
            reason = self.app.error
            if reason is None and h["type"] != "none" and age >= h["grace"] * 1000:
                reason = await self._check()
            if reason:
                await self._failed(reason)
            elif age >= self._window_ms():
                self.crashes = 0
                if self.trial:
                    self.trial = False
                    self.store.mark_good()
                    log("%s is good" % self.store.commit)
                    self._note()

    async def _check(self):
        from huddle_app import check
        reason = await check(self.health)
        was = self.healthy
        self.healthy = reason is None
        self.failures = 0 if reason is None else self.failures + 1
        if was != self.healthy:
            self._note(reason)
        if reason and self.failures < self.health["retries"]:
            return None
        return reason

    async def _failed(self, reason):
        self._note(reason)
        await self.app.stop()
        if self.trial:
            if self.store.rollback(reason):
                self._launch()
                return
            self.trial = False  # nothing to go back to: keep restarting this one
        self.crashes += 1
        self.restarts += 1
        delay = min(2 ** min(self.crashes, 8), 60) * (0.5 + random.random() / 2)
        log("restarting %s in %.1fs" % (self.cfg["main"], delay))
        self.started_ms = None
        await asyncio.sleep(delay)
        self._launch()

    async def _report(self):
        while True:
            if self.status:
                self.status.publish(self.payload())
                self.status.poll()
            try:
                await asyncio.wait_for(self.changed.wait(), self.cfg["heartbeat"])
            except asyncio.TimeoutError:
                pass  # heartbeat
            self.changed.clear()

    def payload(self):
        import json
        st = self.store.state
        app = {"commit": self.store.commit, "branch": st.get("branch"),
               "running": self.app.running(), "healthy": self.healthy,
               "restarts": self.restarts, "last_deploy": st.get("last_deploy"),
               "last_error": self.last_error}
        out = {"device": self.cfg["device"], "state": "online", "ts": int(time.time()),
               "uptime": ticks_diff(ticks_ms(), self.boot_ms) // 1000, "version": VERSION,
               "apps": {self.cfg["main"]: app}}
        if self.cfg["debug"]:
            self.heap()
            out["heap_peak"] = self.peak
        return json.dumps(out)
