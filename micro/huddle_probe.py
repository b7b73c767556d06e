# The configured health check (huddle_health.supervise calls it): an HTTP GET whose status
# must be accepted, or a TCP connect that sends `send` and expects `expect` in the reply.
# A module of its own so that a device without a check (health type "none") never compiles
# nor keeps it: main.py loads it at boot only when the config has a check.
from huddle_http import Response, get


async def probe(h):
    # the configured check (`h`: the health config): None when healthy, else the reason
    t = h["timeout"]
    try:
        if h["type"] == "http":
            resp = await get("http://%s:%d%s" % (h["host"], h["port"], h["path"]), t)
            resp.close()
            for lo, hi in h["status"]:
                if lo <= resp.status <= hi:
                    return None
            return "health: HTTP %d from %s" % (resp.status, h["path"])
        else:  # "socket" (the config checker allows nothing else here)
            c = Response(h["host"], h["port"], t)
            try:
                c.due(0)  # the whole exchange within the timeout, however the bytes trickle
                await c.send((h["send"] or "").encode())
                want = (h["expect"] or "").encode()
                while want not in c.pending and len(c.pending) < 1024:
                    if not await c.more():
                        break
                if want not in c.pending:
                    return "health: %r not received" % h["expect"]
            finally:
                c.close()
    except Exception as e:  # any failure of the probe is a failed check, with its reason
        return "health: %s: %s" % (type(e).__name__, e)
    return None
