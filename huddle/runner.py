"""Child commands (git, install and hook commands) awaited by the loop, never waited on.

`run_command` starts an argument list (never a shell string) in its own session with stdin
from /dev/null, reads its output concurrently with bounded buffers, and enforces a timeout by
killing the whole process group (git spawns helpers such as ssh and remote-https that must die
with it). Failures raise `CommandError` (or the class passed in) carrying the command line,
the reason and the tail of stderr, the git-sync way. `CommandRunner` is the seam unit tests
replace: anything with the same call signature will do.
"""
from __future__ import annotations

import asyncio
import os
import signal
import time
from dataclasses import dataclass
from typing import Mapping, Optional, Protocol, Sequence, Type

from huddle.errors import CommandError

STDOUT_CAP = 4 * 1024 * 1024   # git output huddle parses is tiny; a runaway hook is not kept
STDERR_CAP = 64 * 1024         # keep the tail: the last lines say what went wrong
PIPE_GRACE_S = 1.0             # after an exit, how long output may still arrive on the pipes


@dataclass(frozen=True)
class CommandResult:
    argv: tuple
    returncode: int
    stdout: str
    stderr: str
    elapsed_s: float


class CommandRunner(Protocol):
    async def __call__(self, argv: Sequence[str], *, cwd: Optional[str] = None,
                       env: Optional[Mapping[str, str]] = None, timeout_s: float = 60.0,
                       check: bool = True,
                       error_class: Type[CommandError] = CommandError) -> CommandResult: ...


async def _drain(stream: Optional[asyncio.StreamReader], buf: bytearray, cap: int,
                 keep_tail: bool) -> None:
    """Read stream to EOF into buf (kept by the caller, so a cancelled read keeps its data)."""
    if stream is None:
        return
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return
        buf += chunk
        if len(buf) > cap:
            # a tail is what explains a failure; a head is what a parser needs
            if keep_tail:
                del buf[: len(buf) - cap]
            else:
                del buf[cap:]


class _ExitProtocol(asyncio.subprocess.SubprocessStreamProtocol):
    """Resolves `exited` with the status as soon as the process exits. `Process.wait()` waits
    for the pipes to close as well, which a descendant that left the group may delay forever."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(limit=2 ** 16, loop=loop)
        self.exited: asyncio.Future = loop.create_future()

    def process_exited(self) -> None:
        returncode = self._transport.get_returncode()  # the base class may drop _transport
        super().process_exited()
        if not self.exited.done():
            self.exited.set_result(returncode)


async def _finish_reading(transport, pid: int, readers: list, grace_s: float) -> None:
    """Give the readers grace_s to reach EOF after the process is gone, then kill what is
    left of its group, then stop reading.

    A descendant that left the process group (setsid, an ssh ControlPersist master) may hold
    the pipes open for as long as it lives: waiting for EOF would make the timeout a lie."""
    done, pending = await asyncio.wait(readers, timeout=grace_s)
    if not pending:
        return
    _kill_group(pid)  # holders still in the group are leftovers, as at a timeout
    done, pending = await asyncio.wait(pending, timeout=0.2)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    transport.close()  # release our pipe ends now rather than when the holder exits


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # already gone: nothing left to kill


async def run_command(argv: Sequence[str], *, cwd: Optional[str] = None,
                      env: Optional[Mapping[str, str]] = None, timeout_s: float = 60.0,
                      check: bool = True,
                      error_class: Type[CommandError] = CommandError) -> CommandResult:
    """Run argv to completion under a timeout; raise error_class on failure when check."""
    argv = tuple(str(a) for a in argv)
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    try:
        transport, protocol = await loop.subprocess_exec(
            lambda: _ExitProtocol(loop), *argv, cwd=cwd,
            env=dict(env) if env is not None else None, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True)
    except OSError as exc:
        raise error_class(argv, f"could not start: {exc.strerror or exc}") from exc
    pid = transport.get_pid()
    out, err = bytearray(), bytearray()
    readers = [asyncio.ensure_future(_drain(protocol.stdout, out, STDOUT_CAP, False)),
               asyncio.ensure_future(_drain(protocol.stderr, err, STDERR_CAP, True))]
    try:
        # the timeout bounds the process (its group), not whoever still holds its pipes
        await asyncio.wait([protocol.exited], timeout=timeout_s)
        if not protocol.exited.done():
            _kill_group(pid)
            await asyncio.wait([protocol.exited], timeout=PIPE_GRACE_S)
            await _finish_reading(transport, pid, readers, PIPE_GRACE_S)
            raise error_class(argv, f"timed out after {timeout_s:g} s",
                              bytes(err).decode(errors="replace"))
        returncode = protocol.exited.result()
        await _finish_reading(transport, pid, readers, PIPE_GRACE_S)
    except asyncio.CancelledError:
        _kill_group(pid)  # the agent is stopping: leave no child behind
        for task in readers:
            task.cancel()
        await asyncio.shield(asyncio.wait([protocol.exited], timeout=PIPE_GRACE_S))
        transport.close()
        raise
    result = CommandResult(argv, returncode, bytes(out).decode(errors="replace"),
                           bytes(err).decode(errors="replace"), time.monotonic() - started)
    if check and returncode != 0:
        reason = (f"was killed by signal {-returncode}" if returncode < 0
                  else f"exited with status {returncode}")
        raise error_class(argv, reason, result.stderr or result.stdout, returncode)
    return result
