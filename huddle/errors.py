"""huddle's one error family.

Every error a user can cause or meet (a bad config, a failing git call, a dead board) is a
HuddleError; the CLI prints it as `huddle: message` and exits 1, never a traceback. Anything
that is not a HuddleError is a bug in huddle and is allowed to crash loudly.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

# A line that names a failure, as git, pip, apt and most CLIs start one. Tools often end with
# hints instead (pip's PEP 668 refusal ends with a `hint:` after ten lines of advice), so the
# last lines alone can miss what went wrong.
_NAMING_LINE = re.compile(r"(?:error|fatal|ERROR|FATAL|Error|E)\s*:")
TAIL_LINES = 3


def stderr_summary(stderr: str, tail: int = TAIL_LINES) -> list[str]:
    """The lines of `stderr` an error message keeps: the first line naming the failure (when
    it is not among the last ones) and the last `tail` non-blank lines."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    kept = lines[-tail:]
    naming = next((line for line in lines if _NAMING_LINE.match(line)), None)
    if naming is not None and naming not in kept:
        kept.insert(0, naming)
    return kept


class HuddleError(Exception):
    """Base of every user-facing huddle error."""


class ConfigError(HuddleError):
    """One problem in one config file, printed as `FILE: section.key: reason`."""

    def __init__(self, file: str, where: str, reason: str) -> None:
        self.file = file
        self.where = where  # "section.key", "section" or "-" when the whole file is at fault
        self.reason = reason
        super().__init__(f"{file}: {where}: {reason}")


class ConfigErrors(HuddleError):
    """All problems found in one file (validation reports every one, not just the first)."""

    def __init__(self, problems: Sequence[ConfigError]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class CommandError(HuddleError):
    """A child process (git, a hook) failed, timed out or could not start."""

    def __init__(
        self, argv: Sequence[str], reason: str, stderr: str = "", returncode: int | None = None
    ) -> None:
        self.argv = list(argv)
        self.reason = reason
        self.stderr = stderr
        self.returncode = returncode
        detail = stderr_summary(stderr)
        tail = (": " + " | ".join(detail)) if detail else ""
        super().__init__(f"`{shlex.join(self.argv)}` {reason}{tail}")


class GitError(CommandError):
    """A git call failed; carries the command line and git's stderr."""


class RefusedError(HuddleError):
    """A commit huddle will not deploy as it stands (it would overwrite untracked files, its
    signature is not trusted): tried again only when the branch moves to another commit."""


class TreeConflictError(GitError, RefusedError):
    """A checkout would overwrite or remove untracked or ignored paths (`.paths`, relative to
    the working tree); nothing was touched."""

    def __init__(self, argv: Sequence[str], paths: Sequence[str]) -> None:
        self.paths = sorted(paths)
        shown = ", ".join(self.paths[:10]) + (
            f" and {len(self.paths) - 10} more" if len(self.paths) > 10 else ""
        )
        super().__init__(
            argv,
            "refused: it would overwrite or remove untracked or ignored "
            f"paths: {shown} (move them away or add them to the commit)",
        )


class SignatureError(RefusedError):
    """A commit not signed by a key the app trusts (unsigned, an unknown key, a signature
    that does not match the commit): `who` says who signed it, or `unsigned`."""

    def __init__(self, commit: str, who: str, status: str, message: str) -> None:
        self.commit = commit
        self.who = who  # "unsigned", "signed by alice@example.com (key SHA256:...)"
        self.status = status  # git's %G? letter
        super().__init__(message)


class StateError(HuddleError):
    """The state file cannot be read or written."""


class BoardError(HuddleError):
    """A MicroPython board could not be reached or flashed."""


class PublishError(HuddleError):
    """A branch cannot be published as a micro manifest."""
