"""Generic JSON mapped by configuration."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.jsonmap import Options, decode
from devices.reading import DecodeError, Reading
from devices.timeparse import TimePolicy
from tests.conftest import decodes_or_refuses as check

SEC = 10**9
RECEIVED = 1_795_850_800 * SEC
TOPIC = "kebun/lora/node-17/up"
MAPPED = Options(
    measurement="garden_env",
    fields={
        "env.t": "temperature_c",
        "env.rh": "humidity_pct",
        "bat": "battery_v",
        "pump": "pump_on",
        "mode": "mode",
    },
    device_key="id",
    time_key="ts",
)


def run(payload: Any, opts: Options = MAPPED, topic: str = TOPIC) -> list[Reading]:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return decode(topic, raw, RECEIVED, opts)


def env(device: str, fields: dict[str, Any], time_ns: int = RECEIVED) -> Reading:
    return Reading.build("garden_env", {"device": device}, fields, time_ns)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {"id": "n1", "env": {"t": 29.5, "rh": 80}, "bat": 3.7},
            [env("n1", {"temperature_c": 29.5, "humidity_pct": 80, "battery_v": 3.7})],
        ),
        # Absent keys are skipped; unmapped keys are ignored, whatever their type.
        (
            {"id": "n1", "env": {"t": 29.5}, "extra": [1, {"x": None}]},
            [env("n1", {"temperature_c": 29.5})],
        ),
        (
            {"id": "n1", "pump": True, "mode": "auto"},
            [env("n1", {"pump_on": True, "mode": "auto"})],
        ),
        # Numeric device ids become text.
        ({"id": 42, "bat": 3}, [env("42", {"battery_v": 3})]),
        # Device time: epoch number or ISO text.
        (
            {"id": "n1", "bat": 3, "ts": 1795850797629},
            [env("n1", {"battery_v": 3}, 1795850797629 * 10**6)],
        ),
        (
            {"id": "n1", "bat": 3, "ts": "2026-11-28T06:02:11Z"},
            [env("n1", {"battery_v": 3}, 1795845731 * SEC)],
        ),
        ({"id": "n1", "bat": 3, "ts": 5}, [env("n1", {"battery_v": 3})]),  # implausible
        # An array: one reading per object; an empty array: none.
        (
            [{"id": "a", "bat": 1}, {"id": "b", "bat": 2}],
            [env("a", {"battery_v": 1}), env("b", {"battery_v": 2})],
        ),
        ([], []),
    ],
)
def test_mapping(payload: Any, expected: list[Reading]) -> None:
    assert run(payload) == expected


def test_a_key_with_a_dot_is_found_literally() -> None:
    opts = Options(fields={"PM2.5": "pm25_ugm3", "a.b": "ab"}, device="d")
    assert run({"PM2.5": 12, "a": {"b": 1}}, opts) == [
        Reading("sensor", (("device", "d"),), (("pm25_ugm3", 12), ("ab", 1)), RECEIVED)
    ]


@pytest.mark.parametrize(
    ("opts", "payload", "device"),
    [
        (
            Options(fields={"x": "x"}, device_key="id", device_topic_level=2, device="fixed"),
            {"id": "from-key", "x": 1},
            "from-key",
        ),
        (
            Options(fields={"x": "x"}, device_key="id", device_topic_level=2, device="fixed"),
            {"x": 1},
            "node-17",
        ),
        (
            Options(fields={"x": "x"}, device_key="id", device_topic_level=2, device="fixed"),
            {"id": None, "x": 1},
            "node-17",
        ),
        (
            Options(fields={"x": "x"}, device_key="id", device_topic_level=2, device="fixed"),
            {"id": "", "x": 1},
            "node-17",
        ),
        (Options(fields={"x": "x"}, device_topic_level=-2), {"x": 1}, "node-17"),
        (Options(fields={"x": "x"}, device_topic_level=9, device="fixed"), {"x": 1}, "fixed"),
        (Options(fields={"x": "x"}, device_topic_level=-9, device="fixed"), {"x": 1}, "fixed"),
        (Options(fields={"x": "x"}, device="fixed"), {"x": 1}, "fixed"),
        (Options(fields={"x": "x"}, device_key="meta.dev"), {"meta": {"dev": "m"}, "x": 1}, "m"),
    ],
)
def test_device_sources_in_order(opts: Options, payload: Any, device: str) -> None:
    (reading,) = run(payload, opts)
    assert reading.tags == (("device", device),)


def test_options() -> None:
    opts = Options(
        measurement="m",
        fields={"t": "temp"},
        device="d",
        time_key="when",
        default_utc_offset_minutes=480,
        rename={"temp": "temperature_c"},
        time=TimePolicy(earliest_ns=0),
    )
    assert run({"t": 1.5, "when": "1970-01-01T08:00:05"}, opts) == [
        Reading("m", (("device", "d"),), (("temperature_c", 1.5),), 5 * SEC)
    ]


@pytest.mark.parametrize(
    ("opts", "payload", "kind"),
    [
        (MAPPED, b"", "malformed"),
        (MAPPED, b"{", "malformed"),
        (MAPPED, b"NaN", "malformed"),
        (MAPPED, b'{"id": "n", "bat": NaN}', "malformed"),
        (MAPPED, b"3.5", "malformed"),
        (MAPPED, b'"n1"', "malformed"),
        (MAPPED, b'[{"id": "n", "bat": 1}, 5]', "malformed"),
        (MAPPED, b'{"bat": 1}', "unknown_device"),
        (Options(fields={"x": "x"}), b'{"x": 1}', "unknown_device"),
        (Options(fields={"x": "x"}, device_key="id"), b'{"id": "a\\tb", "x": 1}', "bad_name"),
        (MAPPED, b'{"id": "n", "other": 1}', "empty"),
        (MAPPED, b'{"id": "n"}', "empty"),
        (Options(device="d"), b'{"x": 1}', "empty"),
        (MAPPED, b'{"id": "n", "bat": null}', "wrong_type"),
        (MAPPED, b'{"id": "n", "bat": [3.7]}', "wrong_type"),
        (MAPPED, b'{"id": "n", "env": {"t": {"c": 1}}}', "wrong_type"),
        (MAPPED, b'{"id": "n", "env": 5}', "wrong_type"),
        (MAPPED, b'{"id": ["n"], "bat": 1}', "wrong_type"),
        (MAPPED, b'{"id": true, "bat": 1}', "wrong_type"),
        (MAPPED, b'{"id": "n", "bat": 1, "ts": true}', "wrong_type"),
        (MAPPED, b'{"id": "n", "bat": 1, "ts": "later"}', "malformed"),
        (MAPPED, b'{"id": "n", "bat": 1, "ts": -1}', "range"),
        (MAPPED, b'{"id": "n\\nx", "bat": 1}', "bad_name"),
        (MAPPED, b'{"id": "n", "mode": "a\\u0000"}', "bad_name"),
        (Options(fields={"a": "time"}, device="d"), b'{"a": 1}', "bad_name"),
        (
            Options(fields={"a": "x", "b": "y"}, device="d", rename={"x": "y"}),
            b'{"a": 1, "b": 2}',
            "bad_name",
        ),
    ],
)
def test_bad_payloads(opts: Options, payload: bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(TOPIC, payload, RECEIVED, opts)
    error = caught.value
    assert error.kind == kind
    assert (error.source, error.payload) == (TOPIC, payload)


def test_error_names_the_device_when_known() -> None:
    with pytest.raises(DecodeError) as caught:
        run(b'[{"id": "a", "bat": 1}, {"id": "b", "bat": "x", "env": 1}]')
    assert caught.value.device == "b"


# --- only DecodeError, whatever arrives ---------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["id", "env", "t", "rh", "bat", "ts", "pump"]) | st.text(max_size=4),
            inner,
            max_size=4,
        )
    ),
    max_leaves=12,
)


def decodes_or_refuses(topic: str, payload: bytes, opts: Options = MAPPED) -> None:
    check(decode, topic, payload, RECEIVED, opts)


@settings(max_examples=200)
@given(st.text(max_size=40), st.binary(max_size=64))
def test_arbitrary_topic_and_bytes(topic: str, payload: bytes) -> None:
    decodes_or_refuses(topic, payload, Options(fields={"a": "a"}, device_topic_level=1))


@settings(max_examples=200)
@given(json_values, st.integers(-4, 4))
def test_arbitrary_json(value: Any, level: int) -> None:
    try:
        payload = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        payload = repr(value).encode()
    decodes_or_refuses(TOPIC, payload)
    decodes_or_refuses(
        TOPIC,
        payload,
        Options(fields={"env.t": "t", "t": "u"}, device_topic_level=level, time_key="env.ts"),
    )
