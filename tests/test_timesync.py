"""Clock without RTC: readings stamped before NTP syncs are held, corrected, or kept apart.

The machine's clocks are injected (:class:`FakeTimeSource`: wall, boottime, boot id, the
kernel's sync flag); everything else is real: the pipeline and committer, the spool on a
SQLite file, the private InfluxDB, a private Mosquitto for the acknowledgement test.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ClockConfig, Config, MqttConfig
from gateway.pipeline import Committer, Pipeline
from gateway.pipeline.timesync import (
    DEFAULT_MIN_VALID_NS,
    ClockTimeSource,
    FakeTimeSource,
    SystemTimeSource,
    TimeSync,
    clock_trusted,
    kernel_synchronised,
)
from gateway.sources.mqtt import MqttSource
from gateway.store.forwarder import Forwarder
from gateway.store.influx import InfluxWriter
from gateway.store.spool import ROW_OVERHEAD, HeldLine, Spool, SpoolDB
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import Publisher, running, until

S = 10**9
TOPIC = "garden/taman-uji/polder-1/telemetry"
# What a Pi without RTC says after a power cut: shortly after the epoch.
BOOT_WALL = 42 * S
# The real time when NTP answers: 2026-11-29T00:00:00Z.
REAL = 1_795_910_400 * S


def line_time(line: str) -> int:
    return int(line.rsplit(" ", 1)[1])


@dataclass
class Rig:
    fake: FakeTimeSource
    sync: TimeSync
    spool: Spool
    pipeline: Pipeline
    committer: Committer


def make_pipeline(tmp_path: Path, sync: TimeSync | None) -> Pipeline:
    config = Config.model_validate({
        "data_dir": str(tmp_path),
        "gateway": {"id": "gw-test", "site": "taman-uji"},
        "subscriptions": [{"topic": "garden/+/+/telemetry", "format": "native"}],
        "devices": [{"id": "polder-1", "kind": "polder"}],
    })
    return Pipeline.from_config(config, time_sync=sync)


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    fake = FakeTimeSource(wall=BOOT_WALL, boot=7 * S, boot_name="boot-a", kernel=False)
    spool = Spool.open(tmp_path / "spool.sqlite3", max_bytes=10**7)
    sync = TimeSync(source=fake, spool=spool)
    pipeline = make_pipeline(tmp_path, sync)
    committer = Committer(spool=spool, interval_s=0.01, max_readings=1000)
    yield Rig(fake, sync, spool, pipeline, committer)
    await spool.close()


def receive(rig: Rig, payload: dict[str, Any]) -> int:
    """One message arriving now (the source reads the wall clock); returns its boottime."""
    outcome = rig.pipeline.process(TOPIC, json.dumps(payload).encode(), rig.fake.wall_ns())
    rig.committer.add(outcome)
    return rig.fake.boottime_ns()


def make_forwarder(spool: Spool, server: PrivateInfluxDB, db: str,
                   sync: TimeSync) -> tuple[Forwarder, InfluxWriter]:
    writer = InfluxWriter(url=server.url, database=db)
    return Forwarder(spool=spool, writer=writer, time_guard=sync.refuse_reason), writer


def influx_times(server: PrivateInfluxDB, db: str) -> list[int]:
    return [int(p["time"]) for p in server.points(db, "SELECT level_cm FROM polder")]


# -- the verdict ----------------------------------------------------------------------------


@pytest.mark.parametrize(("require", "kernel", "wall", "trusted"), [
    ("auto", False, REAL, False),        # the kernel says unsynchronised
    ("auto", True, REAL, True),
    ("auto", None, REAL, True),          # cannot ask: the floor decides
    ("auto", True, BOOT_WALL, False),    # synchronised, they say, but 1970 is never right
    ("auto", None, DEFAULT_MIN_VALID_NS - 1, False),
    ("yes", None, REAL, False),          # yes wants the kernel's word
    ("yes", True, REAL, True),
    ("no", False, REAL, True),           # a development machine without NTP
    ("no", False, BOOT_WALL, False),     # ... but never below the floor
])
def test_verdict(require: Any, kernel: bool | None, wall: int, trusted: bool) -> None:
    assert clock_trusted(require, kernel, wall, DEFAULT_MIN_VALID_NS) is trusted


def test_adjtimex_verdict_bits() -> None:
    assert kernel_synchronised(status=0x2001, result=0) is True  # STA_PLL|STA_NANO, TIME_OK
    assert kernel_synchronised(status=0x0040, result=5) is False  # STA_UNSYNC, TIME_ERROR
    assert kernel_synchronised(status=0x0040, result=0) is False
    assert kernel_synchronised(status=0x0001, result=5) is False


def test_system_time_source_really_asks_this_machine() -> None:
    source = SystemTimeSource()
    verdict = source.synchronised()
    assert verdict is None or isinstance(verdict, bool)
    assert source._adjtimex is not None, "adjtimex should be reachable through libc here"
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert source.boot_id() == boot_id
    # CLOCK_BOOTTIME counts suspend on top of CLOCK_MONOTONIC: never behind it.
    assert source.boottime_ns() >= time.monotonic_ns() - S // 100
    assert abs(source.wall_ns() - time.time_ns()) < S


def test_a_gateway_on_an_injected_clock_believes_it() -> None:
    clock = FakeClock(start_ns=REAL)
    sync = TimeSync(source=ClockTimeSource(clock), max_future_ns=60 * S)
    assert sync.trusted
    clock.advance(3600)  # a test moving its fake time an hour on: still not "ahead"
    assert sync.refuse_reason(REAL + 3600 * S) is None
    assert sync.refuse_reason(REAL + 3700 * S) is not None


class _WallOf:
    """A Clock whose wall time is a FakeTimeSource's (the source's own stamps)."""

    def __init__(self, source: FakeTimeSource) -> None:
        self._source = source

    def now_ns(self) -> int:
        return self._source.wall_ns()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def test_clock_config_reads_yaml_booleans_and_dates() -> None:
    c = ClockConfig.model_validate(yaml.safe_load(
        "require_sync: no\nmin_valid_time: 2026-03-01\nmax_future_s: 60"))
    assert c.require_sync == "no"
    assert c.min_valid_ns == 1_772_323_200 * S
    assert c.max_future_ns == 60 * S
    assert ClockConfig.model_validate({"require_sync": True}).require_sync == "yes"
    assert ClockConfig().min_valid_ns == DEFAULT_MIN_VALID_NS
    with pytest.raises(ValueError, match="require_sync"):
        ClockConfig.model_validate({"require_sync": "maybe"})


# -- held, corrected, delivered ---------------------------------------------------------------


async def test_readings_before_sync_are_held_then_sent_with_corrected_times(
    rig: Rig, influx_server: PrivateInfluxDB, db_name: str
) -> None:
    fwd, writer = make_forwarder(rig.spool, influx_server, db_name, rig.sync)
    assert not rig.sync.trusted
    boots = []
    for i in range(5):
        boots.append(receive(rig, {"level_cm": 100.5 + i}))
        rig.fake.advance(1.25)
    await rig.committer.commit()
    # Nothing is waiting to be sent: all five are held, on disk.
    assert rig.spool.rows == 0
    assert rig.spool.held_rows == 5
    assert await fwd.forward_once()
    assert influx_times(influx_server, db_name) == []

    # Twenty minutes later NTP steps the clock to the real time and says it is synchronised.
    rig.fake.advance(1200)
    rig.fake.step(REAL)
    assert rig.sync.check()
    assert await rig.sync.release() == 5
    offset = REAL - rig.fake.boottime_ns()
    expected = [b + offset for b in boots]
    assert [line_time(line) for _, line in await rig.spool.fetch(10)] == expected
    assert rig.spool.held_rows == 0

    assert await fwd.forward_once()
    assert influx_times(influx_server, db_name) == expected
    stats = rig.sync.statistics()
    assert (stats["synced"], stats["held"], stats["released"], stats["held_rows"]) == (
        True, 5, 5, 0)
    assert stats["last_step_s"] == pytest.approx((REAL - BOOT_WALL - 1206.25 * S) / S)
    await writer.aclose()


async def test_held_rows_survive_a_restart_and_an_earlier_boot_is_kept_apart(
    tmp_path: Path, influx_server: PrivateInfluxDB, db_name: str
) -> None:
    path = tmp_path / "spool.sqlite3"
    fake = FakeTimeSource(wall=BOOT_WALL, boot=7 * S, boot_name="boot-a", kernel=False)

    async def run_once(receipts: int) -> list[int]:
        spool = Spool.open(path, max_bytes=10**7)
        sync = TimeSync(source=fake, spool=spool)
        await sync.keep_earlier_boots_apart()
        rig = Rig(fake, sync, spool, make_pipeline(tmp_path, sync),
                  Committer(spool=spool, interval_s=0.01, max_readings=1000))
        boots = []
        for i in range(receipts):
            boots.append(receive(rig, {"level_cm": float(i)}))
            fake.advance(0.5)
        await rig.committer.commit()
        await spool.close()
        return boots

    # The gateway restarts (same boot, still unsynchronised): its held rows are still there.
    first = await run_once(3)
    fake.advance(30)
    second = await run_once(2)
    db = SpoolDB(path, max_bytes=10**7)
    assert [h["boot_ns"] for h in db.held()] == first + second
    db.close()

    # Power cut before NTP answered: a new boot, boottime from zero again, clock in 1970.
    fake.reboot(boot_id="boot-b", wall_ns=BOOT_WALL)
    spool = Spool.open(path, max_bytes=10**7)
    sync = TimeSync(source=fake, spool=spool)
    assert await sync.keep_earlier_boots_apart() == 5
    fake.step(REAL)
    assert sync.check()
    assert await sync.release() == 0
    assert spool.rows == 0
    assert spool.held_rows == 0
    apart = await spool.unsynced()
    assert len(apart) == 5
    assert {r["boot_id"] for r in apart} == {"boot-a"}
    assert "earlier boot" in apart[0]["reason"]
    assert apart[0]["body"].startswith("polder,device=polder-1,gateway=gw-test,")
    assert sync.statistics()["kept_apart"] == 5
    fwd, writer = make_forwarder(spool, influx_server, db_name, sync)
    assert await fwd.forward_once()
    assert influx_times(influx_server, db_name) == []
    await writer.aclose()
    await spool.close()


async def test_a_device_time_before_the_floor_is_quarantined_with_the_reason(rig: Rig) -> None:
    # 2023 passes the decoder's own 2020 limit; the gateway's floor refuses it.
    receive(rig, {"level_cm": 1.5, "ts": 1_700_000_000})
    await rig.committer.commit()
    q = await rig.spool.quarantined()
    assert len(q) == 1
    assert q[0]["status"] is None
    assert q[0]["line"].endswith(" 1700000000000000000")
    assert "2023-11-14T22:13:20Z is before clock.min_valid_time 2026-01-01" in q[0]["reason"]
    assert rig.spool.rows == 0
    assert rig.spool.held_rows == 0
    assert rig.pipeline.statistics()["refused_time"] == 1


async def test_a_device_time_of_1970_is_never_believed(rig: Rig) -> None:
    # The decoder takes the receive time instead (before 2020); that is ours: held.
    receive(rig, {"level_cm": 1.5, "ts": 5})
    await rig.committer.commit()
    assert (rig.spool.rows, rig.spool.held_rows) == (0, 1)


async def test_a_plausible_device_time_passes_while_unsynchronised(rig: Rig) -> None:
    device_ns = REAL - 90 * S  # the device's NTP is fine; ours is still in 1970
    receive(rig, {"level_cm": 2.5, "ts": device_ns / S})
    await rig.committer.commit()
    rows = await rig.spool.fetch(10)
    assert [line_time(line) for _, line in rows] == [device_ns]
    assert rig.spool.held_rows == 0


async def test_a_device_far_ahead_of_a_synchronised_clock_is_refused(rig: Rig) -> None:
    rig.fake.step(REAL)
    rig.sync.check()
    # Within the decoder's 300 s, beyond a configured 60 s.
    sync = TimeSync(source=rig.fake, spool=rig.spool, max_future_ns=60 * S)
    pipeline = make_pipeline(Path("/nonexistent"), sync)
    rig.committer.add(pipeline.process(TOPIC, json.dumps(
        {"level_cm": 1.0, "ts": (REAL + 200 * S) / S}).encode(), rig.fake.wall_ns()))
    await rig.committer.commit()
    q = await rig.spool.quarantined()
    assert len(q) == 1
    assert "ahead of the synchronised clock" in q[0]["reason"]


async def test_once_synchronised_readings_go_straight_to_the_spool(rig: Rig) -> None:
    rig.fake.step(REAL)
    assert rig.sync.check()
    receive(rig, {"level_cm": 3.5})
    await rig.committer.commit()
    assert [line_time(line) for _, line in await rig.spool.fetch(10)] == [REAL]
    assert rig.spool.held_rows == 0


async def test_the_forwarder_never_sends_a_far_past_line(
    rig: Rig, influx_server: PrivateInfluxDB, db_name: str
) -> None:
    """Lines that came another way (an old spool, own points before the wiring) meet the
    forwarder's guard: quarantined with the reason, the rest delivered."""
    fwd, writer = make_forwarder(rig.spool, influx_server, db_name, rig.sync)
    good = f"polder,device=p1 level_cm=1.5 {REAL}"
    await rig.spool.append([f"polder,device=p1 level_cm=9.5 {42 * S}", good,
                            "polder,device=p1 level_cm=7.5 1500000000000000000"])
    assert await fwd.forward_once()
    assert influx_times(influx_server, db_name) == [REAL]
    reasons = sorted(r["reason"] for r in await rig.spool.quarantined())
    assert len(reasons) == 2
    assert "1970-01-01T00:00:42Z" in reasons[0]
    assert "never set" in reasons[0]
    assert "2017-07-14" in reasons[1]
    assert (fwd.statistics().refused_time, fwd.statistics().quarantined) == (2, 2)
    assert rig.spool.rows == 0
    await writer.aclose()


async def test_the_gateways_own_points_are_held_too(rig: Rig) -> None:
    stamped = rig.fake.wall_ns() - 2 * S  # stamped by our clock two seconds ago
    earlier = REAL - 3600 * S  # an outage start from before this boot, good clock then
    outcome = rig.pipeline.own([f"device_status,device=a up=1i {stamped}",
                                f"device_status,device=b up=0i {earlier}"])
    assert [h.body for h in outcome.held] == ["device_status,device=a up=1i"]
    assert outcome.held[0].boot_ns == rig.fake.boottime_ns() - 2 * S
    assert outcome.lines == [f"device_status,device=b up=0i {earlier}"]


def test_the_held_table_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    db = SpoolDB(tmp_path / "s.db", max_bytes=10**6, held_max_rows=3)
    db.append([], held=[HeldLine(f"m v={i}i", "b", i, i) for i in range(5)])
    assert db.held_rows == 3
    assert [h["body"] for h in db.held()] == ["m v=2i", "m v=3i", "m v=4i"]
    assert db.clock_totals()["held_evicted"] == 2
    db.close()
    assert SpoolDB(tmp_path / "s.db", max_bytes=10**6).clock_totals()["held_evicted"] == 2


def test_release_respects_the_spool_bound(tmp_path: Path) -> None:
    body = "m,device=d v=1i"
    one = len(f"{body} {REAL}") + ROW_OVERHEAD
    db = SpoolDB(tmp_path / "s.db", max_bytes=one * 4)
    db.append([], held=[HeldLine(body, "b", i, 0) for i in range(6)])
    assert db.release_held("b", REAL, limit=100) == 6
    assert db.rows == 4
    assert db.statistics().totals["evicted"] == 2
    assert [line_time(s) for _, s in db.fetch(10)] == [REAL + i for i in range(2, 6)]
    db.close()


# -- the watcher and the acknowledgement ------------------------------------------------------


async def test_the_watch_task_releases_when_the_clock_syncs(rig: Rig) -> None:
    clock = FakeClock()
    sync = TimeSync(source=rig.fake, spool=rig.spool, clock=clock, check_interval_s=1.0)
    boot = receive(rig, {"level_cm": 4.5})
    await rig.committer.commit()
    async with running(sync.run()):
        await until(lambda: clock.sleepers == 1)
        assert rig.spool.held_rows == 1
        rig.fake.advance(5)
        rig.fake.step(REAL)
        clock.advance(1.0)
        await until(lambda: rig.spool.rows == 1)
        offset = REAL - rig.fake.boottime_ns()
        assert [line_time(s) for _, s in await rig.spool.fetch(1)] == [boot + offset]
        # A straggler committed after the flip is released at once, not a minute later.
        await until(lambda: clock.sleepers == 1)
        outcome = rig.pipeline.process(TOPIC, b'{"level_cm": 5.5}', BOOT_WALL + S)
        assert len(outcome.held) == 1  # a redelivery first received before the sync
        rig.committer.add(outcome)
        await rig.committer.commit()
        await until(lambda: rig.spool.rows == 2)


async def test_a_held_message_is_acknowledged_only_after_its_commit(
    tmp_path: Path, mosquitto: PrivateMosquitto
) -> None:
    fake = FakeTimeSource(wall=BOOT_WALL, kernel=False)
    spool = Spool.open(tmp_path / "spool.sqlite3", max_bytes=10**7)
    sync = TimeSync(source=fake, spool=spool)
    pipeline = make_pipeline(tmp_path, sync)
    committer = Committer(spool=spool, interval_s=0.01, max_readings=1000)
    acked_with_rows: list[int] = []
    source = MqttSource(
        config=MqttConfig(host="127.0.0.1", port=mosquitto.port, reconnect_min_s=0.05,
                          reconnect_max_s=0.2),
        client_id="gw-test", topics=["garden/+/+/telemetry"], pipeline=pipeline,
        committer=committer, seen=None, clock=_WallOf(fake))
    real_add = committer.add_batch

    def add_batch(batch: Any, *, ack: Any = None, **kw: Any) -> None:
        def checked_ack() -> None:
            # Read from the file by another connection: what a power cut would leave.
            reader = SpoolDB(tmp_path / "spool.sqlite3", max_bytes=10**7)
            acked_with_rows.append(reader.held_rows)
            reader.close()
            ack()

        real_add(batch, ack=checked_ack if ack is not None else None, **kw)

    committer.add_batch = add_batch  # type: ignore[method-assign]
    async with running(committer.run(), source.run()):
        await until(lambda: source.statistics().connected is True)
        pub = Publisher(mosquitto.port)
        try:
            # Returns once the broker has the message (paho waits on its own thread).
            await asyncio.to_thread(pub.publish, TOPIC, {"level_cm": 6.5})
        finally:
            pub.close()
        await until(lambda: source.statistics().acks == 1)
    assert acked_with_rows == [1]
    assert spool.rows == 0
    await spool.close()
