"""Every decoder fuzzed in one place: arbitrary bytes, and valid samples mutated, either decode to
valid Readings or raise DecodeError, never anything else, and never a Reading with NaN/inf, a
control character in a name, or a field name InfluxDB cannot store.

``FUZZED`` is the one list of every format: a format added to ``devices.formats.FORMATS`` (or a
serial line format added to ``devices.serial_lines.Options.format``) without an entry here fails
``test_every_format_is_fuzzed``. The per-format property tests in tests/test_decoders_*.py,
tests/test_serial_lines.py and tests/test_modbus_decode.py stay where they are; this file adds
the same contract across all formats with samples to mutate.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from devices import collectd, esphome, influx, jsonmap, modbus, native, serial_lines, tasmota
from devices.formats import FORMATS
from devices.reading import DecodeError, Reading, check_name

RECEIVED = 1_780_000_000 * 10**9
SAMPLES = Path("/work/shared/samples/collectd-5.12-mqtt.tsv")

Decode = Callable[[str, bytes, int, Any], list[Reading]]

# name -> (decode, options, [(topic, valid payload), ...])
FUZZED: dict[str, tuple[Decode, Any, list[tuple[str, bytes]]]] = {
    "native": (native.decode, native.Options(), [
        ("garden/taman/polder-1/telemetry", b'{"level_cm": 151.5, "battery_v": 3.9}'),
        ("garden/taman/ap-1/telemetry", b'{"ts": 1780000000, "clients": 3, "up": true}')]),
    "collectd": (collectd.decode, collectd.Options(), [
        ("collectd/ap-1/interface-lo/if_octets", b"1795850797.629:10:20\x00"),
        ("collectd/ap-1/load/load", b"1795850797.629:0.1:0.2:0.3")]),
    "tasmota": (tasmota.decode, tasmota.Options(), [
        ("tele/kebun-1/SENSOR",
         b'{"Time":"2026-11-28T06:02:11","AM2301":{"Temperature":24.1,"Humidity":80.2},'
         b'"TempUnit":"C"}'),
        ("tele/kebun-1/SENSOR", b'{"Time":"2026-11-28T06:02:11","BME280":{"Temperature":'
         b'24.1,"Pressure":1008.2},"ANALOG":{"A0":512}}')]),
    "esphome": (esphome.decode, esphome.Options(), [
        ("kebun-2/sensor/temperature/state", b"24.5"),
        ("kebun-2/binary_sensor/door/state", b"ON")]),
    "influx": (influx.decode, influx.Options(), [
        ("telegraf/ap-1", b"cpu,host=ap-1,cpu=cpu0 usage_idle=97.5,usage_user=1.2 "
                          b"1780000000000000000\n"),
        ("telegraf/ap-1", b'wifi,device=ap-1 clients=3i,ssid="taman" 1780000000000000000')]),
    "json": (jsonmap.decode, jsonmap.Options(fields={"temp": "temperature_c", "hum": "rh"},
                                             device_key="id"), [
        ("vendor/weather/ws-1", b'{"id": "ws-1", "temp": 21.5, "hum": 60}')]),
}

SERIAL: dict[str, list[tuple[serial_lines.Options, bytes]]] = {
    "json": [(serial_lines.Options(device="s-1"), b'{"t": 21.5, "rh": 60}'),
             (serial_lines.Options(device="s-1", checksum="nmea"),
              b'{"t": 21.5, "rh": 60}*00'),
             (serial_lines.Options(device_key="id", time_key="ts"),
              b'{"id": "s-2", "ts": "2026-11-28T06:02:11Z", "t": 1}')],
    "kv": [(serial_lines.Options(format="kv", device="s-1"), b"t=21.5,rh=60"),
           (serial_lines.Options(format="kv", device="s-1", checksum="nmea"),
            b"$t=21.5,rh=60*00")],
    "csv": [(serial_lines.Options(format="csv", device="s-1", columns=("t", "rh", "-")),
             b"21.5,60,x"),
            (serial_lines.Options(format="csv", device="s-1", columns=("t", "rh"),
                                  checksum="nmea"), b"21.5,60*00")],
}


def _nmea(line: bytes) -> bytes:
    """Give a sample line ending in ``*00`` its right NMEA checksum."""
    if not line.endswith(b"*00"):
        return line
    body = line[:-3]
    start = 1 if body.startswith(b"$") else 0
    checksum = 0
    for byte in body[start:]:
        checksum ^= byte
    return body + b"*%02X" % checksum


def valid_reading(reading: Reading) -> None:
    assert isinstance(reading, Reading)
    check_name("measurement", reading.measurement)
    for key, tag in reading.tags:
        check_name("tag key", key)
        check_name("tag value", tag)
    assert reading.fields
    for key, value in reading.fields:
        check_name("field key", key)
        assert key != "time"
        if isinstance(value, float):
            assert math.isfinite(value), (key, value)
        elif isinstance(value, str):
            assert not any(ord(c) < 32 or ord(c) == 127 for c in value), (key, value)
    assert 0 <= reading.time_ns < 2**63


def contract(decode: Decode, source: str, payload: bytes, opts: Any) -> None:
    try:
        result = decode(source, payload, RECEIVED, opts)
    except DecodeError:
        return
    assert isinstance(result, list)
    for reading in result:
        valid_reading(reading)


def mutations(samples: list[bytes]) -> st.SearchStrategy[bytes]:
    """Valid samples, cut, spliced, with bytes flipped or inserted."""

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        data = bytearray(draw(st.sampled_from(samples)))
        for _ in range(draw(st.integers(0, 4))):
            op = draw(st.sampled_from(["flip", "insert", "cut", "dup"]))
            at = draw(st.integers(0, len(data)))
            if op == "flip" and data:
                data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
            elif op == "insert":
                data[at:at] = draw(st.sampled_from(
                    [b"\x00", b"nan", b"inf", b"-1e999", b"\xff", b"\n", b'"', b"=", b",",
                     b" ", b"\\", b"{", b"}", b"[]", b"*", b"99999999999999999999999", b"\t"]))
            elif op == "cut":
                del data[at:]
            elif op == "dup":
                data[at:at] = data[:at]
        return bytes(data)

    return mutate()


# -- the one list --------------------------------------------------------------------------------


def test_every_format_is_fuzzed() -> None:
    assert set(FUZZED) == set(FORMATS), "a format without a fuzz entry in FUZZED"
    assert all(FUZZED[name][0] is FORMATS[name].decode for name in FUZZED)
    formats = typing.get_args(serial_lines.Options.__annotations__["format"])
    if not formats:  # the annotation is a string under `from __future__ import annotations`
        formats = typing.get_args(typing.get_type_hints(serial_lines.Options)["format"])
    assert set(SERIAL) == set(formats), "a serial line format without a fuzz entry in SERIAL"


def test_the_samples_decode() -> None:
    """The samples the mutations start from are valid, so the mutations start from sense."""
    for name, (decode, opts, samples) in FUZZED.items():
        for topic, payload in samples:
            assert decode(topic, payload, RECEIVED, opts), (name, payload)
    for fmt, cases in SERIAL.items():
        for opts, line in cases:
            assert serial_lines.decode("/dev/ttyX", _nmea(line), RECEIVED, opts), (fmt, line)


# -- MQTT formats --------------------------------------------------------------------------------

FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_mqtt_formats_on_arbitrary_bytes(name: str) -> None:
    decode, opts, samples = FUZZED[name]
    topics = [topic for topic, _ in samples]

    @FUZZ
    @given(st.sampled_from(topics), st.binary(max_size=96))
    def run(topic: str, payload: bytes) -> None:
        contract(decode, topic, payload, opts)

    run()


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_mqtt_formats_on_mutated_samples(name: str) -> None:
    decode, opts, samples = FUZZED[name]

    @FUZZ
    @given(st.sampled_from([t for t, _ in samples]), mutations([p for _, p in samples]))
    def run(topic: str, payload: bytes) -> None:
        contract(decode, topic, payload, opts)

    run()


def _collectd_samples() -> list[tuple[str, bytes]]:
    if not SAMPLES.exists():
        return []
    rows = SAMPLES.read_text(encoding="utf-8").splitlines()[1:200]
    return [(topic, bytes.fromhex(hexed)) for topic, hexed in
            (row.split("\t", 1) for row in rows if "\t" in row)]


@FUZZ
@given(st.data())
def test_collectd_on_mutated_real_captures(data: st.DataObject) -> None:
    captured = _collectd_samples()
    if not captured:
        pytest.skip(f"{SAMPLES} not present")
    topic, payload = data.draw(st.sampled_from(captured))
    contract(collectd.decode, topic, payload, collectd.Options())
    contract(collectd.decode, topic, data.draw(mutations([payload])), collectd.Options())


# -- serial lines (json, key=value, csv; with and without checksums) -----------------------------

SERIAL_CASES = [(fmt, opts, _nmea(line)) for fmt, cases in SERIAL.items() for opts, line in cases]


@pytest.mark.parametrize(("fmt", "opts", "line"), SERIAL_CASES,
                         ids=[f"{f}-{o.checksum}-{i}" for i, (f, o, _) in
                              enumerate(SERIAL_CASES)])
def test_serial_lines_on_bytes_and_mutations(fmt: str, opts: serial_lines.Options,
                                             line: bytes) -> None:
    @FUZZ
    @given(st.one_of(st.binary(max_size=96), mutations([line])))
    def run(payload: bytes) -> None:
        contract(serial_lines.decode, "/dev/ttyX", payload, opts)

    run()


# -- Modbus registers ------------------------------------------------------------------------------

REGISTERS = [modbus.Register(f"f_{t}_{w}_{b}", 0, type=t, word_order=w, byte_order=b,
                             scale=0.1, offset=-40)
             for t in typing.get_args(modbus.RegisterType) if t != "bool"
             for w in ("big", "little") for b in ("big", "little")]

FLOAT32 = next(r for r in REGISTERS if r.type == "float32")


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.sampled_from(REGISTERS),
       st.lists(st.integers(-(2**17), 2**17), min_size=0, max_size=3))
@example(FLOAT32, [0x7F80, 0x0000])  # +inf
@example(FLOAT32, [0xFFFF, 0xFFFF])  # NaN
@example(FLOAT32, [0x7F7F, 0xFFFF])  # the largest float32, times scale: still finite
def test_modbus_registers_on_arbitrary_words(register: modbus.Register,
                                              words: list[int]) -> None:
    block = modbus.Block(address=0, count=register.width, registers=(register,))
    try:
        reading = modbus.decode_block(block, words, device="m-1", measurement="meter",
                                      received_at_ns=RECEIVED, source="/dev/ttyX")
    except DecodeError:
        return
    valid_reading(reading)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.one_of(st.booleans(), st.integers(-2, 2)), max_size=10))
def test_modbus_bits_on_arbitrary_values(values: list[Any]) -> None:
    block = modbus.Block(function="coils", address=0, count=2,
                         registers=(modbus.Register("a", 0, type="bool"),
                                    modbus.Register("b", 1, type="bool")))
    try:
        reading = modbus.decode_block(block, values, device="m-1", measurement="meter",
                                      received_at_ns=RECEIVED)
    except DecodeError:
        return
    valid_reading(reading)
