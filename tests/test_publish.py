"""`huddle publish`: manifest format, idempotence, HMAC, refused trees and branches."""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys
import time

import pytest

from huddle.board.publish import check_path, publish
from huddle.errors import PublishError
from tests.microutil import ROOT, Repo, git


def _files():
    return {
        "main.py": b"def main():\n    return None\n",
        "lib/util.py": b"X = 1\n",
        "a b.txt": b"spaces in names\n",
        "empty": b"",
    }


def test_manifest_format_and_blobs(tmp_path):
    repo = Repo(tmp_path / "repo")
    commit = repo.commit(_files())
    out = tmp_path / "out"
    summary = publish(repo.path, "main", out)
    lines = (out / "manifest.txt").read_text("utf-8").split("\n")
    assert lines[0] == "huddle-manifest 1"
    assert lines[1] == f"commit {commit}"
    assert lines[2] == "branch main"
    assert lines[3].startswith("seq ") and lines[3][4:].isdigit()
    assert lines[-1] == ""
    expected = sorted(_files().items(), key=lambda kv: kv[0].encode())
    assert lines[4:-1] == [
        f"file {hashlib.sha256(d).hexdigest()} {len(d)} {p}" for p, d in expected
    ]
    for _, data in expected:
        assert (out / "blobs" / hashlib.sha256(data).hexdigest()).read_bytes() == data
    assert (summary.files, summary.bytes, summary.new_blobs) == (
        4,
        sum(map(len, _files().values())),
        4,
    )
    assert sorted(os.listdir(out / "blobs")) == sorted(
        hashlib.sha256(d).hexdigest() for d in _files().values()
    )


def _seq(out):
    return int((out / "manifest.txt").read_text().split("\n")[3][4:])


def test_seq_never_goes_backwards(tmp_path):
    # devices refuse a manifest whose seq is not above the installed one's: publishing again
    # (even within one second, or with the clock behind an earlier seq) always raises it
    repo = Repo(tmp_path / "repo")
    repo.commit(_files())
    out = tmp_path / "out"
    publish(repo.path, "main", out)
    first = _seq(out)
    assert first >= int(time.time()) - 5
    publish(repo.path, "main", out)
    assert _seq(out) == first  # the same commit again: the same manifest
    repo.commit({"next.txt": b"next\n"})
    publish(repo.path, "main", out)
    assert _seq(out) > first
    text = (out / "manifest.txt").read_text().replace(f"seq {_seq(out)}", "seq 99999999999")
    (out / "manifest.txt").write_text(text)
    repo.commit({"later.txt": b"later\n"})
    publish(repo.path, "main", out)
    assert _seq(out) == 99999999999 + 1


def test_reads_the_commit_not_the_working_copy(tmp_path):
    repo = Repo(tmp_path / "repo")
    repo.commit({"main.py": b"committed\n"})
    (repo.path / "main.py").write_bytes(b"uncommitted\n")
    (repo.path / "stray.py").write_bytes(b"untracked\n")
    publish(repo.path, "main", tmp_path / "out")
    text = (tmp_path / "out" / "manifest.txt").read_text()
    assert hashlib.sha256(b"committed\n").hexdigest() in text
    assert "stray.py" not in text


def test_idempotent_and_keeps_old_blobs_unless_pruned(tmp_path):
    repo = Repo(tmp_path / "repo")
    repo.commit({"a.py": b"one\n", "b.py": b"two\n"})
    out = tmp_path / "out"
    publish(repo.path, "main", out)
    first = (out / "manifest.txt").read_bytes()
    again = publish(repo.path, "main", out)
    assert again.new_blobs == 0
    assert (out / "manifest.txt").read_bytes() == first
    repo.commit({"a.py": b"one\n", "b.py": b"changed\n"})
    third = publish(repo.path, "main", out)
    assert third.new_blobs == 1
    old = hashlib.sha256(b"two\n").hexdigest()
    assert (out / "blobs" / old).exists()  # a CDN may still serve the older manifest
    pruned = publish(repo.path, "main", out, prune=True)
    assert pruned.pruned == 1 and not (out / "blobs" / old).exists()
    assert not [n for n in os.listdir(out) if n.startswith(".tmp")]


def test_hmac_line_signs_every_byte_before_it(tmp_path):
    repo = Repo(tmp_path / "repo")
    repo.commit(_files())
    out = tmp_path / "out"
    publish(repo.path, "main", out, key=b"s3cret")
    data = (out / "manifest.txt").read_bytes()
    body, _, last = data.rstrip(b"\n").rpartition(b"\n")
    body += b"\n"
    assert last.startswith(b"hmac ")
    assert last[5:].decode() == hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()


def test_cli_summary_and_key_from_environment(tmp_path):
    repo = Repo(tmp_path / "repo")
    repo.commit(_files())
    out = tmp_path / "out"
    env = dict(os.environ, HUDDLE_KEY="envkey")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "huddle",
            "publish",
            str(repo.path),
            "--branch",
            "main",
            "--out",
            str(out),
        ],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 files" in proc.stdout and "4 new blobs" in proc.stdout and "signed" in proc.stdout
    body = (out / "manifest.txt").read_bytes()
    signed, _, tail = body.rstrip(b"\n").rpartition(b"\n")
    assert tail[5:].decode() == hmac.new(b"envkey", signed + b"\n", hashlib.sha256).hexdigest()


@pytest.mark.parametrize("branch", ["nope", "-x", "--upload-pack=evil", "bad..name", ""])
def test_bad_branch_is_a_clear_error(tmp_path, branch):
    repo = Repo(tmp_path / "repo")
    repo.commit({"a.py": b"1\n"})
    with pytest.raises(PublishError, match="branch"):
        publish(repo.path, branch, tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.txt").exists()


def test_cli_bad_branch_exits_1_without_traceback(tmp_path):
    repo = Repo(tmp_path / "repo")
    repo.commit({"a.py": b"1\n"})
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "huddle",
            "publish",
            str(repo.path),
            "--branch",
            "missing",
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("huddle: ") and "Traceback" not in proc.stderr


def test_not_a_repository_is_a_git_error(tmp_path):
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "huddle",
            "publish",
            str(tmp_path / "empty"),
            "--branch",
            "main",
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1 and "git" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    "name,reason",
    [
        (b"..", "segment"),
        (b"a\nfile", "control"),
        (b"a\\b", "backslash"),
        (b"\xff\xfe.py", "UTF-8"),
    ],
)
def test_refuses_unsafe_names_in_a_tree(tmp_path, name, reason):
    repo = Repo(tmp_path / "repo")
    repo.plumbing_commit([("100644", "blob", b"ok.py", b"1\n"), ("100644", "blob", name, b"x")])
    with pytest.raises(PublishError, match=reason):
        publish(repo.path, "main", tmp_path / "out")
    assert not (tmp_path / "out" / "manifest.txt").exists()


def test_refuses_symlinks_and_submodules(tmp_path):
    repo = Repo(tmp_path / "repo")
    repo.plumbing_commit([("120000", "blob", b"link", b"/etc/passwd")])
    with pytest.raises(PublishError, match="symlink"):
        publish(repo.path, "main", tmp_path / "out")
    other = git(repo.path, "rev-parse", "HEAD").strip()
    repo.plumbing_commit([("160000", "commit", b"sub", other)])
    with pytest.raises(PublishError, match="submodule"):
        publish(repo.path, "main", tmp_path / "out")


@pytest.mark.parametrize("path", ["/abs", "a//b", "./a", "a/../b", "a\rb", "a\\b"])
def test_check_path_refuses(path):
    with pytest.raises(PublishError):
        check_path(path.encode())


def test_check_path_accepts_ordinary_names():
    assert check_path(b"dir/sub/file name.py") == "dir/sub/file name.py"
    assert check_path("caf\u00e9.txt".encode()) == "caf\u00e9.txt"
