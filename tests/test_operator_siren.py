"""The operators' page shows each polder and its siren, and silences and tests it (issue 16,
parts 6 and 7). Debian's headless chromium against the real gateway process, the siren a coil
of pymodbus's server on a pseudo-terminal pair, read back from the slave."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, expect

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import GatewayProcess, Publisher, base_config, wait_for
from tests.modbus_peer import modbus_peer
from tests.test_browser import PHONE, SHOTS, WAIT_MS, browser

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py


def test_the_operator_sees_the_siren_sound_at_awas_and_silences_it(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    link = tmp_path / "ttyRS485"
    with modbus_peer(link, units=(7,)) as peer:
        cfg = base_config(
            tmp_path, mosquitto, influx_server, db_name,
            devices=[{"id": "polder-1", "kind": "polder", "interval_s": 60}],
            modbus=[{"name": "relays", "port": str(link), "timeout_s": 0.5,
                     "reopen_min_s": 0.1, "reopen_max_s": 0.3, "slaves": []}],
            polder=[{"device": "polder-1", "field": "level_cm", "name": "Polder Bukit Pelangi",
                     "max_rate_per_h": 1e15, "min_hold_s": 0,
                     "thresholds": {"waspada": 150, "siaga": 200, "awas": 250},
                     "siren": {"kind": "modbus_coil", "bus": "relays", "unit": 7}}])
        gw = gateway_factory(cfg)
        pub = publisher_factory(mosquitto.port)
        pub.publish("garden/taman-uji/polder-1/telemetry", {"level_cm": 262})
        wait_for(lambda: peer.coil(7, 0), timeout=20, what="the siren on at Awas")
        context = browser.new_context(viewport=PHONE, locale="id-ID")
        page = context.new_page()
        try:
            page.goto(f"{gw.api}/operator")
            page.get_by_label("Token operator").fill(cfg["api"]["operator_token"])
            page.get_by_role("button", name="Masuk").click()
            polder = page.locator('#polders li[data-polder="polder-1"]')
            expect(polder).to_contain_text("Polder Bukit Pelangi", timeout=WAIT_MS)
            expect(polder.locator(".badge")).to_have_text("Awas")
            expect(polder).to_contain_text("262 cm")
            expect(polder).to_contain_text("sensor dapat dipercaya")
            expect(polder.locator(".siren-state")).to_have_text("MENYALA")
            page.screenshot(path=SHOTS / "operator-siren-phone.png", full_page=True)
            polder.get_by_role("button", name="Senyapkan 1 jam").click()
            expect(polder.locator(".siren-state")).to_contain_text("disenyapkan sampai",
                                                                   timeout=WAIT_MS)
            wait_for(lambda: not peer.coil(7, 0), timeout=20, what="the coil off, silenced")
            polder.get_by_role("button", name="Lanjutkan").click()
            expect(polder.locator(".siren-state")).to_have_text("MENYALA", timeout=WAIT_MS)
            wait_for(lambda: peer.coil(7, 0), timeout=20, what="the coil on again")
        finally:
            context.close()
