"""`huddle watch --mqtt URL`: a live table of every device reporting to a broker.

A client tool, not the agent, so it uses paho's own blocking `loop(timeout)` (which waits in
select, never spins) with a one-second tick for the ages. It subscribes to
`<prefix>/+/status` (and `<prefix>/+/last`, each device's last known version and apps);
retained reports give the fleet at once, live ones update it, and a device whose last will
fired shows `offline` with what it ran last. On a terminal the table is redrawn in place
(ANSI home + clear); in a pipe each report is one plain line; `--json` streams each report
as `{"topic", "retained", "payload"}`. `--once` prints what the broker holds and exits;
`--duration S` exits after S seconds. paho is imported only when the command runs.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from huddle.commands.common import add_broker
from huddle.errors import HuddleError

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen
ONCE_QUIET_S = 0.5  # --once: retained reports arrive right after SUBACK; stop after this lull
ONCE_MAX_S = 5.0
RECONNECT_MAX_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_broker(parser, "the broker")
    parser.add_argument(
        "--json",
        action="store_true",
        help='one JSON line per report: {"topic", "retained", "payload"}',
    )
    parser.add_argument(
        "--once", action="store_true", help="print the reports the broker holds, then exit"
    )
    parser.add_argument("--duration", type=float, metavar="S", help="exit after S seconds")


def main(args: argparse.Namespace) -> int:
    from huddle.mqtt.fleet import Fleet
    from huddle.mqtt.url import parse_url, validate_prefix

    if not args.mqtt:
        raise HuddleError("watch needs a broker: --mqtt URL (or HUDDLE_MQTT)")
    target = parse_url(args.mqtt, ca_file=args.ca)
    prefix = validate_prefix(args.prefix)
    if args.duration is not None and args.duration <= 0:
        raise HuddleError("--duration must be a positive number of seconds")
    try:
        import paho.mqtt.client  # noqa: F401  (only to say what is missing, clearly)
    except ImportError as exc:
        raise HuddleError("watch needs paho-mqtt: pip install 'huddle[mqtt]'") from exc
    fleet = Fleet(prefix)
    view = View(fleet, target.redacted, prefix, args)
    Watch(fleet, view, target, prefix, args).run()
    if args.once and not args.json:
        _emit(fleet.table())
    return 0


class View:
    """How reports are shown: a table redrawn in place on a terminal, one plain line per
    report in a pipe, or one JSON line per report with --json."""

    def __init__(self, fleet: Any, where: str, prefix: str, args: argparse.Namespace) -> None:
        self.fleet = fleet
        self.where = where
        self.prefix = prefix
        self.json = args.json
        self.once = args.once
        self.live_table = sys.stdout.isatty() and not args.json and not args.once
        self.dirty = True
        self.drawn_at = 0.0

    def report(self, topic: str, payload: bytes, retained: bool, device: Any) -> None:
        from huddle.mqtt.fleet import json_line

        if self.json:
            if device is not None or (not payload and topic.endswith("/status")):
                _emit(json_line(topic, payload, retained))
        elif device is not None and not self.live_table and not self.once:
            _emit(self.fleet.line(device))
        self.dirty = True

    def tick(self, now: float) -> None:
        """Redraw the live table when something changed, and every second for the ages."""
        if self.live_table and (self.dirty or now - self.drawn_at >= 1.0):
            _emit(
                CLEAR + f"huddle watch  {self.where}  {self.prefix}/+/status  "
                f"{time.strftime('%H:%M:%S')}\n\n" + self.fleet.table()
            )
            self.drawn_at, self.dirty = now, False


class Watch:
    """The subscription and its loop: paho's blocking `loop(timeout)` with a one-second
    tick, until --duration, --once's lull, or Ctrl-C; a lost broker is retried with a
    capped, growing delay."""

    def __init__(
        self, fleet: Any, view: View, target: Any, prefix: str, args: argparse.Namespace
    ) -> None:
        from huddle.mqtt.oneshot import client_for

        self.fleet = fleet
        self.view = view
        self.target = target
        self.prefix = prefix
        self.once = args.once
        self.subscribed = False
        self.refused: str | None = None
        self.last_message = time.monotonic()
        started = time.monotonic()
        self.deadline = started + args.duration if args.duration else None
        if args.once:
            self.deadline = min(self.deadline or float("inf"), started + ONCE_MAX_S)
        self.client = client_for(target, "watch")
        self.client.on_connect = self.on_connect
        self.client.on_subscribe = self.on_subscribe
        self.client.on_message = self.on_message

    def on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            return
        client.subscribe([(f"{self.prefix}/+/status", 1), (f"{self.prefix}/+/last", 1)])

    def on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        self.subscribed = True
        self.last_message = time.monotonic()

    def on_message(self, client, userdata, msg) -> None:
        self.last_message = time.monotonic()
        device = self.fleet.update(msg.topic, msg.payload, bool(msg.retain))
        self.view.report(msg.topic, msg.payload, bool(msg.retain), device)

    def done(self, now: float) -> bool:
        if self.refused:
            raise HuddleError(
                f"MQTT broker {self.target.redacted} refused the connection: {self.refused}"
            )
        if self.deadline is not None and now >= self.deadline:
            return True
        return self.once and self.subscribed and now - self.last_message >= ONCE_QUIET_S

    def run(self) -> None:
        import paho.mqtt.client as paho

        failures = 0
        try:
            while True:
                now = time.monotonic()
                if self.done(now):
                    break
                self.view.tick(now)
                wait_s = 0.1 if self.once else 1.0
                if self.deadline is not None:
                    wait_s = min(wait_s, self.deadline - now)
                if self.client.loop(timeout=max(wait_s, 0.0)) == paho.MQTT_ERR_SUCCESS:
                    failures = 0
                    continue
                failures += 1
                self.reconnect_after(min(RECONNECT_MAX_S, 0.5 * 2 ** (failures - 1)))
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a live table is meant to end
        finally:
            self.client.disconnect()

    def reconnect_after(self, delay_s: float) -> None:
        print(
            f"huddle: lost {self.target.redacted}; reconnecting in {delay_s:.1f}s",
            file=sys.stderr,
            flush=True,
        )
        if self.deadline is not None:
            delay_s = min(delay_s, max(self.deadline - time.monotonic(), 0.0))
        time.sleep(delay_s)
        try:
            self.client.reconnect()
        except OSError:
            pass  # still down; loop() reports it again and the delay grows


def _emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
