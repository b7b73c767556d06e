"""The app's own commands around a deploy (pre-pull, post-pull, install) and its log notes.

They run in the app's working tree with the app's environment, each under a timeout (an
install may compile, but never forever); whatever one leaves running when it ends (a daemon,
a `setsid` helper) is stopped then, so deploys never pile up processes. Their output is
appended to the app's log (huddle/applog.py: the same capped file the app's output goes to)
with a header saying what ran and how it ended, so `STATE_DIR/logs/<app>.log` tells the whole
story of a deploy. A failing command raises CommandError with its stderr tail; the controller
decides what that means for the deploy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

from huddle.applog import AppLog
from huddle.errors import CommandError
from huddle.runner import run_command

HOOK_TIMEOUT_S = 900.0


async def run_hooks(
    commands: Iterable[tuple],
    what: str,
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    timeout_s: float = HOOK_TIMEOUT_S,
) -> None:
    for argv in commands:
        result = await run_command(
            argv, cwd=str(cwd), env=env, timeout_s=timeout_s, check=False, sweep=True
        )
        append_log(
            log_path,
            f"--- huddle: {what}: {' '.join(argv)} -> {result.returncode}\n"
            + result.stdout
            + result.stderr,
        )
        if result.returncode != 0:
            raise CommandError(
                argv,
                f"({what}) exited with status {result.returncode}",
                result.stderr or result.stdout,
                result.returncode,
            )


def append_log(log_path: Path, text: str) -> None:
    """Append a note to the app's log; a log that cannot be written is reported once and
    the note goes to the agent's stderr (AppLog), never fatal to supervision."""
    AppLog.for_path(log_path).write(
        (text if text.endswith("\n") else text + "\n").encode("utf-8", errors="replace")
    )
