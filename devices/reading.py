"""The value every decoder produces, and the one error every decoder raises.

A :class:`Reading` is immutable and checked when built: a bad name, an empty tag value, a
control character (a newline in a tag value would inject a point into InfluxDB), a NaN or an
infinite float, or a value of a type InfluxDB cannot store are refused at construction with
:class:`DecodeError`. Nothing downstream has to check again.

Decoders have three outcomes (see STYLE.md): valid input returns readings (possibly none,
for example collectd's ``nan`` samples); malformed input raises :class:`DecodeError`
carrying the topic or port and the raw bytes; incomplete input (serial) stays buffered.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

FieldValue = float | int | bool | str
Tags = tuple[tuple[str, str], ...]
Fields = tuple[tuple[str, FieldValue], ...]

# C0 controls, DEL and C1 controls. Tab is a control character too: InfluxDB's parser treats it
# as whitespace in some places and not in others, so it is refused with the rest.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_BAD_BACKSLASH = re.compile(r'\\([\\, ="]|$)')

MAX_NAME_LEN = 256
MAX_STRING_FIELD_LEN = 4096


class DecodeError(ValueError):
    """Input that cannot become readings: malformed bytes, a wrong type, NaN, an unsafe name.

    ``source`` names where it came from (an MQTT topic, a serial port), ``device`` the device when
    known, ``payload`` the raw bytes as received, so a technician can look at them.
    """

    def __init__(
        self,
        reason: str,
        *,
        source: str = "",
        device: str = "",
        payload: bytes = b"",
        kind: str = "malformed",
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.source = source
        self.device = device
        self.payload = payload
        self.kind = kind

    def __str__(self) -> str:
        where = " ".join(
            f"{k}={v!r}" for k, v in (("source", self.source), ("device", self.device)) if v
        )
        return f"{self.reason} ({where})" if where else self.reason


# Names that passed check_name: devices repeat the same few names in every message, so the
# checks run once per name, not once per reading. Bounded; it only ever holds valid names.
_VALID_NAMES: set[str] = set()
_VALID_NAMES_MAX = 8192


def check_name(what: str, name: str) -> None:
    """Refuse a measurement, tag key, tag value or field key InfluxDB cannot store safely."""
    if type(name) is str and name in _VALID_NAMES:
        return
    if not isinstance(name, str):
        raise DecodeError(f"{what} must be text, got {type(name).__name__}", kind="wrong_type")
    if not name:
        raise DecodeError(f"{what} is empty", kind="bad_name")
    if len(name) > MAX_NAME_LEN:
        raise DecodeError(f"{what} is longer than {MAX_NAME_LEN} characters", kind="bad_name")
    if _CONTROL.search(name):
        raise DecodeError(f"{what} {name!r} contains a control character", kind="bad_name")
    if "\\" in name and _BAD_BACKSLASH.search(name):
        # InfluxDB's parser pairs a backslash with whatever follows it, so a backslash at the
        # end or before a character that line protocol escapes cannot be written back exactly.
        raise DecodeError(
            f"{what} {name!r} has a backslash at the end or before one of \\ , = space \"",
            kind="bad_name",
        )
    if len(_VALID_NAMES) < _VALID_NAMES_MAX:
        _VALID_NAMES.add(name)


def whole_numbers_as_floats(
    fields: Iterable[tuple[str, FieldValue]], integers: str
) -> tuple[tuple[str, FieldValue], ...]:
    """Make whole numbers floats unless ``integers == "int"``.

    InfluxDB fixes a field's type with its first point and refuses the other type after that.
    Firmware prints 31 after 30.5 (ArduinoJson, ``Serial.print``), so a sensor value that
    happens to be whole would be refused as a type conflict; as a float it is not.
    """
    if integers == "int":
        return tuple(fields)
    return tuple((k, float(v) if type(v) is int else v) for k, v in fields)


def check_value(key: str, value: object) -> FieldValue:
    """Return the value if InfluxDB can store it as a field, else raise :class:`DecodeError`."""
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**63:
            raise DecodeError(f"field {key!r}: integer {value} out of 64-bit range", kind="range")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise DecodeError(f"field {key!r}: {value} is not a finite number", kind="nan")
        return value
    if isinstance(value, str):
        if len(value) > MAX_STRING_FIELD_LEN:
            raise DecodeError(f"field {key!r}: string longer than {MAX_STRING_FIELD_LEN}",
                              kind="range")
        if _CONTROL.search(value):
            raise DecodeError(f"field {key!r}: string contains a control character",
                              kind="bad_name")
        return value
    raise DecodeError(
        f"field {key!r}: a {type(value).__name__} cannot be stored as a field", kind="wrong_type"
    )


# (measurement, tags) pairs that passed _check_head: a device sends the same ones every time,
# so they are checked once, not once per reading. Bounded; it only ever holds valid pairs.
_CHECKED_HEADS: set[tuple[str, Tags]] = set()
_isfinite = math.isfinite


def _check_head(measurement: str, tags: Tags) -> None:
    check_name("measurement", measurement)
    if measurement.startswith("#"):
        raise DecodeError("measurement starts with '#' (a comment line)", kind="bad_name")
    previous = ""
    for key, value in tags:
        check_name("tag key", key)
        if key == "time":
            raise DecodeError("'time' cannot be a tag key", kind="bad_name")
        check_name(f"tag {key!r} value", value)
        if key <= previous:
            raise DecodeError(f"tag keys not sorted or repeated at {key!r}", kind="bad_name")
        previous = key


@dataclass(frozen=True, slots=True)
class Reading:
    """One point: measurement, sorted tags, typed fields, a timestamp fixed at decode (ns)."""

    measurement: str
    tags: Tags
    fields: Fields
    time_ns: int

    def __post_init__(self) -> None:
        head = (self.measurement, self.tags)
        try:
            checked = head in _CHECKED_HEADS
        except TypeError:  # something unhashable where a name belongs: checked and refused
            checked = False
        if not checked:
            _check_head(self.measurement, self.tags)
            if len(_CHECKED_HEADS) >= _VALID_NAMES_MAX:
                _CHECKED_HEADS.clear()
            with contextlib.suppress(TypeError):  # tags given as a list: valid, not kept
                _CHECKED_HEADS.add(head)
        if not self.fields:
            raise DecodeError(f"{self.measurement}: a reading needs at least one field",
                              kind="empty")
        seen: set[str] = set()
        for fkey, fvalue in self.fields:
            check_name("field key", fkey)
            if fkey == "time":
                raise DecodeError("'time' cannot be a field key", kind="bad_name")
            if fkey in seen:
                raise DecodeError(f"field {fkey!r} repeated", kind="bad_name")
            seen.add(fkey)
            # A finite float, most of what sensors send, is checked here without a call.
            if type(fvalue) is not float or not _isfinite(fvalue):
                check_value(fkey, fvalue)
        if type(self.time_ns) is not int:
            raise DecodeError("timestamp must be integer nanoseconds", kind="wrong_type")
        if self.time_ns < 0:
            raise DecodeError(f"timestamp {self.time_ns} is before 1970", kind="range")
        if self.time_ns >= 2**63:
            raise DecodeError(f"timestamp {self.time_ns} is beyond InfluxDB's int64 range",
                              kind="range")

    @classmethod
    def build(
        cls,
        measurement: str,
        tags: Mapping[str, str],
        fields: Mapping[str, FieldValue],
        time_ns: int,
    ) -> Reading:
        """Build from mappings; tags are sorted here so callers need not care."""
        return cls(measurement, tuple(sorted(tags.items())), tuple(fields.items()), time_ns)

    def tag(self, key: str) -> str | None:
        for k, v in self.tags:
            if k == key:
                return v
        return None
