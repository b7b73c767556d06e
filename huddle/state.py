"""The agent's memory across restarts (`STATE_DIR/state.json`) and its lock (`agent.lock`).

One JSON object keyed by app name. It is rewritten whole, atomically (temporary file in the
same directory, fsync, rename, fsync of the directory), so a power cut leaves the old or the
new file, never a torn one. It records what `huddle status` shows and what a new agent needs
after a SIGKILL of the old one: the deployed and last good commit, the commits rolled back,
and the app's pid with its kernel start time and boot id, so a new agent can tell the very
process it started from an unrelated one that reused the pid.

The file is a hint, never a reason not to start: a file that cannot be read as a JSON object
(torn by a disk fault, emptied, a directory, unreadable) is moved aside as
`state.json.corrupt-<time>` and the apps start from their trees; a hand-edited value of the
wrong type is dropped field by field. Either way the store says so once, in `load_warnings`.
`AgentLock` keeps a second agent off the same state dir: two supervisors of one app would
each start it.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import math
import os
import stat
import tempfile
import time
import typing
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from huddle.errors import StateError

STATE_FILE = "state.json"
LOCK_FILE = "agent.lock"
MAX_STATE_BYTES = 16 * 1024 * 1024  # far above any real fleet of apps; /dev/zero is not state
_HEX = frozenset("0123456789abcdef")


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
    commit: str | None = None  # deployed commit
    good: str | None = None  # last commit that passed its health window
    bad: list[str] = field(default_factory=list)  # commits rolled back, never deployed again
    pid: int | None = None
    restarts: int = 0
    healthy: bool | None = None  # None: not judged yet
    last_error: str | None = None
    deployed_at: float | None = None  # unix time of the last deploy
    branch: str | None = None
    running: bool = False
    health_detail: str | None = None
    pid_start: int | None = None  # /proc/PID/stat starttime of `pid`
    boot_id: str | None = None
    state: str = "stopped"  # the app's named state (huddle/states.py)
    fallback: str | None = None  # healthy when superseded before its window ended

    @classmethod
    def from_json(cls, data: dict, warn=lambda message: None) -> AppState:
        """Build from a decoded JSON object, keeping each field whose value fits its type and
        dropping (to the default) each one that does not, with `warn(message)` per drop.
        Unknown keys are ignored: a newer agent may have written them."""
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in data:
                value, why = _checked(f.name, hints[f.name], data[f.name])
                if why is None:
                    values[f.name] = value
                else:
                    warn(f"field {f.name!r}: {why}; dropped")
        return cls(**values)


def is_commit_id(value: Any) -> bool:
    return isinstance(value, str) and len(value) in (40, 64) and set(value) <= _HEX


def _checked(name: str, hint: Any, value: Any) -> tuple[Any, str | None]:
    """(value, None) when `value` fits the field, else (None, why)."""
    args = typing.get_args(hint)
    if value is None:
        return (None, None) if type(None) in args else (None, "null is not allowed")
    if type(None) in args:  # Optional[X]: check X
        hint = next(a for a in args if a is not type(None))
    if typing.get_origin(hint) in (list, list):
        if not isinstance(value, list):
            return None, f"expected a list, got {_show(value)}"
        kept = (
            [v for v in value if is_commit_id(v)]
            if name == "bad"
            else [v for v in value if isinstance(v, str)]
        )
        if len(kept) != len(value):
            return None, f"holds {len(value) - len(kept)} entries that are not commit ids"
        return kept, None
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = (
            isinstance(value, int)
            and not isinstance(value, bool)
            and value >= 0
            and (name != "pid" or value > 0)
        )
    elif hint is float:
        ok = (
            isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        )
    elif hint is str:
        ok = isinstance(value, str) and (name not in ("commit", "good") or is_commit_id(value))
    else:
        ok = True  # a type this check does not know: trust it
    if not ok:
        kind = {
            bool: "true or false",
            int: "a whole number >= 0" if name != "pid" else "a process id",
            float: "a number",
            str: "a commit id" if name in ("commit", "good") else "a string",
        }.get(hint, str(hint))
        return None, f"expected {kind}, got {_show(value)}"
    return value, None


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.path = self.dir / STATE_FILE
        # what the last load() found wrong, one line each, for the agent to log once
        self.load_warnings: list[str] = []
        self.load_failed = False  # the whole file was unusable (not just some fields)
        self._aside_pending = False  # an unusable file load() could not move aside yet

    def log_dir(self) -> Path:
        return self.dir / "logs"

    def load(self, keep_aside: bool = True) -> dict[str, AppState]:
        """The apps' states; never raises for what is in the file. A file that is not a JSON
        object is moved aside (`keep_aside`; `huddle status` passes False: it changes
        nothing) and {} returned; every problem is one line in `load_warnings`."""
        self.load_warnings, self.load_failed = [], False
        raw, why = self._read()
        if why is None:
            try:
                data = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                data, why = None, f"is not valid JSON ({exc})"
            else:
                if not isinstance(data, dict):
                    why = f"holds {_show(data)}, not a JSON object"
        if why is not None:
            if why != "missing":
                self._corrupt(why, keep_aside)
            return {}
        apps: dict[str, AppState] = {}
        for name, value in data.items():
            where = f"{self.path}: app {name!r}"
            if not isinstance(value, dict):
                self.load_warnings.append(
                    f"{where}: expected an object, got {_show(value)}; "
                    "dropped (the app starts from its tree)"
                )
                continue
            apps[name] = AppState.from_json(
                value, lambda message, where=where: self.load_warnings.append(f"{where}: {message}")
            )
        return apps

    def _read(self) -> tuple[str, str | None]:
        """(text, None), or ("", why) when there is no usable text; why "missing" when absent.
        Opened non-blocking and checked to be a regular file: a FIFO would hang, a device or
        a huge file would never end."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return "", "missing"
        except OSError as exc:
            return "", f"cannot be read ({exc.strerror or exc})"
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return "", "is not a regular file"
            if info.st_size > MAX_STATE_BYTES:
                return "", f"is {info.st_size} bytes, more than state can be"
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = fh.read(MAX_STATE_BYTES + 1)
        except OSError as exc:
            return "", f"cannot be read ({exc.strerror or exc})"
        finally:
            os.close(fd)
        if not data.strip():
            return "", "is empty"
        try:
            return data.decode("utf-8"), None
        except UnicodeDecodeError as exc:
            return "", f"is not UTF-8 text (byte {exc.start})"

    def _corrupt(self, why: str, keep_aside: bool) -> None:
        self.load_failed = True
        message = f"{self.path} {why}"
        if keep_aside:
            try:
                message += f"; kept it as {self._move_aside()}"
            except OSError as exc:
                self._aside_pending = True  # save() tries again before replacing it
                message += f"; cannot move it aside ({exc.strerror or exc})"
        self.load_warnings.append(message + "; apps start from their working trees")

    def _move_aside(self) -> str:
        aside = f"{STATE_FILE}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
        os.rename(self.path, self.path.with_name(aside))
        self._aside_pending = False
        return aside

    def save(self, apps: dict[str, AppState]) -> None:
        """Atomic replace: temp file, fsync, rename, fsync the directory. Raises StateError
        (a read-only or full disk): the caller keeps its apps running and reports it."""
        payload = (
            json.dumps(
                {name: asdict(s) for name, s in sorted(apps.items())}, indent=2, sort_keys=True
            )
            + "\n"
        )
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(self.path) and (self._aside_pending or not self.path.is_file()):
                # an unusable file (or a directory) where ours belongs: moved, not destroyed
                self._move_aside()
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


# -- one agent per state dir ---------------------------------------------------------------


def _runtime_lock_path(state_dir: Path) -> Path:
    """Where the lock goes when the state dir cannot hold it (read-only): a runtime
    directory, named by the state dir's real path so every agent of that dir agrees."""
    digest = hashlib.sha256(os.path.realpath(state_dir).encode()).hexdigest()[:16]
    if os.geteuid() == 0:
        base = Path("/run/huddle")
    elif os.environ.get("XDG_RUNTIME_DIR"):
        base = Path(os.environ["XDG_RUNTIME_DIR"]) / "huddle"
    else:
        base = Path(tempfile.gettempdir()) / f"huddle-{os.geteuid()}"
    return base / f"agent-{digest}.lock"


class AgentLock:
    """An exclusive `flock` on `STATE_DIR/agent.lock`, held for the agent's life.

    The kernel drops it when the agent dies, even by SIGKILL, so there is no stale lock to
    clean; the descriptor is close-on-exec, so apps and hooks never inherit it. The file
    holds the agent's pid for `huddle reload`. When the state dir is read-only and has no
    lock file yet, the lock is taken on a file in /run/huddle (root) or $XDG_RUNTIME_DIR
    named after the state dir; `holder_pid` looks at both.
    """

    BUSY_RETRIES = 5  # rides out a `holder_pid` probe, which holds the lock briefly
    BUSY_WAIT_S = 0.02

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = Path(state_dir)
        self.path: Path | None = None  # the file actually locked
        self._fds: list[int] = []

    def acquire(self) -> None:
        """Take the lock or raise StateError naming the running agent."""
        primary = self.state_dir / LOCK_FILE
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError:
            pass  # a read-only parent: the open below says what matters
        fd: int | None
        try:
            fd = os.open(primary, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            fd = self._read_only_primary(primary)
            fallback = _runtime_lock_path(self.state_dir)
            try:
                fallback.parent.mkdir(parents=True, exist_ok=True)
                self._lock(os.open(fallback, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644))
            except OSError as exc:
                self.release()
                raise StateError(
                    f"cannot create a lock for {self.state_dir} there or in "
                    f"{fallback.parent}: {exc.strerror or exc}"
                ) from exc
            self.path = fallback
            if fd is not None:
                self._lock(fd, write_pid=False)
        else:
            self._lock(fd)
            self.path = primary
            if _held(_runtime_lock_path(self.state_dir)):
                self.release()
                self._busy(_runtime_lock_path(self.state_dir))

    @staticmethod
    def _read_only_primary(primary: Path) -> int | None:
        try:
            return os.open(primary, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            return None

    def _lock(self, fd: int, write_pid: bool = True) -> None:
        self._fds.append(fd)
        for attempt in range(self.BUSY_RETRIES):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if attempt + 1 < self.BUSY_RETRIES:
                    time.sleep(self.BUSY_WAIT_S)
        else:
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
            self.release()
            self._busy(path)
        if write_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)

    def _busy(self, path: Path) -> None:
        pid = _read_pid(path)
        who = f"pid {pid}" if pid else "pid unknown"
        raise StateError(f"another huddle agent ({who}) is running on {self.state_dir}")

    def release(self) -> None:
        for fd in self._fds:
            os.close(fd)  # closing drops the flock
        self._fds = []

    @staticmethod
    def holder_pid(state_dir: Path) -> int | None:
        """The pid of the agent holding the lock of `state_dir`, or None when no agent holds
        it (a pid left in the file by a dead agent is not an answer)."""
        for path in (Path(state_dir) / LOCK_FILE, _runtime_lock_path(Path(state_dir))):
            if _held(path):
                pid = _read_pid(path)
                if pid:
                    return pid
        return None


def _held(path: Path) -> bool:
    """True when some process holds a lock on `path` (probed with a shared try-lock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError as exc:
        return exc.errno in (errno.EAGAIN, errno.EACCES)
    finally:
        os.close(fd)  # drops the shared lock when it was taken


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None
