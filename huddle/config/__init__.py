"""App configs: one `.json` or `.ini` file per app, parsed into frozen dataclasses.

This module is the public face of the config package and owns finding and loading files;
nothing else in huddle reads a config file. `load_file` parses and checks one file and
raises `ConfigErrors` listing every problem in it; `load_paths` expands directories, loads
each file once and refuses a second app with the same name or working tree, returning the
valid configs beside every problem so `run` can skip bad files and `check` can list them.
The work is split by layer, each module importing only the ones below it: the dataclasses,
`parse_command` and `ref_name_problem` live in `huddle.config.types` (re-exported here, so
other modules import them from `huddle.config`); text to raw sections in
`huddle.config.reader`; raw values to dataclasses, with the original huddle's forms, in
`huddle.config.checker`. Durations end in `_s` and are floats in seconds; commands are argv
tuples; the app's name is the file's stem.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from huddle.config.checker import HEALTH_TYPES, ConfigChecker
from huddle.config.reader import SECTIONS, SUFFIXES
from huddle.config.types import (
    AppConfig,
    ApplicationConfig,
    Command,
    HealthConfig,
    RepositoryConfig,
    RolloutConfig,
    ScriptsConfig,
    TimingConfig,
    parse_command,
    ref_name_problem,
)
from huddle.errors import ConfigError, ConfigErrors

__all__ = [
    "AppConfig",
    "ApplicationConfig",
    "Command",
    "HealthConfig",
    "RepositoryConfig",
    "RolloutConfig",
    "ScriptsConfig",
    "TimingConfig",
    "HEALTH_TYPES",
    "SECTIONS",
    "SUFFIXES",
    "load_file",
    "load_paths",
    "parse_command",
    "ref_name_problem",
]

# -- loading -------------------------------------------------------------------------------


def load_file(path: Path) -> AppConfig:
    """Parse and validate one file; raises ConfigErrors listing every problem in it."""
    path = Path(path)
    loader = ConfigChecker(path)
    app = loader.load()
    if loader.problems or app is None:
        raise ConfigErrors(loader.problems)
    return app


def load_paths(
    paths: Sequence[Path], state_dir: Path | None = None
) -> tuple[list[AppConfig], list[ConfigError]]:
    """Expand directories (skipping `_`-prefixed files), load each config; return the valid
    configs and every problem found, so `run` can skip bad files and `check` can list them.

    Two apps with one name, or one working tree, or trees nested in each other, are refused
    on the later file; the first stays valid. With `state_dir` (both `run` and `check` pass
    it), a working tree that is, holds or lies inside the state dir is refused too."""
    configs: list[AppConfig] = []
    problems: list[ConfigError] = []
    seen: set[str] = set()
    for path in map(Path, paths):
        for file in _expand(path, problems):
            real = os.path.realpath(file)
            if real in seen:
                continue  # the same file named twice: load it once
            seen.add(real)
            try:
                app = load_file(file)
            except ConfigErrors as exc:
                problems.extend(exc.problems)
                continue
            clash = _clash(app, configs) or _in_state_dir(app, state_dir)
            if clash:
                problems.append(ConfigError(str(file), *clash))
            else:
                configs.append(app)
    return configs, problems


def _expand(path: Path, problems: list[ConfigError]) -> list[Path]:
    """The config files `path` names: itself, or a directory's `*.json` and `*.ini`."""
    if path.is_dir():
        try:
            found = sorted(
                p
                for p in path.iterdir()
                if p.suffix.lower() in SUFFIXES
                and p.is_file()
                and not p.name.startswith(("_", "."))
            )
        except OSError as exc:
            problems.append(ConfigError(str(path), "-", f"cannot list: {exc.strerror}"))
            return []
        if not found:
            problems.append(
                ConfigError(
                    str(path),
                    "-",
                    "no .json or .ini app configs in this "
                    "directory (names starting with _ are skipped)",
                )
            )
        return found
    if not path.exists():
        problems.append(ConfigError(str(path), "-", "no such file or directory"))
    elif path.suffix.lower() not in SUFFIXES:
        problems.append(ConfigError(str(path), "-", "not a .json or .ini file"))
    else:
        return [path]
    return []


def _clash(app: AppConfig, earlier: list[AppConfig]) -> tuple[str, str] | None:
    for other in earlier:
        if other.name == app.name:
            return "-", f"app name {app.name!r} is already used by {other.source}"
    tree = os.path.realpath(app.repository.local_path)
    for other in earlier:
        theirs = os.path.realpath(other.repository.local_path)
        how = (
            "is already"
            if theirs == tree
            else "is inside"
            if _within(tree, theirs)
            else "holds"
            if _within(theirs, tree)
            else None
        )
        if how:
            # one git tree inside another: each deploy would see the other's files as
            # untracked, and a checkout of the outer one could replace the inner one
            return (
                "repository.local path",
                f"{str(app.repository.local_path)!r} {how} the working tree of "
                f"app {other.name!r} ({other.source}); each app needs its own"
                + ("" if theirs == tree else ", not nested in another"),
            )
    return None


def _in_state_dir(app: AppConfig, state_dir: Path | None) -> tuple[str, str] | None:
    if state_dir is None:
        return None
    tree, state = os.path.realpath(app.repository.local_path), os.path.realpath(state_dir)
    how = (
        "is"
        if tree == state
        else "is inside"
        if _within(tree, state)
        else "holds"
        if _within(state, tree)
        else None
    )
    if how is None:
        return None
    return (
        "repository.local path",
        f"{str(app.repository.local_path)!r} {how} the state "
        f"dir {str(state_dir)!r}; keep app trees apart from it",
    )


def _within(path: str, directory: str) -> bool:
    """True when real path `path` lies strictly below real path `directory`."""
    return path != directory and path.startswith(directory.rstrip("/") + "/")
