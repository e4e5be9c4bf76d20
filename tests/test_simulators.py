"""The simulators the demo and the tests share (devices/simulators/), and
``garden-gateway simulate`` running them on pseudo-terminals, read by a real pymodbus client and
by pyserial."""

from __future__ import annotations

import asyncio
import fcntl
import itertools
import json
import math
import os
import select
import signal
import subprocess
import sys
import termios
import time
import tty
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import serial
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter
from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient

from devices import serial_lines
from devices.lines import LineFramer
from devices.modbus import Block, Function, decode_block
from devices.modbus_rtu import ReadExchange, ReadRequest, RequestFramer, read_request
from devices.reading import DecodeError
from devices.simulators import garden, park, polder
from devices.simulators.ap import AccessPoint
from devices.simulators.garden import FIELDS, GardenSensor, Weather
from devices.simulators.polder import BLOCKS, PolderSlave
from gateway.config import ModbusBusConfig, SerialSourceConfig
from gateway.ops.cli import main
from gateway.ops.simulate import (
    GardenRunner,
    PolderRunner,
    PtyPort,
    garden_config,
    parse_override,
    polder_config,
    pty_port,
    to_yaml,
)
from tests.conftest import ROOT, until, wait_for

# 2026-11-28 07:26:40 UTC, 15:26 in Kutai Timur (WITA, UTC+8).
T0 = 1_795_850_800.0
DAY = 86400.0
CLIENT = AsyncModbusSerialClient
FORMATS = ("kv", "json", "csv")


# --- the garden sensor ----------------------------------------------------------------------


@pytest.mark.parametrize("checksum", ["none", "nmea"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_garden_lines_decode_to_the_model_values(fmt: garden.Format,
                                                 checksum: garden.Checksum) -> None:
    sensor = GardenSensor("kebun-3", fmt, checksum, boot_s=T0 - 7 * DAY)
    for t in (T0 + i * 3541.7 for i in range(30)):
        line = sensor.line(t)
        assert line.endswith(b"\r\n")
        assert line.count(b"\n") == 1
        [reading] = serial_lines.decode("/dev/ttyGARDEN", line, 1, sensor.options())
        assert reading.measurement == "garden_env"
        assert reading.tags == (("device", "kebun-3"),)
        assert dict(reading.fields) == sensor.values(t)
        assert [name for name, _ in reading.fields] == list(FIELDS)


def test_garden_line_formats_look_like_a_sketch_printed_them() -> None:
    t = T0
    values = GardenSensor(boot_s=T0).values(t)
    kv = GardenSensor("kebun-1", "kv", boot_s=T0).line(t).decode()
    assert kv == "id=kebun-1 " + " ".join(f"{k}={v:.1f}" for k, v in values.items()) + "\r\n"
    csv = GardenSensor("kebun-1", "csv", boot_s=T0).line(t).decode()
    assert csv == ",".join(["kebun-1", *(f"{v:.1f}" for v in values.values())]) + "\r\n"
    nmea = GardenSensor("kebun-1", "json", "nmea", boot_s=T0).line(t)
    body = nmea[1:-5]
    assert nmea.startswith(b"${")
    assert nmea[-5:-4] == b"*"
    checksum = 0
    for byte in body:
        checksum ^= byte
    assert nmea[-4:-2] == b"%02X" % checksum


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_damaged_nmea_line_is_refused(fmt: garden.Format) -> None:
    sensor = GardenSensor("kebun-1", fmt, "nmea", boot_s=T0)
    line = bytearray(sensor.line(T0))
    line[5] ^= 0x01  # one flipped bit, as line noise makes it
    with pytest.raises(DecodeError) as caught:
        serial_lines.decode("p", bytes(line), 1, sensor.options())
    assert caught.value.kind == "checksum"


def test_garden_weather_is_tropical_with_a_daily_cycle() -> None:
    sensor = GardenSensor(boot_s=T0)
    samples = [(t, sensor.values(t)) for t in (T0 + i * 600.0 for i in range(14 * 144))]
    temps = [v["temperature_c"] for _, v in samples]
    assert min(temps) >= 23.0
    assert max(temps) <= 34.0
    assert max(temps) - min(temps) >= 6.0
    weather = Weather()

    def mean_temp(first: int, last: int) -> float:
        chosen = [v["temperature_c"] for t, v in samples
                  if first <= weather.local_hour(t) < last]
        return sum(chosen) / len(chosen)

    assert mean_temp(12, 16) > mean_temp(0, 6) + 5  # afternoons are hot, nights are not
    assert all(40.0 <= v["humidity_pct"] <= 100.0 for _, v in samples)
    assert all(25.0 <= v["soil_moisture_pct"] <= 65.0 for _, v in samples)
    rain = [v["rain_mm"] for _, v in samples]
    assert rain[0] == 0.0
    assert all(a <= b for a, b in itertools.pairwise(rain))  # a counter since boot
    assert rain[-1] > 10.0
    # In tips of the gauge's bucket.
    assert all(math.isclose(r / garden.RAIN_TIP_MM, round(r / garden.RAIN_TIP_MM),
                            abs_tol=1e-6) for r in rain)
    # The soil is wetter after rain than at its driest.
    soils = [v["soil_moisture_pct"] for _, v in samples]
    assert max(soils) - min(soils) > 5.0


def test_garden_values_depend_on_seed_and_time_only() -> None:
    a = GardenSensor(seed=3, boot_s=T0)
    b = GardenSensor(seed=3, boot_s=T0)
    other = GardenSensor(seed=4, boot_s=T0)
    times = [T0 + i * 997.0 for i in range(200)]
    assert [b.line(t) for t in reversed(times)][::-1] == [a.line(t) for t in times]
    assert [other.line(t) for t in times] != [a.line(t) for t in times]
    # The gauge's running count is the weather's rain, however the calls come.
    weather = Weather(3)
    for t in times[::7]:
        assert a.rain_since_boot(t) == pytest.approx(weather.rain_between(T0, t), abs=1e-9)


def test_the_rain_counter_starts_when_the_board_does() -> None:
    sensor = GardenSensor()
    assert sensor.boot_s is None
    assert sensor.values(T0 + DAY)["rain_mm"] == 0.0
    assert sensor.boot_s == T0 + DAY


@pytest.mark.parametrize("device", ["", "kebun 1", "a,b", "a=b", "-x", "x" * 65, "é"])
def test_garden_refuses_device_names_a_line_cannot_carry(device: str) -> None:
    with pytest.raises(ValueError, match="device"):
        GardenSensor(device)


# --- the polder station ---------------------------------------------------------------------


def exchange(slave: PolderSlave, unit: int, function: Function, address: int, count: int,
             t: float) -> ReadExchange:
    """One request through the slave's framing and back, as the gateway's poller sees it."""
    ex = ReadExchange(unit, function, address, count)
    [request] = RequestFramer().feed(ex.request)
    answer = slave.answer(request, t)
    assert answer is not None
    assert ex.feed(answer)
    assert ex.leftover == b""
    return ex


def pump_times(slave: PolderSlave) -> tuple[float, float]:
    """A time the pump runs above its start level, and one it runs on below it."""
    above = below = None
    for t in (T0 + i * 600.0 for i in range(30 * 144)):
        v = slave.values(t)
        if v["pump_on"] and v["level_mm"] >= polder.PUMP_START_MM:
            above = above or t
        elif v["pump_on"]:
            below = below or t
    assert above is not None
    assert below is not None
    return above, below


@pytest.mark.parametrize("block", BLOCKS, ids=lambda b: b.function)
def test_each_block_reads_back_as_the_models_values(block: Block) -> None:
    slave = PolderSlave(1, boot_s=T0 - 3600)
    times = [T0, T0 + 0.5 * DAY, *pump_times(slave)]
    for t in times:
        ex = exchange(slave, 1, block.function, block.address, block.count, t)
        assert ex.error is None
        assert ex.values is not None
        reading = decode_block(block, ex.values, device="polder-1", measurement="polder",
                               received_at_ns=1)
        expected = slave.values(t)
        for name, value in reading.fields:
            assert value == pytest.approx(expected[name], rel=1e-7)
            assert type(value) is type(expected[name])


def test_the_level_registers_agree_and_follow_the_rain() -> None:
    slave = PolderSlave(1, boot_s=T0)
    samples = [slave.values(t) for t in (T0 + i * 600.0 for i in range(30 * 144))]
    for v in samples:
        level = v["level_mm"]
        assert isinstance(level, int)
        assert v["level_m"] == pytest.approx(level / 1000, abs=1e-6)
        assert v["high_water_switch"] == (level >= polder.HIGH_WATER_MM)
        assert v["low_water_switch"] == (level <= polder.LOW_WATER_MM)
        if level >= polder.PUMP_START_MM:
            assert v["pump_on"]
        if level <= polder.PUMP_STOP_MM:
            assert not v["pump_on"]
        flow = v["flow_m3h"]
        assert isinstance(flow, float)
        assert (flow > 100.0) if v["pump_on"] else flow == 0.0
        assert 26.0 <= float(v["water_temp_c"]) <= 30.5
        assert 12.3 <= float(v["supply_v"]) <= 13.7
    levels = [int(v["level_mm"]) for v in samples]
    assert max(levels) - min(levels) > 1000
    starts = sum(1 for a, b in itertools.pairwise(samples)
                 if b["pump_on"] and not a["pump_on"])
    assert starts >= 2
    assert any(v["high_water_switch"] for v in samples)
    assert any(v["low_water_switch"] for v in samples)


def test_the_level_transmitter_datasheet_frames() -> None:
    # devices/modbus.py: 1234 mm is 01 03 02 04 D2 3A D9 at holding 4, and 1.234 m as a
    # CDAB float32 at holding 0..1 is 01 03 04 F3 B6 3F 9D F8 C8.
    slave = PolderSlave(1)
    slave.set("level_mm", 1234)
    framer = RequestFramer()
    by_mm, by_m = framer.feed(bytes.fromhex("01 03 00 04 00 01 C5 CB 01 03 00 00 00 02 C4 0B"))
    assert slave.answer(by_mm, T0) == bytes.fromhex("01 03 02 04 D2 3A D9")
    assert slave.answer(by_m, T0) == bytes.fromhex("01 03 04 F3 B6 3F 9D F8 C8")


def test_fixing_the_level_moves_what_follows_from_it() -> None:
    slave = PolderSlave(1, boot_s=T0)
    slave.set("level_mm", 1850)
    high = slave.values(T0)
    assert high["level_m"] == pytest.approx(1.85)
    assert high["pump_on"] is True
    assert high["high_water_switch"] is True
    assert high["low_water_switch"] is False
    assert float(high["flow_m3h"]) > 100.0
    slave.set("level_m", 0.3)  # level_mm wins while both are fixed
    assert slave.values(T0)["level_mm"] == 1850
    slave.clear("level_mm")
    low = slave.values(T0)
    assert low["level_mm"] == 300
    assert low["pump_on"] is False
    assert low["low_water_switch"] is True
    assert low["flow_m3h"] == 0.0
    slave.set("pump_on", True)
    assert slave.values(T0)["pump_on"] is True
    assert dict(slave.overrides) == {"level_m": 0.3, "pump_on": True}
    slave.clear()
    assert slave.values(T0) == PolderSlave(1, boot_s=T0).values(T0)


def test_a_negative_temperature_is_twos_complement() -> None:
    slave = PolderSlave(1)
    slave.set("water_temp_c", -3.5)
    ex = exchange(slave, 1, "input", 0, 1, T0)
    assert ex.values == [0xFFDD]  # -35
    assert slave.values(T0)["water_temp_c"] == -3.5


def test_uptime_counts_from_boot() -> None:
    slave = PolderSlave(1, boot_s=T0)
    assert slave.values(T0 + 100.7)["uptime_s"] == 100
    ex = exchange(slave, 1, "input", 12, 2, T0 + 70_000.2)
    assert ex.values == [1, 70_000 - 65_536]  # uint32, high word first


@pytest.mark.parametrize("unit", [0, 2, 247])
def test_other_units_hear_nothing(unit: int) -> None:
    assert PolderSlave(1).answer(ReadRequest(unit, "holding", 4, 1), T0) is None


@pytest.mark.parametrize(
    ("function", "address", "count", "code"),
    [
        ("holding", 5, 1, 2),
        ("holding", 3, 3, 2),
        ("holding", 0, 6, 2),
        ("holding", 100, 1, 2),
        ("input", 13, 2, 2),
        ("input", 14, 1, 2),
        ("coils", 1, 1, 2),
        ("coils", 0, 2, 2),
        ("discrete", 0, 3, 2),
        ("discrete", 65535, 1, 2),
        ("holding", 0, 0, 3),
        ("input", 0, 126, 3),
        ("coils", 0, 2001, 3),
    ],
)
def test_reads_outside_the_map_are_refused(function: Function, address: int, count: int,
                                           code: int) -> None:
    slave = PolderSlave(9)
    answer = slave.answer(ReadRequest(9, function, address, count), T0)
    ex = ReadExchange(9, function, address, max(1, count))
    assert answer is not None
    assert ex.feed(answer)
    assert ex.error is not None
    assert (ex.error.kind, ex.error.code) == ("exception", code)


def test_addresses_between_the_fields_read_zero() -> None:
    slave = PolderSlave(1)
    assert exchange(slave, 1, "holding", 2, 2, T0).values == [0, 0]
    assert exchange(slave, 1, "input", 2, 8, T0).values == [0] * 8


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("level_cm", 10, "not in the register map"),
        ("level_mm", 70_000, "does not fit"),
        ("level_mm", -1, "does not fit"),
        ("level_m", 70.0, "does not fit"),  # level_mm could not hold it
        ("water_temp_c", 4000.0, "does not fit"),
        ("flow_m3h", math.nan, "finite"),
        ("supply_v", math.inf, "finite"),
        ("pump_on", 1, "true or false"),
        ("level_mm", True, "a number"),
    ],
)
def test_set_refuses_what_the_registers_cannot_hold(field: str, value: Any, match: str) -> None:
    slave = PolderSlave(1, boot_s=T0)
    before = slave.values(T0)
    with pytest.raises(ValueError, match=match):
        slave.set(field, value)
    assert dict(slave.overrides) == {}
    assert slave.values(T0) == before


@pytest.mark.parametrize("unit", [0, 248, -1])
def test_the_unit_address_is_checked(unit: int) -> None:
    with pytest.raises(ValueError, match="unit address"):
        PolderSlave(unit)


@given(
    unit=st.integers(0, 255),
    function=st.sampled_from(["holding", "input", "coils", "discrete"]),
    address=st.integers(0, 0xFFFF),
    count=st.integers(0, 0xFFFF),
    t=st.floats(1e9, 4e9),
)
def test_any_request_gets_silence_an_exception_or_its_values(
    unit: int, function: Function, address: int, count: int, t: float
) -> None:
    slave = PolderSlave(5, boot_s=1e9)
    answer = slave.answer(ReadRequest(unit, function, address, count), t)
    if unit != 5:
        assert answer is None
        return
    assert answer is not None
    ex = ReadExchange(5, function, address, max(1, count))
    assert ex.feed(answer)
    if ex.error is not None:
        assert ex.error.kind == "exception"
        assert ex.error.code in (2, 3)
    else:
        assert ex.values is not None
        assert len(ex.values) == count


# --- what the technician pastes ---------------------------------------------------------------


def test_the_polder_snippet_is_a_valid_modbus_config_with_the_simulators_map() -> None:
    text = to_yaml(polder_config("/dev/serial/by-id/sim-polder", unit=3))
    assert text.startswith("modbus:\n  - name: polder\n    port: /dev/serial/by-id/sim-polder\n")
    assert ("      - {field: level_m, address: 0, type: float32, word_order: little, unit: m}"
            in text)
    bus = ModbusBusConfig.model_validate(yaml.safe_load(text)["modbus"][0])
    [slave] = bus.slaves
    assert (slave.unit, slave.device, slave.measurement) == (3, "polder-1", "polder")
    assert slave.blocks == BLOCKS


@pytest.mark.parametrize("checksum", ["none", "nmea"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_garden_snippet_decodes_the_sensors_lines(fmt: garden.Format,
                                                      checksum: garden.Checksum) -> None:
    sensor = GardenSensor("kebun-7", fmt, checksum, boot_s=T0)
    text = to_yaml(garden_config("/tmp/ttyGARDEN", sensor))
    source = SerialSourceConfig.model_validate(yaml.safe_load(text)["serial"][0])
    options = TypeAdapter(serial_lines.Options).validate_python(source.options)
    assert options == sensor.options()
    [reading] = serial_lines.decode("p", sensor.line(T0), 1, options)
    assert dict(reading.fields) == sensor.values(T0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("level_mm=1850", ("level_mm", 1850)),
        (" level_m = 1.5 ", ("level_m", 1.5)),
        ("water_temp_c=-3.5", ("water_temp_c", -3.5)),
        ("pump_on=TRUE", ("pump_on", True)),
        ("pump_on=off", ("pump_on", False)),
        ("high_water_switch=1", ("high_water_switch", True)),
    ],
)
def test_overrides_from_the_command_line(text: str, expected: tuple[str, object]) -> None:
    field, value = parse_override(text)
    assert (field, value) == expected
    assert type(value) is type(expected[1])


@pytest.mark.parametrize("text", ["level_mm", "=3", "level_mm=", "level_mm=high",
                                  "pump_on=maybe", "depth=3", "level_mm=99999", "flow_m3h=nan"])
def test_bad_overrides_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"\S"):
        parse_override(text)


# --- the runners on a pseudo-terminal, in this process ------------------------------------


def test_the_link_replaces_a_leftover_symlink_and_is_removed(tmp_path: Path) -> None:
    link = tmp_path / "ttySIM"
    link.symlink_to("/dev/pts/does-not-exist")  # from a simulator that was killed
    with pty_port(link) as port:
        assert os.readlink(link) == port.tty
        assert port.path == str(link)
        assert os.isatty(port.slave)
    assert not link.is_symlink()
    link.write_text("a file, not ours")
    with pytest.raises(OSError, match="not a symlink"), pty_port(link):
        pass
    assert link.read_text() == "a file, not ours"


def test_a_link_taken_over_meanwhile_is_left_alone(tmp_path: Path) -> None:
    link = tmp_path / "ttySIM"
    with pty_port(link):
        link.unlink()
        link.symlink_to("/dev/null")
    assert os.readlink(link) == "/dev/null"


async def test_a_backlog_nobody_reads_is_flushed_not_kept(tmp_path: Path) -> None:
    stop = asyncio.Event()
    with pty_port(tmp_path / "ttyG") as port:
        sensor = GardenSensor(boot_s=T0)
        runner = GardenRunner(port, sensor, interval_s=0.001, clock=lambda: T0)
        task = asyncio.create_task(runner.run(stop))
        try:
            await until(lambda: runner.statistics().flushed_bytes > 0, 10)
        finally:
            stop.set()
            await task
        stats = runner.statistics()
        assert stats.dropped == 0
        assert stats.lines > 2048 // len(sensor.line(T0))
        # What a reader would find now is a short backlog, not everything since the start.
        unread = int.from_bytes(
            fcntl.ioctl(port.slave, termios.FIONREAD, b"\0\0\0\0"), sys.byteorder)
        assert unread <= 2048 + len(sensor.line(T0))


async def test_the_polder_runner_waits_out_a_master_that_reads_eio(
    caplog: pytest.LogCaptureFixture,
) -> None:
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    name = os.ttyname(slave)
    os.close(slave)  # nobody holds the slave end: reading the master fails with EIO
    runner = PolderRunner(PtyPort(master, -1, name, None), PolderSlave(1), clock=lambda: T0)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    try:
        await until(lambda: runner.statistics().read_errors >= 2, 5)
        warnings = [r for r in caplog.records if "failed" in r.getMessage()]
        assert len(warnings) == 1  # said once, not at every retry
        assert name in warnings[0].getMessage()
        with serial.Serial(name, baudrate=9600, timeout=0) as port:
            port.write(read_request(1, "holding", 4, 1))
            ex = ReadExchange(1, "holding", 4, 1)
            await until(lambda: ex.feed(port.read(256)), 5)
        assert ex.error is None, ex.error
        assert ex.values == [PolderSlave(1).values(T0)["level_mm"]]
        assert runner.statistics().answers == 1
    finally:
        stop.set()
        await task
        os.close(master)


# --- garden-gateway simulate, as a technician runs it -----------------------------------------


class Simulator:
    def __init__(self, args: list[str], out: Path) -> None:
        self.out = out
        with out.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway", "simulate", *args],
                cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.out.read_text(encoding="utf-8")

    def ready(self) -> bool:
        return "# Ctrl-C stops the simulator." in self.output()

    def config(self) -> dict[str, Any]:
        text = self.output().split("# Ctrl-C stops the simulator.")[0]
        config: dict[str, Any] = yaml.safe_load(text)
        return config

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=10)


@pytest.fixture
def simulator(tmp_path: Path) -> Iterator[Callable[..., Simulator]]:
    started: list[Simulator] = []

    def start(*args: str) -> Simulator:
        sim = Simulator(list(args), tmp_path / f"simulate-{len(started)}.log")
        started.append(sim)
        return sim

    yield start
    for sim in started:
        if sim.proc.poll() is None:
            sim.proc.kill()
            sim.proc.wait()


async def test_simulate_polder_answers_a_real_pymodbus_client(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    link = tmp_path / "ttyPOLDER"
    sim = simulator("polder", "--link", str(link), "--unit", "7", "--set", "water_temp_c=-3.5")
    await until(sim.ready, 15)
    assert os.readlink(link).startswith("/dev/pts/")
    bus = sim.config()["modbus"][0]
    assert bus["port"] == str(link)
    assert bus["slaves"][0]["unit"] == 7
    model = PolderSlave(7, seed=0)
    model.set("water_temp_c", -3.5)

    client = AsyncModbusSerialClient(str(link), framer=FramerType.RTU, baudrate=9600,
                                     timeout=1, retries=0)
    try:
        assert await client.connect()
        before = model.values(time.time())
        rr = await client.read_holding_registers(0, count=5, device_id=7)
        after = model.values(time.time())
        assert not rr.isError(), rr
        level_m = CLIENT.convert_from_registers(rr.registers[0:2], CLIENT.DATATYPE.FLOAT32,
                                                word_order="little")
        level_mm = rr.registers[4]
        assert level_m == pytest.approx(level_mm / 1000, abs=1e-6)
        low, high = sorted((int(before["level_mm"]), int(after["level_mm"])))
        assert low - 1 <= level_mm <= high + 1
        assert rr.registers[2:4] == [0, 0]

        rr = await client.read_input_registers(0, count=2, device_id=7)
        assert not rr.isError(), rr
        assert rr.registers[0] == 0xFFDD
        assert CLIENT.convert_from_registers(rr.registers[0:1], CLIENT.DATATYPE.INT16) == -35
        assert 12.3 <= rr.registers[1] / 100 <= 13.7

        rr = await client.read_input_registers(10, count=4, device_id=7)
        assert not rr.isError(), rr
        flow = CLIENT.convert_from_registers(rr.registers[0:2], CLIENT.DATATYPE.FLOAT32)
        uptime = CLIENT.convert_from_registers(rr.registers[2:4], CLIENT.DATATYPE.UINT32)
        assert isinstance(flow, float)
        assert flow >= 0.0
        assert isinstance(uptime, int)
        assert 0 <= uptime < 60

        before = model.values(time.time())
        coils = await client.read_coils(0, count=1, device_id=7)
        switches = await client.read_discrete_inputs(0, count=2, device_id=7)
        after = model.values(time.time())
        assert not coils.isError(), coils
        assert not switches.isError(), switches
        # The model's value just before or just after: the one the simulator answered with.
        assert coils.bits[0] in (before["pump_on"], after["pump_on"])
        assert switches.bits[0] in (before["high_water_switch"], after["high_water_switch"])
        assert switches.bits[1] in (before["low_water_switch"], after["low_water_switch"])

        refused = await client.read_holding_registers(5, count=1, device_id=7)
        assert refused.isError()
        assert refused.exception_code == 2
    finally:
        client.close()

    # Closed and opened again, as the gateway does when it backs off: the port still answers.
    # Unit 1 is not on this bus: its request goes unanswered, so the first answer that comes
    # back is unit 7's.
    with serial.Serial(str(link), baudrate=9600, timeout=0) as port:
        port.write(read_request(1, "holding", 4, 1) + read_request(7, "holding", 4, 1))
        ex = ReadExchange(7, "holding", 4, 1)
        deadline = time.monotonic() + 5
        while not ex.done:
            remaining = deadline - time.monotonic()
            assert remaining > 0, "no answer from unit 7"
            readable, _, _ = select.select([port.fileno()], [], [], remaining)
            if readable:
                ex.feed(port.read(256))
        assert ex.error is None, ex.error
        assert ex.values is not None
        assert 0 < ex.values[0] <= polder.OVERFLOW_MM

    assert sim.stop() == 0
    assert not link.is_symlink()
    summary = sim.output().splitlines()[-1]
    assert "simulator stopped:" in summary
    assert "requests=8 answers=7 exceptions=1 other_units=1" in summary


def read_lines(port: serial.Serial, count: int, timeout: float = 5.0) -> list[bytes]:
    framer = LineFramer()
    lines: list[bytes] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(lines)} of {count} lines in {timeout} s"
        readable, _, _ = select.select([port.fileno()], [], [], remaining)
        if readable:
            events = framer.feed(port.read(4096))
            assert all(e.kind == "line" for e in events), events
            lines += [e.data for e in events]
    return lines


def test_simulate_garden_prints_lines_its_snippet_decodes(
    tmp_path: Path, simulator: Callable[..., Simulator]
) -> None:
    link = tmp_path / "ttyGARDEN"
    sim = simulator("garden", "--link", str(link), "--interval", "0.05", "--format", "csv",
                    "--checksum", "nmea", "--device", "kebun-9")
    wait_for(sim.ready, timeout=15, what="the simulator's banner")
    source = sim.config()["serial"][0]
    assert source["port"] == str(link)
    options = TypeAdapter(serial_lines.Options).validate_python(source["options"])
    assert options == GardenSensor("kebun-9", "csv", "nmea").options()

    seen = []
    for _ in range(2):  # open, read, close, and again: the port survives its reader
        with serial.Serial(str(link), baudrate=9600, timeout=0) as port:
            for line in read_lines(port, 4):
                [reading] = serial_lines.decode(str(link), line, 1, options)
                assert reading.tags == (("device", "kebun-9"),)
                fields = dict(reading.fields)
                assert list(fields) == list(FIELDS)
                assert 23.0 <= float(fields["temperature_c"]) <= 34.0
                assert 40.0 <= float(fields["humidity_pct"]) <= 100.0
                seen.append(fields["rain_mm"])
    assert seen == sorted(seen)  # a counter

    assert sim.stop() == 0
    assert not link.is_symlink()
    assert "simulator stopped:" in sim.output()


@pytest.mark.parametrize(
    "args",
    [
        ["polder", "--unit", "0"],
        ["polder", "--set", "depth=3"],
        ["polder", "--set", "level_mm=99999"],
        ["garden", "--interval", "0"],
        ["garden", "--device", "kebun 1"],
        ["garden", "--format", "xml"],
        ["sprinkler"],
    ],
)
def test_simulate_refuses_bad_usage(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["simulate", *args])
    assert caught.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_simulate_will_not_replace_a_file_with_its_link(tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB0"
    link.write_text("not a port")
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "simulate", "polder", "--link", str(link)],
        cwd=ROOT, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert "not a symlink" in done.stderr
    assert link.read_text() == "not a port"


# --- the park's access points, Tasmota sensor and demo day (devices/simulators/) -----------


def _collectd(topic: str, payload: bytes, stamp_s: float) -> dict[str, Any]:
    from devices import collectd

    [reading] = collectd.decode(topic, payload, int(stamp_s * 1e9),
                                collectd.Options(measurement="wifi_ap", store_rates=False))
    assert reading.time_ns == round(stamp_s * 1000) * 10**6  # the payload's own time
    return {"tags": dict(reading.tags), **dict(reading.fields)}


def _park_day() -> tuple[park.DayClock, list[AccessPoint]]:
    day = park.DayClock(T0, day_minutes=20)
    return day, park.access_points(day)


def test_ap_payloads_are_collectd_bytes_and_decode_to_counters_and_clients() -> None:
    day, aps = _park_day()
    ap = aps[0]
    t = day.sim_start_s + 9 * 3600  # 19:00 WITA
    stamp = T0 + 123.4567
    messages = dict(ap.messages(t, stamp))
    assert set(messages) == {
        "collectd/ap-gerbang-utama/interface-wlan0/if_octets",
        "collectd/ap-gerbang-utama/iwinfo-wlan0/stations",
        "collectd/ap-gerbang-utama/interface-wlan1/if_octets",
        "collectd/ap-gerbang-utama/iwinfo-wlan1/stations",
        "collectd/ap-gerbang-utama/uptime/uptime",
    }
    octets = messages["collectd/ap-gerbang-utama/interface-wlan0/if_octets"]
    # As in shared/samples: "<seconds with 3 decimals>:<rx>:<tx>" and the C string's NUL.
    assert octets.endswith(b"\x00")
    assert octets.count(b"\x00") == 1
    assert octets.startswith(b"%.3f:" % stamp)
    rx, tx = ap.octets(t, "wlan0")
    decoded = _collectd("collectd/ap-gerbang-utama/interface-wlan0/if_octets", octets, stamp)
    assert decoded == {"tags": {"device": "ap-gerbang-utama", "interface": "wlan0"},
                       "rx_bytes": rx, "tx_bytes": tx}
    stations = _collectd("collectd/ap-gerbang-utama/iwinfo-wlan0/stations",
                         messages["collectd/ap-gerbang-utama/iwinfo-wlan0/stations"], stamp)
    assert stations == {"tags": {"device": "ap-gerbang-utama", "iwinfo": "wlan0"},
                        "clients": ap.clients(t, "wlan0")}
    assert stations["clients"] > 0


def test_ap_day_curve_is_quiet_at_night_and_busiest_in_the_evening() -> None:
    day, aps = _park_day()
    ap = aps[0]

    def at(hour: float) -> float:
        return day.sim_start_s + ((hour - park.START_HOUR) % 24) * 3600

    busy = {h: ap.busy(at(h)) for h in range(24)}
    assert max(busy, key=lambda h: busy[h]) in (19, 20)
    assert all(busy[h] > 0.7 for h in (19, 20, 21))
    assert all(busy[h] < 0.1 for h in (1, 2, 3))
    assert busy[16] > busy[13] > busy[10]
    clients = {h: sum(ap.clients(at(h), r) for r in ap.radios) for h in (2, 20)}
    assert clients[20] > 5 * max(1, clients[2])
    # Traffic follows: the counters grow faster in the evening than at night.
    step = 600.0
    rate = {h: ap.octets(at(h) + step, "wlan0")[1] - ap.octets(at(h), "wlan0")[1]
            for h in (2, 20)}
    assert rate[20] > 5 * rate[2] > 0


@given(st.floats(min_value=0, max_value=3 * DAY), st.floats(min_value=1, max_value=3000))
def test_ap_counters_never_go_down_except_at_a_reboot(offset: float, dt: float) -> None:
    _, aps = _park_day()
    ap = aps[1]  # the one that reboots
    t = T0 + offset
    for radio in ap.radios:
        before, after = ap.octets(t, radio), ap.octets(t + dt, radio)
        if ap.booted_at(t + dt) == ap.booted_at(t):
            assert after[0] >= before[0]
            assert after[1] >= before[1]


def test_the_rebooting_ap_goes_silent_and_its_counters_restart_small() -> None:
    day, aps = _park_day()
    ap = next(a for a in aps if a.host == park.REBOOTING_AP)
    reboot = day.sim_start_s + (park.REBOOT.hour - park.START_HOUR) * 3600
    before = ap.octets(reboot - 1, "wlan0")
    assert ap.up(reboot - 1)
    assert not ap.up(reboot + 60)
    assert ap.messages(reboot + 60, T0) == []
    back = reboot + park.REBOOT.down_s
    assert ap.up(back + 1)
    after = ap.octets(back + 300, "wlan0")
    assert after[1] < before[1] / 100
    assert after[1] > 0
    assert ap.uptime_s(back + 300) == 300
    # The gateway's counter logic reads that as a reset (not a wrap) at the demo's pace.
    from devices.wifi import ByteCounter

    counter = ByteCounter(max_rate_bps=100e6)
    real = day.real
    counter.update(before[1], int(real(reboot - 1) * 1e9))
    step = counter.update(after[1], int(real(back + 300) * 1e9))
    assert step.kind == "reset"
    # The others never reboot.
    assert all(a.up(reboot + 60) for a in aps if a is not ap)


def test_tasmota_sensor_payload_decodes_and_it_drops_out_in_the_afternoon() -> None:
    from devices import tasmota as tasmota_decoder

    day = park.DayClock(T0, day_minutes=20)
    sensor = park.tasmota(park.DemoWeather())
    t = day.sim_start_s + 3600
    payload = sensor.sensor_payload(t, T0)
    body = json.loads(payload)
    # Tasmota's Time is the board's local time (WITA) of the real stamp, without a zone.
    wita = datetime.fromtimestamp(T0, UTC) + timedelta(hours=8)
    assert body["Time"] == wita.strftime("%Y-%m-%dT%H:%M:%S")
    assert body["TempUnit"] == "C"
    [reading] = tasmota_decoder.decode(sensor.sensor_topic, payload, int(T0 * 1e9),
                                       tasmota_decoder.Options())
    assert dict(reading.tags) == {"device": "kebun-1", "sensor": "am2301"}
    fields = dict(reading.fields)
    assert fields["temperature_c"] == sensor.values(t)["Temperature"]
    assert 20 < float(fields["temperature_c"]) < 35
    assert 40 <= float(fields["humidity_pct"]) <= 100
    assert float(fields["dew_point_c"]) < float(fields["temperature_c"])
    assert reading.time_ns == int(T0) * 10**9
    hours = {h: sensor.online(day.sim_start_s + (h - park.START_HOUR) * 3600 + 60)
             for h in range(10, 24)}
    assert [h for h, up in hours.items() if not up] == [13, 14]


def test_the_demo_day_takes_the_polder_through_every_warning_level_and_back() -> None:
    day = park.DayClock(T0, day_minutes=20)
    slave = park.polder_slave(park.DemoWeather())
    levels = [(m, slave.level_mm(day.sim_start_s + m * 60) / 1000) for m in range(0, 1440, 5)]
    thresholds = (0.9, 1.1, 1.3)  # the demo's pages.polder
    peak_m, peak = max(levels, key=lambda x: x[1])
    assert peak > 1.3 + 0.15
    assert 5 * 60 <= peak_m <= 7 * 60  # 15:00..17:00
    assert levels[0][1] < 0.9
    assert levels[-1][1] < 0.9
    for th in thresholds:
        up = next(m for m, v in levels if v >= th)
        down = next(m for m, v in levels if m > up and v < th)
        assert 4 * 60 <= up <= 5.5 * 60
        assert down <= 9.5 * 60
    # The scenario table says so.
    said = dict(park.SCENARIO)
    assert "Awas" in said["15:00"]
    assert "normal" in said["19:00"]


def test_day_clock_maps_real_minutes_to_a_simulated_day() -> None:
    day = park.DayClock(T0, day_minutes=0.5)
    assert day.speed == 2880
    assert Weather().local_hour(day.sim(T0)) == pytest.approx(park.START_HOUR)
    assert day.sim(T0 + 30) - day.sim(T0) == pytest.approx(DAY)
    assert day.real(day.sim(T0 + 7.5)) == pytest.approx(T0 + 7.5)
    assert day.step_s() == 0.25
    assert park.DayClock(T0).step_s() == 5.0
    with pytest.raises(ValueError, match="day_minutes"):
        park.DayClock(T0, day_minutes=0)


def test_a_storm_replaces_the_modelled_level_while_it_lasts_every_day() -> None:
    slave = PolderSlave(1, boot_s=T0)
    s = park.demo_storm()
    slave.play(s, start_s=T0, daily=True)
    for day in (0, 1):
        for i in (0, 130, 215, 240, 300):               # flat, rising, stuck, stuck, the crest
            t = T0 + day * 86400 + i * 60
            assert slave.values(t)["level_mm"] == round(s.readings[i].value * 10)
    assert s.readings[215].stuck
    assert s.readings[240].stuck
    after = T0 + 12 * 3600 + 60                          # the storm over: the model again
    assert slave.values(after)["level_mm"] == PolderSlave(1, boot_s=T0).values(after)["level_mm"]
