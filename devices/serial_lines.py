"""One text line from a serial sensor (an Arduino or ESP32 sketch, a logger on RS485) to a reading.

:class:`devices.lines.LineFramer` cuts the stream into lines; :func:`decode` turns one line into
one :class:`~devices.reading.Reading`, tagged ``device``, or raises
:class:`~devices.reading.DecodeError` with ``source`` the port, ``payload`` the line's bytes and
``device`` when it is known. Three formats, chosen per port in ``Options.format``::

    json  {"id": "kebun-2", "t": 29.5, "h": 78.2, "pump": true}
    kv    id=kebun-2 t=29.5 h=78.2 rain_mm=0       (or t=29.5,h=78.2 / t=29.5;h=78.2)
    csv   kebun-2,29.5,78.2,0                      (columns: [device, t, h, rain_mm])

The device is the value at ``device_key`` when the line has it, else the fixed ``device``.
``time_key`` names the member (json, kv) or column (csv) holding the device's time: epoch
seconds, milliseconds, microseconds or nanoseconds, or ISO 8601; without one, or when it is not
plausible (see :class:`~devices.timeparse.TimePolicy`), the reading takes the receive time.

Values in kv and csv are text, read as an integer when they look like one, else as a finite
float, else ``true``/``false`` (any case) as a boolean, else kept as text. ``nan`` (any case,
with or without a sign) is what sensor libraries print for a failed read: that field is left
out, as is an empty value; a line left with no fields yields no reading, not an error. An
infinite value (``inf``, ``1e999``) is refused with kind ``"nan"``, as in JSON.

With ``checksum="nmea"`` every line must end with ``*hh``: two hex digits equal to the XOR of
the bytes between an optional leading ``$`` and the ``*`` (an Arduino computes it in a loop of
two lines). ``$`` and ``*hh`` are removed before the line is parsed; a missing or wrong
checksum is refused with kind ``"checksum"``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import reduce
from operator import xor
from typing import Any, ClassVar, Literal

import orjson

from devices.reading import DecodeError, FieldValue, Reading, whole_numbers_as_floats
from devices.timeparse import (
    TimePolicy,
    choose_time,
    epoch_to_ns,
    iso8601_to_ns,
    json_time_to_ns,
)

_SCALARS = (int, float, bool, str)
_JSON_NAMES = {type(None): "null", list: "an array", dict: "an object"}
_SPACE = b" \t\r\n"
_NMEA = re.compile(rb"\$?(.*)\*([0-9A-Fa-f]{2})", re.DOTALL)
_KV_SEPARATORS = re.compile(r"[\s,;]+")
# 19 digits at most: int() of a longer digit string is beyond int64 anyway, and slow.
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NANS = frozenset({"nan", "-nan", "+nan"})
_INFINITIES = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})
_BOOLS = {"true": True, "false": False}
_SKIPPED_COLUMNS = frozenset({"", "-"})


@dataclass(frozen=True, slots=True)
class Options:
    # A misspelt key in the config must be an error, not a silently ignored setting.
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    format: Literal["json", "kv", "csv"] = "json"
    device: str = ""
    device_key: str = ""
    measurement: str = "garden_sensor"
    columns: tuple[str, ...] = ()
    separator: str = ","
    time_key: str = ""
    default_utc_offset_minutes: int = 0
    checksum: Literal["none", "nmea"] = "none"
    time: TimePolicy = field(default_factory=TimePolicy)
    rename: Mapping[str, str] = field(default_factory=dict)
    # "float": whole numbers are stored as floats (see whole_numbers_as_floats); "int" keeps
    # them, for exact counters from firmware that always prints integers.
    integers: Literal["float", "int"] = "float"

    def __post_init__(self) -> None:
        if not self.separator:
            raise ValueError("separator must not be empty")


def decode(port: str, line: bytes, received_at_ns: int, opts: Options) -> list[Reading]:
    """The reading in one line (``[]`` when every value was ``nan``), or :class:`DecodeError`."""
    # The fixed device is known from the start unless the line itself may name another one.
    device = "" if opts.device_key else opts.device
    try:
        body = line.strip(_SPACE)
        if opts.checksum == "nmea":
            body = _verify_nmea(body)
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError("line is not UTF-8 text") from exc
        if opts.format == "json":
            obj = _json_object(text)
            if opts.device_key:
                device = _device(obj.get(opts.device_key), opts)
            device_ns, fields, skipped = _json_fields(obj, opts)
        else:
            pairs = _kv_pairs(text) if opts.format == "kv" else _csv_pairs(text, opts)
            if opts.device_key:
                device = _device(_find(pairs, opts.device_key), opts)
            device_ns, fields, skipped = _text_fields(pairs, opts)
        if not device:
            raise DecodeError(
                "no device: the line does not name one and no fixed device is configured",
                kind="unknown_device",
            )
        if not fields:
            if skipped:
                return []
            raise DecodeError("line has no fields", kind="empty")
        return [
            Reading(
                opts.measurement,
                (("device", device),),
                whole_numbers_as_floats(fields, opts.integers),
                choose_time(device_ns, received_at_ns, opts.time),
            )
        ]
    except DecodeError as exc:
        # The helpers and Reading do not know where the bytes came from; the error learns it here.
        exc.source, exc.device, exc.payload = port, device, line
        raise


def _verify_nmea(body: bytes) -> bytes:
    match = _NMEA.fullmatch(body)
    if match is None:
        raise DecodeError("line does not end with an NMEA checksum *hh", kind="checksum")
    data, given = match.groups()
    expected = reduce(xor, data, 0)
    if int(given, 16) != expected:
        raise DecodeError(
            f"NMEA checksum {given.decode().upper()} does not match the line ({expected:02X})",
            kind="checksum",
        )
    return data.strip(_SPACE)


def _json_object(text: str) -> dict[str, Any]:
    try:
        obj = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        # orjson refuses NaN and Infinity, so they end up here too.
        raise DecodeError(f"line is not JSON: {exc}") from exc
    if type(obj) is not dict:
        raise DecodeError("line is not a JSON object")
    return obj


def _json_fields(
    obj: dict[str, Any], opts: Options
) -> tuple[int | None, list[tuple[str, FieldValue]], bool]:
    device_key, time_key, rename = opts.device_key, opts.time_key, opts.rename
    device_ns: int | None = None
    fields: list[tuple[str, FieldValue]] = []
    for key, value in obj.items():
        if time_key and key == time_key:
            device_ns = json_time_to_ns(value, opts.default_utc_offset_minutes)
        elif device_key and key == device_key:
            continue
        # orjson builds exact built-in types, so a type lookup is enough (and bool is kept).
        elif type(value) in _SCALARS:
            fields.append((rename.get(key, key) if rename else key, value))
        else:
            raise DecodeError(
                f"field {key!r} is {_describe(value)}, not a number, boolean or text",
                kind="wrong_type",
            )
    return device_ns, fields, False


def _kv_pairs(text: str) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for token in _KV_SEPARATORS.split(text):
        if not token:  # separators at the start or end of the line
            continue
        key, eq, value = token.partition("=")
        if not eq or not key:
            raise DecodeError(f"{token[:32]!r} is not key=value")
        pairs.append((key, value))
    return pairs


def _csv_pairs(text: str, opts: Options) -> list[tuple[str, str]]:
    columns = opts.columns
    if not columns:
        raise DecodeError("csv needs columns: none are configured")
    values = text.split(opts.separator)
    if len(values) != len(columns):
        raise DecodeError(f"csv line has {len(values)} values, expected {len(columns)} columns")
    return [
        (name, value.strip(" \t"))
        for name, value in zip(columns, values, strict=True)
        if name not in _SKIPPED_COLUMNS
    ]


def _find(pairs: list[tuple[str, str]], key: str) -> str | None:
    for name, value in pairs:
        if name == key:
            return value
    return None


def _text_fields(
    pairs: list[tuple[str, str]], opts: Options
) -> tuple[int | None, list[tuple[str, FieldValue]], bool]:
    """kv and csv: values typed from their text; a missing sample (nan, empty) is skipped."""
    device_key, time_key, rename = opts.device_key, opts.time_key, opts.rename
    device_ns: int | None = None
    fields: list[tuple[str, FieldValue]] = []
    skipped = False
    for key, text in pairs:
        if time_key and key == time_key:
            device_ns = _text_time(text, opts.default_utc_offset_minutes)
        elif device_key and key == device_key:
            continue
        else:
            value = _typed(key, text)
            if value is None:
                skipped = True
            else:
                fields.append((rename.get(key, key) if rename else key, value))
    return device_ns, fields, skipped


def _typed(key: str, text: str) -> FieldValue | None:
    """A kv or csv value with its type, or None for a missing sample (``nan``, empty)."""
    if not text:
        return None
    if _INTEGER.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        number = float(text)
        if not math.isfinite(number):
            raise DecodeError(f"field {key!r}: {text[:32]} is not a finite number", kind="nan")
        return number
    lowered = text.lower()
    if lowered in _BOOLS:
        return _BOOLS[lowered]
    if lowered in _NANS:
        return None
    if lowered in _INFINITIES:
        raise DecodeError(f"field {key!r}: {text} is not a finite number", kind="nan")
    return text


def _text_time(text: str, offset_minutes: int) -> int | None:
    if not text:  # an empty time column: no device time
        return None
    if _INTEGER.fullmatch(text):
        return epoch_to_ns(int(text))
    if _FLOAT.fullmatch(text):
        return epoch_to_ns(float(text))
    return iso8601_to_ns(text, offset_minutes)


def _device(found: object, opts: Options) -> str:
    """The device the line names at ``device_key``, else the fixed one (possibly "")."""
    if type(found) is str:
        if found:
            return found
    # Numeric ids are common in cheap firmware; as text they make the same tag.
    elif type(found) is int:
        return str(found)
    # null, like an absent key, leaves the device to the fixed id.
    elif found is not None:
        raise DecodeError(
            f"device key {opts.device_key!r} is {_describe(found)}, not text or an integer",
            kind="wrong_type",
        )
    return opts.device


def _describe(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)
