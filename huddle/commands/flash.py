"""`huddle flash --port PORT --board NAME CONFIG`: the micro agent onto a MicroPython board.

Arguments only here; the work is in huddle.board.flash and huddle.board.definitions, imported when the command
runs (so `huddle run` never loads board tooling).
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", metavar="CONFIG",
                        help="device config (JSON: device, manifest, dir, minimum, maximum, "
                             "main; optional mqtt, key, health, wifi)")
    parser.add_argument("--port", "-p", required=True,
                        help="the board's serial port (e.g. /dev/ttyUSB0, /dev/ttyACM0, COM3)")
    parser.add_argument("--board", "-b", required=True,
                        help="board definition in boards/ (e.g. esp32, rp2-pico-w, esp8266, "
                             "unix)")
    parser.add_argument("--no-compile", action="store_true",
                        help="copy micro/*.py as source instead of compiling with mpy-cross")
    parser.add_argument("--dry-run", action="store_true",
                        help="check and stage everything, print the plan, touch no board")
    parser.add_argument("--timeout", type=float, default=180.0, metavar="SECONDS",
                        help="limit for each mpremote session (default 180; the .mpy version "
                             "query gets at most 30)")


def main(args: argparse.Namespace) -> int:
    import sys
    import tempfile
    from pathlib import Path

    from huddle.board.definitions import load_board
    from huddle.board.flash import (board_file_note, mpremote_argv, probe, push, read_device_config,
                              stage)

    board = load_board(args.board)
    config, wifi = read_device_config(Path(args.config))
    compile_ = board.compiles and not args.no_compile
    firmware = None
    if compile_ and not args.dry_run:  # sources import on any firmware: only .mpy needs asking
        firmware = probe(args.port, args.timeout)
        print(f"huddle: {args.port}: the board runs {firmware.describe()}")
        note = board_file_note(board, firmware)
        if note:
            print(f"huddle: warning: {note}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="huddle-flash-") as tmp:
        staged = stage(board, config, wifi, Path(tmp), compile_=compile_, firmware=firmware)
        how = f"compiled to .mpy {staged.compiled}" if staged.compiled else "as source"
        print(f"huddle: {board.name}: {staged.count()} files ({how}) for device "
              f"{config['device']!r} -> {args.port}")
        if args.dry_run:
            for directory, files in sorted(staged.groups.items()):
                for f in files:
                    print(f"  {directory}{f.name}")
            argv = mpremote_argv(args.port, board, staged)
            print("  then: " + ("reset" if board.reset == "machine" else "soft reset")
                  + f" ({len(argv)} mpremote arguments; dry run, nothing written)")
            return 0
        push(args.port, board, staged, args.timeout)
    print(f"huddle: flashed {board.name} on {args.port}; board "
          + ("reset" if board.reset == "machine" else "soft-reset"))
    return 0
