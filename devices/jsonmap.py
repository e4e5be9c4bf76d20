"""Generic JSON, mapped by configuration: for devices that speak JSON but no format of their own.

``Options.fields`` maps a dotted path in the payload (``"env.t"``) to an output field name
(``"temperature_c"``). The payload is one object, or an array of objects giving one reading
each. The device comes from, in this order, the first that yields one: the value at
``device_key``, the topic level ``device_topic_level``, the fixed ``device``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Literal

import orjson

from devices.reading import DecodeError, FieldValue, Reading, whole_numbers_as_floats
from devices.timeparse import TimePolicy, choose_time, json_time_to_ns

_SCALARS = (int, float, bool, str)
_JSON_NAMES = {type(None): "null", list: "an array", dict: "an object"}
_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class Options:
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    measurement: str = "sensor"
    fields: Mapping[str, str] = field(default_factory=dict)
    device: str = ""
    device_key: str = ""
    device_topic_level: int | None = None
    time_key: str = ""
    default_utc_offset_minutes: int = 0
    time: TimePolicy = field(default_factory=TimePolicy)
    rename: Mapping[str, str] = field(default_factory=dict)
    # "float": whole numbers are stored as floats (see whole_numbers_as_floats); "int" keeps
    # them, for exact counters from firmware that always prints integers.
    integers: Literal["float", "int"] = "float"


def decode(topic: str, payload: bytes, received_at_ns: int, opts: Options) -> list[Reading]:
    topic_device = ""
    if opts.device_topic_level is not None:
        levels = topic.split("/")
        if -len(levels) <= opts.device_topic_level < len(levels):
            topic_device = levels[opts.device_topic_level]
    device = ""
    try:
        try:
            obj = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"payload is not JSON: {exc}") from exc
        if type(obj) is dict:
            items: list[Any] = [obj]
        elif type(obj) is list:
            items = obj
        else:
            raise DecodeError("payload is not a JSON object or an array of objects")
        readings: list[Reading] = []
        for item in items:
            if type(item) is not dict:
                raise DecodeError("array member is not a JSON object")
            device = _device(item, topic_device, opts)
            readings.append(_reading(item, device, received_at_ns, opts))
        return readings
    except DecodeError as exc:
        # The helpers below do not know where the bytes came from; the error learns it here.
        exc.source, exc.device, exc.payload = topic, device, payload
        raise


def _device(item: dict[str, Any], topic_device: str, opts: Options) -> str:
    if opts.device_key:
        found = _lookup(item, opts.device_key)
        if type(found) is str:
            if found:
                return found
        # Numeric ids are common in cheap firmware; as text they make the same tag.
        elif type(found) is int:
            return str(found)
        # null, like an absent key, leaves the device to the topic or the fixed id.
        elif found is not _MISSING and found is not None:
            raise DecodeError(
                f"device key {opts.device_key!r} is {_describe(found)}, not text or an integer",
                kind="wrong_type",
            )
    if topic_device:
        return topic_device
    if opts.device:
        return opts.device
    raise DecodeError(
        "no device: device_key absent and no topic level or fixed device", kind="unknown_device"
    )


def _reading(item: dict[str, Any], device: str, received_at_ns: int, opts: Options) -> Reading:
    rename = opts.rename
    fields: list[tuple[str, FieldValue]] = []
    for path, name in opts.fields.items():
        value = _lookup(item, path)
        if value is _MISSING:
            continue
        if type(value) not in _SCALARS:
            raise DecodeError(
                f"{path!r} is {_describe(value)}, not a number, boolean or text",
                kind="wrong_type",
            )
        fields.append((rename.get(name, name) if rename else name, value))
    if not fields:
        raise DecodeError(
            f"none of the mapped keys ({', '.join(opts.fields)}) is in the payload", kind="empty"
        )
    device_ns: int | None = None
    if opts.time_key:
        stamp = _lookup(item, opts.time_key)
        if stamp is not _MISSING:
            device_ns = json_time_to_ns(stamp, opts.default_utc_offset_minutes)
    return Reading(
        opts.measurement,
        (("device", device),),
        whole_numbers_as_floats(fields, opts.integers),
        choose_time(device_ns, received_at_ns, opts.time),
    )


def _lookup(item: dict[str, Any], path: str) -> Any:
    """The value at a dotted path, or ``_MISSING``."""
    # A key may itself contain a dot ("PM2.5"); the literal key wins.
    if path in item:
        return item[path]
    value: Any = item
    for i, part in enumerate(_split(path)):
        if type(value) is not dict:
            raise DecodeError(
                f"{'.'.join(_split(path)[:i])!r} is {_describe(value)}, not an object",
                kind="wrong_type",
            )
        value = value.get(part, _MISSING)
        if value is _MISSING:
            return _MISSING
    return value


@lru_cache(maxsize=256)
def _split(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def _describe(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)
