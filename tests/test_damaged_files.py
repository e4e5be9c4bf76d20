"""A damaged file is set aside, not fatal (issue 13): each of the gateway's three SQLite files,
truncated to half and with a garbled page, real files on disk.

Before, in all six cases the gateway did not start. Now it starts: the history starts fresh
(it is derived), the state and the spool keep what can still be read, one log line names the
file, the action and the counts, ``doctor`` names it and the fix, and the status shows it until
an operator acknowledges it.
"""

from __future__ import annotations

import contextlib
import logging
import random
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gateway.app.gateway import Gateway
from gateway.config import Config, validate_raw
from gateway.core.salvage import check, salvage, set_aside
from gateway.ops.doctor.disk import check_files
from gateway.park.alerts import Alert, Subject
from gateway.park.history import History
from gateway.park.outbox import Outbox
from gateway.park.registry import Device, Registry
from gateway.store.spool import SpoolDB
from gateway.testing.clock import FakeClock

PAGE = 4096
SPOOL_ROWS = 5_000
OUTAGES = 3_000
ALERTS = 2_000


def config(tmp_path: Path) -> Config:
    cfg: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"), "gateway": {"id": "gw-test", "site": "taman-uji"},
        "mqtt": {"host": "127.0.0.1", "port": 1}, "influx": {"url": "http://127.0.0.1:1"},
        "clock": {"require_sync": "no"}, "devices": [{"id": "polder-1", "kind": "polder"}],
        "alerts": {"targets": [{"name": "it", "url": "http://127.0.0.1:9/hook"}]}}
    return validate_raw(cfg, env={}, base=tmp_path).config


def line(i: int) -> str:
    return f"polder,device=polder-1,site=taman-uji level_cm={i}.5 {1_800_000_000_000_000_000 + i}"


def make_files(data_dir: Path) -> None:
    """What a gateway leaves after a while: a spool with unsent lines, a state with devices and
    outages, a history with rollups; closed as a clean stop closes them."""
    data_dir.mkdir(parents=True, exist_ok=True)
    spool = SpoolDB(data_dir / "spool.sqlite3", max_bytes=10**9)
    spool.append([line(i) for i in range(SPOOL_ROWS)])
    spool.close()
    registry = Registry(data_dir / "state.sqlite3")
    device = Device(id="polder-1", name="polder-1", kind="polder", site="taman-uji", zone=None,
                    interval_s=60, source="config", origin="config", dirty=True)
    registry.save([device])
    for i in range(OUTAGES):
        oid = registry.open_outage(device, 10**18 + i * 10**9, "no reading for 3 intervals")
        registry.close_outage(oid, 10**18 + i * 10**9 + 5, "reading")
    registry.close()
    clock = FakeClock()
    history = History(data_dir / "history.sqlite3", clock=clock)
    for i in range(3000):
        history.record("polder-1", "level_cm", clock.now_ns() - i * 60 * 10**9, float(i))
    history.flush()
    history.close()
    outbox = Outbox(data_dir / "outbox.sqlite3")
    subject = Subject("polder-1", "polder-1", "polder", "taman-uji", None)
    alerts = [Alert("down", subject, 10**18, 10**18 + i, "tidak ada data", "x" * 200,
                    queued_ns=10**18 + i, id=f"alert-{i}") for i in range(ALERTS)]
    outbox.add(("it", a.id, a.priority, a.queued_ns, a.to_json()) for a in alerts)
    outbox.close()


def truncate(path: Path) -> None:
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)


def garble(path: Path) -> None:
    """One page in the middle (never page 1) overwritten with noise."""
    pages = path.stat().st_size // PAGE
    assert pages >= 4, f"{path} too small to garble a middle page"
    rng = random.Random(13)
    with path.open("r+b") as f:
        f.seek((pages // 2) * PAGE)
        f.write(rng.randbytes(PAGE))


DAMAGE: dict[str, Callable[[Path], None]] = {"truncated": truncate, "garbled": garble}


@pytest.mark.parametrize("how", sorted(DAMAGE))
@pytest.mark.parametrize("name", ["spool.sqlite3", "state.sqlite3", "history.sqlite3",
                                  "outbox.sqlite3"])
async def test_a_damaged_file_is_set_aside_and_the_gateway_starts(
        tmp_path: Path, name: str, how: str, caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(tmp_path)
    make_files(cfg.data_dir)
    path = cfg.data_dir / name
    DAMAGE[how](path)
    assert check(path) is not None, "the damage must be one SQLite sees"
    # doctor, before the gateway starts: the file, what is wrong, what to do.
    (found,) = [r for r in check_files(cfg) if r.name == name]
    assert found.verdict == "FAIL"
    assert "damaged" in found.found
    assert "restart the gateway" in found.fix

    with caplog.at_level(logging.INFO):
        async with Gateway(cfg) as gw:
            status = gw.status()
            (notice,) = status.disk.notices
            aside = cfg.data_dir / str(notice.set_aside_as)
            assert aside.exists()
            assert check(path) is None  # a fresh, healthy file in its place
            lines = [r.getMessage() for r in caplog.records
                     if r.getMessage().startswith("damaged file")]
            assert len(lines) == 1
            assert str(path) in lines[0]
            assert aside.name in lines[0]
            if name == "history.sqlite3":
                assert notice.action == "set_aside"
                assert gw.history is not None
                assert gw.history.statistics()["rows"] == 0
            elif name == "outbox.sqlite3":
                # The alerts not yet sent that could still be read go out after all.
                assert notice.action == "salvaged"
                rows = gw.outbox.count()
                assert rows is not None
                share = 0.4 if how == "truncated" else 0.8
                assert share * ALERTS <= rows < ALERTS
                assert notice.salvaged == rows
                assert gw.alerter.statistics().targets[0].pending == rows
            elif name == "spool.sqlite3":
                assert notice.action == "salvaged"
                share = 0.4 if how == "truncated" else 0.9
                assert share * SPOOL_ROWS <= notice.salvaged < SPOOL_ROWS
                assert gw.spool.rows == notice.salvaged
                assert notice.lost is not None
                assert notice.lost > 0
                assert f"rows={notice.salvaged}" in lines[0]
                kept = [r[1] for r in gw.spool.db.fetch(SPOOL_ROWS)]
                assert set(kept) <= {line(i) for i in range(SPOOL_ROWS)}
                assert kept == sorted(kept, key=lambda s: int(s.rsplit(" ", 1)[1]))
            else:
                assert notice.action == "salvaged"
                outages = gw.registry.outages(limit=10_000)
                share = 0.3 if how == "truncated" else 0.8
                assert share * OUTAGES <= len(outages) <= OUTAGES
                # Devices come back from the config whatever was lost.
                gw.liveness.start()
                assert "polder-1" in gw.liveness.devices
                gw.liveness.stop()
            assert gw.acknowledge_disk_notice(notice.id)
            assert gw.status().disk.notices == []
            assert not gw.acknowledge_disk_notice(notice.id + 100)
    # doctor after the start: the fresh file is intact, the notice acknowledged.
    assert all(r.verdict == "OK" for r in check_files(cfg))


async def test_an_unacknowledged_notice_survives_a_restart_and_doctor_names_it(
        tmp_path: Path) -> None:
    cfg = config(tmp_path)
    make_files(cfg.data_dir)
    garble(cfg.data_dir / "spool.sqlite3")
    async with Gateway(cfg) as gw:
        (notice,) = gw.status().disk.notices
    async with Gateway(cfg) as gw:
        assert [n.id for n in gw.status().disk.notices] == [notice.id]
        files = check_files(cfg)
        (warn,) = [r for r in files if r.verdict != "OK"]
        assert warn.verdict == "WARN"
        assert str(notice.set_aside_as) in warn.found
        assert gw.acknowledge_disk_notice(notice.id)
    async with Gateway(cfg) as gw:
        assert gw.status().disk.notices == []


def test_set_aside_keeps_two_copies_at_most(tmp_path: Path) -> None:
    from datetime import UTC, datetime
    path = tmp_path / "spool.sqlite3"
    for minute in range(4):
        with contextlib.closing(sqlite3.connect(path)) as db:
            db.execute("CREATE TABLE t (x)")
        (tmp_path / "spool.sqlite3-wal").write_bytes(b"")
        aside = set_aside(path, now=datetime(2026, 12, 3, 10, minute, tzinfo=UTC))
        assert aside.exists()
        assert not path.exists()
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["spool.sqlite3.damaged-20261203T100200Z",
                    "spool.sqlite3.damaged-20261203T100200Z-wal",
                    "spool.sqlite3.damaged-20261203T100300Z",
                    "spool.sqlite3.damaged-20261203T100300Z-wal"]


def test_salvage_skips_a_damaged_page_and_reads_on_after_it(tmp_path: Path) -> None:
    source = tmp_path / "s.db"
    spool = SpoolDB(source, max_bytes=10**9)
    spool.append([line(i) for i in range(SPOOL_ROWS)])
    spool.close()
    garble(source)
    target_path = tmp_path / "fresh.db"
    fresh = SpoolDB(target_path, max_bytes=10**9)
    (result,) = salvage(source, fresh._db, ["spool"])
    assert result.error is not None
    assert result.lost is not None
    assert 0 < result.lost < SPOOL_ROWS // 10
    assert result.copied + result.lost == SPOOL_ROWS
    ids = [r[0] for r in fresh.fetch(SPOOL_ROWS)]
    assert ids[-1] == SPOOL_ROWS  # rows after the damaged page are there
    fresh.close()


def test_salvage_of_a_file_that_is_not_a_database_copies_nothing(tmp_path: Path) -> None:
    source = tmp_path / "s.db"
    source.write_bytes(random.Random(5).randbytes(8 * PAGE))
    assert check(source) is not None
    fresh = SpoolDB(tmp_path / "fresh.db", max_bytes=10**9)
    results = salvage(source, fresh._db, ["spool", "held"])
    assert [(r.table, r.copied) for r in results] == [("spool", 0), ("held", 0)]
    assert all(r.error for r in results)
    fresh.close()


def test_a_folder_in_place_of_a_file_is_not_damage(tmp_path: Path) -> None:
    (tmp_path / "state.sqlite3").mkdir()
    assert check(tmp_path / "state.sqlite3") is None
    assert check(tmp_path / "absent.sqlite3") is None
