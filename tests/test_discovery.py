"""Discovered devices are bounded: a cap with the least recently heard giving way, a rate of
new ids a minute, forgetting after silence or by an operator (DELETE /api/v1/devices/{id}),
the device list paginated and filtered. The table itself with a FakeClock; the gateway in
process with the real broker and InfluxDB, time moved by the FakeClock. The same flood against
the real gateway process (memory, log lines): tests/test_flood.py."""

from __future__ import annotations

import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from devices.formats import FORMATS
from devices.native import Options as NativeOptions
from gateway.config import DeviceConfig
from gateway.park.discovery import Discovery
from gateway.pipeline import Pipeline
from gateway.pipeline.ingest import REFUSED_KEPT_PER_MINUTE, Route
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import Publisher, Watcher, base_config, gateway_in_process, until

SITE = "taman-uji"


def table(clock: FakeClock, *, limit: int = 300, per_minute: float = 60.0,
          forget_after_s: float = 7 * 86400.0) -> tuple[Discovery, list[tuple[str, str]]]:
    discovery = Discovery(limit=limit, per_minute=per_minute, forget_after_s=forget_after_s,
                          clock=clock)
    forgotten: list[tuple[str, str]] = []
    discovery.on_forget.append(lambda device, why: forgotten.append((device, why)))
    return discovery, forgotten


# -- the table ---------------------------------------------------------------------------


def test_new_ids_beyond_the_rate_are_refused_until_the_bucket_refills() -> None:
    clock = FakeClock()
    discovery, _ = table(clock, per_minute=60)
    assert [discovery.admit(f"x{i}") for i in range(60)] == [None] * 60
    assert discovery.admit("x60") == "rate"
    assert discovery.admit("x0") is None  # known ids are not new: no token needed
    clock.advance(0.5)
    assert discovery.admit("x61") == "rate"
    clock.advance(0.5)  # one token a second at 60 a minute
    assert discovery.admit("x61") is None
    assert discovery.admit("x62") == "rate"
    assert (len(discovery), discovery.admitted, discovery.refused["rate"]) == (61, 61, 3)
    clock.advance(3600)  # the bucket holds a minute's worth, no more
    assert sum(discovery.admit(f"y{i}") is None for i in range(100)) == 60


def test_at_the_cap_the_least_recently_heard_gives_way() -> None:
    clock = FakeClock()
    discovery, forgotten = table(clock, limit=3)
    for device in ("a", "b", "c"):
        assert discovery.admit(device) is None
        clock.advance(1)
    discovery.heard("a")
    assert discovery.admit("d") is None
    assert forgotten == [("b", "evicted")]
    assert discovery.ids() == ["a", "c", "d"]
    discovery.heard("ghost")  # not a discovered device: nothing changes
    assert discovery.ids() == ["a", "c", "d"]


def test_silent_devices_are_forgotten_heard_ones_kept_and_the_sweep_is_cheap() -> None:
    clock = FakeClock()
    discovery, forgotten = table(clock, forget_after_s=3600)
    discovery.admit("quiet")
    discovery.admit("chatty")
    clock.advance(3000)
    discovery.heard("chatty")
    assert discovery.sweep() == []  # nothing silent long enough yet
    clock.advance(30)
    assert discovery.sweep() == []  # swept under a minute ago: not looked at
    clock.advance(600)
    assert discovery.sweep() == ["quiet"]
    assert forgotten == [("quiet", "silent")]
    assert discovery.ids() == ["chatty"]
    assert discovery.forget("chatty", "operator")
    assert not discovery.forget("chatty", "x")
    assert discovery.forgotten == {"silent": 1, "operator": 1}


def test_restore_keeps_the_most_recently_seen_up_to_the_cap_and_their_silence() -> None:
    clock = FakeClock()
    discovery, forgotten = table(clock, limit=3, forget_after_s=3600)
    now = clock.now_ns()
    seen = {"old": now - 7200 * 10**9, "older": now - 9000 * 10**9, "new": now,
            "mid": now - 60 * 10**9, "never": None}
    assert discovery.restore(seen, now) == ["older", "never"]
    assert sorted(forgotten) == [("never", "limit"), ("older", "limit")]
    assert discovery.ids() == ["mid", "new", "old"]
    clock.advance(61)
    assert discovery.sweep() == ["old"]  # silent two hours before the restart already


def test_ids_a_bus_or_serial_source_names_never_count() -> None:
    discovery, _ = table(FakeClock(), limit=1, per_minute=1)
    discovery.exempt("polder-2")
    assert discovery.admit("polder-2") is None
    assert discovery.admit("stranger") is None
    assert discovery.admit("polder-2") is None  # no token, no eviction
    assert discovery.ids() == ["stranger"]


# -- the pipeline -----------------------------------------------------------------------


def test_refused_ids_are_counted_and_only_a_sample_a_minute_is_dead_lettered() -> None:
    clock = FakeClock()
    pipe = Pipeline(
        gateway_id="gw", site=SITE, routes=[("garden/+/+/telemetry", Route(
            "native", FORMATS["native"], NativeOptions()))],
        devices={"polder-1": DeviceConfig(id="polder-1", kind="polder")},
        allow_discovery=True, max_payload_bytes=4096, clock=clock,
        discovery=Discovery(limit=300, per_minute=5, forget_after_s=3600, clock=clock))
    outcomes = [pipe.process(f"garden/{SITE}/made-up-{i}/telemetry", b'{"x": 1}', clock.now_ns())
                for i in range(50)]
    assert sum(bool(o.lines) for o in outcomes) == 5
    dead = [o.dead for o in outcomes if o.dead is not None]
    assert len(dead) == REFUSED_KEPT_PER_MINUTE
    assert {d.kind for d in dead} == {"discovery_refused"}
    assert "ingest.discovery_per_minute" in dead[0].error
    assert pipe.refused_not_kept == 45 - REFUSED_KEPT_PER_MINUTE
    assert pipe.sources["native"].errors == {"discovery_refused": 45}
    # The device list is never refused, whatever the flood did.
    listed = pipe.process(f"garden/{SITE}/polder-1/telemetry", b'{"level_cm": 1}', 1)
    assert listed.lines
    assert listed.dead is None
    clock.advance(60)  # a new minute: a new sample, and new tokens
    kept = pipe.process(f"garden/{SITE}/made-up-99/telemetry", b'{"x": 1}', clock.now_ns())
    assert kept.lines


# -- the gateway ------------------------------------------------------------------------


def flood_config(tmp_path: Path, mosquitto: PrivateMosquitto, influx: PrivateInfluxDB,
                 db: str, **ingest: Any) -> dict[str, Any]:
    return base_config(tmp_path, mosquitto, influx, db,
                       ingest={"max_discovered": 20, "discovery_per_minute": 1000, **ingest},
                       liveness={"report_interval_s": 3600})


def registry_ids(tmp_path: Path, origin: str) -> set[str]:
    with sqlite3.connect(tmp_path / "data" / "state.sqlite3") as db:
        return {row[0] for row in db.execute("SELECT id FROM devices WHERE origin = ?",
                                             (origin,))}


async def test_a_flood_keeps_the_table_at_its_cap_and_the_listed_device_watched(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock(time.time_ns())
    cfg = flood_config(tmp_path, mosquitto, influx_server, db_name)
    pub: Publisher = publisher_factory(mosquitto.port)
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 120})
        await until(lambda: gw.liveness.devices["polder-1"].state == "online")
        caplog.clear()
        with caplog.at_level(logging.INFO):
            for i in range(100):
                pub.publish(f"garden/{SITE}/made-up-{i:03d}/telemetry", {"x": i})
            await until(lambda: gw.pipeline.received >= 101)
            await until(lambda: "made-up-099" in gw.liveness.devices)
        flood_lines = [r for r in caplog.records if r.name.startswith("gateway")]
        assert len(flood_lines) <= 10, [r.getMessage() for r in flood_lines]

        answer = await gw.http.get("/api/v1/devices", params={"origin": "discovered"})
        assert answer.headers["x-total-count"] == "20"
        # All heard once: the newest twenty stay, the older ones gave way.
        assert [d["id"] for d in answer.json()] == [f"made-up-{i:03d}" for i in range(80, 100)]
        assert registry_ids(tmp_path, "discovered") == {f"made-up-{i:03d}"
                                                        for i in range(80, 100)}
        assert gw.liveness.devices["polder-1"].state == "online"
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 121})
        await until(lambda: gw.liveness.devices["polder-1"].latest.get("level_cm") == 121)

        metrics = (await gw.http.get("/metrics")).text
        assert "garden_gateway_discovered_devices 20" in metrics
        assert "garden_gateway_discovery_admitted_total 100" in metrics
        assert 'garden_gateway_discovery_forgotten_total{why="evicted"} 80' in metrics

    # A smaller cap at the next start: the most recently seen stay, in the registry too.
    cfg["ingest"]["max_discovered"] = 5
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        left = await gw.http.get("/api/v1/devices", params={"origin": "discovered"})
        assert left.headers["x-total-count"] == "5"
    assert len(registry_ids(tmp_path, "discovered")) == 5


async def test_the_rate_refuses_a_burst_and_a_real_device_gets_in_after_it(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    clock = FakeClock(time.time_ns())
    cfg = flood_config(tmp_path, mosquitto, influx_server, db_name, discovery_per_minute=10)
    pub: Publisher = publisher_factory(mosquitto.port)
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        for i in range(30):
            pub.publish(f"garden/{SITE}/burst-{i}/telemetry", {"x": i})
        await until(lambda: gw.pipeline.received >= 30)
        assert gw.pipeline.sources["native"].errors["discovery_refused"] == 20
        pub.publish(f"garden/{SITE}/kebun-baru/telemetry", {"soil_pct": 31})
        await until(lambda: gw.pipeline.received >= 31)
        assert "kebun-baru" not in gw.liveness.devices  # the bucket is still empty
        clock.advance(6)  # ten a minute: one token every six seconds
        pub.publish(f"garden/{SITE}/kebun-baru/telemetry", {"soil_pct": 31})
        await until(lambda: "kebun-baru" in gw.liveness.devices)
        metrics = (await gw.http.get("/metrics")).text
        assert 'garden_gateway_discovery_refused_total{reason="rate"} 21' in metrics
        dead = (await gw.http.get("/api/v1/dead-letters")).json()
        assert len(dead) == REFUSED_KEPT_PER_MINUTE


async def test_devices_are_paginated_and_filtered_with_the_total(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    cfg = flood_config(tmp_path, mosquitto, influx_server, db_name)
    pub: Publisher = publisher_factory(mosquitto.port)
    async with gateway_in_process(tmp_path, cfg) as gw:
        for i in range(7):
            pub.publish(f"garden/{SITE}/ap-{i}/telemetry", {"clients": i})
        await until(lambda: len(gw.pipeline.discovery) == 7)
        http = gw.http
        pages = [await http.get("/api/v1/devices", params={"limit": 4, "offset": offset})
                 for offset in (0, 4, 8)]
        assert {page.headers["x-total-count"] for page in pages} == {"9"}
        assert [len(page.json()) for page in pages] == [4, 4, 1]
        ids = [d["id"] for page in pages for d in page.json()]
        assert len(ids) == 9
        assert set(ids) == {"polder-1", "gw-test"} | {
            f"ap-{i}" for i in range(7)}
        listed = await http.get("/api/v1/devices", params=[("origin", "config"),
                                                            ("origin", "gateway")])
        assert sorted(d["id"] for d in listed.json()) == ["gw-test", "polder-1"]
        online = await http.get("/api/v1/devices", params={"state": "online",
                                                           "origin": "discovered"})
        assert online.headers["x-total-count"] == "7"
        polder = await http.get("/api/v1/devices", params={"kind": "polder"})
        assert [d["id"] for d in polder.json()] == ["polder-1"]
        beyond = await http.get("/api/v1/devices", params={"offset": 50})
        assert (beyond.json(), beyond.headers["x-total-count"]) == ([], "9")
        for bad in ({"limit": 0}, {"limit": 1001}, {"offset": -1}, {"origin": "nowhere"}):
            assert (await http.get("/api/v1/devices", params=bad)).status_code == 422, bad


async def test_an_operator_forgets_a_discovered_device_and_never_a_listed_one(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    clock = FakeClock(time.time_ns())
    cfg = flood_config(tmp_path, mosquitto, influx_server, db_name,
                       forget_discovered_after_s=3600)
    watcher = Watcher(mosquitto.port, f"garden/{SITE}/+/state")
    pub: Publisher = publisher_factory(mosquitto.port)
    try:
        async with gateway_in_process(tmp_path, cfg, clock) as gw:
            for device in ("stray-1", "stray-2"):
                pub.publish(f"garden/{SITE}/{device}/telemetry", {"x": 1})
            await until(lambda: f"garden/{SITE}/stray-2/state" in watcher.last
                        and f"garden/{SITE}/stray-1/state" in watcher.last)
            http = gw.http
            gone = await http.delete("/api/v1/devices/stray-1")
            assert (gone.status_code, gone.json()) == (200, {"id": "stray-1", "forgotten": True})
            assert "stray-1" not in gw.liveness.devices
            assert "stray-1" not in registry_ids(tmp_path, "discovered")
            assert "stray-1" not in gw.history.series()  # its chart's place is free
            await until(lambda: watcher.last.get(f"garden/{SITE}/stray-1/state") == b"")
            again = await http.delete("/api/v1/devices/stray-1")
            assert again.status_code == 404
            assert "stray-1" in again.json()["detail"]
            for listed in ("polder-1", "gw-test"):
                kept = await http.delete(f"/api/v1/devices/{listed}")
                assert kept.status_code == 409
                assert "config" in kept.json()["detail"]
                assert listed in gw.liveness.devices
            anyone = await http.delete("/api/v1/devices/stray-2", headers={
                "Authorization": ""})
            assert anyone.status_code == 401
            assert "stray-2" in gw.liveness.devices

            # Sending again makes it discovered again, with its state from scratch.
            pub.publish(f"garden/{SITE}/stray-1/telemetry", {"x": 2})
            await until(lambda: "stray-1" in gw.liveness.devices)
            assert gw.liveness.devices["stray-1"].latest == {"x": 2}

            # An hour of silence: forgotten by itself; the listed device stays (offline).
            pub.publish(f"garden/{SITE}/stray-2/telemetry", {"x": 3})
            await until(lambda: gw.liveness.devices["stray-2"].latest == {"x": 3})
            clock.advance(1800)
            pub.publish(f"garden/{SITE}/stray-2/telemetry", {"x": 4})
            await until(lambda: gw.liveness.devices["stray-2"].latest == {"x": 4})
            clock.advance(1900)
            await until(lambda: "stray-1" not in gw.liveness.devices)
            assert "stray-2" in gw.liveness.devices
            assert "polder-1" in gw.liveness.devices
            metrics = (await http.get("/metrics")).text
            assert 'garden_gateway_discovery_forgotten_total{why="operator"} 1' in metrics
            assert 'garden_gateway_discovery_forgotten_total{why="silent"} 1' in metrics
    finally:
        watcher.close()
