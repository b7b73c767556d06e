"""The app controller's policy, driven in virtual time with a fake git, fake processes and a
fake health check: every history below is hours of agent life replayed in milliseconds."""

from __future__ import annotations

import asyncio
import copy
from itertools import pairwise

import pytest

from huddle.app import POLL_BACKOFF_CAP_S, RESTART_BACKOFF_S, AppController
from huddle.errors import GitError
from huddle.events import Retry
from huddle.state import AppState
from tests.fakes import World, controller, now, sha
from tests.virtualtime import run_virtual

C1, C2, C3 = sha(1), sha(2), sha(3)


async def live_for(c: AppController, seconds: float) -> None:
    """Run the controller for `seconds` of virtual time, then stop it as the agent does."""
    task = asyncio.ensure_future(c.run())
    await asyncio.sleep(seconds)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


def scenario(tmp_path, steps, **kw):
    """Run a controller while `steps` (list of (at_s, fn(world))) change the world."""
    world = World()
    c = controller(world, tmp_path, **kw)

    async def main():
        task = asyncio.ensure_future(c.run())
        start = now()
        for at, fn in steps:
            await asyncio.sleep(max(0.0, start + at - now()))
            fn(world)
        world.running_before_stop = len(world.running())
        world.state_before_stop = copy.deepcopy(c.state)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_virtual(main())
    assert world.running() == []  # stopping the controller stops the app
    assert c.state.state == "stopped" and c.state.healthy is None and not c.state.running
    return world, world.state_before_stop


def test_first_start_clones_runs_and_becomes_good(tmp_path):
    world, state = scenario(tmp_path, [(30, lambda w: None)])
    assert [verb for _, verb in world.calls][:1] == ["clone"]
    assert [commit for _, commit in world.starts] == [C1]
    assert state.commit == state.good == C1 and state.healthy is True
    assert state.last_error is None and state.bad == []


def test_unchanged_polls_cost_one_ls_remote_each_at_jittered_intervals(tmp_path):
    world, state = scenario(tmp_path, [(600, lambda w: None)])
    polls = [t for t, verb in world.calls if verb == "ls-remote"]
    assert "fetch" not in [verb for _, verb in world.calls]
    gaps = [b - a for a, b in pairwise(polls)]
    assert 55 <= len(polls) <= 125
    assert all(5.0 <= g <= 10.0 + 1e-6 for g in gaps)
    assert max(gaps) - min(gaps) > 1.0  # jittered, not lock-step


def test_new_commit_is_fetched_and_deployed_once(tmp_path):
    def push(w):
        w.remote = C2

    world, state = scenario(tmp_path, [(20, push), (60, lambda w: None)])
    assert [commit for _, commit in world.starts] == [C1, C2]
    assert [verb for _, verb in world.calls].count("fetch") == 1
    assert state.commit == state.good == C2
    assert world.running_before_stop == 1


def test_crash_outside_a_trial_restarts_with_capped_growing_backoff(tmp_path):
    def break_app(w):
        w.crash_after_s[C1] = 0.5
        w.running()[0].exit(1)

    world, state = scenario(tmp_path, [(30, break_app), (1800, lambda w: None)])
    starts = [t for t, _ in world.starts[1:]]
    gaps = [b - a for a, b in pairwise(starts)]
    assert state.restarts == len(starts) and 20 <= state.restarts <= 60
    assert gaps[0] < 3.0  # first retry is quick
    assert all(g <= RESTART_BACKOFF_S[1] + 1 for g in gaps)  # capped
    assert min(gaps[-5:]) >= RESTART_BACKOFF_S[1] / 2  # and really backed off
    assert state.good == C1 and state.bad == []  # a crash is not a bad deploy


def test_crashing_commit_is_rolled_back_and_never_redeployed(tmp_path):
    def push_bad(w):
        w.crash_after_s[C2] = 0.5
        w.remote = C2

    def push_good(w):
        w.remote = C3

    world, state = scenario(tmp_path, [(30, push_bad), (300, lambda w: None)])
    assert [c for _, c in world.starts] == [C1, C2, C1]
    assert state.commit == state.good == C1 and state.bad == [C2]
    assert "rolled back" in state.last_error and C2[:12] in state.last_error
    assert world.tree == C1

    world, state = scenario(tmp_path, [(30, push_bad), (120, push_good), (200, lambda w: None)])
    assert [c for _, c in world.starts] == [C1, C2, C1, C3]
    assert state.commit == state.good == C3 and state.bad == [C2]


def test_unhealthy_commit_is_rolled_back_within_its_window(tmp_path):
    def push_unhealthy(w):
        w.unhealthy.add(C2)
        w.remote = C2

    world, state = scenario(tmp_path, [(30, push_unhealthy), (120, lambda w: None)])
    assert [c for _, c in world.starts] == [C1, C2, C1]
    deployed_at = world.starts[1][0]
    rolled_back_at = world.starts[2][0]
    # grace 2 + retries 2 x interval 1 = 4 s window
    assert rolled_back_at - deployed_at <= 4.0 + 1e-6
    assert state.bad == [C2] and state.good == C1 and state.healthy is True


def test_fallback_failing_the_same_way_bans_nothing_and_the_newest_runs_after_the_fault(tmp_path):
    """A port still taken makes both the new commit and its fallback crash: the environment
    is at fault, so neither is banned; both are retried with capped backoff, never left
    stopped, and the newest runs once the fault is gone."""

    def fault(w):
        w.crash_after_s[C2] = w.crash_after_s[C1] = 0.5
        w.remote = C2

    def fault_gone(w):
        w.crash_after_s.clear()

    world, state = scenario(tmp_path, [(30, fault), (600, fault_gone), (900, lambda w: None)])
    during = [c for t, c in world.starts if t - world.starts[0][0] < 600]
    assert during[:3] == [C1, C2, C1]
    assert set(during) == {C1, C2} and len(during) >= 8  # kept trying, both of them
    gaps = [b - a for (a, _), (b, _) in pairwise(world.starts)]
    assert max(gaps) <= 60 + 2 * 5  # capped backoff (plus the fallback's own short run)
    assert state.bad == []
    assert state.commit == state.good == C2 and state.state == "running"
    assert world.running_before_stop == 1


def test_first_commit_failing_is_retried_with_backoff_and_a_fix_deploys(tmp_path):
    """No good commit yet: a failing first commit is a crash loop, never a stop and never a
    ban; a fix pushed meanwhile deploys at the next poll."""
    world = World()
    world.crash_after_s[C1] = 0.5
    c = controller(world, tmp_path)

    async def main():
        task = asyncio.ensure_future(c.run())
        await asyncio.sleep(200)
        starts = [t for t, _ in world.starts]
        assert len(starts) >= 5 and {x for _, x in world.starts} == {C1}
        gaps = [b - a for a, b in pairwise(starts)]
        assert gaps[-1] > gaps[0]  # backing off
        assert c.state.state == "crashloop" and c.state.bad == []
        world.remote = C2
        await asyncio.sleep(40)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_virtual(main())
    assert world.starts[-1][1] == C2
    assert c.state.good == C2 and c.state.bad == []


def test_first_deploy_killed_once_during_its_trial_comes_back(tmp_path):
    def oom_kill(w):
        w.running()[0].exit(-9)

    world, state = scenario(tmp_path, [(1.5, oom_kill), (60, lambda w: None)])
    assert [c for _, c in world.starts] == [C1, C1]
    assert state.good == C1 and state.state == "running" and state.bad == []


def test_a_commit_superseded_while_healthy_is_the_fallback(tmp_path):
    """v1 serves fine but its window has not ended when v2 arrives; v2 crashes: v1 is the
    fallback (it never failed), and v2 is banned once v1 runs healthily again."""

    def push_bad_early(w):
        w.crash_after_s[C2] = 0.5
        w.remote = C2

    world = World()
    c = controller(world, tmp_path, minimum=0.5, maximum=0.5, grace=30.0)

    async def main():
        task = asyncio.ensure_future(c.run())
        await asyncio.sleep(5)  # C1 healthy, still inside its 32 s window
        assert c.state.good is None and c.state.healthy is True
        push_bad_early(world)
        await asyncio.sleep(120)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return copy.deepcopy(c.state)

    state = run_virtual(main())
    assert [x for _, x in world.starts] == [C1, C2, C1]
    assert state.bad == [C2] and state.commit == C1


def test_a_failed_deploy_keeps_the_app_and_a_newer_commit_is_tried_at_the_next_poll(tmp_path):
    def broken_fetch(w):
        w.fetch_error[C2] = GitError(["pip"], "(install) exited with status 1")
        w.remote = C2

    def push_fix(w):
        w.remote = C3

    world, state = scenario(tmp_path, [(30, broken_fetch), (45, push_fix), (70, lambda w: None)])
    tries = [t for t, v in world.calls if v == "fetch"]
    assert [c for _, c in world.starts] == [C1, C3]
    fixed_at = next(t for t, c in world.starts if c == C3) - world.starts[0][0]
    assert fixed_at <= 45 + 10 + 1  # within one poll interval of the push, no backoff wait
    assert len(tries) >= 2  # C2 was retried, with backoff
    assert state.commit == state.good == C3 and state.bad == []


def test_retry_clears_a_ban_and_the_commit_deploys_again(tmp_path):
    world = World()
    c = controller(world, tmp_path)

    async def main():
        task = asyncio.ensure_future(c.run())
        await asyncio.sleep(30)
        world.crash_after_s[C2] = 0.5
        world.remote = C2
        await asyncio.sleep(60)
        assert c.state.bad == [C2]
        world.crash_after_s.clear()
        c.post(Retry((C2[:12],)))
        await asyncio.sleep(30)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run_virtual(main())
    assert [x for _, x in world.starts] == [C1, C2, C1, C2]
    assert c.state.bad == [] and c.state.good == C2


def test_dead_remote_backs_off_keeps_app_running_and_recovers(tmp_path):
    def kill_remote(w):
        w.remote_error = GitError(
            ["git", "ls-remote"],
            "exited with status 128",
            "fatal: unable to access: Connection refused",
        )

    def heal_remote(w):
        w.remote_error = None
        w.remote = C2

    world, state = scenario(
        tmp_path,
        [(30, kill_remote), (3000, heal_remote), (3000 + POLL_BACKOFF_CAP_S + 30, lambda w: None)],
    )
    failing = [t for t, v in world.calls if v == "ls-remote" and 30 < t - world.calls[0][0] < 3000]
    gaps = [b - a for a, b in pairwise(failing)]
    assert max(gaps) <= POLL_BACKOFF_CAP_S + 1e-6 and max(gaps) >= POLL_BACKOFF_CAP_S / 2
    assert len(failing) < 30  # not every 5-10 s for 50 minutes
    assert [c for _, c in world.starts] == [C1, C2]  # no restart while the remote was down
    assert state.commit == C2 and state.last_error is None


def test_failing_checks_outside_a_trial_restart_after_retries(tmp_path):
    def sicken(w):
        w.unhealthy.add(C1)

    def heal(w):
        w.unhealthy.discard(C1)

    world, state = scenario(tmp_path, [(30, sicken), (40, heal), (100, lambda w: None)])
    assert len(world.starts) >= 2 and all(c == C1 for _, c in world.starts)
    assert state.restarts >= 1 and state.healthy is True and state.bad == []


def test_a_slow_remote_never_delays_another_apps_polls(tmp_path):
    slow, fast = World(), World()
    slow.remote_delay_s = 10_000.0
    a = controller(slow, tmp_path / "a")
    b = controller(fast, tmp_path / "b")

    async def main():
        tasks = [asyncio.ensure_future(a.run()), asyncio.ensure_future(b.run())]
        await asyncio.sleep(100)
        fast.remote = C2
        await asyncio.sleep(30)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    run_virtual(main())
    assert [c for _, c in fast.starts] == [C1, C2]
    assert len([v for _, v in fast.calls if v == "ls-remote"]) >= 12


@pytest.mark.parametrize("health", ["none", "http"])
def test_app_without_health_check_is_judged_by_staying_alive(tmp_path, health):
    world, state = scenario(tmp_path, [(1.0, lambda w: None)], health=health)
    assert state.good is None  # still on trial after one second
    world, state = scenario(tmp_path, [(30, lambda w: None)], health=health)
    assert state.good == C1 and state.healthy is True


def test_a_restarted_fleet_starts_apps_at_once_but_spreads_its_first_polls(tmp_path):
    """After a power cut every device boots together: each app starts from its tree at
    once, and the first look at the remote is spread over the whole poll interval."""
    import random

    worlds, controllers = [], []
    for n in range(50):
        w = World()
        w.cloned, w.tree = True, C1
        w.local.add(C1)
        worlds.append(w)
        controllers.append(controller(w, tmp_path / str(n), AppState(commit=C1, good=C1)))
        controllers[-1].rng = random.Random(n)

    async def main():
        t0 = now()
        tasks = [asyncio.ensure_future(c.run()) for c in controllers]
        await asyncio.sleep(30)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return t0

    t0 = run_virtual(main())
    assert all(w.starts and w.starts[0][0] - t0 < 0.01 for w in worlds)
    first_polls = sorted(next(t for t, v in w.calls if v == "ls-remote") - t0 for w in worlds)
    assert first_polls[-1] <= 10.0 + 1e-6  # within one maximum interval
    busiest = max(sum(1 for t in first_polls if s <= t < s + 1) for s in range(10))
    assert busiest <= 15  # not all 50 in one second
