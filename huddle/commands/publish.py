"""`huddle publish REPO --branch B --out DIR [--key KEY] [--prune]`.

Writes the branch's tip as a static manifest tree for micro devices (see huddle.board.publish);
the key may also come from HUDDLE_KEY so it stays out of shell history and `ps`.
"""
from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("repo", metavar="REPO", help="git repository (bare or not)")
    parser.add_argument("--branch", required=True, help="branch to publish")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output tree: DIR/manifest.txt and DIR/blobs/")
    parser.add_argument("--key", default=None,
                        help="HMAC key that signs the manifest (default: $HUDDLE_KEY)")
    parser.add_argument("--prune", action="store_true",
                        help="delete blobs the new manifest does not name (off by default: "
                             "a CDN may still serve an older manifest)")


def main(args: argparse.Namespace) -> int:
    from pathlib import Path

    from huddle.board.publish import publish

    key = args.key if args.key is not None else (os.environ.get("HUDDLE_KEY") or None)
    summary = publish(Path(args.repo), args.branch, Path(args.out),
                      key=key.encode("utf-8") if key is not None else None, prune=args.prune)
    print(f"published {summary.branch} at {summary.commit} to {summary.manifest}: "
          f"{summary.files} files, {summary.bytes} bytes, {summary.new_blobs} new blobs"
          + (f", {summary.pruned} pruned" if args.prune else "")
          + (", signed" if summary.signed else ", unsigned"))
    return 0
