"""Options shared by several commands (`--state-dir`, `--log-level`)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def add_state_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="where state.json and app logs live (env HUDDLE_STATE_DIR; "
        "default /var/lib/huddle as root, else ~/.local/state/huddle)",
    )


def state_dir(args: argparse.Namespace) -> Path:
    from huddle.state import default_state_dir

    return args.state_dir or default_state_dir()


def add_broker(parser: argparse.ArgumentParser, what: str) -> None:
    """--mqtt (env HUDDLE_MQTT), --prefix and --ca, as every broker client takes them."""
    parser.add_argument(
        "--mqtt",
        metavar="URL",
        default=os.environ.get("HUDDLE_MQTT"),
        help=f"{what}: mqtt://[user[:pass]@]host[:port] or mqtts://... (env HUDDLE_MQTT)",
    )
    parser.add_argument(
        "--prefix", default="huddle", help="topic prefix the agents use (default huddle)"
    )
    parser.add_argument(
        "--ca", metavar="FILE", help="CA certificate for mqtts:// (default: the system store)"
    )


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default=os.environ.get("HUDDLE_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="default info",
    )


def setup_logging(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
