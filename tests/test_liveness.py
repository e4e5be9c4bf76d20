"""Liveness, outages, uptime, presence and the MQTT state topics, against the real broker and
InfluxDB; time moves with a FakeClock wherever the rule is about time."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from devices import presence
from devices.reading import DecodeError, Reading
from gateway.config import DeviceConfig, LivenessConfig
from gateway.core.errors import StackError
from gateway.park.liveness import PORT_GONE, ComponentTransition, Liveness, Polled, Transition
from gateway.park.registry import Registry, uptime_parts
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import (
    OPERATOR,
    Publisher,
    Watcher,
    base_config,
    gateway_in_process,
    until,
    wait_for,
)

S = 10**9
SITE = "taman-uji"


def config(tmp_path: Path, mosquitto: PrivateMosquitto, influx: PrivateInfluxDB, db: str,
           **overrides: Any) -> dict[str, Any]:
    cfg = base_config(tmp_path, mosquitto, influx, db, **overrides)
    cfg["subscriptions"] = [
        *cfg["subscriptions"],
        {"name": "native-status", "topic": "garden/+/+/status", "format": "native"},
        {"name": "tasmota-lwt", "topic": "tele/+/LWT", "format": "tasmota"},
        {"name": "esphome-status", "topic": "+/status", "format": "esphome"},
    ]
    return cfg


def state_of(watcher: Watcher, device: str) -> str | None:
    raw = watcher.last.get(f"garden/{SITE}/{device}/state")
    return None if raw is None else str(json.loads(raw)["state"])


async def test_silence_opens_an_outage_everywhere_and_a_reading_closes_it(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    clock = FakeClock(time.time_ns())
    cfg = config(tmp_path, mosquitto, influx_server, db_name,
                 devices=[{"id": "polder-1", "kind": "polder", "name": "Polder utara",
                           "zone": "polder", "interval_s": 60}],
                 liveness={"missed_intervals": 3, "report_interval_s": 3600})
    watcher = Watcher(mosquitto.port, f"garden/{SITE}/+/state")
    pub: Publisher = publisher_factory(mosquitto.port)
    try:
        async with gateway_in_process(tmp_path, cfg, clock) as gw:
            t0 = clock.now_ns()
            devices = {d["id"]: d for d in (await gw.http.get("/api/v1/devices")).json()}
            assert devices["polder-1"]["state"] == "unknown"
            assert devices["gw-test"]["state"] == "online"
            assert devices["gw-test"]["kind"] == "gateway"

            pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 150})
            await until(lambda: gw.liveness.devices["polder-1"].state == "online")
            dev = (await gw.http.get("/api/v1/devices", params={"kind": "polder"})).json()[0]
            assert (dev["state"], dev["since_ns"], dev["name"], dev["zone"]) == (
                "online", t0, "Polder utara", "polder")
            assert dev["latest"]["fields"] == {"level_cm": 150.0}
            await until(lambda: state_of(watcher, "polder-1") == "online")

            # Two missed reports are not yet an outage: the next deadline is 3 intervals on.
            clock.advance(179)
            assert gw.liveness.check() == t0 + 180 * S
            assert gw.liveness.devices["polder-1"].state == "online"
            clock.advance(2)
            await until(lambda: gw.liveness.devices["polder-1"].state == "offline")

            [outage] = (await gw.http.get("/api/v1/outages",
                                          params={"device": "polder-1"})).json()
            # It went down when the first missed report was due.
            assert (outage["start_ns"], outage["ongoing"]) == (t0 + 60 * S, True)
            assert outage["cause"] == "no reading for 3 intervals of 60 s"
            assert outage["duration_s"] == pytest.approx(121)
            await until(lambda: state_of(watcher, "polder-1") == "offline")
            fresh = Watcher(mosquitto.port, f"garden/{SITE}/polder-1/state", "test-late")
            try:
                await until(lambda: f"garden/{SITE}/polder-1/state" in fresh.last)
                assert fresh.retained[f"garden/{SITE}/polder-1/state"] is True
                body = json.loads(fresh.last[f"garden/{SITE}/polder-1/state"])
                assert (body["state"], body["gateway"], body["kind"]) == (
                    "offline", "gw-test", "polder")
            finally:
                fresh.close()

            def status_points() -> list[Any]:
                try:
                    return influx_server.points(
                        db_name, "SELECT state, up FROM device_status WHERE device = 'polder-1'")
                except StackError:  # the gateway has not created the database yet
                    return []
            # The first report (unknown) and the transition to online share t0 on the
            # stopped clock, so the later point replaces the earlier: online, then offline.
            await until(lambda: len(status_points()) >= 2, 20)
            assert [(p["state"], p["up"]) for p in status_points()] == [("online", 1),
                                                                         ("offline", 0)]

            clock.advance(119)  # t0 + 300 s
            pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 151})
            await until(lambda: gw.liveness.devices["polder-1"].state == "online")
            [outage] = (await gw.http.get("/api/v1/outages",
                                          params={"device": "polder-1"})).json()
            assert (outage["end_ns"], outage["ongoing"]) == (t0 + 300 * S, False)
            assert outage["duration_s"] == 240
            assert outage["end_cause"] == "reading"
            dev = (await gw.http.get("/api/v1/devices", params={"kind": "polder"})).json()[0]
            # Observed 300 s since it was first seen, down 240 of them.
            assert dev["uptime_pct"] == {"24h": 20.0, "7d": 20.0, "30d": 20.0}
            await until(lambda: state_of(watcher, "polder-1") == "online")
    finally:
        watcher.close()


async def test_a_device_saying_offline_is_held_so_a_quick_reconnect_is_no_outage(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    clock = FakeClock(time.time_ns())
    cfg = config(tmp_path, mosquitto, influx_server, db_name,
                 devices=[{"id": "kebun-1", "kind": "garden_env", "interval_s": 300}],
                 liveness={"hold_s": 60})
    pub: Publisher = publisher_factory(mosquitto.port)
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        kebun = gw.liveness.devices["kebun-1"]
        pub.publish("tele/kebun-1/LWT", "Online", retain=True)
        await until(lambda: kebun.state == "online")

        pub.publish("tele/kebun-1/LWT", "Offline", retain=True)
        await until(lambda: kebun.presence == "offline")
        clock.advance(30)
        pub.publish("tele/kebun-1/LWT", "Online", retain=True)
        await until(lambda: kebun.presence == "online")
        clock.advance(60)
        gw.liveness.check()
        assert kebun.state == "online"
        assert (await gw.http.get("/api/v1/outages", params={"device": "kebun-1"})).json() == []

        pub.publish("tele/kebun-1/LWT", "Offline", retain=True)
        await until(lambda: kebun.presence == "offline")
        said_at = clock.now_ns()
        clock.advance(59)
        assert gw.liveness.check() == said_at + 60 * S
        clock.advance(2)
        await until(lambda: kebun.state == "offline")
        [outage] = (await gw.http.get("/api/v1/outages", params={"device": "kebun-1"})).json()
        assert (outage["start_ns"], outage["cause"]) == (said_at, "LWT Offline")

        # ESPHome and native presence: discovered and known devices alike.
        pub.publish("pompa-1/status", "online", retain=True)
        await until(lambda: "pompa-1" in gw.liveness.devices
                    and gw.liveness.devices["pompa-1"].state == "online")
        assert gw.liveness.devices["pompa-1"].origin == "discovered"
        pub.publish(f"garden/{SITE}/polder-1/status", "offline", retain=True)
        await until(lambda: getattr(gw.liveness.devices.get("polder-1"), "state", None)
                    == "offline")
        pub.publish(f"garden/{SITE}/polder-1/status", "maybe")
        await until(lambda: gw.status().sources["native-status"].errors == {"malformed": 1})
        assert gw.status().counts.rejected == 1


async def test_a_restart_restores_states_and_counts_the_downtime_as_the_gateways(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    clock = FakeClock(time.time_ns())
    cfg = config(tmp_path, mosquitto, influx_server, db_name,
                 devices=[{"id": "polder-1", "kind": "polder", "interval_s": 60}])
    pub: Publisher = publisher_factory(mosquitto.port)
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        first_start = clock.now_ns()
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 150})
        await until(lambda: gw.liveness.devices["polder-1"].state == "online")
        clock.advance(100)
    stopped_at = clock.now_ns()

    clock.advance(600)  # the gateway is off for ten minutes
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        restart = clock.now_ns()
        polder = gw.liveness.devices["polder-1"]
        assert (polder.state, polder.since_ns) == ("online", first_start)
        assert (await gw.http.get("/api/v1/outages", params={"device": "polder-1"})).json() == []
        [down] = (await gw.http.get("/api/v1/outages", params={"device": "gw-test"})).json()
        assert (down["start_ns"], down["end_ns"], down["cause"]) == (
            stopped_at, restart, "gateway stopped")
        # Silence is counted from the restart, not from before the stop.
        assert gw.liveness.check() == restart + 180 * S
        clock.advance(100)
        devices = {d["id"]: d for d in (await gw.http.get("/api/v1/devices")).json()}
        # polder-1: observed 800 - 600 s, never down; the gateway: down 600 of 800 s.
        assert devices["polder-1"]["uptime_pct"]["24h"] == 100.0
        assert devices["gw-test"]["uptime_pct"]["24h"] == 25.0


def test_birth_will_and_a_crash_recorded_as_the_gateways_outage(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Any, publisher_factory: Any,
) -> None:
    topic = f"garden/{SITE}/gateway/gw-test/status"
    cfg = config(tmp_path, mosquitto, influx_server, db_name,
                 mqtt={"keepalive_s": 5})
    watcher = Watcher(mosquitto.port, topic)
    try:
        gw = gateway_factory(cfg)
        wait_for(lambda: watcher.last.get(topic) == b"online", what="the birth message")
        late = Watcher(mosquitto.port, topic, "test-late-status")
        try:
            wait_for(lambda: topic in late.last, what="the retained birth")
            assert (late.last[topic], late.retained[topic]) == (b"online", True)
        finally:
            late.close()
        pub: Publisher = publisher_factory(mosquitto.port)
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 150})
        wait_for(lambda: any(d["state"] == "online" for d in httpx_get(gw.api, "/api/v1/devices")
                             if d["id"] == "polder-1"), what="polder-1 online")
        assert gw.terminate() == 0
        # A clean stop says "offline" itself (the broker drops the will on DISCONNECT).
        wait_for(lambda: watcher.last.get(topic) == b"offline", what="offline on a clean stop")

        gw.start()
        wait_for(lambda: watcher.last.get(topic) == b"online", what="the birth again")
        gw.kill()
        # SIGKILL: the broker sees the connection drop and publishes the will.
        wait_for(lambda: watcher.last.get(topic) == b"offline", what="the last will")

        gw.start()
        outages = httpx_get(gw.api, "/api/v1/outages?device=gw-test")
        causes = [o["cause"] for o in outages]
        assert causes == ["gateway lost power or crashed (time of its last heartbeat)",
                          "gateway stopped"]
        polder = [d for d in httpx_get(gw.api, "/api/v1/devices") if d["id"] == "polder-1"]
        assert polder[0]["state"] == "online"
        late = Watcher(mosquitto.port, f"garden/{SITE}/+/state", "test-late")
        try:
            wait_for(lambda: state_of(late, "polder-1") == "online",
                     what="the retained device state")
        finally:
            late.close()
    finally:
        watcher.close()


def httpx_get(api: str, path: str) -> Any:
    import httpx

    response = httpx.get(api + path, timeout=5, headers=OPERATOR)
    response.raise_for_status()
    return response.json()


async def test_site_summary(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    clock = FakeClock(time.time_ns())
    cfg = config(tmp_path, mosquitto, influx_server, db_name, devices=[
        {"id": "ap-1", "kind": "wifi_ap"}, {"id": "ap-2", "kind": "wifi_ap"},
        {"id": "polder-1", "kind": "polder"}, {"id": "kebun-1", "kind": "garden_env"}])
    pub: Publisher = publisher_factory(mosquitto.port)
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        pub.publish(f"garden/{SITE}/ap-1/telemetry", {"clients": 5})
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 150})
        await until(lambda: gw.liveness.statistics()["online"] == 3)  # with the gateway
        site = (await gw.http.get(f"/api/v1/sites/{SITE}")).json()
        assert site["aps"] == {"up": 1, "down": 0, "unknown": 1, "unmonitored": 0, "total": 2}
        assert site["sensors"] == {"up": 1, "down": 0, "unknown": 1, "unmonitored": 0, "total": 2}
        assert site["clients_now"] == 5
        assert site["gateways"][0]["id"] == "gw-test"
        assert site["uptime_pct"]["24h"] is None  # nothing observed for any time yet
        clock.advance(60)
        site = (await gw.http.get(f"/api/v1/sites/{SITE}")).json()
        assert site["uptime_pct"]["24h"] == 100.0
        assert (await gw.http.get("/api/v1/sites")).json() == [SITE]
        assert (await gw.http.get("/api/v1/sites/elsewhere")).status_code == 404


# -- pure parts -------------------------------------------------------------------------


@pytest.mark.parametrize(("kw", "observed", "down", "pct"), [
    # never seen: nothing observed
    ({"first_seen_ns": None, "outages": [], "gateway_down": []}, 0, 0, None),
    ({"first_seen_ns": 0, "outages": [], "gateway_down": []}, 100, 0, 100.0),
    ({"first_seen_ns": 0, "outages": [(10, 20)], "gateway_down": []}, 100, 10, 90.0),
    # an ongoing outage runs to now
    ({"first_seen_ns": 0, "outages": [(90, None)], "gateway_down": []}, 100, 10, 90.0),
    # the window starts at 0: an outage from before counts only inside it
    ({"first_seen_ns": -50, "outages": [(-20, 10)], "gateway_down": []}, 100, 10, 90.0),
    # seen first at 50: only 50 observed
    ({"first_seen_ns": 50, "outages": [(60, 70)], "gateway_down": []}, 50, 10, 80.0),
    # the gateway's downtime is not observed, and not the device's fault
    ({"first_seen_ns": 0, "outages": [(10, 40)], "gateway_down": [(20, 60)]}, 60, 10, 83.333),
    # overlapping outages count once
    ({"first_seen_ns": 0, "outages": [(10, 30), (20, 40)], "gateway_down": []}, 100, 30, 70.0),
    # unmonitored time (a link gone) is neither up nor down: left out like the gateway's
    ({"first_seen_ns": 0, "outages": [(80, None)], "gateway_down": [(0, 10)],
      "unobserved": [(30, 70)]}, 50, 20, 60.0),
    ({"first_seen_ns": 0, "outages": [], "gateway_down": [], "unobserved": [(50, None)]},
     50, 0, 100.0),
])
def test_uptime_parts(kw: dict[str, Any], observed: int, down: int, pct: float | None) -> None:
    parts = uptime_parts(window_start_ns=0, now_ns=100, **kw)
    assert (parts.observed_ns, parts.down_ns, parts.pct) == (observed, down, pct)


@pytest.mark.parametrize(("parse", "topic", "payload", "expected"), [
    (presence.native, "garden/taman/polder-1/status", b"online",
     presence.Presence("polder-1", "taman", True, "status online")),
    (presence.native, "garden/taman/polder-1/status", b"offline\n",
     presence.Presence("polder-1", "taman", False, "status offline")),
    (presence.native, "garden/taman/polder-1/telemetry", b"{}", None),
    (presence.native, "garden/taman/gateway/gw-1/status", b"online", None),
    (presence.tasmota, "tele/kebun-1/LWT", b"Online",
     presence.Presence("kebun-1", None, True, "LWT Online")),
    (presence.tasmota, "tele/kebun-1/LWT", b"Offline",
     presence.Presence("kebun-1", None, False, "LWT Offline")),
    (presence.tasmota, "tele/kebun-1/SENSOR", b"{}", None),
    (presence.esphome, "pompa-1/status", b"offline",
     presence.Presence("pompa-1", None, False, "status offline")),
    (presence.esphome, "pompa-1/sensor/x/state", b"1", None),
])
def test_presence(parse: Any, topic: str, payload: bytes,
                  expected: presence.Presence | None) -> None:
    assert parse(topic, payload) == expected


def test_presence_with_another_word_is_malformed() -> None:
    with pytest.raises(DecodeError) as caught:
        presence.tasmota("tele/kebun-1/LWT", b"rebooting")
    assert (caught.value.kind, caught.value.device) == ("malformed", "kebun-1")


async def test_an_outage_past_the_threshold_alerts_in_bahasa_indonesia_and_recovery_too(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    from tests.test_alerts import TG_PATH, Receiver, telegram

    receiver = Receiver()
    await receiver.start()
    clock = FakeClock(time.time_ns())
    token_file = tmp_path / "bot-token"
    token_file.write_text(TG_PATH.split("/")[1][3:] + "\n")
    tg = telegram(receiver)
    del tg["bot_token"]
    cfg = config(tmp_path, mosquitto, influx_server, db_name,
                 devices=[{"id": "polder-1", "kind": "polder", "name": "Polder utara",
                           "interval_s": 60}],
                 alerts={"down_after_s": 300, "targets": [
                     {"kind": "webhook", "name": "diskominfo", "url": receiver.url("/hook")},
                     {**tg, "bot_token_file": str(token_file)}]})
    pub: Publisher = publisher_factory(mosquitto.port)
    try:
        async with gateway_in_process(tmp_path, cfg, clock) as gw:
            t0 = clock.now_ns()
            pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 150})
            await until(lambda: gw.liveness.devices["polder-1"].state == "online")
            clock.advance(181)
            await until(lambda: gw.liveness.devices["polder-1"].state == "offline")
            # Down since t0 + 60 s; the alert waits until it has lasted 300 s.
            clock.advance(178)
            assert gw.status().alerts.waiting == 1
            clock.advance(2)
            [down] = await receiver.wait_for("/hook", 1)
            body = down.json()
            assert (body["event"], body["device"], body["site"]) == ("down", "polder-1", SITE)
            assert body["text"].startswith("🔴 Sensor polder Polder utara (polder-1) di "
                                           f"{SITE} mati sejak ")
            assert "tidak ada data selama 3 kali interval laporan" in body["text"]
            [tg_down] = await receiver.wait_for(TG_PATH, 1)
            assert tg_down.json()["text"] == body["text"]

            pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 151})
            await until(lambda: gw.liveness.devices["polder-1"].state == "online")
            up = (await receiver.wait_for("/hook", 2))[1].json()
            assert up["event"] == "recovered"
            assert "kembali menyala" in up["text"]
            assert "setelah mati 5 menit" in up["text"]
            assert clock.now_ns() - t0 == 361 * S
            assert TG_PATH.split("/")[1][3:] not in gw.status().model_dump_json()
    finally:
        await receiver.close()


async def test_with_mqtt_3_1_1_the_gateways_own_states_heard_back_are_not_input(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    clock = FakeClock(time.time_ns())
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      mqtt={"protocol": "3.1.1"},
                      subscriptions=[{"name": "all", "topic": "garden/#", "format": "native"}])
    pub: Publisher = publisher_factory(mosquitto.port)
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 150})
        # Its birth, polder-1's state at connect (unknown) and after the reading (online),
        # and the park's summary, come back through garden/#.
        await until(lambda: gw.status().counts.own_topics_ignored >= 4)
        counts = gw.status().counts
        assert (counts.rejected, counts.readings) == (0, 1)


async def test_after_a_long_stop_the_gateway_reports_its_own_outage(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    from tests.test_alerts import Receiver

    receiver = Receiver()
    await receiver.start()
    clock = FakeClock(time.time_ns())
    cfg = config(tmp_path, mosquitto, influx_server, db_name, alerts={
        "down_after_s": 300,
        "targets": [{"kind": "webhook", "name": "it", "url": receiver.url("/hook")}]})
    try:
        async with gateway_in_process(tmp_path, cfg, clock):
            pass
        stopped = clock.now_ns()
        clock.advance(100)  # shorter than down_after_s: no message
        async with gateway_in_process(tmp_path, cfg, clock) as gw:
            await until(lambda: gw.status().alerts.suppressed == 1)
        clock.advance(1200)
        async with gateway_in_process(tmp_path, cfg, clock):
            [msg] = await receiver.wait_for("/hook", 1)
        body = msg.json()
        assert (body["event"], body["device"], body["duration_s"]) == (
            "gateway_restarted", "gw-test", 1200)
        assert body["text"].startswith("🟠 Gateway ")
        assert body["since"] is not None
        assert stopped < clock.now_ns()
    finally:
        await receiver.close()


# -- polled devices and unmonitored (FakeClock, no broker) ------------------------------


def polled_liveness(tmp_path: Path, clock: FakeClock, devices: list[dict[str, Any]] | None = None
                    ) -> tuple[Liveness, Registry, list[Transition]]:
    registry = Registry(tmp_path / "state.sqlite3")
    liveness = Liveness(
        registry=registry, config=LivenessConfig(missed_intervals=3, hold_s=0),
        devices=[DeviceConfig.model_validate(d) for d in devices or []], gateway_id="gw",
        site=SITE, clock=clock)
    heard: list[Transition] = []
    liveness.listeners.append(heard.append)
    return liveness, registry, heard


def reading(device: str, clock: FakeClock) -> Reading:
    return Reading.build("polder", {"device": device, "site": SITE}, {"level_cm": 1.0},
                         clock.now_ns())


def test_a_polled_device_expects_its_poll_unless_the_device_list_says(tmp_path: Path) -> None:
    clock = FakeClock()
    liveness, registry, _ = polled_liveness(tmp_path, clock, [
        {"id": "slave-listed", "kind": "polder"},
        {"id": "slave-explicit", "kind": "polder", "interval_s": 30},
        {"id": "mqtt-device", "kind": "garden_env"}])
    for device in ("slave-listed", "slave-explicit", "slave-unlisted"):
        liveness.poll(device, Polled(interval_s=1.0, missed=2, kind="polder",
                                     source="modbus bus unit 1"))
    liveness.start()
    devices = liveness.devices
    assert {d: devices[d].interval_s for d in ("slave-listed", "slave-explicit",
                                               "slave-unlisted", "mqtt-device")} == {
        "slave-listed": 1.0, "slave-explicit": 30.0, "slave-unlisted": 1.0,
        "mqtt-device": 60.0}
    # Configured by its bus: known from the start, not discovered.
    assert (devices["slave-unlisted"].origin, devices["slave-unlisted"].kind) == (
        "config", "polder")
    # Offline after the bus's offline_after (2) missed polls of 1 s, not 3 times 60 s.
    t0 = clock.now_ns()
    liveness.readings([reading("slave-unlisted", clock)])
    assert liveness.check() == t0 + 2 * S
    clock.advance(2)
    liveness.check()
    assert devices["slave-unlisted"].state == "offline"
    assert registry.outages(device="slave-unlisted")[0].start_ns == t0 + 1 * S
    registry.close()


def test_unmonitored_time_is_unobserved_and_opens_no_device_outage(tmp_path: Path) -> None:
    clock = FakeClock()
    liveness, registry, heard = polled_liveness(tmp_path, clock)
    liveness.poll("polder-1", Polled(interval_s=60.0, kind="polder"))
    liveness.add_link("bus:b", ["polder-1"])
    parts: list[ComponentTransition] = []
    liveness.component_listeners.append(parts.append)
    liveness.start()
    t0 = clock.now_ns()
    d = liveness.devices["polder-1"]
    liveness.readings([reading("polder-1", clock)])
    clock.advance(100)
    liveness.readings([reading("polder-1", clock)])
    liveness.link_down("bus:b", PORT_GONE, "port /dev/x went away")
    assert (d.state, d.cause, d.since_ns) == ("unmonitored", "port_gone", t0 + 100 * S)
    liveness.link_down("bus:b", PORT_GONE)  # again: nothing new
    clock.advance(300)  # far past 3 intervals: still unmonitored, never offline
    assert liveness.check() is None or d.state == "unmonitored"
    assert d.state == "unmonitored"
    liveness.link_up("bus:b", "port_open")
    assert d.state == "unmonitored"  # until it answers
    clock.advance(10)
    liveness.readings([reading("polder-1", clock)])
    assert d.state == "online"
    clock.advance(90)  # now t0 + 500
    # 310 s unmonitored (t0+100 .. t0+410) are not observed; nothing was down.
    assert registry.unobserved(t0) == {"polder-1": [(t0 + 100 * S, t0 + 410 * S)]}
    assert registry.outages(device="polder-1") == []
    assert liveness.uptime(clock.now_ns())["polder-1"]["24h"] == 100.0

    # The link goes and comes back, and the slave never answers: offline, counted from the
    # link's return, and the unobserved span ends where the outage begins.
    liveness.link_down("bus:b", PORT_GONE)
    clock.advance(10)
    liveness.link_up("bus:b", "port_open")
    back = clock.now_ns()
    assert liveness.check() == back + 180 * S
    clock.advance(180)
    liveness.check()
    assert d.state == "offline"
    (outage,) = registry.outages(device="polder-1")
    assert (outage.start_ns, outage.end_ns) == (back + 60 * S, None)
    assert registry.unobserved(t0)["polder-1"][1] == (t0 + 500 * S, back + 60 * S)
    now = clock.now_ns()  # t0 + 690: observed 690 - 310 - 70 = 310 s, down 120 s
    assert liveness.uptime(now)["polder-1"]["24h"] == round(100 * (1 - 120 / 310), 3)

    # Offline when its link goes: the outage ends (nobody knows now), no new one opens.
    clock.advance(10)
    liveness.link_down("bus:b", PORT_GONE)
    (outage,) = registry.outages(device="polder-1")
    assert (outage.end_ns, outage.end_cause) == (clock.now_ns(), "unmonitored (port_gone)")
    assert [(t.old, t.new) for t in heard] == [
        ("unknown", "online"), ("online", "unmonitored"), ("unmonitored", "online"),
        ("online", "unmonitored"), ("unmonitored", "offline"), ("offline", "unmonitored")]
    assert [(p.component, p.up, p.cause) for p in parts] == [
        ("bus:b", False, "port_gone"), ("bus:b", True, "port_open"),
        ("bus:b", False, "port_gone"), ("bus:b", True, "port_open"),
        ("bus:b", False, "port_gone")]
    bus = registry.outages(device="bus:b")
    assert [(o.kind, o.cause, o.end_ns is None) for o in bus] == [
        ("component", "port_gone", True), ("component", "port_gone", False),
        ("component", "port_gone", False)]
    assert liveness.statistics()["unmonitored"] == 1
    assert liveness.statistics()["components_down"] == 1
    registry.close()


def test_unmonitored_in_device_status_points_has_no_up_field(tmp_path: Path) -> None:
    clock = FakeClock()
    lines: list[list[str]] = []
    registry = Registry(tmp_path / "state.sqlite3")
    liveness = Liveness(registry=registry, config=LivenessConfig(), devices=[],
                        gateway_id="gw", site=SITE, clock=clock, emit=lines.append)
    liveness.poll("polder-1", Polled(interval_s=1.0, kind="polder"))
    liveness.add_link("bus:b", ["polder-1"])
    liveness.start()
    liveness.readings([reading("polder-1", clock)])
    liveness.link_down("bus:b", PORT_GONE)
    (line,) = lines[-1]
    assert 'state="unmonitored"' in line
    assert 'cause="port_gone"' in line
    assert ",up=" not in line
    registry.close()


def test_a_device_never_seen_is_unknown_again_when_its_link_returns(tmp_path: Path) -> None:
    clock = FakeClock()
    liveness, registry, heard = polled_liveness(tmp_path, clock)
    liveness.poll("polder-1", Polled(interval_s=1.0))
    liveness.add_link("bus:b", ["polder-1"])
    liveness.start()
    liveness.link_down("bus:b", PORT_GONE)
    assert liveness.devices["polder-1"].state == "unmonitored"
    clock.advance(5)
    liveness.link_up("bus:b")
    assert liveness.devices["polder-1"].state == "unknown"
    assert [(t.old, t.new) for t in heard] == [("unknown", "unmonitored"),
                                               ("unmonitored", "unknown")]
    registry.close()


def test_a_restart_ends_the_components_outage_where_the_last_run_stopped(
        tmp_path: Path) -> None:
    clock = FakeClock()
    liveness, registry, _ = polled_liveness(tmp_path, clock)
    liveness.poll("polder-1", Polled(interval_s=1.0))
    liveness.add_link("bus:b", ["polder-1"])
    liveness.start()
    liveness.link_down("bus:b", PORT_GONE)
    clock.advance(30)
    stopped = clock.now_ns()
    liveness.stop()
    registry.close()
    clock.advance(600)
    again, registry, _ = polled_liveness(tmp_path, clock)
    again.poll("polder-1", Polled(interval_s=1.0))
    again.add_link("bus:b", ["polder-1"])
    again.start()
    (outage,) = registry.outages(device="bus:b")
    assert (outage.end_ns, outage.end_cause) == (stopped, "gateway stopped")
    # Still unmonitored until the port says (the source reports at once after the start).
    assert again.devices["polder-1"].state == "unmonitored"
    again.link_up("bus:b")
    assert again.devices["polder-1"].state == "unknown"
    registry.close()


def test_a_late_reading_while_the_link_is_down_ends_unmonitored_not_offline(
        tmp_path: Path) -> None:
    clock = FakeClock()
    liveness, registry, heard = polled_liveness(tmp_path, clock)
    liveness.poll("kebun-1", Polled(interval_s=1.0))
    liveness.add_link("serial:kebun", ["kebun-1"])
    liveness.start()
    liveness.readings([reading("kebun-1", clock)])
    liveness.link_down("serial:kebun", PORT_GONE)
    liveness.readings([reading("kebun-1", clock)])  # a line read just before the loss
    clock.advance(10)
    liveness.check()
    assert liveness.devices["kebun-1"].state == "unmonitored"
    assert registry.outages(device="kebun-1") == []
    assert [t.new for t in heard] == ["online", "unmonitored", "online", "unmonitored"]
    registry.close()


def test_discoveries_are_logged_once_a_minute_with_the_count(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A publisher inventing ids gets one log line a minute, not one per id (issue 12)."""
    clock = FakeClock()
    liveness, registry, _ = polled_liveness(tmp_path, clock)
    liveness.start()
    caplog.set_level("INFO", logger="gateway.park.liveness")
    try:
        liveness.readings([reading(f"made-up-{i}", clock) for i in range(1_000)])
        # One line for the discoveries, one for their transitions to online.
        assert [r.getMessage() for r in caplog.records] == [
            f"registry: discovered device=made-up-0 site={SITE} kind=polder",
            "discovered device made-up-0: unknown -> online cause=reading"]
        clock.advance(61)
        liveness.readings([reading("made-up-1000", clock)])
        lines = [r.getMessage() for r in caplog.records if "registry:" in r.getMessage()]
        assert lines[1] == (f"registry: discovered device=made-up-1000 site={SITE} kind=polder"
                            " (999 more like this not logged)")
        # Without a Discovery table (the pipeline's, tests/test_discovery.py) liveness tracks
        # whatever it is given: the cap is the pipeline's to enforce.
        assert len(liveness.devices) == 1_002
    finally:
        registry.close()
