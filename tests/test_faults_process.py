"""Process and log faults against real processes and a real filesystem: what an
app or a hook leaves behind (a double-forking daemon, a `setsid` helper) is stopped with it
and never piles up per deploy, orphans re-parented to the subreaper agent are reaped, the
agent's HUDDLE_* settings never reach a child, a flooding app's log holds its cap, an app
survives its agent's SIGKILL and its logging resumes on adoption, and a log directory that
cannot be written never stops the app."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from huddle import applog
from huddle.applog import AppLog
from huddle.children import become_subreaper, stop_reaping
from huddle.hooks import run_hooks
from huddle.process import TAG_VAR, AppProcess, child_environment
from tests.gitutil import (
    Origin,
    alive,
    app_config,
    free_port,
    http_get,
    tagged_pids,
    tmpfs,
    wait_until,
    write_config,
)

PY = sys.executable
pytestmark = pytest.mark.timeout(120)

# An app that leaves two processes outside its group: a classic double-forking daemon (fork,
# setsid, fork, the middle one exits) and a helper started with `setsid`. Each writes its pid.
# The app itself lives argv[2] seconds (default 300), then exits with status 5.
LEAVER = textwrap.dedent("""
    import os, subprocess, sys, time
    out = sys.argv[1]
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            open(out + ".daemon", "w").write(str(os.getpid()))
            time.sleep(300)
        os._exit(0)
    helper = subprocess.Popen(["setsid", "sleep", "300"])
    open(out + ".helper", "w").write(str(helper.pid))
    print("serving", flush=True)
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 300)
    sys.exit(5)
""")


def leftovers(base: Path) -> list:
    """The daemon's and the helper's pids, once both are written."""
    files = [Path(f"{base}.daemon"), Path(f"{base}.helper")]
    wait_until(
        lambda: all(f.exists() and f.read_text() for f in files),
        10,
        "the daemon and the helper to start",
    )
    return [int(f.read_text()) for f in files]


def log_sizes(logs: Path, freeing: bool = False) -> list:
    """Sizes of the log files in a logs dir (with freeing, of the rotated-out files still
    being freed instead); a file renamed away while we look is skipped."""
    sizes = []
    for f in list(logs.iterdir()) if logs.exists() else []:
        if (".freeing-" in f.name) != freeing:
            continue
        try:
            sizes.append(f.stat().st_size)
        except FileNotFoundError:
            continue  # rotated away between the listing and the stat
    return sizes


def gone_and_reaped(pid: int) -> bool:
    """Not alive, and not a zombie either: /proc/<pid> is gone (someone reaped it)."""
    return not Path(f"/proc/{pid}").exists()


@pytest.fixture
def subreaper():
    """This test process as the agent would be: a child subreaper reaping its orphans."""

    async def become():
        assert become_subreaper()

    loop = asyncio.new_event_loop()
    loop.run_until_complete(become())
    yield loop
    loop.run_until_complete(_undo())
    loop.close()


async def _undo():
    stop_reaping()


def app_env(tag: str, **extra) -> dict:
    return child_environment({TAG_VAR: tag, **extra})


async def start_leaver(tmp_path: Path, tag: str, n: int) -> tuple:
    base = tmp_path / f"run{n}"
    proc = await AppProcess.start(
        [PY, "-c", LEAVER, str(base)],
        cwd=tmp_path,
        env=app_env(tag),
        log_path=tmp_path / "logs" / "app.log",
    )
    return proc, base


def test_stop_stops_a_double_forked_daemon_and_a_setsid_helper_and_reaps_them(tmp_path, subreaper):
    tag = f"faults{os.getpid()}:leaver"

    async def main():
        proc, base = await start_leaver(tmp_path, tag, 0)
        daemon, helper = await asyncio.to_thread(leftovers, base)
        assert os.getsid(daemon) != proc.pid and os.getsid(helper) != proc.pid  # out of the group
        # the daemon's parent exited: it was re-parented to us, the subreaper, not to init
        assert (
            int(Path(f"/proc/{daemon}/stat").read_text().rsplit(")", 1)[1].split()[1])
            == os.getpid()
        )
        await proc.stop(2)
        # give the SIGCHLD handler turns of the loop to reap the re-parented daemon
        for _ in range(100):
            if gone_and_reaped(daemon):
                break
            await asyncio.sleep(0.05)
        return daemon, helper

    daemon, helper = subreaper.run_until_complete(main())
    assert not alive(daemon) and not alive(helper)
    assert gone_and_reaped(daemon)  # no zombie left with the agent
    assert tagged_pids(tag) == []


def test_redeploys_never_pile_up_left_behind_processes(tmp_path, subreaper):
    tag = f"faults{os.getpid()}:deploys"

    async def main():
        previous = []
        proc = None
        for n in range(5):  # five deploys: stop the old copy, start the new one
            if proc is not None:
                await proc.stop(2)
            proc, base = await start_leaver(tmp_path, tag, n)
            previous.append(await asyncio.to_thread(leftovers, base))
        running = set(tagged_pids(tag))
        await proc.stop(2)
        return previous, running, proc

    previous, running, last = subreaper.run_until_complete(main())
    # only the last deploy's app, daemon and helper (and the daemon's exited middle parent
    # is gone) ran at the end; every earlier one was stopped
    assert running == {last.pid, *previous[-1]}
    for pids in previous:
        assert not any(alive(p) for p in pids)
    assert tagged_pids(tag) == []


def test_an_app_that_exits_takes_what_it_left_behind_with_it(tmp_path, subreaper):
    tag = f"faults{os.getpid()}:exits"

    async def main():
        base = tmp_path / "exits"
        proc = await AppProcess.start(
            [PY, "-c", LEAVER, str(base), "1"],
            cwd=tmp_path,
            env=app_env(tag),
            log_path=tmp_path / "app.log",
        )
        daemon, helper = await asyncio.to_thread(leftovers, base)
        code = await asyncio.wait_for(proc.exited, 10)
        await asyncio.wait_for(proc.stop(2), 15)  # after an exit: waits for the clearing
        return code, daemon, helper

    code, daemon, helper = subreaper.run_until_complete(main())
    assert code == 5
    assert not alive(daemon) and not alive(helper)


def test_hooks_and_installs_leave_no_daemon_behind(tmp_path):
    pidfile = tmp_path / "hook"
    (tmp_path / "leaver.py").write_text(LEAVER)
    script = (
        f"setsid sleep 300 & echo $! > {pidfile}.helper; "
        f"{PY} leaver.py {pidfile}.x & sleep 1; echo ok"
    )
    log = tmp_path / "logs" / "app.log"

    async def main():
        await run_hooks(
            [("sh", "-c", script)], "install", cwd=tmp_path, env=child_environment({}), log_path=log
        )

    asyncio.run(main())
    helper = int(Path(f"{pidfile}.helper").read_text())
    daemon = int(Path(f"{pidfile}.x.daemon").read_text())
    wait_until(
        lambda: not alive(helper) and not alive(daemon),
        10,
        "the hook's helper and daemon to be stopped",
    )
    assert "--- huddle: install: sh -c" in log.read_text() and "ok" in log.read_text()


def test_the_agents_huddle_settings_never_reach_an_app_or_a_hook(tmp_path, monkeypatch):
    secret = "s3cret-pass"
    monkeypatch.setenv("HUDDLE_MQTT", f"mqtt://user:{secret}@broker:1883")
    monkeypatch.setenv("HUDDLE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HUDDLE_DEVICE_ID", "dev-1")
    monkeypatch.setenv("HUDDLE_KEY", "manifest-key")
    monkeypatch.setenv("HUDDLE_LOG_LEVEL", "debug")
    monkeypatch.setenv("KEEP_ME", "yes")
    env = child_environment(
        {TAG_VAR: "t:env", "HUDDLE_APP_NAME": "env", "HUDDLE_COMMIT": "abc", "GREETING": "hi"}
    )
    log = tmp_path / "app.log"
    dump = [PY, "-c", "import os; print(sorted(os.environ.items()))"]

    async def main():
        proc = await AppProcess.start(dump, cwd=tmp_path, env=env, log_path=log)
        await asyncio.wait_for(proc.exited, 10)
        await proc.stop(1)
        await run_hooks([tuple(dump)], "post-pull", cwd=tmp_path, env=env, log_path=log)

    asyncio.run(main())
    text = log.read_text()
    assert text.count("('GREETING', 'hi')") == 2 and text.count("('KEEP_ME', 'yes')") == 2
    assert text.count("('HUDDLE_APP_NAME', 'env')") == 2
    assert secret not in text and "manifest-key" not in text
    for name in (
        "HUDDLE_MQTT",
        "HUDDLE_STATE_DIR",
        "HUDDLE_DEVICE_ID",
        "HUDDLE_KEY",
        "HUDDLE_LOG_LEVEL",
    ):
        assert f"'{name}'" not in text


def test_a_flooding_app_never_takes_the_logs_over_their_cap(tmp_path):
    logs = tmp_path / "logs"
    log = logs / "flood.log"
    cap = 256 * 1024
    AppLog.for_path(log).max_bytes = cap
    flood = [
        PY,
        "-c",
        "import sys\nline = b'x' * 99 + b'\\n'\nwhile True: sys.stdout.buffer.write(line * 1000)",
    ]

    def logs_size() -> tuple:
        sizes = log_sizes(logs)
        return max(sizes, default=0), sum(sizes), len(sizes)

    async def main():
        proc = await AppProcess.start(flood, cwd=tmp_path, env=child_environment({}), log_path=log)
        peak_file = peak_total = peak_freeing = 0
        written = 0
        for _ in range(200):  # about 2 s of flooding, sampled every 10 ms
            await asyncio.sleep(0.01)
            biggest, total, count = logs_size()
            peak_file, peak_total = max(peak_file, biggest), max(peak_total, total)
            peak_freeing = max(peak_freeing, sum(log_sizes(logs, freeing=True)))
            written = max(written, count)
        assert proc.running  # throttled by the pipe, never killed by it
        await proc.stop(2)
        return peak_file, peak_total, peak_freeing, written

    peak_file, peak_total, peak_freeing, files = asyncio.run(main())
    assert files == 4  # it rotated through .1 .. .3
    assert peak_file <= cap
    assert peak_total <= 4 * cap
    assert peak_freeing <= cap  # the oldest file is freed a step per loop turn, not kept
    for f in logs.iterdir():  # every file holds whole lines of the app's output
        assert set(f.read_bytes()) <= {ord("x"), ord("\n")}


AGENT_SCRIPT = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from huddle.process import AppProcess, child_environment

    async def main():
        app = ("import itertools, sys, time\\n"
               "for n in itertools.count():\\n"
               "    print(n, flush=True)\\n"
               "    time.sleep(0.002)\\n")
        proc = await AppProcess.start([sys.executable, "-c", app], cwd=Path("."),
                                      env=child_environment({}), log_path=Path(sys.argv[1]))
        print(proc.pid, flush=True)
        await asyncio.sleep(300)

    asyncio.run(main())
""")


def test_an_app_outlives_its_sigkilled_agent_and_its_log_resumes_on_adoption(tmp_path):
    log = tmp_path / "logs" / "counter.log"
    agent = subprocess.Popen(
        [PY, "-c", AGENT_SCRIPT, str(log)],
        stdout=subprocess.PIPE,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
        start_new_session=True,
    )
    pid = int(agent.stdout.readline())
    try:
        wait_until(lambda: log.exists() and log.read_text().count("\n") > 50, 10, "the first lines")
        agent.kill()
        agent.wait()
        time.sleep(1.0)  # the app writes on with no agent reading its pipe
        assert alive(pid)  # no SIGPIPE, no EPIPE exit
        before = log.read_text().count("\n")

        async def adopt_and_watch():
            proc = AppProcess.adopt(pid, log_path=log)
            assert proc is not None and proc.capture is not None
            for _ in range(500):
                if log.read_text().count("\n") > before + 500:
                    break
                await asyncio.sleep(0.01)
            await proc.stop(2)

        asyncio.run(adopt_and_watch())
    finally:
        for sig_target in (pid,):
            try:
                os.killpg(sig_target, signal.SIGKILL)
            except OSError:
                pass  # stopped already
    numbers = [int(line) for line in log.read_text().split()]
    assert len(numbers) > before + 500  # logging resumed after the adoption
    # nothing written while no agent ran was lost: the pipe held it until the new reader
    assert numbers == list(range(len(numbers)))


FALLBACK_SCRIPT = textwrap.dedent("""
    import asyncio, sys, time
    from pathlib import Path
    from huddle import applog
    from huddle.applog import AppLog
    from huddle.process import AppProcess, child_environment

    applog.RETRY_S = 0.2
    log = Path(sys.argv[1])
    problems = []
    AppLog.for_path(log).on_problem = problems.append

    async def main():
        app = ("import sys, time\\n"
               "for n in range(int(sys.argv[1])):\\n"
               "    print('line', n, flush=True)\\n"
               "    time.sleep(0.05)\\n")
        proc = await AppProcess.start([sys.executable, "-c", app, sys.argv[2]], cwd=Path("."),
                                      env=child_environment({}), log_path=log)
        print("started", proc.pid, flush=True)
        code = await asyncio.wait_for(proc.exited, 30)
        await proc.stop(1)
        print("exit", code, "problems", problems, flush=True)

    asyncio.run(main())
""")


@pytest.fixture
def small_tmpfs(tmp_path):
    with tmpfs(tmp_path / "state", "1m") as mnt:
        yield mnt


def run_fallback_agent(tmp_path: Path, log: Path, lines: int, steps=()) -> tuple:
    agent = subprocess.Popen(
        [PY, "-c", FALLBACK_SCRIPT, str(log), str(lines)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    assert agent.stdout.readline().startswith("started")
    for step in steps:
        step()
    out, err = agent.communicate(timeout=60)
    return out, err


def test_a_read_only_log_dir_sends_output_to_the_agents_stderr_and_says_so_once(
    tmp_path, small_tmpfs
):
    subprocess.run(["mount", "-o", "remount,ro", str(small_tmpfs)], check=True)
    log = small_tmpfs / "logs" / "app.log"
    out, err = run_fallback_agent(tmp_path, log, 5)
    assert "exit 0" in out  # the app ran to its end
    for n in range(5):
        assert f"[app] line {n}\n" in err
    assert err.count("cannot open") == 1 and "Read-only file system" in err
    assert out.count("Read-only file system") == 1  # on_problem was told once


def test_a_full_log_dir_falls_back_to_stderr_and_heals_when_space_returns(tmp_path, small_tmpfs):
    log = small_tmpfs / "logs" / "app.log"
    log.parent.mkdir()
    filler = small_tmpfs / "filler"

    def fill():
        with open(filler, "wb") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass  # full: what this step is for

    def wait_for_fallback_then_free():
        time.sleep(0.8)  # lines go to stderr meanwhile
        filler.unlink()

    fill()
    out, err = run_fallback_agent(tmp_path, log, 40, [wait_for_fallback_then_free])
    assert "exit 0" in out
    assert "[app] line" in err  # some lines went to the agent's stderr while full
    text = log.read_text()
    assert "line 39\n" in text  # and the file took the output again once space returned
    assert "problems [" in out and ", None]" in out  # told of the fault, then of the healing


# -- through `huddle run` ------------------------------------------------------------------


def wrapped_app(tmp_path: Path, before_app: str, **sections) -> tuple:
    """An origin with the test web app started by `sh -c` after the shell line before_app."""
    origin = Origin(tmp_path / "remotes", "web")
    port = free_port()
    start = ["sh", "-c", f"{before_app}\nexec {PY} app.py {port}"]
    config = app_config(
        origin.url, tmp_path / "apps" / "web", port, application={"start": start}, **sections
    )
    return origin, port, write_config(tmp_path / "configs" / "web.json", config)


def test_run_stops_what_each_deploy_left_behind_and_nothing_piles_up(tmp_path, agent_factory):
    pids = tmp_path / "helpers.pid"
    origin, port, config = wrapped_app(tmp_path, f"setsid sleep 300 & echo $! >> {pids}")
    agent = agent_factory().start(config)

    def helpers() -> list[int]:
        return [int(p) for p in pids.read_text().split()] if pids.exists() else []

    for n in range(1, 6):  # five deploys
        agent.wait_good("web", origin.app_commit(f"v{n}"))
        wait_until(lambda n=n: len(helpers()) >= n, 10, f"deploy {n}'s helper")
        wait_until(
            lambda: sum(alive(p) for p in helpers()) == 1,
            10,
            "the earlier deploys' helpers to be stopped",
        )
    assert alive(helpers()[-1])
    assert agent.stop() == 0
    wait_until(lambda: not any(alive(p) for p in helpers()), 10, "every helper stopped")


def test_run_keeps_the_agents_huddle_settings_from_the_app(tmp_path, agent_factory):
    origin, port, config = wrapped_app(tmp_path, "true")
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(
        config,
        env={
            "HUDDLE_KEY": "manifest-key",
            "HUDDLE_DEVICE_ID": "dev-1",
            "HUDDLE_LOG_LEVEL": "debug",
        },
    )
    agent.wait_good("web", v1)
    assert http_get(port, "/env/HUDDLE_APP_NAME") == (200, "web")
    for name in ("HUDDLE_KEY", "HUDDLE_DEVICE_ID", "HUDDLE_LOG_LEVEL"):
        assert http_get(port, f"/env/{name}") == (200, ""), name
    assert agent.stop() == 0


def test_run_resumes_an_adopted_apps_log(tmp_path, agent_factory):
    origin, port, config = wrapped_app(tmp_path, "(while sleep 0.1; do echo tick; done) &")
    v1 = origin.app_commit("v1")
    agent = agent_factory()
    agent.start(config)
    pid = agent.wait_good("web", v1)["pid"]
    agent.kill()  # SIGKILL: the app stays, its pipe's read end held by itself
    agent.start(config)
    wait_until(lambda: f"adopted running pid {pid}" in agent.output(), 20, "the adoption")
    seen = agent.app_log("web").count("tick")
    wait_until(
        lambda: agent.app_log("web").count("tick") > seen + 5, 10, "ticks logged after the adoption"
    )
    assert alive(pid)
    assert agent.stop() == 0


# 64 KB blocks at 100 MB/s, a rate seen in the field (unbounded floods are tested in-process)
FLOOD_PY = """
import os, time
block, start, sent = (b"x" * 63 + b"\\n") * 1024, time.monotonic(), 0
while True:
    sent += os.write(1, block)
    ahead = sent / 100e6 - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
"""


def test_run_holds_the_log_cap_while_an_app_floods(tmp_path, agent_factory):
    origin, port, config = wrapped_app(
        tmp_path, f"{PY} flood.py &", health={"grace": 3, "retries": 4}
    )
    v1 = origin.app_commit("v1", extra={"flood.py": FLOOD_PY})
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    logs = agent.state_dir / "logs"
    peak = 0
    for _ in range(40):  # a few seconds of flooding, sampled
        sizes = log_sizes(logs)
        peak = max(peak, sum(sizes))
        assert max(sizes) <= applog.MAX_BYTES
        assert sum(log_sizes(logs, freeing=True)) <= applog.MAX_BYTES
        time.sleep(0.1)
    assert len(list(logs.glob("web.log.*"))) >= 1  # it did rotate
    assert peak <= 4 * applog.MAX_BYTES
    assert http_get(port) == (200, "v1")  # served throughout, and supervised
    assert agent.app("web")["healthy"] is True
    assert agent.stop() == 0
