"""Polled devices' liveness from their poll, and ``unmonitored`` (cause ``port_gone``) when
their bus's adapter is pulled: the real gateway in process, a real Modbus RTU slave (pymodbus
on a pseudo-terminal pair, tests/modbus_peer.py), the real broker for the state topic and a
real HTTP receiver for the alerts. Real time: the adapter's loss is a real-time matter."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, expect, sync_playwright

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import (
    OPERATOR,
    OPERATOR_TOKEN,
    GatewayProcess,
    Watcher,
    base_config,
    gateway_in_process,
    until,
    wait_for,
)
from tests.modbus_peer import modbus_peer
from tests.test_alerts import Receiver
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS, PHONE
from tests.test_modbus import LEVEL_MM
from tests.test_serial import fake_port

SITE = "taman-uji"
BLOCK = {"function": "holding", "address": 4, "count": 1,
         "registers": [{"field": "level_cm", "address": 4, "type": "uint16"}]}


def bus_config(tmp_path: Path, mosquitto: PrivateMosquitto, influx: PrivateInfluxDB, db: str,
               link: Path, receiver: Receiver, *units: int) -> dict[str, Any]:
    cfg = base_config(
        tmp_path, mosquitto, influx, db,
        modbus=[{"name": "polder-bus", "port": str(link), "timeout_s": 0.2,
                 "turnaround_s": 0.0, "offline_after": 2, "offline_retry_s": 1.0,
                 "reopen_min_s": 0.1, "reopen_max_s": 0.3,
                 "slaves": [{"device": f"polder-{u}", "unit": u, "interval_s": 1.0,
                             "measurement": "polder", "blocks": [BLOCK]} for u in units]}],
        alerts={"down_after_s": 0, "targets": [
            {"kind": "webhook", "name": "it", "url": receiver.url("/hook")}]},
        # The key of older configs, still read (as polder: [that]); levels set at will.
        pages={"polder": {"device": "polder-1", "field": "level_cm", "max_rate_per_h": 1e15,
                          "thresholds": {"waspada": 150, "siaga": 200, "awas": 250}}},
        # report_interval_s: no periodic device_status points to wait behind.
        liveness={"report_interval_s": 3600})
    # polder-1 in the device list without interval_s: its interval comes from its poll.
    cfg["devices"] = [{"id": "polder-1", "kind": "polder", "name": "Polder utara"}]
    return cfg


def state_message(watcher: Watcher, device: str) -> dict[str, Any] | None:
    raw = watcher.last.get(f"garden/{SITE}/{device}/state")
    return None if raw is None else dict(json.loads(raw))


async def test_a_pulled_adapter_makes_its_slaves_unmonitored_and_the_bus_has_the_outage(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    receiver = Receiver()
    await receiver.start()
    watcher = Watcher(mosquitto.port, f"garden/{SITE}/+/state")
    try:
        with modbus_peer(tmp_path / "ttyRS485", units=(1, 2)) as peer:
            peer.set(1, "holding", LEVEL_MM, 120)
            peer.set(2, "holding", LEVEL_MM, 80)
            cfg = bus_config(tmp_path, mosquitto, influx_server, db_name, peer.link, receiver,
                             1, 2)
            async with gateway_in_process(tmp_path, cfg) as gw:
                http = gw.http
                await until(lambda: all(gw.liveness.devices[d].state == "online"
                                        for d in ("polder-1", "polder-2")))
                devices = {d["id"]: d for d in (await http.get("/api/v1/devices")).json()}
                # The expected interval is the poll's; polder-2 is known from the bus config.
                assert devices["polder-1"]["interval_s"] == 1.0
                assert (devices["polder-2"]["interval_s"], devices["polder-2"]["origin"]) == (
                    1.0, "config")
                assert devices["polder-2"]["source"] == "modbus polder-bus unit 2"
                resident = (await http.get("/api/v1/resident")).json()["polder"]
                assert (resident["measured"], resident["value"], resident["level"]) == (
                    True, 120.0, "normal")

                pulled = time.monotonic()
                peer.unplug()
                await until(lambda: gw.liveness.devices["polder-1"].state == "unmonitored",
                            limit_s=5)
                # At once, not after missed polls (a poll every 1 s, offline_after 2).
                assert time.monotonic() - pulled < 2.0
                await until(lambda: gw.liveness.devices["polder-2"].state == "unmonitored")
                d1 = gw.liveness.devices["polder-1"]
                since = d1.since_ns

                listed = (await http.get("/api/v1/devices",
                                         params={"state": "unmonitored"})).json()
                assert {d["id"] for d in listed} == {"polder-1", "polder-2"}
                assert {d["cause"] for d in listed} == {"port_gone"}
                bus_outages = (await http.get("/api/v1/outages",
                                              params={"device": "bus:polder-bus"})).json()
                assert len(bus_outages) == 1
                assert bus_outages[0]["ongoing"] is True
                assert (bus_outages[0]["kind"], bus_outages[0]["cause"]) == (
                    "component", "port_gone")
                # No device outage: the gateway cannot tell whether the slaves are down.
                for dev in ("polder-1", "polder-2"):
                    assert (await http.get("/api/v1/outages",
                                           params={"device": dev})).json() == []

                message = wait_for(
                    lambda: (m := state_message(watcher, "polder-1")) is not None
                    and m["state"] == "unmonitored" and m, what="unmonitored on the topic")
                assert message["cause"] == "port_gone"

                metrics = (await http.get("/metrics")).text
                assert ('device_state{device="polder-1",kind="polder",site="taman-uji",'
                        'state="unmonitored"} 1') in metrics
                assert 'devices{state="unmonitored"} 2' in metrics
                assert 'component_up{component="bus:polder-bus"} 0' in metrics
                assert 'device_up{device="polder-1"' not in metrics  # neither up nor down
                status = (await http.get("/api/v1/status")).json()
                slave = status["modbus"]["polder-bus"]["slaves"]["polder-1"]
                assert slave["state"] == "unmonitored"
                site = (await http.get(f"/api/v1/sites/{SITE}")).json()
                assert site["sensors"]["unmonitored"] == 2

                # The residents see "not measured" since the loss, never the old level.
                resident = (await http.get("/api/v1/resident")).json()["polder"]
                assert resident["measured"] is False
                assert resident["not_measured_since_ns"] == since
                assert (resident["value"], resident["level"]) == (None, "unknown")

                # The bus's alert, and none for its devices.
                hooks = await receiver.wait_for("/hook", 1)
                body = hooks[0].json()
                assert (body["event"], body["subject"], body["device"], body["kind"]) == (
                    "down", "component", "bus:polder-bus", "bus")
                assert "adaptor USB" in body["text"]

                peer.set(1, "holding", LEVEL_MM, 130)
                peer.plug()
                await until(lambda: all(gw.liveness.devices[d].state == "online"
                                        for d in ("polder-1", "polder-2")), limit_s=10)
                closed = (await http.get("/api/v1/outages",
                                         params={"device": "bus:polder-bus"})).json()
                assert closed[0]["ongoing"] is False
                assert closed[0]["end_ns"] >= closed[0]["start_ns"]
                assert closed[0]["end_cause"] == "port_open"
                hooks = await receiver.wait_for("/hook", 2)
                assert [h.json()["event"] for h in hooks] == ["down", "recovered"]
                assert {h.json()["device"] for h in hooks} == {"bus:polder-bus"}
                assert 'component_up{component="bus:polder-bus"} 1' in (
                    await http.get("/metrics")).text
                # Unmonitored time is unobserved: no down time at all in the uptime.
                d = (await http.get("/api/v1/devices", params={"kind": "polder"})).json()
                assert {x["uptime_pct"]["24h"] for x in d} == {100.0}
                await until(lambda: gw.liveness.devices["polder-1"].latest.get("level_cm")
                            == 130)
                resident = (await http.get("/api/v1/resident")).json()["polder"]
                assert (resident["measured"], resident["value"]) == (True, 130.0)
    finally:
        watcher.close()
        await receiver.close()


async def test_a_slave_that_stops_answering_on_a_working_bus_is_offline_with_its_outage(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        with modbus_peer(tmp_path / "ttyRS485", units=(1, 2)) as peer:
            peer.set(1, "holding", LEVEL_MM, 120)
            cfg = bus_config(tmp_path, mosquitto, influx_server, db_name, peer.link, receiver,
                             1, 2)
            async with gateway_in_process(tmp_path, cfg) as gw:
                await until(lambda: all(gw.liveness.devices[d].state == "online"
                                        for d in ("polder-1", "polder-2")))
                cut = time.monotonic()
                peer.silenced.add(2)  # its wire is cut; the bus works
                await until(lambda: gw.liveness.devices["polder-2"].state == "offline",
                            limit_s=10)
                # offline_after (2) polls of 1 s, plus one round of the bus's timeouts.
                assert time.monotonic() - cut < 2 * 1.0 + 2 * 0.2 + 1.5
                assert gw.liveness.devices["polder-1"].state == "online"
                outages = (await gw.http.get("/api/v1/outages",
                                             params={"device": "polder-2"})).json()
                assert len(outages) == 1
                assert outages[0]["ongoing"]
                assert outages[0]["cause"] == "no reading for 2 intervals of 1 s"
                assert (await gw.http.get("/api/v1/outages", params={
                    "device": "bus:polder-bus"})).json() == []
                hooks = await receiver.wait_for("/hook", 1)
                assert (hooks[0].json()["event"], hooks[0].json()["subject"],
                        hooks[0].json()["device"]) == ("down", "device", "polder-2")
                peer.silenced.clear()
                await until(lambda: gw.liveness.devices["polder-2"].state == "online",
                            limit_s=10)
    finally:
        await receiver.close()


async def test_a_line_sources_device_expects_its_line_interval_and_its_port_is_a_component(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    with fake_port(tmp_path / "ttyKEBUN") as port:
        cfg = base_config(tmp_path, mosquitto, influx_server, db_name, serial=[{
            "name": "kebun", "port": str(port.link), "interval_s": 0.5,
            "reopen_min_s": 0.1, "reopen_max_s": 0.3,
            "options": {"format": "kv", "device": "kebun-2", "measurement": "garden_env"}}],
            liveness={"missed_intervals": 2, "report_interval_s": 3600})
        cfg["devices"] = []
        async with gateway_in_process(tmp_path, cfg) as gw:
            kebun = gw.liveness.devices["kebun-2"]
            assert (kebun.interval_s, kebun.origin, kebun.source) == (0.5, "config",
                                                                      "serial kebun")
            await until(lambda: gw.status().serial["kebun"].open)
            port.write(b"temperature_c=29.5\n")
            await until(lambda: kebun.state == "online")
            # Silent on a working port: offline after 2 lines of 0.5 s, not 3 minutes.
            await until(lambda: kebun.state == "offline", limit_s=5)
            port.write(b"temperature_c=29.6\n")
            await until(lambda: kebun.state == "online")
            port.unplug()
            await until(lambda: kebun.state == "unmonitored", limit_s=5)
            assert kebun.cause == "port_gone"
            outages = (await gw.http.get("/api/v1/outages", params={
                "device": "serial:kebun"})).json()
            assert [(o["kind"], o["cause"], o["ongoing"]) for o in outages] == [
                ("component", "port_gone", True)]
            port.plug()
            await until(lambda: gw.status().serial["kebun"].open, limit_s=5)
            port.write(b"temperature_c=29.7\n")
            await until(lambda: kebun.state == "online")
            outages = (await gw.http.get("/api/v1/outages", params={
                "device": "serial:kebun"})).json()
            assert outages[0]["ongoing"] is False
            # One outage of its own (the silence), none while its port was gone.
            own = (await gw.http.get("/api/v1/outages", params={"device": "kebun-2"})).json()
            assert len(own) == 1
            assert own[0]["cause"] == "no reading for 2 intervals of 0.5 s"


# -- in a real browser (last: Playwright's sync API runs a loop of its own) ------------------


@pytest.fixture
def browser() -> Iterator[Browser]:
    """Debian's chromium for this one test (function scope: no loop left for async tests)."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def test_the_residents_page_says_not_measured_since_the_adapter_was_pulled(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess], browser: Browser,
) -> None:
    with modbus_peer(tmp_path / "ttyRS485") as peer:
        peer.set(1, "holding", LEVEL_MM, 182)
        cfg = base_config(
            tmp_path, mosquitto, influx_server, db_name,
            modbus=[{"name": "polder-bus", "port": str(peer.link), "timeout_s": 0.2,
                     "reopen_min_s": 0.1, "reopen_max_s": 0.3,
                     "slaves": [{"device": "polder-1", "unit": 1, "interval_s": 1.0,
                                 "measurement": "polder", "blocks": [BLOCK]}]}],
            pages={"name": "Taman Uji",
                   "polder": {"device": "polder-1", "field": "level_cm",
                              "max_rate_per_h": 1e15,
                              "thresholds": {"waspada": 150, "siaga": 200, "awas": 250}}})
        cfg["devices"] = []
        gw = gateway_factory(cfg)
        context = browser.new_context(viewport=PHONE, locale="id-ID")
        page = context.new_page()
        try:
            page.goto(f"{gw.api}/")
            expect(page.locator("#polder-value")).to_have_text("182 cm", timeout=15_000)
            expect(page.locator("#polder-status")).to_have_attribute("data-level", "waspada")
            peer.unplug()
            expect(page.locator("#polder-status")).to_have_attribute(
                "data-level", "not-measured", timeout=15_000)
            expect(page.locator("#polder-status")).to_contain_text("Tidak terukur")
            expect(page.locator("#polder-value")).to_have_text("\u2013")  # a dash: no value
            expect(page.locator("#polder-time")).to_contain_text("Tidak terukur sejak")
            body = httpx.get(f"{gw.api}/api/v1/devices", headers=OPERATOR, timeout=5).json()
            assert [d["state"] for d in body if d["id"] == "polder-1"] == ["unmonitored"]
            # The operator page names the state and its cause.
            op = context.new_page()
            op.goto(f"{gw.api}/operator")
            op.get_by_label("Token operator").fill(OPERATOR_TOKEN)
            op.get_by_role("button", name="Masuk").click()
            row = op.locator('#devices tr[data-device="polder-1"]')
            expect(row).to_have_attribute("data-state", "unmonitored")
            expect(row).to_contain_text("Tidak terpantau")
            expect(row).to_contain_text("adaptor USB hilang")  # port_gone, in words
            op.close()
            page.get_by_role("button", name="English").click()
            expect(page.locator("#polder-status")).to_contain_text("Not measured")
            expect(page.locator("#polder-time")).to_contain_text("Not measured since")
            peer.plug()
            expect(page.locator("#polder-value")).to_have_text("182 cm", timeout=15_000)
            expect(page.locator("#polder-status")).to_contain_text("Caution (Waspada)")
        finally:
            context.close()

