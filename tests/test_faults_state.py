"""The state dir: a damaged `state.json` never stops the agent or `huddle status`,
a read-only or full state dir is a reported StateError, and one agent holds a state dir.

Real files, real tmpfs mounts (read-only, full), real processes and real flocks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from huddle.errors import StateError
from huddle.state import AgentLock, AppState, StateStore
from tests.gitutil import Origin, app_config, wait_until, write_config
from tests.gitutil import tmpfs as mounted_tmpfs

PY = sys.executable
C1, C2 = "1" * 40, "2" * 40
pytestmark = pytest.mark.timeout(60)


def status(state_dir: Path, *args, drop_read_access=False) -> subprocess.CompletedProcess:
    # root reads any file; without CAP_DAC_OVERRIDE/READ_SEARCH a 0000 file is unreadable
    prefix = (
        ["setpriv", "--bounding-set=-dac_override,-dac_read_search"] if drop_read_access else []
    )
    return subprocess.run(
        [*prefix, PY, "-m", "huddle", "status", "--state-dir", str(state_dir), *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def good_state() -> dict:
    return {
        "web": {
            "commit": C2,
            "good": C1,
            "bad": [],
            "pid": None,
            "restarts": 2,
            "healthy": True,
            "running": False,
            "deployed_at": 1700000000.0,
        }
    }


@pytest.fixture
def tmpfs(tmp_path):
    """A fresh 1 MB tmpfs; the test may remount it read-only or fill it."""
    with mounted_tmpfs(tmp_path / "mnt", "1m") as mount:
        yield mount


# -- a damaged file ---------------------------------------------------------------------------

DAMAGED = {
    "garbage": b"\x89PNG\r\n\x1a\n\x00\x00 not state",
    "truncated": json.dumps(good_state()).encode()[:37],
    "empty": b"",
    "whitespace": b"  \n",
    "a list": b"[1, 2, 3]",
    "null": b"null",
    "deeply nested": b"[" * 100000,
}


@pytest.mark.parametrize("kind", list(DAMAGED))
def test_a_damaged_file_is_kept_aside_and_loading_goes_on(tmp_path, kind):
    (tmp_path / "state.json").write_bytes(DAMAGED[kind])
    store = StateStore(tmp_path)
    assert store.load() == {}
    assert store.load_failed and len(store.load_warnings) == 1
    assert "apps start from their working trees" in store.load_warnings[0]
    aside = list(tmp_path.glob("state.json.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == DAMAGED[kind]  # nothing lost
    assert aside[0].name in store.load_warnings[0]
    assert not (tmp_path / "state.json").exists()
    store.save({"web": AppState(commit=C1)})  # and it heals
    assert StateStore(tmp_path).load() == {"web": AppState(commit=C1)}


def test_a_directory_or_fifo_where_the_file_belongs(tmp_path):
    (tmp_path / "state.json").mkdir()
    (tmp_path / "state.json" / "keep").write_text("mine")
    store = StateStore(tmp_path)
    assert store.load() == {} and "is not a regular file" in store.load_warnings[0]
    (aside,) = tmp_path.glob("state.json.corrupt-*")
    assert (aside / "keep").read_text() == "mine"
    store.save({"web": AppState(commit=C1)})
    assert store.load()["web"].commit == C1

    os.unlink(tmp_path / "state.json")
    os.mkfifo(tmp_path / "state.json")  # would block a plain open() for ever
    assert store.load() == {} and "is not a regular file" in store.load_warnings[0]


def test_status_describes_a_damaged_file_without_touching_it(tmp_path):
    for kind, data in DAMAGED.items():
        (tmp_path / "state.json").write_bytes(data)
        for args in ((), ("--json",)):
            done = status(tmp_path, *args)
            assert done.returncode == 1, (kind, done)
            assert done.stderr.startswith(f"huddle: {tmp_path / 'state.json'} "), done.stderr
            assert "Traceback" not in done.stderr and done.stdout == ""
        assert (tmp_path / "state.json").read_bytes() == data  # status changes nothing
    (tmp_path / "state.json").unlink()
    (tmp_path / "state.json").mkdir()
    done = status(tmp_path, "--json")
    assert done.returncode == 1 and "is not a regular file" in done.stderr
    assert "Traceback" not in done.stderr


def test_status_on_an_unreadable_file(tmp_path):
    path = tmp_path / "state.json"
    path.write_text(json.dumps(good_state()))
    path.chmod(0)
    done = status(tmp_path, drop_read_access=True)
    assert done.returncode == 1, done
    assert done.stderr == (
        f"huddle: {path} cannot be read (Permission denied); apps start from their working trees\n"
    )
    done = status(tmp_path)  # as root, with its full rights, it reads
    assert done.returncode == 0 and "web" in done.stdout


def test_a_loop_of_symlinks_is_unreadable_and_kept_aside(tmp_path):
    os.symlink("state.json", tmp_path / "state.json")
    store = StateStore(tmp_path)
    assert store.load() == {} and "cannot be read" in store.load_warnings[0]
    assert len(list(tmp_path.glob("state.json.corrupt-*"))) == 1


# -- wrong types, field by field ---------------------------------------------------------------


def test_wrong_types_are_dropped_field_by_field(tmp_path):
    state = good_state()
    state["web"].update(
        restarts="x",
        bad="abc",
        pid="1",
        good="not-a-commit",
        healthy="yes",
        deployed_at=float("inf") if False else "soon",
        future_field={"kept": "ignored"},
    )
    state["api"] = ["not", "an", "object"]
    state["db"] = {
        "commit": C1,
        "bad": [C2, "zz", 5],
        "restarts": -1,
        "running": 1,
        "pid": 0,
        "last_error": 42,
    }
    (tmp_path / "state.json").write_text(json.dumps(state))
    store = StateStore(tmp_path)
    apps = store.load()
    assert not store.load_failed
    assert apps == {
        "web": AppState(commit=C2, healthy=None, running=False, restarts=0),
        "db": AppState(commit=C1),
    }
    where = f"{tmp_path / 'state.json'}: app"
    assert store.load_warnings == [
        f"{where} 'web': field 'good': expected a commit id, got \"not-a-commit\"; dropped",
        f"{where} 'web': field 'bad': expected a list, got \"abc\"; dropped",
        f"{where} 'web': field 'pid': expected a process id, got \"1\"; dropped",
        f"{where} 'web': field 'restarts': expected a whole number >= 0, got \"x\"; dropped",
        f"{where} 'web': field 'healthy': expected true or false, got \"yes\"; dropped",
        f"{where} 'web': field 'last_error'"[:0]
        + f"{where} 'web': field 'deployed_at': expected a number, got \"soon\"; dropped",
        f'{where} \'api\': expected an object, got ["not", "an", "object"]; dropped '
        "(the app starts from its tree)",
        f"{where} 'db': field 'bad': holds 2 entries that are not commit ids; dropped",
        f"{where} 'db': field 'pid': expected a process id, got 0; dropped",
        f"{where} 'db': field 'restarts': expected a whole number >= 0, got -1; dropped",
        f"{where} 'db': field 'last_error': expected a string, got 42; dropped",
        f"{where} 'db': field 'running': expected true or false, got 1; dropped",
    ]
    assert (tmp_path / "state.json").exists()  # a readable file stays in place

    done = status(tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert done.stdout.splitlines()[1].split()[:3] == ["db", "stopped", C1[:12]]
    assert "huddle: warning: " in done.stderr and "'restarts'" in done.stderr
    done = status(tmp_path, "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["web"]["commit"] == C2


def test_a_readable_file_round_trips_without_warnings(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps(good_state()))
    store = StateStore(tmp_path)
    apps = store.load()
    assert store.load_warnings == [] and apps["web"].good == C1 and apps["web"].restarts == 2
    store.save(apps)
    assert StateStore(tmp_path).load() == apps


# -- a read-only or full state dir -------------------------------------------------------------


def test_a_read_only_state_dir_loads_and_save_raises(tmpfs):
    StateStore(tmpfs).save({"web": AppState(commit=C1)})
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    store = StateStore(tmpfs)
    assert store.load() == {"web": AppState(commit=C1)} and store.load_warnings == []
    with pytest.raises(StateError, match=r"state.json: cannot write: Read-only file system"):
        store.save({"web": AppState(commit=C2)})
    assert status(tmpfs).returncode == 0


def test_a_damaged_file_in_a_read_only_dir_is_reported_not_lost(tmpfs):
    (tmpfs / "state.json").write_text("{trunc")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    store = StateStore(tmpfs)
    assert store.load() == {}
    assert "cannot move it aside (Read-only file system)" in store.load_warnings[0]
    subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    store.save({"web": AppState(commit=C1)})  # writable again: the bad file goes aside first
    (aside,) = tmpfs.glob("state.json.corrupt-*")
    assert aside.read_text() == "{trunc"


def test_a_full_state_dir_raises_and_keeps_the_old_file(tmpfs):
    store = StateStore(tmpfs)
    store.save({"web": AppState(commit=C1)})
    filler = tmpfs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:
        pass  # the disk is full: that is the point
    finally:
        os.close(fd)
    big = {f"app{n}": AppState(commit=C2, last_error="x" * 1000) for n in range(200)}
    with pytest.raises(StateError, match="No space left on device"):
        store.save(big)
    assert StateStore(tmpfs).load() == {"web": AppState(commit=C1)}
    assert [p.name for p in tmpfs.iterdir() if p.name.startswith(".state.")] == []
    filler.unlink()
    store.save(big)  # heals when space is back
    assert len(StateStore(tmpfs).load()) == 200


# -- one agent per state dir --------------------------------------------------------------------

HOLD = """
import sys, time, subprocess
from huddle.state import AgentLock
AgentLock(sys.argv[1]).acquire()
child = subprocess.Popen(["sleep", "60"])   # must not inherit the lock
print(child.pid, flush=True)
time.sleep(60)
"""


def hold_lock(state_dir: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([PY, "-c", HOLD, str(state_dir)], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline())
    return proc, child


def test_the_lock_names_the_running_agent_and_dies_with_it(tmp_path):
    assert AgentLock.holder_pid(tmp_path) is None
    proc, child = hold_lock(tmp_path)
    try:
        assert AgentLock.holder_pid(tmp_path) == proc.pid
        with pytest.raises(StateError) as err:
            AgentLock(tmp_path).acquire()
        assert str(err.value) == (f"another huddle agent (pid {proc.pid}) is running on {tmp_path}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        # its child still runs, yet holds nothing: the descriptor was close-on-exec
        assert AgentLock.holder_pid(tmp_path) is None
        assert (tmp_path / "agent.lock").read_text().strip() == str(proc.pid)  # stale pid
        lock = AgentLock(tmp_path)
        lock.acquire()
        assert AgentLock.holder_pid(tmp_path) == os.getpid()
        lock.release()
    finally:
        proc.kill()
        os.kill(child, signal.SIGKILL)
        proc.wait()


def test_a_read_only_state_dir_is_locked_in_the_runtime_dir(tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    first = AgentLock(tmpfs)
    first.acquire()
    try:
        assert first.path.parent == Path("/run/huddle")
        assert AgentLock.holder_pid(tmpfs) == os.getpid()
        with pytest.raises(StateError, match="another huddle agent"):
            AgentLock(tmpfs).acquire()
    finally:
        first.release()
    assert AgentLock.holder_pid(tmpfs) is None


def test_a_second_agent_on_one_state_dir_exits_at_once(tmp_path, agent_factory):
    origin = Origin(tmp_path / "remotes", "web")
    origin.app_commit("v1")
    config = write_config(
        tmp_path / "web.json", app_config(origin.url, tmp_path / "apps" / "web", 1)
    )
    first = agent_factory().start(config)
    wait_until(
        lambda: AgentLock.holder_pid(first.state_dir) == first.proc.pid,
        20,
        "the first agent holds the lock",
    )
    second = subprocess.run(
        [PY, "-m", "huddle", "run", str(config), "--state-dir", str(first.state_dir)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert second.returncode == 1
    assert second.stderr.splitlines()[-1] == (
        f"huddle: another huddle agent (pid {first.proc.pid}) is running on {first.state_dir}"
    )
    assert first.proc.poll() is None


def test_a_damaged_state_file_does_not_stop_the_agent(tmp_path, agent_factory):
    origin = Origin(tmp_path / "remotes", "web")
    v1 = origin.app_commit("v1")
    from tests.gitutil import free_port

    port = free_port()
    config = write_config(
        tmp_path / "web.json", app_config(origin.url, tmp_path / "apps" / "web", port)
    )
    agent = agent_factory()
    agent.state_dir.mkdir(parents=True)
    (agent.state_dir / "state.json").write_bytes(b'{"web": {"commit": "12')
    agent.start(config)
    wait_until(
        lambda: list(agent.state_dir.glob("state.json.corrupt-*")),
        20,
        "the damaged file kept aside",
    )
    agent.wait_good("web", v1)
    (aside,) = agent.state_dir.glob("state.json.corrupt-*")
    assert aside.read_bytes() == b'{"web": {"commit": "12'


def test_the_agent_says_once_that_it_set_the_state_aside(tmp_path, agent_factory):
    origin = Origin(tmp_path / "remotes", "web")
    v1 = origin.app_commit("v1")
    from tests.gitutil import free_port

    config = write_config(
        tmp_path / "web.json", app_config(origin.url, tmp_path / "apps" / "web", free_port())
    )
    agent = agent_factory()
    agent.state_dir.mkdir(parents=True)
    (agent.state_dir / "state.json").write_text("garbage")
    agent.start(config)
    wait_until(lambda: list(agent.state_dir.glob("state.json.corrupt-*")), 20, "kept aside")
    agent.wait_good("web", v1)
    assert agent.output().count("apps start from their working trees") == 1
