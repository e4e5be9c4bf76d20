"""devices/ stays pure (no I/O, no clock, no asyncio), its time helpers, and the format registry."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import math
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

import devices
from devices.formats import FORMATS
from devices.reading import DecodeError
from devices.timeparse import (
    TimePolicy,
    choose_time,
    epoch_to_ns,
    iso8601_to_ns,
    json_time_to_ns,
)

DEVICES_DIR = Path(devices.__file__).parent
FORBIDDEN_MODULES = {
    "socket",
    "asyncio",
    "time",
    "os",
    "subprocess",
    "threading",
    "logging",
    "serial",
    "paho",
    "httpx",
    "sqlite3",
}
# Clock reads, whatever they are called on (datetime.now(), date.today(), dt.datetime.utcnow()).
FORBIDDEN_ATTRIBUTE_CALLS = {"now", "utcnow", "today"}
# I/O and code execution builtins.
FORBIDDEN_NAME_CALLS = {"open", "print", "input", "eval", "exec", "breakpoint"}
SEC = 10**9


def impurities(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [
                f"import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES
            ]
        elif isinstance(node, ast.ImportFrom):
            if node.module and node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"from {node.module} import")
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr in FORBIDDEN_ATTRIBUTE_CALLS:
                found.append(f"call .{func.attr}() at line {node.lineno}")
            if isinstance(func, ast.Name) and func.id in FORBIDDEN_NAME_CALLS:
                found.append(f"call {func.id}() at line {node.lineno}")
    return found


def device_modules() -> list[Path]:
    return sorted(DEVICES_DIR.glob("**/*.py"))


def test_devices_has_the_decoder_modules() -> None:
    names = {p.stem for p in device_modules()}
    assert {
        "reading",
        "timeparse",
        "native",
        "collectd",
        "tasmota",
        "esphome",
        "influx",
        "jsonmap",
        "formats",
    } <= names


@pytest.mark.parametrize("path", device_modules(), ids=lambda p: p.name)
def test_device_module_is_pure(path: Path) -> None:
    assert impurities(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "snippet",
    [
        "import time",
        "import os.path",
        "from asyncio import sleep",
        "import paho.mqtt.client as mqtt",
        "from logging import getLogger",
        "import datetime\ndatetime.datetime.now()",
        "from datetime import date\ndate.today()",
        "from datetime import datetime\ndatetime.utcnow()",
        "open('/dev/ttyUSB0')",
    ],
)
def test_the_scan_catches_impurities(snippet: str) -> None:
    assert impurities(snippet)


# --- timeparse -----------------------------------------------------------------------------

RECEIVED = 1_795_850_800 * SEC


@pytest.mark.parametrize(
    ("device_ns", "expected"),
    [
        (None, RECEIVED),
        (RECEIVED - 3600 * SEC, RECEIVED - 3600 * SEC),
        (TimePolicy().earliest_ns, TimePolicy().earliest_ns),
        (TimePolicy().earliest_ns - 1, RECEIVED),
        (0, RECEIVED),  # no RTC: counting from 1970 after a power cut
        (RECEIVED + 300 * SEC, RECEIVED + 300 * SEC),
        (RECEIVED + 300 * SEC + 1, RECEIVED),
    ],
)
def test_choose_time(device_ns: int | None, expected: int) -> None:
    assert choose_time(device_ns, RECEIVED, TimePolicy()) == expected


def test_choose_time_follows_the_policy() -> None:
    policy = TimePolicy(earliest_ns=0, max_future_ns=0)
    assert choose_time(5, RECEIVED, policy) == 5
    assert choose_time(RECEIVED + 1, RECEIVED, policy) == RECEIVED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (1795850797, 1795850797 * SEC),
        (9_223_372_036, 9_223_372_036 * SEC),
        (10**11, 10**11 * 10**6),
        (1795850797629, 1795850797629 * 10**6),
        (10**14, 10**14 * 1000),
        (1795850797629123, 1795850797629123 * 1000),
        (10**17, 10**17),
        (1795850797629123456, 1795850797629123456),
        (1795850797.629, 1795850797629000000),
        (1795850797.0, 1795850797 * SEC),
        (1795850797.1234567, 1795850797123457000),
        (1795850797629.5, 1795850797629500000),
        (1795850797629123.0, 1795850797629123000),
        (1.7958507976291236e18, 1795850797629124000),
        (-0.0, 0),
    ],
)
def test_epoch_to_ns(value: int | float, expected: int) -> None:
    result = epoch_to_ns(value)
    assert result == expected
    assert type(result) is int


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (-1, "range"),
        (-0.5, "range"),
        (math.nan, "range"),
        (math.inf, "range"),
        (-math.inf, "range"),
        (2**63, "range"),
        (1e300, "range"),
        (10**10 * 10**9, "range"),  # 1e10 seconds is past 2262
        (True, "wrong_type"),
    ],
)
def test_epoch_to_ns_refuses(value: Any, kind: str) -> None:
    with pytest.raises(DecodeError) as caught:
        epoch_to_ns(value)
    assert caught.value.kind == kind


@given(st.integers(0, 2**33 * 1000))
def test_epoch_milliseconds_as_float_seconds_are_exact(millis: int) -> None:
    # A device printing "%.3f" seconds; exact up to 2**33 s (the year 2242), where a float
    # stops resolving microseconds.
    assert epoch_to_ns(millis / 1000) == millis * 10**6


@given(st.integers(0, 2**63 - 1))
def test_epoch_ints_are_scaled_exactly(value: int) -> None:
    if value < 10**11:
        expected = value * 10**9
    elif value < 10**14:
        expected = value * 10**6
    elif value < 10**17:
        expected = value * 10**3
    else:
        expected = value
    if expected < 2**63:
        assert epoch_to_ns(value) == expected
    else:
        with pytest.raises(DecodeError):
            epoch_to_ns(value)


@pytest.mark.parametrize(
    ("text", "offset", "expected"),
    [
        ("2026-11-28T14:02:11Z", 0, 1795874531 * SEC),
        ("2026-11-28T14:02:11+08:00", 0, 1795845731 * SEC),
        ("2026-11-28T14:02:11", 480, 1795845731 * SEC),
        ("2026-11-28T14:02:11", 0, 1795874531 * SEC),
        ("2026-11-28 14:02:11.5-01:30", 0, 1795879931 * SEC + SEC // 2),
        ("2026-11-28T14:02:11.123456789Z", 0, 1795874531 * SEC + 123456789),
        ("2026-11-28T14:02:11.1234567Z", 0, 1795874531 * SEC + 123456700),
        ("2026-11-28T14:02:11,25Z", 0, 1795874531 * SEC + 250_000_000),
        ("2026-11-28", 0, 1795824000 * SEC),
        ("1970-01-01T00:00:00Z", 0, 0),
        ("1969-12-31T23:59:59Z", 0, -SEC),
    ],
)
def test_iso8601_to_ns(text: str, offset: int, expected: int) -> None:
    assert iso8601_to_ns(text, offset) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "2026-13-01",
        "2026-11-28T25:00",
        "2026-11-28T14:02:11+99:00",
        "1795850797",
        "٢٠٢٦-11-28",
        "2026-11-28T14:02:11Zjunk",
        "2026-11-28T14:02:11.",
    ],
)
def test_iso8601_refuses_garbage(text: str) -> None:
    with pytest.raises(DecodeError):
        iso8601_to_ns(text)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(st.none(), st.timezones()),
    ),
    st.integers(-14 * 60, 14 * 60),
)
def test_iso8601_agrees_with_datetime(moment: datetime, offset: int) -> None:
    if moment.tzinfo is None:
        aware = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    else:
        aware = moment
    try:
        text = moment.isoformat()
    except ValueError:  # a zone whose offset is not whole seconds
        return
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert iso8601_to_ns(text, offset) == (aware - epoch) // timedelta(microseconds=1) * 1000


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1795850797, 1795850797 * SEC),
        (1795850797.629, 1795850797629000000),
        ("2026-11-28T14:02:11Z", 1795874531 * SEC),
    ],
)
def test_json_time_to_ns(value: object, expected: int) -> None:
    assert json_time_to_ns(value) == expected


@pytest.mark.parametrize("value", [None, True, [1], {"s": 1}])
def test_json_time_refuses_other_types(value: object) -> None:
    with pytest.raises(DecodeError) as caught:
        json_time_to_ns(value)
    assert caught.value.kind == "wrong_type"


@settings(max_examples=200)
@given(st.text())
def test_iso8601_raises_only_decode_error(text: str) -> None:
    with contextlib.suppress(DecodeError):
        iso8601_to_ns(text)


# --- the format registry, as the gateway uses it ------------------------------------------

MEASUREMENTS = {
    "native": "garden_sensor",
    "collectd": "collectd",
    "tasmota": "garden_env",
    "esphome": "garden_sensor",
    "influx": "telegraf",
    "json": "sensor",
}


def test_formats_keys() -> None:
    assert set(FORMATS) == set(MEASUREMENTS)
    assert all(fmt.name == key for key, fmt in FORMATS.items())
    assert [k for k, fmt in FORMATS.items() if fmt.own_measurement] == ["influx"]


@pytest.mark.parametrize("name", sorted(MEASUREMENTS))
def test_options_contract(name: str) -> None:
    fmt = FORMATS[name]
    assert dataclasses.fields(fmt.options)  # raises unless a dataclass
    opts = fmt.options()  # every field has a default
    assert opts.measurement == MEASUREMENTS[name]
    assert opts.time == TimePolicy()
    assert dict(opts.rename) == {}
    assert fmt.options.__pydantic_config__ == {"extra": "forbid"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.measurement = "x"
    assert not hasattr(opts, "__dict__")  # slots
    params = list(inspect.signature(fmt.decode).parameters)
    assert params == ["topic", "payload", "received_at_ns", "opts"]


@pytest.mark.parametrize("name", sorted(MEASUREMENTS))
def test_options_validate_with_pydantic(name: str) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(FORMATS[name].options)
    opts = adapter.validate_python(
        {"measurement": "m", "rename": {"a": "b"}, "time": {"earliest_ns": 0}}
    )
    assert opts.measurement == "m"
    assert dict(opts.rename) == {"a": "b"}
    assert opts.time == TimePolicy(earliest_ns=0)
    with pytest.raises(ValidationError):
        adapter.validate_python({"mesurement": "typo"})
    with pytest.raises(ValidationError):
        adapter.validate_python({"time": {"earliest": 0}})


def test_influx_precision_is_checked() -> None:
    options = FORMATS["influx"].options
    adapter: TypeAdapter[Any] = TypeAdapter(options)
    assert adapter.validate_python({"precision": "ms"}).precision == "ms"
    with pytest.raises(ValidationError):
        adapter.validate_python({"precision": "h"})
    with pytest.raises(ValueError, match="precision"):
        options(precision="h")
