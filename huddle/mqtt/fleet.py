"""The fleet as `huddle watch` sees it: one row per device heard on `<prefix>/+/status`.

A device's last will holds only `{"state": "offline"}`; what it ran before comes from its
retained `<prefix>/<device>/last` (the status as of its latest deploy), so a device that went
offline before watch started still shows its last known version and apps.

`Fleet.update()` takes each status message (retained or live) and keeps the latest report per
device; `table()` renders the whole fleet for a terminal, `line()` one report for a log or a
pipe, and `json_line()` the raw report for scripts. Pure and clock-injected, so the command
(`huddle.commands.watch`) only moves bytes and the tests need no broker for the formatting.

The age of a report is measured from when watch received it; for a retained message (sent
before watch was listening) the device's own `ts` is used instead, clamped at zero, since the
receipt time says nothing about when the device wrote it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

SHORT_COMMIT = 7


@dataclass
class Device:
    name: str
    state: str = "?"
    report: dict = field(default_factory=dict)
    heard_at: float = 0.0  # wall-clock time the report was written (see module docstring)


def device_of(topic: str, prefix: str, kind: str = "status") -> str | None:
    """`<prefix>/<device>/<kind>` -> device, or None for any other topic."""
    head, sep, rest = topic.partition(prefix + "/")
    if head or not sep or not rest.endswith("/" + kind):
        return None
    device = rest[: -len(kind) - 1]
    return device if device and "/" not in device else None


def decode(payload: bytes) -> object:
    """The payload as JSON, or as text when it is not JSON (shown, never fatal)."""
    text = payload.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


class Fleet:
    def __init__(self, prefix: str = "huddle", clock: Callable[[], float] = time.time) -> None:
        self.prefix = prefix
        self.clock = clock
        self.devices: dict[str, Device] = {}
        self.last_known: dict[str, dict] = {}

    def update(self, topic: str, payload: bytes, retained: bool) -> Device | None:
        """Record one status message; returns the device row, or None when the topic or
        payload is not a status report (an empty retained payload clears a device)."""
        name = device_of(topic, self.prefix)
        if name is None:
            self.remember(topic, payload)
            return None
        if not payload:
            self.devices.pop(name, None)
            return None
        report = decode(payload)
        if not isinstance(report, dict):
            report = {"state": "invalid", "detail": str(report)[:60]}
        now = self.clock()
        heard_at = now
        if retained and isinstance(report.get("ts"), (int, float)):
            heard_at = min(now, float(report["ts"]))
        dev = self.devices.get(name) or Device(name)
        dev.state = str(report.get("state", "?"))
        dev.heard_at = heard_at
        if dev.state == "offline":
            # the last will carries only the state: keep showing what the device last ran
            known = dev.report if dev.report.get("apps") else self.last_known.get(name, {})
            kept = {k: known[k] for k in ("version", "apps") if k in known and k not in report}
            report = dict(report, **kept)
        dev.report = report
        self.devices[name] = dev
        return dev

    def remember(self, topic: str, payload: bytes) -> None:
        """A `<prefix>/<device>/last` message: fills in an offline row that lacks apps."""
        name = device_of(topic, self.prefix, "last")
        report = decode(payload) if name is not None and payload else None
        if name is None or not isinstance(report, dict):
            return
        self.last_known[name] = report
        dev = self.devices.get(name)
        if dev is not None and dev.state == "offline" and not dev.report.get("apps"):
            dev.report = dict(
                dev.report, **{k: report[k] for k in ("version", "apps") if k in report}
            )

    def line(self, dev: Device) -> str:
        """One report as one plain line: `device state age apps...`."""
        return (
            f"{dev.name} {dev.state} {format_age(self.clock() - dev.heard_at)} "
            f"{format_apps(dev.report.get('apps'))}"
        ).rstrip()

    def table(self) -> str:
        rows: list[list[str]] = [["DEVICE", "STATE", "AGE", "VERSION", "APPS"]]
        now = self.clock()
        for name in sorted(self.devices):
            dev = self.devices[name]
            rows.append(
                [
                    name,
                    dev.state,
                    format_age(now - dev.heard_at),
                    str(dev.report.get("version", "-")),
                    format_apps(dev.report.get("apps")) or "-",
                ]
            )
        if len(rows) == 1:
            return f"no device has reported on {self.prefix}/+/status yet"
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
        return "\n".join(
            "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + f"  {r[-1]}"
            for r in rows
        )


def json_line(topic: str, payload: bytes, retained: bool) -> str:
    """`{"topic", "retained", "payload"}`: the report as the device sent it, plus where it
    came from (the device id is the topic's middle level)."""
    return json.dumps(
        {"topic": topic, "retained": retained, "payload": decode(payload)}, separators=(",", ":")
    )


def format_age(seconds: float) -> str:
    s = max(0, int(seconds))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def format_apps(apps: object) -> str:
    """`web@3f2c1ab healthy, api@9e0d2c4 down` (unknown fields shown as `?`)."""
    if not isinstance(apps, dict):
        return ""
    parts = []
    for name in sorted(apps):
        app = apps[name] if isinstance(apps[name], dict) else {}
        commit = str(app.get("commit") or "?")[:SHORT_COMMIT]
        if not app.get("running"):
            health = "stopped"
        elif app.get("healthy") is None:
            health = "running"
        else:
            health = "healthy" if app.get("healthy") else "UNHEALTHY"
        parts.append(f"{name}@{commit} {health}")
    return ", ".join(parts)
