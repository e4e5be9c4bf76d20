"""Serial text lines: JSON, key=value and CSV, with an optional NMEA checksum."""

from __future__ import annotations

import dataclasses
from functools import reduce
from operator import xor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from devices.reading import DecodeError, Reading
from devices.serial_lines import Options, decode
from devices.timeparse import TimePolicy
from tests.conftest import decodes_or_refuses as check

SEC = 10**9
RECEIVED = 1_795_850_800 * SEC
PORT = "/dev/serial/by-id/usb-Arduino_Uno_7543-if00"
# integers="int": these tables check how each value is typed; the default, which makes whole
# numbers floats for InfluxDB's sake, has its own test below.
JSON = Options(device="kebun-1", integers="int")
KV = Options(format="kv", device="kebun-1", integers="int")
CSV = Options(format="csv", device="kebun-1", columns=("t", "h", "rain_mm"), integers="int")


def one(line: bytes, opts: Options) -> Reading:
    readings = decode(PORT, line, RECEIVED, opts)
    assert len(readings) == 1
    return readings[0]


def refused(line: bytes, opts: Options) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        decode(PORT, line, RECEIVED, opts)
    error = caught.value
    assert error.source == PORT
    assert error.payload == line
    return error


def nmea(body: bytes) -> bytes:
    return b"$" + body + b"*%02X" % reduce(xor, body, 0)


# --- the three formats ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "opts", "fields"),
    [
        # json: the same value rules as the native format
        (b'{"t": 29.5, "h": 78, "pump": true, "mode": "auto"}', JSON,
         (("t", 29.5), ("h", 78), ("pump", True), ("mode", "auto"))),
        (b'  {"t": -1.5e-3}\r\n', JSON, (("t", -0.0015),)),
        # kv: spaces, commas, semicolons, any mix
        (b"t=29.5 h=78.2 rain_mm=0", KV, (("t", 29.5), ("h", 78.2), ("rain_mm", 0))),
        (b"t=29.5,h=78.2", KV, (("t", 29.5), ("h", 78.2))),
        (b"t=29.5;h=78.2", KV, (("t", 29.5), ("h", 78.2))),
        (b"t=29.5, h=78.2 ;\t", KV, (("t", 29.5), ("h", 78.2))),
        (b",t=1,", KV, (("t", 1),)),
        (b"  t=1   h=2  ", KV, (("t", 1), ("h", 2))),
        # kv value types: int, float, bool (any case), else text
        (b"a=-7 b=+3 c=007", KV, (("a", -7), ("b", 3), ("c", 7))),
        (b"a=1.5 b=-.5 c=2. d=1e3 e=-2.5E-2", KV,
         (("a", 1.5), ("b", -0.5), ("c", 2.0), ("d", 1000.0), ("e", -0.025))),
        (b"a=true b=FALSE c=True", KV, (("a", True), ("b", False), ("c", True))),
        (b"mode=auto fw=1.2.3 hex=0x1F", KV, (("mode", "auto"), ("fw", "1.2.3"), ("hex", "0x1F"))),
        (b"suhu_\xc2\xb0c=29.5", KV, (("suhu_\u00b0c", 29.5),)),
        # kv: a failed read prints nan; that field is left out, as is an empty value
        (b"t=nan h=78.2", KV, (("h", 78.2),)),
        (b"t=NaN h=-nan p=+NAN x=1", KV, (("x", 1),)),
        (b"t= h=2", KV, (("h", 2),)),
        # csv
        (b"29.5,78.2,0", CSV, (("t", 29.5), ("h", 78.2), ("rain_mm", 0))),
        (b" 29.5 , 78.2 ,\t0 ", CSV, (("t", 29.5), ("h", 78.2), ("rain_mm", 0))),
        (b"nan,78.2,0", CSV, (("h", 78.2), ("rain_mm", 0))),
        (b",78.2,", CSV, (("h", 78.2),)),
        (b"29.5,true,dry", CSV, (("t", 29.5), ("h", True), ("rain_mm", "dry"))),
        # csv: "" and "-" skip a column
        (b"A1,29.5,x,78",
         dataclasses.replace(CSV, columns=("-", "t", "", "h")), (("t", 29.5), ("h", 78))),
        (b"29.5;78", dataclasses.replace(CSV, columns=("t", "h"), separator=";"),
         (("t", 29.5), ("h", 78))),
        (b"29.5\t78", dataclasses.replace(CSV, columns=("t", "h"), separator="\t"),
         (("t", 29.5), ("h", 78))),
        (b"29.5 | 78", dataclasses.replace(CSV, columns=("t", "h"), separator=" | "),
         (("t", 29.5), ("h", 78))),
    ],
)
def test_fields(line: bytes, opts: Options, fields: tuple[tuple[str, Any], ...]) -> None:
    reading = one(line, opts)
    assert reading == Reading("garden_sensor", (("device", "kebun-1"),), fields, RECEIVED)
    assert [type(v) for _, v in reading.fields] == [type(v) for _, v in fields]


@pytest.mark.parametrize(
    ("line", "opts"),
    [
        (b"t=nan", KV),
        (b"t=nan h=NaN", KV),
        (b"t=", KV),
        (b"nan,nan,nan", CSV),
        (b"nan,,", CSV),
    ],
)
def test_nothing_but_nan_is_no_reading(line: bytes, opts: Options) -> None:
    assert decode(PORT, line, RECEIVED, opts) == []


# --- device and time ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "opts", "device"),
    [
        (b'{"id": "kebun-2", "t": 1}', Options(device_key="id"), "kebun-2"),
        (b'{"id": 42, "t": 1}', Options(device_key="id"), "42"),
        (b'{"id": "kebun-2", "t": 1}', Options(device_key="id", device="x"), "kebun-2"),
        (b'{"t": 1}', Options(device_key="id", device="fixed"), "fixed"),
        (b'{"id": null, "t": 1}', Options(device_key="id", device="fixed"), "fixed"),
        (b'{"id": "", "t": 1}', Options(device_key="id", device="fixed"), "fixed"),
        (b"id=kebun-3 t=1", Options(format="kv", device_key="id"), "kebun-3"),
        (b"t=1 id=kebun-3", Options(format="kv", device_key="id", device="x"), "kebun-3"),
        (b"t=1", Options(format="kv", device_key="id", device="fixed"), "fixed"),
        (b"id= t=1", Options(format="kv", device_key="id", device="fixed"), "fixed"),
        (b"kebun-4,1", Options(format="csv", columns=("id", "t"), device_key="id"), "kebun-4"),
    ],
)
def test_device(line: bytes, opts: Options, device: str) -> None:
    reading = one(line, opts)
    assert reading.tags == (("device", device),)
    # The device key is a tag, not a field.
    assert reading.fields == (("t", 1),)


TS_OPTS = {
    "json": Options(device="d", time_key="ts"),
    "kv": Options(format="kv", device="d", time_key="ts"),
    "csv": Options(format="csv", device="d", time_key="ts", columns=("ts", "t")),
}


def with_ts(fmt: str, ts: str) -> bytes:
    if fmt == "json":
        value = ts if ts[0].isdigit() and "-" not in ts else f'"{ts}"'
        return f'{{"ts": {value}, "t": 1}}'.encode()
    if fmt == "kv":
        return f"ts={ts} t=1".encode()
    return f"{ts},1".encode()


@pytest.mark.parametrize("fmt", sorted(TS_OPTS))
@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ("1795850797", 1795850797 * SEC),
        ("1795850797629", 1795850797629 * 10**6),
        ("1795850797.629", 1795850797629 * 10**6),
        ("1795850797629123", 1795850797629123 * 1000),
        ("1795850797629123456", 1795850797629123456),
        ("2026-11-28T06:02:11Z", 1795845731 * SEC),
        ("2026-11-28T14:02:11+08:00", 1795845731 * SEC),
        ("2026-11-28T06:02:11", 1795845731 * SEC),
        # Implausible device times (no RTC after a power cut) fall back to the receive time.
        ("12", RECEIVED),
        ("1795851101", RECEIVED),
    ],
)
def test_time_key(fmt: str, ts: str, expected: int) -> None:
    reading = one(with_ts(fmt, ts), TS_OPTS[fmt])
    assert reading.time_ns == expected
    assert reading.fields == (("t", 1),)


@pytest.mark.parametrize("fmt", sorted(TS_OPTS))
def test_zone_less_time_uses_the_configured_offset(fmt: str) -> None:
    opts = dataclasses.replace(TS_OPTS[fmt], default_utc_offset_minutes=480)
    assert one(with_ts(fmt, "2026-11-28T14:02:11"), opts).time_ns == 1795845731 * SEC


def test_empty_time_column_is_the_receive_time() -> None:
    assert one(b",1", TS_OPTS["csv"]).time_ns == RECEIVED
    assert one(b"ts= t=1", TS_OPTS["kv"]).time_ns == RECEIVED


def test_options_measurement_rename_and_policy() -> None:
    opts = Options(
        format="kv",
        device="polder-2",
        measurement="polder",
        rename={"lvl": "level_cm"},
        time_key="ts",
        time=TimePolicy(earliest_ns=0),
    )
    assert one(b"lvl=123 ts=12", opts) == Reading(
        "polder", (("device", "polder-2"),), (("level_cm", 123),), 12 * SEC
    )


# --- NMEA checksum --------------------------------------------------------------------------

NMEA_KV = Options(format="kv", device="kebun-1", checksum="nmea")


@pytest.mark.parametrize(
    "line",
    [
        b"$t=29.5 h=78.2*3F",
        b"t=29.5 h=78.2*3F",
        b"$t=29.5 h=78.2*3f",
        b"  $t=29.5 h=78.2*3F \r",
        nmea(b"t=29.5 h=78.2"),
    ],
)
def test_nmea_checksum_right(line: bytes) -> None:
    assert one(line, NMEA_KV).fields == (("t", 29.5), ("h", 78.2))


def test_nmea_checksum_real_gps_sentence() -> None:
    opts = Options(
        format="csv",
        device="gps-1",
        checksum="nmea",
        columns=("-", "-", "lat", "-", "lon", "-", "fix", "satellites", "hdop", "altitude_m",
                 "-", "-", "-", "-", "-"),
    )
    line = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47"
    assert one(line, opts).fields == (
        ("lat", 4807.038), ("lon", 1131.0), ("fix", 1), ("satellites", 8), ("hdop", 0.9),
        ("altitude_m", 545.4),
    )


def test_nmea_checksum_with_json() -> None:
    opts = Options(device="d", checksum="nmea")
    assert one(b'{"t":1}*79', opts).fields == (("t", 1),)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"$t=29.5 h=78.2*3E", "does not match"),
        (b"$t=29.5 h=78.3*3F", "does not match"),
        (b"$t=29.5 h=78.2", "does not end"),
        (b"t=29.5 h=78.2", "does not end"),
        (b"$t=29.5 h=78.2*", "does not end"),
        (b"$t=29.5 h=78.2*3", "does not end"),
        (b"$t=29.5 h=78.2*3G", "does not end"),
        (b"$t=29.5 h=78.2*3F0", "does not end"),
        (b"", "does not end"),
    ],
)
def test_nmea_checksum_wrong_or_missing(line: bytes, words: str) -> None:
    error = refused(line, NMEA_KV)
    assert error.kind == "checksum"
    assert words in error.reason
    assert error.device == "kebun-1"


def test_without_checksum_a_star_is_data() -> None:
    assert one(b"t=1 s=*3F", KV).fields == (("t", 1), ("s", "*3F"))


# --- refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "opts", "kind", "words"),
    [
        # json
        (b"", JSON, "malformed", "JSON"),
        (b"t=1", JSON, "malformed", "JSON"),
        (b'{"t": 1', JSON, "malformed", "JSON"),
        (b"[1, 2]", JSON, "malformed", "object"),
        (b'{"t": NaN}', JSON, "malformed", "JSON"),
        (b'{"t": Infinity}', JSON, "malformed", "JSON"),
        (b'{"t": 1e999}', JSON, "malformed", "JSON"),
        (b'{"t": null}', JSON, "wrong_type", "null"),
        (b'{"t": [1]}', JSON, "wrong_type", "array"),
        (b'{"t": {"a": 1}}', JSON, "wrong_type", "object"),
        (b"{}", JSON, "empty", "no fields"),
        (b'{"id": true, "t": 1}', Options(device_key="id"), "wrong_type", "device key"),
        (b'{"id": 1.5, "t": 1}', Options(device_key="id"), "wrong_type", "device key"),
        (b'{"t": 1, "ts": "soon"}', TS_OPTS["json"], "malformed", "ISO"),
        (b'{"t": 1, "ts": null}', TS_OPTS["json"], "wrong_type", "timestamp"),
        (b'{"t": 9223372036854775808}', JSON, "range", "64-bit"),
        (b'{"time": 1}', JSON, "bad_name", "time"),
        # not text at all
        (b"\xff\xfe", KV, "malformed", "UTF-8"),
        # kv
        (b"t=1 h", KV, "malformed", "key=value"),
        (b"29.5", KV, "malformed", "key=value"),
        (b"t=1 =2", KV, "malformed", "key=value"),
        (b"t = 1", KV, "malformed", "key=value"),
        (b"", KV, "empty", "no fields"),
        (b" ,; ", KV, "empty", "no fields"),
        (b"t=inf", KV, "nan", "finite"),
        (b"t=-Infinity", KV, "nan", "finite"),
        (b"t=1e999", KV, "nan", "finite"),
        (b"t=1 t=2", KV, "bad_name", "repeated"),
        (b"t=1 time=2", KV, "bad_name", "time"),
        (b"t=1 x=9999999999999999999", KV, "range", "64-bit"),
        (b"t=1\x00", KV, "bad_name", "control"),
        (b"a\x1bb=1", KV, "bad_name", "control"),
        (b"t=1 ts=-5", TS_OPTS["kv"], "range", "negative"),
        (b"t=1 ts=yesterday", TS_OPTS["kv"], "malformed", "ISO"),
        # csv
        (b"29.5,78.2", CSV, "malformed", "2 values, expected 3"),
        (b"29.5,78.2,0,1", CSV, "malformed", "4 values, expected 3"),
        (b"29.5", Options(format="csv", device="d"), "malformed", "csv needs columns"),
        (b"inf,1,1", CSV, "nan", "finite"),
        (b"1,1,1", dataclasses.replace(CSV, columns=("t", "t", "h")), "bad_name", "repeated"),
    ],
)
def test_bad_lines(line: bytes, opts: Options, kind: str, words: str) -> None:
    error = refused(line, opts)
    assert error.kind == kind
    assert words in error.reason


@pytest.mark.parametrize(
    ("line", "opts"),
    [
        (b'{"t": 1}', Options()),
        (b'{"t": 1}', Options(device_key="id")),
        (b'{"id": null, "t": 1}', Options(device_key="id")),
        (b"t=1", Options(format="kv")),
        (b"id= t=1", Options(format="kv", device_key="id")),
        (b"1,2,3", dataclasses.replace(CSV, device="")),
    ],
)
def test_unknown_device(line: bytes, opts: Options) -> None:
    error = refused(line, opts)
    assert error.kind == "unknown_device"
    assert error.device == ""


def test_the_error_names_the_device_when_known() -> None:
    error = refused(b'{"id": "kebun-9", "t": null}', Options(device_key="id"))
    assert (error.kind, error.device) == ("wrong_type", "kebun-9")
    error = refused(b"t=1 h", KV)
    assert error.device == "kebun-1"


@pytest.mark.parametrize(
    ("line", "opts"),
    [
        (b'{"id": "a\\nb", "t": 1}', Options(device_key="id")),
        (b'{"t": 1}', Options(device="a\nb")),
        (b"t=1", Options(format="kv", device="a\x00b")),
        (b"t=1", Options(format="kv", device="d", measurement="")),
        (b"t=1", Options(format="kv", device="d", rename={"t": "time"})),
        (b"t=1 h=2", Options(format="kv", device="d", rename={"t": "h"})),
    ],
)
def test_names_reading_refuses(line: bytes, opts: Options) -> None:
    assert refused(line, opts).kind == "bad_name"


# --- options --------------------------------------------------------------------------------


def test_options_contract() -> None:
    opts = Options()
    assert (opts.format, opts.measurement, opts.checksum, opts.separator) == (
        "json", "garden_sensor", "none", ",",
    )
    assert opts.time == TimePolicy()
    assert dict(opts.rename) == {}
    assert Options.__pydantic_config__ == {"extra": "forbid"}
    assert not hasattr(opts, "__dict__")
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.device = "x"  # type: ignore[misc]
    with pytest.raises(ValueError, match="separator"):
        Options(separator="")


def test_options_validate_with_pydantic() -> None:
    adapter = TypeAdapter(Options)
    opts = adapter.validate_python(
        {"format": "csv", "columns": ["t", "-", "h"], "separator": ";", "device": "d",
         "checksum": "nmea", "time": {"earliest_ns": 0}, "rename": {"t": "temperature_c"}}
    )
    assert opts.columns == ("t", "-", "h")
    assert opts.time == TimePolicy(earliest_ns=0)
    for bad in ({"format": "xml"}, {"checksum": "crc"}, {"colums": ["t"]}, {"separator": ""},
                {"time": {"earliest": 0}}):
        with pytest.raises(ValidationError):
            adapter.validate_python(bad)


# --- only DecodeError, whatever arrives; and what is printed comes back ----------------------

ALL_OPTS = [
    JSON,
    KV,
    CSV,
    NMEA_KV,
    Options(device_key="id", time_key="ts"),
    Options(format="kv", device_key="id", time_key="ts", checksum="nmea"),
    Options(format="csv", columns=("id", "ts", "t", "-"), device_key="id", time_key="ts"),
]


@settings(max_examples=300)
@given(st.binary(max_size=64), st.sampled_from(ALL_OPTS))
def test_arbitrary_bytes(line: bytes, opts: Options) -> None:
    check(decode, PORT, line, RECEIVED, opts)


line_text = st.lists(
    st.sampled_from(["t", "id", "ts", "=", ",", ";", " ", "1", "-2", "1.5", "nan", "inf", "e9",
                     "true", "x", "*", "$", "2026-11-28T06:02:11Z", "{", "}", '"', ":", "\t"]),
    max_size=16,
).map("".join)


@settings(max_examples=300)
@given(line_text, st.sampled_from(ALL_OPTS), st.booleans())
def test_arbitrary_lines(text: str, opts: Options, sign: bool) -> None:
    line = nmea(text.encode()) if sign else text.encode()
    check(decode, PORT, line, RECEIVED, opts)


field_names = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True).filter(
    lambda s: s not in {"time", "id", "ts"}
)
field_values = (
    st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.booleans()
    | st.from_regex(r"[a-z][a-z_.]{0,8}", fullmatch=True).filter(
        lambda s: s.lower() not in {"true", "false", "nan", "inf", "infinity"}
    )
)


@settings(max_examples=200)
@given(st.dictionaries(field_names, field_values, min_size=1, max_size=6),
       st.sampled_from([" ", ",", ";", ", "]), st.booleans())
def test_kv_round_trip(fields: dict[str, Any], separator: str, sign: bool) -> None:
    def text(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else repr(value).strip("'")

    body = separator.join(f"{k}={text(v)}" for k, v in fields.items()).encode()
    opts = dataclasses.replace(KV, checksum="nmea") if sign else KV
    reading = one(nmea(body) if sign else body, opts)
    assert dict(reading.fields) == fields
    assert [type(v) for _, v in reading.fields] == [type(v) for v in fields.values()]


@settings(max_examples=200)
@given(st.lists(field_values, min_size=1, max_size=6))
def test_csv_round_trip(values: list[Any]) -> None:
    def text(value: Any) -> str:
        return str(value).lower() if isinstance(value, bool) else repr(value).strip("'")

    columns = tuple(f"c{i}" for i in range(len(values)))
    opts = Options(format="csv", device="d", columns=columns, integers="int")
    reading = one(",".join(text(v) for v in values).encode(), opts)
    assert [v for _, v in reading.fields] == values


@pytest.mark.parametrize("opts", [Options(device="d"), Options(format="kv", device="d"),
                                  Options(format="csv", device="d", columns=("t", "n"))])
def test_whole_numbers_become_floats_by_default(opts: Options) -> None:
    # A sensor printing 31 after 30.5 must not turn the field into an integer: InfluxDB
    # would refuse every later point of the other type.
    line = {"json": b'{"t": 31, "n": 2}', "kv": b"t=31 n=2", "csv": b"31,2"}[opts.format]
    assert one(line, opts).fields == (("t", 31.0), ("n", 2.0))
    assert [type(v) for _, v in one(line, opts).fields] == [float, float]
