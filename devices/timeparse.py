"""Device timestamps: turning what devices send into nanoseconds, and deciding whether to trust it.

A Raspberry Pi and many sensors have no real-time clock: after a power cut they count from 1970
(or from a stale time) until NTP syncs. :func:`choose_time` keeps the device's time only when it
is plausible and otherwise falls back to the time the gateway received the message, which the
caller passes in: nothing here reads a clock.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import ClassVar

from devices.reading import DecodeError

_INT64_MAX = 2**63 - 1
_EPOCH_ORDINAL = datetime(1970, 1, 1).toordinal()
_ONE_US = timedelta(microseconds=1)
# datetime keeps microseconds only; the digits after the sixth are read here so that a device
# sending nanosecond ISO timestamps keeps them.
_FRACTION = re.compile(r"[T ][0-9:]*[.,]([0-9]{7,})")


@dataclass(frozen=True, slots=True)
class TimePolicy:
    """Which device timestamps are believed: not before ``earliest_ns``, not further than
    ``max_future_ns`` after the receive time (a clock set wrong, or a unit confused)."""

    # A misspelt key in the config must be an error, not a silently ignored setting.
    __pydantic_config__: ClassVar[dict[str, str]] = {"extra": "forbid"}

    earliest_ns: int = 1_577_836_800 * 10**9  # 2020-01-01T00:00:00Z
    max_future_ns: int = 300 * 10**9


def choose_time(device_ns: int | None, received_at_ns: int, policy: TimePolicy) -> int:
    """The device's time when it is plausible, else the receive time."""
    if device_ns is not None and (
        policy.earliest_ns <= device_ns <= received_at_ns + policy.max_future_ns
    ):
        return device_ns
    return received_at_ns


def epoch_to_ns(value: int | float) -> int:
    """Epoch seconds, milliseconds, microseconds or nanoseconds, told apart by magnitude.

    Seconds < 1e11 <= milliseconds < 1e14 <= microseconds < 1e17 <= nanoseconds. Integers are
    converted exactly; floats are rounded to the nearest microsecond first, because a float
    such as 1795850797.629 is really 1795850797.628999948... and devices mean the decimal.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise DecodeError(
            f"timestamp must be a number, got {type(value).__name__}", kind="wrong_type"
        )
    if isinstance(value, int):
        if value < 0:
            raise DecodeError(f"timestamp {value} is negative", kind="range")
        if value < 10**11:
            ns = value * 10**9
        elif value < 10**14:
            ns = value * 10**6
        elif value < 10**17:
            ns = value * 10**3
        else:
            ns = value
    else:
        if not math.isfinite(value) or value < 0:
            raise DecodeError(f"timestamp {value} is negative or not finite", kind="range")
        # Whole and fractional parts apart: both are exact in binary, so only the fraction is
        # rounded, and large timestamps lose nothing to a product beyond 2**53.
        whole = int(value)
        if value < 1e11:
            us = whole * 1_000_000 + round((value - whole) * 1e6)
        elif value < 1e14:
            us = whole * 1000 + round((value - whole) * 1e3)
        elif value < 1e17:
            us = round(value)
        else:
            us = (whole + 500) // 1000
        ns = us * 1000
    if ns > _INT64_MAX:
        raise DecodeError(f"timestamp {value} is beyond the year 2262", kind="range")
    return ns


def iso8601_to_ns(text: str, default_offset_minutes: int = 0) -> int:
    """An ISO 8601 date-time in nanoseconds since the epoch.

    Without a zone ("Z", "+08:00") the text is taken as local time at
    ``default_offset_minutes`` east of UTC (Tasmota sends its local time without a zone).
    """
    if not isinstance(text, str):
        raise DecodeError(f"timestamp must be text, got {type(text).__name__}", kind="wrong_type")
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise DecodeError(f"timestamp {text[:64]!r} is not ISO 8601", kind="malformed") from exc
    offset = parsed.utcoffset()
    offset_us = default_offset_minutes * 60_000_000 if offset is None else offset // _ONE_US
    # Integer arithmetic rather than datetime.timestamp(): exact, and no OverflowError or
    # platform limits at the ends of the calendar.
    seconds = (
        (parsed.toordinal() - _EPOCH_ORDINAL) * 86_400
        + parsed.hour * 3600
        + parsed.minute * 60
        + parsed.second
    )
    ns = (seconds * 1_000_000 + parsed.microsecond - offset_us) * 1000
    extra = _FRACTION.search(text)
    if extra is not None:
        ns += int(extra.group(1)[6:9].ljust(3, "0"))
    return ns


def json_time_to_ns(value: object, default_offset_minutes: int = 0) -> int:
    """A timestamp found in JSON: an epoch number (see :func:`epoch_to_ns`) or ISO 8601 text."""
    if isinstance(value, str):
        return iso8601_to_ns(value, default_offset_minutes)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return epoch_to_ns(value)
    raise DecodeError(
        f"timestamp must be a number or ISO 8601 text, got {type(value).__name__}",
        kind="wrong_type",
    )
