"""`huddle reload`: ask the running agent on this state dir to reread its configs (SIGHUP)."""
from __future__ import annotations

import argparse

from huddle.commands.common import add_state_dir, state_dir


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_state_dir(parser)


def main(args: argparse.Namespace) -> int:
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
