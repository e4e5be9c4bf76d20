"""Operators triage at a glance (issue 14, part 4, in part): a summary line, down first, a state
filter, and a banner saying the park's broker is unreachable (its devices unmonitored, not down)
instead of API paths. Debian's headless chromium against the real gateway process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, expect

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import GatewayProcess, Publisher, base_config
from tests.test_browser import PHONE, SHOTS, WAIT_MS, browser

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py
SITE = "taman-uji"


def test_down_first_a_summary_a_filter_and_the_broker_banner(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    cfg = base_config(
        tmp_path, mosquitto, influx_server, db_name,
        devices=[{"id": "polder-1", "kind": "polder", "interval_s": 60},
                 {"id": "ap-1", "kind": "wifi_ap", "interval_s": 1},
                 {"id": "ap-2", "kind": "wifi_ap", "interval_s": 60}],
        liveness={"missed_intervals": 2, "hold_s": 0})
    gw = gateway_factory(cfg)
    pub = publisher_factory(mosquitto.port)
    pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 182.5, "battery_v": 3.71})
    pub.publish(f"garden/{SITE}/ap-1/telemetry", {"clients": 1})
    pub.publish(f"garden/{SITE}/ap-2/telemetry", {"clients": 4})
    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{gw.api}/operator")
        page.get_by_label("Token operator").fill(cfg["api"]["operator_token"])
        page.get_by_role("button", name="Masuk").click()
        expect(page.locator("#app")).to_be_visible()
        # ap-1 falls silent: offline, and first in the table.
        rows = page.locator("#devices tbody tr")
        expect(rows.first).to_have_attribute("data-device", "ap-1", timeout=WAIT_MS)
        expect(rows.first).to_have_attribute("data-state", "offline")
        # Its cause in the page's language; uptime says how little of the window was seen.
        expect(rows.first).to_contain_text("tidak ada data selama 2 kali interval 1 dtk")
        expect(rows.first).to_contain_text("teramati")
        expect(rows.first).to_contain_text("Data lama (")  # its last values: old, said so
        # Values with their units; an access point as rates and clients, not raw counters.
        expect(page.locator('#devices tr[data-device="polder-1"]')).to_contain_text(
            "battery 3,7 V, level 182,5 cm")
        expect(page.locator('#devices tr[data-device="ap-2"]')).to_contain_text("4 pengguna")
        summary = page.locator("#devices-summary")
        expect(summary).to_have_text("3 dari 4 perangkat menyala · 1 mati", timeout=WAIT_MS)
        # On a phone the table fits the screen: cards, each value with its column's name.
        wrap = page.locator("#devices").locator("xpath=..")
        assert wrap.evaluate("w => w.scrollWidth <= w.clientWidth + 1")
        expect(rows.first.locator("td").nth(1)).to_have_attribute("data-label", "Status")
        page.locator("#state-filter").select_option("offline")
        expect(rows).to_have_count(1)
        page.locator("#state-filter").select_option("all")
        expect(rows).to_have_count(4)

        # The broker stops: one banner in words, the devices unmonitored, not "mati".
        mosquitto.stop()
        banner = page.locator("#gw-banner")
        expect(banner).to_be_visible(timeout=WAIT_MS)
        expect(banner).to_contain_text("Broker MQTT taman tidak terjangkau")
        expect(summary).to_contain_text("tidak terpantau", timeout=WAIT_MS)
        expect(page.locator('#devices tr[data-device="polder-1"]')).to_have_attribute(
            "data-state", "unmonitored", timeout=WAIT_MS)
        expect(page.locator("#app-error")).to_be_hidden()
        expect(page.locator("#outages tbody")).to_contain_text("broker MQTT tidak terjangkau",
                                                               timeout=WAIT_MS)
        page.screenshot(path=SHOTS / "operator-broker-down-phone.png", full_page=True)
        mosquitto.start()
        expect(banner).to_be_hidden(timeout=30_000)
    finally:
        context.close()
