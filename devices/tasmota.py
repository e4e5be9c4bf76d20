"""Tasmota's ``tele/<topic>/SENSOR`` telemetry.

Shape (from Tasmota's documentation)::

    {"Time":"2026-11-28T14:02:11","AM2301":{"Temperature":29.4,"Humidity":78.2,"DewPoint":25.2},
     "TempUnit":"C"}

``Time`` is the device's local time without a zone, so the zone comes from the options (the
parks run on WITA, UTC+8). Every member that is an object is a sensor and becomes one reading
tagged ``sensor=<name in lower case>``; its numeric members become fields, named with their unit
where Tasmota's unit is known, and objects inside it are flattened with ``_``. Text, booleans
and arrays inside a sensor are not measurements (ids, counters' start times) and are skipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar

import orjson

from devices.reading import DecodeError, FieldValue, Reading
from devices.timeparse import TimePolicy, choose_time, iso8601_to_ns

_TEMP_UNITS = {"C": "c", "F": "f"}
_PRESSURE_UNITS = {"hPa": "hpa", "mmHg": "mmhg", "inHg": "inhg"}
# Tasmota member -> field name; "{t}" and "{p}" take the message's TempUnit and PressureUnit.
_NAMES = {
    "Temperature": "temperature_{t}",
    "DewPoint": "dew_point_{t}",
    "Humidity": "humidity_pct",
    "Pressure": "pressure_{p}",
    "SeaPressure": "sea_pressure_{p}",
    "Illuminance": "illuminance_lux",
    "Moisture": "moisture_pct",
    "CO2": "co2_ppm",
    # ENERGY (power-monitoring plugs), units as Tasmota's documentation gives them.
    "Voltage": "voltage_v",
    "Current": "current_a",
    "Power": "power_w",
    "ApparentPower": "apparent_power_va",
    "ReactivePower": "reactive_power_var",
    "Factor": "power_factor",
    "Frequency": "frequency_hz",
    "Total": "total_kwh",
    "Today": "today_kwh",
    "Yesterday": "yesterday_kwh",
}
_WORD_BREAK = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|[ \-]+")
# Tasmota nests one level (a sensor's ENERGY); anything far deeper is not Tasmota, and the limit
# keeps the recursion well inside Python's.
_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Options:
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    measurement: str = "garden_env"
    topic_prefix: str = "tele"
    # The device's clock is local time without a zone: WITA (Kutai Timur) is UTC+8.
    utc_offset_minutes: int = 480
    time: TimePolicy = field(default_factory=TimePolicy)
    rename: Mapping[str, str] = field(default_factory=dict)


def decode(topic: str, payload: bytes, received_at_ns: int, opts: Options) -> list[Reading]:
    head = opts.topic_prefix + "/"
    parts = topic[len(head) :].split("/") if topic.startswith(head) else ()
    if len(parts) != 2 or parts[1] != "SENSOR":
        raise DecodeError(
            f"topic is not {opts.topic_prefix}/<topic>/SENSOR",
            source=topic,
            payload=payload,
            kind="unknown_topic",
        )
    device = parts[0]
    try:
        return _decode(payload, device, received_at_ns, opts)
    except DecodeError as exc:
        # The helpers below do not know where the bytes came from; the error learns it here.
        exc.source, exc.device, exc.payload = topic, device, payload
        raise


def _decode(payload: bytes, device: str, received_at_ns: int, opts: Options) -> list[Reading]:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"payload is not JSON: {exc}") from exc
    if type(obj) is not dict:
        raise DecodeError("payload is not a JSON object")
    units = (
        _unit(obj, "TempUnit", "C", _TEMP_UNITS),
        _unit(obj, "PressureUnit", "hPa", _PRESSURE_UNITS),
    )
    device_time = obj.get("Time")
    device_ns = None if device_time is None else iso8601_to_ns(device_time, opts.utc_offset_minutes)
    time_ns = choose_time(device_ns, received_at_ns, opts.time)

    readings: list[Reading] = []
    for sensor, members in obj.items():
        if type(members) is not dict:
            continue
        fields: dict[str, FieldValue] = {}
        _flatten(members, "", units, opts.rename, fields, 0)
        if fields:
            readings.append(
                Reading.build(
                    opts.measurement,
                    {"device": device, "sensor": sensor.lower()},
                    fields,
                    time_ns,
                )
            )
    return readings


def _unit(obj: dict[str, Any], key: str, default: str, known: Mapping[str, str]) -> str:
    given = obj.get(key, default)
    unit = known.get(given) if type(given) is str else None
    if unit is None:
        raise DecodeError(f"{key} {given!r} is not one of {', '.join(known)}")
    return unit


def _flatten(
    members: dict[str, Any],
    prefix: str,
    units: tuple[str, str],
    rename: Mapping[str, str],
    out: dict[str, FieldValue],
    depth: int,
) -> None:
    if depth > _MAX_DEPTH:
        raise DecodeError(f"sensor objects nested deeper than {_MAX_DEPTH}")
    for key, value in members.items():
        kind = type(value)
        if kind is int or kind is float:
            name = prefix + _field_name(key, *units)
            name = rename.get(name, name)
            if name in out:
                raise DecodeError(f"field {name!r} repeated", kind="bad_name")
            # Always a float: Tasmota prints 29 after 29.4, and InfluxDB would refuse the int.
            out[name] = float(value)
        elif kind is dict:
            _flatten(value, f"{prefix}{_snake(key)}_", units, rename, out, depth + 1)


@lru_cache(maxsize=1024)
def _field_name(key: str, temp_unit: str, pressure_unit: str) -> str:
    known = _NAMES.get(key)
    return _snake(key) if known is None else known.format(t=temp_unit, p=pressure_unit)


@lru_cache(maxsize=512)
def _snake(key: str) -> str:
    return _WORD_BREAK.sub("_", key).lower()
