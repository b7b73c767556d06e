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
import os
import sys
import time
from typing import Any

from huddle.errors import HuddleError

CLEAR = "\x1b[H\x1b[2J"  # cursor home, clear screen
ONCE_QUIET_S = 0.5  # --once: retained reports arrive right after SUBACK; stop after this lull
ONCE_MAX_S = 5.0
RECONNECT_MAX_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--mqtt",
        metavar="URL",
        default=os.environ.get("HUDDLE_MQTT"),
        help="broker, mqtt://[user[:pass]@]host[:port] or mqtts://... (default $HUDDLE_MQTT)",
    )
    parser.add_argument(
        "--prefix", default="huddle", help="topic prefix the agents use (default huddle)"
    )
    parser.add_argument(
        "--ca", metavar="FILE", help="CA certificate for mqtts:// (default: the system store)"
    )
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
    from huddle.mqtt.fleet import Fleet, json_line
    from huddle.mqtt.oneshot import client_for
    from huddle.mqtt.url import parse_url, validate_prefix

    if not args.mqtt:
        raise HuddleError("watch needs a broker: --mqtt URL (or HUDDLE_MQTT)")
    target = parse_url(args.mqtt, ca_file=args.ca)
    prefix = validate_prefix(args.prefix)
    if args.duration is not None and args.duration <= 0:
        raise HuddleError("--duration must be a positive number of seconds")
    try:
        import paho.mqtt.client as paho
    except ImportError as exc:
        raise HuddleError("watch needs paho-mqtt: pip install 'huddle[mqtt]'") from exc

    fleet = Fleet(prefix)
    tty = sys.stdout.isatty() and not args.json and not args.once
    state: dict[str, Any] = {
        "subscribed": False,
        "last_message": time.monotonic(),
        "dirty": True,
        "refused": None,
    }

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            state["refused"] = str(reason_code)
            return
        client.subscribe([(f"{prefix}/+/status", 1), (f"{prefix}/+/last", 1)])

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        state["subscribed"] = True
        state["last_message"] = time.monotonic()

    def on_message(client, userdata, msg):
        state["last_message"] = time.monotonic()
        dev = fleet.update(msg.topic, msg.payload, bool(msg.retain))
        if args.json:
            if dev is not None or (not msg.payload and msg.topic.endswith("/status")):
                _emit(json_line(msg.topic, msg.payload, bool(msg.retain)))
        elif dev is not None and not tty and not args.once:
            _emit(fleet.line(dev))
        state["dirty"] = True

    client = client_for(target, "watch")
    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_message = on_message

    started = time.monotonic()
    deadline = started + args.duration if args.duration else None
    if args.once:
        deadline = min(deadline or float("inf"), started + ONCE_MAX_S)
    last_draw = 0.0
    failures = 0
    try:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if state["refused"]:
                raise HuddleError(
                    f"MQTT broker {target.redacted} refused the connection: {state['refused']}"
                )
            if args.once and state["subscribed"] and now - state["last_message"] >= ONCE_QUIET_S:
                break
            if tty and (state["dirty"] or now - last_draw >= 1.0):
                _emit(
                    CLEAR + f"huddle watch  {target.redacted}  {prefix}/+/status  "
                    f"{time.strftime('%H:%M:%S')}\n\n" + fleet.table()
                )
                last_draw, state["dirty"] = now, False
            wait_s = min(
                1.0 if not args.once else 0.1, (deadline - now) if deadline is not None else 1.0
            )
            if client.loop(timeout=max(wait_s, 0.0)) == paho.MQTT_ERR_SUCCESS:
                failures = 0
                continue
            # connection lost: wait (capped, growing), then try again
            delay = min(RECONNECT_MAX_S, 0.5 * 2**failures)
            failures += 1
            print(
                f"huddle: lost {target.redacted}; reconnecting in {delay:.1f}s",
                file=sys.stderr,
                flush=True,
            )
            if deadline is not None:
                delay = min(delay, max(deadline - time.monotonic(), 0.0))
            time.sleep(delay)
            try:
                client.reconnect()
            except OSError:
                pass  # still down; loop() reports it again and the delay grows
    except KeyboardInterrupt:
        pass  # Ctrl-C is how a live table is meant to end
    finally:
        client.disconnect()
    if args.once and not args.json:
        _emit(fleet.table())
    return 0


def _emit(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
