"""Faults an unattended agent meets in its git clones, against real git: untracked
and ignored files in a commit's way, a developer's clone, interrupted fetches (commit without
its tree, killed mid-transfer, full disk), failed checkouts, stale locks, corrupt objects,
credentials in `remote path`, the agent's own environment, ref names."""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from huddle.credentials import redact, split_credentials
from huddle.errors import GitError, TreeConflictError
from huddle.git import GitRepo, check_ref_name
from tests.gitutil import (
    FaultySmartHTTP,
    Origin,
    app_config,
    cmdlines_containing,
    deploy,
    files_containing,
    free_port,
    git,
    git_subcommand,
    git_wrapper,
    http_get,
    read_calls,
    tmpfs,
    write_config,
)


def run(coro):
    return asyncio.run(coro)


@pytest.fixture
def origin(tmp_path):
    return Origin(tmp_path / "remotes")


def cloned(origin: Origin, path: Path, **kw) -> GitRepo:
    repo = GitRepo(path, **kw)
    run(repo.clone(origin.url, "origin", "main"))
    return repo


def snapshot(root: Path) -> dict:
    """Every path under root except .git, with its bytes (None for a directory)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if rel == ".git" or rel.startswith(".git/"):
            continue
        out[rel] = None if path.is_dir() else path.read_bytes()
    return out


# -- 1. untracked and ignored paths are never overwritten or removed ----------------------

CONFLICTS = {
    # name: (files on disk before, files the new commit adds, paths refused)
    "untracked file replaced by the commit's": (
        {"data.db": "live rows"},
        {"data.db": "seed"},
        ["data.db"],
    ),
    "ignored file replaced": ({"cache.db": "live"}, {"cache.db": "seed"}, ["cache.db"]),
    "directory removed for a file": (
        {"uploads/a.jpg": "photo", "uploads/b/c.jpg": "photo"},
        {"uploads": "now a file"},
        ["uploads"],
    ),
    "file inside a directory that becomes a file": (
        {"logs/today.log": "x"},
        {"logs": "file"},
        ["logs"],
    ),
    "file where the commit needs a directory": ({"conf": "mine"}, {"conf/app.ini": "x"}, ["conf"]),
}


@pytest.mark.parametrize("case", list(CONFLICTS))
def test_checkout_refuses_to_overwrite_or_remove_untracked_and_ignored_paths(
    origin, tmp_path, case
):
    on_disk, adds, refused = CONFLICTS[case]
    first = origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    (repo.path / ".git" / "info" / "exclude").write_text("cache.db\nuploads/\n")
    for rel, text in on_disk.items():
        (repo.path / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo.path / rel).write_text(text)
    (repo.path / "app.txt").write_text("tracked edit\n")
    before = snapshot(repo.path)
    second = origin.commit({"app.txt": "2\n", **adds})
    with pytest.raises(TreeConflictError) as info:
        run(deploy(repo))
    assert info.value.paths == refused
    assert all(p in str(info.value) for p in refused)
    assert run(repo.head()) == first and snapshot(repo.path) == before  # nothing touched
    # once the path is out of the way the commit deploys, tracked edits discarded
    for rel in on_disk:
        os.unlink(repo.path / rel)
    assert run(deploy(repo)) == second
    assert (repo.path / "app.txt").read_text() == "2\n"


def test_checkout_keeps_untracked_files_that_are_not_in_the_way(origin, tmp_path):
    origin.commit({"app.txt": "1\n", "sub/x.txt": "x"})
    repo = cloned(origin, tmp_path / "tree")
    (repo.path / "sub" / "mine.txt").write_text("mine")
    (repo.path / "venv").mkdir()
    (repo.path / "venv" / "lib.py").write_text("lib")
    third = origin.commit({"sub/x.txt": None, "sub/y.txt": "y", "venv2/z": "z"})
    assert run(deploy(repo)) == third
    assert (repo.path / "sub" / "mine.txt").read_text() == "mine"
    assert (repo.path / "venv" / "lib.py").read_text() == "lib"
    assert not (repo.path / "sub" / "x.txt").exists()


def test_checkout_refuses_a_submodule_over_an_untracked_directory(origin, tmp_path):
    lib = Origin(tmp_path / "libs", name="lib")
    lib.commit({"lib.txt": "lib\n"})
    first = origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    (repo.path / "vendor").mkdir()
    (repo.path / "vendor" / "notes.txt").write_text("mine")
    git(
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        lib.url,
        "vendor",
        cwd=origin.work,
    )
    origin.commit({}, "add submodule")
    with pytest.raises(TreeConflictError) as info:
        run(deploy(repo))
    assert info.value.paths == ["vendor"]
    assert run(repo.head()) == first
    assert (repo.path / "vendor" / "notes.txt").read_text() == "mine"


# -- 2. a developer's clone adopted at `local path` ---------------------------------------


def test_adoption_problem_refuses_a_clone_that_would_lose_work(origin, tmp_path):
    origin.commit({"app.txt": "1\n"})
    dev = tmp_path / "dev"
    git("clone", "-q", origin.url, dev)
    repo = GitRepo(dev)
    assert run(repo.adoption_problem("origin", origin.url, "main")) is None
    other = Origin(tmp_path / "other")
    problem = run(repo.adoption_problem("origin", other.url, "main"))
    assert problem and other.url in problem and "will not repoint" in problem
    (dev / "app.txt").write_text("uncommitted\n")
    problem = run(repo.adoption_problem("origin", origin.url, "main"))
    assert problem and "uncommitted changes" in problem and "app.txt" in problem
    git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qam", "local", cwd=dev)
    local = git("rev-parse", "HEAD", cwd=dev)
    problem = run(repo.adoption_problem("origin", origin.url, "main"))
    assert problem and local[:12] in problem and "push" in problem
    # nothing was changed by asking
    assert git("remote", "get-url", "origin", cwd=dev) == origin.url
    assert git("rev-parse", "HEAD", cwd=dev) == local
    git("push", "-q", "origin", "HEAD:main", cwd=dev)
    assert run(repo.adoption_problem("origin", origin.url, "main")) is None


def test_adoption_problem_sees_a_detached_head_commit_but_not_other_branches(origin, tmp_path):
    origin.commit({"app.txt": "1\n"})
    dev = tmp_path / "dev"
    git("clone", "-q", origin.url, dev)
    repo = GitRepo(dev)
    git("checkout", "-q", "-b", "feature", cwd=dev)
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@e",
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "wip",
        cwd=dev,
    )
    assert run(repo.adoption_problem("origin", origin.url, "main")) is None  # safe on feature
    git("checkout", "-q", "--detach", cwd=dev)
    assert "push them" in run(repo.adoption_problem("origin", origin.url, "main"))


# -- 3. interrupted fetches ---------------------------------------------------------------


def commit_without_tree(origin: Origin, clone: Path, sha: str) -> None:
    """The state a fetch interrupted after the commit object leaves."""
    raw = subprocess.run(
        ["git", "-C", str(origin.bare), "cat-file", "commit", sha], capture_output=True, check=True
    ).stdout
    subprocess.run(
        ["git", "-C", str(clone), "hash-object", "-t", "commit", "-w", "--stdin"],
        input=raw,
        capture_output=True,
        check=True,
    )


def test_a_commit_without_its_tree_is_not_present_and_is_fetched_again(origin, tmp_path):
    first = origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    second = origin.commit({"app.txt": "2\n", "new/file.txt": "new\n"})
    commit_without_tree(origin, repo.path, second)
    assert git("cat-file", "-e", second, cwd=repo.path) == ""  # git says present...
    assert not run(repo.has_commit(second))  # ...huddle says incomplete
    with pytest.raises(GitError, match="incomplete"):
        run(repo.checkout(second, "main"))
    assert run(repo.head()) == first and (repo.path / "app.txt").read_text() == "1\n"
    assert run(deploy(repo)) == second
    assert (repo.path / "new" / "file.txt").read_text() == "new\n"


def test_a_branch_tip_missing_objects_is_fetched_whole_again(origin, tmp_path):
    origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    second = origin.commit({"app.txt": "2\n", "b.txt": "b\n"})
    run(repo.fetch("origin", "main"))
    # lose a blob after the fetch: the ref names the commit, so a plain fetch brings nothing
    blob = git("rev-parse", f"{second}:b.txt", cwd=repo.path)
    explode_packs(repo.path)
    (repo.path / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    fresh = GitRepo(repo.path)  # a new agent: nothing remembered
    assert not run(fresh.has_commit(second))
    assert run(fresh.fetch("origin", "main")) == second
    assert run(fresh.has_commit(second))
    run(fresh.checkout(second, "main"))
    assert (repo.path / "b.txt").read_text() == "b\n"


def explode_packs(clone: Path) -> None:
    """Turn the clone's packs into loose objects (so one object can be damaged alone)."""
    pack_dir = clone / ".git" / "objects" / "pack"
    for pack in list(pack_dir.glob("*.pack")):
        data = pack.read_bytes()
        for companion in pack_dir.glob(pack.stem + ".*"):
            companion.unlink()
        subprocess.run(["git", "unpack-objects", "-q"], input=data, cwd=clone, check=True)


def big_commit(origin: Origin, mb: float, files: int = 4) -> str:
    each = int(mb * 1024 * 1024 / files)
    for i in range(files):
        path = origin.work / f"blob{i}.bin"
        path.write_bytes(os.urandom(each))
    git("add", "-A", cwd=origin.work)
    git("commit", "-q", "-m", "big", cwd=origin.work)
    origin.push()
    return origin.head()


def temp_object_files(clone: Path) -> list:
    objects = clone / ".git" / "objects"
    return [p for p in objects.rglob("*") if p.name.startswith(("tmp_", ".tmp-"))]


def test_a_fetch_killed_by_its_timeout_on_a_slow_link_heals(tmp_path):
    root = tmp_path / "http-root"
    origin = Origin(root)
    origin.commit({"app.txt": "1\n"})
    server = FaultySmartHTTP(root)
    try:
        repo = GitRepo(tmp_path / "tree", timeout_s=1.5)
        run(repo.clone(server.url("app.git"), "origin", "main"))
        second = big_commit(origin, 0.4)
        server.server.trickle = (16 * 1024, 2048, 0.2)  # about 10 kB/s after 16 kB
        with pytest.raises(GitError, match="timed out"):
            run(repo.fetch("origin", "main"))
        # what arrived is not a deployable commit to huddle; usually the commit object came
        # first without its tree (a loaded machine may cut it off even before that: the
        # commit-without-tree state is made directly in the test above as well)
        assert not run(GitRepo(repo.path).has_commit(second))
        server.server.trickle = None  # the link recovers
        assert run(deploy(GitRepo(repo.path))) == second
        assert (repo.path / "blob0.bin").stat().st_size > 0
        assert temp_object_files(repo.path) == []
    finally:
        server.stop()


def test_a_fetch_on_a_full_disk_heals_once_space_is_back(origin, tmp_path):
    origin.commit({"app.txt": "1\n"})
    with tmpfs(tmp_path / "disk", "3m") as disk:
        repo = cloned(origin, disk / "tree")
        second = big_commit(origin, 4)
        with pytest.raises(GitError):
            run(repo.fetch("origin", "main"))
        assert temp_object_files(repo.path) == []  # the space is given back at once
        assert not run(repo.has_commit(second))
        subprocess.run(["mount", "-o", "remount,size=50m", str(disk)], check=True)
        assert run(deploy(repo)) == second
        assert temp_object_files(repo.path) == []


def test_temporary_files_of_a_killed_fetch_are_removed_before_the_next(origin, tmp_path):
    origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    objects = repo.path / ".git" / "objects"
    left = [objects / "pack" / "tmp_pack_AbCdEf", objects / "ab" / "tmp_obj_XyZ123"]
    for path in left:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * 1000)
        os.utime(path, (time.time() - 60, time.time() - 60))
    second = origin.commit({"app.txt": "2\n"})
    assert run(deploy(repo)) == second
    assert not any(p.exists() for p in left)


# -- 4. a failed checkout leaves the tree where it was ------------------------------------


def test_a_failing_submodule_update_puts_the_tree_back(origin, tmp_path):
    first = origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    lib = Origin(tmp_path / "libs", name="lib")
    lib.commit({"lib.txt": "lib\n"})
    git(
        "-c",
        "protocol.file.allow=always",
        "submodule",
        "add",
        "-q",
        lib.url,
        "vendor",
        cwd=origin.work,
    )
    (origin.work / ".gitmodules").write_text(
        '[submodule "vendor"]\n\tpath = vendor\n\turl = http://127.0.0.1:9/nowhere.git\n'
    )
    second = origin.commit({"app.txt": "2\n"}, "submodule at a dead URL")
    run(repo.fetch("origin", "main"))
    with pytest.raises(GitError, match="submodule"):
        run(repo.checkout(second, "main"))
    assert run(repo.head()) == first
    assert (repo.path / "app.txt").read_text() == "1\n"
    assert not (repo.path / ".gitmodules").exists()
    assert git("status", "--porcelain", "--untracked-files=no", cwd=repo.path) == ""


# -- 5. stale locks and corrupt objects heal ----------------------------------------------


@pytest.mark.parametrize("lock", ["index.lock", "HEAD.lock", "refs/heads/main.lock"])
def test_a_stale_lock_left_by_a_killed_git_is_removed(origin, tmp_path, lock, caplog):
    origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    second = origin.commit({"app.txt": "2\n"})
    path = repo.path / ".git" / lock
    path.write_text("")
    os.utime(path, (time.time() - 5, time.time() - 5))
    assert run(deploy(repo)) == second
    assert not path.exists()
    assert "stale git lock" in caplog.text


def test_a_lock_newer_than_our_git_is_left_alone(origin, tmp_path):
    """A lock made after our git started belongs to a live git (a person's): kept."""
    origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    second = origin.commit({"app.txt": "2\n"})
    run(repo.fetch("origin", "main"))
    lock = repo.path / ".git" / "index.lock"
    lock.write_text("")
    os.utime(lock, (time.time() + 3600, time.time() + 3600))
    with pytest.raises(GitError, match="index.lock"):
        run(repo.checkout(second, "main"))
    assert lock.exists()


def damage(path: Path, how: str) -> None:
    path.chmod(0o644)
    data = path.read_bytes()
    path.write_bytes(data[:5] if how == "truncate" else os.urandom(len(data)))


@pytest.mark.parametrize("how", ["truncate", "garbage"])
def test_a_corrupt_loose_object_is_repaired_keeping_untracked_files(origin, tmp_path, how):
    origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    second = origin.commit({"app.txt": "2\n", "b.txt": "b\n"})
    run(repo.fetch("origin", "main"))
    explode_packs(repo.path)
    blob = git("rev-parse", f"{second}:b.txt", cwd=repo.path)
    damage(repo.path / ".git" / "objects" / blob[:2] / blob[2:], how)
    (repo.path / "data.db").write_text("precious")
    run(repo.checkout(second, "main"))
    assert (repo.path / "b.txt").read_text() == "b\n"
    assert (repo.path / "data.db").read_text() == "precious"
    assert git("fsck", "--no-dangling", cwd=repo.path, check=False) == ""
    assert list((repo.path / ".git" / "huddle-corrupt").rglob(blob[2:]))


def test_a_corrupt_pack_is_repaired(origin, tmp_path):
    origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    second = origin.commit({"app.txt": "2\n"})
    pack = next((repo.path / ".git" / "objects" / "pack").glob("*.pack"))
    pack.chmod(0o644)
    data = bytearray(pack.read_bytes())
    data[20:-20] = os.urandom(len(data) - 40)
    pack.write_bytes(bytes(data))
    (repo.path / "data.db").write_text("precious")
    assert run(deploy(GitRepo(repo.path))) == second
    assert (repo.path / "app.txt").read_text() == "2\n"
    assert (repo.path / "data.db").read_text() == "precious"


def test_a_corrupt_index_is_rebuilt(origin, tmp_path):
    origin.commit({"app.txt": "1\n"})
    repo = cloned(origin, tmp_path / "tree")
    second = origin.commit({"app.txt": "2\n"})
    (repo.path / ".git" / "index").write_bytes(os.urandom(200))
    (repo.path / "data.db").write_text("precious")
    run(repo.fetch("origin", "main"))
    run(repo.checkout(second, "main"))
    assert (repo.path / "app.txt").read_text() == "2\n"
    assert (repo.path / "data.db").read_text() == "precious"


# -- 6. credentials never in argv or world-readable files ---------------------------------

TOKEN = "tok3n-Secret-9f8e7d"


@pytest.fixture
def token_remote(tmp_path):
    """(origin, server, url): smart HTTP demanding deploy:TOKEN, url carrying them."""
    root = tmp_path / "http-root"
    origin = Origin(root)
    origin.commit({"app.txt": "1\n"})
    server = FaultySmartHTTP(root, user="deploy", password=TOKEN)
    yield origin, server, server.url("app.git").replace("http://", f"http://deploy:{TOKEN}@")
    server.stop()


def test_a_token_in_remote_path_is_in_no_argv_and_no_file(token_remote, tmp_path):
    origin, server, url = token_remote
    repo = GitRepo(tmp_path / "tree", timeout_s=60)
    run(repo.clone(url, "origin", "main"))
    run(repo.ensure_remote("origin", url))
    second = big_commit(origin, 0.3)
    server.server.trickle = (8 * 1024, 4096, 0.1)  # keep the fetch alive for a while
    seen, done = [], threading.Event()

    def scan():
        while not done.is_set():
            seen.extend(cmdlines_containing(TOKEN))
            seen.extend(cmdlines_containing("remote-http"))  # proves the scan ran
            time.sleep(0.02)

    scanner = threading.Thread(target=scan)
    scanner.start()
    try:
        assert run(deploy(repo)) == second
    finally:
        done.set()
        scanner.join()
    assert any("remote-http" in argv for _, argv in seen)  # git was seen running
    assert [argv for _, argv in seen if TOKEN in argv] == []
    assert files_containing(repo.path, TOKEN) == []
    assert TOKEN not in git("remote", "get-url", "origin", cwd=repo.path)
    assert any("401" in r for r in server.server.requests)  # auth really was demanded


def test_a_clone_whose_config_holds_credentials_is_cleaned(token_remote, tmp_path):
    origin, server, url = token_remote
    for given in (url, ""):  # `remote path` with the token, or empty
        tree = tmp_path / f"tree{len(given)}"
        git("clone", "-q", url, tree)  # made by hand (or by an older huddle)
        assert files_containing(tree / ".git", TOKEN)
        for _ in range(2):  # and again after a restart
            repo = GitRepo(tree)
            run(repo.ensure_remote("origin", given))
            assert TOKEN not in (tree / ".git" / "config").read_text()
            assert run(repo.remote_head("origin", "main")) == origin.head()
        world_readable = [p for p in files_containing(tree, TOKEN) if p.stat().st_mode & 0o044]
        assert world_readable == []


@pytest.mark.parametrize(
    "url,secret",
    [
        ("https://u:p@ss-w0rd@host.example/x.git", "p@ss-w0rd"),
        ("https://u:p%40ss-w0rd@host.example/x.git", "p@ss-w0rd"),
        ("https://ghp_t0kenOnly123@host.example/x.git", "ghp_t0kenOnly123"),
    ],
)
def test_split_and_redact_handle_every_form(url, secret):
    clean, creds = split_credentials(url)
    assert clean == "https://host.example/x.git"
    assert secret in (creds.password, creds.username)
    for text in (
        f"fatal: unable to access '{url}/': boom",
        f"remote: {url} failed",
        "fatal: unable to access 'https://ss-w0rd@host.example/x.git/': bad",
    ):
        out = redact(text, creds.secrets)
        assert secret not in out and "ss-w0rd@" not in out and "host.example" in out


def test_a_wrong_token_is_an_error_without_the_token(tmp_path):
    root = tmp_path / "http-root"
    origin = Origin(root)
    origin.commit({"app.txt": "1\n"})
    server = FaultySmartHTTP(root, user="deploy", password="right-one")
    try:
        url = server.url("app.git").replace("http://", f"http://deploy:{TOKEN}@")
        with pytest.raises(GitError) as info:
            run(GitRepo(tmp_path / "tree").clone(url, "origin", "main"))
        assert TOKEN not in str(info.value) + info.value.stderr
    finally:
        server.stop()


# -- 7. the agent's own settings never reach git ------------------------------------------


def test_huddle_variables_never_reach_git(origin, tmp_path):
    origin.commit({"app.txt": "1\n"})
    dump = tmp_path / "env.txt"
    wrapper = tmp_path / "git"
    wrapper.write_text(f'#!/bin/sh\nenv >> {dump}\nexec git "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "HUDDLE_MQTT": "mqtt://u:mqttpass@broker", "HUDDLE_STATE_DIR": "/x"}
    repo = GitRepo(tmp_path / "tree", executable=str(wrapper), env=env)
    run(repo.clone(origin.url, "origin", "main"))
    run(repo.remote_head("origin", "main"))
    text = dump.read_text()
    assert "PATH=" in text and "HUDDLE_" not in text and "mqttpass" not in text


# -- 8. one ref-name validator ------------------------------------------------------------


@pytest.mark.parametrize("name", ["a/.hidden", "x.lock/y", "@", "a//b", "-x", "a..b", "a b"])
def test_ref_names_git_refuses_are_refused(name):
    with pytest.raises(GitError, match="refuses"):
        check_ref_name("branch", name)


def test_ordinary_ref_names_pass():
    for name in ("main", "release/1.2", "feature-x_y", "v1.0"):
        assert check_ref_name("branch", name) == name


def test_the_no_change_poll_is_still_one_git_call(origin, tmp_path):
    """Completeness, conflict and repair checks belong to the deploy path only."""
    origin.commit({"app.txt": "1\n"})
    log = tmp_path / "calls.log"
    repo = cloned(origin, tmp_path / "tree", executable=str(git_wrapper(tmp_path / "g", log)))
    log.write_text("")
    for _ in range(3):
        run(repo.remote_head("origin", "main"))
    assert [git_subcommand(line) for line in read_calls(log)] == ["ls-remote"] * 3


def test_a_token_alone_as_the_user_name_works(tmp_path):
    """`https://TOKEN@host/` (GitHub style): the token is the user, the password empty."""
    root = tmp_path / "http-root"
    origin = Origin(root)
    head = origin.commit({"app.txt": "1\n"})
    server = FaultySmartHTTP(root, user=TOKEN)
    try:
        url = server.url("app.git").replace("http://", f"http://{TOKEN}@")
        repo = GitRepo(tmp_path / "tree")
        run(repo.clone(url, "origin", "main"))
        assert run(repo.head()) == head and files_containing(repo.path, TOKEN) == []
    finally:
        server.stop()


# -- end to end through `huddle run` -------------------------------------------------------


def agent_app(tmp_path, url: str = "", origin: Origin = None):
    """(origin, port, config path) of an app `web` deployed from origin (or url)."""
    origin = origin or Origin(tmp_path / "remotes", "web")
    port = free_port()
    config = app_config(url or origin.url, tmp_path / "apps" / "web", port)
    return origin, port, write_config(tmp_path / "configs" / "web.json", config)


@pytest.mark.timeout(90)
def test_agent_keeps_serving_and_keeps_data_when_a_commit_would_overwrite_it(
    tmp_path, agent_factory
):
    origin, port, config = agent_app(tmp_path)
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    tree = tmp_path / "apps" / "web"
    (tree / "data.db").write_text("live rows")
    v2 = origin.app_commit("v2", extra={"data.db": "seed"})
    agent.wait_app(
        "web",
        lambda a: "data.db" in (a.get("last_error") or ""),
        "the deploy refused, naming data.db",
    )
    assert (tree / "data.db").read_text() == "live rows"
    assert http_get(port) == (200, "v1") and agent.app("web")["commit"] == v1
    assert v2 not in (agent.app("web").get("bad") or [])  # refused, not banned
    # the person moves the file away; the refused commit is tried again when the branch moves
    (tree / "data.db").unlink()
    v3 = origin.app_commit("v3", extra={"data.db": "seed"})
    agent.wait_good("web", v3)
    assert (tree / "data.db").read_text() == "seed"


@pytest.mark.timeout(90)
def test_agent_deploys_a_commit_an_interrupted_fetch_left_without_its_tree(tmp_path, agent_factory):
    origin, port, config = agent_app(tmp_path)
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    agent.stop()
    v2 = origin.app_commit("v2")
    commit_without_tree(origin, tmp_path / "apps" / "web", v2)
    agent.start(config)
    agent.wait_good("web", v2)
    assert http_get(port) == (200, "v2")


@pytest.mark.timeout(90)
def test_agent_with_a_token_in_remote_path_writes_it_nowhere(token_remote, tmp_path, agent_factory):
    origin, server, url = token_remote
    origin, port, config = agent_app(tmp_path, url, origin)
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    v2 = origin.app_commit("v2")
    agent.wait_good("web", v2)
    assert files_containing(tmp_path / "apps" / "web", TOKEN) == []
    leaked = [p for p in files_containing(agent.state_dir, TOKEN) if p.stat().st_mode & 0o044]
    assert leaked == []


@pytest.mark.timeout(90)
def test_agent_refuses_a_dev_clone_with_unpushed_work(tmp_path, agent_factory):
    origin, port, config = agent_app(tmp_path)
    origin.app_commit("v1")
    dev = tmp_path / "apps" / "web"
    git("clone", "-q", origin.url, dev)
    (dev / "version.txt").write_text("uncommitted\n")
    (dev / "notes.txt").write_text("mine\n")
    git("add", "notes.txt", cwd=dev)
    git(
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@e",
        "commit",
        "-qm",
        "local",
        "--",
        "notes.txt",
        cwd=dev,
    )
    local = git("rev-parse", "HEAD", cwd=dev)
    agent = agent_factory().start(config)
    agent.wait_app(
        "web",
        lambda a: (
            "push them" in (a.get("last_error") or "")
            or "uncommitted" in (a.get("last_error") or "")
        ),
        "the adoption refused",
    )
    assert git("rev-parse", "HEAD", cwd=dev) == local
    assert (dev / "version.txt").read_text() == "uncommitted\n"
    assert git("remote", "get-url", "origin", cwd=dev) == origin.url


@pytest.mark.parametrize(
    "message,corrupt",
    [
        (
            "fatal: loose object 3e75"
            " (stored in .git/objects/3e/757656cf36eca53338e520d134963a44f793f8) is corrupt",
            True,
        ),
        (
            "error: object file .git/objects/3e/757656cf36eca53338e520d134963a44f793f8 is empty",
            True,
        ),
        ("fatal: index file corrupt", True),
        (
            "fatal: pack has bad object at offset 1234: inflate returned -5\n"
            "fatal: index-pack failed",
            False,
        ),
        ("error: RPC failed; curl 18 transfer closed\nfatal: early EOF", False),
        ("fatal: could not read Username for 'https://host': terminal prompts disabled", False),
    ],
)
def test_damage_in_the_clone_is_told_from_damage_in_transit(message, corrupt):
    from huddle.gitrepair import looks_corrupt

    assert looks_corrupt(message) is corrupt
