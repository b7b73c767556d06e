"""A failed command's error names the failure: the line saying what went wrong is kept even
when the command ends with lines of hints (pip's PEP 668 refusal on Debian 12)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from huddle.errors import CommandError
from huddle.runner import run_command


def failure(argv: list[str]) -> CommandError:
    with pytest.raises(CommandError) as caught:
        asyncio.run(run_command(argv, timeout_s=60))
    return caught.value


def failing_with(tmp_path: Path, stderr: str) -> str:
    """The message of a real command that prints `stderr` and exits 2."""
    text = tmp_path / "stderr.txt"
    text.write_text(stderr)
    return str(failure(["sh", "-c", 'cat "$0" >&2; exit 2', str(text)]))


def test_the_error_line_survives_trailing_hints(tmp_path):
    hints = "".join(f"hint: advice {n}\n" for n in range(1, 8))
    message = failing_with(tmp_path, "Cloning...\nfatal: the remote hung up\n\n" + hints)
    assert "fatal: the remote hung up" in message
    assert "hint: advice 7" in message  # the tail is still there
    assert "hint: advice 3" not in message and "Cloning" not in message


def test_a_short_stderr_is_kept_whole_and_once(tmp_path):
    message = failing_with(tmp_path, "error: no such thing\nhint: try\n")
    assert message.count("error: no such thing") == 1 and "hint: try" in message


@pytest.mark.skipif(
    not list(Path("/usr/lib").glob("python3*/EXTERNALLY-MANAGED")),
    reason="needs a PEP 668 system python (Debian 12, Raspberry Pi OS Bookworm)",
)
def test_pip_refusing_a_system_install_is_named():
    # what an app's `install = pip install -r requirements.txt` meets there
    message = str(failure(["/usr/bin/python3", "-m", "pip", "install", "--dry-run", "six"]))
    if "No module named pip" in message:
        pytest.skip("the system python has no pip")
    assert "error: externally-managed-environment" in message
