"""Requests to the agent running on a state dir: `huddle reload` and `huddle retry`.

`reload` signals the agent (SIGHUP), found through the lock it holds on the state dir.
`retry` lifts bans: with an agent running, as a request file its app takes at its next poll
(the agent owns state.json, huddle/requests.py); with none, by editing state.json directly.
"""

from __future__ import annotations

import argparse

from huddle.commands.common import state_dir


def reload(args: argparse.Namespace) -> int:
    import os
    import signal

    from huddle.errors import HuddleError
    from huddle.state import AgentLock

    directory = state_dir(args)
    pid = AgentLock.holder_pid(directory)
    if pid is None:
        raise HuddleError(f"no huddle agent is running on {directory}")
    try:
        os.kill(pid, signal.SIGHUP)
    except OSError as exc:
        raise HuddleError(f"cannot signal the agent (pid {pid}): {exc.strerror}") from exc
    print(f"huddle: asked the agent (pid {pid}) to reload its configs")
    return 0


def retry(args: argparse.Namespace) -> int:
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
    cleared = [c for c in banned if not args.commits or any(c.startswith(p) for p in args.commits)]
    if args.commits and not cleared:
        print(
            f"huddle: {args.app}: none of those commits is banned (banned: "
            f"{', '.join(c[:12] for c in banned) or 'none'}); a refused deploy is "
            "retried all the same"
        )
    pid = AgentLock.holder_pid(directory)
    if pid is None:
        apps[args.app].bad = [c for c in banned if c not in cleared]
        store.save(apps)
        print(f"huddle: {args.app}: cleared {len(cleared)} ban(s); the agent is not running")
        return 0
    write_retry(directory, args.app, tuple(args.commits))
    print(
        f"huddle: {args.app}: asked the agent (pid {pid}) to clear "
        f"{', '.join(c[:12] for c in cleared) or 'the ban'} at its next poll"
    )
    return 0
