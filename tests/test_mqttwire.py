"""The gateway's own PUBLISH decoder and PUBACK encoder (gateway/sources/mqttwire.py), tested
the way h11 is: properties against paho's encoder and decoder, then against Mosquitto itself.

paho keeps the connection; these pin down that the bytes the gateway reads itself mean what paho
says they mean (MQTT 5 and 3.1.1, QoS 0 and 1, DUP, retain, MQTT 5 properties), that a packet
split anywhere is waited for, never misread, and that the broker takes our PUBACKs: a session
resumed after them holds nothing, one resumed before them gets every message again with DUP.
The source around them (TLS, a refused login, keepalive during a stream) is in
tests/test_mqtt.py.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt._packet import decode_publish
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from gateway.sources import mqttwire
from gateway.sources.mqtt import _BufferedClient
from gateway.testing.stack import PrivateMosquitto

# Topic levels as publishers write them: any text but the wildcards, NUL and surrogates.
_level = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="#+/\x00"),
                 max_size=12)
topics = st.lists(_level, min_size=1, max_size=5).map("/".join).filter(
    lambda t: 0 < len(t.encode()) < 200)
payloads = st.binary(max_size=2000)
# What Mosquitto accepts: no control characters or non-characters (it drops a client that
# sends them), and not "$...", which a "#" subscription does not match (MQTT-4.7.2-1).
_clean = st.characters(exclude_categories=["Cs", "Cc", "Cn"], exclude_characters="#+/")
broker_topics = st.lists(st.text(_clean, max_size=12), min_size=1, max_size=5).map(
    "/".join).filter(lambda t: 0 < len(t.encode()) < 200 and not t.startswith("$"))


def paho_publish_bytes(topic: str, payload: bytes, qos: int, mid: int, dup: bool, retain: bool,
                       v5: bool, props: dict[str, Any]) -> bytes:
    """The PUBLISH packet paho itself would send (its encoder, no socket)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=(
        MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311))
    properties = None
    if v5 and props:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        for name, value in props.items():
            setattr(properties, name, value)
    wire = _Wire()
    client._sock = wire  # type: ignore[assignment]
    client._send_publish(mid, topic.encode(), payload, qos, retain, dup,
                         paho.MQTTMessageInfo(mid), properties)
    client._sock = None
    return bytes(wire.sent)


class _Wire:
    """Where paho's encoder writes, in place of a socket."""

    def __init__(self) -> None:
        self.sent = bytearray()

    def send(self, data: bytes) -> int:
        self.sent += data
        return len(data)


mqtt5_properties = st.fixed_dictionaries({}, optional={
    "ContentType": st.text(_clean, max_size=20),
    "MessageExpiryInterval": st.integers(1, 2**31),
    "UserProperty": st.lists(st.tuples(st.text(_clean, max_size=8),
                                       st.text(_clean, max_size=8)), min_size=1, max_size=3),
})


@settings(max_examples=300, deadline=None)
@given(topic=topics, payload=payloads, qos=st.integers(0, 1), mid=st.integers(1, 65535),
       dup=st.booleans(), retain=st.booleans(), v5=st.booleans(), props=mqtt5_properties)
def test_publish_decodes_what_paho_encodes_and_agrees_with_pahos_decoder(
    topic: str, payload: bytes, qos: int, mid: int, dup: bool, retain: bool, v5: bool,
    props: dict[str, Any],
) -> None:
    packet = paho_publish_bytes(topic, payload, qos, mid, dup, retain, v5, props)
    head = mqttwire.frame(packet, 0)
    assert head is not None
    first, start, end = head
    assert end == len(packet)
    assert mqttwire.is_handled_publish(first)
    got = mqttwire.publish(first, packet, start, end, v5)
    assert got == mqttwire.Publish(topic.encode(), payload, mid if qos else 0, qos, dup, retain)
    theirs = decode_publish(first, packet[start:end], MQTTProtocolVersion.MQTTv5 if v5 else
                            MQTTProtocolVersion.MQTTv311)
    assert (theirs.topic, theirs.payload, theirs.mid, theirs.qos, theirs.dup, theirs.retain) == (
        got.topic, got.payload, got.mid, got.qos, got.dup, got.retain)


@settings(max_examples=200, deadline=None)
@given(messages=st.lists(st.tuples(topics, payloads, st.integers(0, 1), st.integers(1, 65535)),
                         min_size=1, max_size=8),
       v5=st.booleans(), data=st.data())
def test_packets_split_anywhere_are_waited_for_never_misread(
    messages: list[tuple[str, bytes, int, int]], v5: bool, data: st.DataObject,
) -> None:
    stream = b"".join(paho_publish_bytes(t, p, q, m, False, False, v5, {})
                      for t, p, q, m in messages)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    buf = b""
    pos = 0
    got: list[mqttwire.Publish] = []
    for chunk in (stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)):
        buf = buf[pos:] + chunk
        pos = 0
        while (head := mqttwire.frame(buf, pos)) is not None:
            first, start, end = head
            got.append(mqttwire.publish(first, buf, start, end, v5))
            pos = end
    assert [(g.topic, g.payload, g.qos, g.mid) for g in got] == [
        (t.encode(), p, q, m if q else 0) for t, p, q, m in messages]


@given(st.lists(st.integers(1, 65535), max_size=600))
def test_pubacks_are_one_four_byte_packet_per_id(mids: list[int]) -> None:
    wire = mqttwire.pubacks(mids)
    pos = 0
    got = []
    while pos < len(wire):
        head = mqttwire.frame(wire, pos)
        assert head is not None
        first, start, end = head
        assert (first, end - start) == (mqttwire.PUBACK, 2)
        got.append(wire[start] << 8 | wire[start + 1])
        pos = end
    assert got == mids


@pytest.mark.parametrize(("packet", "why"), [
    (b"\x30\xff\xff\xff\xff\x01", "longer than four bytes"),
    (b"\x36\x04\x00\x01t\x00", "QoS 3"),
    (b"\x30\x01\x00", "too short for its topic length"),
    (b"\x32\x03\x00\x01t", "too short for its packet identifier"),
    (b"\x32\x05\x00\x01t\x00\x00", "packet identifier 0"),
    (b"\x30\x05\x00\x09topic", "shorter than its topic"),
    (b"\x30\x02\x00\x00", "without a topic"),
])
def test_bytes_that_are_not_mqtt_are_refused_plainly(packet: bytes, why: str) -> None:
    def decode() -> mqttwire.Publish:
        head = mqttwire.frame(packet, 0)
        assert head is not None
        return mqttwire.publish(head[0], packet, head[1], head[2], False)

    with pytest.raises(mqttwire.ProtocolError, match=why):
        decode()


# -- against the real broker ---------------------------------------------------------------


def publish(port: int, messages: list[tuple[str, bytes, int, Properties | None]]) -> None:
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{time.monotonic_ns()}",
                      protocol=MQTTProtocolVersion.MQTTv5)
    connected = threading.Event()
    pub.on_connect = lambda *a: connected.set()
    pub.connect("127.0.0.1", port)
    pub.loop_start()
    try:
        assert connected.wait(10), "the publisher did not connect"
        for topic, payload, qos, properties in messages:
            info = pub.publish(topic, payload, qos=qos, properties=properties)
            info.wait_for_publish(10)
            assert info.is_published()
    finally:
        pub.disconnect()
        pub.loop_stop()


class RawSubscriber:
    """The gateway's client class, driven by hand: paho connects and subscribes, the bytes are
    read and split here, every PUBLISH decoded by mqttwire, the rest handed to paho."""

    def __init__(self, port: int, v5: bool, client_id: str = "wire-test") -> None:
        self.v5 = v5
        self.client = _BufferedClient(
            CallbackAPIVersion.VERSION2, client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
            clean_session=None if v5 else False, manual_ack=True)
        self.connack: list[bool] = []
        self.inbox: list[mqttwire.Publish] = []
        self.pongs = 0
        self.subacks = 0
        self.client.on_connect = lambda c, u, flags, rc, p: self.connack.append(
            bool(flags.session_present))
        self.client.on_subscribe = lambda c, u, mid, rc, p: self._subacked()
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 600
            self.client.connect("127.0.0.1", port, clean_start=False, properties=props)
        else:
            self.client.connect("127.0.0.1", port)
        self.pump(lambda: bool(self.connack))

    def _subacked(self) -> None:
        self.subacks += 1

    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)
        self.pump(lambda: self.subacks > 0)

    def pump(self, done: Any, timeout: float = 10.0) -> None:
        """Read until ``done()``; every PUBLISH that comes goes to ``inbox``."""
        deadline = time.monotonic() + timeout
        client = self.client
        while not done():
            assert time.monotonic() < deadline, f"timed out with {len(self.inbox)} messages"
            client.loop_write()
            sock = client.socket()
            assert sock is not None
            if not select.select([sock], [], [], 0.05)[0]:
                continue
            assert client.fill() > 0, "the broker closed the connection"
            while (head := mqttwire.frame(client.rbuf, client.rpos)) is not None:
                first, start, end = head
                if mqttwire.is_handled_publish(first):
                    self.inbox.append(mqttwire.publish(first, client.rbuf, start, end, self.v5))
                    client.rpos = end
                else:
                    self.pongs += first == 0xD0
                    client.hand(client.rpos, end)

    def sync(self) -> None:
        """A PINGREQ after what was sent, and its PINGRESP: the broker has taken all before it.
        (A session taken over by a new connection drops what its old one had not read yet.)"""
        pongs = self.pongs
        self.client.loop_write()
        sock = self.client.socket()
        assert isinstance(sock, socket.socket)
        sock.sendall(b"\xc0\x00")
        self.pump(lambda: self.pongs > pongs)

    def collect(self, n: int) -> list[mqttwire.Publish]:
        self.pump(lambda: len(self.inbox) >= n)
        got, self.inbox = self.inbox[:n], self.inbox[n:]
        return got

    def ack(self, mids: list[int]) -> None:
        self.client.queue_pubacks(mids)
        self.client.loop_write()

    def drop(self) -> None:
        """Gone without DISCONNECT, as a crash: the broker keeps the session."""
        sock = self.client.socket()
        assert sock is not None
        sock.close()


@pytest.mark.parametrize("v5", [True, False], ids=["mqtt5", "mqtt311"])
@settings(max_examples=5, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
# At most 20: Mosquitto sends no more unacknowledged QoS 1 messages (max_inflight_messages).
@given(messages=st.lists(st.tuples(broker_topics, payloads, st.integers(0, 1)), min_size=1,
                         max_size=20),
       props=mqtt5_properties)
def test_what_mosquitto_delivers_is_what_was_published_dup_after_a_resumed_session(
    mosquitto: PrivateMosquitto, v5: bool, messages: list[tuple[str, bytes, int]],
    props: dict[str, Any],
) -> None:
    client_id = f"wire-{time.monotonic_ns()}"
    sub = RawSubscriber(mosquitto.port, v5, client_id)
    sub.subscribe("#")
    properties = None
    if props:
        properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        for name, value in props.items():
            setattr(properties, name, value)
    publish(mosquitto.port, [(t, p, q, properties) for t, p, q in messages])
    got = sub.collect(len(messages))
    assert [(g.topic, g.payload, g.qos, g.dup) for g in got] == [
        (t.encode(), p, q, False) for t, p, q in messages]
    assert all(g.mid for g in got if g.qos)
    # A crash before the PUBACKs: the resumed session delivers every QoS 1 message again, DUP.
    sub.drop()
    again = RawSubscriber(mosquitto.port, v5, client_id)
    assert again.connack == [True]
    ones = [g for g in got if g.qos]
    redelivered = again.collect(len(ones))
    assert [(r.topic, r.payload, r.mid, r.dup) for r in redelivered] == [
        (g.topic, g.payload, g.mid, True) for g in ones]
    # Our PUBACKs, all in one write: the next resumed session holds nothing.
    again.ack([r.mid for r in redelivered])
    again.sync()
    again.drop()
    last = RawSubscriber(mosquitto.port, v5, client_id)
    assert last.connack == [True]
    # A queued message would come before a new one: the first to come must be the marker.
    publish(mosquitto.port, [("marker", b"after the acks", 1, None)])
    assert [(g.topic, g.dup) for g in last.collect(1)] == [(b"marker", False)]
    last.client.disconnect()
    last.client.loop_write()
