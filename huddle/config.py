"""App configs: one `.json` or `.ini` file per app, parsed into frozen dataclasses.

This module owns the file format and its validation; nothing else in huddle reads a config
file. A file is parsed into plain `{section: {key: value}}` first (JSON objects, or INI
sections with every value a string), keys are matched case-insensitively with `_` or `-`
standing for a space, and every value goes through one small converter that records a
`ConfigError` instead of raising, so a user sees every problem in a file at once. The
original huddle's (0.1.5) `type`, `[scripts]`, `[watchdog]` and reserved `[test]` forms
are translated here, so the agent only ever sees one shape. Durations end in `_s` and are
floats in seconds; commands are argv tuples (see `parse_command`); the app's name is the
file's stem. Relative `local path`s (and `./`, `../` remote paths) are resolved against the
directory of the config file, never against the agent's working directory.
"""
from __future__ import annotations

import configparser
import difflib
import json
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import urlsplit

from huddle.errors import ConfigError, ConfigErrors

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


SUFFIXES = (".json", ".ini")
SECTIONS: dict[str, tuple] = {
    "repository": ("remote", "remote path", "local path", "branch", "executable", "type"),
    "timing": ("minimum", "maximum"),
    "application": ("start", "install", "stop timeout", "environment"),
    "health": ("type", "host", "port", "path", "status", "send", "expect",
               "interval", "timeout", "retries", "grace"),
    "environment": (),                              # INI only; free-form variable names
    "scripts": ("pre-pull", "post-pull"),           # original huddle
    "watchdog": ("period", "host", "port", "request", "response"),  # original huddle
    "test": ("remote", "pass response"),            # original huddle, reserved and unused
}
HEALTH_TYPES = ("http", "socket", "none")
_MISSING = object()

# -- commands ----------------------------------------------------------------------------

_SHELL_CHARS = set("|&;<>()$`*?[\n")     # outside quotes: pipes, lists, redirections, globs...
_SHELL_WORDS = {"cd", "exec", "export", "source", ".", "set", "unset", "ulimit", "umask",
                "eval", "trap", "if", "for", "while", "until", "case", "{", "!"}
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
                return True                      # expansion inside double quotes
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


def parse_command(text: str) -> Command:
    """Split a command line into argv; use /bin/sh -c only when the string needs a shell.

    A shell is needed for pipes, lists (`&&`, `;`), redirections, `$VAR`, backticks, globs,
    `~`, comments, a leading `NAME=value` or a shell builtin such as `cd` as first word.
    Raises ValueError for an empty command or unbalanced quotes.
    """
    text = text.strip()
    argv = tuple(shlex.split(text))              # raises ValueError on a missing quote
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


# -- loading -------------------------------------------------------------------------------

def load_file(path: Path) -> AppConfig:
    """Parse and validate one file; raises ConfigErrors listing every problem in it."""
    path = Path(path)
    loader = _Loader(path)
    app = loader.load()
    if loader.problems or app is None:
        raise ConfigErrors(loader.problems)
    return app


def load_paths(paths: Sequence[Path]) -> tuple[list[AppConfig], list[ConfigError]]:
    """Expand directories (skipping `_`-prefixed files), load each config; return the valid
    configs and every problem found, so `run` can skip bad files and `check` can list them.

    Two apps with one name, or one working tree, are refused on the later file; the first
    stays valid."""
    configs: list[AppConfig] = []
    problems: list[ConfigError] = []
    seen: set[str] = set()
    for path in map(Path, paths):
        for file in _expand(path, problems):
            real = os.path.realpath(file)
            if real in seen:
                continue                          # the same file named twice: load it once
            seen.add(real)
            try:
                app = load_file(file)
            except ConfigErrors as exc:
                problems.extend(exc.problems)
                continue
            clash = _clash(app, configs)
            if clash:
                problems.append(ConfigError(str(file), *clash))
            else:
                configs.append(app)
    return configs, problems


def _expand(path: Path, problems: list[ConfigError]) -> list[Path]:
    """The config files `path` names: itself, or a directory's `*.json` and `*.ini`."""
    if path.is_dir():
        try:
            found = sorted(p for p in path.iterdir()
                           if p.suffix.lower() in SUFFIXES and p.is_file()
                           and not p.name.startswith(("_", ".")))
        except OSError as exc:
            problems.append(ConfigError(str(path), "-", f"cannot list: {exc.strerror}"))
            return []
        if not found:
            problems.append(ConfigError(str(path), "-", "no .json or .ini app configs in this "
                                        "directory (names starting with _ are skipped)"))
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
        if os.path.realpath(other.repository.local_path) == tree:
            return ("repository.local path",
                    f"{str(app.repository.local_path)!r} is already the working tree of "
                    f"app {other.name!r} ({other.source}); each app needs its own")
    return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _suggest(word: str, choices: Sequence[str], what: str) -> str:
    def plain(text: str) -> str:
        return text.strip().lower().replace("_", " ").replace("-", " ")
    by_plain = {plain(c): c for c in choices}
    close = difflib.get_close_matches(plain(word), list(by_plain), n=1, cutoff=0.6)
    if close:
        return f"unknown {what}; did you mean {by_plain[close[0]]!r}?"
    return f"unknown {what} (expected one of: {', '.join(choices)})"


class _Duplicates(dict):
    """A JSON object that remembers keys given twice (json keeps the last silently)."""

    def __init__(self, pairs: list) -> None:
        super().__init__()
        self.twice = []
        for key, value in pairs:
            if key in self:
                self.twice.append(key)
            self[key] = value


_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.?)", re.S)


class _Loader:
    """Reads one file, records every problem, builds the AppConfig when there is none."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ini = path.suffix.lower() == ".ini"
        self.problems: list[ConfigError] = []
        self.doc: dict[str, dict[str, Any]] = {}
        self.environment: dict[str, str] = {}
        self.broken: set[str] = set()            # sections already reported as malformed

    def problem(self, where: str, reason: str) -> None:
        self.problems.append(ConfigError(str(self.path), where, reason))

    # -- parse: text -> {section: {canonical key: value}} ----------------------------------

    def load(self) -> AppConfig | None:
        try:
            text = self.path.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError as exc:
            return self.problem("-", f"not UTF-8 text (byte {exc.start})")
        except OSError as exc:
            return self.problem("-", f"cannot read: {exc.strerror or exc}")
        if "\0" in text:
            line = text.count("\n", 0, text.index("\0")) + 1
            return self.problem("-", f"contains a NUL byte (line {line})")
        raw = self.parse_ini(text) if self.ini else self.parse_json(text)
        if raw is None:
            return None
        self.normalize(raw)
        return self.build()

    def parse_json(self, text: str) -> dict | None:
        try:
            doc = json.loads(text, object_pairs_hook=_Duplicates)
        except json.JSONDecodeError as exc:
            return self.problem("-", f"malformed JSON at line {exc.lineno}, "
                                     f"column {exc.colno}: {exc.msg}")
        except RecursionError:
            return self.problem("-", "malformed JSON: nested too deeply")
        if not isinstance(doc, dict):
            return self.problem("-", f"expected a JSON object at the top, got {_kind(doc)}")
        for name in doc.twice:
            self.problem(name, "section given twice")
        for name, body in list(doc.items()):
            if isinstance(body, dict):
                for key in body.twice:
                    self.problem(f"{name}.{key}", "key given twice")
            elif name.strip().lower() in SECTIONS:
                self.problem(name, f"expected an object, got {_kind(body)}")
                self.broken.add(name.strip().lower())
                del doc[name]
        return doc

    def parse_ini(self, text: str) -> dict | None:
        # No interpolation (a `%` in a URL is a `%`), no DEFAULT section (it would leak keys
        # into every section), keys keep their case (environment variable names need it).
        parser = configparser.ConfigParser(interpolation=None, default_section="\0")
        parser.optionxform = str  # type: ignore[assignment]
        try:
            parser.read_string(text, source=str(self.path))
        except configparser.MissingSectionHeaderError as exc:
            return self.problem("-", f"malformed INI at line {exc.lineno}: "
                                     "text before the first [section]")
        except configparser.DuplicateSectionError as exc:
            return self.problem("-", f"malformed INI at line {exc.lineno}: "
                                     f"section [{exc.section}] given twice")
        except configparser.DuplicateOptionError as exc:
            return self.problem("-", f"malformed INI at line {exc.lineno}: "
                                     f"key {exc.option!r} given twice in [{exc.section}]")
        except configparser.ParsingError as exc:
            # exc.errors holds (lineno, repr(line)): quote the line from the text instead
            lineno = exc.errors[0][0] if exc.errors else getattr(exc, "lineno", 0)
            lines = text.splitlines()
            line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
            return self.problem("-", f"malformed INI at line {lineno}: expected "
                                     f"'key = value' or '[section]', got {line!r}")
        except configparser.Error as exc:
            return self.problem("-", f"malformed INI: {exc}")
        return {name: dict(parser.items(name)) for name in parser.sections()}

    def normalize(self, raw: dict) -> None:
        for name, body in raw.items():
            section = name.strip().lower()
            if section not in SECTIONS:
                self.problem(name, _suggest(section, list(SECTIONS), "section"))
                continue
            if section == "environment":
                if self.ini:
                    self.environment_from(name, body)
                else:
                    self.problem(name, "unknown section; in JSON, environment goes inside "
                                       "application")
                continue
            if section in self.doc:
                self.problem(name, "section given twice")
                continue
            keys = SECTIONS[section]
            canon = {k.replace("-", " "): k for k in keys}
            out: dict[str, Any] = {}
            written: dict[str, str] = {}
            for key, value in body.items():
                known = canon.get(key.strip().lower().replace("_", " ").replace("-", " "))
                where = f"{section}.{key}"
                if known is None:
                    self.problem(where, _suggest(key, keys, "key"))
                elif known in out:
                    self.problem(f"{section}.{known}",
                                 f"given twice (as {written[known]!r} and {key!r})")
                elif isinstance(value, str) and "\0" in value:
                    self.problem(f"{section}.{known}", "contains a NUL byte")
                else:
                    out[known], written[known] = value, key
            self.doc[section] = out

    def environment_from(self, where: str, body: Any) -> None:
        if not isinstance(body, dict):
            return self.problem(where, f"expected an object of strings, got {_kind(body)}")
        for name, value in body.items():
            at = f"{where}.{name}"
            if not name or "=" in name or "\0" in name:
                self.problem(at, "not a valid environment variable name")
            elif not isinstance(value, str):
                self.problem(at, f"expected a string, got {_kind(value)}")
            elif "\0" in value:
                self.problem(at, "contains a NUL byte")
            else:
                self.environment[name] = value

    def missing(self, where: str, detail: str = "") -> None:
        if where.split(".")[0] not in self.broken:
            self.problem(where, "required key is missing" + detail)

    def get(self, section: str, key: str) -> Any:
        return self.doc.get(section, {}).get(key, _MISSING)

    # -- convert: one value -> a typed value, or None after recording a problem ------------

    def text(self, where: str, value: Any, empty_ok: bool = False) -> str | None:
        if not isinstance(value, str):
            return self.problem(where, f"expected a string, got {_kind(value)}")
        if not value.strip() and not empty_ok:
            return self.problem(where, "must not be empty")
        return value

    def number(self, where: str, value: Any, minimum: float = 0.0, above: bool = True,
               lenient: bool = False) -> float | None:
        if isinstance(value, str) and (self.ini or lenient):
            try:
                value = float(value)
            except ValueError:
                return self.problem(where, f"expected a number of seconds, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            return self.problem(where, f"expected a number of seconds, got {_kind(value)}")
        if not math.isfinite(value):
            return self.problem(where, f"expected a finite number, got {value}")
        if value < minimum or (above and value == minimum):
            bound = "greater than" if above else "at least"
            return self.problem(where, f"must be {bound} {minimum:g}, got {value:g}")
        return float(value)

    def integer(self, where: str, value: Any, low: int, high: int | None = None,
                lenient: bool = False) -> int | None:
        if isinstance(value, str) and (self.ini or lenient):
            if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
                return self.problem(where, f"expected a whole number, got {value!r}")
            value = int(value)
        elif isinstance(value, float):
            return self.problem(where, f"expected a whole number, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int):
            return self.problem(where, f"expected a whole number, got {_kind(value)}")
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            return self.problem(where, f"must be {span}, got {value}")
        return value

    def command(self, where: str, value: Any) -> Command | None:
        if isinstance(value, list) and not self.ini:
            if not value or not all(isinstance(a, str) for a in value):
                return self.problem(where, "expected a non-empty list of strings")
            if not value[0].strip():
                return self.problem(where, "empty command")
            if any("\0" in a for a in value):
                return self.problem(where, "contains a NUL byte")
            return tuple(value)
        if not isinstance(value, str):
            return self.problem(where, f"expected a command string or a list of strings, "
                                       f"got {_kind(value)}")
        if "\0" in value:
            return self.problem(where, "contains a NUL byte")
        try:
            return parse_command(value)
        except ValueError as exc:
            return self.problem(where, str(exc) if str(exc) == "empty command"
                                else f"cannot split command: {exc}")

    def commands(self, where: str, value: Any) -> tuple | None:
        if isinstance(value, str):
            items: list = [v.strip() for v in value.split(",")] if self.ini else [value]
        elif isinstance(value, list) and not self.ini:
            items = value
        else:
            return self.problem(where, f"expected a list of commands, got {_kind(value)}")
        out = []
        for number, item in enumerate(items, 1):
            at = f"{where}[{number}]" if len(items) > 1 else where
            cmd = self.command(at, item)
            if cmd is None:
                return None
            out.append(cmd)
        return tuple(out)

    def status(self, where: str, value: Any) -> tuple | None:
        parts = value if isinstance(value, list) and not self.ini else [value]
        ranges = []
        for part in parts:
            if isinstance(part, int) and not isinstance(part, bool):
                part = str(part)
            if not isinstance(part, str):
                return self.problem(where, f"expected status codes like 200 or 200-399, "
                                           f"got {_kind(part)}")
            for item in part.split(","):
                m = re.fullmatch(r"\s*([0-9]{3})\s*(?:-\s*([0-9]{3})\s*)?", item)
                if not m:
                    return self.problem(where, f"expected status codes like 200, 200-399 "
                                               f"or 200,204, got {item.strip()!r}")
                low, high = int(m.group(1)), int(m.group(2) or m.group(1))
                if not 100 <= low <= high <= 599:
                    return self.problem(where, f"{item.strip()!r} is not a range of HTTP "
                                               "status codes (100-599, low to high)")
                ranges.append((low, high))
        return tuple(ranges) if ranges else self.problem(where, "must not be empty")

    def data(self, where: str, value: Any) -> bytes | None:
        if not isinstance(value, str):
            return self.problem(where, f"expected a string, got {_kind(value)}")
        if not self.ini:
            return value.encode("utf-8") or None
        out, pos = bytearray(), 0
        for m in _ESCAPE.finditer(value):        # INI cannot hold CR/LF: `\r\n` is written
            out += value[pos:m.start()].encode("utf-8")
            code = m.group(1)
            if code.startswith("x") and len(code) == 3:
                out.append(int(code[1:], 16))
            elif code in _ESCAPES:
                out += _ESCAPES[code]
            else:
                return self.problem(where, f"unknown escape '\\{code}' (use \\r \\n \\t "
                                           "\\0 \\\\ or \\xHH)")
            pos = m.end()
        out += value[pos:].encode("utf-8")
        return bytes(out) or None

    # -- build: sections -> dataclasses ------------------------------------------------------

    def build(self) -> AppConfig | None:
        repository = self.repository()
        timing = self.timing()
        application = self.application()
        health = self.health()
        self.reserved_test()
        if self.problems or None in (repository, timing, application, health):
            return None
        return AppConfig(self.path.stem, self.path, repository, timing, application, health)

    def resolve(self, text: str) -> str:
        base = self.path.absolute().parent
        return os.path.normpath(os.path.join(base, os.path.expanduser(text)))

    def repository(self) -> RepositoryConfig | None:
        values: dict[str, Any] = {}
        local = self.get("repository", "local path")
        if local is _MISSING:
            self.missing("repository.local path")
        elif self.text("repository.local path", local) is not None:
            values["local_path"] = Path(self.resolve(local))
            if values["local_path"] == Path("/"):
                self.problem("repository.local path", "must not be the file system root")
        for key, attr in (("remote", "remote"), ("branch", "branch")):
            value = self.get("repository", key)
            if value is not _MISSING and self.text(f"repository.{key}", value) is not None:
                why = ref_name_problem(value)
                if key == "branch" and value == "HEAD":
                    why = "'HEAD' is not a branch name"
                if why:
                    self.problem(f"repository.{key}", why)
                values[attr] = value
        remote_path = self.get("repository", "remote path")
        if remote_path is not _MISSING and self.text("repository.remote path", remote_path,
                                                     empty_ok=True) is not None:
            remote_path = remote_path.strip()
            if remote_path.startswith("-"):
                self.problem("repository.remote path",
                             f"{remote_path!r} starts with '-', git would read it as an option")
            elif remote_path.startswith(("./", "../")):
                remote_path = self.resolve(remote_path)
            values["remote_path"] = remote_path
        executable = self.get("repository", "executable")
        if executable is not _MISSING and self.text("repository.executable",
                                                    executable) is not None:
            values["executable"] = executable
        kind = self.get("repository", "type")
        if kind is not _MISSING and self.text("repository.type", kind) is not None \
                and kind.strip().lower() != "git":
            self.problem("repository.type", f"only 'git' repositories are supported, "
                                            f"got {kind!r}")
        return RepositoryConfig(**values) if "local_path" in values else None

    def timing(self) -> TimingConfig | None:
        low, high = (self.get("timing", k) for k in ("minimum", "maximum"))
        low = 10.0 if low is _MISSING else self.number("timing.minimum", low)
        high = 20.0 if high is _MISSING else self.number("timing.maximum", high)
        if low is None or high is None:
            return None
        if "maximum" not in self.doc.get("timing", {}):
            high = max(high, low)               # the original: `minimum` alone is the period
        elif "minimum" not in self.doc.get("timing", {}):
            low = min(low, high)
        elif low > high:
            return self.problem("timing.minimum", f"must not be greater than maximum "
                                                  f"({high:g}), got {low:g}")
        return TimingConfig(low, high)

    def application(self) -> ApplicationConfig | None:
        before = len(self.problems)
        section = self.doc.get("application", {})
        if "environment" in section and self.ini:
            self.problem("application.environment", "in an INI file, write the variables "
                                                    "in an [environment] section")
        elif "environment" in section:
            self.environment_from("application.environment", section["environment"])
        values: dict[str, Any] = {"environment": dict(self.environment)}
        if "start" not in section:
            self.missing("application.start")
        else:
            values["start"] = self.command("application.start", section["start"])
        install = section.get("install", "")
        if not (isinstance(install, str) and not install.strip()):   # empty: no install
            values["install"] = self.command("application.install", install)
        if "stop timeout" in section:
            values["stop_timeout_s"] = self.number("application.stop timeout",
                                                   section["stop timeout"], above=False)
        for key in ("pre-pull", "post-pull"):
            value = self.get("scripts", key)
            if value is not _MISSING:
                values[key.replace("-", "_")] = self.commands(f"scripts.{key}", value)
        return None if len(self.problems) > before else ApplicationConfig(**values)

    def health(self) -> HealthConfig | None:
        if "watchdog" in self.doc:
            if "health" in self.doc:
                return self.problem("watchdog", "use either [health] or the original "
                                                "[watchdog] section, not both")
            return self.watchdog()
        before = len(self.problems)
        section = self.doc.get("health", {})
        kind = self.text("health.type", section.get("type", "none")) or "none"
        kind = kind.strip().lower()
        if kind not in HEALTH_TYPES:
            self.problem("health.type", f"unknown health type {kind!r}; expected "
                                        "http, socket or none")
        values: dict[str, Any] = {"type": kind}
        convert = {
            "host": self.text,
            "port": lambda w, v: self.integer(w, v, 1, 65535),
            "path": self.url_path, "status": self.status,
            "send": self.data, "expect": self.data,
            "interval": self.number, "timeout": self.number,
            "retries": lambda w, v: self.integer(w, v, 1),
            "grace": lambda w, v: self.number(w, v, above=False),
        }
        for key, value in section.items():
            if key != "type":
                attr = key + "_s" if key in ("interval", "timeout", "grace") else key
                values[attr] = convert[key](f"health.{key}", value)
        if kind in ("http", "socket") and "port" not in section:
            self.missing("health.port", f" (health.type is {kind})")
        only = {"http": ("send",), "socket": ("path", "status")}.get(kind, ())
        for key in only:
            if key in section:
                other = "socket" if kind == "http" else "http"
                self.problem(f"health.{key}", f"only used by {other} checks, and "
                                              f"health.type is {kind}")
        return None if len(self.problems) > before else HealthConfig(**values)

    def url_path(self, where: str, value: Any) -> str | None:
        if self.text(where, value) is None:
            return None
        if not value.startswith("/"):
            return self.problem(where, f"must start with '/', got {value!r}")
        return value

    def watchdog(self) -> HealthConfig | None:
        """The original's [watchdog]: a `host` containing `http` is an HTTP check of that
        URL; otherwise a socket check of host:port (port 80 when absent, as there)."""
        section = self.doc["watchdog"]
        values: dict[str, Any] = {}
        if "period" in section:
            values["interval_s"] = self.number("watchdog.period", section["period"],
                                               lenient=True)
        port = None
        if "port" in section:
            port = self.integer("watchdog.port", section["port"], 1, 65535, lenient=True)
            if port is None:
                return None
        host = section.get("host", "127.0.0.1")
        if self.text("watchdog.host", host) is None:
            return None
        if "http" in host:
            values.update(type="http", **(self.watchdog_url(host, port) or {}))
            if "port" not in values:
                return None
        else:
            values.update(type="socket", host=host.strip(), port=port or 80)
            for key, attr in (("request", "send"), ("response", "expect")):
                if key in section:
                    values[attr] = self.data(f"watchdog.{key}", section[key])
        return None if None in values.values() else HealthConfig(**values)

    def watchdog_url(self, url: str, port: int | None) -> dict | None:
        parts = urlsplit(url.strip())
        try:
            url_port = parts.port
        except ValueError:
            return self.problem("watchdog.host", f"{url!r} has an invalid port")
        if parts.scheme != "http" or not parts.hostname:
            reason = ("https is not supported by health checks" if parts.scheme == "https"
                      else "expected an http:// URL such as http://localhost:8080/ping")
            return self.problem("watchdog.host", f"{reason}, got {url!r}")
        if url_port and port and url_port != port:
            return self.problem("watchdog.port", f"{port} conflicts with the port in "
                                                 f"watchdog.host ({url_port})")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return {"host": parts.hostname, "port": url_port or port or 80, "path": path}

    def reserved_test(self) -> None:
        """The original's [test] was reserved and never implemented: accept it empty."""
        for key, value in self.doc.get("test", {}).items():
            if value not in ("", None):
                self.problem(f"test.{key}", "the original huddle's [test] section was never "
                                            "implemented; leave it empty or remove it")
