# The versions on flash, and the one pointer that says which of them runs: reading them at
# start, and cleaning up (loaded for that, and by huddle_switch, then dropped).
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
# the steady loop keeps of this. `state.json` is written before the pointer, so a kill between
# the two leaves the old pointer and a harmless state. `cleanup` runs at start and after every
# switch (huddle_switch): it removes the staging area, temporaries and every `v-*` directory
# other than the active and the previous one, and never touches names it does not own.
import os
from huddle_os import join, read_json, log
from huddle_fs import isdir, makedirs, remove


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
