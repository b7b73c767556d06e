"""`huddle check` (being written)."""
from __future__ import annotations

import argparse

from huddle.errors import HuddleError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("rest", nargs="*")


def main(args: argparse.Namespace) -> int:
    raise HuddleError("check is not built yet")
