"""Awas is loud (issue 14, part 3): at Siaga and Awas the polder card goes first on a phone and
what to do is shown in full, with the number to call as a big tap target; back to normal, the
usual order. Debian's headless chromium against the real gateway process."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, expect

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import GatewayProcess, Publisher
from tests.test_browser import PHONE, SHOTS, SITE, WAIT_MS, browser, park_config

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py

FIRST_CARD = "document.querySelector('main .grid').firstElementChild.id"


def test_awas_puts_the_polder_first_with_what_to_do_and_the_number_to_call(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    cfg = park_config(tmp_path, mosquitto, influx_server, db_name)
    cfg["polder"][0]["emergency_number"] = "0549 21112"  # the regency's BPBD, say
    gw = gateway_factory(cfg)
    pub = publisher_factory(mosquitto.port)
    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{gw.api}/")
        expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=WAIT_MS)
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 120.0})
        expect(page.locator("#polder-status")).to_have_attribute("data-level", "normal",
                                                                 timeout=WAIT_MS)
        assert page.evaluate(FIRST_CARD) == "wifi"
        expect(page.locator("#polder-guidance")).to_be_hidden()

        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 262.0})
        expect(page.locator("#polder-status")).to_have_attribute("data-level", "awas",
                                                                 timeout=WAIT_MS)
        assert page.evaluate(FIRST_CARD) == "polder"
        guidance = page.locator("#polder-guidance")
        expect(guidance).to_be_visible()
        expect(guidance).to_contain_text("pindah ke tempat yang lebih tinggi")
        call = page.locator("#polder-call")
        expect(call).to_have_text("Darurat: telepon 0549 21112")
        expect(call).to_have_attribute("href", "tel:054921112")
        box = call.bounding_box()
        assert box is not None
        assert box["height"] >= 48
        assert box["width"] >= 48
        expect(page.locator("#polder details.legend")).to_have_attribute("open", "")
        # The chart ends at the headline's value (the history's rollups come once a minute),
        # and its time labels say the day as well as the hour.
        chart = page.locator("#chart-polder svg")
        expect(chart).to_have_attribute("aria-label", re.compile(r"terakhir 262"),
                                        timeout=WAIT_MS)
        first_tick = chart.locator("text.tick").filter(has_text=re.compile(r"\d[.:]\d\d"))
        expect(first_tick.first).to_have_text(re.compile(r"^\d{1,2} \w{3}"))
        page.screenshot(path=SHOTS / "resident-awas-phone.png", full_page=True)
        # Every visible tap target on the page is 48 px high at least (the skip link shows
        # only on keyboard focus).
        small = page.evaluate("""() => [...document.querySelectorAll('a, button, select, summary')]
            .filter(n => n.offsetParent !== null && !n.classList.contains('skip'))
            .map(n => [n.textContent.trim().slice(0, 30), n.getBoundingClientRect().height])
            .filter(([, h]) => h < 48)""")
        assert small == []

        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 205.0})
        expect(page.locator("#polder-status")).to_have_attribute("data-level", "siaga",
                                                                 timeout=WAIT_MS)
        expect(guidance).to_contain_text("Jauhi tepi polder")
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 110.0})
        expect(page.locator("#polder-status")).to_have_attribute("data-level", "normal",
                                                                 timeout=WAIT_MS)
        expect(guidance).to_be_hidden()
        assert page.evaluate(FIRST_CARD) == "wifi"
    finally:
        context.close()
