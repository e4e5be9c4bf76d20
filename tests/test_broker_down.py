"""Not seen is not down (issue 14, part 1): while the gateway's own link to the park's broker is
down, the devices it hears through the broker are ``unmonitored`` (cause ``broker_down``), not
offline: no outage against them, no alert each; the broker has the outage and the one alert, and
the residents' Wi-Fi word says "not monitored", never "Mati".

The real gateway process and a private Mosquitto that the test stops and starts again.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import OPERATOR, GatewayProcess, Publisher, base_config, wait_for

SITE = "taman-uji"
APS = ("ap-1", "ap-2", "ap-3")


def get(gw: GatewayProcess, path: str, **params: Any) -> Any:
    answer = httpx.get(f"{gw.api}{path}", params=params, headers=OPERATOR, timeout=5)
    answer.raise_for_status()
    return answer.json()


def states(gw: GatewayProcess) -> dict[str, tuple[str, str | None]]:
    return {d["id"]: (d["state"], d["cause"]) for d in get(gw, "/api/v1/devices")}


def test_a_stopped_broker_makes_its_devices_unmonitored_not_offline(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher],
) -> None:
    cfg = base_config(
        tmp_path, mosquitto, influx_server, db_name,
        # Offline after 2 s of silence: were silence taken for "down", it would show at once.
        devices=[{"id": "polder-1", "kind": "polder", "interval_s": 1},
                 *({"id": ap, "kind": "wifi_ap", "interval_s": 1} for ap in APS)],
        liveness={"missed_intervals": 2, "hold_s": 0},
        alerts={"down_after_s": 300,
                "targets": [{"kind": "webhook", "name": "it", "url": "http://127.0.0.1:9/h"}]})
    gw = gateway_factory(cfg)
    pub = publisher_factory(mosquitto.port)
    for device in ("polder-1", *APS):
        pub.publish(f"garden/{SITE}/{device}/telemetry", {"level_cm": 120, "clients": 3})
    wait_for(lambda: all(s == "online" for s, _ in states(gw).values()
                         if s != "unknown") and len(states(gw)) >= 5, timeout=20,
             what="every device online")
    wait_for(lambda: get(gw, "/api/v1/resident")["wifi"]["status"] == "normal", timeout=10,
             what="the residents' Wi-Fi word normal")
    pub.close()

    mosquitto.stop()
    wait_for(lambda: all(states(gw)[d] == ("unmonitored", "broker_down")
                         for d in ("polder-1", *APS)), timeout=20,
             what="the broker's devices unmonitored")
    assert states(gw)["gw-test"][0] == "online"  # the gateway itself is not behind the broker
    ap1 = next(d for d in get(gw, "/api/v1/devices") if d["id"] == "ap-1")
    assert ap1["since"].endswith("Z")  # ISO 8601 beside since_ns
    resident = get(gw, "/api/v1/resident")
    assert resident["wifi"]["status"] == "unmonitored"
    # Longer than their offline threshold, still unmonitored: silence is not taken for down.
    wait_for(lambda: get(gw, "/api/v1/status")["mqtt"]["connects"] >= 1
             and get(gw, "/api/v1/status")["gateway"]["uptime_s"] > 6, timeout=20,
             what="past the devices' offline threshold")
    assert all(states(gw)[d][0] == "unmonitored" for d in ("polder-1", *APS))
    # No outage against a device; the broker's own, ongoing.
    for device in ("polder-1", *APS):
        assert get(gw, "/api/v1/outages", device=device) == []
    (broker,) = get(gw, "/api/v1/outages", device="broker")
    assert broker["end_ns"] is None
    assert broker["cause"] == "broker_down"
    assert get(gw, "/api/v1/status")["alerts"]["waiting"] == 1  # the broker's, not one each
    metrics = httpx.get(f"{gw.api}/metrics", headers=OPERATOR, timeout=5).text
    assert 'garden_gateway_device_state{device="ap-1",kind="wifi_ap",site="taman-uji",' \
           'state="unmonitored"} 1' in metrics

    mosquitto.start()
    wait_for(lambda: get(gw, "/api/v1/status")["mqtt"]["state"] == "connected", timeout=30,
             what="the gateway back on the broker")
    pub = publisher_factory(mosquitto.port)
    for device in ("polder-1", *APS):
        pub.publish(f"garden/{SITE}/{device}/telemetry", {"level_cm": 121, "clients": 4})
    wait_for(lambda: all(states(gw)[d][0] == "online" for d in ("polder-1", *APS)),
             timeout=20, what="the devices online again")
    (broker,) = get(gw, "/api/v1/outages", device="broker")
    assert broker["end_ns"] is not None
    for device in ("polder-1", *APS):
        assert get(gw, "/api/v1/outages", device=device) == []
    assert get(gw, "/api/v1/status")["alerts"]["waiting"] == 0
    assert get(gw, "/api/v1/resident")["wifi"]["status"] == "normal"
