"""/metrics as Prometheus's own linter sees it (issue 14, part 6): ``promtool check metrics``
(from Debian's prometheus package; ./dev takes the binary out of the package) on a scrape of
the real gateway process with devices in every state, the SD card, alerts and discovery."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import (
    OPERATOR,
    GatewayProcess,
    Publisher,
    base_config,
    debian_binary,
    wait_for,
)

ROOT = Path(__file__).resolve().parent.parent
SITE = "taman-uji"


def promtool() -> str:
    return debian_binary("promtool", "promtool", "prometheus")


def test_the_metrics_pass_promtool(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher],
) -> None:
    tool = promtool()
    cfg = base_config(
        tmp_path, mosquitto, influx_server, db_name,
        devices=[{"id": "polder-1", "kind": "polder", "interval_s": 60},
                 {"id": "ap-1", "kind": "wifi_ap", "interval_s": 1},
                 {"id": "ap-2", "kind": "wifi_ap", "interval_s": 60}],
        liveness={"missed_intervals": 2, "hold_s": 0},
        polder=[{"device": "polder-1", "field": "level_cm",
                 "thresholds": {"waspada": 150, "siaga": 200, "awas": 250}}],
        alerts={"targets": [{"kind": "webhook", "name": "it", "url": "http://127.0.0.1:9/h"}]})
    gw = gateway_factory(cfg)
    pub = publisher_factory(mosquitto.port)
    for device in ("polder-1", "ap-1", "stray-9"):
        pub.publish(f"garden/{SITE}/{device}/telemetry", {"level_cm": 1.5, "clients": 2})
    pub.publish(f"garden/{SITE}/polder-1/telemetry", b"{not json")

    def scraped() -> str:
        return httpx.get(f"{gw.api}/metrics", headers=OPERATOR, timeout=5).text

    wait_for(lambda: 'state="offline"} 1' in scraped(), timeout=20, what="ap-1 offline")
    text = scraped()
    assert "garden_gateway_disk_state" in text
    assert "garden_gateway_discovered_devices" in text
    assert 'garden_gateway_polder_readings_total{polder="polder-1",verdict="ok"} 1' in text
    # Counts since start are counters, also in the sections the parts add themselves.
    for family in ("events_sent", "events_published", "history_flushes", "clock_held"):
        assert f"# TYPE garden_gateway_{family}_total counter\n" in text, family
        assert f"# TYPE garden_gateway_{family} gauge" not in text, family
    # Every HELP line says what the number is (no fallback "from the ... statistics").
    assert [ln for ln in text.splitlines() if ln.startswith("# HELP") and "statistics)." in ln
            ] == []
    done = subprocess.run([tool, "check", "metrics"], input=text, capture_output=True,
                          text=True, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (0, ""), done.stderr
    assert done.stderr == ""
