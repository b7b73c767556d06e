"""The `huddle` command line: one dispatch table from command name to its parser and handler.

Each row names the function that adds the command's arguments and the handler that runs it
(`handler(args) -> exit status`), as "module:function" imported only when needed: building
the parser imports only light modules, and a handler's own imports happen when it runs, so
`huddle run` never loads board tooling. Commands whose handling is a few lines of printing
around a library call (publish, flash, demo) keep their handler beside that library; the
argument builders of the small commands live here. Errors from huddle's own family are
translated here, once, into `huddle: message` and exit status 1; anything else is a bug and
keeps its traceback. The original huddle's `huddle -c DIR [-d]` is rewritten to
`huddle run DIR [--log-level debug]` before parsing.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from huddle import __version__
from huddle.commands.common import add_broker, add_state_dir
from huddle.errors import HuddleError


def _reload(parser: argparse.ArgumentParser) -> None:
    add_state_dir(parser)


def _retry(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="APP", help="the app (its config file's name)")
    parser.add_argument(
        "commits",
        nargs="*",
        metavar="COMMIT",
        help="commit ids or prefixes to clear (default: every ban)",
    )
    add_state_dir(parser)
    add_broker(parser, "also lift the fleet's bans on this broker")


def _publish(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", metavar="REPO", help="git repository (bare or not)")
    parser.add_argument("--branch", required=True, help="branch to publish")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output tree: DIR/manifest.txt and DIR/blobs/"
    )
    parser.add_argument(
        "--key", default=None, help="HMAC key that signs the manifest (default: $HUDDLE_KEY)"
    )
    parser.add_argument(
        "--prune",
        action="store_true",
        help="delete blobs the new manifest does not name (off by default: "
        "a CDN may still serve an older manifest)",
    )


def _flash(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config",
        metavar="CONFIG",
        help="device config (JSON: device, manifest, dir, minimum, maximum, "
        "main; optional mqtt, key, health, wifi)",
    )
    parser.add_argument(
        "--port",
        "-p",
        required=True,
        help="the board's serial port (e.g. /dev/ttyUSB0, /dev/ttyACM0, COM3)",
    )
    parser.add_argument(
        "--board",
        "-b",
        required=True,
        help="board definition in boards/ (e.g. esp32, rp2-pico-w, esp8266, unix)",
    )
    parser.add_argument(
        "--no-compile",
        action="store_true",
        help="copy micro/*.py as source instead of compiling with mpy-cross",
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="check and stage everything, print the plan, touch no board",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=180.0,
        metavar="SECONDS",
        help="limit for each mpremote session (default 180; the .mpy version "
        "query gets at most 30)",
    )


def _demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary directory (repos, state, logs) afterwards",
    )


ArgumentBuilder = Callable[[argparse.ArgumentParser], None] | str

# name -> (argument builder, handler "module:function", one-line help)
COMMANDS: dict[str, tuple[ArgumentBuilder, str, str]] = {
    "run": (
        "huddle.commands.run:add_arguments",
        "huddle.commands.run:main",
        "run the agent for the apps configured in PATH (files or directories)",
    ),
    "check": (
        "huddle.commands.check:add_arguments",
        "huddle.commands.check:main",
        "validate app configs; one line per problem, exit 0 when all are valid",
    ),
    "status": (
        "huddle.commands.status:add_arguments",
        "huddle.commands.status:main",
        "show what the agent's state file says about each app",
    ),
    "reload": (
        _reload,
        "huddle.commands.control:reload",
        "make the running agent reread its configs (as SIGHUP does)",
    ),
    "retry": (
        _retry,
        "huddle.commands.control:retry",
        "lift a ban so a rolled-back commit may deploy again",
    ),
    "watch": (
        "huddle.commands.watch:add_arguments",
        "huddle.commands.watch:main",
        "live table of every device reporting to an MQTT broker",
    ),
    "trigger": (
        "huddle.commands.trigger:add_arguments",
        "huddle.commands.trigger:main",
        "ask agents over MQTT to poll now (each within a random spread)",
    ),
    "publish": (
        _publish,
        "huddle.board.publish:publish_command",
        "write a branch as a static manifest tree for micro devices",
    ),
    "flash": (
        _flash,
        "huddle.board.flash:flash_command",
        "copy the micro agent and a device config onto a MicroPython board",
    ),
    "demo": (
        _demo,
        "huddle.demo:demo_command",
        "self-contained demo: deploy, update and roll back a tiny web app",
    ),
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
        "health-checks and rolls back apps, reports over MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"huddle {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (arguments, handler, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        (_resolve(arguments) if isinstance(arguments, str) else arguments)(p)
        p.set_defaults(handler=handler)
    return parser


def _resolve(ref: str) -> Callable[..., Any]:
    module, _, function = ref.partition(":")
    handler: Callable[..., Any] = getattr(importlib.import_module(module), function)
    return handler


def main(argv: Sequence[str] | None = None) -> int:
    args_list = translate_legacy(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(args_list)
    try:
        return int(_resolve(args.handler)(args) or 0)
    except HuddleError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"huddle: {line}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
