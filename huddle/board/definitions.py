"""Board definitions: one JSON file per supported MicroPython board in `boards/`.

This module owns that format and its validation; `huddle flash` only ever sees a checked
`Board`. A definition says what to copy and where (globs of the repository, so every module
added to `micro/` ships without editing a list), where the device config goes, whether and
for which architecture to compile with mpy-cross (and the .mpy version the firmware must
accept), the heap the agent can expect, whether the board joins Wi-Fi (then `boards/boot.py`
is written as its `boot.py`), how to reset it and whether TLS is usable. Unknown keys are
errors, as in app configs, so a typo in a board file never passes silently.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from huddle.errors import BoardError

# A checkout (or an editable install) has micro/ and boards/ beside the package; a wheel
# carries them as huddle/_dist/{micro,boards} (see pyproject.toml).
_PACKAGE = Path(__file__).resolve().parent.parent
_CHECKOUT = _PACKAGE.parent
ROOT = _CHECKOUT if (_CHECKOUT / "micro").is_dir() else _PACKAGE / "_dist"
BOARDS_DIR = ROOT / "boards"

# mpy-cross -O level unless a board file says otherwise: measured best for the agent's heap
# (-O3 drops line numbers and asserts; about 1 KB less on a 32-bit port, docs/micro.md)
MPY_OPT = 3
RESETS = ("machine", "soft")  # machine.reset() (mpremote `reset`), Ctrl-D (`soft-reset`)
KEYS: dict[str, type | tuple[type, ...]] = {
    "description": str,
    "copy": dict,
    "config": str,
    "compile": (dict, bool),
    "mpy": str,
    "heap_kb": int,
    "wifi": bool,
    "boot": str,
    "reset": str,
    "tls": (bool, str),
    "notes": str,
}
REQUIRED = ("description", "copy", "config", "compile", "heap_kb", "wifi", "reset", "tls")


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    copy: dict  # glob relative to the repository -> board directory ending in "/"
    config: str  # board path of the device config
    march: str | None  # mpy-cross -march; None: copy sources as they are
    mpy: str | None  # .mpy version the firmware loads, e.g. "6.3"
    heap_kb: int
    wifi: bool
    boot: str | None  # board path of the Wi-Fi boot shim (boards with wifi)
    reset: str
    tls: object  # True, False or "limited"
    notes: str = ""
    opt: int = MPY_OPT  # mpy-cross -O level

    @property
    def compiles(self) -> bool:
        return self.march is not None


def board_names(directory: Path = BOARDS_DIR) -> list:
    return sorted(p.stem for p in Path(directory).glob("*.json"))


def load_board(name: str, directory: Path = BOARDS_DIR) -> Board:
    path = Path(directory) / f"{name}.json"
    if "/" in name or not path.is_file():
        known = ", ".join(board_names(directory)) or "none"
        raise BoardError(f"unknown board {name!r} (known: {known})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BoardError(f"{path}: cannot read board definition: {exc}") from None
    return check_board(name, raw, str(path))


def check_board(name: str, raw: object, where: str) -> Board:
    """A checked Board, or BoardError listing every problem as `FILE: key: reason`."""
    if not isinstance(raw, dict):
        raise BoardError(f"{where}: -: expected a JSON object")
    bad = [(k, "unknown key") for k in raw if k not in KEYS]
    bad += [(k, "required") for k in REQUIRED if k not in raw]
    for key, kind in KEYS.items():
        if key in raw and not isinstance(raw[key], kind):
            bad.append((key, f"wrong type {type(raw[key]).__name__}"))
    if bad:
        raise BoardError("\n".join(f"{where}: {k}: {r}" for k, r in bad))
    compile_ = raw["compile"]
    if compile_ is True or (
        isinstance(compile_, dict)
        and (
            not {"march"} <= set(compile_) <= {"march", "opt"}
            or not isinstance(compile_["march"], str)
            or compile_.get("opt", MPY_OPT) not in (0, 1, 2, 3)
        )
    ):
        bad.append(("compile", 'false or {"march": ARCH} (and optionally "opt": 0..3)'))
    elif compile_ and not raw.get("mpy"):
        bad.append(("mpy", "required when compiling (the firmware's .mpy version, e.g. 6.3)"))
    for pattern, dest in raw["copy"].items():
        if not isinstance(dest, str) or not dest.endswith("/") or ".." in pattern.split("/"):
            bad.append((f"copy.{pattern}", "a repository glob mapped to a directory ending in /"))
    if raw["reset"] not in RESETS:
        bad.append(("reset", "must be " + " or ".join(RESETS)))
    if raw["tls"] not in (True, False, "limited"):
        bad.append(("tls", 'must be true, false or "limited"'))
    if raw["wifi"] and not raw.get("boot"):
        bad.append(("boot", "required on a board with wifi (where the boot shim goes)"))
    if raw["heap_kb"] <= 0:
        bad.append(("heap_kb", "must be > 0"))
    if bad:
        raise BoardError("\n".join(f"{where}: {k}: {r}" for k, r in bad))
    return Board(
        name=name,
        description=raw["description"],
        copy=dict(raw["copy"]),
        config=raw["config"],
        march=compile_["march"] if compile_ else None,
        mpy=raw.get("mpy"),
        heap_kb=raw["heap_kb"],
        wifi=raw["wifi"],
        boot=raw.get("boot"),
        reset=raw["reset"],
        tls=raw["tls"],
        notes=raw.get("notes", ""),
        opt=compile_.get("opt", MPY_OPT) if compile_ else MPY_OPT,
    )
