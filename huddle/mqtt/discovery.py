"""Home Assistant MQTT discovery messages for one huddle device (opt-in, `--ha-discovery`).

HA discovers entities from retained configs on
`homeassistant/<component>/<node_id>/<object_id>/config`. Per app we announce two
binary_sensors (`running`, `healthy`) and one sensor (the deployed commit), all reading the
device's existing status topic through `value_template`s, so huddle publishes no extra
state. What is not known renders as `None`, which HA's MQTT sensors read as `unknown`: the
commit of an app that has none yet, and the health of an app that is stopped or not yet
checked (`healthy` null), which must not show as a problem. Availability is the same status
topic with a template on `state`, which makes the last will (`{"state": "offline"}`) mark
every entity unavailable. An app that disappears gets an empty retained config, which is how
HA is told to delete an entity. Pure functions: the reporter decides when to publish. The
discovery prefix is HA's setting (`--ha-prefix`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

DISCOVERY_PREFIX = "homeassistant"

_UNSAFE = re.compile(r"[^0-9A-Za-z_-]")


def _slug(text: str) -> str:
    """HA allows only [a-zA-Z0-9_-] in node and object ids."""
    return _UNSAFE.sub("_", text)


def _app_value(app: str, field: str) -> str:
    # the offline payload has no "apps", and an app can vanish: every step tolerates absence
    return f"value_json.get('apps', {{}}).get({json.dumps(app)}, {{}}).get('{field}')"


def entities(device: str, app: str) -> list[tuple[str, str, dict]]:
    """(component, object_id suffix, entity-specific config) for one app."""
    return [
        (
            "binary_sensor",
            "running",
            {
                "name": f"{app} running",
                "device_class": "running",
                "value_template": f"{{{{ 'ON' if {_app_value(app, 'running')} else 'OFF' }}}}",
            },
        ),
        (
            "binary_sensor",
            "healthy",
            {
                # HA's "problem" class is on when something is wrong: on = unhealthy
                "name": f"{app} health",
                "device_class": "problem",
                "value_template": f"{{% set h = {_app_value(app, 'healthy')} %}}"
                "{{ None if h is none else ('OFF' if h else 'ON') }}",
            },
        ),
        (
            "sensor",
            "commit",
            {
                "name": f"{app} commit",
                "icon": "mdi:source-commit",
                "value_template": f"{{% set c = {_app_value(app, 'commit')} %}}"
                "{{ c[:12] if c else None }}",
            },
        ),
    ]


def configs(
    prefix: str, device: str, app: str, version: str, ha_prefix: str = DISCOVERY_PREFIX
) -> dict[str, bytes]:
    """topic -> retained discovery payload for every entity of one app."""
    status_topic = f"{prefix}/{device}/status"
    node = _slug(f"huddle_{device}")
    out: dict[str, bytes] = {}
    for component, suffix, specific in entities(device, app):
        object_id = _slug(f"{app}_{suffix}")
        config = {
            "unique_id": f"{node}_{object_id}",
            "state_topic": status_topic,
            "availability_topic": status_topic,
            "availability_template": "{{ value_json.state }}",
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {
                "identifiers": [node],
                "name": f"huddle {device}",
                "manufacturer": "huddle",
                "model": "huddle agent",
                "sw_version": version,
            },
        }
        config.update(specific)
        topic = f"{ha_prefix}/{component}/{node}/{object_id}/config"
        out[topic] = json.dumps(config, sort_keys=True).encode("utf-8")
    return out


def removals(
    prefix: str, device: str, apps: Iterable[str], ha_prefix: str = DISCOVERY_PREFIX
) -> dict[str, bytes]:
    """Empty retained payloads that make HA forget the entities of `apps`."""
    return {topic: b"" for app in apps for topic in configs(prefix, device, app, "", ha_prefix)}
