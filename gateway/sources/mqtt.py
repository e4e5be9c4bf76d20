"""MQTT ingest: paho-mqtt 2.x driven by the asyncio loop, acknowledging only committed messages.

Why paho and not aiomqtt: aiomqtt acknowledges a QoS 1 message as soon as it arrives; paho's
``manual_ack=True`` lets us send the PUBACK ourselves, after the spool commit (see
:class:`gateway.pipeline.Committer`). The broker keeps our session (MQTT 5 ``clean_start=False``
with a non-zero session expiry, or MQTT 3.1.1 ``clean_session=False``), so whatever was not
acknowledged when the gateway stopped is delivered again when it comes back.

A redelivered message carries the DUP flag. When its readings were stamped with the receive
time (the device sent none), the first receive time is looked up by a key of (topic, packet id,
payload) so the redelivery writes the very same points: no duplicates in InfluxDB.

The socket is driven by the event loop (``add_reader``/``add_writer``), the blocking connect
(DNS, TCP, TLS) runs on a worker thread, and one new paho client is made per connection so
no acknowledgement of an old connection can leak into a new one.

The hot path is the gateway's own: a readable socket is read into one buffer, the PUBLISH
packets in it are decoded by :mod:`gateway.sources.mqttwire` and go through the pipeline as a
batch (at most ``_BATCH_MAX`` per turn of the loop), and their PUBACKs leave together after
the commit; every other packet (CONNACK, SUBACK, PINGRESP, the PUBACKs of our own publishes)
is handed to paho from the same buffer. Why, with the figures of the candidates measured
(paho alone, gmqtt, this): README.md, "Benchmark", and bench/mqtt_read_bench.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from gateway.config import MqttConfig, TlsConfig
from gateway.core.backoff import Backoff
from gateway.core.clock import SYSTEM_CLOCK, Clock
from gateway.pipeline import Collected, Committer, Pipeline, SeenKeys
from gateway.sources import mqttwire
from gateway.sources.mqttwire import PUBACK

log = logging.getLogger(__name__)

# How many PUBLISH packets go into one batch (one pass of the pipeline, one committer add)
# before other tasks get a turn: the event loop must answer /health within 100 ms in a burst.
_BATCH_MAX = 100
# What one readable event may read ahead of what is decoded (bytes).
_READ_AHEAD = 256 * 1024
# Topics as text, by their bytes: a park has a few hundred. Bounded.
_TOPICS_MAX = 4096


class MqttConnectError(ConnectionError):
    """The broker refused us (CONNACK failure) or did not answer in time."""

    def __init__(self, message: str, *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


@dataclass(frozen=True, slots=True)
class MqttStats:
    state: str
    broker: str
    connected: bool
    connects: int
    disconnects: int
    session_present: bool | None
    last_error: str | None
    messages: int
    acks: int
    redeliveries: int
    redeliveries_matched: int
    unacknowledged: int
    flow_pauses: int


def redelivery_key(topic: str, mid: int, payload: bytes) -> int:
    h = hashlib.blake2b(digest_size=8)
    h.update(topic.encode("utf-8", "surrogateescape"))
    h.update(mid.to_bytes(2, "big"))
    h.update(payload)
    # SQLite integers are signed 64-bit.
    return int.from_bytes(h.digest(), "big", signed=True)


class _BufferedClient(paho.Client):
    """A paho client whose socket the gateway reads itself.

    :meth:`fill` takes what the socket holds in one call; the source splits it into packets
    (:mod:`gateway.sources.mqttwire`), decodes the PUBLISH packets itself and hands each other
    packet to paho by letting paho's ``_sock_recv`` serve exactly that packet from the buffer
    (``handing``). Overriding paho's private ``_sock_recv`` and queueing our PUBACKs with its
    private ``_packet_queue`` is a trade measured in the README ("Benchmark"): a later paho that
    renames them fails the tests of tests/test_mqtt.py, never a park silently.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rbuf = b""
        self.rpos = 0
        # paho may read up to here: the end of the one packet handed to it.
        self._rend = 0
        # The socket's end (True) or its error, told to paho once the buffer is used up.
        self.ended: bool | OSError = False

    def fill(self) -> int:
        """Append what the socket holds to the buffer; how many bytes (0 at its end).

        Raises BlockingIOError when nothing is there, OSError when the connection broke."""
        data = super()._sock_recv(65536)
        if self.rpos < len(self.rbuf):
            self.rbuf = self.rbuf[self.rpos:] + data
        else:
            self.rbuf = data
        self.rpos = 0
        return len(data)

    def hand(self, pos: int, end: int) -> int:
        """Let paho handle the packet ``rbuf[pos:end]``; where reading goes on."""
        self.rpos, self._rend = pos, end
        self.loop_read()
        self._rend = 0
        return self.rpos

    def tell_end(self) -> None:
        """The socket ended or broke: paho's reading of the next packet learns it."""
        self.rpos = self._rend = len(self.rbuf)
        self.loop_read()

    def _sock_recv(self, bufsize: int) -> bytes:
        if self.rpos >= self._rend:
            if self.ended is not False and self.rpos >= len(self.rbuf):
                if isinstance(self.ended, OSError):
                    raise self.ended
                return b""
            raise BlockingIOError
        end = min(self.rpos + bufsize, self._rend)
        chunk = self.rbuf[self.rpos:end]
        self.rpos = end
        return chunk

    def queue_pubacks(self, mids: list[int]) -> None:
        """The PUBACKs of a commit, queued as one packet of paho's: one write, in order with
        whatever paho sends."""
        self._packet_queue(PUBACK, mqttwire.pubacks(mids), 0, 0)


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails.

    paho's connect leaks the TLS socket when the handshake fails (a wrong CA, a broker that
    does not speak TLS); a gateway retrying every few seconds would run out of descriptors.
    """

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(tls: TlsConfig) -> ssl.SSLContext:
    """The TLS context of ``mqtt.tls``: the gateway's, and the doctor's, so its verdict is true."""
    ctx = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    if tls.cert_file:
        ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
    if tls.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.sslsocket_class = _ClosingSSLSocket
    return ctx


class MqttSource:
    def __init__(
        self,
        *,
        config: MqttConfig,
        client_id: str,
        topics: list[str],
        pipeline: Pipeline,
        committer: Committer,
        seen: SeenKeys | None,
        clock: Clock = SYSTEM_CLOCK,
        on_connected: Callable[[], None] | None = None,
        status_topic: str | None = None,
        on_link: Callable[[bool, str | None], None] | None = None,
    ) -> None:
        self._config = config
        self._client_id = client_id
        self._topics = topics
        self._pipeline = pipeline
        self._committer = committer
        self._seen = seen
        self._clock = clock
        self._on_connected_hook = on_connected
        # The gateway's own link to the broker: up after each CONNACK, down (with why) when a
        # connection ends or cannot be made; a clean stop at shutdown is neither.
        self._on_link = on_link
        # The gateway's own presence: last will "offline" registered with CONNECT, "online"
        # published after CONNACK, "offline" published by a clean shutdown; all retained.
        self._status_topic = status_topic
        self.published = 0
        self.publish_failures = 0
        self._client: _BufferedClient | None = None
        self._generation = 0
        self._sock: socket.socket | None = None
        self._writer_on: Any = None
        self._deferred: list[Callable[[], None]] | None = None
        self._connack: asyncio.Future[tuple[ReasonCode, bool]] | None = None
        self._closed: asyncio.Event | None = None
        self._paused = False
        self._state = "starting"
        self._connected = False
        self._connects = 0
        self._disconnects = 0
        self._session_present: bool | None = None
        self._last_error: str | None = None
        self._messages = 0
        self._acks = 0
        self._redeliveries = 0
        self._redeliveries_matched = 0
        self._unacked = 0
        self._throttled = False
        self._flow_pauses = 0
        self._backoff = Backoff(config.reconnect_min_s, config.reconnect_max_s)
        self.refused_subscriptions: list[tuple[str, str]] = []
        self._topics_text: dict[bytes, str] = {}
        self.broker = f"{config.host}:{config.port}"

    def statistics(self) -> MqttStats:
        return MqttStats(
            state=self._state,
            broker=self.broker,
            connected=self._connected,
            connects=self._connects,
            disconnects=self._disconnects,
            session_present=self._session_present,
            last_error=self._last_error,
            messages=self._messages,
            acks=self._acks,
            redeliveries=self._redeliveries,
            redeliveries_matched=self._redeliveries_matched,
            unacknowledged=self._unacked,
            flow_pauses=self._flow_pauses,
        )

    # -- supervision ---------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, receive until disconnected, back off, again; cancellation stops it."""
        while True:
            started = self._clock.monotonic()
            try:
                await self._connection()
            except (OSError, ssl.SSLError, MqttConnectError, TimeoutError) as exc:
                self._last_error = f"{type(exc).__name__}: {exc}"
                permanent = isinstance(exc, MqttConnectError) and exc.permanent
                self._state = "refused" if permanent else "disconnected"
                log.warning("mqtt broker=%s connection failed: %s", self.broker, self._last_error)
            finally:
                self._teardown()
            if self._on_link is not None and not self._paused:
                self._on_link(False, self._last_error)
            if self._clock.monotonic() - started > 60:
                self._backoff.reset()
            delay = self._backoff.next()
            log.info("mqtt broker=%s reconnecting in %.1fs", self.broker, delay)
            await asyncio.sleep(delay)

    def _new_client(self) -> _BufferedClient:
        cfg = self._config
        v5 = cfg.protocol == "5"
        client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        client.connect_timeout = cfg.connect_timeout_s
        if cfg.username:
            client.username_pw_set(
                cfg.username, cfg.password.get_secret_value() if cfg.password else None
            )
        if cfg.tls is not None:
            client.tls_set_context(tls_context(cfg.tls))
        if self._status_topic is not None:
            client.will_set(self._status_topic, b"offline", qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    async def _connection(self) -> None:
        loop = asyncio.get_running_loop()
        cfg = self._config
        self._generation += 1
        # Unacknowledged messages of an old connection will come again; start counting anew.
        self._unacked = 0
        self._throttled = False
        client = self._client = self._new_client()
        self._connack = loop.create_future()
        self._closed = asyncio.Event()
        self._state = "connecting"
        properties = None
        if cfg.protocol == "5":
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = cfg.session_expiry_s
            properties.ReceiveMaximum = cfg.receive_maximum
        # Socket callbacks fired on the worker thread are applied here, after connect returns.
        self._deferred = []
        try:
            if cfg.protocol == "5":
                await loop.run_in_executor(None, lambda: client.connect(
                    cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=False,
                    properties=properties))
            else:
                # 3.1.1: clean_session=False was given to the client itself.
                await loop.run_in_executor(None, lambda: client.connect(
                    cfg.host, cfg.port, keepalive=cfg.keepalive_s))
        finally:
            deferred, self._deferred = self._deferred, None
            for action in deferred:
                action()
        async with asyncio.timeout(cfg.connect_timeout_s):
            reason, session_present = await self._connack
        if reason.is_failure:
            permanent = reason.value in (0x84, 0x85, 0x86, 0x87, 0x8C, 0x04, 0x05)
            raise MqttConnectError(f"broker refused the connection: {reason}",
                                   permanent=permanent)
        self._connected = True
        self._connects += 1
        self._session_present = session_present
        self._state = "connected"
        self._last_error = None
        self._subscribe(client, session_present)
        if self._status_topic is not None:
            self.publish(self._status_topic, b"online")
        log.info("mqtt connected broker=%s client_id=%s session_present=%s topics=%d",
                 self.broker, self._client_id, session_present, len(self._topics))
        if self._on_link is not None:
            self._on_link(True, None)
        if self._on_connected_hook is not None:
            self._on_connected_hook()
        misc = asyncio.create_task(self._misc_loop(client), name=f"mqtt[{self.broker}].misc")
        try:
            await self._closed.wait()
        finally:
            misc.cancel()
            await asyncio.gather(misc, return_exceptions=True)
        if self._state == "connected":
            self._state = "disconnected"
        raise ConnectionError(self._last_error or "connection closed")

    def _subscribe(self, client: paho.Client, session_present: bool) -> None:
        if self._config.protocol == "5":
            # retainHandling=1: retained messages only for a subscription that is new, so a
            # reconnect does not replay every retained message.
            # noLocal: what the gateway publishes itself (states, its status) never comes back.
            opts = SubscribeOptions(qos=1, retainHandling=1, noLocal=True)
            topics: list[tuple[str, Any]] = [(t, opts) for t in self._topics]
        elif session_present:
            return
        else:
            topics = [(t, 1) for t in self._topics]
        if topics:
            client.subscribe(topics)

    async def _misc_loop(self, client: paho.Client) -> None:
        # Keepalive pings and timeouts; paho wants this called about once a second.
        while True:
            if client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return
            await asyncio.sleep(1.0)

    def _teardown(self) -> None:
        self._connected = False
        client, self._client = self._client, None
        if client is not None and self._sock is not None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(self._sock)
            loop.remove_writer(self._sock)
            self._sock = None
            self._writer_on = None
            client.on_socket_close = None
            sock = client.socket()
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.close()

    # -- graceful stop -------------------------------------------------------------------

    def pause(self) -> None:
        """Stop reading new messages (shutdown: the committer flushes what it has)."""
        self._paused = True
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock)

    async def close(self, timeout: float = 2.0) -> None:  # noqa: ASYNC109 - a grace period
        """Send the pending PUBACKs and a DISCONNECT (the session is kept by the broker)."""
        client = self._client
        if client is None or not self._connected or self._closed is None:
            return
        self._state = "closing"
        if self._status_topic is not None:
            # A clean DISCONNECT discards the will: say "offline" ourselves, before it.
            self.publish(self._status_topic, b"offline")
        client.disconnect()
        try:
            async with asyncio.timeout(timeout):
                await self._closed.wait()
        except TimeoutError:
            log.warning("mqtt broker=%s did not close in %.1fs", self.broker, timeout)

    def publish(self, topic: str, payload: bytes, *, retain: bool = True) -> bool:
        """Publish at QoS 1 now if connected; False when not (the caller publishes again on
        the next connection: these are retained states, the latest is all that matters)."""
        client = self._client
        if client is None or not self._connected:
            return False
        info = client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.publish_failures += 1
            log.warning("mqtt publish topic=%s failed: %s", topic, info.rc)
            return False
        self.published += 1
        return True

    # -- paho callbacks (run on the loop thread) -----------------------------------------

    def _call(self, action: Callable[[], None]) -> None:
        if self._deferred is not None:
            self._deferred.append(action)
        else:
            action()

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        assert isinstance(client, _BufferedClient)

        def register() -> None:
            self._sock = sock
            if not self._paused and not self._throttled:
                asyncio.get_running_loop().add_reader(sock, self._readable, client)
        self._call(register)

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            loop = asyncio.get_running_loop()
            loop.remove_reader(sock)
            loop.remove_writer(sock)
            self._writer_on = None
            if self._sock is sock:
                self._sock = None
        self._call(unregister)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        # paho asks for this once per queued packet (every PUBACK); one epoll change is enough.
        if self._writer_on is sock:
            return

        def register() -> None:
            asyncio.get_running_loop().add_writer(sock, client.loop_write)
            self._writer_on = sock
        self._call(register)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        def unregister() -> None:
            asyncio.get_running_loop().remove_writer(sock)
            self._writer_on = None
        self._call(unregister)

    def _readable(self, client: _BufferedClient) -> None:
        # Take what the socket holds (one recv, more while it keeps coming, bounded), then
        # decode it: a burst costs one wake-up and one batch, not one of each per message.
        if client is not self._client:
            return
        try:
            while len(client.rbuf) - client.rpos < _READ_AHEAD:
                if not client.fill():
                    client.ended = True
                    break
        except BlockingIOError:
            pass
        except OSError as exc:
            client.ended = exc
        self._drain(client)

    def _drain(self, client: _BufferedClient) -> None:
        """Decode the whole packets in the buffer: PUBLISH packets in batches of at most
        ``_BATCH_MAX``, every other packet by paho, in the order they came."""
        v5 = self._config.protocol == "5"
        batch: list[mqttwire.Publish] = []
        pos = client.rpos
        buf = client.rbuf
        receive_maximum = self._config.receive_maximum
        while not (self._paused or self._throttled):
            try:
                head = mqttwire.frame(buf, pos)
                if head is None:
                    break
                first, start, end = head
                if not mqttwire.is_handled_publish(first):
                    if batch:
                        self._received(batch)
                        batch = []
                        if client is not self._client or self._paused:
                            return
                    client.rpos = pos
                    pos = client.hand(pos, end)
                    if client is not self._client or client.socket() is None:
                        return  # paho closed it (a DISCONNECT from the broker)
                    continue
                message = mqttwire.publish(first, buf, start, end, v5)
            except mqttwire.ProtocolError as exc:
                # Not MQTT: drop the connection (the broker sends again what we did not ack).
                log.error("mqtt broker=%s sent a malformed packet: %s", self.broker, exc)
                client.rpos = len(buf)
                client.ended = ConnectionError(f"malformed packet: {exc}")
                break
            pos = end
            batch.append(message)
            if message.qos:
                self._unacked += 1
                if self._unacked >= receive_maximum:
                    self._throttle()
            if len(batch) >= _BATCH_MAX:
                break
        client.rpos = pos
        if batch:
            self._received(batch)
        if client is not self._client:
            return
        if client.ended is not False and mqttwire.frame(client.rbuf, client.rpos) is None:
            client.tell_end()  # paho closes and calls on_disconnect
        elif len(batch) >= _BATCH_MAX and not (self._paused or self._throttled):
            # A long burst: let other tasks run, then go on with what is already buffered (the
            # socket may be drained, so no readable event would come for it).
            asyncio.get_running_loop().call_soon(self._drain, client)

    def _topic(self, raw: bytes) -> str:
        topic = self._topics_text.get(raw)
        if topic is None:
            topic = raw.decode("utf-8", "backslashreplace")
            if len(self._topics_text) >= _TOPICS_MAX:
                self._topics_text.clear()
            self._topics_text[raw] = topic
        return topic

    def _received(self, batch: list[mqttwire.Publish]) -> None:
        """A batch of PUBLISH packets: through the pipeline together, to the committer as
        one, and their PUBACKs after its commit."""
        self._messages += len(batch)
        pipeline = self._pipeline
        into = Collected()
        seen: list[tuple[int, int]] = []
        mids: list[int] = []
        now_ns = self._clock.now_ns
        for raw_topic, payload, mid, qos, dup, _ in batch:
            topic = self._topic(raw_topic)
            received_at = now_ns()
            if not qos:
                pipeline.collect(into, topic, payload, received_at)
                continue
            mids.append(mid)
            key = None
            if dup:
                self._redeliveries += 1
                key = redelivery_key(topic, mid, payload)
                first = self._committer.uncommitted_seen.get(key)
                if first is None and self._seen is not None:
                    first = self._seen.get(key)
                if first is not None:
                    self._redeliveries_matched += 1
                    received_at = first
            if pipeline.collect(into, topic, payload, received_at):
                seen.append((key if key is not None else redelivery_key(topic, mid, payload),
                             received_at))
        pipeline.heard(into)
        ack = None
        if mids:
            generation = self._generation

            def ack() -> None:
                self._ack(generation, mids)
        self._committer.add_batch(into, seen=seen, ack=ack, waiting=len(mids))

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any,
                    reason: ReasonCode, properties: Any) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result((reason, bool(getattr(flags, "session_present", False))))

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any,
                       reason: ReasonCode, properties: Any) -> None:
        if client is not self._client:
            return
        if self._connected:
            self._disconnects += 1
            if self._state != "closing":
                self._last_error = f"disconnected: {reason}"
                log.warning("mqtt disconnected broker=%s reason=%s", self.broker, reason)
        self._connected = False
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttConnectError(f"connection lost: {reason}"))
        if self._closed is not None:
            self._closed.set()

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int,
                      reasons: list[ReasonCode], properties: Any) -> None:
        refused = [(topic, str(r)) for topic, r in zip(self._topics, reasons, strict=False)
                   if r.is_failure]
        if refused:
            # An ACL that denies a topic filter: the gateway would receive nothing on it.
            self.refused_subscriptions = refused
            self._last_error = "broker refused subscriptions: " + ", ".join(
                f"{t} ({r})" for t, r in refused)
            log.error("mqtt broker=%s %s", self.broker, self._last_error)

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        # Only what paho decodes itself reaches here: a QoS 2 PUBLISH, which our subscriptions
        # (at most QoS 1) never ask for. Taken like any other message, acknowledged by paho.
        self._messages += 1
        generation = self._generation
        into = Collected()
        self._pipeline.collect(into, msg._topic.decode("utf-8", "backslashreplace"),
                               bytes(msg.payload), self._clock.now_ns())
        self._pipeline.heard(into)

        def ack() -> None:
            if generation == self._generation and self._client is client and self._connected:
                client.ack(msg.mid, msg.qos)
        self._committer.add_batch(into, ack=ack, waiting=0)

    def _ack(self, generation: int, mids: list[int]) -> None:
        client = self._client
        if generation != self._generation or client is None or not self._connected:
            # That connection is gone; the broker will deliver the messages again (DUP).
            return
        client.queue_pubacks(mids)
        self._acks += len(mids)
        self._unacked -= len(mids)
        if self._throttled and self._unacked <= self._config.receive_maximum // 2:
            self._unthrottle(client)

    def _throttle(self) -> None:
        # Our own bound on messages read but not yet committed: Mosquitto 2.0.11 does not
        # always hold to the receive maximum we ask for (eclipse-mosquitto#2301), and without
        # this a burst would pile up in memory instead of waiting at the broker.
        self._throttled = True
        self._flow_pauses += 1
        if self._sock is not None:
            asyncio.get_running_loop().remove_reader(self._sock)

    def _unthrottle(self, client: _BufferedClient) -> None:
        self._throttled = False
        if self._sock is not None and not self._paused:
            loop = asyncio.get_running_loop()
            loop.add_reader(self._sock, self._readable, client)
            # Bytes may already sit in our read buffer, where no readable event will tell.
            loop.call_soon(self._drain, client)
