"""The app state machine under random histories, in virtual time.

A seeded random walk throws every kind of event at one app (pushes of good and bad commits,
crashes, checks turning bad, an environment fault that breaks every commit, a dead remote, a
failing fetch, retries) and checks after every step what must always hold: at most one
process runs, the machine's state agrees with the process, and the app is never `stopped`
while the agent runs. At the end every fault is cleared and a good commit pushed: the app
must then run healthily on it, whatever came before.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from huddle.errors import GitError
from huddle.events import Retry
from huddle.states import TRANSITIONS, UP, State, allowed
from tests.fakes import World, controller, now, sha
from tests.virtualtime import run_virtual


def check_invariants(world: World, c, task) -> None:
    assert not task.done(), f"the machine ended: {task.exception() if task.done() else ''}"
    running = world.running()
    assert len(running) <= 1, "two processes of one app"
    assert c.current is not State.STOPPED, "stopped while the agent runs"
    if c.current in UP:
        assert running and c.proc is running[0], f"{c.current} without its process"
    elif c.current is not State.SYNCING or c.proc is None:
        assert not running, f"a process runs in {c.current}"


def random_walk(tmp_path, seed: int, steps: int = 120) -> None:
    rng = random.Random(seed)
    world = World()
    c = controller(world, tmp_path)
    c.rng = random.Random(seed)
    commits = iter(range(2, 10_000))
    env_fault = False

    def push(bad: str | None) -> None:
        commit = sha(next(commits))
        if bad == "crash":
            world.crash_after_s[commit] = rng.uniform(0.1, 5)
        elif bad == "unhealthy":
            world.unhealthy.add(commit)
        world.remote = commit

    async def main() -> None:
        nonlocal env_fault
        task = asyncio.ensure_future(c.run())
        for _ in range(steps):
            await asyncio.sleep(rng.uniform(0.2, 30))
            check_invariants(world, c, task)
            roll = rng.random()
            if roll < 0.25:
                push(rng.choice([None, None, "crash", "unhealthy"]))
            elif roll < 0.35:
                env_fault = not env_fault
                for commit in {world.remote, *(x for _, x in world.starts)}:
                    if env_fault:
                        world.crash_after_s.setdefault(commit, 0.3)
            elif roll < 0.5 and world.running():
                world.running()[0].exit(rng.choice([1, -9, 0]))
            elif roll < 0.6:
                world.remote_error = (
                    None
                    if world.remote_error
                    else GitError(
                        ["git", "ls-remote"], "exited with status 128", "Connection refused"
                    )
                )
            elif roll < 0.65:
                world.fetch_error[world.remote] = GitError(["git", "fetch"], "timed out")
            elif roll < 0.7:
                c.post(Retry(()))
            elif roll < 0.8:
                live = world.running()
                if live:
                    world.unhealthy.add(live[0].commit)
        # every fault clears and a good commit is pushed: it must end up running healthily
        world.remote_error = None
        world.fetch_error.clear()
        world.crash_after_s.clear()
        world.unhealthy.clear()
        # first without a push: whatever it was doing, the app comes back on its own
        for _ in range(20):
            await asyncio.sleep(30)
            check_invariants(world, c, task)
        assert c.current in UP and c.state.healthy is True, c.state
        push(None)
        good = world.remote
        for _ in range(40):
            await asyncio.sleep(30)
            check_invariants(world, c, task)
        assert c.state.commit == c.state.good == good, c.state
        assert c.current is State.RUNNING and c.state.healthy is True
        assert len(world.running()) == 1
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_virtual(main())
    assert world.running() == [] and c.current is State.STOPPED


@pytest.mark.parametrize("seed", range(60))
def test_no_history_leaves_the_app_down_or_doubled(tmp_path, seed):
    random_walk(tmp_path, seed)


def test_every_state_can_be_left_and_stopped_is_left_only_by_starting():
    for state in State:
        assert allowed(state, State.STOPPED)
        assert TRANSITIONS[state] or state is State.STOPPED
    assert TRANSITIONS[State.STOPPED] == {State.SYNCING}
    assert not allowed(State.RUNNING, State.CRASHLOOP)  # a good commit backs off instead


def test_the_states_are_the_documented_names():
    assert [s.value for s in State] == [
        "stopped",
        "syncing",
        "trial",
        "running",
        "backoff",
        "crashloop",
        "sync-only",
    ]


def test_an_illegal_move_is_a_loud_error(tmp_path):
    c = controller(World(), tmp_path)

    async def main():
        c.current = State.SYNC_ONLY
        with pytest.raises(RuntimeError, match="not a transition"):
            c.enter(State.TRIAL, "a bug")

    run_virtual(main())
    assert now is not None
