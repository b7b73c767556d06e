# The poll timer and the sync cycle.
#
# `poll` waits a random interval between `minimum` and `maximum`, runs `cycle`; after a
# failure the wait doubles per consecutive failure (capped at 16 x maximum, still jittered)
# and resets on success. It does not install while a new version is on trial. `cycle` first
# reads only the manifest's first two lines (huddle_sync.head), so "is the commit unchanged?"
# costs one request; only a new commit is read on (huddle_sync.manifest), staged beside the
# running version (huddle_stage) and switched to (huddle_store.switch). Any failure leaves the
# old version. Switching versions: on a board with `machine.reset` the pointer is switched and
# the board resets into the new version; elsewhere (unix port, CPython) the app is swapped
# in-process.
import asyncio
import gc
import time
from random import uniform

from huddle_os import join, log, ticks_add, ticks_ms
from huddle_stage import stage
from huddle_store import switch
from huddle_sync import head, manifest

try:  # imported at boot: later the app's directory is on the path, and may hold a machine.py
    from machine import reset
except ImportError:  # unix port, CPython: versions are swapped in-process
    reset = None


async def cycle(a):
    # one sync cycle: 'current', 'installed', 'bad' or 'failed' (reason in last_error)
    cfg = a.cfg
    gc.collect()
    try:
        # the whole sync, manifest and blobs, ends by this deadline, however the bytes trickle
        until = ticks_add(ticks_ms(), int(cfg["sync_deadline"] * 1000))
        resp, commit = await head(cfg["manifest"], cfg["timeout"], cfg["ca"], until)
        try:
            if commit == a.commit:
                return "current"
            if commit in a.state["bad"]:
                log("%s is marked bad; staying on %s" % (commit, a.commit))
                return "bad"
            tmp = join(a.root, ".manifest.tmp")
            branch, seq, total = await manifest(resp, cfg["key"], commit, tmp)
        finally:
            resp.close()
        resp = None
        check(a, branch, seq)
        a.sample_heap()
        got, copied = await stage(a, tmp, total, until)
        a.sample_heap()
        switch(a, commit, branch, seq, int(time.time()))
    except Exception as e:  # any failure leaves the old version: report and carry on
        a.note("sync: %s: %s" % (type(e).__name__, e))
        return "failed"
    log("installed %s: %d new, %d kept" % (commit, got, copied))
    a.last_error = None
    a.note()
    return "installed"


def check(a, branch, seq):
    # a verified manifest is still refused when it is for another branch than the config's,
    # or older than what was installed: a replayed manifest (its seq not above the installed
    # one's, or none once the device has seen one) would be a downgrade
    want, last = a.cfg["branch"], a.state["seq"]
    if want and branch != want:
        raise ValueError("manifest is for branch %s, not %s" % (branch, want))
    if last is not None and (seq is None or seq <= last):
        raise ValueError("manifest seq %s is not above the installed %d (a replay?)" % (seq, last))


async def poll(a):
    # huddle_app is loaded at boot only for the long-running agent (--once runs no app); this
    # finds it in sys.modules (a name the app's directory cannot shadow: huddle_ is ours)
    from huddle_app import launch, stop

    cfg = a.cfg
    fails = delay = 0
    while True:
        await asyncio.sleep(delay)
        # nothing is installed while a version is on trial or its fallback is being judged
        result = "trial" if a.trial or a.state["suspect"] else await cycle(a)
        fails = fails + 1 if result == "failed" else 0
        delay = min(
            uniform(cfg["minimum"], cfg["maximum"]) * 2 ** min(fails, 8), 16 * cfg["maximum"]
        )
        if result == "installed":
            if reset:
                log("resetting into " + a.active)
                reset()
            await stop(a)
            launch(a)
