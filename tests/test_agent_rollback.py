"""Rollback end to end: real commits that crash, answer 500 or fail a socket check
are rolled back to the last good commit, remembered as bad and never deployed again; the
original huddle's [watchdog] forms drive the same checks."""

from __future__ import annotations

import json
import sys

import pytest

from tests.gitutil import (
    Origin,
    free_port,
    git,
    git_subcommand,
    git_wrapper,
    http_get,
    make_app,
    read_calls,
    wait_until,
)

pytestmark = pytest.mark.timeout(90)


def rolled_back(commit, good):
    def pred(app):
        return (
            commit in app.get("bad", [])
            and app.get("commit") == good
            and app.get("good") == good
            and app.get("running")
            and app.get("healthy") is True
            and app
        )

    return pred


def test_crashing_commit_is_rolled_back_and_never_deployed_again(tmp_path, agent_factory):
    calls = tmp_path / "calls.log"
    origin, port, config = make_app(
        tmp_path, repository={"executable": str(git_wrapper(tmp_path / "git", calls))}
    )
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    v2 = origin.app_commit("v2", mode="crash")
    app = agent.wait_app("web", rolled_back(v2, v1), "v2 rolled back to v1")
    assert app["bad"] == [v2]
    assert f"rolled back {v2[:12]}" in app["last_error"]
    assert "exited with status 3" in app["last_error"]
    assert http_get(port) == (200, "v1")
    assert git("rev-parse", "HEAD", cwd=tmp_path / "apps" / "web") == v1
    assert "crashing on purpose" in agent.app_log("web")
    # v2 stays the branch head; polls go on and it is never started again
    seen = len(read_calls(calls))
    wait_until(
        lambda: [git_subcommand(c) for c in read_calls(calls)[seen:]].count("ls-remote") >= 4,
        15,
        "four more polls",
    )
    assert agent.starts("web", v2) == 1
    assert agent.app("web")["commit"] == v1
    table = agent.status().stdout.splitlines()
    assert table[1].split()[:6] == ["web", "running", v1[:12], v1[:12], str(app["pid"]), "healthy"]
    assert f"rolled back {v2[:12]}" in table[1]
    # a newer good commit deploys normally, and v2 stays recorded as bad
    v3 = origin.app_commit("v3")
    app = agent.wait_good("web", v3)
    assert app["bad"] == [v2] and http_get(port) == (200, "v3")
    assert json.loads(agent.status("--json").stdout)["web"]["bad"] == [v2]
    assert agent.stop() == 0
    # a restarted agent remembers: v2 is still bad, v3 keeps running
    agent.start(config)
    agent.wait_app(
        "web", lambda a: a.get("running") and a.get("healthy") is True, "v3 running again"
    )
    assert agent.app("web")["bad"] == [v2] and agent.app("web")["commit"] == v3
    assert agent.stop() == 0


def test_unhealthy_commit_is_rolled_back(tmp_path, agent_factory):
    origin, port, config = make_app(tmp_path)
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    v2 = origin.app_commit("v2", mode="500")
    app = agent.wait_app("web", rolled_back(v2, v1), "v2 rolled back to v1")
    assert f"rolled back {v2[:12]}" in app["last_error"]
    assert "500" in app["last_error"]
    assert agent.starts("web", v2) == 1 and http_get(port) == (200, "v1")
    assert agent.stop() == 0


def test_first_commit_that_fails_is_retried_with_backoff_never_banned_and_a_fix_deploys(
    tmp_path, agent_factory
):
    origin, port, config = make_app(tmp_path)
    v1 = origin.app_commit("v1", mode="crash")
    agent = agent_factory().start(config)
    app = agent.wait_app("web", lambda a: a.get("restarts", 0) >= 2 and a, "two retries")
    assert app["state"] in ("crashloop", "syncing", "trial") and app["good"] is None
    assert app["bad"] == []
    assert "nothing earlier ran healthily" in agent.output()
    name, state, commit = agent.status().stdout.splitlines()[1].split()[:3]
    assert (name, commit) == ("web", v1[:12])
    assert state in ("crashloop", "syncing", "trial")  # it moves on while we look
    assert agent.starts("web", v1) >= 3
    # a fixed commit is deployed at the next poll
    v2 = origin.app_commit("v2")
    agent.wait_good("web", v2)
    assert http_get(port) == (200, "v2")
    assert agent.app("web")["bad"] == []
    assert agent.stop() == 0


def test_original_watchdog_http_url_and_socket_forms(tmp_path, agent_factory):
    http_origin = Origin(tmp_path / "remotes", "wdhttp")
    sock_origin = Origin(tmp_path / "remotes", "wdsock")
    v_http = http_origin.app_commit("v1")
    v_sock = sock_origin.app_commit("v1")
    http_port, sock_port = free_port(), free_port()
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "wdhttp.ini").write_text(f"""[repository]
remote path = {http_origin.url}
local path = {tmp_path / "apps" / "wdhttp"}
branch = main
type = git

[timing]
minimum = 0.2
maximum = 0.5

[application]
start = {sys.executable} app.py {http_port}

[watchdog]
period = 0.5
host = http://127.0.0.1:{http_port}/
""")
    (configs / "wdsock.json").write_text(
        json.dumps(
            {
                "repository": {
                    "remote path": sock_origin.url,
                    "type": "git",
                    "branch": "main",
                    "local path": str(tmp_path / "apps" / "wdsock"),
                },
                "timing": {"minimum": 0.2, "maximum": 0.5},
                "application": {"start": f"{sys.executable} app.py {sock_port} --socket"},
                "watchdog": {
                    "period": 0.5,
                    "host": "127.0.0.1",
                    "port": str(sock_port),
                    "request": "watchdog",
                    "response": "OK",
                },
            }
        )
    )
    (configs / "_ignored.json").write_text("{not even json")  # `_` files are skipped
    agent = agent_factory().start(configs)
    for name, commit in (("wdhttp", v_http), ("wdsock", v_sock)):
        agent.wait_app(
            name,
            lambda a, c=commit: (
                a.get("commit") == c and a.get("running") and a.get("healthy") is True
            ),
            "healthy through the watchdog",
        )
    assert http_get(http_port) == (200, "v1")
    assert "_ignored" not in agent.output()
    # the details say which check ran (a failing watchdog check would only count after our
    # default 10 s grace, which the original form cannot shorten: not waited for here)
    assert agent.app("wdhttp")["health_detail"].startswith("HTTP 200")
    assert "reply matched" in agent.app("wdsock")["health_detail"]
    assert agent.stop() == 0


def test_hung_app_is_detected_and_restarted_not_rolled_back(tmp_path, agent_factory):
    """A running app frozen by SIGSTOP accepts no more requests: after `retries` failed
    checks it is restarted (the stop must not wait for its stop timeout) and serves again."""
    import os
    import signal

    origin, port, config = make_app(
        tmp_path,
        health={"interval": 0.5, "timeout": 0.5, "retries": 2, "grace": 0.5},
        application={"stop timeout": 30},
    )
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    first = agent.wait_good("web", v1)
    os.kill(first["pid"], signal.SIGSTOP)
    app = agent.wait_app(
        "web",
        lambda a: (
            a.get("restarts", 0) >= 1
            and a.get("running")
            and a.get("pid") != first["pid"]
            and a.get("healthy") is True
            and a
        ),
        "the hung app restarted and healthy again",
        timeout_s=20,
    )
    assert http_get(port) == (200, "v1")
    assert app["commit"] == app["good"] == v1 and app["bad"] == []
    assert "unhealthy" in agent.app_log("web") or "unhealthy" in agent.output()
