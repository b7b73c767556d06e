# The byte level of the device's MQTT client (see mqtt.py): framing and bounded socket I/O,
# and broker URLs.
#
# `Wire` owns the socket (plain or TLS) and one 64-byte buffer, reused for every incoming
# packet header, ack and drained byte. `_rw` is the one loop for reads and writes: each call
# is bounded by the socket timeout and all of it by timeout_s, so a peer that trickles bytes
# cannot hold us either. The session's methods close the connection on any error, so
# connect() starts afresh. It is apart from mqtt.py (the session) because MicroPython compiles
# a module from source in one piece, needing about 150 bytes of heap per line for a moment:
# two halves peak lower than one whole. Notes are comments, not docstrings, and names are few:
# every identifier is interned for good when a module is compiled from source.
from errno import EAGAIN, ECONNREFUSED, ECONNRESET, EIO, ENOTCONN, ETIMEDOUT

try:
    from micropython import const
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    from huddle_cpy import const, ticks_diff, ticks_ms

_MAX_LEN = const(268435455)  # the largest remaining length (four varint bytes)


class MQTTError(OSError):
    # `code`: a refusal's CONNACK return code (errno ECONNREFUSED), or 0 for a broken
    # protocol (errno EIO)
    def __init__(self, code, reason):
        super().__init__(ECONNREFUSED if code else EIO, "MQTT %s (%d)" % (reason, code))
        self.code = code


def _late(t0, what, timeout_s):
    # t0 None: the socket itself timed out
    if t0 is None or ticks_diff(ticks_ms(), t0) > timeout_s * 1000:
        raise OSError(ETIMEDOUT, "MQTT %s timed out" % what)


def parse_url(url):
    # mqtt[s]://[user[:password]@]host[:port][/] -> (host, port, user, password, tls);
    # %XX escapes in the user and password; ValueError when it is not such a URL
    tls = url.startswith("mqtts://")
    if not tls and not url.startswith("mqtt://"):
        raise ValueError("not an mqtt:// or mqtts:// URL")
    rest = url[8 if tls else 7:]
    if rest.endswith("/"):
        rest = rest[:-1]
    cred = [None, None]
    at = rest.rfind("@")
    if at >= 0:
        for i, s in enumerate(rest[:at].split(":", 1)):
            s = s.split("%")
            out = bytearray(s[0].encode())
            for p in s[1:]:  # a bad escape is a ValueError from int()
                out.append(int(p[:2], 16))
                out.extend(p[2:].encode())
            cred[i] = out.decode()
        rest = rest[at + 1:]
    port = 8883 if tls else 1883
    i = rest.rfind(":")
    if i > rest.rfind("]"):  # a port, not a colon inside an [IPv6] literal
        rest, port = rest[:i], int(rest[i + 1:])
    host = rest[1:-1] if rest[:1] == "[" else rest
    if not host or not 0 < port < 65536 or [c for c in "/?#@[] " if c in host]:
        raise ValueError("bad host or port in MQTT URL")
    return host, port, cred[0], cred[1], tls


class Wire:
    _io = _sock = _ping_at = None  # _io: the socket or its TLS wrapper
    _wantread = ()  # CPython's TLS "nothing to read yet" error class, once TLS is used
    _acked = _sent = 0  # _acked: the last CONNACK/PUBACK's two bytes; _sent: ticks of a write

    def close(self):
        # close without DISCONNECT: the broker publishes the will
        io, sock, self._io, self._sock = self._io, self._sock, None, None
        for s in (io, sock):
            if s is not None:
                try:
                    s.close()
                except OSError:  # already dead; closing was all we wanted
                    pass

    def _ready(self):
        if self._io is None:
            raise OSError(ENOTCONN, "MQTT not connected")

    def _rw(self, data, n=0):
        # writes `data` (n == 0), or reads exactly n bytes into the buffer and returns the
        # first; each call is bounded by the socket timeout and all of it by timeout_s, so a
        # peer that trickles bytes cannot hold us either; EOF is a dead connection
        t0 = ticks_ms()
        mv = self._mv[:n] if n else memoryview(data)
        while len(mv):
            try:
                k = (self._rd if n else self._wr)(mv)
            except OSError as e:  # a timeout: EAGAIN on the unix port, None on CPython
                if e.errno not in (EAGAIN, None):
                    raise
                k = None
            _late(None if k is None else t0, "I/O", self.timeout_s)
            if not k:
                raise OSError(ECONNRESET, "MQTT connection closed by the broker")
            mv = mv[k:]
        if not n:
            self._sent = ticks_ms()
        return self._mv[0]

    def _send(self, first, body, payload=b""):
        # fixed header (type, remaining length) and the small body in one write, then payload
        n = len(body) + len(payload)
        h = bytearray((first,))
        while True:
            h.append(n & 0x7F | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                break
        self._rw(h + body)
        if payload:
            self._rw(payload)

    def _recv(self, wait):
        # Reads one packet and acts on it; returns its type, or None when wait is False and
        # nothing is queued. The rest of a packet that has begun is always read blocking.
        if not wait:
            self._ctl.setblocking(False)
            try:
                k = self._rd(self._mv[:1])
            except OSError as e:
                if e.errno != EAGAIN and not isinstance(e, self._wantread):
                    raise
                k = None  # nothing queued
            self._ctl.settimeout(self.timeout_s)
            if k is None:
                return None
            if not k:
                raise OSError(ECONNRESET, "MQTT connection closed by the broker")
        kind = (self._mv[0] if not wait else self._rw(0, 1)) & 0xF0
        n = shift = 0
        while True:
            k = self._rw(0, 1)
            n |= (k & 0x7F) << shift
            if k < 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError(0, "malformed remaining length")
        if kind == 0xD0:  # PINGRESP
            self._ping_at = None
        elif kind in (0x20, 0x40) and n == 2:  # CONNACK: flags, code; PUBACK: packet id
            self._acked = self._rw(0, 1) << 8 | self._rw(0, 1)
        else:
            while n:  # we never subscribed: drop whatever this is
                k = min(n, 64)
                self._rw(0, k)
                n -= k
        return kind
