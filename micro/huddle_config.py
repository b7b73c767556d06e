# The device config: one JSON file, checked completely before the agent does anything.
#
# Every problem is reported at once, one line per key (`FILE: key: reason`), like the host's
# `huddle check`; unknown keys are errors so a typo never passes silently. The result is a plain
# dict with defaults filled in and durations in seconds (floats), which costs less RAM on a
# board than a class per section. Keys: device, manifest, dir, minimum, maximum, main, and
# optional mqtt, key, health (as in the host's app config), timeout (network steps, seconds),
# heartbeat (MQTT status interval, seconds), debug (sample heap use), ca (a PEM or DER file of
# the CA certificates TLS trusts), branch (the only branch whose manifests are installed),
# sync_deadline (seconds a whole sync may take). The `mqtt` URL is parsed here, once (this
# module is dropped after boot), into (host, port, user, password, tls); huddle_start reads
# the `ca` file.

REQUIRED = ("device", "manifest", "dir", "minimum", "maximum", "main")
OPTIONAL = {
    "mqtt": None,
    "key": None,
    "health": None,
    "timeout": 10.0,
    "heartbeat": 60.0,
    "debug": False,
    "ca": None,
    "branch": None,
    "sync_deadline": 600.0,
}
HEALTH = {
    "type": "none",
    "host": "127.0.0.1",
    "port": None,
    "path": "/",
    "status": "200-399",
    "send": None,
    "expect": None,
    "interval": 10.0,
    "timeout": 3.0,
    "retries": 3,
    "grace": 10.0,
}


class ConfigError(Exception):
    pass


def _number(v):
    return (isinstance(v, int) or isinstance(v, float)) and not isinstance(v, bool)


def _name_ok(s):
    return s and all(c.isalpha() or c.isdigit() or c == "_" for c in s) and not s[0].isdigit()


def parse_status(spec):
    # '200', '200-399', '200,204' or an int -> list of (low, high); ValueError when bad
    if isinstance(spec, int) and not isinstance(spec, bool):
        spec = str(spec)
    if not isinstance(spec, str):
        raise ValueError("expected a status like 200 or 200-399")
    out = []
    for part in spec.split(","):
        lo, _, hi = part.strip().partition("-")
        lo, hi = int(lo), int(hi or lo)
        if not 100 <= lo <= hi <= 599:
            raise ValueError("status codes must be 100..599, low first")
        out.append((lo, hi))
    return out


def parse_url(url):
    # mqtt[s]://[user[:password]@]host[:port][/] -> (host, port, user, password, tls);
    # %XX escapes in the user and password; ValueError when it is not such a URL
    tls = url.startswith("mqtts://")
    if not tls and not url.startswith("mqtt://"):
        raise ValueError("another scheme")
    rest = url[8 if tls else 7 :]
    if rest.endswith("/"):
        rest = rest[:-1]
    cred = [None, None]
    at = rest.rfind("@")
    if at >= 0:
        for i, s in enumerate(rest[:at].split(":", 1)):
            s = s.split("%")
            out = bytearray(s[0].encode())
            for p in s[1:]:
                try:
                    out.append(int(p[:2], 16))
                except ValueError:  # int()'s own message would show part of a secret
                    raise ValueError("bad %-escape in the user or password")
                out.extend(p[2:].encode())
            try:
                cred[i] = out.decode()
            except ValueError:  # (UnicodeError) its message would show bytes of a secret
                raise ValueError("user or password is not UTF-8")
        rest = rest[at + 1 :]
    port = 8883 if tls else 1883
    i = rest.rfind(":")
    if i > rest.rfind("]"):  # a port, not a colon inside an [IPv6] literal
        rest, port = rest[:i], rest[i + 1 :]
        port = int(port) if port.isdigit() else 0
    host = rest[1:-1] if rest[:1] == "[" else rest
    if not host or not 0 < port < 65536 or [c for c in "/?#@[] " if c in host]:
        raise ValueError("bad host or port")
    return host, port, cred[0], cred[1], tls


def _check_health(h, bad):
    if not isinstance(h, dict):
        bad.append(("health", "expected an object"))
        return None
    out = dict(HEALTH)
    for k in h:
        kk = k.replace(" ", "_")
        if kk not in HEALTH:
            bad.append(("health." + k, "unknown key"))
        else:
            out[kk] = h[k]
    if out["type"] not in ("http", "socket", "none"):
        bad.append(("health.type", "must be http, socket or none"))
    if out["type"] != "none":
        p = out["port"]
        if not isinstance(p, int) or isinstance(p, bool) or not 0 < p < 65536:
            bad.append(("health.port", "required for http/socket: an integer 1..65535"))
    for k in ("interval", "timeout"):
        if not _number(out[k]) or out[k] <= 0:
            bad.append(("health." + k, "must be a number > 0"))
    if not _number(out["grace"]) or out["grace"] < 0:
        bad.append(("health.grace", "must be a number >= 0"))
    if (
        not isinstance(out["retries"], int)
        or isinstance(out["retries"], bool)
        or out["retries"] < 1
    ):
        bad.append(("health.retries", "must be an integer >= 1"))
    for k in ("host", "path"):
        if not isinstance(out[k], str) or not out[k]:
            bad.append(("health." + k, "must be a non-empty string"))
    for k in ("send", "expect"):
        if out[k] is not None and not isinstance(out[k], str):
            bad.append(("health." + k, "must be a string"))
    try:
        out["status"] = parse_status(out["status"])
    except ValueError as e:
        bad.append(("health.status", str(e) or "expected a status like 200 or 200-399"))
    return out


def check(raw):
    # validated config dict, or ConfigError listing every problem as `key: reason`
    bad = []
    if not isinstance(raw, dict):
        raise ConfigError("-: expected a JSON object")
    cfg = dict(OPTIONAL)
    for k in raw:
        if k not in REQUIRED and k not in OPTIONAL:
            bad.append((k, "unknown key"))
        else:
            cfg[k] = raw[k]
    for k in REQUIRED:
        if k not in raw:
            bad.append((k, "required"))
    for k in ("device", "dir", "main"):
        if k in raw and (not isinstance(raw[k], str) or not raw[k]):
            bad.append((k, "must be a non-empty string"))
    d = cfg.get("device")
    if isinstance(d, str) and any(c in d for c in "/+#\0"):
        bad.append(("device", "must not contain / + # (it is an MQTT topic level)"))
    m = cfg.get("main")
    if isinstance(m, str) and m and not _name_ok(m):
        bad.append(("main", "must be a module name (letters, digits, _)"))
    u = cfg.get("manifest")
    if "manifest" in raw and (
        not isinstance(u, str) or not (u.startswith("http://") or u.startswith("https://"))
    ):
        bad.append(("manifest", "must be an http:// or https:// URL"))
    u = cfg["mqtt"]
    if u is not None:
        try:
            cfg["mqtt"] = parse_url(u)
        except (ValueError, AttributeError) as e:  # AttributeError: not a string
            bad.append(
                (
                    "mqtt",
                    "must be an mqtt:// or mqtts:// URL (%s)"
                    % (e if isinstance(u, str) else "not a string"),
                )
            )
    for k in ("key", "ca", "branch"):  # ca: a file's path, which huddle_start reads
        if cfg[k] is not None and (not isinstance(cfg[k], str) or not cfg[k]):
            bad.append((k, "must be a non-empty string"))
    for k in ("minimum", "maximum", "timeout", "heartbeat", "sync_deadline"):
        if k in cfg and (not _number(cfg[k]) or cfg[k] <= 0):
            bad.append((k, "must be a number > 0"))
    if not bad and cfg["minimum"] > cfg["maximum"]:
        bad.append(("minimum", "must not exceed maximum"))
    if not isinstance(cfg["debug"], bool):
        bad.append(("debug", "must be true or false"))
    cfg["health"] = _check_health(cfg["health"] if cfg["health"] is not None else {}, bad)
    if bad:
        raise ConfigError("\n".join(k + ": " + r for k, r in bad))
    cfg["dir"] = cfg["dir"].rstrip("/") or "/"
    return cfg


def boot(argv):
    # main.py's first step (here because this module is dropped after boot): the options and the
    # config -> (cfg, once, its path), or 2 after printing every problem
    for a in argv:
        if a[:2] == "--" and a != "--once":
            print("huddle: unknown option " + a)
            return 2
    args = [a for a in argv if a[:2] != "--"]
    path = args[0] if args else "device.json"
    try:
        cfg = load(path)
    except ConfigError as e:
        for line in str(e).split("\n"):
            print("huddle: " + line)
        return 2
    return cfg, "--once" in argv, path


def load(path):
    import json

    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise ConfigError(path + ": cannot read: " + str(e))
    except ValueError as e:
        raise ConfigError(path + ": not valid JSON: " + str(e))
    try:
        return check(raw)
    except ConfigError as e:
        raise ConfigError("\n".join(path + ": " + line for line in str(e).split("\n")))
