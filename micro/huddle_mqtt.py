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
# Memory: one module, one class, few methods and attributes (every function, attribute name
# and constant stays resident on a board); TLS, sockets and timeouts are huddle_http's.
import errno

from huddle_http import Response
from huddle_os import ticks_diff, ticks_ms

try:
    from micropython import const
except ImportError:  # CPython
    from huddle_cpy import const

_MAX_LEN = const(268435455)  # the largest remaining length (four varint bytes)
# packet types (the high nibble of the first byte)
_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)
# the packet id of every QoS 1 PUBLISH: a publish waits for its PUBACK and an error closes the
# connection (clean session), so no other id is ever in use and a counter would buy nothing
_PACKET_ID = const(1)


def _field(s):
    # a length-prefixed string field (a topic over 65535 bytes fails in bytes(): ValueError)
    s = s.encode() if isinstance(s, str) else s
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


class MQTTClient:
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
        # set here, not as class attributes (which would hold the names a second time):
        # conn, the open connection (a huddle_http.Response) or None; will, (topic, message,
        # its CONNECT flags); ping_at, ticks of an unanswered PINGREQ; sent, ticks of the last
        # write. Twelve attributes at most: the thirteenth would grow the instance's dict from
        # 12 slots to 17 (48 B more)
        self.conn = self.will = self.ping_at = None
        self.sent = 0

    def set_last_will(self, topic, msg, retain=True, qos=1):
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        # the CONNECT flags: a will (4), its QoS, its retain flag (0x20)
        self.will = topic, msg, (0x24 if retain else 4) | qos << 3

    async def connect(self):
        # CONNECT on a new connection, then CONNACK; returns the session-present flag
        self.close()
        ctx = None
        if self.ssl:
            from huddle_tls import context

            ctx = context(None if self.ssl is True else self.ssl)
        c = self.conn = Response(self.host, self.port, self.timeout_s, ctx)
        try:
            # the variable header: protocol name, level 4 (MQTT 3.1.1), flags (2: clean
            # session), keepalive; then the payload: client id, will, user name, password
            ka, user, password = self.keepalive, self.user, self.password
            flags = 2 | (user is not None) << 7 | (password is not None) << 6
            body = _field(self.client_id)
            if self.will:
                topic, msg, will_flags = self.will
                flags |= will_flags
                body += _field(topic) + _field(msg)
            for f in (user, password):
                if f is not None:
                    body += _field(f)
            await self.send(_CONNECT, b"\0\4MQTT" + bytes((4, flags, ka >> 8, ka & 0xFF)), body)
            c.due(0)  # the CONNACK within timeout_s of the CONNECT
            v = await self.recv(_CONNACK)
            if v & 0xFF:
                raise OSError(errno.ECONNREFUSED, "MQTT connect refused (code %d)" % (v & 0xFF))
            return bool(v & 0x100)
        except BaseException:
            self.close()
            raise

    async def publish(self, topic, msg, retain=False, qos=0):
        # QoS 1 waits for the PUBACK carrying its packet id
        if qos not in (0, 1):
            raise ValueError("qos must be 0 or 1")
        topic, msg = _field(topic), msg.encode() if isinstance(msg, str) else msg
        if len(topic) + len(msg) + 2 > _MAX_LEN:
            raise ValueError("MQTT message too large")
        try:
            if qos:
                topic += bytes((_PACKET_ID >> 8, _PACKET_ID & 0xFF))
            await self.send(_PUBLISH | qos << 1 | (1 if retain else 0), topic, msg)
            if qos:
                await self.recv(_PUBACK, _PACKET_ID)
        except BaseException:
            self.close()
            raise

    async def poll(self):
        # waits for nothing: consumes what the broker sent (a packet once begun is read whole,
        # bounded), pings after half a quiet keepalive, and raises OSError on EOF/reset or when
        # a PINGREQ went unanswered for timeout_s
        c = self.conn
        if c is None:
            raise OSError(errno.ENOTCONN, "MQTT not connected")
        try:
            for _ in range(16):  # bounded: a chatty broker cannot keep us here
                if not c.pending:
                    n = await c.more(False)
                    if n is None:
                        break
                    if not n:
                        raise OSError(errno.ECONNRESET, "MQTT closed by the broker")
                c.due(0)
                await self.recv()
            if (
                self.ping_at is not None
                and ticks_diff(ticks_ms(), self.ping_at) > self.timeout_s * 1000
            ):
                raise OSError(errno.ETIMEDOUT, "MQTT PINGRESP timed out")
            if self.keepalive and ticks_diff(ticks_ms(), self.sent) >= self.keepalive * 500:
                await self.send(_PINGREQ, b"")
                if self.ping_at is None:  # the first unanswered one counts
                    self.ping_at = self.sent
        except BaseException:
            self.close()
            raise

    async def disconnect(self):
        # DISCONNECT (the broker then drops the will), then close
        try:
            await self.send(_DISCONNECT, b"")
        finally:
            self.close()

    def close(self):
        # close without DISCONNECT: the broker publishes the will
        c, self.conn = self.conn, None
        if c:
            c.close()

    async def send(self, first, body, msg=b""):
        # one packet: fixed header (type, remaining length) and body in one write, then the
        # message (not copied)
        c = self.conn
        if c is None:
            raise OSError(errno.ENOTCONN, "MQTT not connected")
        n = len(body) + len(msg)
        c.due(n)
        packet = bytearray((first,))
        while n > 0x7F:
            packet.append(n & 0x7F | 0x80)
            n >>= 7
        packet.append(n)
        packet += body
        await c.send(packet)
        if msg:
            await c.send(msg)
        self.sent = ticks_ms()

    async def recv(self, kind=0, pid=None):
        # reads whole packets until one of type `kind` (with packet id `pid` if given) and
        # returns its 2-byte value (CONNACK's flags and code, PUBACK's packet id); kind 0: any
        # one packet. A PINGRESP clears the ping; anything else is read and dropped
        c = self.conn
        while True:
            k = (await c.read(1))[0] & 0xF0
            n = shift = 0
            while True:
                b = (await c.read(1))[0]
                n |= (b & 0x7F) << shift
                if b < 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise OSError(errno.EIO, "MQTT malformed remaining length")
            if k == _PINGRESP:
                self.ping_at = None
            v = None
            while n:
                data = await c.read(min(n, 64))
                if n == len(data) == 2:
                    v = data[0] << 8 | data[1]
                n -= len(data)
            if not kind or k == kind and (pid is None or pid == v):
                return v
