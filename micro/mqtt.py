# A minimal MQTT 3.1.1 client for the device agent: MicroPython first, CPython too.
#
# It owns one broker connection and does only what the agent needs: CONNECT (clean session,
# optional last will, user/password), PUBLISH at QoS 0 or 1, PINGREQ, DISCONNECT. It never
# subscribes, so whatever else the broker sends is read and dropped. The shape is
# umqtt.simple's (one small reused buffer, const(), `ssl` imported only when asked for, poll()
# is the blocking parser after setblocking(False)) plus what an agent that must never hang
# needs: every network step is bounded by timeout_s, a dead connection (EOF, reset, a PINGREQ
# left unanswered) is an OSError, a refusal is an MQTTError carrying the CONNACK code, and any
# error closes the connection (connect() again starts afresh). Retries and their backoff are
# the caller's. This module is the session; mqtt_wire.py is the byte level beneath it. The header is a comment, not a docstring, and so are the methods' notes: the
# agent loads this from source in a 48 KB heap, where every parsed string counts.
import socket
from errno import ECONNABORTED

from mqtt_wire import MQTTError, Wire, const, ticks_diff, ticks_ms

_CONNECT = const(0x10)
_CONNACK = const(0x20)  # _names are compile-time constants on MicroPython: not importable
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_MAX_LEN = const(268435455)  # the largest remaining length (four varint bytes)


def _unquote(s):
    # %XX escapes, as in the host's URLs; a bad escape is a ValueError from int()
    parts = s.split("%")
    out = bytearray(parts[0].encode())
    for p in parts[1:]:
        out.append(int(p[:2], 16))
        out.extend(p[2:].encode())
    return out.decode()


def parse_url(url):
    # mqtt[s]://[user[:password]@]host[:port][/] -> (host, port, user, password, tls)
    tls = url.startswith("mqtts://")
    if not tls and not url.startswith("mqtt://"):
        raise ValueError("not an mqtt:// or mqtts:// URL")
    rest = url[8 if tls else 7:]
    if rest.endswith("/"):
        rest = rest[:-1]
    user = password = None
    at = rest.rfind("@")
    if at >= 0:
        user = rest[:at].split(":", 1)
        rest = rest[at + 1:]
        if len(user) > 1:
            password = _unquote(user[1])
        user = _unquote(user[0])
    port = 8883 if tls else 1883
    i = rest.rfind(":")
    if i > rest.rfind("]"):  # a port, not a colon inside an [IPv6] literal
        rest, port = rest[:i], int(rest[i + 1:])
    host = rest[1:-1] if rest[:1] == "[" else rest
    if not host or not 0 < port < 65536 or [c for c in "/?#@[] " if c in host]:
        raise ValueError("bad host or port in MQTT URL")
    return host, port, user, password, tls


def _b(s):
    return s.encode() if isinstance(s, str) else s


class MQTTClient(Wire):
    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=60, ssl=False, timeout_s=5):
        self.client_id = _b(client_id)
        self.host = host
        self.port = port
        self.user = _b(user)
        self.password = _b(password)
        self.keepalive = keepalive
        self.ssl = ssl  # False, True (a default context) or an object with wrap_socket()
        self._will = None
        self._pid = 0
        super().__init__(timeout_s)


    def set_last_will(self, topic, msg, retain=True, qos=1):
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        self._will = (_b(topic), _b(msg), 1 if retain else 0, qos)

    def connect(self):
        # CONNECT, then wait for CONNACK; returns the session-present flag
        self.close()
        ai = socket.getaddrinfo(self.host, self.port, 0, socket.SOCK_STREAM)[0]
        s = self._sock = socket.socket(ai[0], ai[1], ai[2])
        try:
            s.settimeout(self.timeout_s)
            s.connect(ai[-1])
            try:  # TCP_NODELAY: with Nagle a payload written after its header would wait
                s.setsockopt(6, 1, 1)  # for a delayed ACK (40 ms per publish)
            except (OSError, ValueError, TypeError):  # ports without it are only slower
                pass
            if self.ssl:
                s = self._tls(s)
            self._attach(s)
            ka, will, user, pw = self.keepalive, self._will, self.user, self.password
            flags = 2 | (user is not None) << 7 | (pw is not None) << 6  # 2: clean session
            if will:
                flags |= 4 | will[3] << 3 | will[2] << 5
            fields = [(b"MQTT", 1), (bytes((4, flags, ka >> 8, ka & 0xFF)), 0),
                      (self.client_id, 1)]  # protocol level 4 is MQTT 3.1.1
            if will:
                fields += ((will[0], 1), (will[1], 1))
            for f in (user, pw):
                if f is not None:
                    fields.append((f, 1))
            self._send(_CONNECT, sum(len(f[0]) + 2 * f[1] for f in fields), fields)
            t0 = ticks_ms()
            while self._recv(True) != _CONNACK:  # nothing else may come first; be lenient
                self._late(t0, "CONNACK")
            code = self._acked & 0xFF
            if code:
                raise MQTTError(code, "connection refused: " + (
                    "bad protocol version", "client id rejected", "server unavailable",
                    "bad user name or password", "not authorized", "unknown reason"
                )[min(code, 6) - 1])
            return bool(self._acked & 0x100)  # session present
        except BaseException:
            self.close()
            raise

    def _tls(self, s):
        import ssl
        ctx = self.ssl
        if ctx is True:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            if hasattr(ctx, "load_default_certs"):  # CPython: verify with the system CAs
                ctx.load_default_certs()
            else:  # a board has no CA store: encrypted, but the broker is authenticated
                ctx.verify_mode = ssl.CERT_NONE  # only when a context with a CA is passed
        self._wantread = getattr(ssl, "SSLWantReadError", ())
        try:
            return ctx.wrap_socket(s, server_hostname=self.host)
        except ValueError as e:  # MicroPython's way of rejecting a certificate
            raise OSError(ECONNABORTED, "TLS handshake failed: %s" % e)

    def publish(self, topic, msg, retain=False, qos=0):
        # QoS 1 waits up to timeout_s for the PUBACK carrying this packet id
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        topic, msg = _b(topic), _b(msg)
        if len(topic) > 0xFFFF or len(topic) + len(msg) + 4 > _MAX_LEN:
            raise ValueError("MQTT message too large")
        self._guard(self._publish, topic, msg, 1 if retain else 0, qos)

    def _publish(self, topic, msg, retain, qos):
        self._pid = pid = self._pid % 0xFFFF + 1
        fields = [(topic, 1), (bytes((pid >> 8, pid & 0xFF)) if qos else b"", 0), (msg, 0)]
        self._send(_PUBLISH | qos << 1 | retain, len(topic) + len(msg) + 2 + 2 * qos, fields)
        t0 = ticks_ms()
        while qos and (self._recv(True) != _PUBACK or self._acked != pid):
            self._late(t0, "PUBACK")

    def ping(self):
        # a PINGREQ; poll() declares the connection dead if no PINGRESP follows in timeout_s
        self._guard(self._ping)

    def _ping(self):
        self._write(b"\xc0\x00")  # PINGREQ
        if self._ping_at is None:
            self._ping_at = self._sent

    def poll(self):
        # never blocks: consumes what the broker sent, pings after half a quiet keepalive,
        # raises OSError on EOF/reset or when a PINGREQ went unanswered for timeout_s
        self._guard(self._poll)

    def _poll(self):
        for _ in range(16):  # bounded: a chatty broker cannot keep us here
            if self._recv(False) is None:
                break
        if self._ping_at is not None:
            self._late(self._ping_at, "PINGRESP")
        if self.keepalive and ticks_diff(ticks_ms(), self._sent) >= self.keepalive * 500:
            self._ping()

    def disconnect(self):
        # DISCONNECT (the broker then drops the will), then close
        self._guard(self._write, b"\xe0\x00")
        self.close()

