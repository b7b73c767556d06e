"""App configs: one `.json` or `.ini` file per app, parsed into frozen dataclasses.

INTERFACE ONLY (the loaders are being written): the dataclasses below are what the rest of
huddle codes against. Durations end in `_s` and are floats in seconds; commands are argv tuples
(see `parse_command`); the app's name is the file's stem.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from huddle.errors import ConfigError

Command = tuple  # argv tuple, e.g. ("python3", "-m", "web") or ("/bin/sh", "-c", "a | b")


@dataclass(frozen=True)
class RepositoryConfig:
    local_path: Path
    remote: str = "origin"
    remote_path: str = ""        # empty: the clone at local_path already has `remote`
    branch: str = "master"
    executable: str = "git"


@dataclass(frozen=True)
class TimingConfig:
    minimum_s: float = 10.0
    maximum_s: float = 20.0


@dataclass(frozen=True)
class ApplicationConfig:
    start: Command
    install: Command | None = None
    stop_timeout_s: float = 10.0
    environment: Mapping[str, str] = field(default_factory=dict)
    pre_pull: tuple = ()         # tuple of Command, from the original huddle's [scripts]
    post_pull: tuple = ()


@dataclass(frozen=True)
class HealthConfig:
    type: str = "none"           # "http", "socket" or "none"
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
class AppConfig:
    name: str
    source: Path
    repository: RepositoryConfig
    timing: TimingConfig
    application: ApplicationConfig
    health: HealthConfig = field(default_factory=HealthConfig)


def parse_command(text: str) -> Command:
    """Split a command line into argv; use /bin/sh -c only when the string needs a shell."""
    raise NotImplementedError


def load_file(path: Path) -> AppConfig:
    """Parse and validate one file; raises ConfigErrors listing every problem in it."""
    raise NotImplementedError


def load_paths(paths: Sequence[Path]) -> tuple[list[AppConfig], list[ConfigError]]:
    """Expand directories (skipping `_`-prefixed files), load each config; return the valid
    configs and every problem found, so `run` can skip bad files and `check` can list them."""
    raise NotImplementedError
