"""The fleet's shared words over MQTT: topics, payloads, an app's identity and rollout waves.

Pure and paho-free, so `huddle trigger`, `huddle retry --mqtt` and the agent
(`huddle.mqtt.fleetlink`) build and read exactly the same messages (docs/mqtt.md):

- `<prefix>/<device>/trigger` and `<prefix>/all/trigger`, not retained:
  `{"apps": [NAME, ...], "spread": S}` asks agents to poll within S seconds (no `apps`: all).
- `<prefix>/ban/<app-id>/<commit>`, retained: `{"commit", "remote", "branch", "device",
  "app", "reason", "ts"}`; an empty retained message lifts the ban.

An app's identity across the fleet is its normalized remote and branch, never the device's
file name: the same repo cloned over https on one device and ssh on another is one app, and
credentials in a URL never reach the broker. `<app-id>` is a hash of it, since URLs hold
characters (`/`, `+`, `#`) a topic level cannot. A rollout delay is `wait + h × spread`
with `h` in [0, 1) hashed from (device, commit): stable across restarts and evenly spread,
a different order for every commit so no device is always last; canaries wait 0.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from huddle.config import AppConfig

ALL_DEVICES = "all"  # `<prefix>/all/trigger` reaches every agent
DEFAULT_SPREAD_S = 5.0  # `huddle trigger` without --spread
MAX_SPREAD_S = 3600.0  # a larger spread in a trigger is cut to this
TRIGGER_MIN_INTERVAL_S = 10.0  # at most one triggered poll per app per this many seconds
CANARY_MARGIN_S = 30.0  # default wait: time for the canaries' ban to spread

_SCP = re.compile(r"^(?:[^@/]+@)?([^:/]+):(?!//)(.*)$")  # git@host:path (scp-like)
_COMMIT = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "git": 9418}


class TriggerError(ValueError):
    """A trigger message that is not `{"apps": [...], "spread": S}`."""


# -- identity ------------------------------------------------------------------------------


def normalize_remote(url: str) -> str:
    """`https://user:pw@Git.Example.com/team/web.git/` -> `git.example.com/team/web`.

    Scheme, credentials, a default port, a trailing `.git` and slashes are dropped and the
    host lowercased; scp-like `git@host:team/web.git` gives the same. A local path stays an
    absolute path (`/srv/git/web`)."""
    text = url.strip()
    if "://" in text:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is not None and port != _DEFAULT_PORTS.get(parts.scheme.lower()):
            host = f"{host}:{port}"
        path = parts.path
    else:
        m = _SCP.match(text)
        if m and "/" not in m.group(1):
            host, path = m.group(1).lower(), "/" + m.group(2)
        else:
            host, path = "", text
    path = re.sub(r"/+", "/", path).rstrip("/")
    if path.endswith(".git"):
        path = path[:-4].rstrip("/")
    return f"{host}{path}" if host else path


def app_id(remote: str, branch: str) -> str:
    """The topic level naming one app across the fleet (normalized remote + branch)."""
    return hashlib.sha256(f"{remote}\n{branch}".encode()).hexdigest()[:16]


# -- topics and payloads ---------------------------------------------------------------------


def trigger_topic(prefix: str, device: str = ALL_DEVICES) -> str:
    return f"{prefix}/{device}/trigger"


def trigger_payload(apps: Sequence[str] = (), spread_s: float = DEFAULT_SPREAD_S) -> bytes:
    body: dict = {"spread": spread_s}
    if apps:
        body["apps"] = list(apps)
    return json.dumps(body, separators=(",", ":")).encode("utf-8")


def parse_trigger(payload: bytes) -> tuple[tuple[str, ...], float]:
    """(apps, spread) from a trigger; no apps means every app. An empty payload is a
    trigger of every app with the default spread (the board agent's contract)."""
    if not payload.strip():
        return (), DEFAULT_SPREAD_S
    try:
        body = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise TriggerError(f"not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise TriggerError("not a JSON object")
    apps = body.get("apps", [])
    if isinstance(apps, str):
        apps = [apps]
    if not isinstance(apps, list) or not all(isinstance(a, str) for a in apps):
        raise TriggerError("apps must be a list of app names")
    spread = body.get("spread", DEFAULT_SPREAD_S)
    if (
        isinstance(spread, bool)
        or not isinstance(spread, (int, float))
        or not spread >= 0
        or spread == float("inf")
    ):
        raise TriggerError("spread must be a number of seconds, at least 0")
    return tuple(apps), min(float(spread), MAX_SPREAD_S)


def ban_filter(prefix: str, key: str) -> str:
    return f"{prefix}/ban/{key}/+"


def ban_topic(prefix: str, key: str, commit: str) -> str:
    return f"{prefix}/ban/{key}/{commit}"


def commit_of_ban(topic: str) -> str | None:
    commit = topic.rsplit("/", 1)[-1]
    return commit if _COMMIT.match(commit) else None


def ban_payload(
    commit: str, remote: str, branch: str, device: str, app: str, reason: str, ts: float
) -> bytes:
    return json.dumps(
        {
            "commit": commit,
            "remote": remote,
            "branch": branch,
            "device": device,
            "app": app,
            "reason": reason[:500],
            "ts": round(ts, 3),
        },
        separators=(",", ":"),
    ).encode("utf-8")


def describe_ban(payload: bytes) -> str:
    """`banned by the fleet: pi-17 rolled it back (reason)` from a ban message."""
    try:
        body = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        return "banned by the fleet"
    device = str(body.get("device") or "another device")[:64]
    reason = str(body.get("reason") or "").strip()[:200]
    return f"banned by the fleet: {device} rolled it back" + (f" ({reason})" if reason else "")


# -- rollout waves -------------------------------------------------------------------------


def wave_fraction(device: str, commit: str) -> float:
    """A number in [0, 1), uniform over devices, fixed for a (device, commit) pair."""
    digest = hashlib.sha256(f"{device}\n{commit}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def is_canary(device: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(device, p) for p in patterns)


def wave_delay_s(config: AppConfig, device: str, commit: str) -> float:
    """Seconds after first seeing `commit` that this device deploys it."""
    rollout = config.rollout
    if is_canary(device, rollout.canary):
        return 0.0
    wait = rollout.wait_s
    if wait is None:
        wait = default_wait_s(config) if rollout.canary else 0.0
    return wait + wave_fraction(device, commit) * rollout.spread_s


def default_wait_s(config: AppConfig) -> float:
    """How long non-canaries give the canaries: one poll to see the commit, a trial that
    fails, the fallback's trial that must pass before a ban is published, and a margin."""
    h = config.health
    window = h.grace_s + h.retries * h.interval_s  # the trial, as huddle/app.py sets it
    return config.timing.maximum_s + 2 * window + CANARY_MARGIN_S
