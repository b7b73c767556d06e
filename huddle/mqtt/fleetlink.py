"""The agent's side of fleet coordination: triggers, shared bans and rollout waves over the
reporter's own MQTT connection (one socket per agent, no second client).

`FleetLink` subscribes to this device's trigger topics and turns each trigger into a poll
sooner for the apps it names (rate-limited per app; `poll_soon` is the agent's, and a poll
only ever moves sooner). `FleetLink.app_fleet(config)` is the agent's `fleet_for`: it gives
each app an `MqttAppFleet` (the `huddle.fleetpolicy.AppFleet` seam) subscribed to the bans
of the app's identity. Messages and topics are `huddle.mqtt.coordination`'s.

Trust: whoever may publish on the broker can trigger polls (each only sooner, within the
rate limit) and ban commits (which only keeps devices on what they run); neither can make a
device deploy anything the git branch does not hold. docs/mqtt.md gives the broker ACLs.

Two timing rules keep a restart from undoing the fleet's decisions: a new agent gives its
broker up to BAN_WAIT_S to deliver the retained bans before it deploys a new commit (never
longer: a broker that is down must not stop deploys), and the first time this device saw a
commit is kept in `STATE_DIR/fleet/<app>.json`, so a wave's delay runs from the first sight,
not from the latest restart.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from huddle.config import AppConfig
from huddle.mqtt import coordination as co
from huddle.mqtt.link import Link

log = logging.getLogger("huddle.fleet")

BAN_WAIT_S = 5.0  # longest a new commit waits to hear the fleet's retained bans
BAN_SETTLE_S = 0.3  # retained messages follow the SUBACK; give them this long
KEEP_SIGHTINGS = 16  # first-sight times kept per app (only the last heads matter)


class FleetLink:
    def __init__(
        self,
        link: Link,
        prefix: str,
        device: str,
        state_dir: Path,
        *,
        app_names: Callable[[], list[str]],
        poll_soon: Callable[[str, float], None],
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.link = link
        self.prefix = prefix
        self.device = device
        self.dir = Path(state_dir) / "fleet"
        self.app_names = app_names
        self.poll_soon = poll_soon
        self.rng = rng or random.Random()
        self.monotonic = monotonic
        self.clock = clock
        self.fleets: dict[str, MqttAppFleet] = {}
        self.trigger_at: dict[str, float] = {}  # app -> when its last triggered poll runs
        self.bad_triggers = 0
        for device_level in (device, co.ALL_DEVICES):
            link.subscribe(co.trigger_topic(prefix, device_level), self.on_trigger)
        link.add_connected_hook(self.flush)

    # -- triggers ---------------------------------------------------------------------------
    def on_trigger(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            apps, spread = co.parse_trigger(payload)
        except co.TriggerError as exc:
            self.bad_triggers += 1
            # anyone on the broker can send garbage: say it once, then only in debug
            (log.warning if self.bad_triggers == 1 else log.debug)(
                "ignoring a trigger on %s: %s", topic, exc
            )
            return
        now = self.monotonic()
        for app in self.app_names():
            if apps and app not in apps:
                continue
            last = self.trigger_at.get(app, float("-inf"))
            if last > now:
                log.debug("trigger for %s folded into the poll due in %.1f s", app, last - now)
                continue  # a triggered poll is already coming; it will see the newest head
            at = max(now + self.rng.uniform(0.0, spread), last + co.TRIGGER_MIN_INTERVAL_S)
            self.trigger_at[app] = at
            log.info("trigger on %s: %s polls in %.1f s", topic, app, at - now)
            self.poll_soon(app, at - now)

    # -- per-app fleets ---------------------------------------------------------------------
    def app_fleet(self, config: AppConfig) -> MqttAppFleet:
        """The agent's `fleet_for`: one fleet object per app config (a reload makes anew)."""
        old = self.fleets.pop(config.name, None)
        if old is not None:
            old.detach()
        fleet = self.fleets[config.name] = MqttAppFleet(self, config)
        return fleet

    def flush(self) -> None:
        for fleet in list(self.fleets.values()):
            fleet.flush()

    def first_seen(self, app: str, commit: str) -> float:
        """When this device first saw `commit` for `app` (wall clock), recorded now if new."""
        path = self.dir / f"{app}.json"
        try:
            seen = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(seen, dict):
                seen = {}
        except (OSError, ValueError):
            seen = {}  # none yet, or damaged: the wave restarts from now (only later)
        now = self.clock()
        first = seen.get(commit)
        if isinstance(first, (int, float)) and first <= now:
            return float(first)
        seen[commit] = now
        keep = sorted(
            seen.items(), key=lambda kv: kv[1] if isinstance(kv[1], (int, float)) else 0.0
        )[-KEEP_SIGHTINGS:]
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            temp = path.with_name(path.name + ".tmp")
            temp.write_text(json.dumps(dict(keep)), encoding="utf-8")
            os.replace(temp, path)
        except OSError as exc:  # a full disk costs stability across restarts, nothing else
            log.warning("%s: cannot record when %s was first seen: %s", app, commit[:12], exc)
        return now


class MqttAppFleet:
    """`huddle.fleetpolicy.AppFleet` for one app, shared over the broker."""

    def __init__(self, fleet: FleetLink, config: AppConfig) -> None:
        self.fleet = fleet
        self.config = config
        self.name = config.name
        repo = config.repository
        url = repo.remote_path or remote_url(repo.local_path, repo.remote, repo.executable)
        self.remote = co.normalize_remote(url) if url else None
        self.key = co.app_id(self.remote, repo.branch) if self.remote else None
        self.bans: dict[str, bytes] = {}  # commit -> the ban message
        self.unsent: dict[str, bytes] = {}  # commit -> ban (or b"" clear) not yet sent
        self.heard = self.key is None  # the broker's retained bans have arrived
        self.wait_until = fleet.monotonic() + BAN_WAIT_S
        self.first_call: dict[str, float] = {}  # commit -> monotonic time of the first ask
        self.waiting = False
        if self.key is None:
            log.warning("%s: no remote URL known; fleet bans are not shared for it", self.name)
            return
        self.topic_filter = co.ban_filter(fleet.prefix, self.key)
        fleet.link.subscribe(self.topic_filter, self.on_ban, self.on_subscribed)
        log.info(
            "%s: fleet identity %s#%s (bans on %s)",
            self.name,
            self.remote,
            repo.branch,
            self.topic_filter,
        )

    def detach(self) -> None:
        if self.key is not None and not any(f.key == self.key for f in self.fleet.fleets.values()):
            self.fleet.link.unsubscribe(self.topic_filter)

    # -- messages ---------------------------------------------------------------------------
    def on_subscribed(self) -> None:
        asyncio.get_running_loop().call_later(BAN_SETTLE_S, self.on_heard)

    def on_heard(self) -> None:
        if self.heard:
            return
        self.heard = True
        if self.waiting:  # a deploy waited for this: look at the branch again now
            self.waiting = False
            self.fleet.poll_soon(self.name, 0.0)

    def on_ban(self, topic: str, payload: bytes, retained: bool) -> None:
        commit = co.commit_of_ban(topic)
        if commit is None:
            return
        if payload:
            if commit not in self.bans:
                log.warning("%s: %s %s", self.name, commit[:12], co.describe_ban(payload))
            self.bans[commit] = payload
        elif self.bans.pop(commit, None) is not None:
            log.info("%s: the fleet ban of %s was lifted", self.name, commit[:12])

    def flush(self) -> None:
        for commit, payload in list(self.unsent.items()):
            if (
                self.fleet.link.publish(
                    co.ban_topic(self.fleet.prefix, self.key or "", commit),
                    payload,
                    qos=1,
                    retain=True,
                )
                is not None
            ):
                del self.unsent[commit]

    # -- AppFleet ---------------------------------------------------------------------------
    def banned(self, commit: str) -> str | None:
        payload = self.bans.get(commit)
        return None if payload is None else co.describe_ban(payload)

    def rollout_delay_s(self, commit: str) -> float:
        """The wave's delay counted from the first sight recorded on disk, and at most
        BAN_WAIT_S for a new agent to hear the bans; relative to the first time the app
        asked about `commit` in this process (which is when its machine starts counting)."""
        now = self.fleet.monotonic()
        asked = self.first_call.setdefault(commit, now)
        deploy_at = now
        delay = co.wave_delay_s(self.config, self.fleet.device, commit)
        if delay > 0:
            waited = max(0.0, self.fleet.clock() - self.fleet.first_seen(self.name, commit))
            deploy_at = now - waited + delay
        if not self.heard and self.wait_until > deploy_at:
            deploy_at = self.wait_until
            self.waiting = True
        return max(0.0, deploy_at - asked)

    def ban(self, commit: str, reason: str) -> None:
        if self.key is None:
            return
        payload = co.ban_payload(
            commit,
            self.remote or "",
            self.config.repository.branch,
            self.fleet.device,
            self.name,
            reason,
            self.fleet.clock(),
        )
        self.bans[commit] = payload
        self.unsent[commit] = payload
        self.flush()

    def clear(self, commits: tuple[str, ...]) -> None:
        if self.key is None:
            return
        lifted = [c for c in self.bans if not commits or any(c.startswith(p) for p in commits)]
        lifted += [c for c in commits if co.commit_of_ban(c) and c not in lifted]
        for commit in lifted:
            self.bans.pop(commit, None)
            self.unsent[commit] = b""
        self.flush()


def remote_url(local_path: Path, remote: str, git: str = "git") -> str | None:
    """The URL a clone's remote is configured with, or None (no clone yet, no such remote).
    Read once per app at start: a few ms of `git config`, bounded by a timeout."""
    from huddle.git import git_environment

    try:
        out = subprocess.run(
            [git, "-C", str(local_path), "config", "--get", f"remote.{remote}.url"],
            capture_output=True,
            text=True,
            timeout=5,
            env=git_environment(),
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
