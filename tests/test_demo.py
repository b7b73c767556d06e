"""`huddle demo` is what a newcomer runs first: it must complete and clean up after itself."""

import re
import subprocess
import sys
from pathlib import Path


def test_demo_deploys_updates_rolls_back_and_cleans_up():
    proc = subprocess.run(
        [sys.executable, "-m", "huddle", "demo"], capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for line in (
        "== Act 1",
        "== Act 2",
        "== Act 3",
        "hello from v1",
        "hello from v2",
        "rolling back to",
        "Demo complete",
    ):
        assert line in out
    root = Path(re.search(r"everything happens in (\S+)", out).group(1))
    assert not root.exists()
    assert "Traceback" not in proc.stderr
