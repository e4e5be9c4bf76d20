"""gateway.store.lineproto.encode and devices.influx.decode are inverses for every valid Reading.

Names are drawn from all of Unicode plus the characters line protocol treats specially
(comma, space, equals, quotes, backslash, '#'); whatever Reading refuses is rejected from the
sample, and the refusals themselves are checked: a control character (a newline above all, an
injection) in any name, tag value or string value is never accepted.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import assume, given, reject, settings
from hypothesis import strategies as st

from devices.influx import Options, decode
from devices.reading import DecodeError, FieldValue, Reading
from devices.timeparse import TimePolicy
from gateway.store.lineproto import encode, split_time

TOPIC = "telegraf/gw"
# The device-time plausibility check is not what is tested here: every time is believed.
OPTS = Options(device_tag="device", time=TimePolicy(earliest_ns=0, max_future_ns=2**63))
CONTROLS = [chr(c) for c in range(0x20)] + [chr(c) for c in range(0x7F, 0xA0)]

special = st.sampled_from(list(" ,=\"\\'#=\u00e9\u6f22\U0001f331\u2028\u00a0"))
# Control characters are left to the refusal test below: here they would only be rejected.
name_chars = st.one_of(special, st.characters(exclude_categories=("Cs", "Cc")))
names = st.text(name_chars, min_size=1, max_size=12)
values: st.SearchStrategy[FieldValue] = st.one_of(
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.text(name_chars, max_size=20),
)


def typed(reading: Reading) -> tuple[Any, ...]:
    """Everything, with field types and float bits (repr tells -0.0 from 0.0)."""
    return (
        reading.measurement,
        reading.tags,
        tuple((k, type(v), repr(v)) for k, v in reading.fields),
        reading.time_ns,
    )


def build(
    measurement: str,
    device: str,
    tags: dict[str, str],
    fields: dict[str, FieldValue],
    time_ns: int,
) -> Reading:
    try:
        return Reading.build(measurement, {**tags, "device": device}, fields, time_ns)
    except DecodeError:
        reject()


@settings(max_examples=400)
@given(
    names,
    names,
    st.dictionaries(names, names, max_size=3),
    st.dictionaries(names, values, min_size=1, max_size=4),
    st.integers(0, 2**63 - 1),
)
def test_encode_then_decode_is_identity(
    measurement: str,
    device: str,
    tags: dict[str, str],
    fields: dict[str, FieldValue],
    time_ns: int,
) -> None:
    reading = build(measurement, device, tags, fields, time_ns)
    line = encode(reading)
    assert "\n" not in line
    decoded = decode(TOPIC, line.encode(), 0, OPTS)
    assert decoded == [reading]
    assert typed(decoded[0]) == typed(reading)


@settings(max_examples=200)
@given(
    names,
    names,
    st.dictionaries(names, names, max_size=2),
    st.dictionaries(names, values, min_size=1, max_size=3),
    st.integers(0, 2**63 - 1),
    st.dictionaries(names, names, max_size=2),
    names,
)
def test_extra_tags_and_measurement_round_trip(
    measurement: str,
    device: str,
    tags: dict[str, str],
    fields: dict[str, FieldValue],
    time_ns: int,
    extra: dict[str, str],
    other_measurement: str,
) -> None:
    reading = build(measurement, device, tags, fields, time_ns)
    try:
        expected = Reading.build(
            other_measurement, {**extra, **dict(reading.tags)}, dict(reading.fields), time_ns
        )
    except DecodeError:
        reject()
    line = encode(reading, extra_tags=extra, measurement=other_measurement)
    (decoded,) = decode(TOPIC, line.encode(), 0, OPTS)
    assert typed(decoded) == typed(expected)


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            names,
            names,
            st.dictionaries(names, values, min_size=1, max_size=2),
            st.integers(0, 2**63 - 1),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_a_batch_of_lines_round_trips(
    items: list[tuple[str, str, dict[str, FieldValue], int]],
) -> None:
    readings = [build(m, d, {}, f, t) for m, d, f, t in items]
    payload = "\n".join(encode(r) for r in readings).encode()
    assert decode(TOPIC, payload, 0, OPTS) == readings


@settings(max_examples=200)
@given(
    names,
    st.sampled_from(CONTROLS),
    st.integers(0, 12),
    st.sampled_from(["measurement", "tag key", "tag value", "field key", "string value"]),
)
def test_a_control_character_anywhere_is_refused(
    name: str,
    control: str,
    at: int,
    where: str,
) -> None:
    bad = name[:at] + control + name[at:]
    measurement, tag_key, tag_value, field_key, value = "m", "t", "v", "f", "x"
    if where == "measurement":
        measurement = bad
    elif where == "tag key":
        tag_key = bad
    elif where == "tag value":
        tag_value = bad
    elif where == "field key":
        field_key = bad
    else:
        value = bad
    assume(tag_key != "device")
    with pytest.raises(DecodeError):
        Reading.build(measurement, {tag_key: tag_value, "device": "d"}, {field_key: value}, 0)


@pytest.mark.parametrize(
    "reading",
    [
        Reading(
            "a b,c=d",
            (("device", "d 1,x=y"), ("t=k", 'v"q')),
            (("f ,=", 's \\ " end\\'), ("g", -0.0), ("h", 5e-324)),
            1795850797629000123,
        ),
        Reading("m\\x", (("device", "C:\\dir\\file"),), (("f\\n", "\\n\\\\"),), 0),
        Reading("not#first", (("device", "d"),), (("i", -(2**63)), ("j", 2**63 - 1)), 1),
        Reading("m", (("device", "d"),), (("b", True), ("c", False), ("e", 1e300)), 2**63 - 1),
        Reading("\u6f22\U0001f331", (("device", "\u00e9"),), (("s", ""),), 5),
    ],
    ids=range(5),
)
def test_tricky_examples(reading: Reading) -> None:
    (decoded,) = decode(TOPIC, encode(reading).encode(), 0, OPTS)
    assert typed(decoded) == typed(reading)


@pytest.mark.parametrize(("line", "parts"), [
    ("polder,device=p1 level_cm=182.5 1800000000000000000",
     ("polder,device=p1 level_cm=182.5", 1800000000000000000)),
    ('note,device=p1 text="a 12" 7', ('note,device=p1 text="a 12"', 7)),
    ("polder,device=p1 level_cm=182.5", ("polder,device=p1 level_cm=182.5", None)),
    ('note,device=p1 text="a 12"', ('note,device=p1 text="a 12"', None)),
    ("nospace", ("nospace", None)),
])
def test_split_time(line: str, parts: tuple[str, int | None]) -> None:
    assert split_time(line) == parts
