"""Checking raw config values and building the frozen dataclasses from them.

This module owns the meaning of every key: `ConfigChecker` extends the file reader of
`huddle.config.reader` with one small converter per kind of value (text, seconds, whole
numbers, commands, status ranges, byte strings), each of which records a `ConfigError` and
returns None instead of raising, and with one builder per section that turns what survived
into `RepositoryConfig`, `TimingConfig`, `ApplicationConfig` and `HealthConfig`. The
original huddle's (0.1.5) `type`, `[scripts]`, `[watchdog]` and reserved `[test]` forms
are translated here too, so the agent only ever sees one shape. Relative `local path`s
(and `./`, `../` remote paths) are resolved against the directory of the config file,
never against the agent's working directory.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from huddle.config.reader import MISSING, ConfigReader, kind_of
from huddle.config.signers import allowed_signers_problems, gpg_home_problems
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

HEALTH_TYPES = ("http", "socket", "none")
_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "0": b"\0", "\\": b"\\"}
_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.?)", re.S)


class ConfigChecker(ConfigReader):
    """Reads one file, records every problem, builds the AppConfig when there is none."""

    def load(self) -> AppConfig | None:
        return self.build() if self.read() else None

    # -- convert: one value -> a typed value, or None after recording a problem ------------

    def text(self, where: str, value: Any, empty_ok: bool = False) -> str | None:
        if not isinstance(value, str):
            self.problem(where, f"expected a string, got {kind_of(value)}")
            return None
        if not value.strip() and not empty_ok:
            self.problem(where, "must not be empty")
            return None
        return value

    def number(
        self,
        where: str,
        value: Any,
        minimum: float = 0.0,
        above: bool = True,
        lenient: bool = False,
    ) -> float | None:
        if isinstance(value, str) and (self.ini or lenient):
            try:
                value = float(value)
            except ValueError:
                self.problem(where, f"expected a number of seconds, got {value!r}")
                return None
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            self.problem(where, f"expected a number of seconds, got {kind_of(value)}")
            return None
        if not math.isfinite(value):
            self.problem(where, f"expected a finite number, got {value}")
            return None
        if value < minimum or (above and value == minimum):
            bound = "greater than" if above else "at least"
            self.problem(where, f"must be {bound} {minimum:g}, got {value:g}")
            return None
        return float(value)

    def integer(
        self, where: str, value: Any, low: int, high: int | None = None, lenient: bool = False
    ) -> int | None:
        if isinstance(value, str) and (self.ini or lenient):
            if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", value):
                self.problem(where, f"expected a whole number, got {value!r}")
                return None
            value = int(value)
        elif isinstance(value, float):
            self.problem(where, f"expected a whole number, got {value!r}")
            return None
        elif isinstance(value, bool) or not isinstance(value, int):
            self.problem(where, f"expected a whole number, got {kind_of(value)}")
            return None
        if value < low or (high is not None and value > high):
            span = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.problem(where, f"must be {span}, got {value}")
            return None
        return value

    def command(self, where: str, value: Any) -> Command | None:
        if isinstance(value, list) and not self.ini:
            if not value or not all(isinstance(a, str) for a in value):
                self.problem(where, "expected a non-empty list of strings")
                return None
            if not value[0].strip():
                self.problem(where, "empty command")
                return None
            if any("\0" in a for a in value):
                self.problem(where, "contains a NUL byte")
                return None
            return tuple(value)
        if not isinstance(value, str):
            self.problem(
                where, f"expected a command string or a list of strings, got {kind_of(value)}"
            )
            return None
        if "\0" in value:
            self.problem(where, "contains a NUL byte")
            return None
        try:
            return parse_command(value)
        except ValueError as exc:
            self.problem(
                where, str(exc) if str(exc) == "empty command" else f"cannot split command: {exc}"
            )
            return None

    def commands(self, where: str, value: Any) -> tuple | None:
        if isinstance(value, str):
            items: list = [v.strip() for v in value.split(",")] if self.ini else [value]
        elif isinstance(value, list) and not self.ini:
            items = value
        else:
            self.problem(where, f"expected a list of commands, got {kind_of(value)}")
            return None
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
                self.problem(
                    where, f"expected status codes like 200 or 200-399, got {kind_of(part)}"
                )
                return None
            for item in part.split(","):
                m = re.fullmatch(r"\s*([0-9]{3})\s*(?:-\s*([0-9]{3})\s*)?", item)
                if not m:
                    self.problem(
                        where,
                        f"expected status codes like 200, 200-399 or 200,204, got {item.strip()!r}",
                    )
                    return None
                low, high = int(m.group(1)), int(m.group(2) or m.group(1))
                if not 100 <= low <= high <= 599:
                    self.problem(
                        where,
                        f"{item.strip()!r} is not a range of HTTP "
                        "status codes (100-599, low to high)",
                    )
                    return None
                ranges.append((low, high))
        if not ranges:
            self.problem(where, "must not be empty")
            return None
        return tuple(ranges)

    def data(self, where: str, value: Any) -> bytes | None:
        if not isinstance(value, str):
            self.problem(where, f"expected a string, got {kind_of(value)}")
            return None
        if not self.ini:
            return value.encode("utf-8") or None
        out, pos = bytearray(), 0
        for m in _ESCAPE.finditer(value):  # INI cannot hold CR/LF: `\r\n` is written
            out += value[pos : m.start()].encode("utf-8")
            code = m.group(1)
            if code.startswith("x") and len(code) == 3:
                out.append(int(code[1:], 16))
            elif code in _ESCAPES:
                out += _ESCAPES[code]
            else:
                self.problem(
                    where, f"unknown escape '\\{code}' (use \\r \\n \\t \\0 \\\\ or \\xHH)"
                )
                return None
            pos = m.end()
        out += value[pos:].encode("utf-8")
        return bytes(out) or None

    # -- build: sections -> dataclasses ------------------------------------------------------

    def build(self) -> AppConfig | None:
        repository = self.repository()
        timing = self.timing()
        application = self.application() if "application" in self.doc else None
        if application is None and self.environment and "application" not in self.doc:
            self.problem(
                "environment",
                "the variables are the app's: add an [application] section, or remove them",
            )
        scripts = self.scripts()
        health = self.health()
        rollout = self.rollout()
        self.reserved_test()
        if self.problems or repository is None or timing is None:
            return None
        if health is None or scripts is None or rollout is None:
            return None
        return AppConfig(
            self.path.stem, self.path, repository, timing, application, health, scripts, rollout
        )

    def resolve(self, text: str) -> str:
        base = self.path.absolute().parent
        path = os.path.normpath(os.path.join(base, os.path.expanduser(text)))
        # POSIX lets `//x` differ from `/x` and normpath keeps it; Linux does not differ
        return path[1:] if path.startswith("//") else path

    def repository(self) -> RepositoryConfig | None:
        values: dict[str, Any] = {}
        local = self.get("repository", "local path")
        if local is MISSING:
            self.missing("repository.local path")
        elif self.text("repository.local path", local) is not None:
            values["local_path"] = Path(self.resolve(local))
            if values["local_path"] == Path("/"):
                self.problem("repository.local path", "must not be the file system root")
        for key, attr in (("remote", "remote"), ("branch", "branch")):
            value = self.get("repository", key)
            if value is not MISSING and self.text(f"repository.{key}", value) is not None:
                why = ref_name_problem(value)
                if key == "branch" and value == "HEAD":
                    why = "'HEAD' is not a branch name"
                if why:
                    self.problem(f"repository.{key}", why)
                values[attr] = value
        remote_path = self.get("repository", "remote path")
        if (
            remote_path is not MISSING
            and self.text("repository.remote path", remote_path, empty_ok=True) is not None
        ):
            remote_path = remote_path.strip()
            if remote_path.startswith("-"):
                self.problem(
                    "repository.remote path",
                    f"{remote_path!r} starts with '-', git would read it as an option",
                )
            elif remote_path.startswith(("./", "../")):
                remote_path = self.resolve(remote_path)
            values["remote_path"] = remote_path
        executable = self.get("repository", "executable")
        if executable is not MISSING and self.text("repository.executable", executable) is not None:
            values["executable"] = executable
        for key, check in (
            ("allowed signers", allowed_signers_problems),
            ("gpg home", gpg_home_problems),
        ):
            value = self.get("repository", key)
            if value is not MISSING and self.text(f"repository.{key}", value) is not None:
                values[key.replace(" ", "_")] = path = Path(self.resolve(value.strip()))
                for reason in check(path):
                    self.problem(f"repository.{key}", reason)
        kind = self.get("repository", "type")
        if (
            kind is not MISSING
            and self.text("repository.type", kind) is not None
            and kind.strip().lower() != "git"
        ):
            self.problem("repository.type", f"only 'git' repositories are supported, got {kind!r}")
        return RepositoryConfig(**values) if "local_path" in values else None

    def timing(self) -> TimingConfig | None:
        low, high = (self.get("timing", k) for k in ("minimum", "maximum"))
        low = 10.0 if low is MISSING else self.number("timing.minimum", low)
        high = 20.0 if high is MISSING else self.number("timing.maximum", high)
        if low is None or high is None:
            return None
        if "maximum" not in self.doc.get("timing", {}):
            high = max(high, low)  # the original: `minimum` alone is the period
        elif "minimum" not in self.doc.get("timing", {}):
            low = min(low, high)
        elif low > high:
            self.problem(
                "timing.minimum", f"must not be greater than maximum ({high:g}), got {low:g}"
            )
            return None
        return TimingConfig(low, high)

    def application(self) -> ApplicationConfig | None:
        before = len(self.problems)
        section = self.doc.get("application", {})
        if "environment" in section and self.ini:
            self.problem(
                "application.environment",
                "in an INI file, write the variables in an [environment] section",
            )
        elif "environment" in section:
            self.environment_from("application.environment", section["environment"])
        values: dict[str, Any] = {"environment": dict(self.environment)}
        if "start" not in section and "executable" not in section:
            self.missing("application.start")
        else:
            values["start"] = self.start_command(section)
        install = section.get("install", "")
        if not (isinstance(install, str) and not install.strip()):  # empty: no install
            values["install"] = self.command("application.install", install)
        for key in ("stop timeout", "install timeout"):
            if key in section:
                values[key.replace(" ", "_") + "_s"] = self.number(
                    f"application.{key}", section[key], above=key == "install timeout"
                )
        if len(self.problems) > before or "start" not in values:  # or refused while read
            return None
        return ApplicationConfig(**values)

    def start_command(self, section: dict) -> Command | None:
        """`start`, run by the original huddle's `executable` (its interpreter) when that is
        given too: `executable = python3` and `start = app.py` run `python3 app.py`; an
        `executable` alone is the whole command, as the original's sample file wrote it."""
        start = section.get("start", MISSING)
        if "executable" not in section:
            return self.command("application.start", start)
        interpreter = self.command("application.executable", section["executable"])
        if interpreter is None or start is MISSING:
            return interpreter
        if interpreter[:2] == ("/bin/sh", "-c"):
            self.problem(
                "application.executable",
                "must be a program and its arguments, without shell syntax, when start is given",
            )
            return None
        if isinstance(start, str):
            return self.command("application.start", shlex.join(interpreter) + " " + start)
        tail = self.command("application.start", start)
        return None if tail is None else interpreter + tail

    def rollout(self) -> RolloutConfig | None:
        before = len(self.problems)
        values: dict[str, Any] = {}
        for key in ("spread", "wait"):
            value = self.get("rollout", key)
            if value is not MISSING:
                values[f"{key}_s"] = self.number(f"rollout.{key}", value, above=False)
        canary = self.get("rollout", "canary")
        if canary is not MISSING:
            values["canary"] = self.canary_patterns("rollout.canary", canary)
        return None if len(self.problems) > before else RolloutConfig(**values)

    def canary_patterns(self, where: str, value: Any) -> tuple | None:
        """true (this device is a canary), false, or device-id patterns (`pi-0*`)."""
        flags = ("true", "yes", "on", "false", "no", "off")
        if isinstance(value, str) and value.strip().lower() in flags:
            value = value.strip().lower() in ("true", "yes", "on")
        if isinstance(value, bool):
            return ("*",) if value else ()
        items: list[Any]
        if isinstance(value, str):
            items = [v.strip() for v in value.split(",")]
        elif isinstance(value, list) and not self.ini:
            items = value
        else:
            self.problem(where, f"expected true, false or device id patterns, got {kind_of(value)}")
            return None
        if not all(isinstance(i, str) and i.strip() for i in items):
            self.problem(where, "expected a list of non-empty device id patterns")
            return None
        return tuple(i.strip() for i in items)

    def scripts(self) -> ScriptsConfig | None:
        before = len(self.problems)
        values: dict[str, Any] = {}
        for key in ("pre-pull", "post-pull"):
            value = self.get("scripts", key)
            if value is not MISSING:
                values[key.replace("-", "_")] = self.commands(f"scripts.{key}", value)
        return None if len(self.problems) > before else ScriptsConfig(**values)

    def health(self) -> HealthConfig | None:
        if "watchdog" in self.doc:
            if "health" in self.doc:
                self.problem(
                    "watchdog", "use either [health] or the original [watchdog] section, not both"
                )
                return None
            return self.watchdog()
        before = len(self.problems)
        section = self.doc.get("health", {})
        kind = self.text("health.type", section.get("type", "none")) or "none"
        kind = kind.strip().lower()
        if kind not in HEALTH_TYPES:
            self.problem(
                "health.type", f"unknown health type {kind!r}; expected http, socket or none"
            )
        values: dict[str, Any] = {"type": kind}
        convert: dict[str, Callable[[str, Any], Any]] = {
            "host": self.text,
            "port": lambda w, v: self.integer(w, v, 1, 65535),
            "path": self.url_path,
            "status": self.status,
            "send": self.data,
            "expect": self.data,
            "interval": self.number,
            "timeout": self.number,
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
                self.problem(
                    f"health.{key}", f"only used by {other} checks, and health.type is {kind}"
                )
        return None if len(self.problems) > before else HealthConfig(**values)

    def url_path(self, where: str, value: Any) -> str | None:
        if self.text(where, value) is None:
            return None
        if not value.startswith("/"):
            self.problem(where, f"must start with '/', got {value!r}")
            return None
        return value

    def watchdog(self) -> HealthConfig | None:
        """The original's [watchdog]: a `host` containing `http` is an HTTP check of that
        URL; otherwise a socket check of host:port (port 80 when absent, as there)."""
        section = self.doc["watchdog"]
        values: dict[str, Any] = {}
        if "period" in section:
            values["interval_s"] = self.number("watchdog.period", section["period"], lenient=True)
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
            self.problem("watchdog.host", f"{url!r} has an invalid port")
            return None
        if parts.scheme != "http" or not parts.hostname:
            reason = (
                "https is not supported by health checks"
                if parts.scheme == "https"
                else "expected an http:// URL such as http://localhost:8080/ping"
            )
            self.problem("watchdog.host", f"{reason}, got {url!r}")
            return None
        if url_port and port and url_port != port:
            self.problem(
                "watchdog.port", f"{port} conflicts with the port in watchdog.host ({url_port})"
            )
            return None
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return {"host": parts.hostname, "port": url_port or port or 80, "path": path}

    def reserved_test(self) -> None:
        """The original's [test] was reserved and never implemented: accept it empty."""
        for key, value in self.doc.get("test", {}).items():
            if value not in ("", None):
                self.problem(
                    f"test.{key}",
                    "the original huddle's [test] section was never "
                    "implemented; leave it empty or remove it",
                )
