"""The native format: garden/<site>/<device>/telemetry with a JSON object of fields."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.native import Options, decode
from devices.reading import DecodeError, Reading
from devices.timeparse import TimePolicy
from tests.conftest import decodes_or_refuses as check

SEC = 10**9
RECEIVED = 1_795_850_800 * SEC
TOPIC = "garden/taman-kota/polder-1/telemetry"
TAGS = (("device", "polder-1"), ("site", "taman-kota"))
# integers="int": these tables check how each value is typed; the default, which makes whole
# numbers floats for InfluxDB's sake, has its own test.
OPTS = Options(integers="int")


def one(payload: bytes, topic: str = TOPIC, opts: Options = OPTS) -> Reading:
    readings = decode(topic, payload, RECEIVED, opts)
    assert len(readings) == 1
    return readings[0]


@pytest.mark.parametrize(
    ("payload", "fields"),
    [
        (b'{"level_cm": 123.4}', (("level_cm", 123.4),)),
        (
            b'{"level_cm": 120, "pump_on": true, "mode": "auto"}',
            (("level_cm", 120), ("pump_on", True), ("mode", "auto")),
        ),
        (b'{"a": -1.5e-3, "b": false, "c": ""}', (("a", -0.0015), ("b", False), ("c", ""))),
        (b' {"suhu \xc2\xb0C": 29.5}\n', (("suhu \u00b0C", 29.5),)),
        (b'{"big": 9223372036854775807}', (("big", 2**63 - 1),)),
    ],
)
def test_fields(payload: bytes, fields: tuple[tuple[str, Any], ...]) -> None:
    reading = one(payload)
    assert reading == Reading("garden_sensor", TAGS, fields, RECEIVED)
    assert [type(v) for _, v in reading.fields] == [type(v) for _, v in fields]


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (b"1795850797", 1795850797 * SEC),
        (b"1795850797629", 1795850797629 * 10**6),
        (b"1795850797.629", 1795850797629 * 10**6),
        (b"1795850797629123", 1795850797629123 * 1000),
        (b"1795850797629123456", 1795850797629123456),
        (b'"2026-11-28T06:02:11Z"', 1795845731 * SEC),
        (b'"2026-11-28T14:02:11+08:00"', 1795845731 * SEC),
        (b'"2026-11-28T06:02:11"', 1795845731 * SEC),
        # Implausible device times fall back to the receive time.
        (b"12", RECEIVED),
        (b"0", RECEIVED),
        (b'"1970-01-01T00:00:12Z"', RECEIVED),
        (b"1795851101", RECEIVED),  # more than 5 minutes ahead
    ],
)
def test_ts(ts: bytes, expected: int) -> None:
    reading = one(b'{"level_cm": 1, "ts": ' + ts + b"}")
    assert reading.time_ns == expected
    assert reading.fields == (("level_cm", 1),)


def test_zone_less_iso_uses_the_configured_offset() -> None:
    opts = Options(default_utc_offset_minutes=480)
    reading = one(b'{"x": 1, "ts": "2026-11-28T14:02:11"}', opts=opts)
    assert reading.time_ns == 1795845731 * SEC


def test_options() -> None:
    opts = Options(
        measurement="polder",
        topic_prefix="kutim/garden",
        rename={"level": "level_cm"},
        time=TimePolicy(earliest_ns=0),
    )
    reading = one(b'{"level": 3, "ts": 12}', "kutim/garden/s/d/telemetry", opts)
    assert reading == Reading(
        "polder", (("device", "d"), ("site", "s")), (("level_cm", 3),), 12 * SEC
    )


@pytest.mark.parametrize(
    "topic",
    [
        "garden/site/dev/status",
        "garden/site/telemetry",
        "garden/site/dev/x/telemetry",
        "garden2/site/dev/telemetry",
        "tele/dev/SENSOR",
        "",
        "garden",
        "/garden/site/dev/telemetry",
    ],
)
def test_unknown_topic(topic: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(topic, b'{"x": 1}', RECEIVED, OPTS)
    assert caught.value.kind == "unknown_topic"
    assert caught.value.source == topic
    assert caught.value.payload == b'{"x": 1}'


@pytest.mark.parametrize(
    ("payload", "kind", "words"),
    [
        (b"", "malformed", "JSON"),
        (b"online", "malformed", "JSON"),
        (b'{"x": 1', "malformed", "JSON"),
        (b'\xff{"x": 1}', "malformed", "JSON"),
        (b"[1, 2]", "malformed", "object"),
        (b"42", "malformed", "object"),
        (b'"text"', "malformed", "object"),
        (b"null", "malformed", "object"),
        (b'{"x": NaN}', "malformed", "JSON"),
        (b'{"x": Infinity}', "malformed", "JSON"),
        (b'{"x": 1e999}', "malformed", "JSON"),
        (b'{"x": null}', "wrong_type", "'x'"),
        (b'{"x": 1, "y": [1, 2]}', "wrong_type", "'y'"),
        (b'{"x": {"nested": 1}}', "wrong_type", "'x'"),
        (b'{"x": 1, "ts": true}', "wrong_type", "timestamp"),
        (b'{"x": 1, "ts": null}', "wrong_type", "timestamp"),
        (b'{"x": 1, "ts": "soon"}', "malformed", "ISO"),
        (b'{"x": 1, "ts": -5}', "range", "negative"),
        (b"{}", "empty", "no fields"),
        (b'{"ts": 1795850797}', "empty", "no fields"),
        (b'{"": 1}', "bad_name", "empty"),
        (b'{"a\\nb": 1}', "bad_name", "control"),
        (b'{"x": "two\\nlines"}', "bad_name", "control"),
        (b'{"time": 1}', "bad_name", "time"),
        (b'{"x": 9223372036854775808}', "range", "64-bit"),
        (b'{"x": "' + b"a" * 5000 + b'"}', "range", "longer"),
    ],
)
def test_bad_payloads(payload: bytes, kind: str, words: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(TOPIC, payload, RECEIVED, OPTS)
    error = caught.value
    assert error.kind == kind
    assert words in error.reason
    assert error.source == TOPIC
    assert error.device == "polder-1"
    assert error.payload == payload


def test_bad_site_or_device_from_topic() -> None:
    with pytest.raises(DecodeError) as caught:
        decode("garden//dev/telemetry", b'{"x": 1}', RECEIVED, OPTS)
    assert caught.value.kind == "bad_name"
    with pytest.raises(DecodeError):
        decode("garden/site/a\x00b/telemetry", b'{"x": 1}', RECEIVED, OPTS)


def test_rename_onto_an_existing_name_is_refused() -> None:
    with pytest.raises(DecodeError) as caught:
        decode(TOPIC, b'{"a": 1, "b": 2}', RECEIVED, Options(rename={"a": "b"}))
    assert caught.value.kind == "bad_name"


# --- only DecodeError, whatever arrives ---------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


def decodes_or_refuses(topic: str, payload: bytes) -> None:
    check(decode, topic, payload, RECEIVED, OPTS)


@settings(max_examples=200)
@given(st.text(max_size=40), st.binary(max_size=64))
def test_arbitrary_topic_and_bytes(topic: str, payload: bytes) -> None:
    decodes_or_refuses(topic, payload)


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_arbitrary_bytes(payload: bytes) -> None:
    decodes_or_refuses(TOPIC, payload)


@settings(max_examples=200)
@given(st.dictionaries(st.text(max_size=6) | st.just("ts"), json_values, max_size=4) | json_values)
def test_arbitrary_json(value: Any) -> None:
    try:
        payload = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        payload = repr(value).encode()
    decodes_or_refuses(TOPIC, payload)


def test_whole_numbers_become_floats_by_default() -> None:
    # ArduinoJson prints 31.0 as 31: as an integer it would make InfluxDB refuse the field.
    (reading,) = decode(TOPIC, b'{"level_cm": 31, "pump_on": true}', RECEIVED, Options())
    assert reading.fields == (("level_cm", 31.0), ("pump_on", True))
    assert type(reading.fields[0][1]) is float
