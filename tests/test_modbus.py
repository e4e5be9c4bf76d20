"""Modbus RTU polling against a real slave: pymodbus's server on a pseudo-terminal pair
(tests/modbus_peer.py), with values the test changes while the gateway polls."""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from devices.modbus import Block, Register
from gateway.config import Config, load_config
from gateway.core.clock import SystemClock
from gateway.core.errors import ConfigError, StackError
from gateway.pipeline import Committer, Pipeline
from gateway.sources.modbus import ModbusBus, SlaveSpec
from gateway.store.spool import Spool
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import GatewayProcess, base_config, running, until, wait_for
from tests.modbus_peer import ModbusPeer, modbus_peer

LEVEL_M = Register("level_m", 0, "float32", word_order="little", unit="m")  # CDAB
LEVEL_MM = Register("level_mm", 4, "uint16", unit="mm")
TEMP = Register("water_temp_c", 10, "int16", scale=0.1, unit="°C")
FLOW = Register("flow_m3h", 11, "float32", unit="m3/h")  # ABCD
PUMPED = Register("pumped_l", 13, "uint32")
DRIFT = Register("drift", 15, "int32", word_order="little", byte_order="little")  # DCBA
PUMP = Register("pump_on", 0, "bool")
HIGH = Register("high_water", 0, "bool")
SOIL = Register("soil_raw", 0, "uint16")

POLDER_BLOCKS = (
    Block(function="holding", address=0, count=6, registers=(LEVEL_M, LEVEL_MM)),
    Block(function="input", address=10, count=7, registers=(TEMP, FLOW, PUMPED, DRIFT)),
    Block(function="coils", address=0, count=2, registers=(PUMP,)),
    Block(function="discrete", address=0, count=1, registers=(HIGH,), measurement="alarm"),
)
SOIL_BLOCKS = (Block(function="holding", address=0, count=1, registers=(SOIL,)),)


def set_polder(peer: ModbusPeer, level_mm: int, temp_c: float, flow: float, pump: bool) -> None:
    peer.set(1, "holding", LEVEL_M, level_mm / 1000)
    peer.set(1, "holding", LEVEL_MM, level_mm)
    peer.set(1, "input", TEMP, temp_c)
    peer.set(1, "input", FLOW, flow)
    peer.set(1, "input", PUMPED, 3_000_000_000)
    peer.set(1, "input", DRIFT, -123_456)
    peer.set(1, "coils", PUMP, pump)
    peer.set(1, "discrete", HIGH, level_mm > 2000)


def block_config(block: Block) -> dict[str, Any]:
    regs = [{k: v for k, v in vars_of(r).items() if k in ("field", "address") or
             v != getattr(Register, k, None)} for r in block.registers]
    out: dict[str, Any] = {"function": block.function, "address": block.address,
                           "count": block.count, "registers": regs}
    if block.measurement:
        out["measurement"] = block.measurement
    return out


def vars_of(reg: Register) -> dict[str, Any]:
    return {name: getattr(reg, name) for name in Register.__slots__}


def test_polled_values_reach_influxdb_as_the_slave_changes_them(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    with modbus_peer(tmp_path / "ttyRS485", units=(1, 2)) as peer:
        set_polder(peer, 1234, -4.5, 12.5, True)
        peer.set(2, "holding", SOIL, 517)
        cfg = base_config(tmp_path, mosquitto, influx_server, db_name, modbus=[{
            "name": "polder-bus", "port": str(peer.link), "baudrate": 9600, "timeout_s": 0.5,
            "slaves": [
                {"device": "polder-1", "unit": 1, "interval_s": 0.1, "measurement": "polder",
                 "blocks": [block_config(b) for b in POLDER_BLOCKS]},
                {"device": "kebun-soil", "unit": 2, "interval_s": 0.25,
                 "measurement": "soil", "blocks": [block_config(b) for b in SOIL_BLOCKS]},
            ]}])
        cfg["devices"] = []  # polder-1 would otherwise get the device list's measurement
        gw = gateway_factory(cfg)

        def latest(field: str, measurement: str = "polder") -> Any:
            try:
                rows = influx_server.points(
                    db_name, f'SELECT last("{field}") FROM "{measurement}"')
            except StackError:  # the database is created at the first write
                return None
            return rows[0]["last"] if rows else None

        wait_for(lambda: latest("level_mm") == 1234, what="first level in InfluxDB")
        first = influx_server.points(
            db_name, 'SELECT * FROM "polder" WHERE "level_mm" = 1234 LIMIT 1')[0]
        assert first["device"] == "polder-1"
        assert math.isclose(first["level_m"], 1.234, rel_tol=1e-6)  # float32, CDAB
        # The blocks are separate points (each stamped as its answer completed).
        wait_for(lambda: latest("water_temp_c") == -4.5, what="negative int16 * 0.1")
        assert latest("flow_m3h") == 12.5  # float32, ABCD
        assert latest("pumped_l") == 3_000_000_000
        assert latest("drift") == -123_456
        assert latest("pump_on") is True
        assert latest("high_water", "alarm") is False
        wait_for(lambda: latest("soil_raw", "soil") == 517, what="the second slave")

        # The slave's values change while the gateway polls.
        set_polder(peer, 2345, 0.3, -0.75, False)
        peer.set(2, "holding", SOIL, 611)
        wait_for(lambda: latest("level_mm") == 2345, what="changed level")
        wait_for(lambda: latest("high_water", "alarm") is True, what="changed alarm")
        wait_for(lambda: latest("soil_raw", "soil") == 611, what="changed soil")
        wait_for(lambda: latest("water_temp_c") == 0.3, what="changed temperature")
        assert math.isclose(latest("level_m"), 2.345, rel_tol=1e-6)
        assert latest("flow_m3h") == -0.75
        assert latest("pump_on") is False
        # Field types never changed between polls (InfluxDB would have refused the points).
        types = {r["fieldKey"]: r["fieldType"] for r in influx_server.points(
            db_name, 'SHOW FIELD KEYS FROM "polder"')}
        assert types == {"level_m": "float", "level_mm": "integer", "water_temp_c": "float",
                         "flow_m3h": "float", "pumped_l": "integer", "drift": "integer",
                         "pump_on": "boolean"}

        bus = gw.status()["modbus"]["polder-bus"]
        assert bus["open"]
        assert bus["errors"] == {}
        polder, soil = bus["slaves"]["polder-1"], bus["slaves"]["kebun-soil"]
        assert polder["state"] == soil["state"] == "online"
        assert polder["errors"] == soil["errors"] == {}
        assert set(polder["blocks"]) == {"holding@0", "input@10", "coils@0", "discrete@0"}
        # Polled in turn at their own intervals: the faster slave was asked more often.
        assert polder["polls"] > soil["polls"] > 0
        assert all(b["ok"] > 0 for b in polder["blocks"].values())


# -- in process: errors by kind, offline slaves, unplugging ----------------------------------


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[tuple[Pipeline, Committer, Spool]]:
    config = Config.model_validate({"data_dir": str(tmp_path),
                                    "gateway": {"id": "gw-test", "site": "taman-uji"}})
    spool = Spool.open(tmp_path / "spool.db", max_bytes=10**7)
    committer = Committer(spool=spool, interval_s=0.01, max_readings=1000)
    yield Pipeline.from_config(config), committer, spool
    await spool.close()


@pytest.fixture
def lines(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every line handed to the committer, for tests that look at values as they come."""
    seen: list[str] = []
    original = Committer.add

    def add(self: Committer, outcome: Any, *args: Any, **kwargs: Any) -> None:
        seen.extend(outcome.lines)
        original(self, outcome, *args, **kwargs)

    monkeypatch.setattr(Committer, "add", add)
    return seen


def make_bus(peer: ModbusPeer, rig: tuple[Pipeline, Committer, Spool], *blocks: Block,
             units: tuple[int, ...] = (1,), **kwargs: Any) -> ModbusBus:
    pipeline, committer, _ = rig
    settings: dict[str, Any] = {"timeout_s": 0.2, "turnaround_s": 0.0, "reopen_min_s": 0.05,
                                "reopen_max_s": 0.1, **kwargs}
    slaves = [SlaveSpec(device=f"unit-{u}", unit=u, interval_s=0.05, measurement="polder",
                        blocks=blocks or POLDER_BLOCKS[:1]) for u in units]
    return ModbusBus(name="bus", port=str(peer.link), slaves=slaves, pipeline=pipeline,
                     committer=committer, **settings)


def block_of(bus: ModbusBus, device: str, key: str) -> dict[str, Any]:
    block: dict[str, Any] = bus.describe()["slaves"][device]["blocks"][key]
    return block


async def test_wrong_crc_is_counted_and_the_next_poll_succeeds(
    tmp_path: Path, rig: tuple[Pipeline, Committer, Spool]
) -> None:
    with modbus_peer(tmp_path / "ttyRS485") as peer:
        peer.set(1, "holding", LEVEL_MM, 777)
        bus = make_bus(peer, rig)
        async with running(bus.run(), rig[1].run()):
            await until(lambda: block_of(bus, "unit-1", "holding@0")["ok"] >= 1)
            peer.corrupt_answers = 2
            await until(lambda: block_of(bus, "unit-1", "holding@0")["errors"].get("crc") == 2)
            ok_after = block_of(bus, "unit-1", "holding@0")["ok"]
            await until(lambda: block_of(bus, "unit-1", "holding@0")["ok"] > ok_after)
        block = block_of(bus, "unit-1", "holding@0")
        assert block["errors"] == {"crc": 2}
        assert "CRC error in the answer" in block["last_error"]
        slave = bus.describe()["slaves"]["unit-1"]
        assert slave["state"] == "online"
        assert slave["went_offline"] == 0
        # A damaged answer is not a reading: every spooled line carries the true value.
        lines = [line for _, line in await rig[2].fetch(1000)]
        assert lines
        assert all("level_mm=777i" in line for line in lines)


async def test_a_silent_slave_goes_offline_while_the_other_goes_on_and_comes_back(
    tmp_path: Path, rig: tuple[Pipeline, Committer, Spool]
) -> None:
    with modbus_peer(tmp_path / "ttyRS485", units=(1, 2)) as peer:
        bus = make_bus(peer, rig, units=(1, 2), offline_after=2, offline_retry_s=1.0)
        async with running(bus.run(), rig[1].run()):
            await until(lambda: bus.describe()["slaves"]["unit-2"]["answered"] >= 1)
            peer.silenced.add(2)  # its wire is cut
            await until(lambda: bus.describe()["slaves"]["unit-2"]["state"] == "offline")
            ok_1 = block_of(bus, "unit-1", "holding@0")["ok"]
            polls_2 = bus.describe()["slaves"]["unit-2"]["polls"]
            started = time.monotonic()
            # The other slave goes on, and polls of the offline one thin out to offline_retry_s.
            await until(lambda: block_of(bus, "unit-1", "holding@0")["ok"] >= ok_1 + 20)
            elapsed = time.monotonic() - started
            assert bus.describe()["slaves"]["unit-2"]["polls"] - polls_2 <= elapsed / 1.0 + 1
            assert bus.describe()["slaves"]["unit-1"]["state"] == "online"
            peer.silenced.clear()
            await until(lambda: bus.describe()["slaves"]["unit-2"]["state"] == "online")
        unit2 = bus.describe()["slaves"]["unit-2"]
        assert unit2["went_offline"] == 1
        assert unit2["failures_in_row"] == 0
        assert "timeout after 0.2 s: no answer" in unit2["last_error"]
        assert set(unit2["errors"]) == {"timeout"}


async def test_an_exception_response_is_counted_for_its_block_only(
    tmp_path: Path, rig: tuple[Pipeline, Committer, Spool]
) -> None:
    beyond = Block(function="holding", address=60, count=8,  # the slave has 0..63
                   registers=(Register("beyond", 66),))
    with modbus_peer(tmp_path / "ttyRS485") as peer:
        bus = make_bus(peer, rig, POLDER_BLOCKS[0], beyond)
        async with running(bus.run(), rig[1].run()):
            await until(lambda: block_of(bus, "unit-1", "holding@60")["errors"].get(
                "exception", 0) >= 3)
        bad, good = block_of(bus, "unit-1", "holding@60"), block_of(bus, "unit-1", "holding@0")
        assert bad["ok"] == 0
        assert bad["last_exception"] == 2
        assert "exception 2 (illegal data address)" in bad["last_error"]
        assert good["ok"] >= 3
        assert good["errors"] == {}
        # A slave that refuses is still there: online, not offline.
        assert bus.describe()["slaves"]["unit-1"]["state"] == "online"


async def test_an_unplugged_adapter_is_reported_and_polling_resumes_by_itself(
    tmp_path: Path, rig: tuple[Pipeline, Committer, Spool], lines: list[str]
) -> None:
    with modbus_peer(tmp_path / "ttyRS485") as peer:
        peer.set(1, "holding", LEVEL_MM, 100)
        bus = make_bus(peer, rig)
        async with running(bus.run(), rig[1].run()):
            await until(lambda: bus.describe()["slaves"]["unit-1"]["answered"] >= 2)
            peer.unplug()
            await until(lambda: not bus.describe()["open"])
            await until(lambda: bus.describe()["errors"].get("open_failed", 0) >= 2)
            assert bus.describe()["errors"]["port_gone"] == 1
            peer.set(1, "holding", LEVEL_MM, 200)
            peer.plug()
            await until(lambda: bus.describe()["open"] and bus.describe()["opens"] == 2)
            await until(lambda: any("level_mm=200i" in line for line in lines))
        status = bus.describe()
        assert "went away" in (status["last_error"] or "") or "cannot open" in (
            status["last_error"] or "")


async def test_an_echoing_adapter_works_when_configured_and_is_diagnosed_when_not(
    tmp_path: Path, rig: tuple[Pipeline, Committer, Spool], lines: list[str]
) -> None:
    with modbus_peer(tmp_path / "ttyRS485") as peer:
        peer.echo = True
        peer.set(1, "holding", LEVEL_MM, 4321)
        bus = make_bus(peer, rig, echo=True)
        async with running(bus.run(), rig[1].run()):
            await until(lambda: block_of(bus, "unit-1", "holding@0")["ok"] >= 3)
        assert block_of(bus, "unit-1", "holding@0")["errors"] == {}
        assert any("level_mm=4321i" in line for line in lines)

        unaware = make_bus(peer, rig, echo=False)
        async with running(unaware.run()):
            await until(lambda: block_of(unaware, "unit-1", "holding@0")["errors"].get(
                "mismatch", 0) >= 2)
        assert "echoes" in block_of(unaware, "unit-1", "holding@0")["last_error"]


class WallClock(SystemClock):
    """The system's intervals and waits, with wall time from ``now_ns`` (a test's ticks)."""

    def __init__(self, now_ns: Callable[[], int]) -> None:
        self._now_ns = now_ns

    def now_ns(self) -> int:
        return self._now_ns()


async def test_a_reading_is_stamped_once_when_its_answer_completes(
    tmp_path: Path, rig: tuple[Pipeline, Committer, Spool], lines: list[str]
) -> None:
    ticks = itertools.count(1_700_000_000_000_000_000, 1_000_000)
    stamps: list[int] = []

    def clock() -> int:
        stamps.append(next(ticks))
        return stamps[-1]

    with modbus_peer(tmp_path / "ttyRS485") as peer:
        bus = make_bus(peer, rig, clock=WallClock(clock))
        async with running(bus.run(), rig[1].run()):
            await until(lambda: len(lines) >= 3)
    times = [int(line.rsplit(" ", 1)[1]) for line in lines]
    # Each point carries a clock reading taken when bytes arrived, each reading used once.
    assert len(set(times)) == len(times)
    assert set(times) <= set(stamps)


# -- configuration -------------------------------------------------------------------------


def check(tmp_path: Path, modbus: list[dict[str, Any]], **extra: Any) -> list[str]:
    raw = {"data_dir": str(tmp_path), "gateway": {"id": "gw", "site": "s"}, "modbus": modbus,
           **extra}
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw))
    try:
        load_config(path, env={})
    except ConfigError as exc:
        return exc.problems
    return []


def slave(**over: Any) -> dict[str, Any]:
    return {"device": "polder-1", "unit": 1, "measurement": "polder",
            "blocks": [block_config(POLDER_BLOCKS[0])], **over}


def test_register_map_mistakes_are_reported_with_their_key(tmp_path: Path) -> None:
    assert check(tmp_path, [{"name": "bus", "port": "/dev/x", "slaves": [slave()]}]) == []
    typo = slave(blocks=[{"function": "holding", "address": 0, "count": 1,
                          "registers": [{"field": "level_mm", "adress": 0}]}])
    assert check(tmp_path, [{"name": "bus", "port": "/dev/x", "slaves": [typo]}]) == [
        "modbus.0.slaves.0.blocks.0.registers.0.address: required key is missing",
        "modbus.0.slaves.0.blocks.0.registers.0.adress: unknown key (did you mean 'address'?)",
    ]
    outside = slave(blocks=[{"function": "holding", "address": 4, "count": 1,
                             "registers": [{"field": "level_m", "address": 4,
                                            "type": "float32"}]}])
    [problem] = check(tmp_path, [{"name": "bus", "port": "/dev/x", "slaves": [outside]}])
    assert problem.startswith("modbus.0.slaves.0.blocks.0: block holding at 4 (0x0004): "
                              "register 'level_m' (4..5) is outside the block (4..4)")
    twice = [slave(), slave(device="polder-2")]
    assert check(tmp_path, [{"name": "bus", "port": "/dev/x", "slaves": twice}]) == [
        "modbus.0: unit 1 appears twice on bus 'bus'"]
    shared = check(tmp_path, [{"name": "bus", "port": "/dev/x", "slaves": [slave()]}],
                   serial=[{"name": "kebun", "port": "/dev/x"}])
    assert shared == ["(top level): modbus 'bus': port /dev/x is already read by serial "
                      "'kebun'; one source per port"]
