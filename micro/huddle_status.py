"""Status over MQTT: the retained `huddle/<device>/status` message, heartbeat and last will.

The payload has the host agent's shape, `{"device", "state", "ts", "uptime", "version",
"apps": {MAIN: {"commit", "branch", "running", "healthy", "restarts", "last_deploy",
"last_error"}}}`, and the last will (retained) is `{"device": ID, "state": "offline"}`, also
sent on a clean exit. The tiny MQTT client blocks, but only for its bounded `timeout_s`; a
broker that is down costs one failed connect per backoff step (capped, jittered, reset on
success), so it never stops the deploy and health work. Credentials in the URL are only used
to connect, never published.
"""
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

MAX_BACKOFF_S = const(60)
MQTT_TIMEOUT_S = const(5)


class Status:
    def __init__(self, url, device, timeout_s, keepalive_s):
        self.url = url
        self.device = device
        self.topic = "huddle/%s/status" % device
        self.timeout_s = min(timeout_s, MQTT_TIMEOUT_S)
        self.keepalive_s = keepalive_s  # each heartbeat publish keeps the session alive
        # reconnect at least about once per heartbeat: a status that comes back late is stale
        self.max_backoff_s = min(MAX_BACKOFF_S, max(5, keepalive_s // 2))
        self.client = None
        self.fails = 0
        self.retry_ms = None  # ticks when the next connect may be tried

    def _offline(self):
        import json
        return json.dumps({"device": self.device, "state": "offline"})

    def _connect(self):
        from huddle_os import ticks_ms, ticks_diff, ticks_add, log
        if self.retry_ms is not None and ticks_diff(self.retry_ms, ticks_ms()) > 0:
            return False
        from mqtt import MQTTClient, parse_url
        host, port, user, password, tls = parse_url(self.url)
        c = MQTTClient("huddle-" + self.device, host, port=port, user=user,
                       password=password, keepalive=self.keepalive_s, ssl=tls, timeout_s=self.timeout_s)
        c.set_last_will(self.topic, self._offline(), retain=True, qos=1)
        try:
            c.connect()
        except OSError as e:
            self._failed(e, c)
            return False
        log("mqtt: connected to %s:%d" % (host, port))
        self.client = c
        return True

    def _failed(self, err, client):
        import random
        from huddle_os import ticks_ms, ticks_add, log
        self.fails += 1
        delay = min(2 ** min(self.fails, 8), self.max_backoff_s) * (0.5 + random.random() / 2)
        self.retry_ms = ticks_add(ticks_ms(), int(delay * 1000))
        log("mqtt: %s (retry in %ds)" % (err, delay))
        self.client = None
        try:
            client.close()
        except Exception:  # the socket is already gone; nothing left to release
            pass

    def publish(self, payload):
        """Publishes the status (retained, QoS 1); False when the broker is unreachable."""
        if self.client is None and not self._connect():
            return False
        c = self.client
        try:
            c.publish(self.topic, payload, retain=True, qos=1)
        except OSError as e:
            self._failed(e, c)
            return False
        self.fails = 0
        self.retry_ms = None
        return True

    def poll(self):
        """Handles PINGRESP/PUBACK between publishes; a dead connection is dropped."""
        if self.client is not None:
            c = self.client
            try:
                c.poll()
            except OSError as e:
                self._failed(e, c)

    def close(self):
        """Clean exit: the offline message (as the will would say), then disconnect."""
        c, self.client = self.client, None
        if c is None:
            return
        try:
            c.publish(self.topic, self._offline(), retain=True, qos=1)
            c.disconnect()
        except OSError:  # leaving anyway: the broker will send the will instead
            pass
        try:
            c.close()
        except Exception:  # the socket may already be closed by disconnect()
            pass
