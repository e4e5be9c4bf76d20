"""The pages in a real browser: Debian's headless chromium driven by Playwright, against the
real gateway (a subprocess) fed over the private Mosquitto and writing to the private InfluxDB.

Every run saves the screenshots the README shows (docs/screenshots/*.png). Nothing here waits
with sleep(): Playwright's expect() and wait_for() wait for a condition, with a timeout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect, sync_playwright

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import ROOT, GatewayProcess, Publisher, base_config, wait_for

CHROMIUM = Path("/usr/bin/chromium")
# Debian's chromium, not Playwright's own download (not available on the parks' machines).
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
SHOTS = ROOT / "docs" / "screenshots"
PHONE = ViewportSize(width=390, height=844)
DESKTOP = ViewportSize(width=1366, height=900)
SITE = "taman-uji"
NS = 10**9
MAX_RESIDENT_BYTES = 150 * 1024
WAIT_MS = 15_000

@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def park_config(tmp_path: Path, broker: PrivateMosquitto, influx: PrivateInfluxDB,
                db: str) -> dict[str, Any]:
    cfg = base_config(
        tmp_path, broker, influx, db,
        devices=[
            {"id": "ap-1", "name": "AP Gerbang", "kind": "wifi_ap", "site": SITE, "interval_s": 60},
            {"id": "ap-2", "name": "AP Polder", "kind": "wifi_ap", "site": SITE, "interval_s": 60},
            {"id": "polder-1", "name": "Polder utara", "kind": "polder", "site": SITE,
             "interval_s": 60},
            {"id": "kebun-1", "name": "Kebun timur", "kind": "garden_env", "site": SITE,
             "interval_s": 60},
        ],
        # A device's own "offline" counts at once: the page must follow without waiting.
        liveness={"hold_s": 0},
        wifi={"report_interval_s": 1},
        pages={"name": "Taman Uji", "garden": {"device": "kebun-1"}},
        # The page's tests jump between levels at once: no spike check, no hold.
        polder=[{"device": "polder-1", "field": "level_cm", "name": "Bukit Pelangi",
                 "thresholds": {"waspada": 150, "siaga": 200, "awas": 250},
                 "max_rate_per_h": 1e15, "min_hold_s": 0}],
    )
    cfg["subscriptions"] = [
        *cfg["subscriptions"],
        {"name": "native-status", "topic": "garden/+/+/status", "format": "native"},
    ]
    return cfg


def start_park(tmp_path: Path, mosquitto: PrivateMosquitto, influx: PrivateInfluxDB, db: str,
               gateway_factory: Callable[..., GatewayProcess],
               publisher_factory: Callable[[int], Publisher]) -> tuple[GatewayProcess, Publisher]:
    """A park with a day of polder and garden history and two APs with 5 + 9 clients now."""
    gw = gateway_factory(park_config(tmp_path, mosquitto, influx, db))
    pub = publisher_factory(mosquitto.port)
    now_s = time.time()
    for i in range(48, 0, -1):  # the last 24 h, every 30 min, as the sensors' backlog
        ts = round(now_s - i * 1800, 3)
        pub.publish(f"garden/{SITE}/polder-1/telemetry",
                    {"level_cm": 120 + i % 12 * 6.5, "ts": ts})
        pub.publish(f"garden/{SITE}/kebun-1/telemetry",
                    {"temperature_c": 26 + (24 - abs(i - 24)) / 4, "humidity_pct": 90 - i / 2,
                     "ts": ts})
    pub.publish(f"garden/{SITE}/ap-1/telemetry", {"clients": 5})
    pub.publish(f"garden/{SITE}/ap-2/telemetry", {"clients": 9})
    pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 182.5})
    pub.publish(f"garden/{SITE}/kebun-1/telemetry", {"temperature_c": 29.4, "humidity_pct": 78.2})

    def ready() -> bool:
        body = httpx.get(f"{gw.api}/api/v1/resident", timeout=5).json()
        return (body["wifi"]["status"] == "normal" and body["wifi"]["clients_now"] == 14
                and (body["polder"] or {}).get("value") == 182.5
                and (body["garden"] or {}).get("humidity_pct") == 78.2)

    wait_for(ready, timeout=20, what="the park's readings in /api/v1/resident")
    return gw, pub


def shoot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for size, suffix in ((PHONE, "phone"), (DESKTOP, "desktop")):
        page.set_viewport_size(size)
        page.screenshot(path=SHOTS / f"{name}-{suffix}.png", full_page=True)
    page.set_viewport_size(PHONE)


def test_resident_page_shows_the_park_in_two_languages_and_follows_it_live(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    gw, pub = start_park(tmp_path, mosquitto, influx_server, db_name, gateway_factory,
                         publisher_factory)
    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        page.goto(f"{gw.api}/")
        expect(page.locator("html")).to_have_attribute("lang", "id")
        expect(page.locator("#park-name")).to_have_text("Taman Uji")
        expect(page.locator("#wifi-status")).to_contain_text("Normal")
        expect(page.locator("#wifi-aps")).to_contain_text("2 dari 2 titik akses menyala")
        expect(page.locator("#clients")).to_have_text("14")
        expect(page.locator("#polder-value")).to_have_text("182,5 cm")
        expect(page.locator("#polder-status")).to_contain_text("Waspada")
        expect(page.locator("#polder-status")).to_have_attribute("data-level", "waspada")
        expect(page.locator("#polder-thresholds")).to_contain_text("Siaga ≥ 200")
        expect(page.locator("#temperature")).to_have_text("29,4 °C")
        expect(page.locator("#humidity")).to_have_text("78,2 %")
        expect(page.locator("#updated")).to_have_text(re.compile(r"baru saja|detik lalu"))
        # The day of polder readings, drawn with its three warning lines.
        expect(page.locator("#chart-polder svg polyline.line")).to_have_count(1)
        expect(page.locator("#chart-polder svg line.threshold")).to_have_count(3)
        expect(page.locator("#chart-temperature svg polyline.line")).to_have_count(1)
        expect(page.locator("#live")).to_have_attribute("data-state", "on")

        # Everything the page asked for came from the gateway itself, and weighs little.
        origin = urlsplit(gw.api).netloc
        assert {urlsplit(u).netloc for u in requested} == {origin}, requested
        files = sorted({urlsplit(u).path for u in requested} - {"/api/v1/resident",
                                                                 "/api/v1/history",
                                                                 "/api/v1/events"})
        assert files == ["/", "/static/base.css", "/static/chart.js", "/static/common.js",
                         "/static/resident.js"]
        sizes = {f: len(httpx.get(f"{gw.api}{f}", timeout=5).content) for f in files}
        assert sum(sizes.values()) < MAX_RESIDENT_BYTES, sizes
        shoot(page, "resident")

        page.get_by_role("button", name="English").click()
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#h-wifi")).to_have_text("Park Wi-Fi")
        expect(page.locator("#wifi-status")).to_contain_text("Working")
        expect(page.locator("#polder-status")).to_contain_text("Caution (Waspada)")
        expect(page.locator("#polder-value")).to_have_text("182.5 cm")
        expect(page.locator("#temperature")).to_have_text("29.4 °C")
        page.reload()  # the choice is remembered
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#wifi-status")).to_contain_text("Working")
        expect(page.locator("#live")).to_have_attribute("data-state", "on")

        # An AP says it is gone: the open page changes without being loaded again.
        page.evaluate("window.stillTheSamePage = true")
        pub.publish(f"garden/{SITE}/ap-2/status", "offline", retain=True)
        expect(page.locator("#wifi-status")).to_contain_text("Disrupted", timeout=WAIT_MS)
        expect(page.locator("#wifi-status")).to_have_attribute("data-level", "gangguan")
        expect(page.locator("#wifi-aps")).to_contain_text("1 of 2 access points on")
        expect(page.locator("#clients")).to_have_text("5")
        assert page.evaluate("window.stillTheSamePage") is True
    finally:
        context.close()


def test_operator_page_shows_nothing_but_the_form_until_the_right_token(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    gw, pub = start_park(tmp_path, mosquitto, influx_server, db_name, gateway_factory,
                         publisher_factory)
    token = gw.cfg["api"]["operator_token"]
    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{gw.api}/operator")
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#app")).to_be_hidden()
        expect(page.locator("#devices")).to_be_hidden()
        expect(page.locator("#logout")).to_be_hidden()

        page.get_by_label("Token operator").fill(token + "-salah")
        page.get_by_role("button", name="Masuk").click()
        expect(page.locator("#login-error")).to_have_text(re.compile("Token salah"))
        expect(page.locator("#app")).to_be_hidden()
        assert page.request.get(f"{gw.api}/api/v1/session").status == 401

        page.get_by_label("Token operator").fill(token)
        page.get_by_role("button", name="Masuk").click()
        expect(page.locator("#login")).to_be_hidden()
        expect(page.locator("#app")).to_be_visible()
        for device in ("ap-1", "ap-2", "polder-1", "kebun-1"):
            expect(page.locator(f'#devices tr[data-device="{device}"]')).to_be_visible()
        ap2 = page.locator('#devices tr[data-device="ap-2"]')
        expect(ap2).to_contain_text("Menyala")
        expect(page.locator('#devices tr[data-device="polder-1"]')).to_contain_text(
            "level 182,5 cm")
        expect(page.locator("#summary")).to_contain_text("InfluxDB")
        expect(page.locator("#chart-op svg")).to_have_count(1)
        expect(page.locator("#live")).to_have_attribute("data-state", "on")
        shoot(page, "operator")

        # A state event turns the row over while the page stays open.
        pub.publish(f"garden/{SITE}/ap-2/status", "offline", retain=True)
        expect(ap2).to_have_attribute("data-state", "offline", timeout=WAIT_MS)
        expect(ap2).to_contain_text("Mati")
        expect(page.locator("#outages tbody")).to_contain_text("ap-2", timeout=WAIT_MS)

        page.get_by_role("button", name="Keluar").click()
        expect(page.locator("#login")).to_be_visible()
        expect(page.locator("#app")).to_be_hidden()
        assert page.request.get(f"{gw.api}/api/v1/session").status == 401
    finally:
        context.close()


def test_the_open_page_comes_back_by_itself_after_the_gateway_restarts(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    gw, pub = start_park(tmp_path, mosquitto, influx_server, db_name, gateway_factory,
                         publisher_factory)
    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{gw.api}/")
        expect(page.locator("#live")).to_have_attribute("data-state", "on")
        expect(page.locator("#polder-value")).to_have_text("182,5 cm")
        page.evaluate("window.stillTheSamePage = true")
        assert gw.terminate() == 0
        # The stream ended: the page says it is not live and keeps what it showed.
        expect(page.locator("#live")).not_to_have_attribute("data-state", "on",
                                                            timeout=WAIT_MS)
        expect(page.locator("#polder-value")).to_have_text("182,5 cm")
        gw.start()
        expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=WAIT_MS)
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 251.0})
        expect(page.locator("#polder-value")).to_have_text("251 cm", timeout=WAIT_MS)
        expect(page.locator("#polder-status")).to_have_attribute("data-level", "awas")
        assert page.evaluate("window.stillTheSamePage") is True
    finally:
        context.close()
