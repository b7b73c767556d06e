"""Real apps on the long-running micro agent (real MicroPython unix port, and CPython where it
says so; a real HTTP server on loopback, a real Mosquitto): an app's own modules win over any
loaded module of the same name, a server socket an app leaks never blocks the next version,
a version is banned only when its fallback then runs healthily (never dark), the documented
command runs from any directory, and a starved agent never exits."""

from __future__ import annotations

import json
import os

import pytest

from tests.microutil import (
    MICRO,
    compile_agent,
    device_config,
    pointer,
    publish,
    run_micro,
    start_micro,
    wait_for,
)
from tests.mosquitto import free_port
from tests.test_micro_agent import Subscriber, _stop, http_check

SERVER_APP = """import asyncio
import os
PORT = {port}

def exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False

async def handle(r, w):
    while True:
        line = await r.readline()
        if not line or line in (b"\\r\\n", b"\\n"):
            break
    status = b"200" if {check} else b"500"
    w.write(b"HTTP/1.0 " + status + b" X\\r\\nContent-Length: 1\\r\\n\\r\\n{version}")
    await w.drain()
    w.close()

async def serve():
    await asyncio.start_server(handle, "127.0.0.1", PORT)
    while True:  # cancelled at an update, and never closes its server: a leak
        await asyncio.sleep(1)

def main():
    return serve()
"""


def server_app(port, version, check="True"):
    # check: an expression each answer evaluates; false -> HTTP 500
    return {"app.py": SERVER_APP.format(port=port, version=version, check=check).encode()}


def _state(dev):
    try:
        return json.loads((dev / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def _start(tmp_path, server, runtime="micropython", port=None, **extra):
    health = http_check(port, "/") if port else {"type": "none", "grace": 0.3, "interval": 0.3}
    cfg = device_config(tmp_path, server, **{"health": health, **extra})
    log = tmp_path / "agent.log"
    return start_micro(runtime, cfg, log=log, cwd=tmp_path), log


@pytest.mark.parametrize("runtime", ["micropython", "cpython"])
def test_an_app_gets_its_own_modules_whatever_their_names(tmp_path, site, broker, runtime):
    # mqtt.py (the name the agent's client once had), random.py (a module the agent itself
    # uses) and a helper that changes between versions: the app sees its own every time, and
    # the agent goes on reporting with its own. Files named like the agent modules a sync loads
    # while the app runs (huddle_sync, huddle_stage, huddle_hmac) are never what it loads
    repo, out, server = site
    dev = tmp_path / "device"
    own = b"WHO = 'app'\n"

    def version(n):
        return {
            "mqtt.py": own,
            "random.py": own,
            "helper.py": b"N = %d\n" % n,
            "huddle_sync.py": b"raise ImportError('the app file')\n",
            "huddle_stage.py": b"raise ImportError('the app file')\n",
            "huddle_hmac.py": b"raise ImportError('the app file')\n",
            "app.py": b"import asyncio, mqtt, random, helper\n"
            b"assert mqtt.WHO == random.WHO == 'app', (mqtt, random)\n"
            b"assert helper.N == %d, helper.N\n"
            b"async def run():\n    while True:\n        await asyncio.sleep(1)\n"
            b"def main():\n    return run()\n" % n,
        }

    c1 = repo.commit(version(1))
    publish(repo, out, key="k")
    sub = Subscriber(broker)
    proc, log = _start(tmp_path, server, runtime, mqtt=broker.url, heartbeat=0.5, key="k")
    try:
        wait_for(lambda: _state(dev).get("good") == c1, what="v1 good", proc=proc, log=log)
        c2 = repo.commit(version(2))
        publish(repo, out, key="k")
        wait_for(lambda: _state(dev).get("good") == c2, what="v2 good", proc=proc, log=log)
        sub.next(
            lambda p: (
                p.get("apps", {}).get("app", {}).get("commit") == c2 and p["apps"]["app"]["running"]
            ),
            "status of v2 running",
        )
        assert _state(dev)["bad"] == [], log.read_text()
    finally:
        _stop(proc)
        sub.close()


def test_a_leaked_server_socket_never_blocks_the_next_version(tmp_path, site):
    # each version listens on the same port and never closes its server when cancelled: the
    # agent closes what the app opened, so every next version binds, passes and is kept
    repo, out, server = site
    dev = tmp_path / "device"
    port = free_port()
    c1 = repo.commit(server_app(port, 1))
    publish(repo, out)
    proc, log = _start(tmp_path, server, port=port)
    try:
        wait_for(lambda: _state(dev).get("good") == c1, what="v1 good", proc=proc, log=log)
        for n in (2, 3):
            cn = repo.commit(server_app(port, n))
            publish(repo, out)
            wait_for(
                lambda cn=cn: _state(dev).get("good") == cn, what=f"v{n} good", proc=proc, log=log
            )
        assert _state(dev)["bad"] == []
        assert "EADDRINUSE" not in log.read_text() and "rolling back" not in log.read_text()
    finally:
        _stop(proc)


def test_a_version_is_banned_only_when_its_fallback_runs(tmp_path, site):
    # the environment breaks (a file both versions need is gone): v1 fails, v2 arrives and
    # fails its trial, the fallback v1 fails the same way: neither is banned, v2 runs again
    # with backoff, and once the environment is back v2 becomes good
    repo, out, server = site
    dev = tmp_path / "device"
    env = tmp_path / "environment-ok"
    env.write_text("ok")
    port = free_port()
    check = f"exists({str(env)!r})"
    c1 = repo.commit(server_app(port, 1, check))
    publish(repo, out)
    proc, log = _start(tmp_path, server, port=port)
    try:
        wait_for(lambda: _state(dev).get("good") == c1, what="v1 good", proc=proc, log=log)
        env.unlink()
        wait_for(lambda: "restarting app" in log.read_text(), what="v1 failing", proc=proc, log=log)
        c2 = repo.commit(server_app(port, 2, check))
        publish(repo, out)
        wait_for(
            lambda: "fails as well" in log.read_text(),
            what="the fallback failing too",
            proc=proc,
            log=log,
        )
        assert _state(dev)["bad"] == []
        env.write_text("ok")
        wait_for(
            lambda: _state(dev).get("good") == c2, what="v2 good", proc=proc, log=log, timeout=120
        )
        assert _state(dev)["bad"] == [] and pointer(dev)["commit"] == c2
    finally:
        _stop(proc)


def test_a_failing_first_version_is_restarted_not_banned(tmp_path, site):
    repo, out, server = site
    dev = tmp_path / "device"
    c1 = repo.commit({"app.py": b"def main():\n    raise ValueError('no luck')\n"})
    publish(repo, out)
    proc, log = _start(tmp_path, server)
    try:
        wait_for(
            lambda: log.read_text().count("starting app from") >= 3,
            what="restarts of v1",
            proc=proc,
            log=log,
        )
        assert proc.poll() is None
        assert _state(dev).get("bad", []) == [] and pointer(dev)["commit"] == c1
    finally:
        _stop(proc)


@pytest.mark.parametrize("runtime", ["micropython", "micropython32"])
def test_the_documented_command_runs_from_any_directory(tmp_path, site, runtime):
    # `micropython micro/main.py CONFIG --once`, relative to the working directory, without
    # MICROPYPATH; and the absolute path from elsewhere
    repo, out, server = site
    c1 = repo.commit({"app.py": b"def main():\n    return None\n"})
    publish(repo, out)
    cfg = device_config(tmp_path, server, device="d", minimum=1, maximum=2)
    rel = run_micro(runtime, cfg, "--once", agent=MICRO.relative_to(MICRO.parent), cwd=MICRO.parent)
    assert rel.returncode == 0, rel.stdout
    assert pointer(tmp_path / "device")["commit"] == c1
    again = run_micro(runtime, cfg, "--once", cwd=tmp_path)
    assert again.returncode == 0, again.stdout


@pytest.mark.parametrize("heap", ["12K", "20K"])
def test_a_starved_agent_never_exits(tmp_path, site, broker, heap):
    # on the 32-bit port with the .mpy agent, in heaps too small to boot (12K) or to sync
    # (20K): the agent keeps retrying instead of exiting
    repo, out, server = site
    repo.commit({"app.py": b"def main():\n    return None\n", "big.bin": os.urandom(64 * 1024)})
    publish(repo, out, key="k")
    agent = compile_agent(tmp_path / "agent")
    cfg = device_config(tmp_path, server, device="starved", key="k", mqtt=broker.url, heartbeat=0.5)
    log = tmp_path / "agent.log"
    proc = start_micro("micropython32", cfg, log=log, heap=heap, agent=agent)
    try:
        wait_for(
            lambda: (
                log.read_text().count("MemoryError")
                + log.read_text().count("memory allocation failed")
                >= 3
            ),
            what="three MemoryErrors",
            proc=proc,
            log=log,
        )
        assert proc.poll() is None, log.read_text()[-2000:]
        assert "Traceback" not in log.read_text()
    finally:
        _stop(proc)
