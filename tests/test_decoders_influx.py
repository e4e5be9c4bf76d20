"""InfluxDB line protocol as Telegraf's MQTT output sends it."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devices.influx import Options, decode
from devices.reading import DecodeError, FieldValue, Reading
from devices.timeparse import TimePolicy
from tests.conftest import decodes_or_refuses as check

SEC = 10**9
RECEIVED = 1_795_850_800 * SEC
STAMP = 1_795_850_797_629_000_123
TOPIC = "telegraf/ap-1"
OPTS = Options()


def parse(text: str | bytes, opts: Options = OPTS) -> list[Reading]:
    raw = text.encode() if isinstance(text, str) else text
    return decode(TOPIC, raw, RECEIVED, opts)


def one(text: str, opts: Options = OPTS) -> Reading:
    (reading,) = parse(text, opts)
    return reading


def typed(fields: Any) -> list[tuple[str, type, str]]:
    return [(k, type(v), repr(v)) for k, v in fields]


def test_telegraf_sample() -> None:
    text = (
        "cpu,cpu=cpu-total,host=ap-1 usage_idle=97.5,usage_user=1.25 1795850797629000123\n"
        "mem,host=ap-1 available=123456789i,used_percent=21.5 1795850797629000123\n"
        "system,host=ap-1 uptime=3517u,load1=0.15,n_users=0i 1795850797629000123\n"
    )
    assert parse(text) == [
        Reading(
            "cpu",
            (("cpu", "cpu-total"), ("device", "ap-1")),
            (("usage_idle", 97.5), ("usage_user", 1.25)),
            STAMP,
        ),
        Reading(
            "mem", (("device", "ap-1"),), (("available", 123456789), ("used_percent", 21.5)), STAMP
        ),
        Reading(
            "system",
            (("device", "ap-1"),),
            (("uptime", 3517), ("load1", 0.15), ("n_users", 0)),
            STAMP,
        ),
    ]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", 1.0),
        ("-1", -1.0),
        ("1.5", 1.5),
        ("-0.0", -0.0),
        (".5", 0.5),
        ("1.", 1.0),
        ("1e3", 1000.0),
        ("1E+3", 1000.0),
        ("-2.5e-07", -2.5e-07),
        ("1e+300", 1e300),
        ("0.1", 0.1),
        ("5e-324", 5e-324),
        ("+1.5", 1.5),
        ("1i", 1),
        ("-9223372036854775808i", -(2**63)),
        ("9223372036854775807i", 2**63 - 1),
        ("0u", 0),
        ("9223372036854775807u", 2**63 - 1),
        ("t", True),
        ("T", True),
        ("true", True),
        ("True", True),
        ("TRUE", True),
        ("f", False),
        ("F", False),
        ("false", False),
        ("False", False),
        ("FALSE", False),
        ('""', ""),
        ('"text"', "text"),
        ('"a b,c=d"', "a b,c=d"),
        (r'"say \"hi\""', 'say "hi"'),
        (r'"back\\slash"', "back\\slash"),
        (r'"C:\temp"', "C:\\temp"),
        (r'"end\\"', "end\\"),
        (r'"\\\""', '\\"'),
        ('"tanah \u00b0C 🌱"', "tanah \u00b0C 🌱"),
    ],
)
def test_field_values(value: str, expected: FieldValue) -> None:
    reading = one(f"m,host=h v={value} {STAMP}")
    assert typed(reading.fields) == typed([("v", expected)])


@pytest.mark.parametrize(
    ("line", "measurement", "tags", "fields"),
    [
        (r"my\ meas\,ure,host=h v=1", "my meas,ure", {}, {"v": 1.0}),
        (r"a=b,host=h v=1", "a=b", {}, {"v": 1.0}),
        (r'"quoted",host=h v=1', '"quoted"', {}, {"v": 1.0}),
        (r"m\x,host=h v=1", "m\\x", {}, {"v": 1.0}),
        (r"m,t\ k\,\==v\ a\,l\=,host=h v=1", "m", {"t k,=": "v a,l="}, {"v": 1.0}),
        (r"m,t=C:\dir,host=h v=1", "m", {"t": "C:\\dir"}, {"v": 1.0}),
        (r"m,host=h f\ k\,\=ey=1", "m", {}, {"f k,=ey": 1.0}),
        (r'm,host=h a"b=1', "m", {}, {'a"b': 1.0}),
        ("m,t=\u00fcber,host=h v=1", "m", {"t": "\u00fcber"}, {"v": 1.0}),
        ('m,host=h a=1,b=2i,c="x",d=t', "m", {}, {"a": 1.0, "b": 2, "c": "x", "d": True}),
    ],
)
def test_names_and_escapes(
    line: str, measurement: str, tags: dict[str, str], fields: dict[str, FieldValue]
) -> None:
    assert one(line) == Reading.build(measurement, {"device": "h", **tags}, fields, RECEIVED)


@pytest.mark.parametrize(
    ("precision", "stamp", "expected"),
    [
        ("ns", "1795850797629000123", 1795850797629000123),
        ("us", "1795850797629000", 1795850797629000000),
        ("ms", "1795850797629", 1795850797629000000),
        ("s", "1795850797", 1795850797000000000),
    ],
)
def test_precision(precision: Any, stamp: str, expected: int) -> None:
    assert one(f"m,host=h v=1 {stamp}", Options(precision=precision)).time_ns == expected


@pytest.mark.parametrize(
    ("text", "time_ns"),
    [
        ("m,host=h v=1", RECEIVED),
        ("m,host=h v=1  ", RECEIVED),
        ("m,host=h v=1   1795850797629000123", STAMP),
        ("m,host=h v=1 0", RECEIVED),  # a clock at 1970: implausible
        ("m,host=h v=1 1895850797629000123", RECEIVED),  # years ahead
    ],
)
def test_time(text: str, time_ns: int) -> None:
    assert one(text).time_ns == time_ns


def test_time_policy() -> None:
    opts = Options(time=TimePolicy(earliest_ns=0))
    assert one("m,host=h v=1 5", opts).time_ns == 5


def test_lines_comments_and_blank_lines() -> None:
    text = b"\n# a comment\n  \nm,host=h v=1i\r\n\n  # indented comment\nn,host=h w=2i\n"
    assert [(r.measurement, r.fields) for r in parse(text)] == [
        ("m", (("v", 1),)),
        ("n", (("w", 2),)),
    ]
    assert parse(b"") == []
    assert parse(b"# nothing\n\n") == []


@pytest.mark.parametrize(
    ("line", "tags", "opts"),
    [
        ("m,host=ap-1 v=1", {"device": "ap-1"}, OPTS),
        ("m,device=pump-2,host=ap-1 v=1", {"device": "pump-2", "host": "ap-1"}, OPTS),
        ("m,agent=a7,host=ap-1 v=1", {"device": "a7", "host": "ap-1"}, Options(device_tag="agent")),
        ("m,device=d v=1", {"device": "d"}, Options(device_tag="device")),
    ],
)
def test_device_tag(line: str, tags: dict[str, str], opts: Options) -> None:
    assert dict(one(line, opts).tags) == tags


def test_unknown_device() -> None:
    with pytest.raises(DecodeError) as caught:
        parse("m,ho=x v=1")
    assert caught.value.kind == "unknown_device"


def test_rename() -> None:
    opts = Options(rename={"usage_idle": "idle_pct"})
    assert one("cpu,host=h usage_idle=1", opts).fields == (("idle_pct", 1.0),)


@pytest.mark.parametrize(
    ("text", "kind", "words"),
    [
        ("m", "malformed", "line 1"),
        ("m,host=h", "malformed", "space"),
        ("m,host=h ", "malformed", "space"),
        ("m v=1,", "malformed", "field key missing"),
        ("m,host=h v", "malformed", "'='"),
        ("m,host=h v=", "malformed", "value missing"),
        ("m,host=h v=1,", "malformed", "field key missing"),
        ("m,host=h =1", "malformed", "field key missing"),
        ("m,host=h v=1 12x", "malformed", "timestamp"),
        ("m,host=h v=1 1 2", "malformed", "timestamp"),
        ("m,host=h v=1 1.5", "malformed", "timestamp"),
        ("m,host=h v=1 ٣", "malformed", "timestamp"),
        ("m,host=h v=abc", "malformed", "value"),
        ("m,host=h v=1x", "malformed", "value"),
        ("m,host=h v=1_0", "malformed", "value"),
        ("m,host=h v=nan", "malformed", "value"),
        ("m,host=h v=inf", "malformed", "value"),
        ("m,host=h v=1.5i", "malformed", "value"),
        ("m,host=h v=-1u", "malformed", "value"),
        ("m,host=h v=yes", "malformed", "value"),
        ('m,host=h v="unterminated', "malformed", "closing quote"),
        ('m,host=h v="a"b', "malformed", "space"),
        ('m,host=h v=a"b"', "malformed", "value"),
        (",host=h v=1", "malformed", "measurement missing"),
        (" ,host=h v=1", "malformed", "measurement missing"),
        ("m,=h v=1", "malformed", "tag key missing"),
        ("m,host= v=1", "malformed", "value missing"),
        ("m,host v=1", "malformed", "'='"),
        ("m,host=h,host=i v=1", "malformed", "repeated"),
        ("m,host=h\\", "malformed", "space"),
        ("m,host=h v=1,v=2", "bad_name", "repeated"),
        ("m,host=h time=1", "bad_name", "time"),
        ("m,time=x,host=h v=1", "bad_name", "time"),
        ("m\\\\x,host=h v=1", "bad_name", "backslash"),
        ("m,host=h v=1e999", "nan", "finite"),
        ("m,host=h v=9223372036854775808i", "range", "64-bit"),
        ("m,host=h v=18446744073709551615u", "range", "64-bit"),
        ("m,host=h v=123456789012345678901234567890i", "range", "range"),
        ("m,host=h v=1 " + "9" * 5000, "range", "range"),
        ("m,host=h v=1 -1", "range", "range"),
        ("m,host=h v=1 9223372036854775808", "range", "range"),
        ('m,host=h v="' + "x" * 5000 + '"', "range", "longer"),
        ('m,host=h v="a\tb"', "bad_name", "control"),
        ("m,host=a\x7fb v=1", "bad_name", "control"),
    ],
)
def test_bad_lines(text: str, kind: str, words: str) -> None:
    payload = text.encode()
    with pytest.raises(DecodeError) as caught:
        parse(payload)
    error = caught.value
    assert error.kind == kind
    assert words in error.reason
    assert (error.source, error.payload) == (TOPIC, payload)


def test_precision_s_overflow() -> None:
    with pytest.raises(DecodeError) as caught:
        parse("m,host=h v=1 9223372037", Options(precision="s"))
    assert caught.value.kind == "range"


def test_one_bad_line_refuses_the_message_and_is_named() -> None:
    text = b"m,host=ap-1 v=1\n# ok\nm,host=ap-2 v=oops\nm,host=ap-1 v=3\n"
    with pytest.raises(DecodeError) as caught:
        parse(text)
    error = caught.value
    assert error.reason.startswith("line 3: ")
    assert error.device == "ap-2"
    assert error.payload == text


def test_not_utf8() -> None:
    with pytest.raises(DecodeError) as caught:
        parse(b'm,host=h v="\xff"')
    assert caught.value.kind == "malformed"


def test_a_newline_cannot_inject_a_point() -> None:
    # The newline ends the line, so the would-be injected text is a line of its own and must
    # be valid by itself; a newline inside a string value makes both halves malformed.
    with pytest.raises(DecodeError):
        parse(b'm,host=h v="a\nevil,host=x v=1i"')


# --- only DecodeError, whatever arrives ---------------------------------------------------


def decodes_or_refuses(payload: bytes, opts: Options = OPTS, topic: str = TOPIC) -> None:
    check(decode, topic, payload, RECEIVED, opts)


@settings(max_examples=200)
@given(st.text(max_size=40), st.binary(max_size=64))
def test_arbitrary_topic_and_bytes(topic: str, payload: bytes) -> None:
    decodes_or_refuses(payload, topic=topic)


line_protocol_ish = st.text(
    st.sampled_from(list('m,host=h v1.5e-+iuTtrfalsF"\\ \n#\r\t0123456789é')), max_size=60
).map(str.encode)


@settings(max_examples=300)
@given(line_protocol_ish, st.sampled_from(["ns", "us", "ms", "s"]))
def test_line_protocol_like_input(payload: bytes, precision: Any) -> None:
    decodes_or_refuses(payload, Options(precision=precision, time=TimePolicy(earliest_ns=0)))


@settings(max_examples=200)
@given(st.binary(max_size=32))
def test_valid_head_then_arbitrary_bytes(tail: bytes) -> None:
    decodes_or_refuses(b"m,host=h v=" + tail)
