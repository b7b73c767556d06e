"""AppProcess against real processes: log capture, group stop, SIGKILL escalation, adoption
through a pidfd, identity by /proc start time, the HUDDLE_APP tag scan, log rotation."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from huddle.process import TAG_VAR, AppProcess, boot_id, find_tagged, is_same_process, start_time
from tests.gitutil import alive, wait_until

PY = sys.executable


def test_start_logs_output_and_stop_terminates_the_group(tmp_path):
    log = tmp_path / "logs" / "app.log"
    pidfile = tmp_path / "child.pid"
    script = (
        f"import subprocess, time; p = subprocess.Popen(['sleep', '300']); "
        f"open({str(pidfile)!r}, 'w').write(str(p.pid)); "
        f"print('hello out', flush=True); import sys; print('hello err', file=sys.stderr, "
        f"flush=True); time.sleep(300)"
    )

    async def main():
        proc = await AppProcess.start(
            [PY, "-c", script], cwd=tmp_path, env={**os.environ, TAG_VAR: "t:x"}, log_path=log
        )
        assert proc.running and not proc.adopted
        assert os.getpgid(proc.pid) == proc.pid and os.getsid(proc.pid) == proc.pid
        await asyncio.wait_for(
            _until(lambda: pidfile.exists() and "hello err" in log.read_text()), 10
        )
        code = await proc.stop(5)
        return proc, code

    proc, code = asyncio.run(main())
    assert code == -signal.SIGTERM
    text = log.read_text()
    assert "hello out" in text and "hello err" in text
    child = int(pidfile.read_text())
    wait_until(lambda: not alive(child), 5, "the app's child to be gone with its group")


def test_stop_escalates_to_sigkill_when_sigterm_is_ignored(tmp_path):
    script = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ready', flush=True); time.sleep(300)"
    )
    log = tmp_path / "app.log"

    async def main():
        proc = await AppProcess.start(
            [PY, "-c", script], cwd=tmp_path, env=dict(os.environ), log_path=log
        )
        await asyncio.wait_for(_until(lambda: "ready" in log.read_text()), 10)
        started = time.monotonic()
        code = await proc.stop(0.5)
        return code, time.monotonic() - started

    code, took = asyncio.run(main())
    assert code == -signal.SIGKILL
    assert took >= 0.5  # it did wait the stop timeout before killing


def test_start_of_a_missing_program_is_a_huddle_error(tmp_path):
    from huddle.errors import HuddleError

    async def main():
        await AppProcess.start(
            ["/nonexistent/program", "x"], cwd=tmp_path, env={}, log_path=tmp_path / "a.log"
        )

    try:
        asyncio.run(main())
    except HuddleError as exc:
        assert "/nonexistent/program x" in str(exc)
    else:
        raise AssertionError("expected HuddleError")


def test_adopt_watches_a_process_it_did_not_start():
    other = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:

        async def main():
            proc = AppProcess.adopt(other.pid)
            assert proc is not None and proc.adopted and proc.running
            assert proc.start_ticks == start_time(other.pid)
            os.kill(other.pid, signal.SIGKILL)
            return await asyncio.wait_for(proc.exited, 5)

        assert asyncio.run(main()) is None  # only a parent can read the status
    finally:
        other.kill()
        other.wait()


def test_adopt_of_a_gone_pid_is_none():
    gone = subprocess.Popen(["true"])
    gone.wait()

    async def main():
        return AppProcess.adopt(gone.pid)

    assert asyncio.run(main()) is None


def test_identity_is_start_time_and_boot_id():
    p = subprocess.Popen(["sleep", "300"])
    try:
        ticks = start_time(p.pid)
        assert ticks is not None
        assert is_same_process(p.pid, ticks, boot_id())
        assert not is_same_process(p.pid, ticks + 1, boot_id())  # pid reused by another
        assert not is_same_process(p.pid, ticks, "another-boot")  # recorded before a reboot
        assert not is_same_process(p.pid, None, None)
    finally:
        p.kill()
        p.wait()
    assert not is_same_process(p.pid, ticks, boot_id())  # gone


def test_zombie_has_no_start_time():
    p = subprocess.Popen(["true"])
    wait_until(lambda: not alive(p.pid), 5, "true to exit")
    assert start_time(p.pid) is None  # a zombie is not a running app
    p.wait()


def test_find_tagged_finds_group_leaders_with_the_tag():
    tag = f"test{os.getpid()}:app"
    env = {**os.environ, TAG_VAR: tag}
    leader = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], env=env, start_new_session=True)
    other = subprocess.Popen(
        ["sleep", "300"], env={**os.environ, TAG_VAR: tag + "-other"}, start_new_session=True
    )
    try:
        # the sh's sleep child carries the tag too but is not a group leader: one hit only
        wait_until(lambda: find_tagged(tag) == [leader.pid], 5, "the tagged leader")
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        other.kill()
        leader.wait()
        other.wait()


async def _until(pred, interval_s=0.02):
    while not pred():
        await asyncio.sleep(interval_s)


def test_stop_of_a_hung_sigstopped_app_does_not_wait_for_the_kill_timeout(tmp_path):
    """A SIGSTOPped app ignores SIGTERM until continued; stop() must continue it so it exits
    on SIGTERM instead of waiting the whole stop timeout for SIGKILL."""
    import asyncio
    import os
    import signal
    import sys

    from huddle.process import AppProcess

    async def main():
        proc = await AppProcess.start(
            [sys.executable, "-c", "import time; time.sleep(60)"],
            cwd=tmp_path,
            env=dict(os.environ),
            log_path=tmp_path / "app.log",
        )
        os.killpg(proc.pid, signal.SIGSTOP)
        return await proc.stop(timeout_s=60)

    code = asyncio.run(asyncio.wait_for(main(), 30))
    assert code == -signal.SIGTERM  # ended by SIGTERM, not by the SIGKILL escalation
