"""VictoriaMetrics as the central store (issue 17, part 5b): Debian's victoria-metrics 1.79 (the
binary taken out of its package by ./dev), run with deduplication, takes the gateway's line
protocol on /write; what the regency needs reads back exactly once, with our tags, numbers only.

What it does to the line protocol, seen here and said in docs/operator.md: a ``db`` label is
added, string fields are stored as 0 (so every field the regency reads is a number too:
``device_status.state_code``, ``polder_status.alert_level_index``), times are kept to the
millisecond, duplicates stay unless ``-dedup.minScrapeInterval`` is set, and /write answers 204
even for lines it drops."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from gateway.config import validate_raw
from gateway.ops.doctor.influx import check_influx
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, free_port
from tests.conftest import GatewayProcess, Publisher, base_config, debian_binary, wait_for

ROOT = Path(__file__).resolve().parent.parent
SITE = "taman-uji"


def binary() -> str:
    return debian_binary("victoria-metrics", "victoria-metrics", "victoria-metrics")


@pytest.fixture
def victoria(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    log = (tmp_path / "victoria.log").open("wb")
    proc = subprocess.Popen(
        [binary(), f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={tmp_path / 'vm'}",
         "-dedup.minScrapeInterval=1ms"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert proc.poll() is None, (tmp_path / "victoria.log").read_text()
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, timeout=20, what="victoria-metrics ready")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def export(url: str, match: str) -> list[dict[str, Any]]:
    httpx.get(f"{url}/internal/force_flush", timeout=5)
    response = httpx.get(f"{url}/api/v1/export", params={"match[]": match}, timeout=5)
    response.raise_for_status()
    return [orjson.loads(line) for line in response.content.splitlines() if line.strip()]


def test_readings_and_device_status_reach_victoria_metrics_once_with_our_tags(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    victoria: str, gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher],
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      devices=[{"id": "polder-1", "kind": "polder", "interval_s": 60}],
                      liveness={"report_interval_s": 3600})
    cfg["influx"] = {**cfg["influx"], "url": victoria, "database": "garden",
                     "create_database": False}
    gw = gateway_factory(cfg)
    pub = publisher_factory(mosquitto.port)
    # The device's own times, a second apart: VictoriaMetrics keeps milliseconds, so readings
    # stamped within one millisecond would be one (seen: 20 quick receive stamps made 5).
    start_ms = time.time_ns() // 10**6 - 60_000
    for _ in range(2):  # and the same readings again (a redelivery, a replay after a crash)
        for i in range(20):
            pub.publish(f"garden/{SITE}/polder-1/telemetry",
                        {"level_cm": 150 + i, "ts": start_ms + 1000 * i})
    # All 40 lines delivered (VictoriaMetrics answered 204 to each batch); deduplication keeps
    # one of each reading.
    wait_for(lambda: gw.status()["counts"]["written"] >= 40, timeout=30,
             what="40 readings written")
    levels = 'polder_level_cm{device="polder-1"}'
    wait_for(lambda: sum(len(s["values"]) for s in export(victoria, levels)) >= 20,
             timeout=30, what="the readings in VictoriaMetrics")
    (series,) = export(victoria, levels)
    assert series["metric"] == {"__name__": "polder_level_cm", "db": "garden",
                                "device": "polder-1", "gateway": "gw-test", "site": SITE}
    assert series["values"] == [150.0 + i for i in range(20)]
    assert series["timestamps"] == [start_ms + 1000 * i for i in range(20)]
    # device_status: the state as a number the store keeps (its text became 0).
    # The state at start ("unknown", 0) and the transition to online may arrive in two
    # batches: wait for the online one.
    def online() -> bool:
        got = export(victoria, 'device_status_state_code{device="polder-1"}')
        return bool(got) and got[0]["values"][-1] == 1.0
    wait_for(online, timeout=30, what="device_status online in VictoriaMetrics")
    (code,) = export(victoria, 'device_status_state_code{device="polder-1"}')
    assert code["values"][-1] == 1.0  # online
    assert code["metric"]["kind"] == "polder"
    (text,) = export(victoria, 'device_status_state{device="polder-1"}')
    assert set(text["values"]) == {0.0}  # what VictoriaMetrics makes of a string field


def test_doctor_writes_a_canary_to_victoria_metrics_and_reads_it_back(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    victoria: str,
) -> None:
    raw = base_config(tmp_path, mosquitto, influx_server, db_name)
    raw["influx"] = {**raw["influx"], "url": victoria, "database": "garden",
                     "create_database": False}
    cfg = validate_raw(raw, env={}, base=tmp_path).config
    (result,) = check_influx(cfg, timeout_s=5)
    assert (result.verdict, result.name) == ("OK", f"influx {victoria}")
    assert "canary point (garden_doctor_canary) written and read back" in result.found
    (series,) = export(victoria, 'garden_doctor_canary_value{gateway="gw-test"}')
    assert len(series["values"]) == 1
