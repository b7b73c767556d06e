"""The named states of one app and the transitions between them (supervisor's states.py).

An app is in exactly one of these at a time; `huddle status`, `status --json` and the MQTT
payload show it. The table below is the whole lifecycle: `AppController.enter` refuses any
move it does not list, so a bug shows as a loud error instead of an app silently left down.

    stopped    no process, because the user asked (config removed, agent stopping) or the
               agent has not started the app yet. Never a verdict on a commit.
    syncing    no process yet: the tree is being cloned, adopted, or moved to the commit
               that is about to start (first start, rollback, retry).
    trial      the process runs a commit that has not yet passed its health window.
    running    the process runs a commit that passed its window (the last good one).
    backoff    a good commit's process crashed or failed its checks; it restarts when the
               capped, jittered delay ends.
    crashloop  a commit that never ran healthily (no good commit yet, or the environment
               failed its fallback too) restarts after a capped, jittered delay.
    sync-only  a file-sync app (no [application]): the tree follows the branch, no process.

A deploy of a new commit happens beside the running process (fetch, checkout, hooks and
install run while the old version serves), so no state stands for it: the app moves from
whatever it was in to `trial` when the new process starts.
"""

from __future__ import annotations

from enum import Enum


class State(str, Enum):
    STOPPED = "stopped"
    SYNCING = "syncing"
    TRIAL = "trial"
    RUNNING = "running"
    BACKOFF = "backoff"
    CRASHLOOP = "crashloop"
    SYNC_ONLY = "sync-only"

    def __str__(self) -> str:
        return self.value


S = State
# from -> the states it may move to. Every state may move to `stopped` (the user's stop).
TRANSITIONS: dict[State, frozenset[State]] = {
    S.STOPPED: frozenset({S.SYNCING}),
    S.SYNCING: frozenset({S.TRIAL, S.RUNNING, S.BACKOFF, S.CRASHLOOP, S.SYNC_ONLY, S.SYNCING}),
    S.TRIAL: frozenset({S.TRIAL, S.RUNNING, S.SYNCING, S.CRASHLOOP}),
    S.RUNNING: frozenset({S.TRIAL, S.BACKOFF}),
    S.BACKOFF: frozenset({S.RUNNING, S.TRIAL, S.BACKOFF, S.SYNCING, S.CRASHLOOP}),
    S.CRASHLOOP: frozenset({S.TRIAL, S.SYNCING, S.CRASHLOOP}),
    S.SYNC_ONLY: frozenset({S.SYNC_ONLY}),
}

# states in which the app's process runs
UP = frozenset({S.TRIAL, S.RUNNING})


def allowed(old: State, new: State) -> bool:
    return new is S.STOPPED or new in TRANSITIONS[old]
