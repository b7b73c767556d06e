"""The shapes of a valid app config, and the two string forms they are built from.

This module owns what the agent receives once a file has been checked: frozen dataclasses,
one per section, grouped under `AppConfig`, plus `parse_command` (a command line to an argv
tuple, with /bin/sh only when the text needs a shell) and `ref_name_problem` (git's rules
for branch and remote names). Those two live here, beside the types that hold their results,
rather than in the checker, because they are public: `huddle.config` re-exports everything
in this module, and it imports nothing from the other config modules, so the reader, the
checker and the loader can all depend on it without a cycle.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

Command = tuple  # argv tuple, e.g. ("python3", "-m", "web") or ("/bin/sh", "-c", "a | b")


@dataclass(frozen=True)
class RepositoryConfig:
    local_path: Path
    remote: str = "origin"
    remote_path: str = ""  # empty: the clone at local_path already has `remote`
    branch: str = "master"
    executable: str = "git"
    allowed_signers: Path | None = None  # SSH allowed-signers file: deploy only signed commits
    gpg_home: Path | None = None  # OpenPGP keyring directory, likewise


@dataclass(frozen=True)
class TimingConfig:
    minimum_s: float = 10.0
    maximum_s: float = 20.0


@dataclass(frozen=True)
class ApplicationConfig:
    start: Command
    install: Command | None = None
    install_timeout_s: float = 900.0
    stop_timeout_s: float = 10.0
    environment: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScriptsConfig:
    """The original huddle's [scripts]: hooks around a pull, with or without an app."""

    pre_pull: tuple = ()  # tuple of Command
    post_pull: tuple = ()


@dataclass(frozen=True)
class HealthConfig:
    type: str = "none"  # "http", "socket" or "none"
    host: str = "127.0.0.1"
    port: int | None = None
    path: str = "/"
    status: tuple = ((200, 399),)  # accepted (low, high) ranges, inclusive
    send: bytes | None = None
    expect: bytes | None = None
    interval_s: float = 10.0
    timeout_s: float = 3.0
    retries: int = 3
    grace_s: float = 10.0

    def accepts(self, status_code: int) -> bool:
        return any(lo <= status_code <= hi for lo, hi in self.status)


@dataclass(frozen=True)
class RolloutConfig:
    """Rollout waves over an MQTT fleet: a device that is not a canary deploys a new commit
    `wait_s` plus a device-specific share of `spread_s` after first seeing it. Without a
    broker, or with the defaults, nothing waits."""

    spread_s: float = 0.0
    canary: tuple = ()  # fnmatch patterns of device ids that go first
    wait_s: float | None = None  # None: the trial window plus `timing.maximum` if canaries


@dataclass(frozen=True)
class AppConfig:
    name: str
    source: Path
    repository: RepositoryConfig
    timing: TimingConfig
    application: ApplicationConfig | None  # None: a file-sync app, no process
    health: HealthConfig = field(default_factory=HealthConfig)
    scripts: ScriptsConfig = field(default_factory=ScriptsConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)


# -- commands ----------------------------------------------------------------------------

_SHELL_CHARS = set("|&;<>()$`*?[\n")  # outside quotes: pipes, lists, redirections, globs...
_SHELL_WORDS = {
    "cd",
    "exec",
    "export",
    "source",
    ".",
    "set",
    "unset",
    "ulimit",
    "umask",
    "eval",
    "trap",
    "if",
    "for",
    "while",
    "until",
    "case",
    "{",
    "!",
}
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")


def _needs_shell(text: str) -> bool:
    """True when `text` uses shell syntax outside quotes, as `sh` would read it."""
    quote, escaped, word_start = "", False, True
    for ch in text:
        if escaped:
            escaped, word_start = False, False
        elif quote == "'":
            quote = "" if ch == "'" else quote
        elif quote == '"':
            if ch in "$`":
                return True  # expansion inside double quotes
            escaped = ch == "\\"
            quote = "" if ch == '"' else quote
        elif ch == "\\":
            escaped = True
        elif ch in "'\"":
            quote, word_start = ch, False
        elif ch in _SHELL_CHARS or (word_start and ch in "#~"):
            return True
        else:
            word_start = ch in " \t"
    return False


def split_command(text: str) -> list[str]:
    """`shlex.split(text)` (POSIX rules, no comments) in time linear in the text: shlex
    builds each word a character at a time, which is quadratic in the word's length.
    Raises ValueError with shlex's messages for a missing quote or a trailing backslash."""
    words: list[str] = []
    word: list[str] = []
    in_word, i, n = False, 0, len(text)
    while i < n:
        ch = text[i]
        if ch in " \t\r\n":
            if in_word:
                words.append("".join(word))
                word, in_word = [], False
            i += 1
            continue
        in_word = True
        if ch == "\\":
            if i + 1 >= n:
                raise ValueError("No escaped character")
            word.append(text[i + 1])
            i += 2
        elif ch == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ValueError("No closing quotation")
            word.append(text[i + 1 : end])
            i = end + 1
        elif ch == '"':
            i += 1
            while True:  # inside "...": a backslash escapes only " and itself
                stop = _DQ_STOP.search(text, i)
                if stop is None:
                    raise ValueError("No closing quotation")
                word.append(text[i : stop.start()])
                i = stop.end()
                if stop.group() == '"':
                    break
                if i >= n:
                    raise ValueError("No escaped character")
                word.append(text[i] if text[i] in '"\\' else "\\" + text[i])
                i += 1
        else:
            stop = _PLAIN_STOP.search(text, i)
            end = stop.start() if stop else n
            word.append(text[i:end])
            i = end
    if in_word:
        words.append("".join(word))
    return words


_DQ_STOP = re.compile(r'["\\]')
_PLAIN_STOP = re.compile(r"[ \t\r\n\\'\"]")


def parse_command(text: str) -> Command:
    """Split a command line into argv; use /bin/sh -c only when the string needs a shell.

    A shell is needed for pipes, lists (`&&`, `;`), redirections, `$VAR`, backticks, globs,
    `~`, comments, a leading `NAME=value` or a shell builtin such as `cd` as first word.
    Raises ValueError for an empty command or unbalanced quotes. Linear in the text.
    """
    text = text.strip()
    argv = tuple(split_command(text))  # raises ValueError on a missing quote
    if not argv:
        raise ValueError("empty command")
    if _needs_shell(text) or argv[0] in _SHELL_WORDS or _ASSIGNMENT.match(argv[0]):
        return ("/bin/sh", "-c", text)
    return argv


# -- git names -----------------------------------------------------------------------------


def ref_name_problem(name: str) -> str | None:
    """Why git would refuse `name` as a branch or remote name (`git check-ref-format`
    rules), or None when it is fine. A leading `-` is refused too: git would read an option."""
    if not name:
        return "must not be empty"
    if name.startswith("-"):
        return f"{name!r} starts with '-', git would read it as an option"
    for ch in name:
        if ord(ch) < 0x20 or ord(ch) == 0x7F:
            return f"{name!r} contains a control character"
        if ch in " ~^:?*[\\":
            return f"{name!r} contains {ch!r}, which git does not allow in ref names"
    for bad in ("..", "@{", "//"):
        if bad in name:
            return f"{name!r} contains {bad!r}, which git does not allow in ref names"
    if name == "@" or name.startswith("/") or name.endswith(("/", ".")):
        return f"{name!r} is not a valid git ref name"
    for part in name.split("/"):
        if part.startswith(".") or part.endswith(".lock"):
            return f"{name!r} has a part starting with '.' or ending with '.lock'"
    return None
