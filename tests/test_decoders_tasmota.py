"""Tasmota's tele/<topic>/SENSOR telemetry, with the shapes Tasmota's documentation gives."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.reading import DecodeError, Reading
from devices.tasmota import Options, decode
from devices.timeparse import TimePolicy
from tests.conftest import decodes_or_refuses as check

SEC = 10**9
RECEIVED = 1_795_850_800 * SEC
TOPIC = "tele/kebun-1/SENSOR"
OPTS = Options()
# 2026-11-28T14:02:11 WITA (UTC+8) is 06:02:11 UTC.
DEVICE_NS = 1_795_845_731 * SEC


def readings(payload: Any, opts: Options = OPTS, topic: str = TOPIC) -> list[Reading]:
    raw = payload if isinstance(payload, bytes) else orjson.dumps(payload)
    return decode(topic, raw, RECEIVED, opts)


def env(sensor: str, fields: dict[str, Any], time_ns: int = DEVICE_NS) -> Reading:
    return Reading.build("garden_env", {"device": "kebun-1", "sensor": sensor}, fields, time_ns)


def test_documented_sample() -> None:
    payload = (
        b'{"Time":"2026-11-28T14:02:11","AM2301":{"Temperature":29.4,"Humidity":78.2,'
        b'"DewPoint":25.2},"TempUnit":"C"}'
    )
    assert readings(payload) == [
        env("am2301", {"temperature_c": 29.4, "humidity_pct": 78.2, "dew_point_c": 25.2})
    ]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        # Fahrenheit
        (
            {
                "Time": "2026-11-28T14:02:11",
                "SI7021": {"Temperature": 84.9, "Humidity": 70, "DewPoint": 74.1},
                "TempUnit": "F",
            },
            [env("si7021", {"temperature_f": 84.9, "humidity_pct": 70, "dew_point_f": 74.1})],
        ),
        # Several sensors, pressure in hPa (the default), strings such as a 1-wire id skipped
        (
            {
                "Time": "2026-11-28T14:02:11",
                "BME280": {
                    "Temperature": 28.1,
                    "Humidity": 80.5,
                    "DewPoint": 24.4,
                    "Pressure": 1008.2,
                    "SeaPressure": 1010.1,
                },
                "DS18B20-1": {"Id": "01144A0CB2AA", "Temperature": 27.0},
                "BH1750": {"Illuminance": 5012},
                "TempUnit": "C",
                "PressureUnit": "hPa",
            },
            [
                env(
                    "bme280",
                    {
                        "temperature_c": 28.1,
                        "humidity_pct": 80.5,
                        "dew_point_c": 24.4,
                        "pressure_hpa": 1008.2,
                        "sea_pressure_hpa": 1010.1,
                    },
                ),
                env("ds18b20-1", {"temperature_c": 27.0}),
                env("bh1750", {"illuminance_lux": 5012}),
            ],
        ),
        (
            {"Time": "2026-11-28T14:02:11", "BMP280": {"Pressure": 756.2}, "PressureUnit": "mmHg"},
            [env("bmp280", {"pressure_mmhg": 756.2})],
        ),
        # Soil moisture, CO2, and names without a known unit in snake case
        (
            {
                "Time": "2026-11-28T14:02:11",
                "ANALOG": {"Moisture": 41},
                "SCD30": {
                    "CarbonDioxide": 612,
                    "CO2": 612,
                    "eCO2": 400,
                    "TVOC": 3,
                    "PM2.5": 12,
                    "Dust Level": 4,
                },
            },
            [
                env("analog", {"moisture_pct": 41}),
                env(
                    "scd30",
                    {
                        "carbon_dioxide": 612,
                        "co2_ppm": 612,
                        "e_co2": 400,
                        "tvoc": 3,
                        "pm2.5": 12,
                        "dust_level": 4,
                    },
                ),
            ],
        ),
        # A power plug: ENERGY with units, a text start time and an array skipped
        (
            {
                "Time": "2026-11-28T14:02:11",
                "ENERGY": {
                    "TotalStartTime": "2026-01-01T00:00:00",
                    "Total": 12.5,
                    "Yesterday": 0.4,
                    "Today": 0.2,
                    "Period": 1,
                    "Power": 55,
                    "ApparentPower": 60,
                    "ReactivePower": 24,
                    "Factor": 0.92,
                    "Voltage": 229,
                    "Current": 0.26,
                    "Phases": [1, 2],
                },
            },
            [
                env(
                    "energy",
                    {
                        "total_kwh": 12.5,
                        "yesterday_kwh": 0.4,
                        "today_kwh": 0.2,
                        "period": 1,
                        "power_w": 55,
                        "apparent_power_va": 60,
                        "reactive_power_var": 24,
                        "power_factor": 0.92,
                        "voltage_v": 229,
                        "current_a": 0.26,
                    },
                )
            ],
        ),
        # A nested object inside a sensor is flattened
        (
            {
                "Time": "2026-11-28T14:02:11",
                "PZEM": {"Address": 1, "Energy": {"Total": 3.5, "Deep": {"ValueX": 1}}},
            },
            [env("pzem", {"address": 1, "energy_total_kwh": 3.5, "energy_deep_value_x": 1})],
        ),
        # Booleans, nulls and text are not measurements; a sensor of nothing else is skipped
        (
            {
                "Time": "2026-11-28T14:02:11",
                "Switch": {"State": True, "Name": "pump", "X": None},
                "AM2301": {"Temperature": 30},
            },
            [env("am2301", {"temperature_c": 30})],
        ),
        # No sensor at all (a STATE-like message on the SENSOR topic)
        ({"Time": "2026-11-28T14:02:11", "Uptime": "0T01:00:00", "Wifi": 5}, []),
        ({}, []),
        # Without Time, the receive time; with a zone, the zone wins over the option
        ({"AM2301": {"Humidity": 1.5}}, [env("am2301", {"humidity_pct": 1.5}, RECEIVED)]),
        (
            {"Time": "2026-11-28T06:02:11Z", "AM2301": {"Humidity": 1.5}},
            [env("am2301", {"humidity_pct": 1.5})],
        ),
        # A device without NTP counts from 1970
        (
            {"Time": "1970-01-01T00:05:00", "AM2301": {"Humidity": 1.5}},
            [env("am2301", {"humidity_pct": 1.5}, RECEIVED)],
        ),
    ],
)
def test_shapes(payload: dict[str, Any], expected: list[Reading]) -> None:
    assert readings(payload) == expected


def test_numbers_are_always_floats() -> None:
    # Tasmota prints 29 after 29.4; an int would make InfluxDB refuse the field's later points.
    (reading,) = readings({"X": {"A": 1, "B": 1.0}})
    assert [type(v) for _, v in reading.fields] == [float, float]


def test_options() -> None:
    opts = Options(
        measurement="weather",
        topic_prefix="kutim/tele",
        utc_offset_minutes=0,
        rename={"temperature_c": "air_temperature_c", "energy_total_kwh": "kwh"},
        time=TimePolicy(earliest_ns=0),
    )
    result = readings(
        {
            "Time": "1970-01-01T00:05:00",
            "AM2301": {"Temperature": 30},
            "P": {"Energy": {"Total": 2}},
        },
        opts,
        "kutim/tele/t1/SENSOR",
    )
    assert result == [
        Reading(
            "weather",
            (("device", "t1"), ("sensor", "am2301")),
            (("air_temperature_c", 30),),
            300 * SEC,
        ),
        Reading("weather", (("device", "t1"), ("sensor", "p")), (("kwh", 2),), 300 * SEC),
    ]


@pytest.mark.parametrize(
    "topic",
    [
        "tele/kebun-1/STATE",
        "tele/kebun-1/LWT",
        "stat/kebun-1/SENSOR",
        "tele/SENSOR",
        "tele/a/b/SENSOR",
        "",
        "tele/kebun-1/sensor",
    ],
)
def test_unknown_topic(topic: str) -> None:
    with pytest.raises(DecodeError) as caught:
        readings({"AM2301": {"Temperature": 1}}, topic=topic)
    assert caught.value.kind == "unknown_topic"
    assert caught.value.source == topic


@pytest.mark.parametrize(
    ("payload", "kind"),
    [
        (b"", "malformed"),
        (b"Online", "malformed"),
        (b"[]", "malformed"),
        (b'"x"', "malformed"),
        (b'{"AM2301": {"Temperature": NaN}}', "malformed"),
        (b'{"Time": "sometime", "AM2301": {"Temperature": 1}}', "malformed"),
        (b'{"Time": 1795850797, "AM2301": {"Temperature": 1}}', "wrong_type"),
        (b'{"TempUnit": "K", "AM2301": {"Temperature": 1}}', "malformed"),
        (b'{"TempUnit": null, "AM2301": {"Temperature": 1}}', "malformed"),
        (b'{"PressureUnit": "Pa", "BMP": {"Pressure": 1}}', "malformed"),
        (b'{"AM\\n2301": {"Temperature": 1}}', "bad_name"),
        (b'{"": {"Temperature": 1}}', "bad_name"),
        (b'{"X": {"A\\u0000": 1}}', "bad_name"),
        (b'{"X": {"Temperature": 1, "temperature_c": 2}}', "bad_name"),
        (b'{"X": {"Time": 1}}', "bad_name"),
        (b'{"X": ' * 12 + b"1" + b"}" * 12, "malformed"),
    ],
)
def test_bad_payloads(payload: bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(TOPIC, payload, RECEIVED, OPTS)
    error = caught.value
    assert error.kind == kind
    assert (error.source, error.device, error.payload) == (TOPIC, "kebun-1", payload)


# --- only DecodeError, whatever arrives ---------------------------------------------------

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["Temperature", "X", "TempUnit", "Time", ""]) | st.text(max_size=4),
            inner,
            max_size=3,
        )
    ),
    max_leaves=10,
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
@given(json_values)
def test_arbitrary_json(value: Any) -> None:
    try:
        payload = orjson.dumps(value)
    except (orjson.JSONEncodeError, TypeError):
        payload = repr(value).encode()
    decodes_or_refuses(TOPIC, payload)
