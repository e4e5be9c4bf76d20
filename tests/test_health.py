"""gateway_health: the gateway's own state as a point, written through the spool."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from gateway.core.status import Status
from gateway.park.health import health_point
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import base_config, gateway_in_process, until
from tests.test_metrics import status

NOW = 1_800_000_000 * 10**9


def test_the_point_carries_spool_traffic_connections_and_errors() -> None:
    line = health_point(Status.model_validate(status()), now_ns=NOW, rss_bytes=70_000_000)
    head, fields, stamp = line.split(" ")
    assert head == "gateway_health,device=gw-taman-01,gateway=gw-taman-01,site=taman-suropati"
    assert int(stamp) == NOW
    values = dict(f.split("=", 1) for f in fields.split(","))
    assert values["spool_rows"] == "42i"
    assert values["written"] == "1180i"
    assert values["mqtt_connected"] == "true"
    assert values["influx_state"] == '"backoff"'
    assert values["serial_errors"] == "5i"  # overlong 1 + checksum 4
    assert values["modbus_errors"] == "9i"  # port_gone 1 + slaves' timeouts 7 and crc 1
    assert values["rss_bytes"] == "70000000i"
    assert "oldest_unsent_age_s" not in values  # unknown, not zero


def test_influxdb_reads_the_point_back_with_its_types(
    influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    influx_server.create_database(db_name)
    line = health_point(Status.model_validate(
        status(spool={**status()["spool"], "oldest_unsent_age_s": 12.5})),
                        now_ns=NOW)
    written = httpx.post(f"{influx_server.url}/write", params={"db": db_name},
                         content=line.encode(), timeout=5)
    assert written.status_code == 204, written.text
    [point] = influx_server.points(db_name, "SELECT * FROM gateway_health")
    assert point["oldest_unsent_age_s"] == 12.5
    assert point["rss_bytes"] > 10_000_000  # this process's own resident memory
    assert point["mqtt_state"] == "connected"


async def test_the_running_gateway_writes_its_health_at_the_report_rate(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    clock = FakeClock(time.time_ns())
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      liveness={"report_interval_s": 60})
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        await until(lambda: clock.sleepers > 0)
        before = gw.status().counts.own_points
        clock.advance(60)
        # Its own points (device_status, gateway_health) committed, then all sent.
        await until(lambda: gw.status().counts.own_points > before)
        await until(lambda: gw.spool.rows == 0, 20)
        status = (await gw.http.get("/api/v1/status")).json()
        assert status["watchdog"]["alive"] is True
    [point] = influx_server.points(db_name, "SELECT * FROM gateway_health")
    assert point["gateway"] == "gw-test"
    assert point["mqtt_connected"] is True
    assert point["time"] == clock.now_ns()
