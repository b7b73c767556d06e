# MQTT broker URLs: mqtt[s]://[user[:password]@]host[:port][/].
#
# Part of the device's MQTT client (see mqtt.py), apart because the agent needs it once, at
# start: mqtt.parse_url compiles this for the moment and forgets it afterwards.


def url(text):
    # -> (host, port, user, password, tls); ValueError when it is not such a URL
    tls = text.startswith("mqtts://")
    if not tls and not text.startswith("mqtt://"):
        raise ValueError("not an mqtt:// or mqtts:// URL")
    rest = text[8 if tls else 7:]
    if rest.endswith("/"):
        rest = rest[:-1]
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        user = [_unquote(s) for s in rest[:at].split(":", 1)]
        rest = rest[at + 1:]
        user, password = user[0], (user[1] if len(user) > 1 else None)
    port = 8883 if tls else 1883
    i = rest.rfind(":")
    if i > rest.rfind("]"):  # a port, not a colon inside an [IPv6] literal
        rest, port = rest[:i], int(rest[i + 1:])
    host = rest[1:-1] if rest[:1] == "[" else rest
    if not host or not 0 < port < 65536 or [c for c in "/?#@[] " if c in host]:
        raise ValueError("bad host or port in MQTT URL")
    return host, port, user, password, tls


def _unquote(s):
    # %XX escapes, as in the host's URLs; a bad escape is a ValueError from int()
    parts = s.split("%")
    out = bytearray(parts[0].encode())
    for p in parts[1:]:
        out.append(int(p[:2], 16))
        out.extend(p[2:].encode())
    return out.decode()
