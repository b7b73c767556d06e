"""GitRepo against real git and real remotes: file://, git:// (git daemon) and smart HTTP
(git http-backend); clone, remote checks, one-round-trip change detection, updates that keep
untracked files, submodules, refusals, dead/auth-demanding/hanging remotes."""

from __future__ import annotations

import asyncio
import time

import pytest

from huddle.errors import GitError
from huddle.git import GitRepo
from tests.gitutil import (
    Origin,
    SmartHTTP,
    alive,
    closed_port,
    deploy,
    git,
    git_subcommand,
    git_wrapper,
    read_calls,
    wait_until,
)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture(params=["file", "git", "http"])
def remote(request, tmp_path):
    """(origin, url) for each transport; the origin's bare repo is served by it."""
    if request.param == "file":
        origin = Origin(tmp_path / "remotes")
        return origin, origin.url
    if request.param == "git":
        daemon = request.getfixturevalue("git_daemon")
        origin = Origin(daemon.base_path)
        return origin, daemon.url("app.git")
    server = request.getfixturevalue("smart_http")
    origin = Origin(server.server.root)
    return origin, server.url("app.git")


def test_clone_poll_fetch_checkout_over_each_transport(remote, tmp_path):
    origin, url = remote
    first = origin.commit({"a.txt": "one\n"})
    repo = GitRepo(tmp_path / "deep" / "tree")
    run(repo.clone(url, "origin", "main"))
    assert repo.is_clone() and (repo.path / "a.txt").read_text() == "one\n"
    assert run(repo.head()) == first
    assert not list(repo.path.parent.glob(".*huddle-clone"))  # no temp dir left behind
    assert run(repo.remote_head("origin", "main")) == first
    second = origin.commit({"a.txt": "two\n"})
    assert run(deploy(repo)) == second
    assert run(repo.head()) == second and (repo.path / "a.txt").read_text() == "two\n"


def test_clone_refuses_an_existing_non_empty_directory(tmp_path):
    origin = Origin(tmp_path / "remotes")
    origin.commit({"a.txt": "one\n"})
    target = tmp_path / "tree"
    target.mkdir()
    (target / "precious.txt").write_text("mine")
    with pytest.raises(GitError, match="exists and is not a git working tree"):
        run(GitRepo(target).clone(origin.url, "origin", "main"))
    assert [p.name for p in target.iterdir()] == ["precious.txt"]
    # an existing empty directory is fine
    empty = tmp_path / "empty"
    empty.mkdir()
    run(GitRepo(empty).clone(origin.url, "origin", "main"))
    assert (empty / "a.txt").exists()


def test_clone_of_a_missing_branch_fails_with_git_stderr(tmp_path):
    origin = Origin(tmp_path / "remotes")
    origin.commit({"a.txt": "one\n"})
    repo = GitRepo(tmp_path / "tree")
    with pytest.raises(GitError) as info:
        run(repo.clone(origin.url, "origin", "nope"))
    assert "git clone" in str(info.value) and "nope" in str(info.value)
    assert not repo.path.exists()


def test_empty_remote_path_uses_the_clones_remote(tmp_path):
    origin = Origin(tmp_path / "remotes")
    first = origin.commit({"a.txt": "one\n"})
    tree = tmp_path / "tree"
    git("clone", "-q", origin.url, tree)
    repo = GitRepo(tree)
    run(repo.ensure_remote("origin", ""))  # configured already: fine
    assert run(repo.remote_head("origin", "main")) == first
    with pytest.raises(GitError, match="`remote path` is empty"):
        run(repo.ensure_remote("upstream", ""))
    run(repo.ensure_remote("upstream", origin.url))  # added
    assert git("remote", "get-url", "upstream", cwd=tree) == origin.url
    other = Origin(tmp_path / "remotes2")
    run(repo.ensure_remote("upstream", other.url))  # moved
    assert git("remote", "get-url", "upstream", cwd=tree) == other.url


def test_change_detection_is_one_ls_remote(tmp_path):
    origin = Origin(tmp_path / "remotes")
    first = origin.commit({"a.txt": "one\n"})
    calls = tmp_path / "calls.log"
    repo = GitRepo(tmp_path / "tree", executable=str(git_wrapper(tmp_path / "git", calls)))
    run(repo.clone(origin.url, "origin", "main"))
    calls.unlink()
    assert run(repo.remote_head("origin", "main")) == first
    assert [git_subcommand(c) for c in read_calls(calls)] == ["ls-remote"]


def test_update_keeps_untracked_and_ignored_files_discards_tracked_edits(tmp_path):
    origin = Origin(tmp_path / "remotes")
    origin.commit({"a.txt": "one\n", "gone.txt": "bye\n", ".gitignore": "*.cache\n"})
    repo = GitRepo(tmp_path / "tree")
    run(repo.clone(origin.url, "origin", "main"))
    (repo.path / "data.db").write_text("user data")  # untracked
    (repo.path / "thing.cache").write_text("cache")  # ignored
    (repo.path / "uploads").mkdir()
    (repo.path / "uploads" / "u.bin").write_text("upload")  # untracked dir
    (repo.path / "a.txt").write_text("local edit\n")  # tracked edit
    second = origin.commit({"a.txt": "two\n", "gone.txt": None, "new.txt": "new\n"})
    assert run(deploy(repo)) == second
    assert (repo.path / "a.txt").read_text() == "two\n"
    assert not (repo.path / "gone.txt").exists()
    assert (repo.path / "new.txt").read_text() == "new\n"
    assert (repo.path / "data.db").read_text() == "user data"
    assert (repo.path / "thing.cache").read_text() == "cache"
    assert (repo.path / "uploads" / "u.bin").read_text() == "upload"
    assert git("status", "--porcelain", "--untracked-files=no", cwd=repo.path) == ""
    # and back to the old commit (a rollback) the same way
    first = git("rev-parse", "HEAD~1", cwd=origin.work)
    run(repo.checkout(first, "main"))
    assert (repo.path / "gone.txt").read_text() == "bye\n"
    assert not (repo.path / "new.txt").exists()
    assert (repo.path / "data.db").read_text() == "user data"
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=repo.path) == "main"


def test_submodules_follow_the_superprojects_pointer(git_daemon, tmp_path):
    sub = Origin(git_daemon.base_path, "lib")
    sub_first = sub.commit({"lib.txt": "lib v1\n"})
    sup = Origin(git_daemon.base_path, "super")
    git(
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        git_daemon.url("lib.git"),
        "lib",
        cwd=sup.work,
    )
    sup.commit({"main.txt": "main\n"}, "with submodule")
    repo = GitRepo(tmp_path / "tree")
    run(repo.clone(git_daemon.url("super.git"), "origin", "main"))
    assert (repo.path / "lib" / "lib.txt").read_text() == "lib v1\n"
    sub.commit({"lib.txt": "lib v2\n"})
    git("fetch", "-q", "origin", cwd=sup.work / "lib")
    git("checkout", "-q", "origin/main", cwd=sup.work / "lib")
    sup.commit({}, "move the submodule pointer")
    run(deploy(repo))
    assert (repo.path / "lib" / "lib.txt").read_text() == "lib v2\n"
    # back again (a rollback)
    run(repo.checkout(git("rev-parse", "HEAD~1", cwd=sup.work), "main"))
    assert (repo.path / "lib" / "lib.txt").read_text() == "lib v1\n"
    assert git("rev-parse", "HEAD", cwd=repo.path / "lib") == sub_first


@pytest.mark.parametrize("branch", ["-x", "--upload-pack=touch pwned", "a..b", "x y"])
def test_option_like_or_invalid_branch_names_are_refused_before_git_runs(tmp_path, branch):
    calls = tmp_path / "calls.log"
    repo = GitRepo(tmp_path / "tree", executable=str(git_wrapper(tmp_path / "git", calls)))
    for call in (
        repo.remote_head("origin", branch),
        repo.fetch("origin", branch),
        repo.checkout("0" * 40, branch),
        repo.clone("file:///x", "origin", branch),
    ):
        with pytest.raises(GitError, match="refuses branch name"):
            run(call)
    with pytest.raises(GitError, match="refuses"):
        run(repo.checkout("--orphan", "main"))
    assert read_calls(calls) == []
    assert not (tmp_path / "tree").exists()


def test_dead_remote_is_an_error_with_command_and_stderr(tmp_path):
    repo = GitRepo(tmp_path / "tree", timeout_s=20)
    origin = Origin(tmp_path / "remotes")
    origin.commit({"a.txt": "one\n"})
    run(repo.clone(origin.url, "origin", "main"))
    url = f"git://127.0.0.1:{closed_port()}/app.git"
    run(repo.ensure_remote("origin", url))
    with pytest.raises(GitError) as info:
        run(repo.remote_head("origin", "main"))
    message = str(info.value)
    assert "ls-remote" in message and "origin" in message
    assert "timed out" not in message
    assert "unable to connect" in info.value.stderr or "refused" in info.value.stderr.lower()


def test_http_remote_demanding_auth_fails_fast_without_prompting(tmp_path):
    (tmp_path / "http-root").mkdir()
    server = SmartHTTP(tmp_path / "http-root", require_auth=True)
    try:
        origin = Origin(server.server.root)
        origin.commit({"a.txt": "one\n"})
        repo = GitRepo(tmp_path / "tree", timeout_s=30)
        started = time.monotonic()
        with pytest.raises(GitError) as info:
            run(repo.clone(server.url("app.git"), "origin", "main"))
        assert time.monotonic() - started < 15  # no prompt waited on (generous bound)
        message = str(info.value)
        assert "timed out" not in message
        assert "could not read Username" in message or "Authentication failed" in message
        assert server.server.requests  # it did reach the server and got the 401
        assert not repo.path.exists()
    finally:
        server.stop()


def test_a_hanging_git_call_is_killed_by_the_timeout(tmp_path):
    origin = Origin(tmp_path / "remotes")
    origin.commit({"a.txt": "one\n"})
    pidfile = tmp_path / "sleep.pid"
    wrapper = git_wrapper(tmp_path / "git", sleep_on="ls-remote", pidfile=pidfile)
    repo = GitRepo(tmp_path / "tree", executable=str(wrapper), timeout_s=0.5)
    run(repo.clone(origin.url, "origin", "main"))  # clone is not hung
    with pytest.raises(GitError, match=r"timed out after 0.5 s") as info:
        run(repo.remote_head("origin", "main"))
    assert "ls-remote" in str(info.value)
    hung = int(pidfile.read_text())
    wait_until(lambda: not alive(hung), 5, "the hung git's child to be killed")


@pytest.mark.parametrize("userinfo", ["user:s3cret", "ghp_s3cretToken"])
def test_credentials_in_the_remote_url_never_reach_the_error(tmp_path, userinfo):
    url = f"http://{userinfo}@127.0.0.1:{closed_port()}/app.git"
    repo = GitRepo(tmp_path / "tree", timeout_s=20)
    with pytest.raises(GitError) as info:
        run(repo.clone(url, "origin", "main"))
    err = info.value
    text = " ".join([str(err), err.stderr, *err.argv])
    assert "s3cret" not in text
    assert "http://127.0.0.1" in str(err)  # still says which remote failed
    # the same for a clone whose remote moved to a URL with credentials
    origin = Origin(tmp_path / "remotes")
    origin.commit({"a.txt": "one\n"})
    run(repo.clone(origin.url, "origin", "main"))
    run(repo.ensure_remote("origin", url))
    for call in (repo.remote_head("origin", "main"), repo.fetch("origin", "main")):
        with pytest.raises(GitError) as info:
            run(call)
        assert "s3cret" not in " ".join([str(info.value), info.value.stderr, *info.value.argv])
    with pytest.raises(GitError) as info:
        run(repo.ensure_remote("origin", f"-{url}"))
    assert "s3cret" not in str(info.value)
