"""The MQTT Reporter: a device's status and events on `<prefix>/<device>/...` (SPEC "MQTT").

`make_reporter()` validates everything a user typed (URL, device id, prefix, CA file) up front
and returns an `MqttReporter`, the `huddle.report.Reporter` the agent drives:

- status, retained QoS 1 on `<prefix>/<device>/status`, is published when a connection is
  made, at most every COALESCE_S after `changed()`, and every `heartbeat_s`;
- the last will (retained) is `{"device", "state": "offline"}`, and `close()` publishes the
  same before it disconnects, since a clean disconnect does not fire a will;
- the last known version and apps, retained on `<prefix>/<device>/last`: a copy of the status
  sent only when the version or an app's commit changes (deploys, not heartbeats), so
  `huddle watch` can show what an offline device ran although its will replaced the status;
- events, QoS 1 not retained, on `<prefix>/<device>/events`; up to MAX_PENDING_EVENTS raised
  while the broker is away are kept (oldest dropped first) and sent after reconnecting.

While disconnected, status is not queued: the snapshot is taken afresh on connect. All
socket work is `huddle.mqtt.link.Link`'s, which never blocks the loop.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from collections.abc import Callable

import huddle
from huddle.mqtt import discovery as hadiscovery
from huddle.mqtt.link import Link
from huddle.mqtt.url import (
    BrokerTarget,
    MqttError,
    client_id,
    parse_url,
    validate_device_id,
    validate_prefix,
)

__all__ = ["make_reporter", "validate_device_id", "MqttReporter"]

log = logging.getLogger("huddle.mqtt")

COALESCE_S = 0.2  # changes closer together than this share one status message
MAX_PENDING_EVENTS = 100
CLOSE_TIMEOUT_S = 2.0


def make_reporter(
    url: str,
    device_id: str,
    apps_snapshot: Callable[[], dict],
    *,
    topic_prefix: str = "huddle",
    ca_file: str | None = None,
    heartbeat_s: float = 30.0,
    ha_discovery: bool = False,
    ha_prefix: str = hadiscovery.DISCOVERY_PREFIX,
    version: str = huddle.__version__,
    connect_timeout_s: float = 5.0,
    backoff_max_s: float = 30.0,
) -> MqttReporter:
    """Build the reporter; raises a HuddleError (MqttError) for any unusable option."""
    target = parse_url(url, ca_file=ca_file)
    validate_device_id(device_id)
    validate_prefix(topic_prefix)
    validate_prefix(ha_prefix)
    if not heartbeat_s > 0:
        raise MqttError(f"heartbeat must be a positive number of seconds, not {heartbeat_s}")
    return MqttReporter(
        target,
        device_id,
        apps_snapshot,
        topic_prefix=topic_prefix,
        heartbeat_s=heartbeat_s,
        ha_discovery=ha_discovery,
        ha_prefix=ha_prefix,
        version=version,
        connect_timeout_s=connect_timeout_s,
        backoff_max_s=backoff_max_s,
    )


class MqttReporter:
    def __init__(
        self,
        target: BrokerTarget,
        device_id: str,
        apps_snapshot: Callable[[], dict],
        *,
        topic_prefix: str = "huddle",
        heartbeat_s: float = 30.0,
        ha_discovery: bool = False,
        ha_prefix: str = hadiscovery.DISCOVERY_PREFIX,
        version: str = huddle.__version__,
        connect_timeout_s: float = 5.0,
        backoff_max_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.device_id = device_id
        self.prefix = topic_prefix
        self.status_topic = f"{topic_prefix}/{device_id}/status"
        self.events_topic = f"{topic_prefix}/{device_id}/events"
        self.last_topic = f"{topic_prefix}/{device_id}/last"
        self._last_key: str | None = None
        self.heartbeat_s = heartbeat_s
        self.ha_discovery = ha_discovery
        self.ha_prefix = ha_prefix
        self.version = version
        self._snapshot = apps_snapshot
        self._clock = clock
        self._monotonic = monotonic
        self._started_at = monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._last_status_at = float("-inf")
        self._change_timer: asyncio.TimerHandle | None = None
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._pending: collections.deque[tuple[str, str, str | None, str, float]] = (
            collections.deque(maxlen=MAX_PENDING_EVENTS)
        )
        self._announced: set[str] = set()
        self._reannounce = True
        self.link = Link(
            target,
            client_id(device_id),
            will=(self.status_topic, self._offline_payload()),
            on_connected=self._on_connected,
            connect_timeout_s=connect_timeout_s,
            backoff_max_s=backoff_max_s,
        )
        log.info(
            "MQTT reporting as %r to %s on %s/...",
            device_id,
            target.redacted,
            self.status_topic.rsplit("/", 1)[0],
        )

    # -- the Reporter interface ----------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background and return at once."""
        self._loop = asyncio.get_running_loop()
        self._started_at = self._monotonic()
        self.link.start()
        self._heartbeat_timer = self._loop.call_later(self.heartbeat_s, self._heartbeat)

    def changed(self) -> None:
        if self._loop is None or self._closing or self._change_timer is not None:
            return
        delay = max(0.0, self._last_status_at + COALESCE_S - self._monotonic())
        self._change_timer = self._loop.call_later(delay, self._flush_change)

    def event(self, app: str, event: str, commit: str | None, detail: str) -> None:
        if self._closing:
            return
        self._pending.append((app, event, commit, detail, self._clock()))
        if self.link.connected:
            self._send_events()

    async def close(self) -> None:
        self._closing = True
        for timer in (self._change_timer, self._heartbeat_timer):
            if timer is not None:
                timer.cancel()
        self._change_timer = self._heartbeat_timer = None
        if self._loop is None:
            return
        if self.link.connected:
            self._send_events()
        await self.link.close(
            last=(self.status_topic, self._offline_payload()), timeout_s=CLOSE_TIMEOUT_S
        )

    # -- payloads --------------------------------------------------------------------------

    def status_payload(self) -> dict:
        return {
            "device": self.device_id,
            "state": "online",
            "ts": round(self._clock(), 3),
            "uptime": round(self._monotonic() - self._started_at, 1),
            "version": self.version,
            "apps": self._snapshot(),
        }

    def _offline_payload(self) -> bytes:
        return _encode({"device": self.device_id, "state": "offline"})

    # -- publishing ------------------------------------------------------------------------

    def _on_connected(self) -> None:
        self._reannounce = True  # the broker may have lost its retained messages
        self._last_key = None
        self._publish_status()
        self._send_events()

    def _flush_change(self) -> None:
        self._change_timer = None
        self._publish_status()

    def _heartbeat(self) -> None:
        assert self._loop is not None
        self._heartbeat_timer = self._loop.call_later(self.heartbeat_s, self._heartbeat)
        self._publish_status()

    def _publish_status(self) -> None:
        if self._closing or not self.link.connected:
            return  # a fresh snapshot goes out on (re)connect
        payload = self.status_payload()
        if self.ha_discovery:
            self._announce(set(payload["apps"]))
        self.link.publish(self.status_topic, _encode(payload), qos=1, retain=True)
        self._last_status_at = self._monotonic()
        key = json.dumps(
            [
                payload["version"],
                sorted(
                    (name, app.get("commit"), app.get("branch"))
                    for name, app in payload["apps"].items()
                    if isinstance(app, dict)
                ),
            ],
            default=str,
        )
        if key != self._last_key:
            self.link.publish(self.last_topic, _encode(payload), qos=1, retain=True)
            self._last_key = key

    def _send_events(self) -> None:
        while self._pending and self.link.connected:
            app, event, commit, detail, ts = self._pending.popleft()
            self.link.publish(
                self.events_topic,
                _encode(
                    {
                        "device": self.device_id,
                        "app": app,
                        "event": event,
                        "commit": commit,
                        "ts": round(ts, 3),
                        "detail": detail,
                    }
                ),
                qos=1,
                retain=False,
            )

    def _announce(self, apps: set[str]) -> None:
        """HA discovery configs for new apps (every connect re-announces), removals for
        apps gone from the snapshot. Published before the status that they read."""
        if not self.link.connected:
            return
        for topic, body in hadiscovery.removals(
            self.prefix, self.device_id, self._announced - apps, self.ha_prefix
        ).items():
            self.link.publish(topic, body, qos=1, retain=True)
        fresh = apps if self._reannounce else apps - self._announced
        for app in sorted(fresh):
            for topic, body in hadiscovery.configs(
                self.prefix, self.device_id, app, self.version, self.ha_prefix
            ).items():
                self.link.publish(topic, body, qos=1, retain=True)
        self._announced = set(apps)
        self._reannounce = False


def _encode(obj: dict) -> bytes:
    # default=str: a stray datetime or Path in a snapshot must not stop reporting
    return json.dumps(obj, default=str, separators=(",", ":")).encode("utf-8")
