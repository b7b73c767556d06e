"""Broker addresses, device ids and client ids: the pure, paho-free half of MQTT reporting.

Both the agent's reporter (`huddle.mqtt`) and the `huddle watch` client parse the same
`mqtt://[user[:pass]@]host[:port]` / `mqtts://...` URLs, take credentials from the URL or from
`HUDDLE_MQTT_USERNAME` / `HUDDLE_MQTT_PASSWORD`, and build the same TLS context. Keeping this
here (stdlib only) means a bad `--mqtt` value is reported as a HuddleError before paho is even
imported, and the password never travels further than `BrokerTarget.password`: every place
that prints a URL prints `BrokerTarget.redacted` instead.
"""

from __future__ import annotations

import hashlib
import os
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from huddle.errors import HuddleError

DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
MAX_DEVICE_ID = 64
MAX_CLIENT_ID = 23  # MQTT 3.1.1 §3.1.3.1: every broker must accept 1..23 characters

_SAFE_CLIENT_CHARS = re.compile(r"[^0-9A-Za-z_-]")


class MqttError(HuddleError):
    """A broker URL, device id or MQTT option a user gave is unusable."""


@dataclass(frozen=True)
class BrokerTarget:
    tls: bool
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None

    @property
    def redacted(self) -> str:
        """The URL fit for logs and messages: the password is never shown."""
        user = ""
        if self.username is not None:
            user = self.username + (":***" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """Verifying client context: the system CA store, or only `ca_file` when given."""
        try:
            ctx = ssl.create_default_context(cafile=self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(f"cannot load CA file {self.ca_file}: {exc}") from exc
        return ctx


def parse_url(
    url: str, ca_file: str | None = None, environ: Mapping[str, str] | None = None
) -> BrokerTarget:
    """`mqtt[s]://[user[:pass]@]host[:port]` -> BrokerTarget, or MqttError saying what is wrong.

    Credentials missing from the URL come from HUDDLE_MQTT_USERNAME / HUDDLE_MQTT_PASSWORD.
    Error messages never repeat the URL itself, since it may hold a password.
    """
    env = os.environ if environ is None else environ
    if not url or not url.strip():
        raise MqttError("MQTT URL is empty (expected mqtt://host[:port] or mqtts://...)")
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise MqttError(f"invalid MQTT URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        shown = scheme or "none"
        raise MqttError(f"invalid MQTT URL: scheme must be mqtt:// or mqtts://, not {shown}")
    if not parts.hostname:
        raise MqttError("invalid MQTT URL: no host (expected mqtt://host[:port])")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttError("invalid MQTT URL: no path, query or fragment allowed after host:port")
    if port == 0:
        raise MqttError("invalid MQTT URL: port 0")
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    if username is None and env.get("HUDDLE_MQTT_USERNAME"):
        username = env["HUDDLE_MQTT_USERNAME"]
    if password is None and env.get("HUDDLE_MQTT_PASSWORD"):
        password = env["HUDDLE_MQTT_PASSWORD"]
    if password is not None and username is None:
        raise MqttError("MQTT password given without a user name")
    if ca_file is not None and scheme != "mqtts":
        raise MqttError("a CA file only applies to mqtts:// URLs")
    if ca_file is not None and not os.path.isfile(ca_file):
        raise MqttError(f"CA file not found: {ca_file}")
    return BrokerTarget(
        tls=scheme == "mqtts",
        host=parts.hostname,
        port=port or DEFAULT_PORTS[scheme],
        username=username,
        password=password,
        ca_file=ca_file,
    )


def validate_device_id(device_id: str) -> str:
    """Return `device_id` when it is usable as one MQTT topic level, else raise MqttError.

    It becomes `<prefix>/<device>/status`, so the wildcards `+` `#`, the separator `/`, NUL,
    control characters and whitespace are refused, as are a leading `$` (broker-reserved
    topics) and more than 64 characters.
    """
    if not isinstance(device_id, str) or not device_id:
        raise MqttError("device id is empty")
    if len(device_id) > MAX_DEVICE_ID:
        raise MqttError(f"device id is longer than {MAX_DEVICE_ID} characters")
    for ch in device_id:
        if ch in "+#/":
            raise MqttError(f"device id {device_id!r} contains {ch!r}, which MQTT topics reserve")
        if ch.isspace() or not ch.isprintable():
            raise MqttError(f"device id {device_id!r} contains whitespace or a control character")
    if device_id.startswith("$"):
        raise MqttError(f"device id {device_id!r} starts with '$' (reserved by brokers)")
    return device_id


def validate_prefix(prefix: str) -> str:
    """A topic prefix: one or more non-empty levels, no wildcards, no leading/trailing `/`."""
    if not prefix or "+" in prefix or "#" in prefix or "\0" in prefix:
        raise MqttError(f"invalid MQTT topic prefix {prefix!r}: empty or has a wildcard")
    if prefix.startswith("/") or prefix.endswith("/") or "//" in prefix:
        raise MqttError(f"invalid MQTT topic prefix {prefix!r}: empty topic level")
    return prefix


def client_id(device_id: str, role: str = "huddle") -> str:
    """`huddle-<device>` when that fits 23 safe characters; otherwise a readable head plus a
    hash of the whole id, so two long ids sharing a head never steal each other's session."""
    plain = f"{role}-{device_id}"
    if len(plain) <= MAX_CLIENT_ID and not _SAFE_CLIENT_CHARS.search(device_id):
        return plain
    digest = hashlib.sha256(device_id.encode("utf-8")).hexdigest()[:8]
    room = MAX_CLIENT_ID - len(role) - len(digest) - 2
    head = _SAFE_CLIENT_CHARS.sub("", device_id)[: max(room, 0)]
    return f"{role}-{head}-{digest}" if head else f"{role}-{digest}"
