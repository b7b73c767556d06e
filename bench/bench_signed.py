"""Issue 14: what checking a commit's signature costs, against a no-change poll.

Usage: python bench/bench_signed.py [--calls N] [--reps R]

In one process, interleaved round by round so load on the machine hits every figure alike:
`GitRepo.remote_head` over file:// (what every poll runs), `Signers.require` of an
SSH-signed commit (one `git log --format=%G?` that runs `ssh-keygen -Y find-principals` and
`-Y verify`, plus the private GNUPGHOME made and removed per check), and, when gpg is
installed, of an OpenPGP-signed commit. Wall time per call, and the CPU of the children
(git and what it runs) from RUSAGE_CHILDREN. A verification runs once per new head, not per
poll. R repetitions of N calls each, medians. Writes bench/out/signed.json.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common  # noqa: E402
from huddle.git import GitRepo  # noqa: E402
from huddle.signatures import Signers  # noqa: E402


def run(*argv, cwd=None, **kw) -> str:
    return subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        **kw,
    ).stdout.strip()


def setup(root: Path) -> dict:
    env = {
        "GIT_AUTHOR_NAME": "b",
        "GIT_AUTHOR_EMAIL": "b@example.com",
        "GIT_COMMITTER_NAME": "b",
        "GIT_COMMITTER_EMAIL": "b@example.com",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": "/usr/bin:/bin",
        "HOME": str(root),
    }
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "rel", "-f", root / "key")
    (root / "allowed").write_text("rel@example.com " + (root / "key.pub").read_text())
    run("git", "init", "-q", "--bare", "-b", "main", root / "origin.git", env=env)
    run("git", "clone", "-q", (root / "origin.git").as_uri(), root / "tree", env=env)
    tree = root / "tree"
    (tree / "a.txt").write_text("a\n")
    run("git", "add", "a.txt", cwd=tree, env=env)
    run(
        "git",
        "-c",
        "gpg.format=ssh",
        "-c",
        f"user.signingkey={root}/key.pub",
        "commit",
        "-qS",
        "-m",
        "ssh",
        cwd=tree,
        env=env,
    )
    out = {"tree": tree, "ssh": run("git", "rev-parse", "HEAD", cwd=tree), "gpg": None}
    if shutil.which("gpg"):
        sign = Path(tempfile.mkdtemp(prefix="bgpg-"))
        device = Path(tempfile.mkdtemp(prefix="bgpg-"))
        out["gpg_homes"] = (sign, device)
        run(
            "gpg",
            "--homedir",
            sign,
            "--batch",
            "--passphrase",
            "",
            "--quick-generate-key",
            "rel@example.com",
            "ed25519",
            "sign",
            "never",
        )
        key = subprocess.run(
            ["gpg", "--homedir", str(sign), "--export", "rel@example.com"],
            capture_output=True,
            check=True,
            timeout=60,
        ).stdout
        subprocess.run(
            ["gpg", "--homedir", str(device), "--batch", "--import"],
            input=key,
            capture_output=True,
            check=True,
            timeout=60,
        )
        (tree / "a.txt").write_text("b\n")
        run(
            "git",
            "-c",
            "user.signingkey=rel@example.com",
            "commit",
            "-qaS",
            "-m",
            "gpg",
            cwd=tree,
            env={**env, "GNUPGHOME": str(sign)},
        )
        out["gpg"] = run("git", "rev-parse", "HEAD", cwd=tree)
        out["device"] = device
    run("git", "push", "-q", "origin", "HEAD:main", cwd=tree, env=env)
    return out


async def measure(calls: int, make) -> tuple:
    """(wall ms, children's CPU ms) per call of `make()`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for _ in range(calls):
        await make()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return wall * 1000 / calls, cpu * 1000 / calls


async def main_async(args) -> dict:
    root = common.temp_root("bench-signed-")
    info = common.machine()
    s = setup(root)
    tree = s["tree"]
    repo = GitRepo(tree)
    ssh = Signers(root / "allowed", None)
    kinds = {
        "poll: ls-remote (file://)": lambda: repo.remote_head("origin", "main"),
        "verify: SSH signature": lambda: ssh.require(tree, s["ssh"]),
    }
    if s["gpg"]:
        gpg = Signers(None, s["device"])
        kinds["verify: OpenPGP signature"] = lambda: gpg.require(tree, s["gpg"])
    results = {k: {"wall": [], "cpu": []} for k in kinds}
    for _ in range(args.reps):
        for name, make in kinds.items():
            wall, cpu = await measure(args.calls, make)
            results[name]["wall"].append(wall)
            results[name]["cpu"].append(cpu)
    for home in s.get("gpg_homes", ()):
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30
        )
        shutil.rmtree(home, ignore_errors=True)
    shutil.rmtree(root, ignore_errors=True)
    info["load_end"] = common.loadavg()
    return {"machine": info, "calls": args.calls, "reps": args.reps, "results": results}


def table(data: dict) -> str:
    res = data["results"]
    base = statistics.median(res["poll: ls-remote (file://)"]["wall"])
    lines = [
        common.machine_line(data["machine"]) + f"; load at end {data['machine']['load_end']}",
        "",
        f"{data['reps']} × {data['calls']} calls, medians per call",
        "",
        "| call | wall, ms | git's CPU, ms | wall / poll |",
        "|---|---:|---:|---:|",
    ]
    for name, r in res.items():
        wall, cpu = statistics.median(r["wall"]), statistics.median(r["cpu"])
        lines.append(f"| {name} | {wall:.1f} | {cpu:.1f} | {wall / base:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    data = asyncio.run(main_async(args))
    common.publish_results("signed.json", data, table(data))


if __name__ == "__main__":
    main()
