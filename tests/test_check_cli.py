"""`huddle check` as a user runs it: a real subprocess, its exit code, stdout and stderr."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CONFIGS = Path(__file__).parent / "configs"
ROOT = Path(__file__).parent.parent
GOOD = {"repository": {"local path": "/srv/good"}, "application": {"start": "app"}}


def huddle(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "huddle", *map(str, args)],
        cwd=cwd or ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_valid_configs_exit_0_and_say_so():
    done = huddle(
        "check", CONFIGS / "spec_json", CONFIGS / "spec_ini" / "web.ini", CONFIGS / "original"
    )
    # spec_ini/web.ini repeats the name `web` of spec_json/web.json: one problem
    assert done.returncode == 1
    assert done.stdout == (
        f"{CONFIGS / 'spec_ini' / 'web.ini'}: -: app name 'web' is already "
        f"used by {CONFIGS / 'spec_json' / 'web.json'}\n"
    )
    assert done.stderr == "1 problem in 1 of 5 files\n"

    done = huddle("check", CONFIGS / "spec_json", CONFIGS / "original")
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "4 configs valid\n")


def test_one_valid_config_is_singular(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(GOOD))
    done = huddle("check", "a.json", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "1 config valid\n")


def test_problems_one_line_each_and_a_summary(tmp_path):
    (tmp_path / "good.json").write_text(json.dumps(GOOD))
    (tmp_path / "typo.ini").write_text(
        "[repository]\nlocal_pth = /srv/typo\n[application]\nstart = app\n"
    )
    (tmp_path / "range.json").write_text(
        json.dumps(
            {**GOOD, "repository": {"local path": "/srv/r"}, "health": {"type": "http", "port": 0}}
        )
    )
    (tmp_path / "_ignored.json").write_text("not even json")
    done = huddle("check", ".", "missing.json", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "range.json: health.port: must be between 1 and 65535, got 0",
        "typo.ini: repository.local_pth: unknown key; did you mean 'local path'?",
        "typo.ini: repository.local path: required key is missing",
        "missing.json: -: no such file or directory",
    ]
    assert done.stderr == "4 problems in 3 of 4 files\n"


def test_broken_files_never_show_a_traceback(tmp_path):
    (tmp_path / "a.json").write_text('{"repository": ')
    (tmp_path / "b.ini").write_bytes(b"[repository]\nlocal path = /x\x00\n")
    (tmp_path / "c.ini").write_bytes(b"\xff\xfe[repository]\n")
    (tmp_path / "d.json").mkdir()
    done = huddle(
        "check", tmp_path / "a.json", tmp_path / "b.ini", tmp_path / "c.ini", tmp_path / "d.json"
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr + done.stdout
    assert done.stdout.splitlines() == [
        f"{tmp_path / 'a.json'}: -: malformed JSON at line 1, column 16: Expecting value",
        f"{tmp_path / 'b.ini'}: -: contains a NUL byte (line 2)",
        f"{tmp_path / 'c.ini'}: -: not UTF-8 text (byte 0)",
        f"{tmp_path / 'd.json'}: -: no .json or .ini app configs in this directory "
        "(names starting with _ are skipped)",
    ]
    assert done.stderr == "4 problems in 4 of 4 files\n"


def test_check_needs_a_path():
    done = huddle("check")
    assert done.returncode == 2
    assert "the following arguments are required: PATH" in done.stderr
