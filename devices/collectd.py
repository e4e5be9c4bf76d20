"""collectd's MQTT write plugin (``collectd-mod-mqtt`` on OpenWrt access points).

Topic ``<prefix>/<host>/<plugin>[-<plugin instance>]/<type>[-<type instance>]``, payload
``<epoch seconds>:<v1>[:<v2>...]`` as text. Two things the real bytes show (see
``samples/collectd-5.12-mqtt.tsv``): the payload ends with a NUL byte (the plugin publishes C
string length + 1), and the first sample of a derive/counter type after start is ``nan``
because no rate can be computed yet. ``nan`` values are not stored; a message of nothing but
``nan`` yields no reading. The time ``N`` means "now", the receive time.

Field names carry units from a small table of collectd types; any other type is named
``<type>[_<type instance>]`` (``_<index>`` appended when the type has several values).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from devices.reading import DecodeError, FieldValue, Reading
from devices.timeparse import TimePolicy, choose_time

# The tags the gateway owns: a plugin named like one must not overwrite it.
_RESERVED_TAGS = frozenset({"device", "site", "gateway"})

# collectd prints gauges and rates with "%.15g" and derives with PRIi64; nothing else is a value.
_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_INTEGER = re.compile(r"[+-]?[0-9]{1,19}")
_TIME = re.compile(r"([0-9]{1,12})(?:\.([0-9]*))?")
_NANS = frozenset({"nan", "-nan", "+nan"})
_INFINITIES = frozenset({"inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})

# type -> (field names, whether collectd's data source is a derive/counter, i.e. sent as a rate
# per second when StoreRates is on).
_TYPES: dict[str, tuple[tuple[str, ...], bool]] = {
    "if_octets": (("rx_bytes", "tx_bytes"), True),
    "if_packets": (("rx_packets", "tx_packets"), True),
    "if_errors": (("rx_errors", "tx_errors"), True),
    "if_dropped": (("rx_dropped", "tx_dropped"), True),
    "load": (("load_1m", "load_5m", "load_15m"), False),
    "uptime": (("uptime_s",), False),
    "stations": (("clients",), False),
    "signal_power": (("signal_dbm",), False),
    "signal_noise": (("noise_dbm",), False),
    "bitrate": (("bitrate_bps",), False),
}


@dataclass(frozen=True, slots=True)
class Options:
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    measurement: str = "collectd"
    topic_prefix: str = "collectd"
    # collectd's StoreRates (on by default): derive/counter types arrive as rates per second.
    store_rates: bool = True
    time: TimePolicy = field(default_factory=TimePolicy)
    rename: Mapping[str, str] = field(default_factory=dict)


def decode(topic: str, payload: bytes, received_at_ns: int, opts: Options) -> list[Reading]:
    head = opts.topic_prefix + "/"
    parts = topic[len(head) :].split("/") if topic.startswith(head) else ()
    if len(parts) != 3:
        raise DecodeError(
            f"topic is not {opts.topic_prefix}/<host>/<plugin>[-<instance>]/<type>[-<instance>]",
            source=topic,
            payload=payload,
            kind="unknown_topic",
        )
    host = parts[0]
    try:
        return _decode(payload, host, parts[1], parts[2], received_at_ns, opts)
    except DecodeError as exc:
        # The helpers below do not know where the bytes came from; the error learns it here.
        exc.source, exc.device, exc.payload = topic, host, payload
        raise


def _decode(
    payload: bytes,
    host: str,
    plugin_part: str,
    type_part: str,
    received_at_ns: int,
    opts: Options,
) -> list[Reading]:
    try:
        text = payload.strip(b"\x00 \t\r\n").decode("ascii")
    except UnicodeDecodeError as exc:
        raise DecodeError("payload is not ASCII text") from exc
    time_text, _, values_text = text.partition(":")
    if not values_text:
        raise DecodeError("payload is not <time>:<value>[:<value>...]")
    values = values_text.split(":")
    # Time and tags are checked even when every value is nan, so that garbage never passes.
    if time_text == "N":
        time_ns = received_at_ns
    else:
        time_ns = choose_time(_seconds_to_ns(time_text), received_at_ns, opts.time)
    tags: dict[str, str] = {"device": host}
    plugin, _, plugin_instance = plugin_part.partition("-")
    if plugin_instance:
        if plugin in _RESERVED_TAGS:
            raise DecodeError(
                f"plugin {plugin!r} would replace the tag of that name", kind="bad_name"
            )
        tags[plugin] = plugin_instance

    type_name, _, type_instance = type_part.partition("-")
    known = _TYPES.get(type_name)
    as_int = False
    if type_name == "memory":
        names: tuple[str, ...] = (
            f"memory_{type_instance}_bytes" if type_instance else "memory_bytes",
        )
    elif known is not None:
        names, is_rate = known
        if is_rate:
            if opts.store_rates:
                names = tuple(f"{name}_per_s" for name in names)
            else:
                as_int = True
        if type_instance:
            names = tuple(f"{type_instance}_{name}" for name in names)
    else:
        base = f"{type_name}_{type_instance}" if type_instance else type_name
        names = (base,) if len(values) == 1 else tuple(f"{base}_{i}" for i in range(len(values)))
    if len(values) != len(names):
        raise DecodeError(f"type {type_name!r} has {len(names)} values, got {len(values)}")

    rename = opts.rename
    fields: list[tuple[str, FieldValue]] = []
    for name, value in zip(names, values, strict=True):
        number = _number(value, as_int)
        if number is not None:
            fields.append((rename.get(name, name) if rename else name, number))
    if not fields:
        return []
    return [Reading(opts.measurement, tuple(sorted(tags.items())), tuple(fields), time_ns)]


def _number(text: str, as_int: bool) -> float | int | None:
    """The value, or None for collectd's ``nan`` (no sample)."""
    if _NUMBER.fullmatch(text):
        if not as_int:
            return float(text)
        if _INTEGER.fullmatch(text):
            return int(text)  # exact, where a float would round counters above 2**53
        number = float(text)
        return int(number) if number.is_integer() else number
    lowered = text.lower()
    # glibc's printf writes a NaN with the sign bit set as "-nan".
    if lowered in _NANS:
        return None
    if lowered in _INFINITIES:
        raise DecodeError(f"value {text!r} is not finite", kind="nan")
    raise DecodeError(f"value {text[:32]!r} is not a number")


def _seconds_to_ns(text: str) -> int:
    """collectd's ``%.3f`` seconds, read as a decimal so no float rounding creeps in."""
    match = _TIME.fullmatch(text)
    if match is None:
        raise DecodeError(f"time {text[:32]!r} is not epoch seconds")
    whole, fraction = match.groups()
    return int(whole) * 10**9 + (int(fraction[:9].ljust(9, "0")) if fraction else 0)
