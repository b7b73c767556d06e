"""Fleet coordination pieces: app identity, trigger messages, rollout waves (stable across
restarts, canaries first), triggers through a real Mosquitto (one device, all, one app,
spread bounds, rate limit), Home Assistant templates rendered by Jinja as HA does, and what
`huddle watch` shows of a device that went offline."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from huddle.config import load_file
from huddle.mqtt import coordination as co
from huddle.mqtt import discovery
from huddle.mqtt.fleet import Fleet
from huddle.mqtt.fleetlink import BAN_WAIT_S, FleetLink, MqttAppFleet
from huddle.mqtt.link import Link
from huddle.mqtt.url import parse_url

PY = sys.executable


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(tmp_path: Path, name: str = "web", **rollout) -> object:
    body = {
        "repository": {
            "remote path": "https://u:pw@Git.Example.com/team/web.git/",
            "local path": str(tmp_path / name),
            "branch": "main",
        },
        "timing": {"minimum": 60, "maximum": 120},
        "application": {"start": "true"},
        "health": {"type": "http", "port": 8080, "grace": 10, "interval": 5, "retries": 3},
    }
    if rollout:
        body["rollout"] = rollout
    path = tmp_path / "apps" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(body))
    return load_file(path)


# -- identity and messages -------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://git.example.com/team/web.git",
        "https://u:secret@GIT.example.com/team/web/",
        "ssh://git@git.example.com/team/web.git",
        "git@git.example.com:team/web.git",
        "https://git.example.com:443/team/web",
        "git://git.example.com/team//web.git",
    ],
)
def test_one_repo_reached_many_ways_is_one_identity(url):
    assert co.normalize_remote(url) == "git.example.com/team/web"


def test_identity_keeps_what_tells_repos_apart():
    assert co.normalize_remote("https://h:8443/a/web") == "h:8443/a/web"
    assert co.normalize_remote("/srv/git/web.git") == "/srv/git/web"
    assert co.normalize_remote("file:///srv/git/web.git/") == "/srv/git/web"
    assert co.app_id("h/a/web", "main") != co.app_id("h/a/web", "dev")
    assert (
        "secret"
        not in co.ban_payload(
            "c" * 40, co.normalize_remote("https://u:secret@h/a"), "main", "pi", "web", "why", 1.0
        ).decode()
    )


def test_trigger_messages_round_trip_and_bad_ones_are_refused():
    assert co.parse_trigger(co.trigger_payload(["web"], 2.5)) == (("web",), 2.5)
    assert co.parse_trigger(b"") == ((), co.DEFAULT_SPREAD_S)  # the board's minimal form
    assert co.parse_trigger(b'{"spread": 1e9}')[1] == co.MAX_SPREAD_S
    for bad in (
        b"{",
        b"[]",
        b'{"apps": 3}',
        b'{"spread": -1}',
        b'{"spread": "x"}',
        b'{"spread": true}',
        b"\xff",
    ):
        with pytest.raises(co.TriggerError):
            co.parse_trigger(bad)


def test_rollout_keys_are_checked(tmp_path):
    assert config(tmp_path).rollout.spread_s == 0 and config(tmp_path).rollout.canary == ()
    rollout = config(tmp_path, spread=600, canary=["pi-0*"], wait=30).rollout
    assert (rollout.spread_s, rollout.canary, rollout.wait_s) == (600.0, ("pi-0*",), 30.0)
    ini = tmp_path / "apps" / "api.ini"
    ini.write_text("[repository]\nlocal path = x\n[rollout]\nspread = 60\ncanary = true\n")
    assert load_file(ini).rollout.canary == ("*",)
    ini.write_text("[repository]\nlocal path = x\n[rollout]\nspread = soon\ncanary = ,\n")
    with pytest.raises(Exception) as err:
        load_file(ini)
    assert "rollout.spread" in str(err.value) and "rollout.canary" in str(err.value)


# -- rollout waves ---------------------------------------------------------------------------


def test_waves_spread_devices_evenly_and_canaries_go_first(tmp_path):
    cfg = config(tmp_path, spread=600, canary=["canary-*"])
    commit = "a" * 40
    delays = {d: co.wave_delay_s(cfg, d, commit) for d in [f"pi-{i}" for i in range(200)]}
    wait = co.default_wait_s(cfg)
    assert wait == 120 + 2 * (10 + 3 * 5) + co.CANARY_MARGIN_S
    assert all(wait <= d < wait + 600 for d in delays.values())
    assert len([d for d in delays.values() if d < wait + 300]) in range(70, 131)
    assert co.wave_delay_s(cfg, "canary-1", commit) == 0
    # another commit, another order: no device is always last
    order = sorted(delays, key=delays.get)
    assert order != sorted(delays, key=lambda d: co.wave_delay_s(cfg, d, "b" * 40))
    assert co.wave_delay_s(config(tmp_path), "pi-1", commit) == 0  # no rollout section


def make_fleet(tmp_path, clock, mono, device="pi-7", cfg=None):
    link = Link(parse_url("mqtt://127.0.0.1:1"), "test")  # never started: no socket
    fleet = FleetLink(
        link,
        "huddle",
        device,
        tmp_path / "state",
        app_names=lambda: ["web"],
        poll_soon=lambda app, d: None,
        clock=clock,
        monotonic=mono,
    )
    return fleet.app_fleet(cfg)


def test_a_wave_counts_from_the_first_sight_across_restarts(tmp_path):
    cfg = config(tmp_path, spread=600, wait=0)
    commit = "c" * 40
    wall, mono = Clock(1_000_000.0), Clock(50.0)
    first = make_fleet(tmp_path, wall, mono, cfg=cfg)
    first.heard = True
    delay = first.rollout_delay_s(commit)
    assert delay == pytest.approx(co.wave_delay_s(cfg, "pi-7", commit))
    deploy_at_wall = wall.now + delay
    assert delay > 0
    # the agent restarts halfway (a new monotonic origin): the same moment to deploy
    wall.now += delay / 2
    mono.now = 3.0
    again = make_fleet(tmp_path, wall, mono, cfg=cfg)
    again.heard = True
    assert wall.now + again.rollout_delay_s(commit) == pytest.approx(deploy_at_wall)
    # the order of devices does not change with restarts either
    devices = [f"pi-{i}" for i in range(20)]
    assert sorted(devices, key=lambda d: co.wave_delay_s(cfg, d, commit)) == sorted(
        devices, key=lambda d: co.wave_delay_s(cfg, d, commit)
    )


def test_a_new_agent_waits_briefly_for_the_fleets_bans(tmp_path):
    wall, mono = Clock(1000.0), Clock(0.0)
    fleet = make_fleet(tmp_path, wall, mono, cfg=config(tmp_path))
    assert fleet.rollout_delay_s("d" * 40) == pytest.approx(BAN_WAIT_S)  # not heard yet
    fleet.heard = True
    assert fleet.rollout_delay_s("e" * 40) == 0.0
    mono.now = BAN_WAIT_S + 1  # a broker that never answers: deploys go on
    late = make_fleet(tmp_path, wall, Clock(BAN_WAIT_S + 1), cfg=config(tmp_path))
    late.wait_until = 0.0
    assert late.rollout_delay_s("f" * 40) == 0.0


def test_bans_from_the_broker_are_reported_and_lifted(tmp_path):
    fleet: MqttAppFleet = make_fleet(tmp_path, Clock(0), Clock(0), cfg=config(tmp_path))
    commit = "b" * 40
    topic = co.ban_topic("huddle", fleet.key, commit)
    fleet.on_ban(
        topic,
        co.ban_payload(
            commit, "r", "main", "pi-17", "web", "not healthy at the end of its window", 5.0
        ),
        True,
    )
    assert fleet.banned(commit) == (
        "banned by the fleet: pi-17 rolled it back (not healthy at the end of its window)"
    )
    assert fleet.banned("a" * 40) is None
    fleet.on_ban(topic, b"", True)
    assert fleet.banned(commit) is None
    fleet.on_ban(co.ban_topic("huddle", fleet.key, "not-a-commit"), b"{}", True)
    assert fleet.bans == {}


# -- triggers through a real broker ----------------------------------------------------------


def run_trigger(broker, *args):
    return subprocess.run(
        [PY, "-m", "huddle", "trigger", "--mqtt", broker.url, *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_triggers_reach_one_device_all_devices_or_one_app(broker, tmp_path):
    async def scenario():
        calls = {"pi-1": [], "pi-2": []}
        links = []
        mono = Clock(0.0)
        for device in calls:
            link = Link(parse_url(broker.url), f"t-{device}")
            FleetLink(
                link,
                "huddle",
                device,
                tmp_path / device,
                app_names=lambda: ["web", "api"],
                monotonic=mono,
                poll_soon=lambda app, d, device=device: calls[device].append((app, d)),
            )
            link.start()
            links.append(link)
        loop = asyncio.get_running_loop()

        async def until(pred, what):
            for _ in range(200):
                if pred():
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"timed out waiting for {what}: {calls}")

        await until(lambda: all(link.connected for link in links), "connections")
        await asyncio.sleep(0.3)  # the SUBACKs
        out = await loop.run_in_executor(
            None, run_trigger, broker, "--device", "pi-1", "--app", "web", "--spread", "3"
        )
        assert out.returncode == 0, out.stderr
        await until(lambda: calls["pi-1"], "pi-1's trigger")
        assert calls["pi-1"][0][0] == "web" and 0 <= calls["pi-1"][0][1] <= 3
        mono.now += 100  # past the rate limit
        out = await loop.run_in_executor(None, run_trigger, broker, "--spread", "0")
        assert out.returncode == 0, out.stderr
        await until(lambda: len(calls["pi-2"]) == 2 and len(calls["pi-1"]) == 3, "all")
        assert sorted(a for a, _ in calls["pi-2"]) == ["api", "web"]
        assert all(d == 0 for _, d in calls["pi-2"])
        for link in links:
            await link.close()
        return calls

    calls = asyncio.run(scenario())
    assert len(calls["pi-1"]) == 3 and len(calls["pi-2"]) == 2  # pi-2 not told the first


def test_triggers_are_rate_limited_per_app(tmp_path):
    mono = Clock(0.0)
    calls = []
    link = Link(parse_url("mqtt://127.0.0.1:1"), "test")
    fleet = FleetLink(
        link,
        "huddle",
        "pi-1",
        tmp_path,
        app_names=lambda: ["web", "api"],
        poll_soon=lambda app, d: calls.append((app, mono.now + d)),
        monotonic=mono,
    )
    topic = co.trigger_topic("huddle")
    for _ in range(50):  # a burst: one poll per app
        fleet.on_trigger(topic, co.trigger_payload(spread_s=2), False)
    assert sorted(a for a, _ in calls) == ["api", "web"]
    assert all(0 <= at <= 2 for _, at in calls)
    mono.now = 3.0  # the poll happened; another trigger comes too soon
    fleet.on_trigger(topic, co.trigger_payload(["web"], 0), False)
    web = [at for a, at in calls if a == "web"]
    assert len(web) == 2 and web[1] - web[0] >= co.TRIGGER_MIN_INTERVAL_S
    fleet.on_trigger(topic, b"not json", False)  # ignored, said once
    fleet.on_trigger(co.trigger_topic("huddle"), co.trigger_payload(["other"]), False)
    assert len(calls) == 3


def test_trigger_command_refuses_bad_options(broker):
    assert "--spread" in run_trigger(broker, "--spread", "-1").stderr
    out = run_trigger(broker, "--device", "a/b")
    assert out.returncode == 1 and out.stderr.startswith("huddle: ")
    out = subprocess.run(
        [PY, "-m", "huddle", "trigger"],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 1 and "--mqtt" in out.stderr


# -- Home Assistant and watch ----------------------------------------------------------------


def render(template: str, status: dict) -> str:
    jinja2 = pytest.importorskip("jinja2")
    return jinja2.Environment().from_string(template).render(value_json=status).strip()


def test_ha_shows_unknown_not_empty_or_problem_while_nothing_is_known():
    configs = discovery.configs("huddle", "pi-1", "web", "0.2", ha_prefix="ha")
    assert all(t.startswith("ha/") for t in configs)
    by_suffix = {t.rsplit("/", 2)[-2].rsplit("_", 1)[-1]: json.loads(b) for t, b in configs.items()}
    health, commit = by_suffix["healthy"]["value_template"], by_suffix["commit"]["value_template"]
    app = {"commit": None, "running": False, "healthy": None, "state": "stopped"}
    status = {"state": "online", "apps": {"web": app}}
    assert render(commit, status) == "None"  # HA: unknown
    assert render(health, status) == "None"
    status["apps"]["web"] = dict(app, commit="3f2c1ab9" * 5, healthy=False)
    assert render(commit, status) == "3f2c1ab93f2c" and render(health, status) == "ON"
    status["apps"]["web"]["healthy"] = True
    assert render(health, status) == "OFF"
    assert render(health, {"state": "offline"}) == "None"


def test_watch_shows_what_an_offline_device_ran_last():
    fleet = Fleet("huddle", clock=Clock(1000.0))
    apps = {"web": {"commit": "3f2c1ab9" * 5, "running": True, "healthy": True}}
    # watch started after the device died: the retained will and the retained `last`
    fleet.update("huddle/pi-1/status", b'{"device": "pi-1", "state": "offline"}', True)
    fleet.update(
        "huddle/pi-1/last",
        json.dumps({"state": "online", "version": "0.2.0", "apps": apps}).encode(),
        True,
    )
    row = fleet.table().splitlines()[1].split()
    assert row[:2] == ["pi-1", "offline"] and "0.2.0" in row and "web@3f2c1ab" in row
