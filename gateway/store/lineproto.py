"""InfluxDB line protocol: the one place where points become text.

Every name and value is escaped here and nowhere else. A :class:`~devices.reading.Reading` has
already refused what cannot be written back exactly (control characters, newlines, a backslash
before a character that line protocol escapes), so encoding cannot inject a second point.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from devices.reading import FieldValue, Reading, Tags

_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ "})
_KEY = str.maketrans({",": "\\,", " ": "\\ ", "=": "\\="})
_STRING = str.maketrans({"\\": "\\\\", '"': '\\"'})


def split_time(line: str) -> tuple[str, int | None]:
    """A line's point without its timestamp, and the timestamp (ns); None when it has none."""
    body, _, stamp = line.rpartition(" ")
    try:
        return body, int(stamp)
    except ValueError:
        return line, None


def format_value(value: FieldValue) -> str:
    # Sensors send floats: they go first; bool before int, a subclass of it.
    if type(value) is float:
        return repr(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return f'"{value.translate(_STRING)}"'


# Escaped "measurement,tags" heads and field keys, keyed by what they were made from. Sources
# repeat the same few devices and fields, so most lines skip the escaping. Bounded.
_HEADS: dict[tuple[str, Tags, tuple[tuple[str, str], ...]], str] = {}
_FIELD_KEYS: dict[str, str] = {}
_CACHE_MAX = 4096


def _head(measurement: str, tags: Tags, extra: tuple[tuple[str, str], ...]) -> str:
    key = (measurement, tags, extra)
    head = _HEADS.get(key)
    if head is None:
        all_tags: Iterable[tuple[str, str]] = tags
        if extra:
            merged = dict(extra)
            merged.update(tags)
            all_tags = sorted(merged.items())
        head = measurement.translate(_MEASUREMENT)
        tag_text = ",".join(f"{k.translate(_KEY)}={v.translate(_KEY)}" for k, v in all_tags)
        if tag_text:
            head += "," + tag_text
        if len(_HEADS) >= _CACHE_MAX:
            _HEADS.clear()
        _HEADS[key] = head
    return head


def _field_key(name: str) -> str:
    escaped = _FIELD_KEYS.get(name)
    if escaped is None:
        escaped = name.translate(_KEY)
        if len(_FIELD_KEYS) >= _CACHE_MAX:
            _FIELD_KEYS.clear()
        _FIELD_KEYS[name] = escaped
    return escaped


def encode(
    reading: Reading,
    extra_tags: Mapping[str, str] | tuple[tuple[str, str], ...] | None = None,
    measurement: str | None = None,
) -> str:
    """One line, without the trailing newline, timestamp in nanoseconds.

    ``extra_tags`` (the gateway's own, already checked at config load; a mapping, or its
    items as a tuple, which the ingest path keeps per device) are added unless the reading has
    a tag of that name; ``measurement`` replaces the reading's. Tags are written sorted, as
    InfluxDB prefers.
    """
    if isinstance(extra_tags, tuple):
        extra = extra_tags
    else:
        extra = tuple(extra_tags.items()) if extra_tags else ()
    head = _head(measurement or reading.measurement, reading.tags, extra)
    keys = _FIELD_KEYS
    fields = ",".join([
        f"{keys.get(k) or _field_key(k)}={repr(v) if type(v) is float else format_value(v)}"
        for k, v in reading.fields])
    return f"{head} {fields} {reading.time_ns}"
