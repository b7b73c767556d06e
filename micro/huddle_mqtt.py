# A minimal MQTT 3.1.1 client for the device agent: MicroPython first, CPython too.
#
# It publishes and never subscribes: CONNECT (clean session, optional last will, user and
# password), PUBLISH at QoS 0 or 1, PINGREQ, DISCONNECT; whatever else the broker sends is read
# and dropped. Its methods are coroutines on huddle_http's non-blocking connection (the same
# bounded steps as every HTTP request), so a slow or dead broker never stalls the agent's
# loop: the app and the health checks run while it waits (with mqtts:// the TCP connect and
# the TLS handshake block, as huddle_http's HTTPS does, bounded by timeout_s). Each call is
# bounded by timeout_s (plus the size of what it sends at a floor rate). A dead connection
# (EOF, reset, a PINGREQ left unanswered) is an OSError; so is a refusal (errno ECONNREFUSED,
# the CONNACK code in its message) and a broken protocol (errno EIO). Any error closes the
# connection (connect() again starts afresh). Retries and their backoff are the caller's;
# broker URLs are parsed by huddle_config at boot.
# Memory: one module, one class, few names; TLS, sockets and timeouts are huddle_http's.
from errno import ECONNREFUSED, ECONNRESET, EIO, ENOTCONN, ETIMEDOUT

from huddle_http import Response
from huddle_os import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:  # CPython
    from huddle_cpy import const

_MAX_LEN = const(268435455)  # the largest remaining length (four varint bytes)


def _field(s):
    # a length-prefixed string field (a topic over 65535 bytes fails in bytes(): ValueError)
    s = s.encode() if isinstance(s, str) else s
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


class MQTTClient:
    # conn: the open connection (a huddle_http.Response) or None; will: (its two fields,
    # retain, qos); ping_at: ticks of an unanswered PINGREQ; sent: ticks of the last write
    conn = will = ping_at = None
    pid = sent = 0

    def __init__(
        self,
        client_id,
        host,
        port=1883,
        user=None,
        password=None,
        keepalive=60,
        ssl=False,
        timeout_s=5,
    ):
        # ssl: False, True (a default context) or a context object (one that verifies)
        self.client_id, self.host, self.port = client_id, host, port
        self.user, self.password, self.keepalive = user, password, keepalive
        self.ssl, self.timeout_s = ssl, timeout_s

    def set_last_will(self, topic, msg, retain=True, qos=1):
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        self.will = _field(topic) + _field(msg), 1 if retain else 0, qos

    async def connect(self):
        # CONNECT on a new connection, then CONNACK; returns the session-present flag
        self.close()
        user, password, ka = self.user, self.password, self.keepalive
        ctx = None
        if self.ssl:
            from huddle_tls import context

            ctx = context(None if self.ssl is True else self.ssl)
        c = self.conn = Response(self.host, self.port, self.timeout_s, ctx)
        try:
            flags = 2 | (user is not None) << 7 | (password is not None) << 6  # clean session
            body = _field(self.client_id)
            if self.will:
                w, retain, qos = self.will
                flags |= 4 | qos << 3 | retain << 5
                body += w
            for f in (user, password):
                if f is not None:
                    body += _field(f)
            # protocol level 4: MQTT 3.1.1
            await self.send(0x10, b"\0\4MQTT" + bytes((4, flags, ka >> 8, ka & 0xFF)) + body)
            c.due(0)
            v = await self.ack(0x20, None)
            if v & 0xFF:
                raise OSError(ECONNREFUSED, "MQTT connect refused (code %d)" % (v & 0xFF))
            return bool(v & 0x100)
        except BaseException:
            self.close()
            raise

    async def publish(self, topic, msg, retain=False, qos=0):
        # QoS 1 waits for the PUBACK carrying this packet id
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        topic, msg = _field(topic), msg.encode() if isinstance(msg, str) else msg
        if len(topic) + len(msg) + 2 > _MAX_LEN:
            raise ValueError("MQTT message too large")
        self.ready()
        try:
            self.pid = pid = self.pid % 0xFFFF + 1
            await self.send(
                0x30 | qos << 1 | (1 if retain else 0),
                topic + (bytes((pid >> 8, pid & 0xFF)) if qos else b""),
                msg,
            )
            if qos:
                await self.ack(0x40, pid)
        except BaseException:
            self.close()
            raise

    async def ping(self):
        # a PINGREQ; poll() declares the connection dead if no PINGRESP follows in timeout_s
        self.ready()
        try:
            await self.send(0xC0, b"")
        except BaseException:
            self.close()
            raise
        if self.ping_at is None:
            self.ping_at = self.sent

    async def poll(self):
        # waits for nothing: consumes what the broker sent (a packet once begun is read whole,
        # bounded), pings after half a quiet keepalive, and raises OSError on EOF/reset or when
        # a PINGREQ went unanswered for timeout_s
        self.ready()
        c = self.conn
        try:
            for _ in range(16):  # bounded: a chatty broker cannot keep us here
                if not c.pending:
                    n = await c.more(False)
                    if n is None:
                        break
                    if not n:
                        raise OSError(ECONNRESET, "MQTT closed by the broker")
                c.due(0)
                await self.recv()
            if (
                self.ping_at is not None
                and ticks_diff(ticks_ms(), self.ping_at) > self.timeout_s * 1000
            ):
                raise OSError(ETIMEDOUT, "MQTT PINGRESP timed out")
        except BaseException:
            self.close()
            raise
        if self.keepalive and ticks_diff(ticks_ms(), self.sent) >= self.keepalive * 500:
            await self.ping()

    async def disconnect(self):
        # DISCONNECT (the broker then drops the will), then close
        self.ready()
        try:
            await self.send(0xE0, b"")
        finally:
            self.close()

    def close(self):
        # close without DISCONNECT: the broker publishes the will
        c, self.conn = self.conn, None
        if c:
            c.close()

    def ready(self):
        if self.conn is None:
            raise OSError(ENOTCONN, "MQTT not connected")

    async def send(self, first, body, msg=b""):
        # one packet: fixed header (type, remaining length) and body in one write, then the
        # message (not copied)
        n = len(body) + len(msg)
        h = bytearray((first,))
        while True:
            h.append(n & 0x7F | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not n:
                break
        self.conn.due(len(body) + len(msg))
        await self.conn.send(h + body)
        if msg:
            await self.conn.send(msg)
        self.sent = ticks_ms()

    async def ack(self, kind, pid):
        # reads packets until one of `kind` (with packet id `pid` if given); its 2-byte value
        while True:
            k, v = await self.recv()
            if k == kind and pid in (None, v):
                return v

    async def recv(self):
        # one whole packet -> (type, value of a 2-byte body such as CONNACK's or PUBACK's,
        # else None); a PINGRESP clears the ping; anything else is read and dropped
        c = self.conn
        kind = (await c.read(1))[0] & 0xF0
        n = shift = 0
        while True:
            k = (await c.read(1))[0]
            n |= (k & 0x7F) << shift
            if k < 0x80:
                break
            shift += 7
            if shift > 21:
                raise OSError(EIO, "MQTT malformed remaining length")
        if kind == 0xD0:  # PINGRESP
            self.ping_at = None
        v = None
        while n:
            data = await c.read(min(n, 64))
            if n == len(data) == 2:
                v = data[0] << 8 | data[1]
            n -= len(data)
        return kind, v
