"""Deploying only commits a trusted key signed (issue 14), with real keys, real signatures
and real `huddle run` agents: SSH-signed commits made with `ssh-keygen` keys, OpenPGP ones
with `gpg` when it is installed. A refused head leaves the old version serving and is checked
again only when the branch moves; nothing widens the trust beyond the configured files."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from huddle.errors import SignatureError
from huddle.signatures import Signers
from tests.gitutil import (
    PY,
    Origin,
    git,
    git_env,
    git_subcommand,
    git_wrapper,
    http_get,
    make_app,
    needs_tool,
    read_calls,
    wait_until,
    write_config,
)

pytestmark = [
    pytest.mark.timeout(120),
    needs_tool("ssh-keygen"),
]
needs_gpg = needs_tool("gpg")


# -- keys and signed commits ----------------------------------------------------------------


def ssh_key(directory: Path, name: str) -> Path:
    """A new ed25519 key pair without passphrase; returns the private key's path."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)],
        check=True,
        timeout=30,
    )
    return key


def fingerprint(key: Path) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-f", f"{key}.pub"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return out.split()[1]


def allowed_signers(path: Path, **principals: Path) -> Path:
    """An allowed-signers file: principal=key (the private key's path) per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "".join(
            f"{who}@example.com {Path(f'{key}.pub').read_text()}" for who, key in principals.items()
        )
    )
    return path


def sign_with(origin: Origin, key: Path | None) -> None:
    """Origin's next commits are SSH-signed by `key`, or unsigned with None."""
    if key is None:
        git("config", "commit.gpgsign", "false", cwd=origin.work)
        return
    for name, value in (
        ("gpg.format", "ssh"),
        ("user.signingkey", f"{key}.pub"),
        ("commit.gpgsign", "true"),
    ):
        git("config", name, value, cwd=origin.work)


def tampered(origin: Origin, signed: str, tree_of: str) -> str:
    """`signed` with another commit's tree and a new message, its signature kept: the object
    a server (or a man in the middle) could serve in its place. Pushed; returns its sha."""
    text = git("cat-file", "commit", signed, cwd=origin.work) + "\n"
    tree = git("rev-parse", f"{tree_of}^{{tree}}", cwd=origin.work)
    text = re.sub(r"^tree [0-9a-f]+$", f"tree {tree}", text, count=1, flags=re.M)
    text = text.rstrip("\n").rsplit("\n", 1)[0] + "\nreleased v3 (honest)\n"
    sha = subprocess.run(
        ["git", "hash-object", "-t", "commit", "-w", "--stdin"],
        input=text,
        cwd=origin.work,
        env=git_env(),
        text=True,
        capture_output=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    git("push", "-q", "--force", "origin", f"{sha}:refs/heads/{origin.branch}", cwd=origin.work)
    git("reset", "-q", "--hard", sha, cwd=origin.work)
    return sha


def verifications(calls: Path, commit: str) -> int:
    """How many signature checks of `commit` the agent's git wrapper saw."""
    return sum(1 for line in read_calls(calls) if "%G?" in line and commit in line.split())


def polls(calls: Path) -> int:
    return sum(1 for line in read_calls(calls) if git_subcommand(line) == "ls-remote")


def refused(commit: str):
    def pred(app):
        error = app.get("last_error") or ""
        return f"refused to deploy {commit[:12]}" in error and app

    return pred


@pytest.fixture
def keys(tmp_path):
    return {
        "alice": ssh_key(tmp_path / "keys", "alice"),
        "mallory": ssh_key(tmp_path / "keys", "mallory"),
    }


# -- the agent end to end -------------------------------------------------------------------


def test_only_a_head_a_trusted_key_signed_is_deployed(tmp_path, agent_factory, keys):
    signers = allowed_signers(tmp_path / "device" / "allowed_signers", alice=keys["alice"])
    calls = tmp_path / "calls.log"
    origin, port, config = make_app(
        tmp_path,
        repository={
            "allowed signers": str(signers),
            "executable": str(git_wrapper(tmp_path / "git", calls)),
        },
    )
    tree = tmp_path / "apps" / "web"
    sign_with(origin, keys["alice"])
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    assert f"{v1[:12]} is signed by alice@example.com" in agent.output()

    def still_serving_v1(commit: str) -> None:
        assert agent.app("web")["commit"] == v1 and agent.app("web")["running"]
        assert http_get(port) == (200, "v1")
        assert git("rev-parse", "HEAD", cwd=tree) == v1  # the tree never moved
        assert agent.starts("web", commit) == 0

    # unsigned: refused, and checked again only when the branch moves
    sign_with(origin, None)
    v2 = origin.app_commit("v2")
    app = agent.wait_app("web", refused(v2), "the unsigned v2 refused")
    assert f"{v2[:12]} is unsigned" in app["last_error"]
    assert "the running version keeps serving" in app["last_error"]
    still_serving_v1(v2)
    seen = polls(calls)
    wait_until(lambda: polls(calls) >= seen + 3, 20, "three more polls")
    assert verifications(calls, v2) == 1
    assert agent.output().count(f"ERROR huddle.app: web: refused to deploy {v2[:12]}") == 1

    # signed, by a key the device does not trust
    sign_with(origin, keys["mallory"])
    v3 = origin.app_commit("v3")
    app = agent.wait_app("web", refused(v3), "mallory's v3 refused")
    assert (
        f"{v3[:12]} is signed by an unknown signer (key {fingerprint(keys['mallory'])}): "
        f"that key is not in {signers}"
    ) in app["last_error"]
    still_serving_v1(v3)

    # alice's signature on v1, moved onto mallory's tree: the signature no longer matches
    forged = tampered(origin, v1, tree_of=v3)
    app = agent.wait_app("web", refused(forged), "the tampered commit refused")
    assert f"{forged[:12]} has a bad signature" in app["last_error"]
    still_serving_v1(forged)

    # a trusted signer's commit after the refused ones deploys as usual
    sign_with(origin, keys["alice"])
    v4 = origin.app_commit("v4")
    app = agent.wait_good("web", v4)
    assert http_get(port) == (200, "v4") and app["last_error"] is None
    assert agent.stop() == 0


def test_a_fresh_clone_of_an_untrusted_head_runs_nothing_until_a_trusted_commit(
    tmp_path, agent_factory, keys
):
    signers = allowed_signers(tmp_path / "device" / "allowed_signers", alice=keys["alice"])
    origin, port, config = make_app(
        tmp_path,
        repository={"allowed signers": str(signers)},
        application={"install": "sh install.sh"},
        scripts={"pre pull": "sh install.sh"},
    )
    tree = tmp_path / "apps" / "web"
    u1 = origin.app_commit("u1", install="ok")
    agent = agent_factory().start(config)
    app = agent.wait_app("web", refused(u1), "the unsigned head refused")
    assert f"{u1[:12]} is unsigned" in app["last_error"]
    assert "nothing runs until a commit signed by a trusted key arrives" in app["last_error"]
    assert app.get("commit") is None and not app.get("running") and not app.get("pid")
    assert not (tree / "installed.txt").exists()  # neither its install nor a hook ran
    assert http_get(port)[0] is None
    # the agent restarts: the clone is adopted, and still nothing runs
    assert agent.stop() == 0
    agent.start(config)
    agent.wait(lambda s: "nothing runs until" in agent.output(), "the head refused again")
    assert not (tree / "installed.txt").exists() and not agent.app("web").get("running")
    sign_with(origin, keys["alice"])
    v2 = origin.app_commit("v2", install="ok")
    agent.wait_good("web", v2)
    assert (tree / "installed.txt").read_text() == "installed v2\n"
    assert http_get(port) == (200, "v2")
    assert agent.stop() == 0


def test_a_rollback_moves_only_to_a_trusted_commit(tmp_path, agent_factory, keys):
    signers = allowed_signers(tmp_path / "device" / "allowed_signers", alice=keys["alice"])
    calls = tmp_path / "calls.log"
    origin, port, config = make_app(
        tmp_path, repository={"executable": str(git_wrapper(tmp_path / "git", calls))}
    )
    u1 = origin.app_commit("u1")  # deployed before the device trusted anyone
    agent = agent_factory().start(config)
    agent.wait_good("web", u1)
    signed = json.loads(config.read_text())
    signed["repository"]["allowed signers"] = str(signers)
    write_config(config, signed)
    agent.signal(signal.SIGHUP)
    agent.wait(lambda s: "reloaded" in agent.output(), "the reload")
    agent.wait_app("web", lambda a: a.get("running") and a.get("healthy"), "u1 runs on")
    starts_of_u1 = agent.starts("web", u1)

    # a signed commit that crashes cannot fall back to the unsigned u1
    sign_with(origin, keys["alice"])
    v2 = origin.app_commit("v2", mode="crash")
    app = agent.wait_app(
        "web",
        lambda a: f"cannot move the tree to {u1[:12]}" in (a.get("last_error") or "") and a,
        "the rollback to u1 refused",
    )
    assert f"{u1[:12]} is unsigned" in app["last_error"]
    assert agent.starts("web", u1) == starts_of_u1
    assert git("rev-parse", "HEAD", cwd=tmp_path / "apps" / "web") == v2

    # a signed good commit, then a signed one that crashes: back to the signed good one
    v3 = origin.app_commit("v3")
    agent.wait_good("web", v3)
    checks_of_v3 = verifications(calls, v3)
    v4 = origin.app_commit("v4", mode="crash")
    agent.wait_app(
        "web",
        lambda a: v4 in a.get("bad", []) and a.get("commit") == v3 and a.get("healthy") is True,
        "v4 rolled back to v3",
    )
    assert http_get(port) == (200, "v3")
    assert verifications(calls, v3) == checks_of_v3 + 1  # the rollback target was checked
    assert agent.stop() == 0


def test_the_users_and_the_trees_git_config_cannot_widen_the_trust(tmp_path, agent_factory, keys):
    signers = allowed_signers(tmp_path / "device" / "allowed_signers", alice=keys["alice"])
    permissive = allowed_signers(
        tmp_path / "permissive", alice=keys["alice"], mallory=keys["mallory"]
    )
    home = tmp_path / "home"
    home.mkdir()
    (home / ".gitconfig").write_text(f'[gpg "ssh"]\n\tallowedSignersFile = {permissive}\n')
    origin, port, config = make_app(tmp_path, repository={"allowed signers": str(signers)})
    tree = tmp_path / "apps" / "web"
    sign_with(origin, keys["alice"])
    v1 = origin.app_commit("v1")
    env = {
        "HOME": str(home),
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "gpg.ssh.allowedSignersFile",
        "GIT_CONFIG_VALUE_0": str(permissive),
    }
    agent = agent_factory().start(config, env=env)
    agent.wait_good("web", v1)
    git("config", "gpg.ssh.allowedSignersFile", str(permissive), cwd=tree)
    sign_with(origin, keys["mallory"])
    v2 = origin.app_commit("v2")
    app = agent.wait_app("web", refused(v2), "mallory's v2 refused")
    assert "is signed by an unknown signer" in app["last_error"]
    assert http_get(port) == (200, "v1")
    # the test can fail: git itself, reading that configuration, would trust v2
    done = subprocess.run(
        ["git", "verify-commit", v2],
        cwd=tree,
        capture_output=True,
        text=True,
        env={**os.environ, "HOME": str(home)},
        timeout=30,
    )
    assert done.returncode == 0 and "mallory@example.com" in done.stderr
    assert agent.stop() == 0


def test_a_signer_added_on_the_device_then_huddle_retry_deploys_a_refused_commit(
    tmp_path, agent_factory, keys
):
    signers = allowed_signers(tmp_path / "device" / "allowed_signers", alice=keys["alice"])
    calls = tmp_path / "calls.log"
    origin, port, config = make_app(
        tmp_path,
        repository={
            "allowed signers": str(signers),
            "executable": str(git_wrapper(tmp_path / "git", calls)),
        },
    )
    sign_with(origin, keys["alice"])
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    sign_with(origin, keys["mallory"])
    v2 = origin.app_commit("v2")
    agent.wait_app("web", refused(v2), "v2 refused")

    def retry() -> None:
        done = subprocess.run(
            [PY, "-m", "huddle", "retry", "web", "--state-dir", str(agent.state_dir)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert done.returncode == 0, done.stderr

    retry()  # a retry is no bypass: the commit is verified again, and refused again
    wait_until(lambda: verifications(calls, v2) == 2, 20, "v2 checked again")
    agent.wait_app("web", refused(v2), "v2 refused again")
    assert http_get(port) == (200, "v1")
    allowed_signers(signers, alice=keys["alice"], mallory=keys["mallory"])
    retry()
    agent.wait_good("web", v2)
    assert f"{v2[:12]} is signed by mallory@example.com" in agent.output()
    assert agent.stop() == 0


def test_a_refusal_is_reported_over_mqtt(broker, tmp_path, agent_factory, keys):
    from tests.test_mqtt_support import Observer

    signers = allowed_signers(tmp_path / "device" / "allowed_signers", alice=keys["alice"])
    origin, port, config = make_app(tmp_path, repository={"allowed signers": str(signers)})
    sign_with(origin, keys["alice"])
    v1 = origin.app_commit("v1")
    obs = Observer(broker, "huddle/signed-1/#")
    try:
        agent = agent_factory().start(
            config, env={"HUDDLE_MQTT": broker.url, "HUDDLE_DEVICE_ID": "signed-1"}
        )
        agent.wait_good("web", v1)
        sign_with(origin, None)
        v2 = origin.app_commit("v2")
        event = obs.wait_for(
            "huddle/signed-1/events",
            lambda p, m: p["event"] == "error" and p["commit"] == v2,
            timeout_s=30,
        )
        assert f"{v2[:12]} is unsigned" in json.loads(event.payload)["detail"]
        obs.wait_for(
            "huddle/signed-1/status",
            lambda p, m: "is unsigned" in (p["apps"].get("web", {}).get("last_error") or ""),
            timeout_s=30,
        )
        assert agent.stop() == 0
    finally:
        obs.close()


# -- OpenPGP --------------------------------------------------------------------------------


@pytest.fixture
def gpg_homes():
    """A signer's home (secret keys) and a device's home (public keys only), short paths
    (gpg's socket names must fit); their gpg-agents are stopped afterwards."""
    homes = [Path(tempfile.mkdtemp(prefix="hgpg-")) for _ in range(3)]
    yield homes
    for home in homes:
        subprocess.run(
            ["gpgconf", "--homedir", str(home), "--kill", "all"], capture_output=True, timeout=30
        )
        shutil.rmtree(home, ignore_errors=True)


def gpg(home: Path, *args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["gpg", "--homedir", str(home), "--batch", *args],
        capture_output=True,
        check=True,
        timeout=60,
        **kwargs,
    )


def gpg_signer(home: Path, uid: str, wrapper: Path) -> Path:
    """A new signing key in `home`, and a `gpg.program` that signs with that home."""
    gpg(home, "--passphrase", "", "--quick-generate-key", uid, "ed25519", "sign", "never")
    wrapper.write_text(f'#!/bin/sh\nexec gpg --homedir {home} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def sign_with_gpg(origin: Origin, program: Path, uid: str) -> None:
    for name, value in (
        ("gpg.format", "openpgp"),
        ("gpg.program", str(program)),
        ("user.signingkey", uid),
        ("commit.gpgsign", "true"),
    ):
        git("config", name, value, cwd=origin.work)


@needs_gpg
def test_openpgp_signed_commits_are_checked_against_the_gpg_home(
    tmp_path, agent_factory, gpg_homes, keys
):
    release, other, device = gpg_homes
    release_gpg = gpg_signer(release, "release@example.com", tmp_path / "gpg-release")
    other_gpg = gpg_signer(other, "other@example.com", tmp_path / "gpg-other")
    exported = gpg(release, "--export", "release@example.com").stdout
    gpg(device, "--import", input=exported)
    before = sorted(os.listdir(device))
    signers = allowed_signers(tmp_path / "device" / "allowed_signers", alice=keys["alice"])
    origin, port, config = make_app(
        tmp_path, repository={"gpg home": str(device), "allowed signers": str(signers)}
    )
    sign_with_gpg(origin, release_gpg, "release@example.com")
    v1 = origin.app_commit("v1")
    agent = agent_factory().start(config)
    agent.wait_good("web", v1)
    assert f"{v1[:12]} is signed by release@example.com" in agent.output()
    sign_with_gpg(origin, other_gpg, "other@example.com")
    v2 = origin.app_commit("v2")
    app = agent.wait_app("web", refused(v2), "other's v2 refused")
    assert "the signature cannot be checked against" in app["last_error"]
    assert "No public key" in app["last_error"] and http_get(port) == (200, "v1")
    sign_with(origin, keys["alice"])  # either kind of trusted key will do
    v3 = origin.app_commit("v3")
    agent.wait_good("web", v3)
    assert agent.stop() == 0
    assert sorted(os.listdir(device)) == before  # the operator's keyring is only read


# -- the verifier on its own ----------------------------------------------------------------


def verdict(signers: Signers, tree: Path, commit: str) -> str:
    async def check() -> str:
        try:
            return (await signers.require(tree, commit)).describe()
        except SignatureError as exc:
            return f"refused: {exc.who}"

    return asyncio.run(check())


def test_the_verifier_names_the_signer_or_says_why_not(tmp_path, keys):
    signers_file = allowed_signers(tmp_path / "allowed", alice=keys["alice"])
    origin = Origin(tmp_path / "remotes")
    sign_with(origin, keys["alice"])
    good = origin.app_commit("v1")
    sign_with(origin, keys["mallory"])
    untrusted = origin.app_commit("v2")
    sign_with(origin, None)
    unsigned = origin.app_commit("v3")
    forged = tampered(origin, good, tree_of=unsigned)
    work = origin.work
    only_ssh = Signers(signers_file, None)
    assert verdict(only_ssh, work, good) == (
        f"signed by alice@example.com (key {fingerprint(keys['alice'])})"
    )
    assert verdict(only_ssh, work, untrusted) == (
        f"refused: signed by an unknown signer (key {fingerprint(keys['mallory'])})"
    )
    assert verdict(only_ssh, work, unsigned) == "refused: unsigned"
    assert verdict(only_ssh, work, forged) == "refused: badly signed"
    # with only an OpenPGP home, no SSH key is trusted: git is not left to its own files
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    assert verdict(Signers(None, home), work, good).startswith("refused: signed by an unknown")
    # nothing from the environment adds a signer
    env = {
        **os.environ,
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "gpg.ssh.allowedSignersFile",
        "GIT_CONFIG_VALUE_0": str(
            allowed_signers(tmp_path / "all", alice=keys["alice"], mallory=keys["mallory"])
        ),
    }
    assert verdict(Signers(signers_file, None, env=env), work, untrusted).startswith(
        "refused: signed by an unknown signer"
    )


def test_a_git_that_cannot_run_is_an_error_not_a_refusal(tmp_path, keys):
    origin = Origin(tmp_path / "remotes")
    commit = origin.app_commit("v1")
    signers = Signers(
        allowed_signers(tmp_path / "allowed", alice=keys["alice"]),
        None,
        executable=str(tmp_path / "no-git"),
    )
    with pytest.raises(Exception) as caught:
        asyncio.run(signers.require(origin.work, commit))
    assert not isinstance(caught.value, SignatureError)
    assert "could not start" in str(caught.value)
    assert sys.modules["huddle.errors"].GitError in type(caught.value).__mro__
