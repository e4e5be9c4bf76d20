"""ESPHome's MQTT state topics, with the shapes ESPHome's documentation gives."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.esphome import Options, decode
from devices.reading import DecodeError, FieldValue, Reading
from tests.conftest import decodes_or_refuses as check

SEC = 10**9
RECEIVED = 1_795_850_800 * SEC
OPTS = Options()


@pytest.mark.parametrize(
    ("topic", "payload", "device", "field", "value"),
    [
        ("polder-1/sensor/water_level/state", b"123.4", "polder-1", "water_level", 123.4),
        ("polder-1/sensor/water_level/state", b"-5", "polder-1", "water_level", -5.0),
        ("polder-1/sensor/water_level/state", b"23.50\n", "polder-1", "water_level", 23.5),
        ("polder-1/sensor/water_level/state", b"1e3", "polder-1", "water_level", 1000.0),
        ("kebun/esp-7/sensor/soil/state", b"41", "esp-7", "soil", 41.0),
        ("polder-1/binary_sensor/pump/state", b"ON", "polder-1", "pump", True),
        ("polder-1/binary_sensor/pump/state", b"OFF", "polder-1", "pump", False),
        ("polder-1/binary_sensor/pump/state", b"off", "polder-1", "pump", False),
    ],
)
def test_states(topic: str, payload: bytes, device: str, field: str, value: FieldValue) -> None:
    result = decode(topic, payload, RECEIVED, OPTS)
    assert result == [Reading("garden_sensor", (("device", device),), ((field, value),), RECEIVED)]
    assert type(result[0].fields[0][1]) is type(value)


@pytest.mark.parametrize("payload", [b"nan", b"NaN", b"NAN", b" nan\n"])
def test_nan_is_no_reading(payload: bytes) -> None:
    assert decode("polder-1/sensor/water_level/state", payload, RECEIVED, OPTS) == []


def test_text_sensor_is_no_reading() -> None:
    assert decode("polder-1/text_sensor/version/state", b"2026.11.0 \xff", RECEIVED, OPTS) == []


def test_rename_gives_units() -> None:
    opts = Options(measurement="polder", rename={"water_level": "level_cm"})
    assert decode("polder-1/sensor/water_level/state", b"81.0", RECEIVED, opts) == [
        Reading("polder", (("device", "polder-1"),), (("level_cm", 81.0),), RECEIVED)
    ]


@pytest.mark.parametrize(
    "topic",
    [
        "polder-1/status",
        "polder-1/sensor/water_level",
        "polder-1/sensor/water_level/command",
        "polder-1/switch/pump/state",
        "polder-1/light/lamp/state",
        "sensor/water_level/state",
        "",
    ],
)
def test_unknown_topic(topic: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(topic, b"1", RECEIVED, OPTS)
    assert caught.value.kind == "unknown_topic"
    assert (caught.value.source, caught.value.payload) == (topic, b"1")


@pytest.mark.parametrize(
    ("topic", "payload", "kind"),
    [
        ("polder-1/sensor/water_level/state", b"", "malformed"),
        ("polder-1/sensor/water_level/state", b"online", "malformed"),
        ("polder-1/sensor/water_level/state", b"12,5", "malformed"),
        ("polder-1/sensor/water_level/state", b"1_000", "malformed"),
        ("polder-1/sensor/water_level/state", b"\xd9\xa1", "malformed"),
        ("polder-1/sensor/water_level/state", b"inf", "nan"),
        ("polder-1/sensor/water_level/state", b"-Infinity", "nan"),
        ("polder-1/sensor/water_level/state", b"1e999", "nan"),
        ("polder-1/binary_sensor/pump/state", b"1", "malformed"),
        ("polder-1/binary_sensor/pump/state", b"", "malformed"),
        ("polder-1/binary_sensor/pump/state", b"\xff", "malformed"),
        ("polder-1/sensor/time/state", b"1", "bad_name"),
        ("polder-1/sensor//state", b"1", "bad_name"),
        ("/sensor/x/state", b"1", "bad_name"),
        ("a\nb/sensor/x/state", b"1", "bad_name"),
    ],
)
def test_bad_messages(topic: str, payload: bytes, kind: str) -> None:
    with pytest.raises(DecodeError) as caught:
        decode(topic, payload, RECEIVED, OPTS)
    error = caught.value
    assert error.kind == kind
    assert (error.source, error.device, error.payload) == (topic, topic.split("/")[-4], payload)


# --- only DecodeError, whatever arrives ---------------------------------------------------


def decodes_or_refuses(topic: str, payload: bytes) -> None:
    check(decode, topic, payload, RECEIVED, OPTS)


@settings(max_examples=200)
@given(st.text(max_size=40), st.binary(max_size=32))
def test_arbitrary_topic_and_bytes(topic: str, payload: bytes) -> None:
    decodes_or_refuses(topic, payload)


@settings(max_examples=200)
@given(
    st.builds(
        "{}/{}/{}/state".format,
        st.text(max_size=6),
        st.sampled_from(["sensor", "binary_sensor", "text_sensor"]),
        st.text(max_size=6),
    ),
    st.binary(max_size=16)
    | st.text(st.sampled_from(list("0123456789.+-eEnaNifONF \n")), max_size=12).map(str.encode),
)
def test_esphome_like_input(topic: str, payload: bytes) -> None:
    decodes_or_refuses(topic, payload)
