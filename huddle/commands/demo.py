"""`huddle demo`: deploy, update and roll back a tiny web app on this machine, narrated."""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary directory (repos, state, logs) afterwards")


def main(args: argparse.Namespace) -> int:
    from huddle.demo import run_demo
    return run_demo(keep=args.keep)
