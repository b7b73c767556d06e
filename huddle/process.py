"""One running copy of an app: started, adopted, watched and stopped.

An app runs in its own session (so it is its own process group and has no terminal), with
stdin from /dev/null and stdout+stderr on a pipe the agent reads into the app's capped log
(huddle/applog.py says why, and how the pipe outlives a SIGKILLed agent). The agent can
therefore be SIGKILLed and restarted; the new agent *adopts* the still-running app from the
pid recorded in the state, after checking through /proc that it is the same process (kernel
start time and boot id, so a reused pid is never mistaken for the app), and reopens its
output pipe. Exits are noticed through a pidfd in the event loop (huddle/children.py), which
works for adopted non-children too; no thread, no polling.

Everything an app starts belongs to it, even what leaves its session (a double-forking
daemon, a `setsid` helper): each start carries its own run id in the environment, and when
the app stops, or its main process exits, every remaining process of that run is stopped
too (SIGTERM, a wait, SIGKILL). Stopping is SIGTERM to the whole group, `stop timeout`
seconds, SIGKILL to the group, then the same for the run's leftovers.

Every app's environment also carries `HUDDLE_APP=<tag>`, so an app started by an agent killed
before it could record the pid is still found (`find_tagged`) and never runs twice.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

from huddle.applog import AppLog, LogCapture, open_pipe, reopen_pipe
from huddle.children import (
    RUN_VAR,
    carries,
    clear_run,
    members,
    new_run_id,
    process_table,
    spawn,
    start_time,
    watch_exit,
)
from huddle.errors import HuddleError

TAG_VAR = "HUDDLE_APP"
ENV_PREFIX = "HUDDLE_"  # the agent's own settings; never passed on to a child
LEFTOVER_TIMEOUT_S = 5.0  # SIGTERM grace for what an exited app left running

__all__ = [
    "TAG_VAR",
    "AppProcess",
    "boot_id",
    "child_environment",
    "find_tagged",
    "is_same_process",
    "start_time",
]


def child_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """An app's or hook's environment: the agent's, without the agent's own `HUDDLE_*`
    settings (a broker password must not reach an app), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(extra)
    return env


def boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None  # not Linux: identity falls back to the start time alone


def is_same_process(pid: int, recorded_start: int | None, recorded_boot: str | None) -> bool:
    if not pid or recorded_start is None:
        return False
    if recorded_boot and boot_id() and recorded_boot != boot_id():
        return False
    return start_time(pid) == recorded_start


def find_tagged(tag: str) -> list:
    """Pids of process-group leaders whose environment says they are this app."""
    found = []
    for pid in process_table():
        try:
            if carries(pid, TAG_VAR, tag) and os.getpgid(pid) == pid:
                found.append(pid)
        except OSError:
            continue  # exited meanwhile: not an app of this agent
    return found


class AppProcess:
    """A started or adopted app process; `exited` resolves with the exit code (None if
    adopted, since only a parent can read a status)."""

    def __init__(
        self,
        pid: int,
        exited: asyncio.Future,
        adopted: bool,
        *,
        run_id: str | None = None,
        capture: LogCapture | None = None,
    ) -> None:
        self.pid = pid
        self.exited = exited
        self.adopted = adopted
        self.run_id = run_id
        self.capture = capture
        self.start_ticks = start_time(pid)
        self.boot_id = boot_id()
        self.leftovers: asyncio.Future | None = None
        self.stopping = False
        # registered before any caller awaits `exited`, so it runs first: the app's last
        # output is in its log before the caller's note about the exit
        exited.add_done_callback(self._on_exit)

    @property
    def running(self) -> bool:
        return not self.exited.done()

    @classmethod
    async def start(
        cls, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str], log_path: Path
    ) -> AppProcess:
        """Start argv in cwd with env (build it with `child_environment`), its output going
        to the capped log at log_path; raises HuddleError when it cannot start."""
        run_id = new_run_id()
        read_end, write_end = open_pipe()
        try:
            # the app holds a copy of the read end: the pipe outlives a SIGKILLed agent
            proc = spawn(
                argv,
                cwd=str(cwd),
                env=env,
                stdout=write_end,
                stderr=write_end,
                run_id=run_id,
                pass_fds=(read_end,),
            )
        except OSError as exc:
            os.close(read_end)
            raise HuddleError(f"cannot start `{' '.join(argv)}`: {exc.strerror or exc}") from exc
        finally:
            os.close(write_end)
        applog = AppLog.for_path(log_path)
        applog.ensure_open()
        capture = LogCapture(read_end, applog)
        return cls(proc.pid, watch_exit(proc), adopted=False, run_id=run_id, capture=capture)

    @classmethod
    def adopt(cls, pid: int, log_path: Path | None = None) -> AppProcess | None:
        """Watch a process we did not start (the previous agent's); None if it is gone.
        With log_path, its output pipe is found again and read into that log."""
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
        run_id = _run_id_of(pid)
        capture = None
        if log_path is not None:
            ticks = start_time(pid)
            tree = members(run_id, {pid: ticks} if ticks is not None else None)
            read_end = reopen_pipe([pid] + sorted(set(tree) - {pid}))
            if read_end is not None:
                capture = LogCapture(read_end, AppLog.for_path(log_path))
        return cls(pid, exited, adopted=True, run_id=run_id, capture=capture)

    def signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass  # the group is already gone
        except PermissionError:
            os.kill(self.pid, sig)  # not a group leader we may signal: the process itself

    def _on_exit(self, _: asyncio.Future) -> None:
        if self.capture is not None:
            self.capture.drain()
        if not self.stopping:
            # what the app started and left running (in its group or not) goes with it
            self.leftovers = asyncio.ensure_future(self._clear(LEFTOVER_TIMEOUT_S))

    async def _clear(self, timeout_s: float) -> None:
        self.signal_group(signal.SIGKILL)  # the group first: it needs no /proc scan
        await clear_run(self.run_id, None, timeout_s)

    async def stop(self, timeout_s: float) -> int | None:
        """SIGTERM to the group, wait up to timeout_s, then SIGKILL; then the same for every
        remaining process of this run (out of the group: daemons, setsid helpers), so the
        whole may take up to twice timeout_s. Returns the main process's exit code."""
        if self.running:
            # the tree while the main process still links it (it matters for descendants
            # that cleared their environment of the run id)
            tree = members(
                self.run_id, {self.pid: self.start_ticks} if self.start_ticks is not None else None
            )
            self.stopping = True
            self.signal_group(signal.SIGTERM)
            # a hung (SIGSTOPped) app acts on SIGTERM only once continued, as systemd knows
            self.signal_group(signal.SIGCONT)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), timeout_s)
            except asyncio.TimeoutError:
                self.signal_group(signal.SIGKILL)
                await self.exited
            self.signal_group(signal.SIGKILL)
            await clear_run(self.run_id, tree, timeout_s)
        elif self.leftovers is not None:
            await asyncio.shield(self.leftovers)
        # children that ignored SIGTERM may outlive the leader: clear the whole group
        self.signal_group(signal.SIGKILL)
        if self.capture is not None:
            self.capture.drain()
            self.capture.close()
        return self.exited.result()


def _run_id_of(pid: int) -> str | None:
    """The run id in a process's environment (None for an app started by an older huddle)."""
    prefix = f"{RUN_VAR}=".encode()
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            for item in fh.read().split(b"\0"):
                if item.startswith(prefix):
                    return item[len(prefix) :].decode(errors="replace")
    except OSError:
        pass  # gone or not ours to read: the group and tree still identify it
    return None
