"""Config faults: bounded config files and values checked in
linear time; `huddle check` refuses what `run` refuses (nested trees, the state dir, `//`);
sync-only apps and the original's `application.executable`; trusted-signer files checked
with the real `ssh-keygen`; `huddle publish` output readable by a web server."""

from __future__ import annotations

import json
import os
import random
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from huddle.config import load_file, load_paths
from huddle.config.reader import MAX_FILE_BYTES, MAX_VALUE_CHARS
from huddle.config.types import split_command
from huddle.errors import ConfigErrors
from tests.gitutil import needs_tool
from tests.microutil import Repo

PY = sys.executable
ROOT = Path(__file__).parent.parent


def write_json(path: Path, sections: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sections))
    return path


def problems(path: Path) -> list[str]:
    try:
        load_file(path)
    except ConfigErrors as exc:
        return [str(p) for p in exc.problems]
    return []


def huddle(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "huddle", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


# -- size ---------------------------------------------------------------------------------------


def test_a_file_over_the_bound_is_one_clear_problem(tmp_path):
    path = write_json(
        tmp_path / "big.json",
        {
            "repository": {"local path": "/srv/big"},
            "application": {"start": "app " + "x " * (MAX_FILE_BYTES // 2)},
        },
    )
    assert problems(path) == [f"{path}: -: larger than 64 KB, the limit for a config file"]
    done = huddle("check", path)
    assert done.returncode == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("application", "start", "python3 " + "a" * MAX_VALUE_CHARS),
        ("repository", "remote path", "https://example.com/" + "a" * MAX_VALUE_CHARS),
        ("scripts", "pre-pull", ["ls", "echo " + "b" * MAX_VALUE_CHARS]),
    ],
)
def test_a_value_over_the_bound_is_one_clear_problem(tmp_path, section, key, value):
    config = {"repository": {"local path": "/srv/x"}, "application": {"start": "app"}}
    config.setdefault(section, {})[key] = value
    path = write_json(tmp_path / "x.json", config)
    assert problems(path) == [
        f"{path}: {section}.{key}: longer than 4096 characters, the limit for a value"
    ]


def test_a_value_at_the_bound_is_fine(tmp_path):
    start = "app " + "'" + "q" * (MAX_VALUE_CHARS - 6) + "'"
    path = write_json(
        tmp_path / "x.json",
        {"repository": {"local path": "/srv/x"}, "application": {"start": start}},
    )
    assert load_file(path).application.start == ("app", "q" * (MAX_VALUE_CHARS - 6))


def test_a_fifo_named_as_a_config_does_not_hang_check(tmp_path):
    os.mkfifo(tmp_path / "app.json")
    assert problems(tmp_path / "app.json") == [f"{tmp_path / 'app.json'}: -: not a regular file"]


def test_the_linear_splitter_agrees_with_shlex():
    rng = random.Random(11)
    alphabet = "ab '\"\\\t\n$#"
    for _ in range(20000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 16)))
        try:
            expected = shlex.split(text)
        except ValueError as exc:
            expected = str(exc)
        try:
            got = split_command(text)
        except ValueError as exc:
            got = str(exc)
        assert got == expected, text


# -- check refuses what run refuses ---------------------------------------------------------


def app(path: Path, local: str) -> Path:
    return write_json(path, {"repository": {"local path": local}, "application": {"start": "app"}})


def test_nested_trees_are_refused_either_way(tmp_path):
    outer = app(tmp_path / "a_outer.json", "/srv/apps")
    inner = app(tmp_path / "b_inner.json", "/srv/apps/inner")
    configs, found = load_paths([outer, inner])
    assert [c.name for c in configs] == ["a_outer"]
    assert [str(p) for p in found] == [
        f"{inner}: repository.local path: '/srv/apps/inner' is inside the working tree of "
        f"app 'a_outer' ({outer}); each app needs its own, not nested in another"
    ]
    configs, found = load_paths([inner, outer])
    assert "holds the working tree of app 'b_inner'" in str(found[0])
    # a sibling whose name merely starts the same is not nested
    assert load_paths([outer, app(tmp_path / "c.json", "/srv/apps2")])[1] == []


@pytest.mark.parametrize(
    "local, how",
    [
        ("{state}/apps/web", "is inside"),
        ("{state}", "is"),
        ("/", None),
        ("{state_parent}", "holds"),
    ],
)
def test_the_state_dir_is_no_working_tree(tmp_path, local, how):
    state = tmp_path / "state"
    path = app(tmp_path / "web.json", local.format(state=state, state_parent=tmp_path))
    done = huddle("check", path, "--state-dir", state)
    assert done.returncode == 1
    if how is None:
        assert done.stdout == f"{path}: repository.local path: must not be the file system root\n"
    else:
        local = local.format(state=state, state_parent=tmp_path)
        assert done.stdout == (
            f"{path}: repository.local path: {local!r} {how} the state dir "
            f"{str(state)!r}; keep app trees apart from it\n"
        )
    env = {**os.environ, "HUDDLE_STATE_DIR": str(state)}  # the default, as run's
    assert huddle("check", path, env=env).stdout == done.stdout


def test_double_slash_root_and_run_refuse_alike(tmp_path):
    path = app(tmp_path / "web.json", "//")
    assert problems(path) == [f"{path}: repository.local path: must not be the file system root"]
    path = app(tmp_path / "web.json", "//srv/web")
    assert load_file(path).repository.local_path == Path("/srv/web")
    state = tmp_path / "state"
    bad = app(tmp_path / "in_state.json", f"{state}/web")
    done = huddle("run", bad, "--state-dir", state)
    assert done.returncode == 1
    assert "is inside the state dir" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    "key, value, reason",
    [
        ("remote path", "-uhack", "'-uhack' starts with '-', git would read it as an option"),
        ("branch", "a//b", "'a//b' contains '//', which git does not allow in ref names"),
        ("branch", "-b", "'-b' starts with '-', git would read it as an option"),
        ("remote", "or igin", "'or igin' contains ' ', which git does not allow in ref names"),
        ("branch", "x.lock", "'x.lock' has a part starting with '.' or ending with '.lock'"),
    ],
)
def test_what_git_would_refuse_is_refused_by_check(tmp_path, key, value, reason):
    path = write_json(
        tmp_path / "web.json",
        {"repository": {"local path": "/srv/w", key: value}, "application": {"start": "app"}},
    )
    assert problems(path) == [f"{path}: repository.{key}: {reason}"]


# -- sync-only apps and the original's executable ------------------------------------------


def test_a_repository_only_config_is_a_sync_app(tmp_path):
    path = write_json(
        tmp_path / "files.json",
        {
            "repository": {"local path": "/srv/files"},
            "timing": {"minimum": 30},
            "scripts": {"post-pull": ["touch synced"]},
        },
    )
    config = load_file(path)
    assert config.application is None
    assert config.scripts.post_pull == (("touch", "synced"),)
    ini = tmp_path / "files.ini"
    ini.write_text("[repository]\nlocal path = /srv/files2\n[environment]\nA = 1\n")
    assert problems(ini) == [
        f"{ini}: environment: the variables are the app's: add an "
        "[application] section, or remove them"
    ]


@pytest.mark.parametrize(
    "application, argv",
    [
        (
            {"executable": "python3", "start": "app.py --port 80"},
            ("python3", "app.py", "--port", "80"),
        ),
        (
            {"executable": "'/opt/my python/bin/python'", "start": "app.py"},
            ("/opt/my python/bin/python", "app.py"),
        ),
        ({"executable": "python -m dummy_app.py"}, ("python", "-m", "dummy_app.py")),
        ({"executable": "python3", "start": ["app.py", "a b"]}, ("python3", "app.py", "a b")),
        (
            {"executable": "python3", "start": "app.py > out.log"},
            ("/bin/sh", "-c", "python3 app.py > out.log"),
        ),
        ({"start": "python3 app.py"}, ("python3", "app.py")),
    ],
)
def test_application_executable_runs_start(tmp_path, application, argv):
    path = write_json(
        tmp_path / "a.json", {"repository": {"local path": "/srv/a"}, "application": application}
    )
    assert load_file(path).application.start == argv


def test_application_executable_mistakes(tmp_path):
    path = write_json(
        tmp_path / "a.json",
        {
            "repository": {"local path": "/srv/a"},
            "application": {"executable": "a | b", "start": "x"},
        },
    )
    assert problems(path) == [
        f"{path}: application.executable: must be a program and its "
        "arguments, without shell syntax, when start is given"
    ]
    path = write_json(
        tmp_path / "a.json",
        {"repository": {"local path": "/srv/a"}, "application": {"install": "make"}},
    )
    assert problems(path) == [f"{path}: application.start: required key is missing"]


def test_install_timeout(tmp_path):
    path = write_json(
        tmp_path / "a.json", {"repository": {"local path": "/srv/a"}, "application": {"start": "x"}}
    )
    assert load_file(path).application.install_timeout_s == 900.0
    path = tmp_path / "a.ini"
    path.write_text(
        "[repository]\nlocal path = /srv/a\n[application]\nstart = x\ninstall_timeout = 30\n"
    )
    assert load_file(path).application.install_timeout_s == 30.0
    path.write_text(
        "[repository]\nlocal path = /srv/a\n[application]\nstart = x\ninstall timeout = 0\n"
    )
    assert problems(path) == [f"{path}: application.install timeout: must be greater than 0, got 0"]


# -- trusted signers ------------------------------------------------------------------------

needs_ssh_keygen = needs_tool("ssh-keygen")


def ssh_key(directory: Path, name: str, kind: str = "ed25519") -> str:
    key = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", name, "-f", str(key)], check=True
    )
    return key.with_suffix(".pub").read_text().strip()


def signed_app(tmp_path: Path, **repository) -> Path:
    return write_json(
        tmp_path / "conf" / "web.json",
        {"repository": {"local path": "/srv/web", **repository}, "application": {"start": "app"}},
    )


@needs_ssh_keygen
def test_a_good_allowed_signers_file_with_options_and_comments(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    ed, ecdsa, rsa = (
        ssh_key(keys, "ed"),
        ssh_key(keys, "ec", "ecdsa"),
        ssh_key(keys, "rsa", "rsa"),
    )
    signers = tmp_path / "conf" / "allowed_signers"
    signers.parent.mkdir()
    signers.write_text(
        f"# release signers\n\nalice@example.com {ed}\n"
        f'bob@example.com,ci@example.com namespaces="git",'
        f'valid-after="20240101" {ecdsa}\n'
        f"carol@example.com cert-authority {rsa}\n"
    )
    path = signed_app(tmp_path, allowed_signers="allowed_signers")  # relative to the file
    assert load_file(path).repository.allowed_signers == signers
    assert load_file(path).repository.gpg_home is None


@needs_ssh_keygen
def test_bad_allowed_signers_files(tmp_path):
    keys = tmp_path / "keys"
    keys.mkdir()
    good = ssh_key(keys, "ed")
    kind, blob = good.split()[:2]
    broken = blob[:-12] + "AAAAAAAAAAA="  # right alphabet, wrong key
    signers = tmp_path / "signers"
    signers.write_text(f"alice {good}\n{good}\nbob {kind} {broken}\nnot a key line\n")
    path = signed_app(tmp_path, **{"allowed signers": str(signers)})
    assert problems(path) == [
        f"{path}: repository.allowed signers: {signers} line 2: expected 'principals "
        "[options] key-type base64-key'",
        f"{path}: repository.allowed signers: {signers} line 4: expected 'principals "
        "[options] key-type base64-key'",
        f"{path}: repository.allowed signers: {signers} line 3: ssh-keygen does not accept "
        "this key",
    ]
    signers.write_text("# nobody\n")
    assert problems(path) == [f"{path}: repository.allowed signers: {signers} lists no signer"]
    signers.unlink()
    assert problems(path) == [
        f"{path}: repository.allowed signers: cannot read {signers}: No such file or directory"
    ]
    path = signed_app(tmp_path, allowed_signers=str(tmp_path))
    assert problems(path) == [
        f"{path}: repository.allowed signers: {tmp_path} is not a regular file"
    ]


def test_a_signer_kind_without_its_tool_is_a_config_error(tmp_path):
    signers = tmp_path / "signers"
    signers.write_text("alice ssh-ed25519 AAAA\n")
    path = signed_app(tmp_path, allowed_signers=str(signers), gpg_home=str(tmp_path))
    env = {**os.environ, "PATH": str(tmp_path / "empty-bin")}
    done = huddle("check", path, env=env)
    assert done.returncode == 1
    assert done.stdout == (
        f"{path}: repository.allowed signers: ssh-keygen is not on PATH; it is needed to "
        "verify SSH signatures\n"
        f"{path}: repository.gpg home: gpg is not on PATH; it is needed to verify OpenPGP "
        "signatures\n"
    )


@needs_tool("gpg")
def test_gpg_home_needs_a_keyring(tmp_path):
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    path = signed_app(tmp_path, **{"gpg home": str(home)})
    assert problems(path) == [
        f"{path}: repository.gpg home: {home} holds no public keyring "
        "(pubring.kbx, pubring.gpg, trustedkeys.kbx, trustedkeys.gpg)"
    ]
    subprocess.run(
        [
            "gpg",
            "--homedir",
            str(home),
            "--batch",
            "--passphrase",
            "",
            "--quick-generate-key",
            "release@example.com",
            "ed25519",
            "sign",
            "never",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    assert load_file(path).repository.gpg_home == home
    path = signed_app(tmp_path, gpg_home=str(tmp_path / "nowhere"))
    assert problems(path) == [f"{path}: repository.gpg home: {tmp_path / 'nowhere'} does not exist"]


# -- publish output is served by another user -------------------------------------------------


@pytest.mark.parametrize(
    "umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)]
)
def test_publish_respects_the_umask(tmp_path, umask, file_mode, dir_mode):
    repo = Repo(tmp_path / "repo")
    repo.commit({"main.py": b"def main():\n    pass\n", "lib/a.py": b"A = 1\n"})
    out = tmp_path / "out"
    done = subprocess.run(
        [
            "sh",
            "-c",
            f'umask {umask:03o} && exec "$@"',
            "sh",
            PY,
            "-m",
            "huddle",
            "publish",
            str(repo.path),
            "--branch",
            "main",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    modes = {
        p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [out, *out.rglob("*")]
    }
    assert len(modes) == 5  # out, blobs/, manifest and two blobs
    for name, mode in modes.items():
        want = dir_mode if (out / name).is_dir() else file_mode
        assert mode == want, (name, oct(mode))
