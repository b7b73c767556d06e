"""The micro agent's sync cycle (`main.py CONFIG --once`) on the real MicroPython unix port
(and CPython where it says so), against a real HTTP server on loopback: installs, updates,
every hostile input, exit codes, and kill -9 in the middle of an update."""

from __future__ import annotations

import hashlib
import json
import os
import signal

import pytest

from tests.microutil import (
    device_config,
    pointer,
    publish,
    run_micro,
    start_micro,
    version_files,
    wait_for,
    write_config,
)

V1 = {
    "app.py": b"def main():\n    return None\n",
    "lib/data.bin": bytes(range(256)) * 40,
    "keep.txt": b"unchanged\n",
    "dir with space/n.txt": b"spaces\n",
}
V2 = {
    "app.py": b"def main():\n    return 2\n",
    "lib/data.bin": bytes(range(256)) * 40,
    "keep.txt": b"unchanged\n",
    "new/added.py": b"ADDED = True\n",
}  # n.txt deleted


def _config(tmp_path, server, **extra):
    return device_config(tmp_path, server, **extra)


def _leftovers(devdir):
    return [n for n in os.listdir(devdir) if n.startswith(".") or n.endswith(".tmp")]


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_install_then_update_adds_changes_deletes(tmp_path, site, runtime):
    repo, out, server = site
    c1 = repo.commit(V1)
    publish(repo, out)
    cfg = _config(tmp_path, server)
    first = run_micro(runtime, cfg, "--once")
    assert first.returncode == 0, first.stdout
    dev = tmp_path / "device"
    assert pointer(dev)["commit"] == c1 and version_files(dev) == V1
    c2 = repo.commit(V2)
    publish(repo, out)
    server.requests.clear()
    second = run_micro(runtime, cfg, "--once")
    assert second.returncode == 0, second.stdout
    assert pointer(dev) == {"commit": c2, "active": "v-" + c2[:12]}
    assert version_files(dev) == V2
    blobs = [p for p in server.requests if "/blobs/" in p]
    # unchanged files are copied from the running version: only changed ones are fetched
    assert sorted(blobs) == sorted(
        "/blobs/" + hashlib.sha256(V2[p]).hexdigest() for p in ("app.py", "new/added.py")
    )
    assert (dev / ("v-" + c1[:12])).is_dir()  # the previous version stays for rollback
    c3 = repo.commit({"app.py": b"def main():\n    return 3\n"})
    publish(repo, out)
    assert run_micro(runtime, cfg, "--once").returncode == 0
    assert sorted(n for n in os.listdir(dev) if n.startswith("v-")) == sorted(
        ["v-" + c2[:12], "v-" + c3[:12]]
    )  # older than the previous: deleted
    assert not _leftovers(dev)


def test_up_to_date_stops_after_the_commit_line(tmp_path, site):
    repo, out, server = site
    repo.commit(V1)
    publish(repo, out)
    cfg = _config(tmp_path, server)
    assert run_micro("micropython", cfg, "--once").returncode == 0
    server.requests.clear()
    again = run_micro("micropython", cfg, "--once")
    assert again.returncode == 0, again.stdout
    assert server.requests == ["/manifest.txt"]


def test_signed_manifest_is_verified(tmp_path, site):
    repo, out, server = site
    c1 = repo.commit(V1)
    publish(repo, out, key="right")
    cfg = _config(tmp_path, server, key="right")
    done = run_micro("micropython", cfg, "--once")
    assert done.returncode == 0, done.stdout
    assert pointer(tmp_path / "device")["commit"] == c1


def _install_v1(tmp_path, site, **extra):
    repo, out, server = site
    c1 = repo.commit(V1)
    publish(repo, out, key=extra.get("key"))
    cfg = _config(tmp_path, server, **extra)
    assert run_micro("micropython", cfg, "--once").returncode == 0
    return c1, cfg


def _assert_still_v1(tmp_path, c1, proc, reason):
    dev = tmp_path / "device"
    assert proc.returncode == 1, proc.stdout
    assert reason in proc.stdout
    assert pointer(dev)["commit"] == c1 and version_files(dev) == V1


def _tamper(out, server, name, data):
    sha = hashlib.sha256(V2[name]).hexdigest()
    server.overrides["/blobs/" + sha] = data


@pytest.mark.parametrize(
    "case,reason",
    [
        ("bad-hash", "SHA-256 mismatch"),
        ("wrong-size", "manifest says"),
        ("truncated", "truncated"),
        ("http-500", "HTTP 500"),
        ("dotdot", "unsafe path"),
        ("endless", "too long"),
        ("endless-line", "line longer than"),
        ("slow", "no data for"),
        ("not-a-manifest", "not a huddle manifest"),
        ("no-hmac", "not signed"),
        ("wrong-hmac", "hmac does not match"),
    ],
)
def test_hostile_input_leaves_the_old_version(tmp_path, site, case, reason):
    repo, out, server = site
    keyed = case in ("no-hmac", "wrong-hmac")
    c1, cfg = _install_v1(tmp_path, site, **({"key": "k1"} if keyed else {}))
    repo.commit(V2)
    publish(
        repo,
        out,
        key={"no-hmac": None, "wrong-hmac": "other"}.get(case, None if not keyed else "k1"),
    )
    if case == "bad-hash":
        _tamper(out, server, "app.py", b"X" * len(V2["app.py"]))
    elif case == "wrong-size":
        _tamper(out, server, "app.py", V2["app.py"] + b"# more\n")
    elif case == "truncated":
        server.mode = "drop"
        server.blob_requests = 0
        _tamper(out, server, "app.py", b"")  # keep the default file: drop cuts the big one
        server.overrides.clear()
        repo.commit(dict(V2, **{"big.bin": os.urandom(5000)}))
        publish(repo, out)
    elif case == "http-500":
        server.mode = "500"
    elif case == "dotdot":
        text = (out / "manifest.txt").read_text()
        server.overrides["/manifest.txt"] = text.replace(" new/added.py", " ../evil.py").encode()
    elif case == "endless":
        server.mode = "endless"
    elif case == "slow":
        server.mode = "stall"
        server.blob_requests = 0
        repo.commit(dict(V2, **{"big.bin": os.urandom(5000)}))
        publish(repo, out)
    elif case == "endless-line":
        server.overrides["/manifest.txt"] = (
            b"huddle-manifest 1\ncommit "
            + b"1" * 40
            + b"\nbranch main\nfile "
            + b"2" * 64
            + b" 1 "
            + b"x" * 100000
            + b"\n"
        )
    elif case == "not-a-manifest":
        server.overrides["/manifest.txt"] = b"<html>hello</html>\n"
    proc = run_micro("micropython", cfg, "--once")
    server.release.set()
    _assert_still_v1(tmp_path, c1, proc, reason)
    assert not (tmp_path / "evil.py").exists()


def test_unreachable_server_fails_with_exit_1(tmp_path, site):
    repo, out, server = site
    c1, cfg = _install_v1(tmp_path, site)
    server.stop()
    proc = run_micro("micropython", cfg, "--once")
    assert proc.returncode == 1 and "sync:" in proc.stdout
    assert pointer(tmp_path / "device")["commit"] == c1


@pytest.mark.parametrize(
    "values,problem",
    [
        ({"device": "d"}, "manifest: required"),
        ({"manifest": "ftp://x/manifest.txt"}, "manifest: must be an http"),
        ({"minimum": 5, "maximum": 1}, "minimum: must not exceed maximum"),
        ({"colour": "red"}, "colour: unknown key"),
        ({"health": {"type": "http"}}, "health.port"),
        ({"health": {"type": "socket", "port": 1, "retries": 0}}, "health.retries"),
        ({"health": {"type": "http", "port": 80, "status": "600"}}, "health.status"),
        ({"main": "my-app"}, "main: must be a module name"),
        ({"mqtt": "http://x"}, "mqtt: must be an mqtt"),
        ({"mqtt": "mqtt://h:port"}, "mqtt: must be an mqtt:// or mqtts:// URL (bad host or port)"),
        # the reason never shows any part of a password
        ({"mqtt": "mqtt://u:s3%zzcret@h"}, "(bad %-escape in the user or password)"),
        ({"mqtt": "mqtt://u:s3%ffcret@h"}, "(user or password is not UTF-8)"),
        ({"device": "a/b"}, "device: must not contain"),
    ],
)
def test_invalid_config_exits_2_with_reasons(tmp_path, values, problem):
    base = dict(
        device="d",
        manifest="http://127.0.0.1:9/manifest.txt",
        dir=str(tmp_path / "d"),
        minimum=1,
        maximum=2,
        main="app",
    )
    base.update(values)
    if values == {"device": "d"}:
        del base["manifest"]
    cfg = write_config(tmp_path / "bad.json", **base)
    proc = run_micro("micropython", cfg, "--once")
    assert proc.returncode == 2, proc.stdout
    assert f"huddle: {cfg}: {problem}" in proc.stdout or (
        problem.startswith("(") and problem in proc.stdout
    ), proc.stdout
    assert "cret" not in proc.stdout and "zz" not in proc.stdout
    assert not (tmp_path / "d").exists()


def test_not_json_exits_2(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text("{nope")
    proc = run_micro("micropython", cfg, "--once")
    assert proc.returncode == 2 and "not valid JSON" in proc.stdout


@pytest.mark.parametrize("stall_at", [0, 2])
def test_kill_9_mid_update_boots_a_complete_version_and_cleans_up(tmp_path, site, stall_at):
    repo, out, server = site
    c1, cfg = _install_v1(tmp_path, site)
    dev = tmp_path / "device"
    big = {f"big{i}.bin": os.urandom(3000 + i) for i in range(4)}
    c2 = repo.commit(dict(V2, **big))
    publish(repo, out)
    server.mode, server.stall_at, server.blob_requests = "stall", stall_at, 0
    log = tmp_path / "agent.log"
    proc = start_micro("micropython", cfg, "--once", log=log)
    try:
        wait_for(server.stalled.is_set, what="the download to stall", proc=proc, log=log)
        assert (dev / ".stage").is_dir()  # killed while staging, not before
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
        server.release.set()
    assert pointer(dev)["commit"] == c1 and version_files(dev) == V1
    server.mode = "ok"
    again = run_micro("micropython", cfg, "--once")
    assert again.returncode == 0, again.stdout
    assert pointer(dev)["commit"] == c2 and version_files(dev) == dict(V2, **big)
    assert not _leftovers(dev)


def test_leftovers_of_a_kill_between_staging_and_switch_are_removed(tmp_path, site):
    """A kill after `.stage` became `v-...` but before the pointer moved, with a torn pointer
    temp file: the pointer still names v1, and the next run removes the rest."""
    repo, out, server = site
    c1, cfg = _install_v1(tmp_path, site)
    dev = tmp_path / "device"
    (dev / "v-0123456789ab").mkdir()
    (dev / "v-0123456789ab" / "app.py").write_text("half")
    (dev / ".stage" / "sub").mkdir(parents=True)
    (dev / "huddle.json.tmp").write_text('{"commit": "0123')
    (dev / ".manifest.tmp").write_text("huddle-manifest 1\n")
    (dev / "user-notes.txt").write_text("not ours")  # names the agent does not own stay
    proc = run_micro("micropython", cfg, "--once")
    assert proc.returncode == 0, proc.stdout
    assert pointer(dev)["commit"] == c1
    assert sorted(os.listdir(dev)) == sorted(
        ["huddle.json", "state.json", "v-" + c1[:12], "user-notes.txt"]
    )
    assert json.loads((dev / "state.json").read_text())["bad"] == []
