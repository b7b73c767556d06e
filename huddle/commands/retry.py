"""`huddle retry APP [COMMIT]`: clear a ban, so the commit may be deployed again.

With an agent running on the state dir, the request is a file its app takes at its next
poll (the agent owns state.json); with none, state.json is edited directly. With `--mqtt`
(or HUDDLE_MQTT) the fleet's bans are lifted too: every retained ban on
`<prefix>/ban/<app-id>/<commit>` matching the commits (or, with none given, banned for an
app of this name) is replaced by an empty retained message. That works from any machine
(no state dir needed); a device's own `bad` list is only ever cleared on that device.
"""
from __future__ import annotations

import argparse
import os

from huddle.commands.common import add_state_dir, state_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("app", metavar="APP", help="the app (its config file's name)")
    parser.add_argument("commits", nargs="*", metavar="COMMIT",
                        help="commit ids or prefixes to clear (default: every ban)")
    add_state_dir(parser)
    parser.add_argument("--mqtt", metavar="URL", default=os.environ.get("HUDDLE_MQTT"),
                        help="also lift the fleet's bans on this broker (env HUDDLE_MQTT)")
    parser.add_argument("--prefix", default="huddle",
                        help="topic prefix the agents use (default huddle)")
    parser.add_argument("--ca", metavar="FILE", help="CA certificate for mqtts://")


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
    apps = store.load() if store.path.exists() or not args.mqtt else {}
    if args.mqtt:
        clear_fleet(args)
        if args.app not in apps:
            return 0  # e.g. run from a laptop: the fleet's bans were all there was
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
    print(f"huddle: {args.app}: lifted {len(lifted)} fleet ban(s) on {target.redacted}"
          + (f": {', '.join(c[:12] for _, c in lifted)}" if lifted else ""))
