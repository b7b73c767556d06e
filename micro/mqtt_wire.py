# The byte level of the device's MQTT client (see mqtt.py): framing, bounded reads and writes.
#
# `Wire` owns the socket (plain or TLS) and one small buffer, reused for every fixed header, for
# short fields (coalesced so a packet goes out in one write, plus its payload) and for draining
# packets we do not want. Every read and write is bounded by the socket timeout and by an
# overall deadline of timeout_s, so a peer that trickles bytes cannot hold us either. It lives
# apart from mqtt.py (the session: CONNECT, PUBLISH, keepalive) because MicroPython compiles a
# module from source in one piece: two halves peak at about half the heap of one whole.
from errno import EAGAIN, ECONNREFUSED, ECONNRESET, EIO, ENOTCONN, ETIMEDOUT

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x
try:
    from time import ticks_diff, ticks_ms
except ImportError:  # CPython
    from time import monotonic

    def ticks_ms():
        return int(monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

_CONNACK = const(0x20)
_PUBACK = const(0x40)
_PINGRESP = const(0xD0)
_BUF = const(64)  # small fields are coalesced here: one write per packet, plus the payload


class MQTTError(OSError):
    # `code`: a refusal's CONNACK return code (errno ECONNREFUSED), or 0 for a broken
    # protocol (errno EIO)
    def __init__(self, code, reason):
        super().__init__(ECONNREFUSED if code else EIO, "MQTT %s (%d)" % (reason, code))
        self.code = code


class Wire:
    _io = _sock = _ping_at = None
    _wantread = ()  # CPython's TLS "nothing to read yet" error class, once TLS is used

    def __init__(self, timeout_s):
        self.timeout_s = timeout_s
        self._buf = bytearray(_BUF)
        self._mv = memoryview(self._buf)
        self._acked = self._sent = 0  # _sent: ticks of the last write

    def _attach(self, s):
        # s: the connected socket, or its TLS wrapper (then self._sock is the raw one)
        self._io = s
        self._ctl = s if hasattr(s, "settimeout") else self._sock  # MicroPython TLS: raw
        self._rd = getattr(s, "readinto", None) or s.recv_into  # MicroPython / CPython
        self._wr = getattr(s, "write", None) or s.send
        self._ping_at = None

    def _late(self, t0, what):
        # t0 None: the socket itself timed out
        if t0 is None or ticks_diff(ticks_ms(), t0) > self.timeout_s * 1000:
            raise OSError(ETIMEDOUT, "MQTT %s timed out" % what)

    def _write(self, data):
        t0 = ticks_ms()
        mv = memoryview(data)
        while len(mv):
            try:
                n = self._wr(mv)
            except OSError as e:
                if e.errno is not None:  # None: CPython's socket.timeout
                    raise
                n = None
            self._late(t0 if n else None, "send")
            mv = mv[n:]
        self._sent = ticks_ms()

    def _fill(self, mv):
        # read exactly len(mv) bytes, each read bounded by the socket timeout, all by timeout_s
        t0 = ticks_ms()
        while len(mv):
            try:
                n = self._rd(mv)
            except OSError as e:  # a timeout: EAGAIN on the unix port, None on CPython
                if e.errno not in (EAGAIN, None):
                    raise
                n = None
            self._late(None if n is None else t0, "receive")
            if not n:
                raise OSError(ECONNRESET, "MQTT connection closed by the broker")
            mv = mv[n:]

    def _put(self, i, data, prefix=True):
        # append a (length-prefixed) field at buf[i]; what does not fit is written out now
        buf = self._buf
        if prefix:
            if i > _BUF - 2:
                self._write(self._mv[:i])
                i = 0
            buf[i] = len(data) >> 8
            buf[i + 1] = len(data) & 0xFF
            i += 2
        if i + len(data) <= _BUF:
            buf[i:i + len(data)] = data
            return i + len(data)
        self._write(self._mv[:i])
        self._write(data)
        return 0

    def _send(self, first, n, fields):
        # fixed header (type, remaining length n), then (data, prefixed) fields, then flush
        buf = self._buf
        buf[0] = first
        i = 1
        while True:
            buf[i] = n & 0x7F | (0x80 if n > 0x7F else 0)
            i += 1
            n >>= 7
            if not n:
                break
        for f in fields:
            i = self._put(i, f[0], f[1])
        if i:
            self._write(self._mv[:i])

    def _recv(self, wait):
        # Read one packet and act on it; return its type, or None when wait is False and
        # nothing is queued. The rest of a packet that has begun is always read blocking.
        mv = self._mv
        if wait:
            self._fill(mv[:1])
        else:
            self._ctl.setblocking(False)
            try:
                n = self._rd(mv[:1])
            except OSError as e:
                if e.errno != EAGAIN and not isinstance(e, self._wantread):
                    raise
                n = None  # nothing queued
            self._ctl.settimeout(self.timeout_s)
            if n is None:
                return None
            if not n:
                raise OSError(ECONNRESET, "MQTT connection closed by the broker")
        kind = self._buf[0] & 0xF0
        n = shift = 0
        while True:
            self._fill(mv[1:2])
            n |= (self._buf[1] & 0x7F) << shift
            if self._buf[1] < 0x80:
                break
            shift += 7
            if shift > 21:
                raise MQTTError(0, "malformed remaining length")
        if kind == _PINGRESP:
            self._ping_at = None
        elif kind in (_CONNACK, _PUBACK) and n == 2:
            self._fill(mv[:2])  # CONNACK: flags, return code; PUBACK: packet id
            self._acked = self._buf[0] << 8 | self._buf[1]
        else:
            while n:  # we never subscribed: drop whatever this is
                k = min(n, _BUF)
                self._fill(mv[:k])
                n -= k
        return kind

    def _guard(self, f, *args):
        # any failure leaves the connection unusable: close it, so connect() starts afresh
        if self._io is None:
            raise OSError(ENOTCONN, "MQTT not connected")
        try:
            return f(*args)
        except BaseException:
            self.close()
            raise

    def close(self):
        # close without DISCONNECT: the broker publishes the will
        io, sock, self._io, self._sock = self._io, self._sock, None, None
        for s in (io, sock):
            if s is not None:
                try:
                    s.close()
                except OSError:  # already dead; closing was all we wanted
                    pass
