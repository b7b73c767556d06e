# The poll timer and the sync cycle.
#
# `poll` waits a random interval between `minimum` and `maximum`, runs `cycle`; after a
# failure the wait doubles per consecutive failure (capped at 16 x maximum, still jittered)
# and resets on success. It does not install while a new version is on trial. `cycle` first
# reads only the manifest's first two lines (`head`), so "is the commit unchanged?" costs one
# request; only a new commit is read on (huddle_sync.manifest), staged beside the running
# version (huddle_stage) and switched to (huddle_store.switch). Any failure leaves the old
# version. An unverified "same commit" stops at `head` and can only make the device do
# nothing; anything that would be installed is verified first. huddle_sync and huddle_stage
# are loaded for their step only (huddle_os.call): the update's heap peak is the staging
# beside the running app, and the manifest reader is gone by then. Switching versions: on a
# board with `machine.reset` the pointer is switched and the board resets into the new
# version; elsewhere (unix port, CPython) the app is swapped in-process.
import asyncio
import gc
import time
from random import uniform

from huddle_http import MAX_MANIFEST, get
from huddle_os import call, join, log, ticks_add, ticks_ms

try:  # imported at boot: later the app's directory is on the path, and may hold a machine.py
    from machine import reset
except ImportError:  # unix port, CPython: versions are swapped in-process
    reset = None

HEX = b"0123456789abcdef"


async def head(url, timeout_s, ca, until):
    # (open response, commit) after the manifest's first two lines, which are checked; `ca`
    # and `until` as in huddle_http.get
    resp = await get(url, timeout_s, ca, until)
    try:
        if resp.status != 200:
            raise OSError("HTTP %d for %s" % (resp.status, url))
        if (resp.length or 0) > MAX_MANIFEST:
            raise ValueError("manifest too long")
        resp.due(resp.length or MAX_MANIFEST)
        line = await resp.readline()
        if line != b"huddle-manifest 1":
            raise ValueError("not a huddle manifest: %r" % (line or b"")[:40])
        line = await resp.readline() or b""
        if line[:7] != b"commit " or len(line) not in (47, 71) or line[7:].strip(HEX):
            raise ValueError("bad commit line %r" % line[:80])
        return resp, line[7:].decode()
    except BaseException:
        resp.close()
        raise


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
            branch, seq, total = await call("huddle_sync", "manifest", a, resp, commit, tmp)
        finally:
            resp.close()
        resp = None
        a.sample_heap()
        got, copied = await call("huddle_stage", "stage", a, tmp, total, until)
        a.sample_heap()
        call("huddle_store", "switch", a, commit, branch, seq, int(time.time()))
    except Exception as e:  # any failure leaves the old version: report and carry on
        a.note("sync: %s: %s" % (type(e).__name__, e))
        return "failed"
    log("installed %s: %d new, %d kept" % (commit, got, copied))
    a.last_error = None
    a.note()
    return "installed"


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
