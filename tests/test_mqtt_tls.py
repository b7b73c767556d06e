"""mqtts:// against a real Mosquitto TLS listener with a CA made in the test."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from huddle.mqtt.reporter import make_reporter
from tests.test_mqtt_support import Observer, Ticker, await_message


def test_status_over_tls_with_a_private_ca(tls_broker):
    assert tls_broker.url.startswith("mqtts://")

    async def scenario():
        r = make_reporter(
            tls_broker.url, "tls-1", lambda: {"web": {"commit": "f00d"}}, ca_file=tls_broker.cafile
        )
        ticker = Ticker()
        await r.start()
        obs = Observer(tls_broker, "huddle/tls-1/#", cafile=tls_broker.cafile)
        msg = await await_message(obs, "huddle/tls-1/status", lambda p, m: p["state"] == "online")
        r.event("web", "deploy", "f00d", "over TLS")
        await await_message(obs, "huddle/tls-1/events", lambda p, m: True)
        obs.close()
        await r.close()
        await ticker.stop()
        return msg, ticker

    msg, ticker = asyncio.run(scenario())
    assert json.loads(msg.payload)["apps"] == {"web": {"commit": "f00d"}}
    assert ticker.worst_late_s < 1.0
    late = Observer(tls_broker, "huddle/tls-1/status", cafile=tls_broker.cafile)
    offline = late.wait_for("huddle/tls-1/status", lambda p, m: True)
    late.close()
    assert json.loads(offline.payload)["state"] == "offline"  # clean close over TLS too


def test_untrusted_certificate_is_refused_and_retried(tls_broker, caplog):
    caplog.set_level(logging.WARNING, logger="huddle.mqtt")

    async def scenario():
        # no ca_file: the system store does not know the test CA, so verification must fail
        r = make_reporter(tls_broker.url, "tls-2", dict, backoff_max_s=0.3)
        ticker = Ticker()
        await r.start()
        await asyncio.sleep(1.5)
        connected = r.link.connected
        await r.close()
        await ticker.stop()
        return connected, ticker

    connected, ticker = asyncio.run(scenario())
    assert not connected
    assert ticker.worst_late_s < 1.0
    assert caplog.text.count("CERTIFICATE_VERIFY_FAILED") >= 2
    late = Observer(tls_broker, "huddle/tls-2/status", cafile=tls_broker.cafile)
    time.sleep(0.3)
    assert late.on("huddle/tls-2/status") == []  # nothing was ever published
    late.close()
