"""`huddle run` end to end with real git, real apps on loopback ports and real signals:
deploys, polling cost, logs, environment, status output, restarts with backoff, graceful
stop, adoption after SIGKILL, stale pids, install and the original huddle's hooks, a remote
that dies and comes back, and config errors. Everything is observed from outside: the state
file, `huddle status`, the app's HTTP answers, the app log and /proc."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

import pytest

from huddle.process import start_time
from tests.gitutil import (
    GitDaemon,
    Origin,
    alive,
    app_config,
    free_port,
    git,
    git_subcommand,
    git_wrapper,
    http_get,
    make_app,
    read_calls,
    tagged_pids,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(90)


def test_deploy_update_logs_environment_status_and_polling_cost(tmp_path, agent_factory):
    calls = tmp_path / "git-calls.log"
    wrapper = git_wrapper(tmp_path / "git-logged", calls)
    origin, port, config = make_app(
        tmp_path,
        repository={"executable": str(wrapper)},
        application={"environment": {"GREETING": "hello world"}},
    )
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    first = agent.wait_good("web", v1)
    assert http_get(port) == (200, "v1")
    assert http_get(port, "/env/GREETING") == (200, "hello world")
    log = agent.app_log("web")
    assert f"app version=v1 mode=ok pid={first['pid']} GREETING=hello world" in log
    assert (tmp_path / "agent" / "state" / "logs" / "web.log").exists()

    # steady state: every poll is exactly one `git ls-remote`, nothing fetched
    seen = len(read_calls(calls))
    wait_until(lambda: len(read_calls(calls)) >= seen + 4, 15, "four more polls")
    steady = [git_subcommand(c) for c in read_calls(calls)[seen:]]
    assert set(steady) == {"ls-remote"}, steady

    # status: the table and --json
    table = agent.status()
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()[:2]
    assert header.split()[:7] == ["APP", "STATE", "COMMIT", "GOOD", "PID", "HEALTH", "RESTARTS"]
    assert row.split()[:7] == [
        "web",
        "running",
        v1[:12],
        v1[:12],
        str(first["pid"]),
        "healthy",
        "0",
    ]
    as_json = agent.status("--json")
    assert as_json.returncode == 0
    web = json.loads(as_json.stdout)["web"]
    assert (
        web["commit"],
        web["good"],
        web["pid"],
        web["healthy"],
        web["restarts"],
        web["last_error"],
        web["bad"],
    ) == (v1, v1, first["pid"], True, 0, None, [])
    assert web["deployed_at"] and abs(web["deployed_at"] - time.time()) < 120

    # a new commit is deployed; untracked files in the tree survive it
    tree = tmp_path / "apps" / "web"
    (tree / "data.db").write_text("user data")
    (tree / "app.py").write_text("tracked edit, discarded\n")
    v2 = origin.app_commit("v2")
    second = agent.wait_good("web", v2)
    assert http_get(port) == (200, "v2")
    assert second["pid"] != first["pid"]
    wait_until(lambda: not alive(first["pid"]), 5, "the v1 process to be gone")
    assert (tree / "data.db").read_text() == "user data"
    assert git("status", "--porcelain", "--untracked-files=no", cwd=tree) == ""
    assert tagged_pids(agent.tag("web")) == [second["pid"]]
    assert agent.stop() == 0


def test_crashing_app_is_restarted_with_growing_delays(tmp_path, agent_factory):
    crash = tmp_path / "crash-now"
    origin, port, config = make_app(
        tmp_path, application={"environment": {"APP_CRASH_FILE": str(crash)}}
    )
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    crash.touch()
    crashed_at = time.monotonic()
    # each restarted copy dies at once while the file exists
    agent.wait_app(
        "web",
        lambda a: a.get("restarts") == 2 and not a.get("running"),
        "second restart crashed too",
    )
    crash.unlink()
    app = agent.wait_app(
        "web",
        lambda a: a.get("restarts") == 3 and a.get("running") and a.get("healthy") is True and a,
        "third restart healthy",
    )
    # backoff is 1, 2, 4 s (jittered down to half at least): not a hot loop
    assert time.monotonic() - crashed_at >= 0.5 + 1 + 2
    assert app["commit"] == v1 and app["good"] == v1 and app["bad"] == []
    assert http_get(port) == (200, "v1")
    assert agent.app_log("web").count("crash file found, exiting") == 3
    assert agent.stop() == 0


def test_sigterm_stops_the_app_group_and_the_agent_exits_zero(tmp_path, agent_factory):
    child_pidfile = tmp_path / "child.pid"
    origin, port, config = make_app(
        tmp_path, application={"environment": {"APP_CHILD_PIDFILE": str(child_pidfile)}}
    )
    origin.app_commit("v1", mode="ignoreterm")
    agent = agent_factory().start(config)
    app = agent.wait_good("web", origin.head())
    child = int(
        wait_until(
            lambda: child_pidfile.exists() and child_pidfile.read_text(), 5, "the app's child pid"
        )
    )
    assert alive(child)
    assert agent.stop(timeout_s=20) == 0
    assert not alive(app["pid"]) and not alive(child)
    assert tagged_pids(agent.tag_prefix) == []
    assert "stopped pid" in agent.app_log("web")
    state = agent.app("web")
    assert not state["running"] and state["commit"] == origin.head()


def test_sigkilled_agent_is_replaced_and_the_new_one_adopts_the_app(tmp_path, agent_factory):
    origin, port, config = make_app(tmp_path)
    v1 = origin.app_commit("v1")
    agent = agent_factory()
    agent.start(config)
    pid = agent.wait_good("web", v1)["pid"]
    agent.proc.send_signal(signal.SIGKILL)
    agent.proc.wait()
    assert http_get(port) == (200, "v1")  # the app outlived its agent
    agent.start(config)
    wait_until(
        lambda: f"adopted running pid {pid}" in agent.output(), 20, "the new agent to adopt the app"
    )
    app = agent.wait_app(
        "web", lambda a: a.get("running") and a.get("healthy") and a, "adopted app healthy"
    )
    assert app["pid"] == pid and app["commit"] == v1
    assert http_get(port) == (200, "v1")
    assert tagged_pids(agent.tag("web")) == [pid]  # exactly one copy
    # a deploy after adoption replaces the adopted process properly
    v2 = origin.app_commit("v2")
    new = agent.wait_good("web", v2)
    assert new["pid"] != pid
    wait_until(lambda: not alive(pid), 5, "the adopted v1 process to be gone")
    assert http_get(port) == (200, "v2")
    assert tagged_pids(agent.tag("web")) == [new["pid"]]
    assert agent.stop() == 0
    assert tagged_pids(agent.tag_prefix) == []


def test_stale_recorded_pid_is_never_adopted(tmp_path, agent_factory):
    origin, port, config = make_app(tmp_path)
    v1 = origin.app_commit("v1")
    agent = agent_factory()
    agent.start(config)
    old = agent.wait_good("web", v1)
    assert agent.stop() == 0
    state_file = agent.state_dir / "state.json"

    def record(pid):
        state = json.loads(state_file.read_text())
        state["web"].update(
            pid=pid, running=True, pid_start=old["pid_start"], boot_id=old["boot_id"]
        )
        state_file.write_text(json.dumps(state))

    # the pid now belongs to an unrelated process (a different start time)
    stranger = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        assert start_time(stranger.pid) != old["pid_start"]
        record(stranger.pid)
        agent.start(config)
        app = agent.wait_app(
            "web",
            lambda a: a.get("running") and a.get("pid") != stranger.pid and a.get("healthy") and a,
            "a fresh copy of the app",
        )
        assert "adopted" not in agent.output()
        assert alive(stranger.pid)  # not killed either: it is not ours
        assert http_get(port) == (200, "v1")
        assert tagged_pids(agent.tag("web")) == [app["pid"]]
        assert agent.stop() == 0
    finally:
        stranger.kill()
        stranger.wait()
    # the recorded process is gone altogether
    record(stranger.pid)
    agent.start(config)
    app = agent.wait_app(
        "web",
        lambda a: a.get("running") and a.get("pid") != stranger.pid and a.get("healthy") and a,
        "a fresh copy of the app",
    )
    assert "adopted" not in agent.output()
    assert tagged_pids(agent.tag("web")) == [app["pid"]]
    assert agent.stop() == 0


def test_unrecorded_tagged_orphan_is_stopped_so_only_one_copy_runs(tmp_path, agent_factory):
    origin, port, config = make_app(tmp_path)
    v1 = origin.app_commit("v1")
    agent = agent_factory()
    # an app copy started by an agent that died before it could record the pid
    orphan = subprocess.Popen(
        ["sleep", "300"],
        start_new_session=True,
        env={"HUDDLE_APP": agent.tag("web"), "PATH": "/usr/bin:/bin"},
    )
    try:
        agent.start(config)
        app = agent.wait_good("web", v1)
        wait_until(lambda: not alive(orphan.pid), 10, "the orphan to be stopped")
        assert tagged_pids(agent.tag("web")) == [app["pid"]]
    finally:
        orphan.kill()
        orphan.wait()
    assert agent.stop() == 0


def test_install_runs_before_start_and_a_failing_install_keeps_the_old_app(tmp_path, agent_factory):
    origin, port, config = make_app(tmp_path, application={"install": "sh install.sh"})
    tree = tmp_path / "apps" / "web"
    v1 = origin.app_commit("v1", install="ok")
    agent = agent_factory().start(config)
    old = agent.wait_good("web", v1)
    v2 = origin.app_commit("v2", install="ok")
    agent.wait_good("web", v2)
    assert (tree / "installed.txt").read_text() == "installed v2\n"
    log = agent.app_log("web")
    assert log.index("--- huddle: install: sh install.sh -> 0") < log.index(
        f"started pid {agent.app('web')['pid']} at {v2[:12]}"
    )
    running = agent.app("web")["pid"]

    v3 = origin.app_commit("v3", install="fail")
    app = agent.wait_app(
        "web", lambda a: "install" in (a.get("last_error") or "") and a, "the install error"
    )
    assert "sh install.sh" in app["last_error"]
    assert "exited with status 7" in app["last_error"]
    assert "install is broken on purpose" in app["last_error"]
    assert app["commit"] == v2 and app["pid"] == running and app["running"]
    assert http_get(port) == (200, "v2")
    assert git("rev-parse", "HEAD", cwd=tree) == v2  # the tree is back at the running commit
    assert (tree / "version.txt").read_text() == "v2\n"
    assert agent.starts("web", v3) == 0
    assert old["pid"] != running

    v4 = origin.app_commit("v4", install="ok")
    agent.wait_good("web", v4)
    assert (tree / "installed.txt").read_text() == "installed v4\n"
    assert agent.app("web")["last_error"] is None
    assert agent.stop() == 0


def test_install_runs_before_the_first_start(tmp_path, agent_factory):
    origin, port, config = make_app(tmp_path, application={"install": "sh install.sh"})
    v1 = origin.app_commit("v1", install="ok")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    installed = tmp_path / "apps" / "web" / "installed.txt"
    assert installed.exists() and installed.read_text() == "installed v1\n"
    assert agent.stop() == 0


def test_install_sees_the_commit_it_installs_in_huddle_commit(tmp_path, agent_factory):
    origin, port, config = make_app(tmp_path, application={"install": "sh install.sh"})
    v1 = origin.app_commit("v1", install="ok")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    v2 = origin.app_commit("v2", install="ok")
    agent.wait_good("web", v2)
    assert (tmp_path / "apps" / "web" / "installed-commit.txt").read_text() == v2 + "\n"


def test_original_huddle_ini_with_scripts_hooks(tmp_path, agent_factory):
    origin = Origin(tmp_path / "remotes", "legacy")
    v1 = origin.app_commit("v1")
    port = free_port()
    hooks = tmp_path / "hooks.log"
    config = tmp_path / "configs" / "legacy.ini"
    config.parent.mkdir()
    config.write_text(f"""[repository]
remote = origin
remote path: {origin.url}
local path = {tmp_path / "apps" / "legacy"}
branch: main
type = git

[timing]
minimum = 0.2
maximum = 0.5

[application]
start = {sys.executable} app.py {port}

[scripts]
pre-pull = sh -c "echo pre $(cat version.txt) >> {hooks}", sh -c "echo pre2 >> {hooks}"
post-pull = sh -c "echo post $(cat version.txt) >> {hooks}"
""")
    agent = agent_factory().start(config)
    agent.wait_app("legacy", lambda a: a.get("commit") == v1 and a.get("running"), "v1 runs")
    wait_until(lambda: http_get(port) == (200, "v1"), 10, "v1 served")
    v2 = origin.app_commit("v2")
    agent.wait_app("legacy", lambda a: a.get("commit") == v2 and a.get("running"), "v2 runs")
    wait_until(lambda: hooks.exists() and "post v2" in hooks.read_text(), 10, "post-pull hook")
    # pre-pull sees the old tree, post-pull the new one, in order
    assert hooks.read_text().splitlines()[-3:] == ["pre v1", "pre2", "post v2"]
    assert wait_until(lambda: http_get(port) == (200, "v2"), 10, "v2 served")
    assert agent.stop() == 0


def test_dead_remote_keeps_the_app_up_and_recovers(tmp_path, agent_factory):
    base = tmp_path / "daemon-root"
    base.mkdir()
    daemon = GitDaemon(base).start()
    try:
        origin = Origin(base, "web")
        wrapper = git_wrapper(tmp_path / "git-v1", extra_args="-c protocol.version=1")
        _, port, config = make_app(
            tmp_path,
            origin=origin,
            repository={"remote path": daemon.url("web.git"), "executable": str(wrapper)},
        )
        v1 = origin.app_commit("v1")
        agent = agent_factory().start(config)
        pid = agent.wait_good("web", v1)["pid"]
        daemon.stop()
        app = agent.wait_app(
            "web", lambda a: "ls-remote" in (a.get("last_error") or "") and a, "the poll error"
        )
        error = app["last_error"]
        assert "origin refs/heads/main" in error  # the command line
        assert "unable to connect" in error or "refused" in error.lower()  # git's stderr
        assert app["pid"] == pid and app["running"] and app["commit"] == v1
        assert http_get(port) == (200, "v1")
        table = agent.status().stdout
        # the table shows the error's first 80 characters (where "ls-remote" falls depends on
        # the length of the temporary path of the git executable)
        assert error[:80] in table.splitlines()[1]
        # polling goes on (with backoff); the remote returns with a new commit
        v2 = origin.app_commit("v2")
        daemon.start()
        agent.wait_good("web", v2, timeout_s=30)
        agent.wait_app("web", lambda a: a.get("last_error") is None, "the error cleared")
        assert http_get(port) == (200, "v2")
        assert agent.stop() == 0
    finally:
        daemon.stop()


def test_invalid_config_is_reported_and_skipped_the_valid_one_runs(tmp_path, agent_factory):
    origin, port, config = make_app(tmp_path)
    v1 = origin.app_commit("v1")
    bad = write_config(
        tmp_path / "configs" / "broken.json",
        app_config(
            origin.url, tmp_path / "apps" / "broken", free_port(), application={"strat": "x"}
        ),
    )
    agent = agent_factory().start(bad, config)
    agent.wait_good("web", v1)
    assert re.search(
        rf"^huddle: {re.escape(str(bad))}: application\.strat: .+", agent.output(), re.M
    ), agent.output()
    assert "broken" not in agent.state()
    assert agent.stop() == 0


def test_only_invalid_configs_exit_non_zero_at_once(tmp_path):
    bad = write_config(
        tmp_path / "broken.json",
        app_config(
            "file:///nowhere",
            tmp_path / "apps" / "b",
            free_port(),
            timing={"minimum": 5, "maximum": 1},
        ),
    )
    result = subprocess.run(
        [sys.executable, "-m", "huddle", "run", str(bad), "--state-dir", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert f"huddle: {bad}: timing.minimum: " in result.stderr
    assert "Traceback" not in result.stderr
