"""Requests to the agent running on a state dir: `huddle reload` and `huddle retry`.

`reload` signals the agent (SIGHUP), found through the lock it holds on the state dir.
`retry` lifts bans: with an agent running, as a request file its app takes at its next poll
(the agent owns state.json, huddle/requests.py); with none, by editing state.json directly.
With `--mqtt` (or HUDDLE_MQTT) the fleet's bans are lifted too: every retained ban on
`<prefix>/ban/<app-id>/<commit>` matching the commits (or, with none given, banned for an
app of this name) is replaced by an empty retained message. That works from any machine (no
state dir needed); a device's own `bad` list is only ever cleared on that device.
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
    apps = store.load() if store.path.exists() or not args.mqtt else {}
    if args.mqtt:
        clear_fleet(args)
        if args.app not in apps:
            return 0  # e.g. run from a laptop: the fleet's bans were all there was
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


def clear_fleet(args: argparse.Namespace) -> None:
    """Publish an empty retained message over every matching fleet ban."""
    import json

    from huddle.mqtt import coordination as co
    from huddle.mqtt.oneshot import publish, retained
    from huddle.mqtt.url import parse_url, validate_prefix

    target = parse_url(args.mqtt, ca_file=args.ca)
    prefix = validate_prefix(args.prefix)
    held = retained(target, f"{prefix}/ban/+/+", "retry")
    lifted = []
    for topic, payload in sorted(held.items()):
        commit = co.commit_of_ban(topic)
        if commit is None:
            continue
        if args.commits:
            if not any(commit.startswith(p) for p in args.commits):
                continue
        else:
            try:
                app = json.loads(payload.decode("utf-8")).get("app")
            except (ValueError, UnicodeDecodeError, AttributeError):
                app = None  # not a ban huddle wrote: only an explicit commit lifts it
            if app != args.app:
                continue
        lifted.append((topic, commit))
    if lifted:
        publish(target, [(topic, b"", True) for topic, _ in lifted], "retry")
    print(
        f"huddle: {args.app}: lifted {len(lifted)} fleet ban(s) on {target.redacted}"
        + (f": {', '.join(c[:12] for _, c in lifted)}" if lifted else "")
    )
