"""`huddle check PATH...`: validate app configs without running anything.

Each problem is one line on stdout, `FILE: section.key: reason`, so scripts and editors can
read them; a one-line summary goes to stderr. It shares every refusal with `run`, the state
dir's included (`--state-dir`, default as `run`). Exit 0 only when every config is valid. The
config loader is imported inside `main`, keeping the CLI's start-up light.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from huddle.commands.common import add_state_dir, state_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="+",
        type=Path,
        metavar="PATH",
        help="an app config (.json or .ini) or a directory of them",
    )
    add_state_dir(parser)  # as `run` would use it: app trees must stay out of it


def main(args: argparse.Namespace) -> int:
    from huddle.config import load_paths

    configs, problems = load_paths(args.paths, state_dir(args))
    for problem in problems:
        print(problem)
    bad_files = len({problem.file for problem in problems})
    if problems:
        total = len(configs) + bad_files
        print(
            f"{_count(len(problems), 'problem')} in {bad_files} of {_count(total, 'file')}",
            file=sys.stderr,
        )
        return 1
    print(f"{_count(len(configs), 'config')} valid", file=sys.stderr)
    return 0


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
