# Moving the pointer: to a newly staged version, or back to the previous one (rollback).
#
# Loaded for that moment only (via huddle_os.call), like the rest of the sync stack. The
# functions work on the agent `a` (`root`, `commit`, `active`, `state`). `state.json` is
# written before the pointer `huddle.json`, each by an atomic rename, so a kill between the two
# leaves the old pointer and a harmless state; the pointer's rename is the switch. Afterwards
# huddle_store.cleanup deletes versions older than the previous one.
import os
from huddle_os import join, write_json, log
from huddle_store import cleanup
from huddle_fs import remove

MAX_BAD = 16


def _point(a, commit, name):
    write_json(join(a.root, "state.json"), a.state)
    write_json(join(a.root, "huddle.json"), {"commit": commit, "active": name})
    a.commit, a.active = commit, name
    cleanup(a)


def to(a, commit, branch, ts):
    # makes the staged version the active one: a rename, then the pointer (the switch)
    name = "v-" + commit[:12]
    if name == a.active:
        raise OSError("version directory %s is already active" % name)
    target = join(a.root, name)
    remove(target)
    os.rename(join(a.root, ".stage"), target)
    s = a.state
    s["branch"] = branch
    if a.active:
        s["previous"], s["previous_commit"] = a.active, a.commit
    s["last_deploy"] = ts
    _point(a, commit, name)


def back(a, why):
    # points back at the previous version and remembers the active commit as bad; False when
    # there is nothing to go back to (the bad commit stays active)
    s = a.state
    bad = a.commit
    if bad and bad not in s["bad"]:
        s["bad"] = (s["bad"] + [bad])[-MAX_BAD:]
    log("rolling back %s: %s" % (bad, why))
    if not s["previous"]:
        write_json(join(a.root, "state.json"), s)
        return False
    prev, commit = s["previous"], s["previous_commit"]
    s["previous"] = s["previous_commit"] = None
    s["good"] = commit  # the version it ran before is the last good one
    _point(a, commit, prev)
    return True
