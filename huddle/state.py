"""The agent's memory across restarts: `STATE_DIR/state.json`.

One JSON object keyed by app name. It is rewritten whole, atomically (temporary file in the
same directory, fsync, rename, fsync of the directory), so a power cut leaves the old or the
new file, never a torn one. It records what `huddle status` shows and what a new agent needs
after a SIGKILL of the old one: the deployed and last good commit, the commits rolled back,
and the app's pid with its kernel start time and boot id, so a new agent can tell the very
process it started from an unrelated one that reused the pid.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional

from huddle.errors import StateError

STATE_FILE = "state.json"


def default_state_dir() -> Path:
    env = os.environ.get("HUDDLE_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/huddle")
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(base) / "huddle"


@dataclass
class AppState:
    commit: Optional[str] = None        # deployed commit
    good: Optional[str] = None          # last commit that passed its health window
    bad: List[str] = field(default_factory=list)  # commits rolled back, never deployed again
    pid: Optional[int] = None
    restarts: int = 0
    healthy: Optional[bool] = None      # None: not judged yet
    last_error: Optional[str] = None
    deployed_at: Optional[float] = None  # unix time of the last deploy
    branch: Optional[str] = None
    running: bool = False
    health_detail: Optional[str] = None
    pid_start: Optional[int] = None     # /proc/PID/stat starttime of `pid`
    boot_id: Optional[str] = None
    state: str = "stopped"              # the app's named state (huddle/states.py)
    fallback: Optional[str] = None      # healthy when superseded before its window ended

    @classmethod
    def from_json(cls, data: dict) -> "AppState":
        known = {f.name for f in fields(cls)}
        state = cls(**{k: v for k, v in data.items() if k in known})
        state.bad = [str(c) for c in (state.bad or [])]
        return state


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE

    def log_dir(self) -> Path:
        return self.dir / "logs"

    def load(self) -> Dict[str, AppState]:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise StateError(f"{self.path}: cannot read: {exc.strerror}") from exc
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise StateError(f"{self.path}: not valid JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise StateError(f"{self.path}: expected a JSON object")
        return {str(name): AppState.from_json(v) for name, v in data.items()
                if isinstance(v, dict)}

    def save(self, apps: Dict[str, AppState]) -> None:
        """Atomic replace: temp file, fsync, rename, fsync the directory."""
        payload = json.dumps({name: asdict(s) for name, s in sorted(apps.items())},
                             indent=2, sort_keys=True) + "\n"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd, temp = tempfile.mkstemp(prefix=".state.", suffix=".tmp", dir=self.dir)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    fh.write(payload)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(temp, self.path)
            except BaseException:
                try:
                    os.unlink(temp)
                except OSError:
                    pass  # the temp file is already gone; the original error matters
                raise
            dir_fd = os.open(self.dir, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StateError(f"{self.path}: cannot write: {exc.strerror or exc}") from exc
