"""`huddle watch`: the fleet table logic, and the command as a subprocess against a broker."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import subprocess
import sys
import time

from huddle.mqtt.fleet import Fleet, device_of, format_age, json_line
from huddle.mqtt.reporter import make_reporter
from tests.test_mqtt_support import Observer, await_message


def status(device, apps=None, ts=1000.0, state="online"):
    body = {
        "device": device,
        "state": state,
        "ts": ts,
        "uptime": 5,
        "version": "0.2.0",
        "apps": apps or {},
    }
    return json.dumps(body).encode()


WEB = {
    "web": {
        "commit": "3f2c1ab9" + "0" * 32,
        "branch": "main",
        "running": True,
        "healthy": True,
        "restarts": 0,
        "last_deploy": None,
        "last_error": None,
    }
}


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_device_of_topic():
    assert device_of("huddle/pi-1/status", "huddle") == "pi-1"
    assert device_of("site/a/pi-1/status", "site/a") == "pi-1"
    assert device_of("huddle/pi-1/events", "huddle") is None
    assert device_of("other/pi-1/status", "huddle") is None
    assert device_of("huddle/a/b/status", "huddle") is None


def test_table_shows_devices_state_age_and_short_commits():
    clock = Clock(1060.0)
    fleet = Fleet("huddle", clock=clock)
    fleet.update("huddle/pi-1/status", status("pi-1", WEB, ts=1000.0), retained=True)
    broken = {"api": dict(WEB["web"], commit="9e0d2c4" + "1" * 33, healthy=False)}
    fleet.update("huddle/pi-2/status", status("pi-2", broken, ts=900.0), retained=False)
    table = fleet.table().splitlines()
    assert table[0].split() == ["DEVICE", "STATE", "AGE", "VERSION", "APPS"]
    assert table[1].split() == ["pi-1", "online", "60s", "0.2.0", "web@3f2c1ab", "healthy"]
    # a live message is as fresh as its arrival, whatever the device clock says
    assert table[2].split() == ["pi-2", "online", "0s", "0.2.0", "api@9e0d2c4", "UNHEALTHY"]
    clock.now += 600
    assert "10m" in fleet.table().splitlines()[2]


def test_last_will_turns_a_device_offline_and_keeps_its_apps():
    fleet = Fleet("huddle", clock=Clock(1000.0))
    fleet.update("huddle/pi-1/status", status("pi-1", WEB), retained=False)
    fleet.update("huddle/pi-1/status", b'{"device": "pi-1", "state": "offline"}', False)
    row = fleet.table().splitlines()[1].split()
    assert row[:2] == ["pi-1", "offline"] and "web@3f2c1ab" in row
    assert fleet.line(fleet.devices["pi-1"]).startswith("pi-1 offline 0s web@3f2c1ab")


def test_garbage_and_cleared_reports_do_not_crash():
    fleet = Fleet("huddle", clock=Clock(0.0))
    fleet.update("huddle/x/status", b"not json", retained=True)
    assert fleet.devices["x"].state == "invalid"
    fleet.update("huddle/x/status", b"", retained=True)  # retained message deleted
    assert "x" not in fleet.devices
    assert "no device" in fleet.table()


def test_json_line_wraps_the_raw_payload():
    line = json_line("huddle/pi-1/status", status("pi-1", WEB), True)
    assert json.loads(line) == {
        "topic": "huddle/pi-1/status",
        "retained": True,
        "payload": json.loads(status("pi-1", WEB)),
    }


def test_ages():
    assert [format_age(s) for s in (-3, 5, 119, 120, 7199, 7200, 200000)] == [
        "0s",
        "5s",
        "119s",
        "2m",
        "119m",
        "2h",
        "2d",
    ]


def watch_cmd(*args):
    return [sys.executable, "-m", "huddle", "watch", *args]


async def run_watch(*args, timeout_s=30):
    proc = await asyncio.create_subprocess_exec(
        *watch_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    return proc.returncode, out.decode(), err.decode()


def test_watch_json_streams_reports_of_two_devices(broker):
    async def scenario():
        obs = Observer(broker, "huddle/+/status")
        a = make_reporter(broker.url, "dev-a", lambda: WEB, heartbeat_s=0.5)
        b = make_reporter(broker.url, "dev-b", lambda: {}, heartbeat_s=0.5)
        await a.start()
        await await_message(obs, "huddle/dev-a/status", lambda p, m: True)
        # dev-b starts while watch is already listening: a live, non-retained report
        watch = asyncio.ensure_future(
            run_watch("--mqtt", broker.url, "--json", "--duration", "2.5")
        )
        await asyncio.sleep(1.0)
        await b.start()
        rc, out, err = await watch
        await a.close()
        await b.close()
        obs.close()
        return rc, out, err

    rc, out, err = asyncio.run(scenario())
    assert rc == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines, err
    assert {x["payload"]["device"] for x in lines} == {"dev-a", "dev-b"}
    assert lines[0]["topic"] == "huddle/dev-a/status" and lines[0]["retained"] is True
    first_a = lines[0]["payload"]
    assert set(first_a) == {"device", "state", "ts", "uptime", "version", "apps"}
    assert first_a["apps"] == WEB
    assert any(x["topic"] == "huddle/dev-b/status" and not x["retained"] for x in lines)
    assert sum(x["topic"] == "huddle/dev-a/status" for x in lines) >= 3  # heartbeats


def test_watch_once_prints_the_fleet_with_offline_devices(broker):
    async def scenario():
        obs = Observer(broker, "huddle/+/status")
        up = make_reporter(broker.url, "up-1", lambda: WEB)
        gone = make_reporter(broker.url, "gone-1", lambda: {})
        await up.start()
        await gone.start()
        await await_message(obs, "huddle/gone-1/status", lambda p, m: True)
        await await_message(obs, "huddle/up-1/status", lambda p, m: True)
        await gone.close()
        started = time.monotonic()
        rc, out, err = await run_watch("--mqtt", broker.url, "--once")
        took = time.monotonic() - started
        await up.close()
        obs.close()
        return rc, out, err, took

    rc, out, err, took = asyncio.run(scenario())
    assert rc == 0, err
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:]}
    assert rows["up-1"][1] == "online" and "web@3f2c1ab" in rows["up-1"]
    assert rows["gone-1"][1] == "offline"
    assert took < 8  # --once ends by itself


def test_watch_plain_lines_when_not_a_tty(broker):
    async def scenario():
        r = make_reporter(broker.url, "line-1", lambda: WEB, heartbeat_s=0.4)
        await r.start()
        result = await run_watch("--mqtt", broker.url, "--duration", "1.5")
        await r.close()
        return result

    rc, out, err = asyncio.run(scenario())
    assert rc == 0, err
    lines = out.splitlines()
    assert len(lines) >= 2
    assert all(
        line.startswith("line-1 online ") and "web@3f2c1ab healthy" in line for line in lines
    )
    assert "\x1b[" not in out


def test_watch_redraws_in_place_on_a_tty(broker):
    async def scenario():
        r = make_reporter(broker.url, "tty-1", lambda: WEB)
        await r.start()
        master, slave = pty.openpty()
        proc = await asyncio.create_subprocess_exec(
            *watch_cmd("--mqtt", broker.url, "--duration", "2.5"),
            stdout=slave,
            stderr=subprocess.PIPE,
        )
        os.close(slave)
        out = b""
        loop = asyncio.get_running_loop()
        while proc.returncode is None:
            ready = await loop.run_in_executor(None, select.select, [master], [], [], 0.2)
            if ready[0]:
                try:
                    out += os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
            try:
                await asyncio.wait_for(proc.wait(), 0.01)
            except asyncio.TimeoutError:
                pass  # still running
        await proc.wait()
        os.close(master)
        await r.close()
        return proc.returncode, out.decode(errors="replace")

    rc, out = asyncio.run(scenario())
    assert rc == 0
    assert out.count("\x1b[H\x1b[2J") >= 2  # redrawn, not scrolled
    assert "tty-1" in out and "DEVICE" in out


def test_watch_errors_are_one_line_without_traceback(tmp_path):
    bad = subprocess.run(
        watch_cmd("--mqtt", "http://user:pw123@h"), capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("huddle: invalid MQTT URL") and "Traceback" not in bad.stderr
    assert "pw123" not in bad.stderr
    from tests.mosquitto import free_port

    down = subprocess.run(
        watch_cmd("--mqtt", f"mqtt://127.0.0.1:{free_port()}"),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert down.returncode == 1
    assert "huddle: cannot connect to MQTT broker" in down.stderr
    none = subprocess.run(
        watch_cmd(),
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "HUDDLE_MQTT"},
    )
    assert none.returncode == 1 and "--mqtt" in none.stderr
