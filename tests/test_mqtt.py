"""The MQTT reporter against a real Mosquitto, observed by a real paho subscriber."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from huddle.mqtt.reporter import make_reporter
from tests.test_mqtt_support import Blackhole, Observer, Ticker, await_message

STATUS_KEYS = {"device", "state", "ts", "uptime", "version", "apps"}
EVENT_KEYS = {"device", "app", "event", "commit", "ts", "detail"}


def app_state(commit="a" * 40, healthy=True, restarts=0):
    return {
        "commit": commit,
        "branch": "main",
        "running": True,
        "healthy": healthy,
        "restarts": restarts,
        "last_deploy": 1700000000.0,
        "last_error": None,
    }


def online(p, m=None):
    return p.get("state") == "online"


def test_status_retained_with_exact_fields_after_start(broker):
    apps = {"web": app_state()}

    async def scenario():
        r = make_reporter(broker.url, "pi-1", lambda: apps, version="9.9.9")
        await r.start()
        first = Observer(broker, "huddle/pi-1/status")
        await await_message(first, "huddle/pi-1/status", online)
        first.close()
        # a dashboard subscribing after the fact gets the status because it is retained
        late = Observer(broker, "huddle/pi-1/status")
        msg = await await_message(late, "huddle/pi-1/status", online)
        late.close()
        await r.close()
        return msg

    before = time.time()
    msg = asyncio.run(scenario())
    assert msg.retain and msg.qos == 1
    payload = json.loads(msg.payload)
    assert set(payload) == STATUS_KEYS
    assert payload["device"] == "pi-1" and payload["state"] == "online"
    assert payload["version"] == "9.9.9"
    assert payload["apps"] == apps
    assert before <= payload["ts"] <= time.time()
    assert 0 <= payload["uptime"] < 30


def test_change_is_published_and_coalesced(broker):
    apps = {"web": app_state(commit="1" * 40)}

    async def scenario():
        obs = Observer(broker, "huddle/pi-2/status")
        r = make_reporter(broker.url, "pi-2", lambda: apps, heartbeat_s=60)
        await r.start()
        await await_message(obs, "huddle/pi-2/status", online)
        count_before = len(obs.on("huddle/pi-2/status"))
        for i in range(50):  # a burst of changes, as when a deploy touches every field
            apps["web"] = app_state(commit=f"{i:040d}", restarts=i)
            r.changed()
            await asyncio.sleep(0.005)
        await await_message(
            obs, "huddle/pi-2/status", lambda p, m: p["apps"]["web"]["restarts"] == 49
        )
        await asyncio.sleep(0.5)
        burst = len(obs.on("huddle/pi-2/status")) - count_before
        await r.close()
        obs.close()
        return burst

    burst = asyncio.run(scenario())
    assert 1 <= burst <= 5, f"{burst} status messages for one burst of 50 changes"


def test_events_are_published_not_retained(broker):
    async def scenario():
        obs = Observer(broker, "huddle/pi-3/#")
        r = make_reporter(broker.url, "pi-3", lambda: {})
        await r.start()
        await await_message(obs, "huddle/pi-3/status", online)
        r.event("web", "deploy", "b" * 40, "deployed b from main")
        r.event("web", "rollback", "a" * 40, "b never became healthy")
        msg = await await_message(obs, "huddle/pi-3/events", lambda p, m: p["event"] == "rollback")
        await r.close()
        obs.close()
        return obs, msg

    obs, msg = asyncio.run(scenario())
    events = obs.payloads("huddle/pi-3/events")
    assert [e["event"] for e in events] == ["deploy", "rollback"]
    assert set(events[0]) == EVENT_KEYS
    assert events[0]["device"] == "pi-3" and events[0]["app"] == "web"
    assert events[0]["commit"] == "b" * 40 and events[0]["detail"] == "deployed b from main"
    assert isinstance(events[0]["ts"], float)
    assert not msg.retain
    late = Observer(broker, "huddle/pi-3/events")
    time.sleep(0.3)
    assert late.on("huddle/pi-3/events") == []  # nothing retained for newcomers
    late.close()


def test_heartbeat_republishes_status_without_changes(broker):
    async def scenario():
        obs = Observer(broker, "huddle/pi-4/status")
        r = make_reporter(broker.url, "pi-4", lambda: {"web": app_state()}, heartbeat_s=0.3)
        await r.start()
        await await_message(obs, "huddle/pi-4/status", lambda p, m: p["uptime"] >= 0.8)
        await r.close()
        obs.close()
        return obs.payloads("huddle/pi-4/status")

    beats = [p for p in asyncio.run(scenario()) if p["state"] == "online"]
    assert len(beats) >= 3
    assert [b["ts"] for b in beats] == sorted(b["ts"] for b in beats)


def test_clean_close_publishes_retained_offline(broker):
    async def scenario():
        r = make_reporter(broker.url, "pi-5", lambda: {})
        await r.start()
        obs = Observer(broker, "huddle/pi-5/status")
        await await_message(obs, "huddle/pi-5/status", online)
        obs.close()
        started = time.monotonic()
        await r.close()
        return time.monotonic() - started

    assert asyncio.run(scenario()) < 3
    late = Observer(broker, "huddle/pi-5/status")
    msg = late.wait_for("huddle/pi-5/status", lambda p, m: True)
    late.close()
    assert msg.retain
    assert json.loads(msg.payload) == {"device": "pi-5", "state": "offline"}


DRIVER = textwrap.dedent("""
    import asyncio, sys
    from huddle.mqtt.reporter import make_reporter

    async def main():
        r = make_reporter(sys.argv[1], sys.argv[2], lambda: {"web": {"commit": "c0ffee"}})
        await r.start()
        while True:
            await asyncio.sleep(3600)

    asyncio.run(main())
""")


def test_last_will_after_sigkill(broker, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    proc = subprocess.Popen([sys.executable, str(script), broker.url, "pi-kill"])
    try:
        obs = Observer(broker, "huddle/pi-kill/status")
        obs.wait_for("huddle/pi-kill/status", online)
        obs.close()
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()
    late = Observer(broker, "huddle/pi-kill/status")
    msg = late.wait_for("huddle/pi-kill/status", lambda p, m: p["state"] == "offline")
    late.close()
    assert msg.retain
    assert json.loads(msg.payload) == {"device": "pi-kill", "state": "offline"}


def test_broker_outage_keeps_loop_responsive_and_reconnects(broker, caplog):
    caplog.set_level(logging.INFO, logger="huddle.mqtt")

    async def scenario():
        r = make_reporter(
            broker.url, "pi-6", lambda: {"web": app_state()}, heartbeat_s=60, backoff_max_s=1.0
        )
        await r.start()
        obs = Observer(broker, "huddle/pi-6/status")
        await await_message(obs, "huddle/pi-6/status", online)
        obs.close()
        ticker = Ticker()
        broker.kill()
        await asyncio.sleep(2.0)  # broker down: reporter retries in the background
        assert not r.link.connected
        r.event("web", "restart", "a" * 40, "while the broker was away")
        r.changed()
        down_late = ticker.worst_late_s
        restarted_at = time.time()
        # Started from inside the loop on purpose: the reporter cannot reconnect before the
        # observer has subscribed, or the (unretained) event could pass before anyone listens.
        broker.start()
        obs = Observer(broker, "huddle/pi-6/#")
        msg = await await_message(
            obs,
            "huddle/pi-6/status",
            lambda p, m: p["state"] == "online" and p["ts"] >= restarted_at - 0.5,
            timeout_s=10,
        )
        await await_message(obs, "huddle/pi-6/events", lambda p, m: p["event"] == "restart")
        obs.close()
        late = Observer(broker, "huddle/pi-6/status")  # the new broker holds it retained
        msg = await await_message(
            late, "huddle/pi-6/status", lambda p, m: m.retain and p["ts"] >= restarted_at - 0.5
        )
        late.close()
        await r.close()
        await ticker.stop()
        return down_late, ticker, msg

    down_late, ticker, msg = asyncio.run(scenario())
    assert ticker.ticks > 40
    # a hang guard, not a benchmark: a blocking connect would stall the loop for seconds
    assert down_late < 1.0 and ticker.worst_late_s < 1.0
    assert msg.retain
    assert "lost" in caplog.text


@pytest.mark.parametrize("scheme", ["mqtt", "mqtts"])
def test_blackholed_broker_never_blocks_the_loop(scheme, caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="huddle.mqtt")
    hole = Blackhole()
    ca = tmp_path / "ca.pem"
    if scheme == "mqtts":
        from tests.test_mqtt_support import make_ca

        ca = make_ca(tmp_path / "ca")["cafile"]

    async def scenario():
        r = make_reporter(
            f"{scheme}://127.0.0.1:{hole.port}",
            "pi-7",
            lambda: {},
            ca_file=str(ca) if scheme == "mqtts" else None,
            connect_timeout_s=1.0,
            backoff_max_s=0.5,
        )
        ticker = Ticker()
        await r.start()
        await asyncio.sleep(3.5)
        connected = r.link.connected
        started = time.monotonic()
        await r.close()
        closing_s = time.monotonic() - started
        await ticker.stop()
        return connected, ticker, closing_s

    try:
        connected, ticker, closing_s = asyncio.run(scenario())
    finally:
        hole.close()
    assert not connected
    assert ticker.worst_late_s < 1.0, f"loop stalled {ticker.worst_late_s:.2f}s"
    assert closing_s < 1.0
    # it did try, and gave up each attempt on its own timeout
    assert caplog.text.count("TimeoutError") + caplog.text.count("CONNACK") >= 2


def test_secrets_stay_out_of_payloads_and_logs(broker, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HUDDLE_MQTT_PASSWORD", "env-s3cret")
    url = broker.url.replace("mqtt://", "mqtt://alice:url-s3cret@")

    async def scenario(url):
        obs = Observer(broker, "#")
        r = make_reporter(url, "pi-8", lambda: {"web": app_state()})
        await r.start()
        await await_message(obs, "huddle/pi-8/status", online)
        r.event("web", "deploy", "a" * 40, "ok")
        await await_message(obs, "huddle/pi-8/events", lambda p, m: True)
        await r.close()
        obs.close()
        return obs

    obs = asyncio.run(scenario(url))
    obs_env = asyncio.run(scenario(broker.url.replace("mqtt://", "mqtt://bob@")))
    everything = b"".join(m.payload for m in obs.messages + obs_env.messages)
    assert b"s3cret" not in everything
    assert "s3cret" not in caplog.text
    assert "mqtt://alice:***@127.0.0.1" in caplog.text  # the URL is logged, redacted
    # ...and the credentials really were used: the broker logs the user names
    broker_log = broker.log_path.read_text()
    assert "u'alice'" in broker_log and "u'bob'" in broker_log


def test_ha_discovery_configs(broker):
    async def scenario():
        obs = Observer(broker, "homeassistant/#")
        r = make_reporter(broker.url, "pi.9", lambda: {"web": app_state()}, ha_discovery=True)
        await r.start()
        await await_message(
            obs, "homeassistant/sensor/huddle_pi_9/web_commit/config", lambda p, m: True
        )
        await r.close()
        obs.close()
        return obs

    asyncio.run(scenario())
    obs = Observer(broker, "homeassistant/#")  # HA starting later finds them retained
    obs.wait_for("homeassistant/sensor/huddle_pi_9/web_commit/config", lambda p, m: True)
    time.sleep(0.3)
    obs.close()
    topics = {m.topic for m in obs.messages}
    assert topics == {
        "homeassistant/binary_sensor/huddle_pi_9/web_running/config",
        "homeassistant/binary_sensor/huddle_pi_9/web_healthy/config",
        "homeassistant/sensor/huddle_pi_9/web_commit/config",
    }
    assert all(m.retain for m in obs.messages)
    running = obs.payloads("homeassistant/binary_sensor/huddle_pi_9/web_running/config")[0]
    assert running["state_topic"] == "huddle/pi.9/status"
    assert running["availability_topic"] == "huddle/pi.9/status"
    assert running["availability_template"] == "{{ value_json.state }}"
    assert running["payload_not_available"] == "offline"
    assert running["device"]["identifiers"] == ["huddle_pi_9"]
    assert running["unique_id"] == "huddle_pi_9_web_running"
    assert "'running'" in running["value_template"]
