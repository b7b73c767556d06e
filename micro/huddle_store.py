# The versions on flash, and the one pointer that says which of them runs: switching to a
# staged version or back to the previous one, and cleaning up (huddle_start reads them
# at boot).
#
# Layout under the config's `dir`:
#     huddle.json      {"commit": SHA, "active": NAME}: the pointer, only ever replaced by a
#                      rename (huddle_os.write_json); it always names a complete version
#     state.json       {"previous", "previous_commit", "good", "bad": [...], "last_deploy",
#                      "branch"}
#     v-<commit[:12]>/ one complete version each: the active one and the previous one
#     .stage/          the version being downloaded (renamed to v-... once complete)
#     .manifest.tmp    the manifest being fetched; *.tmp are half-written files
# The functions work on the agent `a`: its `root`, `commit`, `active` and `state` (dict) are all
# the agent keeps of this. `state.json` is written before the pointer, so a kill between the
# two leaves the old pointer and a harmless state; the pointer's rename is the switch.
# `cleanup` runs at start and after every switch: it removes the staging area, temporaries and
# every `v-*` directory other than the active and the previous one, and never touches names it
# does not own.
import asyncio
import gc
import os
import sys
import huddle_http
from huddle_os import join, log, write_json, remove, ticks_ms


def cleanup(a):
    keep = (a.active, a.state["previous"], "huddle.json", "state.json")
    for name in os.listdir(a.root):
        if name not in keep and (name[:2] == "v-" or name == ".stage" or name[-4:] == ".tmp"):
            log("cleanup: removing leftover " + name)
            remove(join(a.root, name))


def save(a):
    write_json(join(a.root, "state.json"), a.state)


def point(a, commit, active):
    # state first, then the pointer (the switch), then what is no longer needed goes
    save(a)
    write_json(join(a.root, "huddle.json"), {"commit": commit, "active": active})
    a.commit, a.active = commit, active
    cleanup(a)


def switch(a, commit, branch, ts):
    # makes the staged version the active one: a rename, then the pointer
    name = "v-" + commit[:12]
    if name == a.active:
        raise OSError("%s is already active" % name)
    target = join(a.root, name)
    remove(target)
    os.rename(join(a.root, ".stage"), target)
    s = a.state
    s["branch"] = branch
    if a.active:
        s["previous"], s["previous_commit"] = a.active, a.commit
    s["last_deploy"] = ts
    point(a, commit, name)


def back(a, error):
    # points back at the previous version and remembers the active commit as bad (the last
    # 16); False when there is nothing to go back to (the bad commit stays active)
    s = a.state
    bad = a.commit
    if bad and bad not in s["bad"]:
        s["bad"] = (s["bad"] + [bad])[-16:]
    log("rolling back %s: %s" % (bad, error))
    if not s["previous"]:
        save(a)
        return False
    prev, commit = s["previous"], s["previous_commit"]
    s["previous"] = s["previous_commit"] = None
    s["good"] = commit  # the version it ran before is the last good one
    point(a, commit, prev)
    return True


# The agent's method (huddle_agent.Agent) that starts its app, as described in huddle_agent
# (its stop is in huddle_os).
def launch(a):
    # starts the active version's app
    cfg, m = a.cfg, a.m
    a.trial = a.commit is not None and a.commit != a.state["good"]
    a.started_ms = ticks_ms()
    a.failures = 0
    a.healthy = a.error = None
    m[7] = False
    log("starting %s from %s%s" % (cfg["main"], a.active,
                                   " (on trial)" if a.trial else ""))
    # the app runs in its version's directory, imported through "" on sys.path: MicroPython
    # interns the name of every file it compiles for good, so "app.py" is one name for every
    # version where a full path per version would grow the heap at each update
    os.chdir(join(a.root, a.active))
    m[3] = tuple(sys.modules)  # (a tuple: half the RAM of a set)
    sys.path.insert(0, "")
    # the app compiles now. MicroPython's parser starts every compile with a 1 KB stack (64
    # rules) that a heap fragmented by the agent's run may not have in one piece: the chunk
    # buffer's block (huddle_http.buf) is lent to it, and allocated again once the compile is
    # over
    huddle_http.buf = None
    gc.collect()
    try:
        r = __import__(cfg["main"]).main()
        if hasattr(r, "send") and hasattr(r, "throw"):
            async def launch():  # the app's task (a name this table has already)
                try:
                    await r
                    m[7] = True
                except asyncio.CancelledError:
                    raise
                except Exception as e:  # the app crashed: recorded, counted, never kills
                    a.error = "%s: %s" % (type(e).__name__, e)  # the agent
            m[2] = asyncio.create_task(launch())
        else:
            m[7] = True
    except Exception as e:  # the app's own failure, to be reported and counted
        a.error = "%s at start: %s" % (type(e).__name__, e)
    try:
        huddle_http.chunk()
    except MemoryError:  # tried again at the next read
        pass
    a.note()
