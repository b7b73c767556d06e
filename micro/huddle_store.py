"""The versions on flash, and the one pointer that says which of them runs.

Layout under the config's `dir`:
    huddle.json      {"commit": SHA, "active": NAME}: the pointer, only ever replaced by a
                     rename (huddle_os.write_atomic); it always names a complete version
    state.json       {"previous", "previous_commit", "good", "bad": [...], "last_deploy",
                     "branch"}
    v-<commit[:12]>/ one complete version each: the active one and the previous one
    .stage/          the version being downloaded (renamed to v-... once complete)
    .manifest.tmp    the manifest being fetched; *.tmp are half-written files
`state.json` is written before the pointer, so a kill between the two leaves the old pointer
and a harmless state. `cleanup` runs at start and after every switch: it removes the staging
area, temporaries and every `v-*` directory other than the active and the previous one, and
never touches names it does not own.
"""
from huddle_os import join, remove, read_json, write_json, isdir, log
import os

POINTER = "huddle.json"
STATE = "state.json"
STAGE = ".stage"
MAX_BAD = 16


def version_name(commit):
    return "v-" + commit[:12]


class Store:
    def __init__(self, root):
        self.root = root
        self.commit = None  # running commit (from the pointer)
        self.active = None  # running version's directory name
        self.state = {"previous": None, "previous_commit": None, "good": None, "bad": [],
                      "last_deploy": None, "branch": None}
        self.load()

    def path(self, name):
        return join(self.root, name)

    def load(self):
        from huddle_os import makedirs
        makedirs(self.root)
        p = read_json(self.path(POINTER))
        if isinstance(p, dict) and isinstance(p.get("active"), str) \
                and isdir(self.path(p["active"])):
            self.commit, self.active = p.get("commit"), p["active"]
        else:
            self.commit = self.active = None
        s = read_json(self.path(STATE))
        if isinstance(s, dict):
            self.state.update(s)
        if not (self.state["previous"] and isdir(self.path(self.state["previous"]))):
            self.state["previous"] = self.state["previous_commit"] = None

    def active_dir(self):
        return self.path(self.active) if self.active else None

    def is_bad(self, commit):
        return commit in self.state["bad"]

    def in_trial(self):
        """True when the active version has not yet passed its health window."""
        return self.commit is not None and self.commit != self.state["good"]

    def cleanup(self):
        keep = (self.active, self.state["previous"], POINTER, STATE)
        for name in os.listdir(self.root):
            if name in keep:
                continue
            if name.startswith("v-") or name == STAGE or name.endswith(".tmp"):
                log("cleanup: removing leftover " + name)
                remove(self.path(name))

    def _save_state(self):
        write_json(self.path(STATE), self.state)

    def _point(self, commit, name):
        write_json(self.path(POINTER), {"commit": commit, "active": name})
        self.commit, self.active = commit, name

    def switch(self, commit, name, ts, branch):
        """Makes the complete version `name` the active one (one atomic rename)."""
        s = self.state
        s["branch"] = branch
        if self.active and self.active != name:
            s["previous"], s["previous_commit"] = self.active, self.commit
        s["last_deploy"] = ts
        self._save_state()
        self._point(commit, name)
        self.cleanup()

    def mark_good(self):
        self.state["good"] = self.commit
        self._save_state()

    def rollback(self, why):
        """Points back at the previous version and remembers the active commit as bad.
        Returns False when there is nothing to go back to (the bad commit stays active)."""
        s = self.state
        bad = self.commit
        if bad and bad not in s["bad"]:
            s["bad"] = (s["bad"] + [bad])[-MAX_BAD:]
        log("rolling back %s: %s" % (bad, why))
        if not s["previous"]:
            self._save_state()
            return False
        prev, prev_commit = s["previous"], s["previous_commit"]
        s["previous"] = s["previous_commit"] = None
        if s["good"] != prev_commit:
            s["good"] = prev_commit  # the version it ran before is the last good one
        self._save_state()
        self._point(prev_commit, prev)
        self.cleanup()
        return True
