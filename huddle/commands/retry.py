"""`huddle retry APP [COMMIT]`: clear a ban, so the commit may be deployed again.

With an agent running on the state dir, the request is a file its app takes at its next
poll (the agent owns state.json); with none, state.json is edited directly.
"""
from __future__ import annotations

import argparse

from huddle.commands.common import add_state_dir, state_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="APP", help="the app (its config file's name)")
    parser.add_argument("commits", nargs="*", metavar="COMMIT",
                        help="commit ids or prefixes to clear (default: every ban)")
    add_state_dir(parser)


def main(args: argparse.Namespace) -> int:
    import re

    from huddle.errors import HuddleError
    from huddle.requests import write_retry
    from huddle.state import AgentLock, StateStore

    for commit in args.commits:
        if not re.fullmatch(r"[0-9a-f]{4,64}", commit):
            raise HuddleError(f"{commit!r} is not a commit id (4 to 64 hex digits)")
    directory = state_dir(args)
    store = StateStore(directory)
    apps = store.load()
    if args.app not in apps:
        raise HuddleError(f"no app {args.app!r} in {store.path}")
    banned = apps[args.app].bad
    cleared = [c for c in banned if not args.commits
               or any(c.startswith(p) for p in args.commits)]
    if args.commits and not cleared:
        print(f"huddle: {args.app}: none of those commits is banned (banned: "
              f"{', '.join(c[:12] for c in banned) or 'none'}); a refused deploy is "
              "retried all the same")
    pid = AgentLock.holder_pid(directory)
    if pid is None:
        apps[args.app].bad = [c for c in banned if c not in cleared]
        store.save(apps)
        print(f"huddle: {args.app}: cleared {len(cleared)} ban(s); the agent is not running")
        return 0
    write_retry(directory, args.app, tuple(args.commits))
    print(f"huddle: {args.app}: asked the agent (pid {pid}) to clear "
          f"{', '.join(c[:12] for c in cleared) or 'the ban'} at its next poll")
    return 0
