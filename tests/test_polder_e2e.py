"""Flood early warning end to end (issue 16): the real gateway process, the real Mosquitto and
InfluxDB, a real HTTP receiver for the webhook.

A polder level published over MQTT rises through Waspada and Siaga: the webhook gets each level
with its id, trend, time to the next level and the park's phones; ``GET /api/v1/polder`` and
the residents' view follow; the raw readings reach InfluxDB unchanged beside their own
``polder_status`` verdicts. A sensor gone out of range is said so, and never moves the level.
And the crash: an alert committed while its target refuses, the gateway killed (SIGKILL: a
crash, not a power cut), started again: the alert arrives once, with the same id."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import OPERATOR, GatewayProcess, Publisher, base_config, wait_for

SITE = "taman-uji"
TOPIC = f"garden/{SITE}/polder-1/telemetry"


class Hook:
    """A webhook receiver on 127.0.0.1 in a thread: records bodies, answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.status = 200
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                size = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(size))
                status = hook.status
                if status == 200:
                    hook.bodies.append(body)
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self, kind: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b.get("event") == kind]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook()
    yield h
    h.close()


def config(tmp_path: Path, mosquitto: PrivateMosquitto, influx: PrivateInfluxDB, db: str,
           hook: Hook) -> dict[str, Any]:
    return base_config(
        tmp_path, mosquitto, influx, db,
        devices=[{"id": "polder-1", "kind": "polder", "interval_s": 60},
                 {"id": "ap-1", "kind": "wifi_ap", "interval_s": 60}],
        polder=[{"device": "polder-1", "field": "level_cm", "name": "Bukit Pelangi",
                 "thresholds": {"waspada": 150, "siaga": 200, "awas": 250},
                 "sensor_min": 0, "sensor_max": 500, "interval_s": 60,
                 "max_rate_per_h": 1000, "rise_alert_per_h": 100000}],
        alerts={"down_after_s": 3600, "backoff_min_s": 0.2, "backoff_max_s": 0.5,
                "targets": [{"kind": "webhook", "name": "it", "url": hook.url}]})


def polder_api(gw: GatewayProcess, *, operator: bool) -> dict[str, Any]:
    response = httpx.get(f"{gw.api}/api/v1/polder", timeout=5,
                         headers=OPERATOR if operator else {})
    response.raise_for_status()
    body: dict[str, Any] = response.json()["polders"][0]
    return body


def test_a_rising_polder_alerts_each_level_and_every_page_follows(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], hook: Hook,
) -> None:
    influx_server.create_database(db_name)
    gw = gateway_factory(config(tmp_path, mosquitto, influx_server, db_name, hook))
    pub = publisher_factory(mosquitto.port)
    pub.publish(f"garden/{SITE}/ap-1/telemetry", {"clients": 37})
    # A storm an hour long in a few seconds: the readings carry their own times, 5 min apart.
    t0 = gw_time(gw) - 3600 * 10**9
    levels = [120 + 10 * i for i in range(10)]          # 120 .. 210 cm, 120 cm/h
    for i, level in enumerate(levels):
        pub.publish(TOPIC, {"level_cm": level, "ts": (t0 + i * 300 * 10**9) // 10**6})
    wait_for(lambda: len(hook.events("polder_level")) >= 2, timeout=20, what="two levels")
    waspada, siaga = hook.events("polder_level")[:2]
    assert (waspada["previous_alert_level"], waspada["alert_level"]) == ("normal", "waspada")
    assert (siaga["previous_alert_level"], siaga["alert_level"]) == ("waspada", "siaga")
    assert siaga["level"] == 200
    assert siaga["unit"] == "cm"
    assert siaga["trend_per_h"] == pytest.approx(120, rel=0.01)
    assert siaga["next_level"] == "awas"
    assert siaga["eta_next_s"] == pytest.approx(50 / 120 * 3600, rel=0.02)
    assert siaga["wifi_clients"] == 37
    assert siaga["text"].startswith("🟠 SIAGA: Polder Bukit Pelangi 200 cm, naik 120 cm/jam")
    assert "37 ponsel terhubung di taman" in siaga["text"]
    assert len({waspada["id"], siaga["id"]}) == 2
    public = polder_api(gw, operator=False)
    assert (public["alert_level"], public["level"], public["quality"]) == ("siaga", 210, "ok")
    assert public["eta_next_s"] is not None
    assert "device" not in public
    assert "thresholds" not in public
    operator = polder_api(gw, operator=True)
    assert (operator["device"], operator["sensor_fault"]) == ("polder-1", False)
    resident = httpx.get(f"{gw.api}/api/v1/resident", timeout=5).json()["polder"]
    assert (resident["level"], resident["value"], resident["next_level"]) == (
        "siaga", 210, "awas")

    # The sensor goes out of its range: said once, the level stays, no number is shown.
    for i in range(2):
        pub.publish(TOPIC, {"level_cm": 900, "ts": (t0 + (10 + i) * 300 * 10**9) // 10**6})
    wait_for(lambda: hook.events("polder_sensor_fault"), timeout=20, what="the fault")
    (fault,) = hook.events("polder_sensor_fault")
    assert (fault["reason"], fault["alert_level"]) == ("range", "siaga")
    assert "tidak dapat dipercaya" in fault["text"]
    resident = httpx.get(f"{gw.api}/api/v1/resident", timeout=5).json()["polder"]
    assert (resident["sensor_fault"], resident["value"], resident["level"]) == (
        True, None, "unknown")
    assert len(hook.events("polder_level")) == 2                # 900 cm moved nothing

    # Raw readings delivered untouched; the verdicts beside them as their own series.
    wait_for(lambda: influx_server.count(db_name, "polder_status", "reading") == 12,
             timeout=20, what="12 polder_status points")
    raw = influx_server.points(db_name, 'SELECT "level_cm" FROM "polder" ORDER BY time')
    assert [p["level_cm"] for p in raw] == [*levels, 900, 900]
    verdicts = influx_server.points(
        db_name, 'SELECT "quality", "alert_level" FROM "polder_status" ORDER BY time')
    assert [v["quality"] for v in verdicts] == ["ok"] * 10 + ["range", "range"]
    assert verdicts[9]["alert_level"] == "siaga"


def test_an_alert_committed_before_a_crash_is_sent_once_after_the_restart(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], hook: Hook,
) -> None:
    hook.status = 503                                   # the target refuses for now
    cfg = config(tmp_path, mosquitto, influx_server, db_name, hook)
    gw = gateway_factory(cfg)
    pub = publisher_factory(mosquitto.port)
    pub.publish(TOPIC, {"level_cm": 160})
    outbox = Path(cfg["data_dir"]) / "outbox.sqlite3"
    wait_for(lambda: gw.status()["alerts"]["targets"][0]["retries"] >= 1, timeout=20,
             what="the alert refused once")
    assert gw.status()["alerts"]["outbox_rows"] == 1
    gw.kill()                                           # SIGKILL: a crash
    assert outbox.exists()
    hook.status = 200
    again = gateway_factory(cfg)
    wait_for(lambda: hook.events("polder_level"), timeout=20, what="the alert after restart")
    wait_for(lambda: again.status()["alerts"]["outbox_rows"] == 0, timeout=10,
             what="the outbox settled")
    (sent,) = hook.events("polder_level")
    assert sent["alert_level"] == "waspada"
    assert "1 message(s) from the outbox queued again after the restart" in again.log()


def gw_time(gw: GatewayProcess) -> int:
    body: dict[str, Any] = httpx.get(f"{gw.api}/api/v1/resident", timeout=5).json()
    return int(body["time_ns"])
