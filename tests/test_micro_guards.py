"""What a verified manifest must still pass on the micro agent (`main.py CONFIG --once` on the
real MicroPython unix port and CPython, a real HTTP server on loopback): it is not older than
what the device installed (a replayed signed manifest is no downgrade), it is for the
configured branch, and a whole sync ends by its deadline however slowly the server trickles."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.microutil import device_config, pointer, publish, run_micro

KEY = "guard-key"


def _config(tmp_path, server, **extra):
    return device_config(tmp_path, server, **{"key": KEY, **extra})


def _app(n):
    return {"app.py": f"def main():\n    return {n}\n".encode()}


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_a_replayed_older_signed_manifest_is_refused(tmp_path, site, runtime):
    repo, out, server = site
    c1 = repo.commit(_app(1))
    publish(repo, out, key=KEY)
    old = (out / "manifest.txt").read_bytes()  # what an attacker records
    c2 = repo.commit(_app(2))
    publish(repo, out, key=KEY)
    cfg = _config(tmp_path, server)
    assert run_micro(runtime, cfg, "--once").returncode == 0
    dev = tmp_path / "device"
    assert pointer(dev)["commit"] == c2
    server.overrides["/manifest.txt"] = old  # replayed: validly signed, but older
    replay = run_micro(runtime, cfg, "--once")
    assert replay.returncode == 1, replay.stdout
    assert "not above the installed" in replay.stdout
    assert pointer(dev)["commit"] == c2 and c1 != c2
    del server.overrides["/manifest.txt"]
    c3 = repo.commit(_app(3))  # a newer publish is installed normally
    publish(repo, out, key=KEY)
    assert run_micro(runtime, cfg, "--once").returncode == 0
    assert pointer(dev)["commit"] == c3


def test_an_unsequenced_manifest_is_refused_once_a_sequenced_one_was_installed(tmp_path, site):
    repo, out, server = site
    repo.commit(_app(1))
    publish(repo, out)
    legacy = tmp_path / "legacy"  # a manifest from a publish without seq lines (older huddle)
    shutil.copytree(out, legacy)
    lines = (legacy / "manifest.txt").read_text().split("\n")
    c0 = lines[1][7:]
    cfg = _config(tmp_path, server, key=None)
    # a device that has never seen a seq installs an unsequenced manifest
    (out / "manifest.txt").write_text("\n".join(ln for ln in lines if not ln.startswith("seq ")))
    assert run_micro("micropython", cfg, "--once").returncode == 0
    dev = tmp_path / "device"
    assert pointer(dev)["commit"] == c0
    assert json.loads((dev / "state.json").read_text())["seq"] is None
    c2 = repo.commit(_app(2))
    publish(repo, out)
    assert run_micro("micropython", cfg, "--once").returncode == 0
    assert pointer(dev)["commit"] == c2
    # from now on an unsequenced manifest is refused
    c3 = repo.commit(_app(3))
    publish(repo, out)
    text = (out / "manifest.txt").read_text().split("\n")
    (out / "manifest.txt").write_text("\n".join(ln for ln in text if not ln.startswith("seq ")))
    refused = run_micro("micropython", cfg, "--once")
    assert refused.returncode == 1 and "seq None" in refused.stdout, refused.stdout
    assert pointer(dev)["commit"] == c2 != c3


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_a_manifest_for_another_branch_is_refused(tmp_path, site, runtime):
    repo, out, server = site
    repo.commit(_app(1))  # published from branch "main"
    publish(repo, out, key=KEY)
    refused = run_micro(runtime, _config(tmp_path, server, branch="production"), "--once")
    assert refused.returncode == 1, refused.stdout
    assert "for branch main, not production" in refused.stdout
    assert not (tmp_path / "device" / "huddle.json").exists()
    ok = run_micro(runtime, _config(tmp_path, server, branch="main"), "--once")
    assert ok.returncode == 0, ok.stdout


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_a_trickling_server_is_cut_off_at_the_sync_deadline(tmp_path, site, runtime):
    # the manifest comes without a length at a few hundred bytes a second, forever: fast enough
    # for the floor rate, so only the whole sync's deadline ends it
    repo, out, server = site
    repo.commit(_app(1))
    publish(repo, out)
    server.mode = "trickle"
    cut = run_micro(runtime, _config(tmp_path, server, key=None, sync_deadline=2), "--once")
    assert cut.returncode == 1, cut.stdout
    assert "past the sync deadline" in cut.stdout


def test_sync_deadline_and_branch_are_checked_config_keys(tmp_path, site):
    repo, out, server = site
    bad = run_micro("micropython", _config(tmp_path, server, branch="", sync_deadline=0), "--once")
    assert bad.returncode == 2
    assert "branch: must be a non-empty string" in bad.stdout
    assert "sync_deadline: must be a number > 0" in bad.stdout
