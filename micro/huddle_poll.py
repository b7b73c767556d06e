# The poll timer and the sync cycle.
#
# `poll` waits a random interval between `minimum` and `maximum`, runs `cycle`; after a
# failure the wait doubles per consecutive failure (capped at 16 x maximum, still jittered)
# and resets on success. It does not install while a new version is on trial. `cycle` first
# reads only the manifest's first two lines (`head`), so "is the commit unchanged?" costs one
# request and no other module; only for a new commit does it compile the sync stack, one
# module at a time, handing on the same open response: huddle_manifest (the rest of the
# manifest, checked and HMAC-verified, copied to flash), huddle_stage (the new version beside
# the running one), huddle_switch (the pointer switch). Any failure leaves the old version.
# Switching versions: on a board with `machine.reset` the pointer is switched and the board
# resets into the new version; elsewhere (unix port, CPython) the app is swapped in-process.
import asyncio
import gc
import time
from random import uniform
from huddle_os import join, log, call
from huddle_http import get, MAX_MANIFEST


async def head(url, timeout_s):
    # (open response, commit) after the manifest's first two lines, which are checked
    resp = await get(url, timeout_s)
    try:
        if resp.status != 200:
            raise OSError("HTTP %d for %s" % (resp.status, url))
        if (resp.length or 0) > MAX_MANIFEST:
            raise ValueError("manifest larger than %d bytes" % MAX_MANIFEST)
        resp.due(resp.length or MAX_MANIFEST)
        line = await resp.readline()
        if line != b"huddle-manifest 1":
            raise ValueError("not a huddle manifest (first line %r)" % (line or b"")[:40])
        line = await resp.readline() or b""
        commit = line[7:].decode() if line.startswith(b"commit ") else ""
        if len(commit) not in (40, 64) or [c for c in commit if c not in "0123456789abcdef"]:
            raise ValueError("bad commit line %r" % line[:80])
        return resp, commit
    except BaseException:
        await resp.close()
        raise


async def cycle(a):
    # one sync cycle: 'current', 'installed', 'bad' or 'failed' (reason in last_error)
    cfg = a.cfg
    gc.collect()
    try:
        resp, commit = await head(cfg["manifest"], cfg["timeout"])
        try:
            if commit == a.commit:
                return "current"
            if commit in a.state["bad"]:
                log("published commit %s was rolled back before; staying on %s"
                    % (commit, a.commit))
                return "bad"
            tmp = join(a.root, ".manifest.tmp")
            branch, total = await call("huddle_manifest", "rest", resp, cfg["key"], commit,
                                       tmp)
        finally:
            await resp.close()
        resp = None
        a.heap()
        got, copied = await call("huddle_stage", "stage", a, tmp, total)
        a.heap()
        call("huddle_switch", "to", a, commit, branch, int(time.time()))
    except Exception as e:  # any failure leaves the old version: report and carry on
        a.note("sync: %s: %s" % (type(e).__name__, e))
        return "failed"
    log("installed %s (%s): %d files downloaded, %d copied" % (commit, branch, got, copied))
    a.last_error = None
    a.note()
    return "installed"


async def poll(a):
    cfg = a.cfg
    fails = delay = 0
    while True:
        await asyncio.sleep(delay)
        result = "trial" if a.trial else await cycle(a)
        fails = fails + 1 if result == "failed" else 0
        delay = min(uniform(cfg["minimum"], cfg["maximum"]) * 2 ** min(fails, 8),
                    16 * cfg["maximum"])
        if result == "installed":
            try:
                from machine import reset
            except ImportError:  # unix port / CPython: swap in-process
                reset = None
            if reset:
                log("resetting into " + a.active)
                reset()
            await a.app.stop()
            a.launch()
