"""The `huddle` command line: a dispatch table from command name to its module.

Each command lives in `huddle/commands/<name>.py` with the same two functions,
`add_arguments(parser)` and `main(args) -> int`, imported only when that command runs (the
agent should not pay for board tooling at start-up). Errors from huddle's own family are
translated here, once, into `huddle: message` and exit status 1; anything else is a bug and
keeps its traceback. The original huddle's `huddle -c DIR [-d]` is rewritten to
`huddle run DIR [--log-level debug]` before parsing.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from huddle import __version__
from huddle.errors import HuddleError

# command name -> (module under huddle.commands, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run the agent for the apps configured in PATH (files or directories)"),
    "check": ("check", "validate app configs; one line per problem, exit 0 when all are valid"),
    "status": ("status", "show what the agent's state file says about each app"),
    "reload": ("reload", "make the running agent reread its configs (as SIGHUP does)"),
    "retry": ("retry", "clear a ban so a rolled-back commit may deploy again"),
    "watch": ("watch", "live table of every device reporting to an MQTT broker"),
    "trigger": ("trigger", "ask agents over MQTT to poll now (each within a random spread)"),
    "publish": ("publish", "write a branch as a static manifest tree for micro devices"),
    "flash": ("flash", "copy the micro agent and a device config onto a MicroPython board"),
    "demo": ("demo", "self-contained demo: deploy, update and roll back a tiny web app"),
}


def translate_legacy(argv: list[str]) -> list[str]:
    """Map huddle 0.1.5's `huddle -c DIR [-d]` onto `huddle run DIR [--log-level debug]`."""
    if not argv or argv[0] in COMMANDS or argv[0] in ("-h", "--help", "--version"):
        return argv
    if "-c" not in argv and not any(a.startswith("--config") for a in argv):
        return argv
    legacy = argparse.ArgumentParser(prog="huddle", add_help=False)
    legacy.add_argument("-c", "--config", action="append", required=True)
    legacy.add_argument("-d", "--debug", action="store_true")
    known, rest = legacy.parse_known_args(argv)
    out = ["run", *known.config]
    if known.debug:
        out += ["--log-level", "debug"]
    return out + rest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="huddle",
        description="Pull-based deployment agent: follows git branches, supervises, "
                    "health-checks and rolls back apps, reports over MQTT.")
    parser.add_argument("--version", action="version", version=f"huddle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        _command_module(module_name).add_arguments(p)
        p.set_defaults(command_module=module_name)
    return parser


def _command_module(module_name: str):
    return importlib.import_module(f"huddle.commands.{module_name}")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = translate_legacy(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(args_list)
    try:
        return int(_command_module(args.command_module).main(args) or 0)
    except HuddleError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"huddle: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
