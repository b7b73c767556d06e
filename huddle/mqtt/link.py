"""One paho-mqtt client kept connected from huddle's asyncio loop, without ever blocking it.

paho does the MQTT protocol; this module does everything that touches time and sockets:

- **Connecting never blocks.** paho's `connect()` calls `socket.create_connection` and, for
  TLS, a blocking `do_handshake()`. Instead a `Link` resolves the host (IP literals need no
  lookup; names go through `loop.getaddrinfo`, asyncio's own resolver executor), connects a
  non-blocking socket with `loop.sock_connect`, performs the TLS handshake step by step on
  readiness events, all under one `connect_timeout_s`, and then hands the finished socket to
  paho through the `_create_socket` hook of paho 2.x, which `reconnect()` calls. paho then
  sends CONNECT; a missing CONNACK is also bounded by `connect_timeout_s`.
- **The socket lives in the loop's own wait**, as in paho's `examples/loop_asyncio.py`:
  `on_socket_open/close` and `on_socket_(un)register_write` add and remove loop readers and
  writers calling `loop_read` / `loop_write`, and a 1 s timer calls `loop_misc` (keepalive).
  No thread, no `loop_start()`.
- **Reconnecting** uses capped exponential backoff with jitter; the failure count resets on
  every successful CONNACK.
- **Subscriptions** (`subscribe(filter, handler)`) are remembered and made again on every
  connect (the session is clean); each handler gets `(topic, payload, retained)`.
- `close()` publishes one last message (the reporter's `offline`) and waits for its PUBACK and
  the DISCONNECT, all bounded by a short timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from huddle.backoff import Backoff
from huddle.mqtt.url import BrokerTarget

log = logging.getLogger("huddle.mqtt")

MISC_INTERVAL_S = 1.0  # how often paho checks keepalive / ping timeouts

if not hasattr(paho.Client, "_create_socket"):  # pragma: no cover - guards a paho upgrade
    raise ImportError("this paho-mqtt has no Client._create_socket hook; huddle needs 2.x")


class _HandedSocketClient(paho.Client):
    """paho's Client, except that `reconnect()` takes the socket huddle already connected
    (and TLS-handshook) instead of opening one itself with blocking calls."""

    _handed: socket.socket | None = None

    def _create_socket(self):  # overrides paho 2.x's socket factory
        sock, self._handed = self._handed, None
        if sock is None:
            raise ConnectionError("no connected socket was handed to the MQTT client")
        return sock


class Link:
    """Keeps one MQTT session open while the loop runs; see the module docstring."""

    def __init__(
        self,
        target: BrokerTarget,
        client_id: str,
        *,
        will: tuple[str, bytes] | None = None,
        on_connected: Callable[[], None] = lambda: None,
        keepalive_s: int = 30,
        connect_timeout_s: float = 5.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.target = target
        self.connect_timeout_s = connect_timeout_s
        self._backoff = Backoff(backoff_base_s, backoff_max_s)
        self._on_connected = on_connected
        self._ssl_context = (
            ssl_context
            if ssl_context is not None
            else (target.ssl_context() if target.tls else None)
        )
        self.client = _HandedSocketClient(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        self.client.enable_logger(logging.getLogger("huddle.mqtt.paho"))
        if target.username is not None:
            self.client.username_pw_set(target.username, target.password)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.connect_async(target.host, target.port, keepalive=keepalive_s)
        self.client.on_connect = self._paho_connect
        self.client.on_disconnect = self._paho_disconnect
        self.client.on_publish = self._paho_publish
        self.client.on_subscribe = self._paho_subscribe
        self.client.on_socket_open = self._socket_open
        self.client.on_socket_close = self._socket_close
        self.client.on_socket_register_write = self._register_write
        self.client.on_socket_unregister_write = self._unregister_write
        self.connected = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._connack: asyncio.Future | None = None
        self._lost: asyncio.Event | None = None
        self._acks: dict[int, asyncio.Future] = {}
        self._misc: asyncio.TimerHandle | None = None
        self._connected_hooks: list[Callable[[], None]] = []
        self._subscriptions: dict[str, Callable[[], None] | None] = {}
        self._subacks: dict[int, Callable[[], None]] = {}

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting in the background; returns at once."""
        self._loop = asyncio.get_running_loop()
        self._lost = asyncio.Event()
        self._task = self._loop.create_task(self._run())

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int | None:
        """Queue one message when connected (returns its mid), else drop it (returns None):
        callers republish fresh state on connect instead of replaying stale messages."""
        if not self.connected:
            return None
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        return info.mid

    def add_connected_hook(self, hook: Callable[[], None]) -> None:
        """Also call `hook` after each successful connect (after the subscriptions)."""
        self._connected_hooks.append(hook)

    def subscribe(
        self,
        topic_filter: str,
        handler: Callable[[str, bytes, bool], None],
        on_subscribed: Callable[[], None] | None = None,
    ) -> None:
        """Deliver messages matching `topic_filter` to `handler(topic, payload, retained)`,
        now and after every reconnect; `on_subscribed` runs at each SUBACK (retained
        messages follow it)."""

        def deliver(client, userdata, msg) -> None:
            handler(msg.topic, msg.payload, bool(msg.retain))

        self.client.message_callback_add(topic_filter, deliver)
        self._subscriptions[topic_filter] = on_subscribed
        if self.connected:
            self._subscribe_now(topic_filter)

    def unsubscribe(self, topic_filter: str) -> None:
        self.client.message_callback_remove(topic_filter)
        self._subscriptions.pop(topic_filter, None)
        if self.connected:
            self.client.unsubscribe(topic_filter)

    def _subscribe_now(self, topic_filter: str) -> None:
        result, mid = self.client.subscribe(topic_filter, qos=1)
        done = self._subscriptions.get(topic_filter)
        if result == paho.MQTT_ERR_SUCCESS and done is not None and mid is not None:
            self._subacks[mid] = done

    async def close(self, last: tuple[str, bytes] | None = None, timeout_s: float = 2.0) -> None:
        """Publish `last` (retained, QoS 1) if connected, disconnect; never longer than
        about `timeout_s`."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass  # the cancellation we just asked for
        if self.connected and self._loop is not None:
            try:
                await asyncio.wait_for(self._say_goodbye(last), timeout_s)
            except asyncio.TimeoutError:
                log.warning(
                    "MQTT broker %s did not acknowledge the goodbye within %.1fs",
                    self.target.redacted,
                    timeout_s,
                )
        self.connected = False
        self.client._sock_close()  # idempotent; removes our readers via on_socket_close

    async def _say_goodbye(self, last: tuple[str, bytes] | None) -> None:
        if last is not None:
            mid = self.publish(last[0], last[1], qos=1, retain=True)
            if mid is not None:
                await self._ack(mid)
        assert self._lost is not None
        self._lost.clear()
        self.client.disconnect()
        await self._lost.wait()

    def _ack(self, mid: int) -> asyncio.Future:
        assert self._loop is not None
        fut = self._acks.get(mid)
        if fut is None:
            fut = self._acks[mid] = self._loop.create_future()
        return fut

    # -- the connection manager -------------------------------------------------------

    async def _run(self) -> None:
        assert self._lost is not None
        while True:
            try:
                await self._connect_once()
                self._backoff.reset()
                log.info("MQTT connected to %s", self.target.redacted)
                await self._lost.wait()
                log.warning("MQTT connection to %s lost", self.target.redacted)
            except (OSError, asyncio.TimeoutError, ssl.SSLError, ConnectionError) as exc:
                # an unreachable, slow or refusing broker is an expected condition: log it
                # and retry later; the agent's own work goes on meanwhile
                log.warning("MQTT %s: %s", self.target.redacted, str(exc) or type(exc).__name__)
                self.client._sock_close()
            delay = self._backoff.failed()
            log.debug("MQTT reconnecting in %.1fs", delay)
            await asyncio.sleep(delay)

    async def _connect_once(self) -> None:
        assert self._loop is not None and self._lost is not None
        sock = await asyncio.wait_for(self._open_socket(), self.connect_timeout_s)
        self._lost.clear()
        self._connack = self._loop.create_future()
        self.client._handed = sock
        self.client.reconnect()  # takes `sock`, sends CONNECT without blocking
        try:
            await asyncio.wait_for(self._connack, self.connect_timeout_s)
        except asyncio.TimeoutError:
            raise asyncio.TimeoutError("no CONNACK from the broker") from None

    async def _open_socket(self) -> socket.socket:
        """TCP connect (and TLS handshake) on the loop; the caller bounds the time."""
        assert self._loop is not None
        loop, host, port = self._loop, self.target.host, self.target.port
        try:
            ip = ipaddress.ip_address(host)
            infos: list[Any] = [
                (
                    socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                    socket.SOCK_STREAM,
                    0,
                    "",
                    (host, port),
                )
            ]
        except ValueError:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        error: BaseException | None = None
        for family, type_, proto, _, addr in infos:
            sock = socket.socket(family, type_, proto)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, addr)
                if self._ssl_context is not None:
                    sock = self._ssl_context.wrap_socket(
                        sock, server_hostname=host, do_handshake_on_connect=False
                    )
                    await self._handshake(sock)
                return sock
            except OSError as exc:  # try the next address; ssl.SSLError is an OSError
                sock.close()
                error = exc
            except BaseException:  # cancelled by the timeout: do not leak the socket
                sock.close()
                raise
        raise error if error is not None else OSError(f"cannot resolve {host}")

    async def _handshake(self, sock: ssl.SSLSocket) -> None:
        assert self._loop is not None
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                await self._ready(sock, write=False)
            except ssl.SSLWantWriteError:
                await self._ready(sock, write=True)

    async def _ready(self, sock: socket.socket, write: bool) -> None:
        assert self._loop is not None
        fut = self._loop.create_future()
        fd = sock.fileno()
        add, remove = (
            (self._loop.add_writer, self._loop.remove_writer)
            if write
            else (self._loop.add_reader, self._loop.remove_reader)
        )

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        add(fd, ready)
        try:
            await fut
        finally:
            remove(fd)

    # -- paho callbacks (all run on the loop, from loop_read / loop_write / loop_misc) ---

    def _paho_connect(self, client, userdata, flags, reason_code, properties) -> None:
        fut = self._connack
        if reason_code.is_failure:
            if fut is not None and not fut.done():
                fut.set_exception(ConnectionError(f"broker refused the connection: {reason_code}"))
            return
        self.connected = True
        if fut is not None and not fut.done():
            fut.set_result(None)
        # after paho has re-queued what was in flight, so fresh state is published last
        assert self._loop is not None
        self._loop.call_soon(self._connected_now)

    def _connected_now(self) -> None:
        if self.connected:
            for topic_filter in list(self._subscriptions):
                self._subscribe_now(topic_filter)
            self._on_connected()
            for hook in list(self._connected_hooks):
                hook()

    def _paho_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        done = self._subacks.pop(mid, None)
        if done is not None:
            done()

    def _paho_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self.connected = False
        fut = self._connack
        if fut is not None and not fut.done():
            fut.set_exception(ConnectionError(f"disconnected: {reason_code}"))
        if self._lost is not None:
            self._lost.set()

    def _paho_publish(self, client, userdata, mid, reason_code, properties) -> None:
        fut = self._acks.pop(mid, None)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _socket_open(self, client, userdata, sock) -> None:
        assert self._loop is not None
        self._loop.add_reader(sock, self._readable)
        self._schedule_misc()

    def _socket_close(self, client, userdata, sock) -> None:
        if self._loop is not None:
            self._loop.remove_reader(sock)
            self._loop.remove_writer(sock)
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None

    def _register_write(self, client, userdata, sock) -> None:
        if self._loop is not None:
            self._loop.add_writer(sock, self.client.loop_write)

    def _unregister_write(self, client, userdata, sock) -> None:
        if self._loop is not None:
            self._loop.remove_writer(sock)

    def _readable(self) -> None:
        self.client.loop_read()
        # TLS may hold decrypted bytes the selector cannot see; drain them now (bounded)
        for _ in range(64):
            sock = self.client.socket()
            if not isinstance(sock, ssl.SSLSocket) or not sock.pending():
                break
            self.client.loop_read()

    def _schedule_misc(self) -> None:
        assert self._loop is not None
        self._misc = self._loop.call_later(MISC_INTERVAL_S, self._misc_tick)

    def _misc_tick(self) -> None:
        self._misc = None
        if self.client.socket() is not None:
            self.client.loop_misc()  # sends PINGREQ, drops a silent connection
            if self.client.socket() is not None and self._misc is None:
                self._schedule_misc()
