# Opening an MQTT session: the socket (plain or TLS), CONNECT and CONNACK.
#
# Part of the device's MQTT client (mqtt.py is the session, mqtt_wire.py the byte level),
# apart because a device opens a session once, and again only after it lost the broker: the
# client compiles this module for the moment and forgets it afterwards, so the resident
# client stays small. The socket is bounded by timeout_s from its first byte; a refusal is an
# MQTTError carrying the CONNACK code; any error leaves the client closed.
from mqtt_wire import MQTTError, _late, ticks_ms


def connect(c):
    # CONNECT on a new socket, then wait for CONNACK; returns the session-present flag
    from mqtt import _field, socket
    c.close()
    ai = socket.getaddrinfo(c.host, c.port, 0, socket.SOCK_STREAM)[0]
    s = c._sock = socket.socket(ai[0], ai[1], ai[2])
    try:
        s.settimeout(c.timeout_s)
        s.connect(ai[-1])
        try:  # TCP_NODELAY: with Nagle a payload written after its header would wait
            s.setsockopt(6, 1, 1)  # for a delayed ACK (40 ms per publish)
        except (OSError, ValueError, TypeError):  # ports without it are only slower
            pass
        if c.ssl:
            s = _tls(c, s)
        c._attach(s)
        ka, will, user, pw = c.keepalive, c._will, c.user, c.password
        flags = 2 | (user is not None) << 7 | (pw is not None) << 6  # 2: clean session
        if will:
            flags |= 4 | will[3] << 3 | will[2] << 5
        body = b"\0\4MQTT" + bytes((4, flags, ka >> 8, ka & 0xFF)) + _field(c.client_id)
        for f in will[:2] if will else ():  # protocol level 4 above is MQTT 3.1.1
            body += _field(f)
        for f in (user, pw):
            if f is not None:
                body += _field(f)
        c._send(0x10, body)  # CONNECT
        t0 = ticks_ms()
        while c._recv(True) != 0x20:  # CONNACK; nothing else may come first: lenient
            _late(t0, "CONNACK", c.timeout_s)
        code = c._acked & 0xFF
        if code:
            raise MQTTError(code, "connection refused: " + (
                "bad protocol version", "client id rejected", "server unavailable",
                "bad user name or password", "not authorized", "unknown reason"
            )[min(code, 6) - 1])
        return bool(c._acked & 0x100)  # session present
    except BaseException:
        c.close()
        raise


def _tls(c, s):
    import ssl
    from errno import ECONNABORTED
    ctx = c.ssl
    if ctx is True:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if hasattr(ctx, "load_default_certs"):  # CPython: verify with the system CAs
            ctx.load_default_certs()
        else:  # a board has no CA store: encrypted, but the broker is authenticated
            ctx.verify_mode = ssl.CERT_NONE  # only when a context with a CA is passed
    c._wantread = getattr(ssl, "SSLWantReadError", ())
    try:
        return ctx.wrap_socket(s, server_hostname=c.host)
    except ValueError as e:  # MicroPython's way of rejecting a certificate
        raise OSError(ECONNABORTED, "TLS handshake failed: %s" % e)
