"""The park's summary on MQTT (issue 17, part 1): one retained, versioned message per park on
garden/<site>/summary, published when the park changes and at least every report interval,
against the real Mosquitto and gateway process; its schema is the documented one, with nothing
personal in it."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gateway.core.status import ParkSummary
from gateway.park.summary import SummaryPublisher
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import GatewayProcess, Publisher, Watcher, base_config, wait_for

SITE = "taman-uji"
TOPIC = f"garden/{SITE}/summary"
T0 = 1_800_000_000 * 10**9
MAC = re.compile(r"(?i)([0-9a-f]{2}[:-]){5}[0-9a-f]{2}")


def test_the_summary_is_retained_follows_the_park_and_says_nothing_personal(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher],
) -> None:
    cfg = base_config(
        tmp_path, mosquitto, influx_server, db_name,
        devices=[{"id": "polder-1", "kind": "polder", "interval_s": 60},
                 {"id": "ap-1", "kind": "wifi_ap", "interval_s": 1},
                 {"id": "ap-2", "kind": "wifi_ap", "interval_s": 60}],
        liveness={"missed_intervals": 2, "hold_s": 0, "summary_min_interval_s": 1,
                  "report_interval_s": 3600},
        polder=[{"device": "polder-1", "field": "level_cm", "name": "Bukit Pelangi",
                 "thresholds": {"waspada": 150, "siaga": 200, "awas": 250}}])
    gateway_factory(cfg)
    watcher = Watcher(mosquitto.port, TOPIC, client_id="regency-1")
    pub = publisher_factory(mosquitto.port)
    try:
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 182.5})
        pub.publish(f"garden/{SITE}/ap-1/telemetry", {"clients": 1})
        pub.publish(f"garden/{SITE}/ap-2/telemetry",
                    {"clients": 4, "client_mac": "aa:bb:cc:dd:ee:ff"})

        def summary() -> dict[str, Any]:
            body: dict[str, Any] = json.loads(watcher.last.get(TOPIC, b"{}"))
            return body

        wait_for(lambda: (summary().get("polder") or [{}])[0].get("level") == 182.5,
                 timeout=20, what="a summary with the polder's level")
        first = summary()
        ParkSummary.model_validate(first)            # the documented shape
        assert first["schema"] == 1
        assert first["site"] == SITE
        assert first["gateway"]["id"] == "gw-test"
        assert first["polder"][0]["alert_level"] == "waspada"
        assert first["devices"]["polder"]["up"] == 1
        assert first["clock_synced"] is True
        assert MAC.search(json.dumps(first)) is None
        # ap-1 falls silent: offline after two of its intervals; the summary follows in
        # about a second (summary_min_interval_s), with the open outage.
        wait_for(lambda: summary()["devices"].get("wifi_ap", {}).get("down") == 1,
                 timeout=20, what="ap-1 down in the summary")
        later = summary()
        assert [o["device"] for o in later["outages"]] == ["ap-1"]
        assert later["outages_open"] == 1
        assert later["devices"]["wifi_ap"] == {"up": 1, "down": 1, "unknown": 0,
                                               "unmonitored": 0, "total": 2}
        assert later["uptime_pct"]["ap-2"]["24h"] == 100.0
        assert later["wifi"]["clients_now"] == 4
    finally:
        watcher.close()
    # Retained: a regency service that connects later gets the latest at once.
    late = Watcher(mosquitto.port, TOPIC, client_id="regency-2")
    try:
        wait_for(lambda: TOPIC in late.last, timeout=10, what="the retained summary")
        assert late.retained[TOPIC] is True
        assert json.loads(late.last[TOPIC])["outages_open"] == 1
    finally:
        late.close()


def test_published_on_change_at_most_every_min_interval_and_at_least_every_report_interval(
) -> None:
    clock = FakeClock(T0)
    sent: list[dict[str, Any]] = []
    state = {"up": 1}

    def build() -> ParkSummary:
        return ParkSummary.model_validate({
            "site": SITE, "time_ns": clock.now_ns(), "clock_synced": True,
            "gateway": {"id": "gw", "version": "x", "state": "online",
                        "uptime_s": clock.now_ns() / 1e9},
            "devices": {"wifi_ap": {"up": state["up"], "down": 1 - state["up"], "unknown": 0,
                                    "total": 1}},
            "outages": [], "outages_open": 0, "uptime_pct": {},
            "wifi": {"clients_now": None, "distinct_today": None}, "polder": [],
            "spool": {"rows": 0, "oldest_unsent_age_s": None}})

    def publish(topic: str, payload: bytes) -> bool:
        assert topic == TOPIC
        sent.append(json.loads(payload))
        return True

    pub = SummaryPublisher(site=SITE, build=build, publish=publish, clock=clock,
                           min_interval_s=5, every_s=60)
    pub.tick()
    assert len(sent) == 1                      # the first at once
    clock.advance(1)
    pub.tick()
    assert len(sent) == 1                      # unchanged (its uptime and time move: ignored)
    state["up"] = 0
    pub.tick()
    assert len(sent) == 1                      # changed, but within min_interval_s
    clock.advance(4)
    pub.tick()
    assert len(sent) == 2                      # changed, 5 s after the last
    assert sent[-1]["devices"]["wifi_ap"]["down"] == 1
    clock.advance(59)
    pub.tick()
    assert len(sent) == 2                      # quiet park, not yet due
    clock.advance(1)
    pub.tick()
    assert len(sent) == 3                      # due: every report interval even unchanged
    pub.republish()                            # a reconnection
    pub.tick()
    assert len(sent) == 4
