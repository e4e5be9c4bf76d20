"""The operator page lists discovered devices apart from the listed ones and forgets them on
request: Debian's headless chromium (Playwright) against the real gateway process, fed over the
private Mosquitto. No sleeps: Playwright's expect() waits for each condition, with a timeout."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Browser, Dialog, expect

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import OPERATOR, GatewayProcess, Publisher, base_config, wait_for
from tests.test_browser import PHONE, WAIT_MS, browser

SITE = "taman-uji"
STRAYS = 103  # more than the page shows (100): it says how many there are
__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py


def discovered_ids(gw: GatewayProcess) -> set[str]:
    answer = httpx.get(f"{gw.api}/api/v1/devices", params={"origin": "discovered",
                                                           "limit": 1000},
                       headers=OPERATOR, timeout=5)
    answer.raise_for_status()
    return {d["id"] for d in answer.json()}


def test_discovered_devices_are_listed_apart_and_an_operator_forgets_one(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      ingest={"discovery_per_minute": 1000})
    gw = gateway_factory(cfg)
    pub = publisher_factory(mosquitto.port)
    pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 150})
    for i in range(STRAYS):
        pub.publish(f"garden/{SITE}/stray-{i:03d}/telemetry", {"x": i})
    wait_for(lambda: len(discovered_ids(gw)) == STRAYS, timeout=20, what="the strays found")

    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{gw.api}/operator")
        page.get_by_label("Token operator").fill(cfg["api"]["operator_token"])
        page.get_by_role("button", name="Masuk").click()
        expect(page.locator("#app")).to_be_visible()

        # Listed devices in the main table, discovered ones in their own, a page of them.
        expect(page.locator('#devices tr[data-device="polder-1"]')).to_be_visible()
        expect(page.locator('#devices tr[data-device^="stray-"]')).to_have_count(0)
        expect(page.locator('#discovered tr[data-device^="stray-"]')).to_have_count(100)
        expect(page.locator('#discovered tr[data-device="polder-1"]')).to_have_count(0)
        expect(page.locator("#discovered-count")).to_have_text("100 dari 103 ditampilkan")

        row = page.locator('#discovered tr[data-device="stray-000"]')
        forget = row.get_by_role("button", name="Lupakan stray-000")
        # Asked first: dismissing the question forgets nothing.
        page.once("dialog", lambda dialog: dialog.dismiss())
        forget.click()
        expect(row).to_be_visible()
        assert "stray-000" in discovered_ids(gw)

        questions: list[str] = []

        def accept(dialog: Dialog) -> None:
            questions.append(dialog.message)
            dialog.accept()

        page.once("dialog", accept)
        forget.click()
        expect(row).to_have_count(0, timeout=WAIT_MS)
        assert questions
        assert "stray-000" in questions[0]
        wait_for(lambda: "stray-000" not in discovered_ids(gw), timeout=10,
                 what="stray-000 forgotten by the gateway")
        expect(page.locator("#discovered-count")).to_have_text("100 dari 102 ditampilkan",
                                                               timeout=WAIT_MS)
        expect(page.locator('#devices tr[data-device="polder-1"]')).to_be_visible()
        expect(page.locator("#discovered-error")).to_have_text("")

        # English too.
        page.locator("#lang").click()
        expect(page.locator("#h-discovered")).to_have_text("Discovered devices")
        expect(page.locator('#discovered tr[data-device="stray-001"]').get_by_role(
            "button", name="Forget stray-001")).to_be_visible()
    finally:
        context.close()
