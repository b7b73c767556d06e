"""Broker URLs, device ids and client ids: what a user can type and what they get."""

from __future__ import annotations

import pytest

from huddle.errors import HuddleError
from huddle.mqtt.reporter import make_reporter, validate_device_id
from huddle.mqtt.url import client_id, parse_url, validate_prefix


@pytest.mark.parametrize(
    "url, tls, host, port",
    [
        ("mqtt://broker.local", False, "broker.local", 1883),
        ("mqtts://broker.local", True, "broker.local", 8883),
        ("mqtt://10.0.0.5:1884", False, "10.0.0.5", 1884),
        ("MQTTS://[::1]:9999/", True, "::1", 9999),
    ],
)
def test_url_forms_and_default_ports(url, tls, host, port):
    t = parse_url(url, environ={})
    assert (t.tls, t.host, t.port, t.username, t.password) == (tls, host, port, None, None)


def test_credentials_from_url_are_decoded_and_redacted():
    t = parse_url("mqtt://al%40ice:p%3Ass@h:1", environ={"HUDDLE_MQTT_PASSWORD": "other"})
    assert (t.username, t.password) == ("al@ice", "p:ss")
    assert t.redacted == "mqtt://al@ice:***@h:1"
    assert "p:ss" not in t.redacted


def test_credentials_from_environment():
    env = {"HUDDLE_MQTT_USERNAME": "bob", "HUDDLE_MQTT_PASSWORD": "hunter2"}
    t = parse_url("mqtts://h", environ=env)
    assert (t.username, t.password) == ("bob", "hunter2")
    assert "hunter2" not in t.redacted


@pytest.mark.parametrize(
    "url, words",
    [
        ("", "empty"),
        ("http://h", "scheme"),
        ("h:1883", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://h:notaport", "invalid"),
        ("mqtt://h:70000", "invalid"),
        ("mqtt://h/topic", "path"),
        ("mqtt://:secretpw@h", "without a user"),
    ],
)
def test_invalid_urls_are_clear_huddle_errors(url, words):
    with pytest.raises(HuddleError) as exc:
        parse_url(url, environ={})
    assert words in str(exc.value)
    assert "secretpw" not in str(exc.value)


def test_ca_file_must_exist_and_needs_mqtts(tmp_path):
    with pytest.raises(HuddleError, match="not found"):
        parse_url("mqtts://h", ca_file=str(tmp_path / "missing.pem"), environ={})
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    with pytest.raises(HuddleError, match="mqtts"):
        parse_url("mqtt://h", ca_file=str(ca), environ={})


@pytest.mark.parametrize(
    "bad", ["", "a/b", "a+b", "a#", "a\0b", "x" * 65, "two words", "tab\there", "$SYS", "line\n"]
)
def test_device_ids_that_break_topics_are_refused(bad):
    with pytest.raises(HuddleError):
        validate_device_id(bad)
    with pytest.raises(HuddleError):
        make_reporter("mqtt://127.0.0.1", bad, dict)


@pytest.mark.parametrize("good", ["pi-1", "web.eu-west-1.internal", "x" * 64, "Ünïcode_box"])
def test_reasonable_device_ids_pass(good):
    assert validate_device_id(good) == good


@pytest.mark.parametrize("bad", ["", "a/#", "+", "/lead", "trail/", "a//b"])
def test_bad_prefixes_are_refused(bad):
    with pytest.raises(HuddleError):
        validate_prefix(bad)
    with pytest.raises(HuddleError):
        make_reporter("mqtt://127.0.0.1", "pi", dict, topic_prefix=bad)


def test_client_ids_fit_23_safe_characters_and_stay_distinct():
    assert client_id("pi-1") == "huddle-pi-1"
    long_a = "build-server-eu-west-1-0001"
    long_b = "build-server-eu-west-1-0002"
    ids = {client_id(d) for d in (long_a, long_b, "Ünïcode", "a.b", "x" * 64)}
    assert len(ids) == 5
    for cid in ids:
        assert 1 <= len(cid) <= 23 and cid.isascii()
        assert all(c.isalnum() or c in "-_" for c in cid)


def test_make_reporter_rejects_bad_heartbeat():
    with pytest.raises(HuddleError, match="heartbeat"):
        make_reporter("mqtt://127.0.0.1", "pi", dict, heartbeat_s=0)
