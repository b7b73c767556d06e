# A minimal MQTT 3.1.1 client for the device agent: MicroPython first, CPython too.
#
# It owns one broker connection and does only what the agent needs: CONNECT (clean session,
# optional last will, user/password), PUBLISH at QoS 0 or 1, PINGREQ, DISCONNECT. It never
# subscribes, so whatever else the broker sends is read and dropped. The shape is umqtt.simple's
# (one small reused buffer, const(), `ssl` imported only when asked for, poll() is the blocking
# parser after setblocking(False)) plus what an agent that must never hang needs: every network
# step is bounded by timeout_s, a dead connection (EOF, reset, a PINGREQ left unanswered) is an
# OSError, a refusal is an MQTTError carrying the CONNACK code, and any error closes the
# connection (connect() again starts afresh). Retries and their backoff are the caller's.
# This module is the session; mqtt_wire.py is the byte level beneath it (and parses URLs).
# Memory: the agent compiles both from source once, at boot, and keeps them: every function
# object and every name costs heap for good, so methods are few and notes are comments.
import socket  # noqa: F401  (connect's socket factory: tests replace it here)
from errno import ECONNABORTED
from mqtt_wire import MQTTError, Wire, _late, const, parse_url, ticks_diff, ticks_ms  # noqa: F401

_MAX_LEN = const(268435455)  # the largest remaining length (four varint bytes)


def _b(s):
    return s.encode() if isinstance(s, str) else s


def _field(s):
    # a length-prefixed string field
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


class MQTTClient(Wire):
    _will = None
    _pid = 0

    def __init__(self, client_id, host, port=1883, user=None, password=None,
                 keepalive=60, ssl=False, timeout_s=5):
        self.client_id = _b(client_id)
        self.host = host
        self.port = port
        self.user = _b(user)
        self.password = _b(password)
        self.keepalive = keepalive
        self.ssl = ssl  # False, True (a default context) or an object with wrap_socket()
        self.timeout_s = timeout_s
        self._mv = memoryview(bytearray(64))  # every incoming header, ack and drained byte

    def set_last_will(self, topic, msg, retain=True, qos=1):
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        self._will = (_b(topic), _b(msg), 1 if retain else 0, qos)

    def connect(self):
        # CONNECT on a new socket, then wait for CONNACK; returns the session-present flag
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
            ctx = self.ssl
            if ctx:
                import ssl
                if ctx is True:
                    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
                    if hasattr(ctx, "load_default_certs"):  # CPython: the system CAs
                        ctx.load_default_certs()
                    else:  # a board has no CA store: encrypted, but the broker is
                        ctx.verify_mode = ssl.CERT_NONE  # checked only with a passed context
                self._wantread = getattr(ssl, "SSLWantReadError", ())
                try:
                    s = ctx.wrap_socket(s, server_hostname=self.host)
                except ValueError as e:  # MicroPython's way of rejecting a certificate
                    raise OSError(ECONNABORTED, "TLS handshake failed: %s" % e)
            self._io = s
            self._ctl = s if hasattr(s, "settimeout") else self._sock  # MicroPython TLS: raw
            self._rd = getattr(s, "readinto", None) or s.recv_into  # MicroPython / CPython
            self._wr = getattr(s, "write", None) or s.send
            self._ping_at = None
            ka, will, user, pw = self.keepalive, self._will, self.user, self.password
            flags = 2 | (user is not None) << 7 | (pw is not None) << 6  # 2: clean session
            if will:
                flags |= 4 | will[3] << 3 | will[2] << 5
            # protocol level 4: MQTT 3.1.1
            body = b"\0\4MQTT" + bytes((4, flags, ka >> 8, ka & 0xFF)) + _field(self.client_id)
            for f in (will[:2] if will else ()) + (user, pw):
                if f is not None:
                    body += _field(f)
            self._send(0x10, body)  # CONNECT
            t0 = ticks_ms()
            while self._recv(True) != 0x20:  # CONNACK; nothing else may come first: lenient
                _late(t0, "CONNACK", self.timeout_s)
            if self._acked & 0xFF:
                raise MQTTError(self._acked & 0xFF, "connection refused")
            return bool(self._acked & 0x100)  # session present
        except BaseException:
            self.close()
            raise

    def publish(self, topic, msg, retain=False, qos=0):
        # QoS 1 waits up to timeout_s for the PUBACK carrying this packet id
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        topic, msg = _b(topic), _b(msg)
        if len(topic) > 0xFFFF or len(topic) + len(msg) + 4 > _MAX_LEN:
            raise ValueError("MQTT message too large")
        self._ready()
        try:
            self._pid = pid = self._pid % 0xFFFF + 1
            body = _field(topic) + (bytes((pid >> 8, pid & 0xFF)) if qos else b"")
            self._send(0x30 | qos << 1 | (1 if retain else 0), body, msg)  # PUBLISH
            t0 = ticks_ms()
            while qos and (self._recv(True) != 0x40 or self._acked != pid):  # PUBACK
                _late(t0, "PUBACK", self.timeout_s)
        except BaseException:
            self.close()
            raise

    def ping(self):
        # a PINGREQ; poll() declares the connection dead if no PINGRESP follows in timeout_s
        self._ready()
        try:
            self._rw(b"\xc0\x00")  # PINGREQ
        except BaseException:
            self.close()
            raise
        if self._ping_at is None:
            self._ping_at = self._sent

    def poll(self):
        # never blocks: consumes what the broker sent, pings after half a quiet keepalive,
        # raises OSError on EOF/reset or when a PINGREQ went unanswered for timeout_s
        self._ready()
        try:
            for _ in range(16):  # bounded: a chatty broker cannot keep us here
                if self._recv(False) is None:
                    break
            if self._ping_at is not None:
                _late(self._ping_at, "PINGRESP", self.timeout_s)
        except BaseException:
            self.close()
            raise
        if self.keepalive and ticks_diff(ticks_ms(), self._sent) >= self.keepalive * 500:
            self.ping()

    def disconnect(self):
        # DISCONNECT (the broker then drops the will), then close
        self._ready()
        try:
            self._rw(b"\xe0\x00")
        finally:
            self.close()
