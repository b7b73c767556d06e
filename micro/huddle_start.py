# What the agent starts from, read once at boot: main.py compiles this module after the config
# checker, calls `boot` and forgets it. The pointer and the state on flash (their layout is
# huddle_store's), which agent modules to compile, and the TLS context of the config's `ca`.
from huddle_os import isdir, join, makedirs


def boot(b):
    # (cfg, once, config path) from huddle_config.boot -> (cfg, once, (commit, active, state),
    # names), or 2 when the `ca` is unusable; cfg["ca"] becomes the TLS context made from
    # that file (None when the config has no `ca` or uses no TLS), which every connection gets
    cfg, once, path = b
    if cfg["dir"][0] != "/":  # the app runs in its own directory (huddle_app.launch)
        import os

        cfg["dir"] = os.getcwd().rstrip("/") + "/" + cfg["dir"]
    names = modules(cfg, once)
    if cfg["ca"]:  # a config error when nothing would verify with it, or it is unusable
        try:
            if not (cfg["manifest"][:6] == "https:" or cfg["mqtt"] and cfg["mqtt"][4]):
                raise ValueError("needs an https:// manifest or an mqtts:// broker to verify")
            # (--once reports nothing over mqtts: no TLS, no context)
            cfg["ca"] = tls_context(cfg["ca"]) if "huddle_tls" in names else None
        except ValueError as e:
            print("huddle: %s: ca: %s" % (path, e))
            return 2
    if cfg["mqtt"]:
        cfg["mqtt"] = mqtt(cfg)
    return cfg, once, start(cfg["dir"]), names


def mqtt(cfg):
    # what huddle_agent.Agent.run needs to report, worked out once: (the MQTT client's
    # arguments, status topic, offline status (the last will), "connected" log line, reconnect
    # cap in seconds)
    import json

    host, port, user, password, tls = cfg["mqtt"]  # parsed by huddle_config
    k = int(cfg["heartbeat"] * 2) + 10  # keepalive
    d = cfg["device"]
    ssl = tls and (cfg["ca"] or True)  # True: huddle_tls's default context
    return (
        ("huddle-" + d, host, port, user, password, k, ssl, min(cfg["timeout"], 5)),
        "huddle/%s/status" % d,
        json.dumps({"device": d, "state": "offline"}),
        "mqtt: connected to %s:%d" % (host, port),
        max(5, k // 2),
    )  # reconnect about once per heartbeat: a late status is a stale one


def tls_context(path):
    # the CA certificate(s) of a PEM or DER file -> a TLS client context that verifies servers
    # against them (and their names: huddle_http passes server_hostname); ValueError (the
    # reason) when the file cannot be read or holds no usable certificate
    import ssl

    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ValueError("cannot read %s: %s" % (path, e))
    ders = [data]
    try:
        if b"-----BEGIN" in data:  # PEM: the base64 between each BEGIN/END CERTIFICATE pair
            from binascii import a2b_base64

            ders, b64 = [], None
            for line in data.split(b"\n"):
                line = line.strip()
                if line == b"-----BEGIN CERTIFICATE-----":
                    b64 = []
                elif line == b"-----END CERTIFICATE-----" and b64 is not None:
                    ders.append(a2b_base64(b"".join(b64)))
                    b64 = None
                elif b64 is not None:
                    b64.append(line)
        if not ders or not ders[0]:
            raise ValueError("no certificate")
        if hasattr(ssl, "create_default_context"):  # CPython
            return ssl.create_default_context(cadata=b"".join(ders))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        for der in ders:
            ctx.load_verify_locations(cadata=der)
        return ctx
    except (ValueError, OSError) as e:  # binascii, mbedtls (ValueError) or OpenSSL (SSLError)
        raise ValueError("%s: not a PEM or DER CA certificate (%s)" % (path, e))


def read_json(path):
    # the parsed file, or None when it is absent or torn (callers treat both as "no data")
    import json

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):  # absent, or not JSON: same as absent
        return None


def start(root):
    # the pointer and the state under `root`: (commit, active, state); a pointer to a missing
    # version counts as none, and so does a previous version that is gone
    makedirs(root)
    commit = active = None
    p = read_json(join(root, "huddle.json"))
    if isinstance(p, dict) and isinstance(p.get("active"), str) and isdir(join(root, p["active"])):
        commit, active = p.get("commit"), p["active"]
    state = {
        "previous": None,
        "previous_commit": None,
        "good": None,
        "bad": [],
        "suspect": None,
        "last_deploy": None,
        "branch": None,
        "seq": None,
    }
    s = read_json(join(root, "state.json"))
    if isinstance(s, dict):
        state.update(s)
    if not (state["previous"] and isdir(join(root, state["previous"]))):
        state["previous"] = state["previous_commit"] = None
    return commit, active, state


def modules(cfg, once):
    # the agent modules main.py compiles at boot and keeps: only those the config needs (TLS
    # contexts and the health probe only when it has them), each after what it imports, the
    # HTTP layer first; what only a sync needs (huddle_sync, huddle_hmac, huddle_stage) is
    # loaded for its step (huddle_os.call), and so is huddle_store (rare writes)
    tls = cfg["manifest"][:6] == "https:" or (cfg["mqtt"] and cfg["mqtt"][4] and not once)
    names = ["huddle_http"] + (["huddle_mqtt"] if cfg["mqtt"] and not once else [])
    names += ["huddle_tls"] if tls else []
    names += [] if once else ["huddle_app"]
    names += ["huddle_agent", "huddle_poll"]
    names += [] if once else ["huddle_health"]
    return names + ([] if once or cfg["health"]["type"] == "none" else ["huddle_probe"])
