"""Line-printing sensors on pseudo-terminal pairs: the gateway reads the slave end, the test
writes to the master end as an Arduino on USB would."""

from __future__ import annotations

import asyncio
import os
import tty
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from devices import serial_lines
from gateway.config import Config
from gateway.core.clock import SystemClock
from gateway.pipeline import Committer, Pipeline
from gateway.sources.serial import SerialLineSource
from gateway.store.spool import Spool
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import GatewayProcess, base_config, running, until, wait_for


class WallClock(SystemClock):
    """The system's intervals and waits, with wall time from ``now_ns`` (a test's ticks)."""

    def __init__(self, now_ns: Callable[[], int]) -> None:
        self._now_ns = now_ns

    def now_ns(self) -> int:
        return self._now_ns()


class FakePort:
    """A pty pair behind a stable path, like /dev/serial/by-id/...: plug and unplug."""

    def __init__(self, link: Path) -> None:
        self.link = link
        self.master: int | None = None

    def plug(self) -> None:
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        name = os.ttyname(slave)
        # The gateway opens the path itself; our copy of the slave end is not needed.
        os.close(slave)
        self.master = master
        if self.link.is_symlink():
            self.link.unlink()
        self.link.symlink_to(name)

    def unplug(self) -> None:
        if self.master is not None:
            os.close(self.master)
            self.master = None
        if self.link.is_symlink():
            self.link.unlink()

    def write(self, data: bytes) -> None:
        assert self.master is not None
        os.write(self.master, data)


@contextmanager
def fake_port(path: Path) -> Iterator[FakePort]:
    port = FakePort(path)
    port.plug()
    try:
        yield port
    finally:
        port.unplug()


def nmea(body: str) -> bytes:
    checksum = 0
    for b in body.encode():
        checksum ^= b
    return f"${body}*{checksum:02X}\r\n".encode()


def test_lines_reach_influxdb_through_the_gateway(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    with fake_port(tmp_path / "ttyKEBUN") as port:
        cfg = base_config(tmp_path, mosquitto, influx_server, db_name, serial=[{
            "name": "kebun", "port": str(port.link), "baudrate": 9600, "max_line_bytes": 64,
            "options": {"format": "kv", "device": "kebun-2", "checksum": "nmea",
                        "measurement": "garden_env"},
        }])
        gw = gateway_factory(cfg)
        wait_for(lambda: gw.status()["serial"]["kebun"]["open"], what="serial port open")
        # A line split across writes, noise between lines, a corrupted line, an overlong one.
        first = nmea("temperature_c=29.5 humidity_pct=78")
        port.write(first[:10])
        port.write(first[10:] + b"\x00\xff\x13\n")
        port.write(b"$temperature_c=30.5 humidity_pct=70*00\r\n")
        port.write(b"x" * 100 + b"\n")
        port.write(nmea("temperature_c=31 humidity_pct=69.5"))
        def points() -> int:
            if not db_exists(influx_server, db_name):
                return 0
            return len(influx_server.points(db_name, 'SELECT * FROM "garden_env"'))

        wait_for(lambda: points() == 2, what="two points")
        rows = influx_server.points(db_name, 'SELECT * FROM "garden_env" ORDER BY time')
        assert [(r["temperature_c"], r["humidity_pct"]) for r in rows] == [(29.5, 78), (31, 69.5)]
        assert {r["device"] for r in rows} == {"kebun-2"}
        serial = gw.status()["serial"]["kebun"]
        assert serial["lines"] == 3
        assert serial["readings"] == 2
        assert serial["errors"] == {"garbage": 1, "checksum": 1, "overlong": 1}
        assert serial["last_reading_ns"] is not None


def db_exists(influx: PrivateInfluxDB, db: str) -> bool:
    series = influx.query("SHOW DATABASES")
    return any(v[0] == db for s in series for v in s.get("values", []))


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, Committer, Spool]]:
    config = Config.model_validate({"data_dir": str(tmp_path),
                                    "gateway": {"id": "gw-test", "site": "taman-uji"}})
    spool = Spool.open(tmp_path / "spool.db", max_bytes=10**7)
    committer = Committer(spool=spool, interval_s=0.01, max_readings=1000)
    yield Pipeline.from_config(config), committer, spool
    await spool.close()


async def lines_in(spool: Spool) -> list[str]:
    return [line for _, line in await spool.fetch(1000)]


async def test_unplugged_adapter_is_reported_and_resumes_by_itself(
    tmp_path: Path, rig: tuple[Pipeline, Committer, Spool]
) -> None:
    pipeline, committer, spool = rig
    with fake_port(tmp_path / "ttyUSB-sim") as port:
        source = SerialLineSource(
            name="kebun", port=str(port.link), baudrate=9600,
            options=serial_lines.Options(format="json", device="kebun-2"),
            max_line_bytes=256, pipeline=pipeline, committer=committer,
            reopen_min_s=0.05, reopen_max_s=0.1)
        async with running(source.run(), committer.run()):
            await until(lambda: source.statistics().open)
            port.write(b'{"soil_moisture_pct": 41}\n')
            await until(lambda: spool.statistics().rows == 1)
            port.unplug()
            await until(lambda: not source.statistics().open)
            st = source.statistics()
            assert st.errors.get("port_gone") == 1
            assert "went away" in (st.last_error or "")
            await asyncio.sleep(0.3)  # a few reopen attempts against a missing path
            assert source.statistics().errors.get("open_failed", 0) >= 1
            port.plug()
            await until(lambda: source.statistics().open)
            port.write(b'{"soil_moisture_pct": 40}\n')
            await until(lambda: spool.statistics().rows == 2)
            assert source.statistics().opens == 2
    assert [ln.split(" ")[1] for ln in await lines_in(spool)] == [
        "soil_moisture_pct=41.0", "soil_moisture_pct=40.0"]


async def test_a_line_is_stamped_when_its_last_byte_arrives(
    tmp_path: Path, rig: tuple[Pipeline, Committer, Spool]
) -> None:
    pipeline, committer, spool = rig
    clock = iter(range(1_800_000_000_000_000_000, 1_900_000_000_000_000_000, 10**9))
    stamps: list[int] = []

    def fake_clock() -> int:
        stamps.append(next(clock))
        return stamps[-1]

    with fake_port(tmp_path / "ttyACM-sim") as port:
        source = SerialLineSource(
            name="kebun", port=str(port.link), baudrate=9600,
            options=serial_lines.Options(format="csv", device="kebun-2",
                                         columns=("temperature_c", "humidity_pct")),
            max_line_bytes=256, pipeline=pipeline, committer=committer,
            clock=WallClock(fake_clock))
        async with running(source.run(), committer.run()):
            await until(lambda: source.statistics().open)
            port.write(b"29.")
            await until(lambda: source.statistics().bytes == 3)
            port.write(b"5,78\n")
            await until(lambda: spool.statistics().rows == 1)
    (line,) = await lines_in(spool)
    # Two reads, two clock readings; the line carries the second, when it was complete.
    assert len(stamps) == 2
    assert line.endswith(f" {stamps[1]}")


async def test_lines_in_one_read_get_distinct_timestamps(
    tmp_path: Path, rig: tuple[Pipeline, Committer, Spool]
) -> None:
    pipeline, committer, spool = rig
    with fake_port(tmp_path / "ttyUSB-burst") as port:
        source = SerialLineSource(
            name="kebun", port=str(port.link), baudrate=9600,
            options=serial_lines.Options(format="kv", device="kebun-2"),
            max_line_bytes=256, pipeline=pipeline, committer=committer,
            clock=FakeClock(1_800_000_000_000_000_000))
        async with running(source.run(), committer.run()):
            await until(lambda: source.statistics().open)
            port.write(b"t=1\nt=2\nt=3\n")
            await until(lambda: spool.statistics().rows == 3)
    stamps = [int(line.rsplit(" ", 1)[1]) for line in await lines_in(spool)]
    assert stamps == [1_800_000_000_000_000_000 + i for i in range(3)]
