"""The two MQTT packets of the hot path, read and written by the gateway itself: PUBLISH in,
PUBACK out. Sans-IO: bytes in, values out; no socket, no clock, no state.

paho-mqtt keeps the connection (CONNECT and CONNACK, SUBSCRIBE, keepalive, TLS, our own
publishes, DISCONNECT). For every PUBLISH paho builds a message object and, for MQTT 5, a
``Properties`` object, and reads the packet with several ``recv`` calls: most of the gateway's
CPU per reading went there (README, "Benchmark"). :class:`~gateway.sources.mqtt.MqttSource`
therefore reads the socket into a buffer itself, splits it into packets with :func:`frame`,
decodes the PUBLISH packets at QoS 0 and 1 with :func:`publish`, and hands every other packet
to paho, which reads it from that same buffer. The PUBACKs of one commit leave as one write
(:func:`pubacks`).

Tested against paho's own encoder and against Mosquitto (tests/test_mqttwire.py).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

PUBLISH = 0x30
PUBACK = 0x40
# A PUBACK without reason code (success), MQTT 3.1.1 and 5 alike: 0x40 0x02 <packet id>.
_PUBACK_WORD = 0x4002_0000


class ProtocolError(ValueError):
    """Bytes that are not MQTT: the connection cannot go on."""


class Publish(NamedTuple):
    topic: bytes
    payload: bytes
    mid: int  # the packet identifier; 0 at QoS 0
    qos: int
    dup: bool
    retain: bool


def _varint(buf: bytes, i: int, end: int, what: str) -> tuple[int, int] | None:
    """The variable byte integer at ``i`` (MQTT 1.5.5) and where it ends; None when it runs
    past ``end``."""
    value = 0
    shift = 0
    while True:
        if i >= end:
            return None
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 21:
            raise ProtocolError(f"{what} longer than four bytes")


def frame(buf: bytes, pos: int) -> tuple[int, int, int] | None:
    """The packet that starts at ``pos``: (its first byte, where its variable header starts,
    where it ends); None while the buffer does not hold all of it yet."""
    n = len(buf)
    length = _varint(buf, pos + 1, n, "remaining length")
    if length is None or length[1] + length[0] > n:
        return None
    return buf[pos], length[1], length[1] + length[0]


def is_handled_publish(first: int) -> bool:
    """A PUBLISH at QoS 0 or 1: ours to decode. QoS 2 (never granted by our subscriptions)
    and every other packet go to paho."""
    return first & 0xF0 == PUBLISH and first & 0x06 != 0x04


def publish(first: int, buf: bytes, start: int, end: int, v5: bool) -> Publish:
    """Decode the PUBLISH packet ``buf[start:end]`` (after its fixed header ``first``).

    MQTT 5 properties are skipped: the gateway asks for no topic aliases and reads nothing
    a publisher may attach (user properties, content type, expiry)."""
    qos = (first >> 1) & 0x03
    if qos == 3:
        raise ProtocolError("PUBLISH with QoS 3")
    if start + 2 > end:
        raise ProtocolError("PUBLISH too short for its topic length")
    p = start + 2 + (buf[start] << 8 | buf[start + 1])
    topic = buf[start + 2:p]
    mid = 0
    if qos:
        if p + 2 > end:
            raise ProtocolError("PUBLISH too short for its packet identifier")
        mid = buf[p] << 8 | buf[p + 1]
        p += 2
        if mid == 0:
            raise ProtocolError("PUBLISH at QoS 1 with packet identifier 0")
    if v5:
        properties = _varint(buf, p, end, "property length")
        if properties is None:
            raise ProtocolError("PUBLISH properties cut short")
        p = properties[1] + properties[0]
    if p > end:
        raise ProtocolError("PUBLISH shorter than its topic and properties")
    if not topic:
        raise ProtocolError("PUBLISH without a topic (the gateway allows no topic aliases)")
    return Publish(topic, buf[p:end], mid, qos, bool(first & 0x08), bool(first & 0x01))


def pubacks(mids: list[int]) -> bytes:
    """The PUBACKs of these packet identifiers, as one write."""
    return struct.pack(f">{len(mids)}I", *[_PUBACK_WORD | mid for mid in mids])
