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
import subprocess
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


class _Child:
    """A started child's pipes and exit, watched straight from the event loop.

    A pidfd (Linux >= 5.3) tells the loop when the child exits; each pipe is a reader callback
    appending to a capped buffer. That is all a one-shot command needs, and it is about half
    the CPU of asyncio's subprocess transport, protocol, stream readers and child watcher,
    which matters because the agent runs one `git ls-remote` per app per poll. Where there is
    no pidfd, a worker thread waits for the exit instead (what asyncio itself would do)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen) -> None:
        self.loop = loop
        self.proc = proc
        self.out, self.err = bytearray(), bytearray()
        self.exited: asyncio.Future = loop.create_future()
        self.drained: asyncio.Future = loop.create_future()
        self.open_fds = []
        for stream, buf, cap, keep_tail in ((proc.stdout, self.out, STDOUT_CAP, False),
                                            (proc.stderr, self.err, STDERR_CAP, True)):
            fd = stream.fileno()
            os.set_blocking(fd, False)
            loop.add_reader(fd, self._read, fd, buf, cap, keep_tail)
            self.open_fds.append(fd)
        self.pidfd: Optional[int] = None
        try:
            self.pidfd = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            waiter = loop.run_in_executor(None, proc.wait)  # no pidfd: a thread waits
            waiter.add_done_callback(lambda f: self._set_exit(proc.returncode))
        else:
            loop.add_reader(self.pidfd, self._on_pidfd)

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

    def _on_pidfd(self) -> None:
        self._set_exit(self.proc.poll())  # poll() reaps the child: no zombie left behind

    def _set_exit(self, returncode: Optional[int]) -> None:
        if returncode is None:
            return  # woken before the exit was reaped; the pidfd stays readable
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None
        if not self.exited.done():
            self.exited.set_result(returncode)

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
        """Stop watching: release our pipe ends (and the pidfd) now."""
        for fd in list(self.open_fds):
            self._close_fd(fd)
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()
        if self.pidfd is not None:
            self.loop.remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = None


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
        # fork+exec is synchronous in asyncio too; Popen adds no wait of its own
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except OSError as exc:
        raise error_class(argv, f"could not start: {exc.strerror or exc}") from exc
    child = _Child(loop, proc)
    try:
        # the timeout bounds the process (its group), not whoever still holds its pipes
        await asyncio.wait([child.exited], timeout=timeout_s)
        if not child.exited.done():
            _kill_group(proc.pid)
            await asyncio.wait([child.exited], timeout=PIPE_GRACE_S)
            await child.finish_reading(PIPE_GRACE_S)
            raise error_class(argv, f"timed out after {timeout_s:g} s",
                              bytes(child.err).decode(errors="replace"))
        returncode = child.exited.result()
        await child.finish_reading(PIPE_GRACE_S)
    except asyncio.CancelledError:
        _kill_group(proc.pid)  # the agent is stopping: leave no child behind
        await asyncio.shield(asyncio.wait([child.exited], timeout=PIPE_GRACE_S))
        child.close()
        raise
    result = CommandResult(argv, returncode, bytes(child.out).decode(errors="replace"),
                           bytes(child.err).decode(errors="replace"), time.monotonic() - started)
    if check and returncode != 0:
        reason = (f"was killed by signal {-returncode}" if returncode < 0
                  else f"exited with status {returncode}")
        raise error_class(argv, reason, result.stderr or result.stdout, returncode)
    return result
