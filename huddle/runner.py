"""Child commands (git, install and hook commands) awaited by the loop, never waited on.

`run_command` starts an argument list (never a shell string) in its own session with stdin
from /dev/null, reads its output concurrently with bounded buffers, and enforces a timeout by
killing the whole process group (git spawns helpers such as ssh and remote-https that must die
with it). With `sweep` (hooks and installs), whatever the command leaves running when it ends,
daemons and `setsid` helpers included, is stopped too (huddle/children.py finds them by a run
id in their environment). Failures raise `CommandError` (or the class passed in) carrying the
command line, the reason and the tail of stderr, the git-sync way. `CommandRunner` is the
seam unit tests replace: anything with the same call signature will do.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from huddle.children import clear_run, new_run_id, spawn, watch_exit
from huddle.errors import CommandError

STDOUT_CAP = 4 * 1024 * 1024  # git output huddle parses is tiny; a runaway hook is not kept
STDERR_CAP = 64 * 1024  # keep the tail: the last lines say what went wrong
PIPE_GRACE_S = 1.0  # after an exit, how long output may still arrive on the pipes


@dataclass(frozen=True)
class CommandResult:
    argv: tuple
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float


class CommandRunner(Protocol):
    async def __call__(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout_s: float = 60.0,
        check: bool = True,
        error_class: type[CommandError] = CommandError,
    ) -> CommandResult: ...


class _Child:
    """A started child's pipes and exit, watched straight from the event loop.

    A pidfd tells the loop when the child exits (children.watch_exit); each pipe is a reader
    callback appending to a capped buffer. That is all a one-shot command needs, and it is
    about half the CPU of asyncio's subprocess transport, protocol, stream readers and child
    watcher, which matters because the agent runs one `git ls-remote` per app per poll."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen) -> None:
        self.loop = loop
        self.proc = proc
        self.out, self.err = bytearray(), bytearray()
        self.exited = watch_exit(proc)
        self.drained: asyncio.Future = loop.create_future()
        self.open_fds = []
        assert proc.stdout is not None and proc.stderr is not None  # run_command pipes both
        for stream, buf, cap, keep_tail in (
            (proc.stdout, self.out, STDOUT_CAP, False),
            (proc.stderr, self.err, STDERR_CAP, True),
        ):
            fd = stream.fileno()
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._read, fd, buf, cap, keep_tail)
            self.open_fds.append(fd)

    def _read(self, fd: int, buf: bytearray, cap: int, keep_tail: bool) -> None:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return  # spurious wake-up
        except OSError:
            chunk = b""  # the pipe broke: treat as EOF
        if chunk:
            buf += chunk
            if len(buf) > cap:
                # a tail is what explains a failure; a head is what a parser needs
                if keep_tail:
                    del buf[: len(buf) - cap]
                else:
                    del buf[cap:]
            return
        self._close_fd(fd)

    def _close_fd(self, fd: int) -> None:
        if fd in self.open_fds:
            self.loop.remove_reader(fd)
            self.open_fds.remove(fd)
        if not self.open_fds and not self.drained.done():
            self.drained.set_result(None)

    async def finish_reading(self, grace_s: float) -> None:
        """Give the pipes grace_s to reach EOF after the process is gone, then kill what is
        left of its group, then stop reading.

        A descendant that left the process group (setsid, an ssh ControlPersist master) may
        hold the pipes open for as long as it lives: waiting for EOF would make the timeout
        a lie."""
        if not self.drained.done():
            await asyncio.wait([self.drained], timeout=grace_s)
        if not self.drained.done():
            _kill_group(self.proc.pid)  # holders still in the group are leftovers
            await asyncio.wait([self.drained], timeout=0.2)
        self.close()

    def close(self) -> None:
        """Stop watching: release our pipe ends now."""
        for fd in list(self.open_fds):
            self._close_fd(fd)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone: nothing left to kill


async def _sweep(run_id: str | None) -> None:
    """Stop what a command left running: its group, then the rest of its run."""
    if run_id is not None:
        await clear_run(run_id, None, PIPE_GRACE_S)


async def run_command(
    argv: Sequence[str],
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 60.0,
    check: bool = True,
    error_class: type[CommandError] = CommandError,
    sweep: bool = False,
) -> CommandResult:
    """Run argv to completion under a timeout; raise error_class on failure when check.
    With sweep, every process the command leaves behind is stopped when it ends."""
    argv = tuple(str(a) for a in argv)
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    run_id = new_run_id() if sweep else None
    try:
        proc = spawn(
            argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, run_id=run_id
        )
    except OSError as exc:
        raise error_class(argv, f"could not start: {exc.strerror or exc}") from exc
    child = _Child(loop, proc)
    try:
        # the timeout bounds the process (its group), not whoever still holds its pipes
        await asyncio.wait([child.exited], timeout=timeout_s)
        if not child.exited.done():
            _kill_group(proc.pid)
            await asyncio.wait([child.exited], timeout=PIPE_GRACE_S)
            await _sweep(run_id)
            await child.finish_reading(PIPE_GRACE_S)
            raise error_class(
                argv, f"timed out after {timeout_s:g} s", bytes(child.err).decode(errors="replace")
            )
        returncode = child.exited.result()
        await _sweep(run_id)
        await child.finish_reading(PIPE_GRACE_S)
    except asyncio.CancelledError:
        _kill_group(proc.pid)  # the agent is stopping: leave no child behind
        await asyncio.shield(asyncio.wait([child.exited], timeout=PIPE_GRACE_S))
        await asyncio.shield(_sweep(run_id))
        child.close()
        raise
    result = CommandResult(
        argv,
        returncode,
        bytes(child.out).decode(errors="replace"),
        bytes(child.err).decode(errors="replace"),
        time.monotonic() - started,
    )
    if check and returncode != 0:
        reason = (
            f"was killed by signal {-returncode}"
            if returncode < 0
            else f"exited with status {returncode}"
        )
        raise error_class(argv, reason, result.stderr or result.stdout, returncode)
    return result
