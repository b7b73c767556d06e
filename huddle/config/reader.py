"""Reading one app config file into raw sections: `{section: {canonical key: value}}`.

This module owns the text layer of the format and nothing about values: it reads the file
as UTF-8, refuses NUL bytes, parses JSON (remembering keys given twice, which `json` would
drop silently) or INI (no interpolation, no DEFAULT section, keys keep their case), then
matches section and key names case-insensitively with `_` or `-` standing for a space,
suggesting the closest name for a typo. `ConfigReader` records each problem as a
`ConfigError` instead of raising, so a user sees every problem in a file at once; the
checker in `huddle.config.checker` extends it and shares that list, which is why the reader is
a class holding state rather than a set of functions returning values.
"""

from __future__ import annotations

import configparser
import difflib
import json
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from huddle.errors import ConfigError

SUFFIXES = (".json", ".ini")
SECTIONS: dict[str, tuple] = {
    "repository": (
        "remote",
        "remote path",
        "local path",
        "branch",
        "executable",
        "type",
        "allowed signers",
        "gpg home",
    ),
    "timing": ("minimum", "maximum"),
    "application": (
        "start",
        "executable",
        "install",
        "install timeout",
        "stop timeout",
        "environment",
    ),
    "health": (
        "type",
        "host",
        "port",
        "path",
        "status",
        "send",
        "expect",
        "interval",
        "timeout",
        "retries",
        "grace",
    ),
    "rollout": ("spread", "canary", "wait"),  # fleet rollout waves (docs/mqtt.md)
    "environment": (),  # INI only; free-form variable names
    "scripts": ("pre-pull", "post-pull"),  # original huddle
    "watchdog": ("period", "host", "port", "request", "response"),  # original huddle
    "test": ("remote", "pass response"),  # original huddle, reserved and unused
}
MISSING = object()  # a key the file does not give
# Bounds that keep checking a hostile or mistaken file quick; far above any real config.
MAX_FILE_BYTES = 64 * 1024
MAX_VALUE_CHARS = 4096  # one value, or one item of a list


def kind_of(value: Any) -> str:
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


def _too_long(value: Any) -> bool:
    items = value if isinstance(value, list) else [value]
    return any(isinstance(item, str) and len(item) > MAX_VALUE_CHARS for item in items)


class _Duplicates(dict):
    """A JSON object that remembers keys given twice (json keeps the last silently)."""

    def __init__(self, pairs: list) -> None:
        super().__init__()
        self.twice: list[str] = []
        for key, value in pairs:
            if key in self:
                self.twice.append(key)
            self[key] = value


class ConfigReader:
    """Reads one file into `doc` (and `environment`), recording every problem."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ini = path.suffix.lower() == ".ini"
        self.problems: list[ConfigError] = []
        self.doc: dict[str, dict[str, Any]] = {}
        self.environment: dict[str, str] = {}
        self.broken: set[str] = set()  # sections already reported as malformed
        self.rejected: set[str] = set()  # "section.key"s given but refused

    def problem(self, where: str, reason: str) -> None:
        self.problems.append(ConfigError(str(self.path), where, reason))

    # -- parse: text -> {section: {canonical key: value}} ----------------------------------

    def read(self) -> bool:
        """Fill `doc` from the file; False when it cannot be parsed at all (recorded)."""
        text = self.read_text()
        raw = None if text is None else self.parse_ini(text) if self.ini else self.parse_json(text)
        if raw is None:
            return False
        self.normalize(raw)
        return True

    def read_text(self) -> str | None:
        try:
            # non-blocking and a regular file only: a FIFO or a device never ends a read
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    self.problem("-", "not a regular file")
                    return None
                data = fh.read(MAX_FILE_BYTES + 1)  # at most one byte past the bound
            if len(data) > MAX_FILE_BYTES:
                self.problem(
                    "-", f"larger than {MAX_FILE_BYTES // 1024} KB, the limit for a config file"
                )
                return None
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            self.problem("-", f"not UTF-8 text (byte {exc.start})")
            return None
        except OSError as exc:
            self.problem("-", f"cannot read: {exc.strerror or exc}")
            return None
        if "\0" in text:
            line = text.count("\n", 0, text.index("\0")) + 1
            self.problem("-", f"contains a NUL byte (line {line})")
            return None
        return text

    def parse_json(self, text: str) -> dict | None:
        try:
            doc = json.loads(text, object_pairs_hook=_Duplicates)
        except json.JSONDecodeError as exc:
            self.problem("-", f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}")
            return None
        except RecursionError:
            self.problem("-", "malformed JSON: nested too deeply")
            return None
        if not isinstance(doc, _Duplicates):  # every JSON object is one (object_pairs_hook)
            self.problem("-", f"expected a JSON object at the top, got {kind_of(doc)}")
            return None
        for name in doc.twice:
            self.problem(name, "section given twice")
        for name, body in list(doc.items()):
            if isinstance(body, _Duplicates):
                for key in body.twice:
                    self.problem(f"{name}.{key}", "key given twice")
            elif name.strip().lower() in SECTIONS:
                self.problem(name, f"expected an object, got {kind_of(body)}")
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
            self.problem(
                "-", f"malformed INI at line {exc.lineno}: text before the first [section]"
            )
            return None
        except configparser.DuplicateSectionError as exc:
            self.problem(
                "-", f"malformed INI at line {exc.lineno}: section [{exc.section}] given twice"
            )
            return None
        except configparser.DuplicateOptionError as exc:
            self.problem(
                "-",
                f"malformed INI at line {exc.lineno}: "
                f"key {exc.option!r} given twice in [{exc.section}]",
            )
            return None
        except configparser.ParsingError as exc:
            # exc.errors holds (lineno, repr(line)): quote the line from the text instead
            lineno = exc.errors[0][0] if exc.errors else getattr(exc, "lineno", 0)
            lines = text.splitlines()
            line = lines[lineno - 1].strip() if 0 < lineno <= len(lines) else ""
            self.problem(
                "-",
                f"malformed INI at line {lineno}: expected "
                f"'key = value' or '[section]', got {line!r}",
            )
            return None
        except configparser.Error as exc:
            self.problem("-", f"malformed INI: {exc}")
            return None
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
                    self.problem(
                        name, "unknown section; in JSON, environment goes inside application"
                    )
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
                    self.problem(
                        f"{section}.{known}", f"given twice (as {written[known]!r} and {key!r})"
                    )
                elif isinstance(value, str) and "\0" in value:
                    self.problem(f"{section}.{known}", "contains a NUL byte")
                    self.rejected.add(f"{section}.{known}")
                elif _too_long(value):
                    self.problem(
                        f"{section}.{known}",
                        f"longer than {MAX_VALUE_CHARS} characters, the limit for a value",
                    )
                    self.rejected.add(f"{section}.{known}")
                else:
                    out[known], written[known] = value, key
            self.doc[section] = out

    def environment_from(self, where: str, body: Any) -> None:
        if not isinstance(body, dict):
            self.problem(where, f"expected an object of strings, got {kind_of(body)}")
            return None
        for name, value in body.items():
            at = f"{where}.{name}"
            if not name or "=" in name or "\0" in name:
                self.problem(at, "not a valid environment variable name")
            elif not isinstance(value, str):
                self.problem(at, f"expected a string, got {kind_of(value)}")
            elif "\0" in value:
                self.problem(at, "contains a NUL byte")
            else:
                self.environment[name] = value

    def missing(self, where: str, detail: str = "") -> None:
        if where.split(".")[0] not in self.broken and where not in self.rejected:
            self.problem(where, "required key is missing" + detail)

    def get(self, section: str, key: str) -> Any:
        return self.doc.get(section, {}).get(key, MISSING)
