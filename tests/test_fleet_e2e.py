"""The fleet end to end: real `huddle run --mqtt` agents, a real Mosquitto, real git.

A push reaches agents with 5-to-10-minute polls at once through `huddle trigger` (one
device and one app, then all); a commit one agent rolled back is skipped by a second agent
that learns the ban from the broker, and `huddle retry --mqtt` lifts it fleet-wide.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from tests.gitutil import Origin, app_config, free_port, write_config
from tests.test_mqtt_support import Observer

PY = sys.executable
SLOW = {"timing": {"minimum": 300, "maximum": 600}}  # polls far beyond the test's length


def huddle(*args) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "huddle", *args], capture_output=True, text=True, timeout=60)


def sync_app(origin: Origin, tree) -> dict:
    return app_config(origin.url, tree, 0, application=None, health=None, **SLOW)


def test_trigger_reaches_one_app_of_one_device_then_every_device(broker, agent_factory, tmp_path):
    web, api = Origin(tmp_path / "web"), Origin(tmp_path / "api")
    web.commit({"v": "1"})
    api.commit({"v": "1"})
    agents = {}
    for device, apps in (("d1", ("web", "api")), ("d2", ("web",))):
        paths = [
            write_config(
                tmp_path / device / f"{name}.json",
                sync_app({"web": web, "api": api}[name], tmp_path / device / "trees" / name),
            )
            for name in apps
        ]
        agents[device] = agent_factory(device).start(
            *paths, env={"HUDDLE_MQTT": broker.url, "HUDDLE_DEVICE_ID": device}
        )
    for agent in agents.values():
        agent.wait_app("web", lambda a: a.get("commit") == web.head(), "first clone")
    agents["d1"].wait_app("api", lambda a: a.get("commit") == api.head(), "first clone")
    time.sleep(1.0)  # the agents' MQTT subscriptions
    web2, api2 = web.commit({"v": "2"}), api.commit({"v": "2"})

    out = huddle("trigger", "--mqtt", broker.url, "--device", "d1", "--app", "web", "--spread", "1")
    assert out.returncode == 0, out.stderr
    agents["d1"].wait_app("web", lambda a: a.get("commit") == web2, "triggered deploy")
    time.sleep(2.0)  # what was not asked must not have moved meanwhile
    assert agents["d1"].app("api")["commit"] != api2
    assert agents["d2"].app("web")["commit"] != web2

    out = huddle("trigger", "--mqtt", broker.url, "--spread", "1")
    assert out.returncode == 0, out.stderr
    agents["d2"].wait_app("web", lambda a: a.get("commit") == web2, "fleet-wide trigger")
    agents["d1"].wait_app("api", lambda a: a.get("commit") == api2, "fleet-wide trigger")
    assert "trigger on huddle/all/trigger" in agents["d2"].output()
    for agent in agents.values():
        assert agent.stop() == 0


def test_a_ban_learned_from_the_fleet_keeps_a_second_agent_off_the_commit(
    broker, agent_factory, tmp_path
):
    origin = Origin(tmp_path / "origin")
    good = origin.app_commit("v1")
    env = {"HUDDLE_MQTT": broker.url}
    configs = {
        name: write_config(
            tmp_path / name / "web.json",
            app_config(origin.url, tmp_path / name / "tree", free_port()),
        )
        for name in ("first", "second")
    }
    first = agent_factory("first").start(configs["first"], env=dict(env, HUDDLE_DEVICE_ID="first"))
    second = agent_factory("second").start(
        configs["second"], env=dict(env, HUDDLE_DEVICE_ID="second")
    )
    first.wait_good("web", good)
    second.wait_good("web", good)
    assert second.stop() == 0  # the second device is off while the bad commit lands

    obs = Observer(broker, "huddle/ban/#")
    bad = origin.app_commit("v2", mode="crash")
    first.wait_app(
        "web",
        lambda a: bad in a.get("bad", []) and a.get("commit") == good,
        "the bad commit rolled back and banned",
        timeout_s=40,
    )
    topic = obs_topic(obs, bad)
    newcomer = Observer(broker, topic)  # a device connecting later finds it retained
    ban = newcomer.wait_for(topic, lambda p, m: p["commit"] == bad)
    newcomer.close()
    body = json.loads(ban.payload)
    assert ban.retain and body["device"] == "first" and body["branch"] == "main"
    assert body["remote"] == str(origin.bare)[: -len(".git")]  # normalized, no file://

    second.start(configs["second"], env=dict(env, HUDDLE_DEVICE_ID="second"))
    state = second.wait_app(
        "web",
        lambda a: "banned by the fleet" in (a.get("last_error") or "") and a,
        "the fleet's ban seen",
        timeout_s=30,
    )
    assert state["commit"] == good and bad not in state.get("bad", [])
    time.sleep(1.5)  # several more polls: still not deployed
    assert second.app("web")["commit"] == good
    assert f"{bad[:12]} banned by the fleet: first rolled it back" in second.output()
    assert bad not in second.app_log("web")

    out = huddle(
        "retry", "web", bad[:10], "--mqtt", broker.url, "--state-dir", str(tmp_path / "laptop")
    )
    assert out.returncode == 0, out.stderr
    assert "lifted 1 fleet ban(s)" in out.stdout
    late = Observer(broker, "huddle/ban/#")
    time.sleep(0.5)
    late.close()
    assert [m for m in late.messages if m.payload] == []  # nothing retained any more
    second.wait(lambda s: "was lifted" in second.output(), "the lift heard")
    obs.close()
    assert first.stop() == 0 and second.stop() == 0


def obs_topic(obs: Observer, commit: str) -> str:
    """The one ban topic carrying `commit` (its app-id level is a hash)."""
    for _ in range(100):
        for m in list(obs.messages):
            if m.topic.endswith("/" + commit):
                return m.topic
        time.sleep(0.1)
    raise AssertionError(f"no ban for {commit} on the broker: {[m.topic for m in obs.messages]}")
