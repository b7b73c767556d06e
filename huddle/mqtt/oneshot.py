"""Short-lived MQTT clients for the command line (`huddle trigger`, `huddle retry --mqtt`).

A command is not the agent: it may block, so it uses paho's own blocking `loop()`, always
with a deadline. `client_for` builds a connected client the way `huddle watch` needs it too;
`publish` sends messages and waits for every PUBACK; `retained` collects what the broker
holds under a topic filter (retained messages arrive right after the SUBACK, then nothing:
a short lull ends the wait). Errors are MqttErrors naming the broker, never its password.
"""

from __future__ import annotations

import os
import time
from typing import Any

from huddle.mqtt.url import BrokerTarget, MqttError, client_id

TIMEOUT_S = 10.0
QUIET_S = 0.5


def client_for(target: BrokerTarget, role: str):
    """A paho client connected (CONNECT sent) to `target`; paho imported here."""
    try:
        import paho.mqtt.client as paho
        from paho.mqtt.enums import CallbackAPIVersion
    except ImportError as exc:
        raise MqttError("this command needs paho-mqtt: pip install 'huddle[mqtt]'") from exc
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id(f"{os.uname().nodename}-{os.getpid()}", role),
        protocol=paho.MQTTv311,
        clean_session=True,
    )
    if target.username is not None:
        client.username_pw_set(target.username, target.password)
    if target.tls:
        client.tls_set_context(target.ssl_context())
    try:
        client.connect(target.host, target.port, keepalive=30)
    except OSError as exc:  # ssl errors are OSErrors too
        raise MqttError(f"cannot connect to MQTT broker {target.redacted}: {exc}") from exc
    return client


def _run(client, target: BrokerTarget, done, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        left = deadline - time.monotonic()
        if left <= 0:
            raise MqttError(f"MQTT broker {target.redacted}: timed out {what}")
        if client.loop(timeout=min(left, 0.1)) != 0:
            raise MqttError(f"MQTT broker {target.redacted}: connection lost {what}")


def publish(
    target: BrokerTarget,
    messages: list[tuple[str, bytes, bool]],
    role: str,
    timeout_s: float = TIMEOUT_S,
) -> None:
    """Send (topic, payload, retain) messages at QoS 1; returns once each is acknowledged."""
    client = client_for(target, role)
    state: dict[str, Any] = {"up": False, "refused": None, "acked": set()}

    def on_connect(c, u, flags, reason_code, properties):
        if reason_code.is_failure:
            state["refused"] = str(reason_code)
        else:
            state["up"] = True

    client.on_connect = on_connect
    client.on_publish = lambda c, u, mid, rc, p: state["acked"].add(mid)
    try:
        _run(client, target, lambda: state["up"] or state["refused"], timeout_s, "connecting")
        if state["refused"]:
            raise MqttError(
                f"MQTT broker {target.redacted} refused the connection: {state['refused']}"
            )
        mids = [client.publish(t, p, qos=1, retain=r).mid for t, p, r in messages]
        _run(
            client,
            target,
            lambda: all(m in state["acked"] for m in mids),
            timeout_s,
            "waiting for the broker to acknowledge",
        )
    finally:
        client.disconnect()


def retained(
    target: BrokerTarget, topic_filter: str, role: str, timeout_s: float = TIMEOUT_S
) -> dict[str, bytes]:
    """topic -> payload of every non-empty retained message under `topic_filter`."""
    client = client_for(target, role)
    got: dict[str, bytes] = {}
    state: dict[str, float | None] = {"since": None}
    refused: list[str] = []

    def on_connect(c, u, flags, reason_code, properties):
        if reason_code.is_failure:
            refused.append(str(reason_code))
        else:
            c.subscribe(topic_filter, qos=1)

    def on_message(c, u, msg):
        if msg.retain and msg.payload:
            got[msg.topic] = msg.payload
        state["since"] = time.monotonic()

    client.on_connect = on_connect
    client.on_subscribe = lambda *a: state.update(since=time.monotonic())
    client.on_message = on_message
    try:
        _run(
            client,
            target,
            lambda: (
                bool(refused)
                or (state["since"] is not None and time.monotonic() - state["since"] >= QUIET_S)
            ),
            timeout_s,
            f"reading {topic_filter}",
        )
        if refused:
            raise MqttError(f"MQTT broker {target.redacted} refused the connection: {refused[0]}")
    finally:
        client.disconnect()
    return got
