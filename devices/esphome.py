"""ESPHome's MQTT state topics: ``<prefix...>/<node>/<component>/<object_id>/state``.

The payload is the bare value: ``23.50`` for a sensor (``nan`` while it has no reading),
``ON``/``OFF`` for a binary sensor. Text sensors carry free-form text, which is not a
measurement, and yield nothing. ESPHome sends no timestamp, so readings take the receive time.
Field names are the object ids; ``rename`` gives them their units.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from devices.reading import DecodeError, FieldValue, Reading
from devices.timeparse import TimePolicy

_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BINARY = {"ON": True, "OFF": False}
_INFINITIES = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})


@dataclass(frozen=True, slots=True)
class Options:
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    measurement: str = "garden_sensor"
    # ESPHome sends no time of its own; kept so that every format's options look alike.
    time: TimePolicy = field(default_factory=TimePolicy)
    rename: Mapping[str, str] = field(default_factory=dict)


def decode(topic: str, payload: bytes, received_at_ns: int, opts: Options) -> list[Reading]:
    parts = topic.split("/")
    if (
        len(parts) < 4
        or parts[-1] != "state"
        or parts[-3] not in ("sensor", "binary_sensor", "text_sensor")
    ):
        raise DecodeError(
            "topic is not <node>/{sensor,binary_sensor,text_sensor}/<object_id>/state",
            source=topic,
            payload=payload,
            kind="unknown_topic",
        )
    node, component, object_id = parts[-4], parts[-3], parts[-2]
    if component == "text_sensor":
        return []
    try:
        text = payload.strip(b" \t\r\n").decode("ascii")
        value: FieldValue
        if component == "sensor":
            if _NUMBER.fullmatch(text):
                value = float(text)
            elif text.lower() == "nan":
                return []
            elif text.lower() in _INFINITIES:
                raise DecodeError(f"sensor value {text!r} is not finite", kind="nan")
            else:
                raise DecodeError(f"sensor value {text[:32]!r} is not a number")
        else:
            binary = _BINARY.get(text.upper())
            if binary is None:
                raise DecodeError(f"binary sensor value {text[:32]!r} is not ON or OFF")
            value = binary
        name = opts.rename.get(object_id, object_id)
        return [Reading(opts.measurement, (("device", node),), ((name, value),), received_at_ns)]
    except UnicodeDecodeError as exc:
        raise DecodeError(
            "payload is not ASCII text", source=topic, device=node, payload=payload
        ) from exc
    except DecodeError as exc:
        # Reading does not know where the bytes came from; the error learns it here.
        exc.source, exc.device, exc.payload = topic, node, payload
        raise
