"""End to end: `huddle run --mqtt` deploying a real git branch, seen from the broker."""

from __future__ import annotations

import json

from tests.gitutil import Origin, app_config, free_port, write_config
from tests.test_mqtt_support import Observer

STATUS = "huddle/e2e-1/status"
EVENTS = "huddle/e2e-1/events"


def test_huddle_run_reports_status_and_deploy_events(broker, agent_factory, tmp_path):
    origin = Origin(tmp_path / "origin")
    first = origin.app_commit("v1")
    config = write_config(
        tmp_path / "apps" / "web.json", app_config(origin.url, tmp_path / "web", free_port())
    )
    obs = Observer(broker, "huddle/e2e-1/#")
    agent = agent_factory().start(
        config, "--heartbeat", "5", env={"HUDDLE_MQTT": broker.url, "HUDDLE_DEVICE_ID": "e2e-1"}
    )
    try:
        obs.wait_for(
            STATUS,
            lambda p, m: (
                p["state"] == "online"
                and p["apps"].get("web", {}).get("commit") == first
                and p["apps"]["web"]["healthy"] is True
            ),
            timeout_s=30,
        )
        second = origin.app_commit("v2")
        deploy = obs.wait_for(
            EVENTS, lambda p, m: p["event"] == "deploy" and p["commit"] == second, timeout_s=30
        )
        assert json.loads(deploy.payload)["app"] == "web" and not deploy.retain
        obs.wait_for(
            STATUS,
            lambda p, m: (
                p["apps"].get("web", {}).get("commit") == second and p["apps"]["web"]["running"]
            ),
            timeout_s=30,
        )
        late = Observer(broker, STATUS)  # retained: a newcomer sees the device at once
        msg = late.wait_for(STATUS, lambda p, m: p["state"] == "online")
        late.close()
        assert msg.retain
        payload = json.loads(msg.payload)
        assert set(payload) == {"device", "state", "ts", "uptime", "version", "apps"}
        assert set(payload["apps"]["web"]) == {
            "commit",
            "branch",
            "state",
            "running",
            "healthy",
            "restarts",
            "last_deploy",
            "last_error",
        }
        assert payload["apps"]["web"]["state"] in ("trial", "running")
        assert payload["apps"]["web"]["branch"] == "main"
        assert agent.stop() == 0
    finally:
        obs.close()
    gone = Observer(broker, STATUS)
    offline = gone.wait_for(STATUS, lambda p, m: True)
    gone.close()
    assert offline.retain
    assert json.loads(offline.payload) == {"device": "e2e-1", "state": "offline"}
