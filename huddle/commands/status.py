"""`huddle status [--json]`: what the agent's state file says, per app.

Read-only: a damaged state file is described (on stderr, `huddle: ...`), never moved or
rewritten here; the agent does that when it starts. A file that cannot be read as state at
all is an error (exit 1); values dropped field by field are warnings beside the table.
"""

from __future__ import annotations

import argparse
import sys

from huddle.commands.common import add_state_dir, state_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_state_dir(parser)
    parser.add_argument("--json", action="store_true", help="print state.json's object")


def _age(ts) -> str:
    import time

    if not ts:
        return "-"
    s = max(0, int(time.time() - ts))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"


def main(args: argparse.Namespace) -> int:
    import json
    import os
    from dataclasses import asdict

    from huddle.errors import HuddleError
    from huddle.state import StateStore

    store = StateStore(state_dir(args))
    if not os.path.lexists(store.path):
        raise HuddleError(f"no state at {store.path}: is the agent running with this --state-dir?")
    apps = store.load(keep_aside=False)
    if store.load_failed:
        raise HuddleError("\n".join(store.load_warnings))
    for warning in store.load_warnings:
        print(f"huddle: warning: {warning}", file=sys.stderr)
    if args.json:
        print(json.dumps({n: asdict(s) for n, s in sorted(apps.items())}, indent=2, sort_keys=True))
        return 0
    health = {True: "healthy", False: "unhealthy", None: "-"}
    rows = [
        ("APP", "STATE", "COMMIT", "GOOD", "PID", "HEALTH", "RESTARTS", "DEPLOYED", "LAST ERROR")
    ]
    for name, s in sorted(apps.items()):
        rows.append(
            (
                name,
                s.state,
                (s.commit or "-")[:12],
                (s.good or "-")[:12],
                str(s.pid) if s.running and s.pid else "-",
                health[s.healthy],
                str(s.restarts),
                _age(s.deployed_at),
                " ".join((s.last_error or "-").split())[:80],
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0
