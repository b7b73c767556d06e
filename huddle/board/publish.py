"""Publishing a git branch as a static manifest tree that micro devices can follow.

`publish()` reads one commit's tree straight from the object database (`git ls-tree -r -z`
and one streaming `git cat-file --batch`; never the working copy, so uncommitted edits cannot
leak onto devices), writes every file once as `OUT/blobs/<sha256>` and replaces
`OUT/manifest.txt` atomically. Blobs are content-addressed, written through a temporary file
and a rename and skipped when already present, so publishing twice is idempotent and a CDN can
keep serving older manifests while a new one goes up: nothing is deleted unless asked
(`prune=True`). Paths a device could misread are refused with the offending path named:
`..`/`.`/empty segments, a leading `/`, backslashes, newlines and other control characters,
names that are not UTF-8, symlinks and submodules.

Each manifest
carries `seq N` (after `branch`), N = max(now in Unix seconds, the previous manifest's N + 1):
it never goes backwards for one output directory, and devices refuse a manifest whose seq is
not above the one they installed, so a replayed older signed manifest cannot downgrade them.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from huddle.errors import GitError, PublishError

MANIFEST_NAME = "manifest.txt"
MANIFEST_MAGIC = "huddle-manifest 1"
CHUNK = 64 * 1024
GIT_TIMEOUT_S = 60.0

MODE_FILE = ("100644", "100755")
MODE_SYMLINK = "120000"
MODE_GITLINK = "160000"


@dataclass(frozen=True)
class Entry:
    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Summary:
    commit: str
    branch: str
    files: int
    bytes: int
    new_blobs: int
    pruned: int
    signed: bool
    manifest: Path


def _git_env() -> dict:
    env = dict(os.environ)
    env.update(GIT_TERMINAL_PROMPT="0", GIT_ASKPASS="", SSH_ASKPASS="", LC_ALL="C")
    return env


def _run_git(argv: list[str], timeout_s: float = GIT_TIMEOUT_S) -> bytes:
    """Run one git command with a timeout; returns stdout, raises GitError with stderr."""
    try:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout_s, env=_git_env()
        )
    except FileNotFoundError as exc:
        raise GitError(argv, f"could not start: {exc.strerror}") from None
    except subprocess.TimeoutExpired as exc:
        raise GitError(
            argv, f"timed out after {timeout_s:g}s", (exc.stderr or b"").decode(errors="replace")
        ) from None
    if proc.returncode != 0:
        raise GitError(
            argv,
            f"exited with {proc.returncode}",
            proc.stderr.decode(errors="replace"),
            proc.returncode,
        )
    return proc.stdout


def check_path(raw: bytes) -> str:
    """The path as text, or PublishError when a device could misread or escape with it."""
    shown = raw.decode("utf-8", errors="backslashreplace")
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise PublishError(f"{shown!r}: file name is not valid UTF-8") from None
    if any(ord(c) < 32 or ord(c) == 127 for c in path):
        raise PublishError(f"{shown!r}: control character (e.g. newline) in a file name")
    if path.startswith("/"):
        raise PublishError(f"{shown!r}: absolute path")
    if "\\" in path:
        raise PublishError(f"{shown!r}: backslash in a path (ambiguous on devices)")
    if any(seg in ("", ".", "..") for seg in path.split("/")):
        raise PublishError(f"{shown!r}: empty, '.' or '..' path segment")
    return path


def resolve_branch(repo: Path, branch: str, git: str = "git") -> str:
    """The commit the branch points at; refuses option-like and unknown branch names."""
    if not branch or branch.startswith("-"):
        raise PublishError(f"invalid branch name {branch!r}")
    argv = [git, "-C", str(repo), "check-ref-format", "--branch", branch]
    try:
        _run_git(argv)
    except GitError:
        raise PublishError(f"invalid branch name {branch!r}") from None
    argv = [
        git,
        "-C",
        str(repo),
        "rev-parse",
        "--verify",
        "--quiet",
        f"refs/heads/{branch}^{{commit}}",
    ]
    try:
        return _run_git(argv).decode().strip()
    except GitError as exc:
        if exc.returncode == 1 and not exc.stderr.strip():
            raise PublishError(f"{repo}: no branch {branch!r}") from None
        raise


def list_tree(repo: Path, commit: str, git: str = "git") -> list[tuple[str, str]]:
    """[(path, git blob id)] of every file in the commit, sorted by path; refuses the rest."""
    out = _run_git([git, "-C", str(repo), "ls-tree", "-r", "-z", "--full-tree", commit])
    files = []
    for record in out.split(b"\0"):
        if not record:
            continue
        meta, _, raw_path = record.partition(b"\t")
        mode, kind, oid = meta.decode().split(" ")
        path = check_path(raw_path)
        if mode == MODE_SYMLINK:
            raise PublishError(f"{path!r}: symlinks cannot be published to devices")
        if mode == MODE_GITLINK or kind == "commit":
            raise PublishError(f"{path!r}: submodules cannot be published to devices")
        if mode not in MODE_FILE or kind != "blob":
            raise PublishError(f"{path!r}: unsupported tree entry (mode {mode})")
        files.append((path, oid))
    files.sort(key=lambda item: item[0].encode("utf-8"))
    return files


def _file_mode() -> int:
    """What an ordinary new file gets (0666 & ~umask): published files are served by a web
    server running as another user, so mkstemp's private 0600 will not do. The umask is
    read by setting it back at once (publish is a single-threaded command)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(path: Path) -> None:
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _BlobReader:
    """One `git cat-file --batch` process, fed one object id at a time (no pipe deadlock).

    A watchdog kills the process when the whole batch outlives its timeout, so a stuck git
    turns into a GitError instead of a hang.
    """

    def __init__(self, repo: Path, git: str, timeout_s: float) -> None:
        self.argv = [git, "-C", str(repo), "cat-file", "--batch"]
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=_git_env(),
            )
        except FileNotFoundError as exc:
            raise GitError(self.argv, f"could not start: {exc.strerror}") from None
        assert self.proc.stdin and self.proc.stdout and self.proc.stderr  # all three piped
        self.stdin, self.stdout, self.stderr = self.proc.stdin, self.proc.stdout, self.proc.stderr
        self.timed_out = False
        self.timer = threading.Timer(timeout_s, self._kill)
        self.timer.daemon = True
        self.timer.start()
        self.timeout_s = timeout_s

    def _kill(self) -> None:
        self.timed_out = True
        self.proc.kill()

    def _fail(self, reason: str) -> GitError:
        self.proc.kill()
        stderr = self.stderr.read().decode(errors="replace")
        if self.timed_out:
            reason = f"timed out after {self.timeout_s:g}s"
        return GitError(self.argv, reason, stderr, self.proc.poll())

    def chunks(self, oid: str) -> Iterator[bytes]:
        """The object's content in chunks."""
        try:
            self.stdin.write(oid.encode() + b"\n")
            self.stdin.flush()
        except (BrokenPipeError, OSError):
            raise self._fail("closed its input") from None
        header = self.stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            raise self._fail(
                f"gave no blob for {oid}: {b' '.join(header).decode(errors='replace')}"
            )
        left = int(header[2])
        while left:
            data = self.stdout.read(min(CHUNK, left))
            if not data:
                raise self._fail(f"ended in the middle of {oid}")
            left -= len(data)
            yield data
        if self.stdout.read(1) != b"\n":
            raise self._fail(f"framing error after {oid}")

    def close(self) -> None:
        self.timer.cancel()
        self.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.stdout.close()
        self.stderr.close()


def _store_blob(blobs: Path, chunks: Iterator[bytes]) -> tuple[str, int, bool]:
    """Streams chunks to a temporary file in blobs/, names it by its SHA-256.

    Returns (sha256, size, new). An existing blob is kept (same name = same bytes)."""
    digest = hashlib.sha256()
    size = 0
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=str(blobs))
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        name = digest.hexdigest()
        final = blobs / name
        if final.exists():
            os.unlink(tmp)
            os.chmod(final, _file_mode())  # heals a blob an older publish left 0600
            return name, size, False
        os.chmod(tmp, _file_mode())
        os.replace(tmp, final)
        return name, size, True
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def render_manifest(
    commit: str,
    branch: str,
    entries: list[Entry],
    key: bytes | None = None,
    seq: int | None = None,
) -> bytes:
    """The manifest's bytes exactly as docs/micro.md defines them (signed when a key is given)."""
    lines = [MANIFEST_MAGIC, f"commit {commit}", f"branch {branch}"]
    lines += [f"seq {seq}"] if seq is not None else []
    lines += [f"file {e.sha256} {e.size} {e.path}" for e in entries]
    body = ("\n".join(lines) + "\n").encode("utf-8")
    if key is not None:
        body += f"hmac {hmac.new(key, body, hashlib.sha256).hexdigest()}\n".encode()
    return body


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def publish(
    repo: Path,
    branch: str,
    out: Path,
    key: bytes | None = None,
    prune: bool = False,
    git: str = "git",
    timeout_s: float = GIT_TIMEOUT_S,
) -> Summary:
    """Writes OUT/blobs/* and OUT/manifest.txt for the tip of `branch` in `repo`."""
    repo, out = Path(repo), Path(out)
    if key is not None and not key:
        raise PublishError("the HMAC key is empty")
    commit = resolve_branch(repo, branch, git)
    files = list_tree(repo, commit, git)
    blobs = out / "blobs"
    try:
        blobs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PublishError(f"{blobs}: cannot create: {exc.strerror}") from None
    entries, new_blobs, total = [], 0, 0
    reader = _BlobReader(repo, git, timeout_s)
    try:
        for path, oid in files:
            sha, size, new = _store_blob(blobs, reader.chunks(oid))
            entries.append(Entry(path, sha, size))
            new_blobs += new
            total += size
    finally:
        reader.close()
    _fsync_dir(blobs)
    manifest = out / MANIFEST_NAME
    seq = next_seq(manifest, commit, branch)
    _write_atomic(manifest, render_manifest(commit, branch, entries, key, seq))
    pruned = _prune(blobs, {e.sha256 for e in entries}) if prune else 0
    return Summary(
        commit, branch, len(entries), total, new_blobs, pruned, key is not None, manifest
    )


def next_seq(manifest: Path, commit: str, branch: str) -> int:
    """The seq of a new manifest at `manifest`: the previous one's when it names the same
    commit and branch (publishing again changes nothing), else max(now, previous + 1)."""
    head: list[bytes] = []
    try:
        with open(manifest, "rb") as f:
            head = [f.readline().rstrip(b"\n") for _ in range(4)]
    except OSError:  # no previous manifest
        pass
    seq = 0
    if len(head) == 4 and head[3][:4] == b"seq " and head[3][4:].isdigit():
        seq = int(head[3][4:])
    if seq and head[1:3] == [f"commit {commit}".encode(), f"branch {branch}".encode()]:
        return seq
    return max(int(time.time()), seq + 1)


def _prune(blobs: Path, keep: set) -> int:
    """Deletes blobs (and stale temporaries) the new manifest does not name."""
    count = 0
    for child in blobs.iterdir():
        if child.name not in keep:
            child.unlink()
            count += 1
    return count


def publish_command(args: argparse.Namespace) -> int:
    """`huddle publish`: the key may come from HUDDLE_KEY, out of shell history and ps."""
    key = args.key if args.key is not None else (os.environ.get("HUDDLE_KEY") or None)
    summary = publish(
        Path(args.repo),
        args.branch,
        Path(args.out),
        key=key.encode("utf-8") if key is not None else None,
        prune=args.prune,
    )
    print(
        f"published {summary.branch} at {summary.commit} to {summary.manifest}: "
        f"{summary.files} files, {summary.bytes} bytes, {summary.new_blobs} new blobs"
        + (f", {summary.pruned} pruned" if args.prune else "")
        + (", signed" if summary.signed else ", unsigned")
    )
    return 0
