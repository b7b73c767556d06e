"""One running copy of an app: started, adopted, watched and stopped.

An app runs in its own session (so it is its own process group and has no terminal), with
stdin from /dev/null and stdout+stderr appended straight to its log file: no pipe that could
fill up and stall the app, and nothing that dies with the agent. The agent can therefore be
SIGKILLed and restarted; the new agent *adopts* the still-running app from the pid recorded in
the state, after checking through /proc that it is the same process (kernel start time and
boot id, so a reused pid is never mistaken for the app). Exits are noticed through a pidfd in
the event loop, which works for adopted non-children too; no thread, no polling.

Stopping is SIGTERM to the whole group, `stop timeout` seconds, then SIGKILL to the group.
Every app's environment carries `HUDDLE_APP=<tag>`, so an app started by an agent killed before
it could record the pid is still found (`find_tagged`) and never runs twice.
"""
from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Mapping, Optional, Sequence

from huddle.errors import HuddleError

TAG_VAR = "HUDDLE_APP"


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """An app's or hook's environment: the agent's, without the agent's own `HUDDLE_*`
    settings (a broker password must not reach an app), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUDDLE_")}
    env.update(extra)
    return env


def boot_id() -> Optional[str]:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None  # not Linux: identity falls back to the start time alone


def start_time(pid: int) -> Optional[int]:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    rest = stat[stat.rfind(")") + 2:].split()
    try:
        if rest[0] == "Z":
            return None  # a zombie is not a running app
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def is_same_process(pid: int, recorded_start: Optional[int], recorded_boot: Optional[str]) -> bool:
    if not pid or recorded_start is None:
        return False
    if recorded_boot and boot_id() and recorded_boot != boot_id():
        return False
    return start_time(pid) == recorded_start


def find_tagged(tag: str) -> list:
    """Pids of process-group leaders whose environment says they are this app."""
    needle = f"{TAG_VAR}={tag}".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if needle not in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                continue
            if os.getpgid(pid) == pid and start_time(pid) is not None:
                found.append(pid)
        except OSError:
            continue  # exited meanwhile or not ours to read: not an app of this agent
    return found


class AppProcess:
    """A started or adopted app process; `exited` resolves with the exit code (None if
    adopted, since only a parent can read a status)."""

    def __init__(self, pid: int, exited: "asyncio.Future", adopted: bool) -> None:
        self.pid = pid
        self.exited = exited
        self.adopted = adopted
        self.start_ticks = start_time(pid)
        self.boot_id = boot_id()

    @property
    def running(self) -> bool:
        return not self.exited.done()

    @classmethod
    async def start(cls, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str],
                    log_path: Path) -> "AppProcess":
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, cwd=str(cwd), env=dict(env), stdin=asyncio.subprocess.DEVNULL,
                stdout=log_fd, stderr=log_fd, start_new_session=True)
        except OSError as exc:
            raise HuddleError(f"cannot start `{' '.join(argv)}`: {exc.strerror or exc}") from exc
        finally:
            os.close(log_fd)
        exited = asyncio.ensure_future(proc.wait())
        return cls(proc.pid, exited, adopted=False)

    @classmethod
    def adopt(cls, pid: int) -> Optional["AppProcess"]:
        """Watch a process we did not start (the previous agent's); None if it is gone."""
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(pid)
        except (ProcessLookupError, AttributeError, OSError):
            return None
        exited: asyncio.Future = loop.create_future()

        def on_exit() -> None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(pidfd, on_exit)
        return cls(pid, exited, adopted=True)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass  # the group is already gone
        except PermissionError:
            os.kill(self.pid, sig)  # not a group leader we may signal: the process itself

    async def stop(self, timeout_s: float) -> Optional[int]:
        """SIGTERM to the group, wait up to timeout_s, then SIGKILL; returns the exit code."""
        if self.running:
            self.signal_group(signal.SIGTERM)
            # a hung (SIGSTOPped) app acts on SIGTERM only once continued, as systemd knows
            self.signal_group(signal.SIGCONT)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout_s)
            except asyncio.TimeoutError:
                self.signal_group(signal.SIGKILL)
                await self.exited
        # children that ignored SIGTERM may outlive the leader: clear the whole group
        self.signal_group(signal.SIGKILL)
        return self.exited.result()


def rotate_log(log_path: Path, max_bytes: int, keep: int = 3) -> bool:
    """Copy-and-truncate rotation: the app keeps its O_APPEND descriptor and writes on at
    offset 0, so neither a restart nor a signal is needed. Returns True if it rotated."""
    try:
        if log_path.stat().st_size <= max_bytes:
            return False
    except FileNotFoundError:
        return False
    for n in range(keep - 1, 0, -1):
        older = log_path.with_name(f"{log_path.name}.{n}")
        if older.exists():
            os.replace(older, log_path.with_name(f"{log_path.name}.{n + 1}"))
    with open(log_path, "rb") as src, open(log_path.with_name(f"{log_path.name}.1"), "wb") as dst:
        while True:
            chunk = src.read(1 << 20)
            if not chunk:
                break
            dst.write(chunk)
    os.truncate(log_path, 0)
    return True
