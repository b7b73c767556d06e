"""`huddle trigger --mqtt URL [--device ID ...] [--app NAME ...] [--spread S]`: ask agents
to poll now instead of at their next timer.

One non-retained QoS 1 message per target: `<prefix>/<device>/trigger` for each `--device`,
else `<prefix>/all/trigger` (docs/mqtt.md). Each agent polls after its own random delay in
`[0, S]`, so the git server sees a spread, not a spike. A trigger only makes a poll sooner:
what gets deployed is still what the branch holds, and agents rate-limit triggers per app.
"""

from __future__ import annotations

import argparse

from huddle.commands.common import add_broker
from huddle.errors import HuddleError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from huddle.mqtt.coordination import DEFAULT_SPREAD_S, MAX_SPREAD_S

    add_broker(parser, "the broker the agents report to")
    parser.add_argument(
        "--device",
        action="append",
        default=[],
        metavar="ID",
        help="only this device (repeatable; default every device)",
    )
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="NAME",
        help="only this app (repeatable; default every app)",
    )
    parser.add_argument(
        "--spread",
        type=float,
        default=DEFAULT_SPREAD_S,
        metavar="S",
        help=f"each agent polls within S seconds (default "
        f"{DEFAULT_SPREAD_S:g}, at most {MAX_SPREAD_S:g})",
    )


def main(args: argparse.Namespace) -> int:
    from huddle.mqtt import coordination as co
    from huddle.mqtt.oneshot import publish
    from huddle.mqtt.url import parse_url, validate_device_id, validate_prefix

    if not args.mqtt:
        raise HuddleError("trigger needs a broker: --mqtt URL (or HUDDLE_MQTT)")
    target = parse_url(args.mqtt, ca_file=args.ca)
    prefix = validate_prefix(args.prefix)
    if not 0 <= args.spread <= co.MAX_SPREAD_S:
        raise HuddleError(f"--spread must be between 0 and {co.MAX_SPREAD_S:g} seconds")
    for app in args.app:
        if not app or "/" in app or app.startswith("."):
            raise HuddleError(f"{app!r} is not an app name (a config file's stem)")
    devices = [validate_device_id(d) for d in args.device] or [co.ALL_DEVICES]
    payload = co.trigger_payload(args.app, args.spread)
    publish(target, [(co.trigger_topic(prefix, d), payload, False) for d in devices], "trigger")
    print(
        f"huddle: asked {', '.join(args.device) or 'every device'} to poll "
        f"{', '.join(args.app) or 'every app'} within {args.spread:g} s"
    )
    return 0
