# The versions on flash, and the one pointer that says which of them runs: reading them at
# start, switching to a staged version or back to the previous one, and cleaning up.
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
import os
from huddle_os import join, log, read_json, write_json, isdir, makedirs, remove


def load(a):
    # reads the pointer and the state, then cleans up
    root = a.root
    makedirs(root)
    p = read_json(join(root, "huddle.json"))
    if isinstance(p, dict) and isinstance(p.get("active"), str) \
            and isdir(join(root, p["active"])):
        a.commit, a.active = p.get("commit"), p["active"]
    s = read_json(join(root, "state.json"))
    if isinstance(s, dict):
        a.state.update(s)
    s = a.state
    if not (s["previous"] and isdir(join(root, s["previous"]))):
        s["previous"] = s["previous_commit"] = None
    cleanup(a)


def cleanup(a):
    keep = (a.active, a.state["previous"], "huddle.json", "state.json")
    for name in os.listdir(a.root):
        if name not in keep and (name[:2] == "v-" or name == ".stage" or name[-4:] == ".tmp"):
            log("cleanup: removing leftover " + name)
            remove(join(a.root, name))


def point(a, commit, name):
    # state first, then the pointer (the switch), then what is no longer needed goes
    write_json(join(a.root, "state.json"), a.state)
    write_json(join(a.root, "huddle.json"), {"commit": commit, "active": name})
    a.commit, a.active = commit, name
    cleanup(a)


def switch(a, commit, branch, ts):
    # makes the staged version the active one: a rename, then the pointer
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
    point(a, commit, name)


def back(a, why):
    # points back at the previous version and remembers the active commit as bad (the last
    # 16); False when there is nothing to go back to (the bad commit stays active)
    s = a.state
    bad = a.commit
    if bad and bad not in s["bad"]:
        s["bad"] = (s["bad"] + [bad])[-16:]
    log("rolling back %s: %s" % (bad, why))
    if not s["previous"]:
        write_json(join(a.root, "state.json"), s)
        return False
    prev, commit = s["previous"], s["previous_commit"]
    s["previous"] = s["previous_commit"] = None
    s["good"] = commit  # the version it ran before is the last good one
    point(a, commit, prev)
    return True
