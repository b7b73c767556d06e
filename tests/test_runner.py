"""run_command against real processes: timeouts kill the whole group, errors say what failed."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest

from huddle.errors import CommandError, GitError
from huddle.runner import STDERR_CAP, run_command
from tests.gitutil import alive, wait_until


def run(coro):
    return asyncio.run(coro)


def test_success_returns_output_and_status():
    result = run(run_command(["sh", "-c", "echo out; echo err >&2"]))
    assert (result.returncode, result.stdout, result.stderr) == (0, "out\n", "err\n")
    assert result.argv == ("sh", "-c", "echo out; echo err >&2")


def test_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    script = f"sleep 300 & echo $! > {pidfile}; echo started >&2; wait"
    with pytest.raises(CommandError) as info:
        run(run_command(["sh", "-c", script], timeout_s=0.5))
    message = str(info.value)
    assert "timed out after 0.5 s" in message
    assert "sh -c" in message and "started" in message  # the command line and stderr tail
    grandchild = int(pidfile.read_text())
    wait_until(lambda: not alive(grandchild), 5, "the grandchild sleep to be killed")


def test_command_not_found_names_the_command():
    with pytest.raises(CommandError) as info:
        run(run_command(["huddle-no-such-command-xyz", "--flag"]))
    assert "huddle-no-such-command-xyz --flag" in str(info.value)
    assert "could not start" in str(info.value)


def test_failure_carries_status_and_stderr_tail():
    script = "for i in 1 2 3 4 5; do echo line$i >&2; done; exit 3"
    with pytest.raises(GitError) as info:
        run(run_command(["sh", "-c", script], error_class=GitError))
    err = info.value
    assert err.returncode == 3
    assert "exited with status 3" in str(err)
    assert "line5" in str(err) and "line1" not in str(err)  # the tail, not the head
    assert err.argv == ["sh", "-c", script]


def test_unchecked_failure_returns_the_status():
    result = run(run_command(["sh", "-c", "exit 4"], check=False))
    assert result.returncode == 4


def test_killed_by_signal_is_reported():
    with pytest.raises(CommandError, match="killed by signal 9"):
        run(run_command(["sh", "-c", "kill -9 $$"]))


def test_huge_stderr_keeps_its_tail():
    script = "head -c 300000 /dev/zero | tr '\\0' x >&2; echo; echo LAST-LINE >&2; exit 1"
    with pytest.raises(CommandError) as info:
        run(run_command(["sh", "-c", script]))
    assert len(info.value.stderr) <= STDERR_CAP
    assert info.value.stderr.rstrip().endswith("LAST-LINE")


def test_env_and_cwd_reach_the_command(tmp_path):
    result = run(
        run_command(
            ["sh", "-c", "echo $HUDDLE_T; pwd"],
            cwd=str(tmp_path),
            env={"HUDDLE_T": "yes", "PATH": "/usr/bin:/bin"},
        )
    )
    assert result.stdout.split() == ["yes", str(tmp_path)]


def test_stdin_is_not_a_terminal():
    result = run(run_command(["sh", "-c", "test -t 0 && echo tty || echo notty; cat"], timeout_s=5))
    assert result.stdout == "notty\n"  # and `cat` saw EOF at once: stdin is /dev/null


def test_timeout_holds_when_a_detached_descendant_keeps_the_pipes_open(tmp_path):
    """An ssh ControlPersist master or any `setsid` helper inherits stdout/stderr and may
    live for minutes; the call must still end at its timeout, not when the pipes close."""
    pidfile = tmp_path / "detached.pid"
    script = f"setsid sleep 30 & echo $! > {pidfile}; echo started >&2; sleep 30"
    started = time.monotonic()
    with pytest.raises(CommandError, match="timed out after 0.5 s") as info:
        run(run_command(["sh", "-c", script], timeout_s=0.5))
    assert time.monotonic() - started < 10  # not the 30 s the detached sleep lives
    assert "started" in str(info.value)
    os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_success_is_not_held_up_by_a_detached_descendant(tmp_path):
    pidfile = tmp_path / "detached.pid"
    script = f"setsid sleep 30 & echo $! > {pidfile}; echo done"
    started = time.monotonic()
    result = run(run_command(["sh", "-c", script], timeout_s=20))
    assert result.returncode == 0 and result.stdout == "done\n"
    assert time.monotonic() - started < 10  # neither the 20 s timeout nor the 30 s sleep
    os.kill(int(pidfile.read_text()), signal.SIGKILL)


def test_leftovers_in_the_group_holding_the_pipes_are_killed(tmp_path):
    pidfile = tmp_path / "leftover.pid"
    result = run(
        run_command(["sh", "-c", f"sleep 30 & echo $! > {pidfile}; echo done"], timeout_s=20)
    )
    assert result.stdout == "done\n"
    leftover = int(pidfile.read_text())
    wait_until(lambda: not alive(leftover), 5, "the leftover sleep to be killed")
