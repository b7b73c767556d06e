# The versions on flash, and the one pointer that says which of them runs: switching to a
# staged version or back to the previous one, and cleaning up (huddle_start reads them
# at boot).
#
# Layout under the config's `dir`:
#     huddle.json      {"commit": SHA, "active": NAME}: the pointer, only ever replaced by a
#                      rename (huddle_os.write_json); it always names a complete version
#     state.json       {"previous", "previous_commit", "good", "bad": [...], "suspect",
#                      "last_deploy", "branch", "seq"}
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

from huddle_os import join, log, remove, write_json


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


def switch(a, commit, branch, seq, ts):
    # makes the staged version the active one: a rename, then the pointer
    name = "v-" + commit[:12]
    if name == a.active:
        raise OSError("%s is already active" % name)
    target = join(a.root, name)
    remove(target)
    os.rename(join(a.root, ".stage"), target)
    s = a.state
    s["branch"] = branch
    if seq is not None:  # the highest installed: an older manifest is never installed again
        s["seq"] = seq
    if a.active:
        s["previous"], s["previous_commit"] = a.active, a.commit
    s["last_deploy"] = ts
    point(a, commit, name)


def back(a, error):
    # goes back to the previous version (the fallback) after the active one failed its trial:
    # the failed commit becomes the suspect, banned only once the fallback has run healthily
    # (huddle_health); False when there is no previous version to go back to
    if not a.state["previous"]:
        return False
    log("rolling back %s: %s" % (a.commit, error))
    a.state["suspect"] = a.commit
    swap(a)
    return True


def swap(a):
    # the previous version becomes the active one, the active one the previous one (both stay
    # on flash, so either can run again)
    s = a.state
    active, commit = s["previous"], s["previous_commit"]
    s["previous"], s["previous_commit"] = a.active, a.commit
    point(a, commit, active)


def ban(a, commit):
    # remembers `commit` as bad (the last 16): it is never installed again
    s = a.state
    if commit not in s["bad"]:
        s["bad"] = (s["bad"] + [commit])[-16:]
    save(a)
