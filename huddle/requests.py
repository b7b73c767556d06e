"""Requests from the command line to a running agent, as files in its state dir.

`huddle retry APP [COMMIT]` cannot edit `state.json` under a running agent (the agent owns
it and rewrites it whole), so it drops a request file, `STATE_DIR/requests/retry-APP.json`,
that the app's controller takes (reads and deletes) at its next poll. Written atomically, so
a half-written request is never read. `huddle reload` needs no file: it signals the agent.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

REQUESTS_DIR = "requests"


def _path(state_dir: Path, app: str) -> Path:
    return Path(state_dir) / REQUESTS_DIR / f"retry-{app}.json"


def write_retry(state_dir: Path, app: str, commits: tuple[str, ...]) -> Path:
    """Ask for `commits` (all bans when empty) to be cleared for `app`."""
    path = _path(state_dir, app)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(path.name + ".tmp")
    temp.write_text(json.dumps({"commits": list(commits)}), encoding="utf-8")
    os.replace(temp, path)
    return path


def take_retry(state_dir: Path, app: str) -> tuple[str, ...] | None:
    """The pending retry request for `app` (removed once read), or None."""
    path = _path(state_dir, app)
    try:
        raw = path.read_text(encoding="utf-8")
        path.unlink()
    except OSError:
        return None  # no request (the usual case), or one we cannot read: nothing to do
    try:
        commits = json.loads(raw).get("commits", [])
    except (ValueError, AttributeError):
        commits = []  # a mangled request still means "retry": clear every ban
    return tuple(str(c) for c in commits if isinstance(c, str))
