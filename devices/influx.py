"""InfluxDB line protocol, as Telegraf's MQTT output (``data_format = "influx"``) sends it.

One or more lines separated by ``\\n``; blank lines and ``#`` comments are skipped::

    measurement[,tag=value...] field=value[,field=value...] [timestamp]

Escapes: in the measurement ``\\,`` and ``\\ ``; in tag keys, tag values and field keys ``\\,``,
``\\=`` and ``\\ ``; in double-quoted string values ``\\"`` and ``\\\\``. Any other backslash
is literal, which makes this the inverse of :func:`gateway.store.lineproto.encode` for every reading
:class:`~devices.reading.Reading` accepts. (A backslash before a backslash in a name is kept
as written, as InfluxDB 1.x does, and Reading then refuses the name as ambiguous.)

Field values: ``1.5``/``-2e-3`` floats, ``12i`` integers, ``12u`` unsigned integers (stored as
integers), ``t``/``true``/``F``/``FALSE``... booleans, ``"text"`` strings. The timestamp is an
integer in ``Options.precision``; without one the receive time is used.

The device is the tag named ``Options.device_tag`` (Telegraf's ``host``), renamed ``device``,
unless the line has a ``device`` tag already. A message is decoded whole: one bad line refuses
it all, naming the line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from devices.reading import DecodeError, FieldValue, Reading
from devices.timeparse import TimePolicy, choose_time

_INT64_MAX = 2**63 - 1
_PRECISION = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}

# A backslash pairs with the character after it while scanning, as in InfluxDB's own scanner,
# so an escaped delimiter never ends a token. The unrolled form keeps the regex engine linear.
_MEASUREMENT = re.compile(r"[^\\, ]*(?:\\.[^\\, ]*)*", re.DOTALL)
_KEY = re.compile(r"[^\\,= ]*(?:\\.[^\\,= ]*)*", re.DOTALL)
_STRING = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"', re.DOTALL)
_BARE = re.compile(r"[^, ]*")
_MEASUREMENT_ESCAPE = re.compile(r"\\([, ])")
_KEY_ESCAPE = re.compile(r"\\([,= ])")
_STRING_ESCAPE = re.compile(r'\\(["\\])')
_SPACES = re.compile(r" *")
_INTEGER = re.compile(r"-?[0-9]+")
_UNSIGNED = re.compile(r"[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_BOOLEANS = {
    "t": True,
    "T": True,
    "true": True,
    "True": True,
    "TRUE": True,
    "f": False,
    "F": False,
    "false": False,
    "False": False,
    "FALSE": False,
}
# Longer digit strings are out of 64-bit range anyway, and int() refuses very long ones with a
# ValueError of its own.
_MAX_DIGITS = 20


@dataclass(frozen=True, slots=True)
class Options:
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    # Unused: every line names its measurement. Present so every format's options look alike.
    measurement: str = "telegraf"
    precision: Literal["ns", "us", "ms", "s"] = "ns"
    device_tag: str = "host"
    time: TimePolicy = field(default_factory=TimePolicy)
    rename: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in _PRECISION:
            raise ValueError(f"precision must be one of {', '.join(_PRECISION)}")


def decode(topic: str, payload: bytes, received_at_ns: int, opts: Options) -> list[Reading]:
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DecodeError("payload is not UTF-8 text", source=topic, payload=payload) from exc
    readings: list[Reading] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.strip(" \t\r")
        if not line or line[0] == "#":
            continue
        parser = _Line(line)
        try:
            readings.append(parser.parse(received_at_ns, opts))
        except DecodeError as exc:
            raise DecodeError(
                f"line {number}: {exc.reason}",
                source=topic,
                device=parser.device,
                payload=payload,
                kind=exc.kind,
            ) from exc
    return readings


class _Line:
    """One line's parser; ``device`` is kept so that an error can name it."""

    __slots__ = ("device", "line", "pos")

    def __init__(self, line: str) -> None:
        self.line = line
        self.pos = 0
        self.device = ""

    def parse(self, received_at_ns: int, opts: Options) -> Reading:
        line = self.line
        measurement = self._token(_MEASUREMENT, "measurement")
        if "\\" in measurement:
            measurement = _MEASUREMENT_ESCAPE.sub(r"\1", measurement)

        tags: dict[str, str] = {}
        while line.startswith(",", self.pos):
            self.pos += 1
            key = self._key("tag key")
            self._expect("=", f"'=' after tag key {key!r}")
            value = self._key(f"tag {key!r} value")
            if key in tags:
                raise DecodeError(f"tag {key!r} repeated")
            tags[key] = value
        self.device = tags.get("device") or tags.get(opts.device_tag, "")

        self._spaces("a space before the fields")
        rename = opts.rename
        fields: dict[str, FieldValue] = {}
        while True:
            key = self._key("field key")
            self._expect("=", f"'=' after field key {key!r}")
            if rename:
                key = rename.get(key, key)
            if key in fields:
                raise DecodeError(f"field {key!r} repeated", kind="bad_name")
            fields[key] = self._value(key)
            if not line.startswith(",", self.pos):
                break
            self.pos += 1

        device_ns: int | None = None
        if self.pos < len(line):
            self._spaces("a space before the timestamp")
            device_ns = self._timestamp(line[self.pos :], _PRECISION[opts.precision])
        # Checked once the line is known to be well formed, so that garbage is called malformed.
        if "device" not in tags:
            if opts.device_tag not in tags:
                raise DecodeError(
                    f"no {opts.device_tag!r} or 'device' tag to name the device",
                    kind="unknown_device",
                )
            tags["device"] = tags.pop(opts.device_tag)
        return Reading(
            measurement,
            tuple(sorted(tags.items())),
            tuple(fields.items()),
            choose_time(device_ns, received_at_ns, opts.time),
        )

    def _token(self, pattern: re.Pattern[str], what: str) -> str:
        start = self.pos
        end = _end(pattern, self.line, start)
        if end == start:
            raise DecodeError(f"{what} missing at column {start + 1}")
        self.pos = end
        return self.line[start:end]

    def _key(self, what: str) -> str:
        key = self._token(_KEY, what)
        return _KEY_ESCAPE.sub(r"\1", key) if "\\" in key else key

    def _expect(self, char: str, what: str) -> None:
        if not self.line.startswith(char, self.pos):
            raise DecodeError(f"expected {what} at column {self.pos + 1}")
        self.pos += 1

    def _spaces(self, what: str) -> None:
        start = self.pos
        end = _end(_SPACES, self.line, start)
        if end == start:
            raise DecodeError(f"expected {what} at column {start + 1}")
        self.pos = end

    def _value(self, key: str) -> FieldValue:
        line, pos = self.line, self.pos
        if line.startswith('"', pos):
            match = _STRING.match(line, pos)
            if match is None:
                raise DecodeError(f"field {key!r}: string without its closing quote")
            self.pos = match.end()
            text = match.group(1)
            return _STRING_ESCAPE.sub(r"\1", text) if "\\" in text else text
        text = self._token(_BARE, f"field {key!r} value")
        last = text[-1]
        if last == "i" and _INTEGER.fullmatch(text, 0, len(text) - 1):
            return _integer(key, text[:-1])
        if last == "u" and _UNSIGNED.fullmatch(text, 0, len(text) - 1):
            return _integer(key, text[:-1])
        boolean = _BOOLEANS.get(text)
        if boolean is not None:
            return boolean
        if _FLOAT.fullmatch(text):
            return float(text)
        raise DecodeError(f"field {key!r}: {text[:32]!r} is not a line protocol value")

    def _timestamp(self, text: str, scale: int) -> int:
        if not _INTEGER.fullmatch(text):
            raise DecodeError(f"timestamp {text[:32]!r} is not an integer")
        if len(text) > _MAX_DIGITS:
            raise DecodeError(f"timestamp {text[:32]!r} out of range", kind="range")
        ns = int(text) * scale
        if not 0 <= ns <= _INT64_MAX:
            raise DecodeError(f"timestamp {text} out of range", kind="range")
        return ns


def _end(pattern: re.Pattern[str], line: str, pos: int) -> int:
    """Where ``pattern`` (which may match nothing) stops matching from ``pos``."""
    match = pattern.match(line, pos)
    return pos if match is None else match.end()


def _integer(key: str, digits: str) -> int:
    if len(digits) > _MAX_DIGITS:
        raise DecodeError(f"field {key!r}: integer {digits[:32]}... out of range", kind="range")
    return int(digits)
