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


async def _drain(stream: Optional[asyncio.StreamReader], cap: int, keep_tail: bool) -> bytes:
    if stream is None:
        return b""
    buf = bytearray()
    while True:
        chunk = await stream.read(65536)
        if not chunk:
            return bytes(buf)
        buf += chunk
        if len(buf) > cap:
            # a tail is what explains a failure; a head is what a parser needs
            if keep_tail:
                del buf[: len(buf) - cap]
            else:
                del buf[cap:]


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
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=dict(env) if env is not None else None,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, start_new_session=True)
    except OSError as exc:
        raise error_class(argv, f"could not start: {exc.strerror or exc}") from exc
    readers = asyncio.gather(_drain(proc.stdout, STDOUT_CAP, False),
                             _drain(proc.stderr, STDERR_CAP, True))
    try:
        out, err = await asyncio.wait_for(asyncio.shield(readers), timeout_s)
        returncode = await asyncio.wait_for(proc.wait(), max(0.1, timeout_s))
    except asyncio.TimeoutError:
        _kill_group(proc.pid)
        await proc.wait()
        out, err = await readers
        raise error_class(argv, f"timed out after {timeout_s:g} s",
                          err.decode(errors="replace")) from None
    except asyncio.CancelledError:
        _kill_group(proc.pid)  # the agent is stopping: leave no child behind
        await asyncio.shield(proc.wait())
        readers.cancel()
        raise
    result = CommandResult(argv, returncode, out.decode(errors="replace"),
                           err.decode(errors="replace"), time.monotonic() - started)
    if check and returncode != 0:
        reason = (f"was killed by signal {-returncode}" if returncode < 0
                  else f"exited with status {returncode}")
        raise error_class(argv, reason, result.stderr or result.stdout, returncode)
    return result
