"""An app's log: the agent reads the app's output pipe and writes the capped, rotated file.

Why a pipe read by the agent (the supervisord/pm2 way) and not the app writing the file
itself: only the writer can hold a cap. A file the app appends to can only be rotated by
copy-and-truncate, which copies the growing file inside the loop (9 s at 100 MB/s) and lets
the log grow without bound between two looks. Here every byte passes through `AppLog.write`,
which rotates by renaming (`<app>.log` -> `.1` -> `.2` -> `.3`, a few syscalls) the moment
the next chunk would cross the cap, so no file ever exceeds it. Each readiness of the pipe
reads at most CHUNK bytes, so a flooding app costs the loop one bounded read and write per
turn; the app is slowed to the pace the agent writes at (the pipe applies back-pressure)
instead of stalling anything else.

Surviving the agent: the app inherits a duplicate of the pipe's *read* end (pass_fds), so
when the agent is SIGKILLed the pipe has a reader still and the app never gets SIGPIPE or
EPIPE; its writes fill the (enlarged, PIPE_SIZE) buffer and then block until a new agent
adopts it and reopens the read end through /proc/<pid>/fd/<n> (`reopen_pipe`). Nothing is
recorded: the read end is the descriptor naming the same pipe as the app's stdout, opened
read-only. An app that closes every inherited descriptor loses that guard (only while no
agent runs; it is what a daemon that closes its stdout would do to itself anyway).

A log that cannot be written (read-only or full state dir) never stops the app: output goes
to the agent's stderr (never blocking: what would block is dropped and counted), the problem
is reported once through `on_problem`, and the file is retried every RETRY_S.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import stat
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("huddle.applog")

MAX_BYTES = 10 * 1024 * 1024  # per file; with KEEP rotated files an app's logs stay <= 40 MB
KEEP = 3
CHUNK = 256 * 1024  # the most one turn of the loop reads from one app's pipe
PIPE_SIZE = 1024 * 1024  # what an app can write while no agent reads (a restart)
RETRY_S = 30.0  # how often an unwritable log is tried again
SHRINK_STEP = 1024 * 1024  # how much of a deleted log one loop turn frees (< 0.3 ms)


class AppLog:
    """The capped log file at `path`; one instance per path (`for_path`), shared by the
    app's output capture and the agent's notes so the size it tracks is the file's."""

    _by_path: dict = {}

    def __init__(self, path: Path, max_bytes: int = MAX_BYTES, keep: int = KEEP) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep
        self.fd: int | None = None
        self.size = 0
        self.problem: str | None = None
        self.retry_at = 0.0
        self.dropped = 0
        self.on_problem: Callable[[str | None], None] | None = None
        self._line_start = True  # for the stderr fallback's per-line prefix

    @classmethod
    def for_path(cls, path: Path) -> AppLog:
        path = Path(path)
        found = cls._by_path.get(path)
        if found is None:
            found = cls._by_path[path] = cls(path)
        return found

    # -- writing -------------------------------------------------------------------------
    def ensure_open(self) -> None:
        """Open (create) the file now unless it is open or failed too recently, so a
        problem shows when the app starts, not at its first output."""
        if self.fd is None and time.monotonic() >= self.retry_at:
            self._open()

    def write(self, data: bytes) -> None:
        if not data:
            return
        self.ensure_open()
        if self.fd is not None:
            try:
                self._write_capped(memoryview(data))
                return
            except OSError as exc:
                self._failed(f"cannot write {self.path}: {exc.strerror or exc}")
        self._to_stderr(data)

    def _write_capped(self, view: memoryview) -> None:
        while view:
            room = self.max_bytes - self.size
            if room <= 0 or (len(view) > room and self.size > 0 and len(view) <= self.max_bytes):
                # a chunk that would cross the cap starts the next file (a chunk bigger than a
                # whole file is cut to fill each one exactly)
                self.rotate()
                room = self.max_bytes
            if self.fd is None:
                raise OSError(self.problem or "log file not open")
            written = os.write(self.fd, view[:room])
            self.size += written
            view = view[written:]

    def rotate(self) -> None:
        """<log>.{keep-1} -> .{keep}, ..., <log> -> .1, and a new empty <log>; O(1) in size.

        The oldest file is not deleted by the rename: freeing 10 MB whose pages are being
        written back blocks for ~10 ms (ext4, measured under a flood), so it is renamed
        aside and shrunk a SHRINK_STEP per turn of the loop (see _free_later)."""
        self.close()
        _free_later(self._numbered(self.keep))
        for n in range(self.keep - 1, 0, -1):
            try:
                os.replace(self._numbered(n), self._numbered(n + 1))
            except FileNotFoundError:
                pass  # fewer rotated files than keep so far
        try:
            os.replace(self.path, self._numbered(1))
        except FileNotFoundError:
            pass  # removed by hand: start afresh
        self._open(rotate_big=False)

    def _numbered(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def _open(self, rotate_big: bool = True) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if rotate_big:  # the first open: what a killed agent left half freed goes now
                for stale in self.path.parent.glob(f"{self.path.name}.*.freeing-*"):
                    _shrink_soon(stale)
            self.fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644
            )
            self.size = os.fstat(self.fd).st_size
        except OSError as exc:
            self.close()
            self._failed(f"cannot open {self.path}: {exc.strerror or exc}")
            return
        if rotate_big and self.size >= self.max_bytes:
            self.rotate()  # left over a cap (an older huddle, a hand edit): start anew
            return
        if self.problem is not None:
            log.warning("%s is writable again", self.path)
            self.problem = None
            if self.on_problem is not None:
                self.on_problem(None)

    def _failed(self, message: str) -> None:
        self.close()
        self.retry_at = time.monotonic() + RETRY_S
        if self.problem is None:
            self.problem = message
            log.error("%s; the app's output goes to the agent's stderr meanwhile", message)
            if self.on_problem is not None:
                self.on_problem(message)

    def _to_stderr(self, data: bytes) -> None:
        prefix = f"[{self.path.stem}] ".encode()
        text = data.replace(b"\n", b"\n" + prefix)
        if self._line_start:
            text = prefix + text
        if text.endswith(prefix):
            text = text[: -len(prefix)]
        self._line_start = data.endswith(b"\n")
        if not _STDERR.write(text):
            self.dropped += len(data)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_freeing = [0]  # a counter naming files being freed


def _free_later(path: Path) -> None:
    """Delete path without blocking the loop: renamed to `<path>.freeing-N`, then truncated
    from its end a SHRINK_STEP per loop turn, then unlinked (each step well under 1 ms)."""
    _freeing[0] += 1
    doomed = path.with_name(f"{path.name}.freeing-{_freeing[0]}")
    try:
        os.replace(path, doomed)
    except FileNotFoundError:
        return  # nothing that old yet
    _shrink_soon(doomed)


def _shrink_soon(path: Path) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("cannot free %s: %s", path, exc)
        return
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        os.close(fd)  # called outside the agent's loop: nothing to stall, free it now
        path.unlink(missing_ok=True)
        return
    loop.call_soon(_shrink, loop, fd, path)


def _shrink(loop: asyncio.AbstractEventLoop, fd: int, path: Path) -> None:
    try:
        size = os.fstat(fd).st_size
        if size > 0:
            os.ftruncate(fd, max(0, size - SHRINK_STEP))
            loop.call_soon(_shrink, loop, fd, path)
            return
    except OSError as exc:
        log.warning("cannot shrink %s: %s", path, exc)  # unlinked whole below, then
    os.close(fd)
    try:
        os.unlink(path)
    except OSError as exc:
        log.warning("cannot free %s: %s", path, exc)


class _NonBlockingStderr:
    """The agent's stderr written without ever blocking the loop: through a descriptor of
    its own (reopened via /proc, so O_NONBLOCK does not change the terminal or pipe the
    agent's other writers share), or a socket send with MSG_DONTWAIT (journald's stream)."""

    def __init__(self) -> None:
        self.fd: int | None = None
        self.sock: socket.socket | None = None
        self.ready = False

    def _prepare(self) -> None:
        self.ready = True
        try:
            if stat.S_ISSOCK(os.fstat(2).st_mode):
                self.sock = socket.socket(fileno=os.dup(2))
                return
            self.fd = os.open(
                "/proc/self/fd/2", os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC
            )
        except OSError:
            self.fd = None  # no stderr to reopen (closed, or no /proc): output is dropped

    def write(self, data: bytes) -> bool:
        """True if all of data went out; what would block is dropped."""
        if not self.ready:
            self._prepare()
        try:
            if self.sock is not None:
                return self.sock.send(data, socket.MSG_DONTWAIT) == len(data)
            if self.fd is not None:
                return os.write(self.fd, data) == len(data)
        except OSError:
            return False  # full or gone: dropped, counted by the caller
        return False


_STDERR = _NonBlockingStderr()


# -- the pipe ------------------------------------------------------------------------------
def open_pipe() -> tuple:
    """(read end, write end) of a new app output pipe, the buffer enlarged to PIPE_SIZE."""
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # over the user's pipe quota (pipe-user-pages-soft): the default 64 KB serves
    os.set_blocking(r, False)
    return r, w


def reopen_pipe(pids) -> int | None:
    """A new read end of the pipe an adopted app writes its stdout to, found among the
    descriptors of pids (the app and its descendants); None if the app has none."""
    for pid in pids:
        fd_dir = f"/proc/{pid}/fd"
        try:
            out = os.readlink(f"{fd_dir}/1")
            if not out.startswith("pipe:"):
                continue
            for name in os.listdir(fd_dir):
                if name in ("0", "1", "2") or os.readlink(f"{fd_dir}/{name}") != out:
                    continue
                with open(f"/proc/{pid}/fdinfo/{name}") as fh:
                    flags = next(
                        int(line.split()[1], 8) for line in fh if line.startswith("flags:")
                    )
                if flags & os.O_ACCMODE == os.O_RDONLY:
                    return os.open(f"{fd_dir}/{name}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except (OSError, StopIteration, ValueError):
            continue  # exited meanwhile, or not ours to read
    return None


class LogCapture:
    """Reads an app's output pipe from the loop into its AppLog until every writer is gone."""

    def __init__(self, fd: int, applog: AppLog) -> None:
        self.fd: int | None = fd
        self.log = applog
        self.loop = asyncio.get_running_loop()
        self.loop.add_reader(fd, self._readable)

    def _readable(self) -> None:
        self._read_once()

    def _read_once(self) -> int:
        if self.fd is None:
            return 0
        try:
            data = os.read(self.fd, CHUNK)
        except BlockingIOError:
            return 0  # nothing more for now
        except OSError:
            data = b""  # the pipe broke: treat as EOF
        if not data:
            self.close()
            return 0
        self.log.write(data)
        return len(data)

    def drain(self, limit: int = PIPE_SIZE) -> None:
        """Take what is in the pipe now (bounded), e.g. the last words of an exited app
        before the agent's note about its exit."""
        taken = 0
        while taken < limit:
            n = self._read_once()
            if not n:
                return
            taken += n

    def close(self) -> None:
        if self.fd is not None:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = None
