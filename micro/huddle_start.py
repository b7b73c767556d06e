# What the agent starts from, read once at boot: main.py compiles this module after the config
# checker, calls `boot` and forgets it. The pointer and the state on flash (their layout is
# huddle_store's), and which agent modules to compile.
from huddle_os import join, isdir, makedirs


def boot(b):
    # (cfg, once) from huddle_config.boot -> (cfg, once, (commit, active, state), names)
    cfg, once = b
    if cfg["dir"][0] != "/":  # the app runs in its own directory (huddle_store.launch)
        import os
        cfg["dir"] = os.getcwd().rstrip("/") + "/" + cfg["dir"]
    names = modules(cfg, once)
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
    return (("huddle-" + d, host, port, user, password, k, tls, min(cfg["timeout"], 5)),
            "huddle/%s/status" % d, json.dumps({"device": d, "state": "offline"}),
            "mqtt: connected to %s:%d" % (host, port),
            max(5, k // 2))  # reconnect about once per heartbeat: a late status is a stale one


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
    if isinstance(p, dict) and isinstance(p.get("active"), str) \
            and isdir(join(root, p["active"])):
        commit, active = p.get("commit"), p["active"]
    state = {"previous": None, "previous_commit": None, "good": None, "bad": [],
             "last_deploy": None, "branch": None}
    s = read_json(join(root, "state.json"))
    if isinstance(s, dict):
        state.update(s)
    if not (state["previous"] and isdir(join(root, state["previous"]))):
        state["previous"] = state["previous_commit"] = None
    return commit, active, state


def modules(cfg, once):
    # the agent modules main.py compiles at boot: only those the config needs (TLS contexts,
    # the manifest HMAC and the health probe only when it has them; nothing is imported after boot, so no agent
    # module is looked up in the app's directory), each after what it imports, in the order
    # measured to need the smallest heap (the HTTP layer first, then sync before stage before
    # poll)
    tls = cfg["manifest"][:6] == "https:" or (cfg["mqtt"] and cfg["mqtt"][4] and not once)
    names = ["huddle_http"] + (["mqtt"] if cfg["mqtt"] and not once else [])
    names += ["huddle_tls"] if tls else []
    names += ["huddle_agent", "huddle_sync", "huddle_stage", "huddle_poll"]
    names += [] if once else ["huddle_health"]
    names += ["huddle_hmac"] if cfg["key"] else []
    return names + ([] if once or cfg["health"]["type"] == "none" else ["huddle_probe"])
