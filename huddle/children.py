"""Child processes: the one way huddle spawns, watches, reaps and clears them.

Every command and app starts through `spawn` (Popen in its own session, stdin /dev/null, no
inherited descriptors) and its exit reaches the loop through a pidfd (`watch_exit`): no
thread, no asyncio child watcher, no polling. The agent is a child *subreaper*
(`become_subreaper`): a daemon that double-forks or a helper started with `setsid` is
re-parented to the agent instead of to init, and `reap_orphans` reaps such orphans as they
exit, while leaving the exits of the children `spawn` started to their own watchers.

A process tree is found by a marker in the environment, which descendants inherit even when
they leave the session and the tree: `spawn(..., run_id=...)` puts `RUN_VAR=<run id>` in the
child's environment, and `members` finds every live process carrying it plus the /proc
parent tree below the root (which also covers descendants that cleared their environment
while still attached). `terminate` stops such a set through pidfds, so a pid reused between
the look and the signal is never hit.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence

log = logging.getLogger("huddle.children")

RUN_VAR = "HUDDLE_RUN"  # one value per started app or hook: its process tree's marker
PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>

_spawned: set = set()  # pids spawn started and has not reaped yet: not orphans to reap
_reaping = False  # set by become_subreaper: only then are other children orphans


def new_run_id() -> str:
    return os.urandom(8).hex()  # not `secrets`: it pulls in hmac for nothing


def spawn(
    argv: Sequence[str],
    *,
    cwd: str | None,
    env: Mapping[str, str] | None,
    stdout: int,
    stderr: int,
    run_id: str | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.Popen:
    """Start argv in a new session; raises OSError when it cannot start.

    With run_id, the child's environment carries RUN_VAR=run_id so `members` finds its whole
    tree later. Descriptors other than stdio and pass_fds are closed in the child."""
    if run_id is not None:
        env = {**(os.environ if env is None else env), RUN_VAR: run_id}
    # fork+exec is synchronous in asyncio too; Popen adds no wait of its own
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=None if env is None else dict(env),
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
        pass_fds=tuple(pass_fds),
    )
    _spawned.add(proc.pid)
    return proc


def watch_exit(proc: subprocess.Popen) -> asyncio.Future:
    """A future of the loop resolved with proc's exit status once the child is reaped."""
    loop = asyncio.get_running_loop()
    exited: asyncio.Future = loop.create_future()

    def done(returncode: int) -> None:
        _spawned.discard(proc.pid)
        if not exited.done():
            exited.set_result(returncode)
        reap_orphans()  # an orphan's exit queued behind this child's can be seen now

    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        # no pidfd (kernel < 5.3): a worker thread waits, as asyncio itself would
        waiter = loop.run_in_executor(None, proc.wait)
        waiter.add_done_callback(lambda f: done(proc.returncode))
        return exited

    def on_pidfd() -> None:
        returncode = proc.poll()  # reaps the child: no zombie left behind
        if returncode is None:
            return  # woken before the exit can be reaped; the pidfd stays readable
        loop.remove_reader(pidfd)
        os.close(pidfd)
        done(returncode)

    loop.add_reader(pidfd, on_pidfd)
    return exited


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants and reap them as they exit.

    Call it from inside the running loop (the SIGCHLD handler belongs to that loop). Returns
    False where the kernel refuses or it is not Linux; orphans then go to init as before."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            log.warning("cannot become a child subreaper: %s", os.strerror(ctypes.get_errno()))
            return False
    except (OSError, AttributeError) as exc:
        log.warning("cannot become a child subreaper: %s", exc)
        return False
    global _reaping
    _reaping = True
    asyncio.get_running_loop().add_signal_handler(signal.SIGCHLD, reap_orphans)
    reap_orphans()
    return True


def stop_reaping() -> None:
    """Undo become_subreaper (for a process that stops supervising, such as a test)."""
    global _reaping
    _reaping = False
    try:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGCHLD)
    except RuntimeError:
        pass  # no loop running: no handler to remove
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def reap_orphans() -> None:
    """Reap exited children that spawn did not start (orphans re-parented to us).

    waitid(WNOWAIT) peeks at one exited child without reaping it. If that is one of ours,
    its pidfd watcher reaps it (Popen must read its status) and calls this again. Without
    become_subreaper it does nothing: a child it did not start is then someone else's."""
    while _reaping:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return  # no children at all
        if info is None or info.si_pid in _spawned:
            return
        try:
            os.waitpid(info.si_pid, os.WNOHANG)
        except ChildProcessError:
            return  # reaped meanwhile by whoever owns it


def process_table() -> dict:
    """pid -> (parent pid, start ticks) of every live (non-zombie) process in /proc."""
    table = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # exited while we looked
        # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        rest = stat[stat.rfind(b")") + 2 :].split()
        if len(rest) > 19 and rest[0] != b"Z":
            table[int(entry.name)] = (int(rest[1]), int(rest[19]))
    return table


def carries(pid: int, var: str, value: str) -> bool:
    """True if pid's environment holds var=value (False when gone or unreadable)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return f"{var}={value}".encode() in fh.read().split(b"\0")
    except OSError:
        return False  # exited meanwhile or not ours to read


def members(run_id: str | None, roots: Mapping[int, int] | None = None) -> dict:
    """pid -> start ticks of the live processes of one run: those carrying RUN_VAR=run_id,
    and everything below them or below roots (pid -> start ticks, checked so a reused pid
    is not taken for a root) in the parent tree. The agent itself never counts."""
    table = process_table()
    found = {pid for pid, ticks in (roots or {}).items() if pid in table and table[pid][1] == ticks}
    if run_id is not None:
        found |= {pid for pid in table if carries(pid, RUN_VAR, run_id)}
    children: dict = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(found)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    found.discard(os.getpid())
    return {pid: table[pid][1] for pid in found}


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22); None
    when it is gone or a zombie (a zombie is not a running process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    rest = stat[stat.rfind(b")") + 2 :].split()
    try:
        return None if rest[0] == b"Z" else int(rest[19])
    except (IndexError, ValueError):
        return None


def _open_pidfds(pids: Mapping[int, int]) -> dict:
    """pidfds of the processes that are still the ones seen (same start ticks)."""
    fds = {}
    for pid, ticks in pids.items():
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue  # gone already
        if start_time(pid) == ticks:
            fds[pid] = fd
        else:
            os.close(fd)  # the pid now names another process (or a zombie)
    return fds


def _signal_all(fds: Mapping[int, int], sig: int) -> None:
    for fd in fds.values():
        try:
            signal.pidfd_send_signal(fd, sig)
        except OSError:
            pass  # exited meanwhile: nothing to signal


async def terminate(pids: Mapping[int, int], timeout_s: float) -> list:
    """SIGTERM (and SIGCONT) each process in pids (pid -> start ticks), wait up to timeout_s
    for them to exit, SIGKILL the rest. Returns the pids that had to be killed."""
    fds = _open_pidfds(pids)
    if not fds:
        return []
    loop = asyncio.get_running_loop()
    alive = dict(fds)
    all_gone = loop.create_future()

    def gone(pid: int) -> None:
        loop.remove_reader(alive.pop(pid))
        if not alive and not all_gone.done():
            all_gone.set_result(None)

    for pid, fd in fds.items():
        loop.add_reader(fd, gone, pid)
    try:
        _signal_all(fds, signal.SIGTERM)
        _signal_all(fds, signal.SIGCONT)  # a stopped process acts on SIGTERM only once continued
        await asyncio.wait([all_gone], timeout=timeout_s)
        killed = list(alive)
        if killed:
            _signal_all(alive, signal.SIGKILL)
            await asyncio.wait([all_gone], timeout=1.0)
        return killed
    finally:
        for fd in alive.values():
            loop.remove_reader(fd)
        for fd in fds.values():
            os.close(fd)


async def clear_run(
    run_id: str | None, roots: Mapping[int, int] | None, timeout_s: float, rounds: int = 3
) -> list:
    """Stop every remaining process of a run (see members); a few rounds catch what forks
    while being stopped. Returns the pids found (for the log)."""
    seen: list = []
    for _ in range(rounds):
        found = members(run_id, roots)
        if not found:
            break
        seen.extend(found)
        await terminate(found, timeout_s)
    return seen
