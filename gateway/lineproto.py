"""InfluxDB line protocol: the one place where points become text.

Every name and value is escaped here and nowhere else. A :class:`~devices.reading.Reading` has
already refused what cannot be written back exactly (control characters, newlines, a backslash
before a character that line protocol escapes), so encoding cannot inject a second point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from devices.reading import FieldValue, Reading

_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ "})
_KEY = str.maketrans({",": "\\,", " ": "\\ ", "=": "\\="})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})


def escape_measurement(name: str) -> str:
    return name.translate(_MEASUREMENT)


def escape_key(name: str) -> str:
    """Escape a tag key, tag value or field key."""
    return name.translate(_KEY)


def format_value(value: FieldValue) -> str:
    # bool first: it is a subclass of int.
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return f'"{value.translate(_STRING)}"'


def encode(
    reading: Reading,
    extra_tags: Mapping[str, str] | None = None,
    measurement: str | None = None,
) -> str:
    """One line, without the trailing newline, timestamp in nanoseconds.

    ``extra_tags`` (the gateway's own, already checked at config load) are added unless the
    reading has a tag of that name; ``measurement`` replaces the reading's. Tags are written
    sorted, as InfluxDB prefers.
    """
    tags: Iterable[tuple[str, str]] = reading.tags
    if extra_tags:
        merged = dict(extra_tags)
        merged.update(reading.tags)
        tags = sorted(merged.items())
    head = (measurement or reading.measurement).translate(_MEASUREMENT)
    tag_text = ",".join(f"{k.translate(_KEY)}={v.translate(_KEY)}" for k, v in tags)
    if tag_text:
        head += "," + tag_text
    fields = ",".join(f"{k.translate(_KEY)}={format_value(v)}" for k, v in reading.fields)
    return f"{head} {fields} {reading.time_ns}"
