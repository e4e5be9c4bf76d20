"""The composition root: files closed whatever ends the run, and views that agree.

Both tests failed before the layout change: the cleanup after the TaskGroup was not in a
``finally`` (a failed task left the spool, state and history open), and the site's view
counted access points as ``kind == "wifi_ap"`` whatever ``wifi.kind`` said.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from gateway.app.gateway import Gateway
from gateway.config import validate_raw
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import Publisher, base_config, gateway_in_process, until

FILES = ("spool.sqlite3", "state.sqlite3", "history.sqlite3")


def _wal_files(data_dir: Path) -> list[str]:
    # SQLite removes a WAL file when the last connection to its database closes.
    return sorted(p.name for p in data_dir.glob("*.sqlite3-wal"))


async def test_a_failed_task_still_closes_every_file(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name)
    config = validate_raw(json.loads(json.dumps(cfg)), env={}, base=tmp_path).config
    data_dir = config.data_dir

    async def card_gone() -> None:
        raise OSError(5, "Input/output error")

    async def run_until_a_task_fails() -> None:
        async with Gateway(config) as gateway:
            assert _wal_files(data_dir), "the files are open while the gateway runs"
            gateway.wifi.run = card_gone  # type: ignore[method-assign]
            await gateway.run(asyncio.Event())

    with pytest.raises(ExceptionGroup) as failed:
        await run_until_a_task_fails()
    assert failed.group_contains(OSError)
    assert {p.name for p in data_dir.iterdir()} >= set(FILES)
    assert _wal_files(data_dir) == []


async def test_a_start_that_fails_closes_what_it_opened(tmp_path: Path) -> None:
    cfg: dict[str, Any] = {
        "data_dir": str(tmp_path / "data"), "gateway": {"id": "gw-test", "site": "taman-uji"},
        "mqtt": {"host": "127.0.0.1", "port": 1}, "influx": {"url": "http://127.0.0.1:1"},
        "clock": {"require_sync": "no"}}
    config = validate_raw(cfg, env={}, base=tmp_path).config
    # The state file is a folder: the spool opens, the registry cannot.
    config.data_dir.mkdir(parents=True)
    (config.data_dir / "state.sqlite3").mkdir()
    with pytest.raises(sqlite3.OperationalError):
        async with Gateway(config):
            raise AssertionError("the gateway should not have started")
    assert _wal_files(config.data_dir) == []


async def test_the_site_counts_access_points_of_the_configured_kind(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    site = "taman-uji"
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name, wifi={"kind": "ap"},
                      devices=[{"id": "ap-1", "kind": "ap", "site": site},
                               {"id": "polder-1", "kind": "polder", "site": site}])
    pub: Publisher = publisher_factory(mosquitto.port)
    async with gateway_in_process(tmp_path, cfg) as gw:
        pub.publish(f"garden/{site}/ap-1/telemetry", {"stations": 3})
        pub.publish(f"garden/{site}/polder-1/telemetry", {"level_cm": 120.0})
        await until(lambda: all(d.state == "online" for d in gw.liveness.devices.values()
                                if d.id in ("ap-1", "polder-1")))
        view = (await gw.http.get(f"/api/v1/sites/{site}")).json()
        resident = (await gw.http.get("/api/v1/resident")).json()
        assert view["aps"] == {"up": 1, "down": 0, "unknown": 0, "unmonitored": 0, "total": 1}
        assert view["sensors"]["total"] == 1
        assert resident["wifi"]["aps_total"] == view["aps"]["total"] == 1
