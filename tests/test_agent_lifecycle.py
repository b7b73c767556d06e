"""The lifecycle end to end, with real git, real processes and real ports: transient faults
never leave an app down or ban a good commit, failed installs keep the old version serving,
a reload adds, removes and changes apps without touching the others, a config without an
[application] syncs files, and `huddle retry` lifts a ban."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess

import pytest

from tests.gitutil import (
    PY,
    Origin,
    alive,
    git,
    http_get,
    make_app,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(120)


def test_first_deploy_killed_during_its_trial_comes_back(tmp_path, agent_factory):
    """The OOM killer takes the very first version once, inside its trial: it is restarted
    (there is nothing to roll back to) and becomes good; an agent restart changes nothing."""
    origin, port, config = make_app(tmp_path, health={"grace": 3})
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    app = agent.wait_app(
        "web", lambda a: a.get("state") == "trial" and a.get("pid") and a, "v1 on trial"
    )
    os.kill(app["pid"], signal.SIGKILL)
    app = agent.wait_good("web", v1)
    assert app["bad"] == [] and app["state"] == "running" and agent.starts("web", v1) == 2
    assert http_get(port) == (200, "v1")
    assert agent.stop() == 0
    assert agent.app("web")["state"] == "stopped" and agent.app("web")["healthy"] is None


def test_a_port_clash_on_both_commits_bans_neither_and_the_newest_runs_when_it_clears(
    tmp_path, agent_factory
):
    origin, port, config = make_app(tmp_path)
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    assert agent.stop() == 0
    squatter = socket.socket()  # another program holds the port: every version fails
    squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    squatter.bind(("127.0.0.1", port))
    squatter.listen()
    try:
        v2 = origin.app_commit("v2")
        agent.start(config)
        agent.wait(
            lambda s: "environment is at fault" in agent.output() and agent.starts("web", v2) >= 1,
            "v2 and its fallback v1 both failed",
            timeout_s=60,
        )
        app = agent.app("web")
        assert app["bad"] == [] and app["good"] == v1
    finally:
        squatter.close()
    app = agent.wait_good("web", v2, timeout_s=90)
    assert app["bad"] == [] and http_get(port) == (200, "v2")
    assert agent.stop() == 0


def test_a_version_superseded_while_healthy_is_the_fallback(tmp_path, agent_factory):
    """v1 serves but its window is still open when v2 arrives and crashes: v1 is rolled back
    to (it never failed), and v2 is banned once v1 has run healthily again."""
    origin, port, config = make_app(tmp_path, health={"grace": 4})
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_app(
        "web",
        lambda a: a.get("healthy") and a.get("state") == "trial",
        "v1 healthy, still on trial",
    )
    v2 = origin.app_commit("v2", mode="crash")
    app = agent.wait_app("web", lambda a: v2 in a.get("bad", []) and a, "v2 banned", timeout_s=40)
    assert app["commit"] == app["good"] == v1 and http_get(port) == (200, "v1")
    assert git("rev-parse", "HEAD", cwd=tmp_path / "apps" / "web") == v1
    assert agent.stop() == 0


def test_a_failing_install_keeps_the_old_version_and_a_fix_deploys(tmp_path, agent_factory):
    origin, port, config = make_app(tmp_path, application={"install": "sh install.sh"})
    v1 = origin.app_commit("v1", install="ok")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    pid = agent.app("web")["pid"]
    v2 = origin.app_commit("v2", install="fail")
    app = agent.wait_app(
        "web",
        lambda a: "install" in (a.get("last_error") or "") and a,
        "the failed install reported",
    )
    assert v2[:12] in app["last_error"] and "keeps serving" in app["last_error"]
    assert app["pid"] == pid and app["commit"] == v1 and http_get(port) == (200, "v1")
    tree = tmp_path / "apps" / "web"
    assert git("rev-parse", "HEAD", cwd=tree) == v1  # the tree is the running one
    assert (tree / "version.txt").read_text().strip() == "v1"
    v3 = origin.app_commit("v3", install="ok")
    agent.wait_good("web", v3)
    assert http_get(port) == (200, "v3") and agent.app("web")["bad"] == []
    assert agent.stop() == 0


def test_reload_adds_removes_and_changes_apps_and_leaves_the_others_alone(tmp_path, agent_factory):
    apps = {name: make_app(tmp_path, name) for name in ("a", "b", "c")}
    commits = {name: origin.app_commit(f"{name}1") for name, (origin, _, _) in apps.items()}
    agent = agent_factory().start(tmp_path / "configs")
    pids = {name: agent.wait_good(name, commits[name])["pid"] for name in apps}
    # change b, remove c, add d, and drop in a broken file
    origin_b, port_b, config_b = apps["b"]
    changed = json.loads(config_b.read_text())
    changed["application"]["environment"] = {"GREETING": "reloaded"}
    write_config(config_b, changed)
    apps["c"][2].unlink()
    origin_d, port_d, _ = make_app(tmp_path, "d")
    d1 = origin_d.app_commit("d1")
    (tmp_path / "configs" / "broken.json").write_text("{not json")
    agent.signal(signal.SIGHUP)
    agent.wait_good("d", d1)
    b = agent.wait_app(
        "b", lambda a: a.get("pid") not in (None, pids["b"]) and a.get("good") and a, "b restarted"
    )
    assert http_get(port_b, "/env/GREETING") == (200, "reloaded")
    assert agent.app("a")["pid"] == pids["a"] and alive(pids["a"])  # untouched
    wait_until(lambda: not alive(pids["c"]), 10, "c stopped")
    assert "c" not in agent.state()  # and forgotten
    assert (tmp_path / "apps" / "c" / "app.py").exists()  # its tree stays
    assert "broken.json" in agent.output() and agent.proc.poll() is None
    assert b["commit"] == commits["b"]
    # `huddle reload` signals the agent on the same state dir
    apps["b"][2].unlink()
    reload = subprocess.run(
        [PY, "-m", "huddle", "reload", "--state-dir", str(agent.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert reload.returncode == 0, reload.stderr
    agent.wait(lambda s: "b" not in s, "b removed by huddle reload")
    assert agent.app("a")["pid"] == pids["a"]
    assert agent.stop() == 0


def test_a_config_without_an_application_syncs_files_and_runs_its_hooks(tmp_path, agent_factory):
    origin = Origin(tmp_path / "remotes", "files")
    tree = tmp_path / "apps" / "files"
    config = write_config(
        tmp_path / "configs" / "files.json",
        {
            "repository": {"remote path": origin.url, "local path": str(tree), "branch": "main"},
            "timing": {"minimum": 0.2, "maximum": 0.5},
            "scripts": {"post-pull": ["sh -c 'cat data.txt >> ../synced.log'"]},
        },
    )
    c1 = origin.commit({"data.txt": "one\n"})
    agent = agent_factory().start(config)
    app = agent.wait_app("files", lambda a: a.get("state") == "sync-only" and a, "synced")
    assert app["commit"] == c1 and not app["running"] and app["pid"] is None
    assert app["healthy"] is None
    c2 = origin.commit({"data.txt": "two\n"})
    agent.wait_app("files", lambda a: a.get("commit") == c2, "second commit synced")
    assert (tree / "data.txt").read_text() == "two\n"
    wait_until(
        lambda: (tmp_path / "apps" / "synced.log").read_text() == "one\ntwo\n",
        5,
        "the post-pull hook ran for each commit",
    )
    assert agent.stop() == 0


def test_retry_lifts_a_ban_and_the_running_agent_deploys_the_commit_again(tmp_path, agent_factory):
    origin, port, config = make_app(tmp_path)
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    flag = tmp_path / "broken"
    flag.write_text("")
    v2 = origin.app_commit(
        "v2", extra={"run.sh": f"test -e {flag} && exit 5\nexec {PY} app.py {port}\n"}
    )
    # v2's start depends on an outside file: it fails, v1 runs healthily, v2 is banned
    changed = json.loads(config.read_text())
    changed["application"]["start"] = (
        f"sh -c 'test -e run.sh && exec sh run.sh || exec {PY} app.py {port}'"
    )
    write_config(config, changed)
    agent.signal(signal.SIGHUP)
    agent.wait_app("web", lambda a: v2 in a.get("bad", []), "v2 banned", timeout_s=40)
    flag.unlink()  # the outside cause is fixed: the user lifts the ban
    retry = subprocess.run(
        [PY, "-m", "huddle", "retry", "web", v2[:10], "--state-dir", str(agent.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert retry.returncode == 0, retry.stderr
    agent.wait_good("web", v2, timeout_s=40)
    assert agent.app("web")["bad"] == [] and http_get(port) == (200, "v2")
    assert agent.stop() == 0
