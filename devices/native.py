"""The gateway's own format: ``<prefix>/<site>/<device>/telemetry`` with a JSON object of fields.

An optional ``"ts"`` member is the device's time (epoch seconds, milliseconds, microseconds or
nanoseconds, or ISO 8601 text); every other member is a field. One message, one reading.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

import orjson

from devices.reading import DecodeError, FieldValue, Reading, whole_numbers_as_floats
from devices.timeparse import TimePolicy, choose_time, json_time_to_ns

_SCALARS = (int, float, bool, str)
_JSON_NAMES = {type(None): "null", list: "an array", dict: "an object"}


@dataclass(frozen=True, slots=True)
class Options:
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    measurement: str = "garden_sensor"
    topic_prefix: str = "garden"
    default_utc_offset_minutes: int = 0
    time: TimePolicy = field(default_factory=TimePolicy)
    rename: Mapping[str, str] = field(default_factory=dict)
    # "float": whole numbers are stored as floats (see whole_numbers_as_floats); "int" keeps
    # them, for exact counters from firmware that always prints integers.
    integers: Literal["float", "int"] = "float"


def decode(topic: str, payload: bytes, received_at_ns: int, opts: Options) -> list[Reading]:
    head = opts.topic_prefix + "/"
    parts = topic[len(head) :].split("/") if topic.startswith(head) else ()
    if len(parts) != 3 or parts[2] != "telemetry":
        raise DecodeError(
            f"topic is not {opts.topic_prefix}/<site>/<device>/telemetry",
            source=topic,
            payload=payload,
            kind="unknown_topic",
        )
    site, device = parts[0], parts[1]
    try:
        return [_reading(payload, site, device, received_at_ns, opts)]
    except DecodeError as exc:
        # Reading and the time helpers do not know where the bytes came from; the error
        # learns it here instead of every call carrying topic and payload along.
        exc.source, exc.device, exc.payload = topic, device, payload
        raise


def _reading(payload: bytes, site: str, device: str, received_at_ns: int, opts: Options) -> Reading:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN and Infinity, so they end up here too.
        raise DecodeError(f"payload is not JSON: {exc}") from exc
    if type(obj) is not dict:
        raise DecodeError("payload is not a JSON object")
    rename = opts.rename
    device_ns: int | None = None
    fields: list[tuple[str, FieldValue]] = []
    for key, value in obj.items():
        if key == "ts":
            device_ns = json_time_to_ns(value, opts.default_utc_offset_minutes)
        # orjson builds exact built-in types, so a type lookup is enough (and bool is kept).
        elif type(value) in _SCALARS:
            fields.append((rename.get(key, key) if rename else key, value))
        else:
            raise DecodeError(
                f"field {key!r} is {_JSON_NAMES.get(type(value), type(value).__name__)}, "
                "not a number, boolean or text",
                kind="wrong_type",
            )
    if not fields:
        raise DecodeError("payload has no fields", kind="empty")
    return Reading(
        opts.measurement,
        (("device", device), ("site", site)),
        whole_numbers_as_floats(fields, opts.integers),
        choose_time(device_ns, received_at_ns, opts.time),
    )
