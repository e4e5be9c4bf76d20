"""Presence messages: a device saying itself that it is online or offline.

Each is usually the device's MQTT last will, retained by the broker:

- native: ``<prefix>/<site>/<device>/status`` with ``online`` / ``offline``;
- Tasmota: ``<prefix>/<topic>/LWT`` with ``Online`` / ``Offline``;
- ESPHome: ``<node>/status`` with ``online`` / ``offline``.

:func:`parse` returns a :class:`Presence` for such a topic, or None when the topic is not a
presence topic of that format (the message is then a reading, for the format's decoder). A
presence topic with any other payload is malformed and raises :class:`DecodeError`. Pure: the
caller knows the time.
"""

from __future__ import annotations

from dataclasses import dataclass

from devices.reading import DecodeError

_WORDS = {b"online": True, b"offline": False}


@dataclass(frozen=True, slots=True)
class Presence:
    device: str
    site: str | None
    online: bool
    # How the device said it, for the outage's cause: "status online", "LWT Offline".
    said: str


def _word(payload: bytes, topic: str, device: str, what: str) -> tuple[bool, str]:
    text = payload.strip().rstrip(b"\0")
    online = _WORDS.get(text.lower())
    if online is None:
        raise DecodeError(f"{what} payload is not online/offline", source=topic, device=device,
                          payload=payload, kind="malformed")
    return online, f"{what} {text.decode('ascii')}"


def native(topic: str, payload: bytes, prefix: str = "garden") -> Presence | None:
    if not topic.endswith("/status"):
        return None
    parts = topic.split("/")
    if len(parts) != 4 or parts[0] != prefix or parts[3] != "status" or not all(parts[1:3]):
        return None
    online, said = _word(payload, topic, parts[2], "status")
    return Presence(parts[2], parts[1], online, said)


def tasmota(topic: str, payload: bytes, prefix: str = "tele") -> Presence | None:
    if not topic.endswith("/LWT"):
        return None
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != prefix or parts[2] != "LWT" or not parts[1]:
        return None
    online, said = _word(payload, topic, parts[1], "LWT")
    return Presence(parts[1], None, online, said)


def esphome(topic: str, payload: bytes) -> Presence | None:
    if not topic.endswith("/status"):
        return None
    parts = topic.split("/")
    if len(parts) != 2 or parts[1] != "status" or not parts[0]:
        return None
    online, said = _word(payload, topic, parts[0], "status")
    return Presence(parts[0], None, online, said)
