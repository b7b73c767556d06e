"""Many apps in one agent: one app's dead remote and another's hung install must not delay
the others' deploys (one cooperative loop; each app's work is its own coroutine)."""

from __future__ import annotations

import pytest

from tests.gitutil import (
    Origin,
    alive,
    app_config,
    closed_port,
    free_port,
    http_get,
    tagged_pids,
    wait_until,
    write_config,
)

pytestmark = pytest.mark.timeout(120)

HEALTHY = [f"app{i}" for i in range(6)]


def test_dead_remote_and_hung_install_do_not_hold_up_the_other_apps(tmp_path, agent_factory):
    configs = tmp_path / "configs"
    origins, ports = {}, {}
    for name in HEALTHY + ["slowinstall"]:
        origins[name] = Origin(tmp_path / "remotes", name)
        ports[name] = free_port()
        extra = {"application": {"install": "sh install.sh"}} if name == "slowinstall" else {}
        write_config(
            configs / f"{name}.json",
            app_config(origins[name].url, tmp_path / "apps" / name, ports[name], **extra),
        )
    write_config(
        configs / "dead.json",
        app_config(
            f"git://127.0.0.1:{closed_port()}/dead.git", tmp_path / "apps" / "dead", free_port()
        ),
    )
    v1 = {name: origin.app_commit(f"{name}-v1", install="ok") for name, origin in origins.items()}
    agent = agent_factory().start(configs)
    for name, commit in v1.items():
        agent.wait_good(name, commit, timeout_s=30)
    dead = agent.wait_app("dead", lambda a: a.get("last_error") and a, "the clone error")
    assert "git clone" in dead["last_error"] and dead["commit"] is None

    # the slow app's new commit hangs in install; then every other app gets a new commit
    stuck = origins["slowinstall"].app_commit("slowinstall-v2", install="hang")
    wait_until(
        lambda: len(tagged_pids(agent.tag("slowinstall"))) >= 3,
        20,
        "the hung install (sh + sleep beside the app)",
    )
    v2 = {name: origins[name].app_commit(f"{name}-v2") for name in HEALTHY}
    for name, commit in v2.items():
        agent.wait_good(name, commit, timeout_s=30)
        assert http_get(ports[name]) == (200, f"{name}-v2")
    slow = agent.app("slowinstall")
    assert slow["commit"] == v1["slowinstall"] and slow["running"] and stuck not in slow["bad"]
    assert http_get(ports["slowinstall"]) == (200, "slowinstall-v1")
    assert agent.app("dead")["commit"] is None and agent.app("dead")["last_error"]

    # SIGTERM: the hung install is killed with its group, every app stops, exit 0
    pids = tagged_pids(agent.tag_prefix)
    assert agent.stop(timeout_s=30) == 0
    for pid in pids:
        wait_until(lambda p=pid: not alive(p), 10, f"pid {pid} to be gone")
