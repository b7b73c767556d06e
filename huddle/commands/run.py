"""`huddle run PATH...`: the agent."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from pathlib import Path

from huddle.commands.common import add_log_level, add_state_dir, setup_logging, state_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="app config files (.json/.ini) or directories of them",
    )
    add_state_dir(parser)
    parser.add_argument(
        "--device-id",
        default=os.environ.get("HUDDLE_DEVICE_ID"),
        help="this device's id in MQTT topics (env HUDDLE_DEVICE_ID; default the host name)",
    )
    parser.add_argument(
        "--mqtt",
        default=os.environ.get("HUDDLE_MQTT"),
        metavar="URL",
        help="report to this broker: mqtt://[user:pass@]host[:port] or "
        "mqtts://... (env HUDDLE_MQTT)",
    )
    parser.add_argument(
        "--mqtt-prefix", default="huddle", metavar="PREFIX", help="topic prefix (default huddle)"
    )
    parser.add_argument(
        "--mqtt-ca",
        default=os.environ.get("HUDDLE_MQTT_CA"),
        metavar="FILE",
        help="CA bundle for mqtts:// (default: the system store)",
    )
    parser.add_argument(
        "--heartbeat",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="republish status at least this often (default 30)",
    )
    parser.add_argument(
        "--ha-discovery", action="store_true", help="publish Home Assistant MQTT discovery configs"
    )
    parser.add_argument(
        "--ha-prefix",
        default="homeassistant",
        metavar="PREFIX",
        help="Home Assistant's discovery prefix (default homeassistant)",
    )
    add_log_level(parser)


def main(args: argparse.Namespace) -> int:
    import asyncio

    from huddle.agent import Agent
    from huddle.config import load_paths
    from huddle.errors import HuddleError
    from huddle.state import AgentLock, StateStore

    setup_logging(args.log_level)
    configs, problems = load_paths(args.paths, state_dir(args))
    for problem in problems:
        print(f"huddle: {problem} (skipped)", file=sys.stderr)
    if not configs:
        raise HuddleError("no valid app config to run")
    device_id = args.device_id or socket.gethostname()
    store = StateStore(state_dir(args))
    AgentLock(store.dir).acquire()  # held until this process exits, however it exits
    agent = Agent(configs, store, paths=args.paths)
    if args.mqtt:
        from huddle.mqtt.fleetlink import FleetLink
        from huddle.mqtt.reporter import make_reporter, validate_device_id

        reporter = agent.reporter = make_reporter(
            args.mqtt,
            validate_device_id(device_id),
            agent.apps_snapshot,
            topic_prefix=args.mqtt_prefix,
            ca_file=args.mqtt_ca,
            heartbeat_s=args.heartbeat,
            ha_discovery=args.ha_discovery,
            ha_prefix=args.ha_prefix,
        )

        # triggers, fleet bans and rollout waves share the reporter's connection
        fleet = FleetLink(
            reporter.link,
            args.mqtt_prefix,
            device_id,
            store.dir,
            app_names=lambda: list(agent.controllers),
            poll_soon=agent.poll_soon,
        )
        agent.fleet_for = fleet.app_fleet
    return asyncio.run(agent.run())
