"""Old data is marked old (issue 14, part 2): the residents' page never keeps a status colour on a
value past the freshness limit, and says the gateway cannot be reached once its live stream has
been lost for 2 x the keepalive. Debian's headless chromium against the real gateway process;
expect() waits for each condition. Saves docs/screenshots/resident-unreachable-phone.png."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Browser, expect

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import GatewayProcess, Publisher
from tests.test_browser import PHONE, SHOTS, SITE, WAIT_MS, browser, park_config, start_park

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py


def test_an_old_level_turns_grey_and_a_lost_gateway_is_said(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    cfg = park_config(tmp_path, mosquitto, influx_server, db_name)
    cfg["pages"]["fresh_s"] = 4  # old after 4 s (900 s in a park)
    cfg["api"]["sse_keepalive_s"] = 1  # unreachable after 2 s without the stream
    gw = gateway_factory(cfg)
    pub = publisher_factory(mosquitto.port)
    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{gw.api}/")
        expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=WAIT_MS)
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 210.0})
        status = page.locator("#polder-status")
        expect(status).to_have_attribute("data-level", "siaga", timeout=WAIT_MS)
        # Nothing new for longer than fresh_s: grey, "Data lama — terakhir HH.MM", the value
        # still there to read.
        expect(status).to_have_attribute("data-level", "old", timeout=WAIT_MS)
        expect(status).to_contain_text("Data lama — terakhir")
        expect(page.locator("#polder-value")).to_have_text("210 cm")
        # A new value: its level and colour are back.
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 120.0})
        expect(status).to_have_attribute("data-level", "normal", timeout=WAIT_MS)
        expect(page.locator("#unreachable")).to_be_hidden()

        # The gateway stops: the page says so, and marks what it shows as old.
        assert gw.terminate() == 0
        banner = page.locator("#unreachable")
        expect(banner).to_be_visible(timeout=WAIT_MS)
        expect(banner).to_contain_text("Gateway tidak terjangkau")
        expect(page.locator("#wifi-status")).to_have_attribute("data-level", "old",
                                                               timeout=WAIT_MS)
        expect(status).to_have_attribute("data-level", "old", timeout=WAIT_MS)
        page.screenshot(path=SHOTS / "resident-unreachable-phone.png", full_page=True)
        # Back: the banner goes, the page follows again.
        gw.start()
        expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=WAIT_MS)
        expect(banner).to_be_hidden(timeout=WAIT_MS)
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 255.0})
        expect(status).to_have_attribute("data-level", "awas", timeout=WAIT_MS)
    finally:
        context.close()


def test_a_stopped_broker_reads_not_monitored_on_the_residents_page(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    gw, _ = start_park(tmp_path, mosquitto, influx_server, db_name, gateway_factory,
                       publisher_factory)
    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{gw.api}/")
        wifi = page.locator("#wifi-status")
        expect(wifi).to_have_attribute("data-level", "normal", timeout=WAIT_MS)
        mosquitto.stop()
        # Not "Mati": the access points may well be up; the gateway cannot see them.
        expect(wifi).to_have_attribute("data-level", "unmonitored", timeout=WAIT_MS)
        expect(wifi).to_contain_text("Tidak terpantau")
        expect(page.locator("#polder-status")).to_have_attribute("data-level", "not-measured")
        expect(page.locator("#garden-time")).to_contain_text("Data lama — terakhir",
                                                            timeout=WAIT_MS)
        page.screenshot(path=SHOTS / "resident-broker-down-phone.png", full_page=True)
    finally:
        context.close()


def test_a_silent_stream_is_taken_for_an_unreachable_gateway(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    """The gateway frozen (SIGSTOP): its socket stays open, no error reaches the page, only
    silence; as with a phone that walked out of the park's Wi-Fi."""
    cfg = park_config(tmp_path, mosquitto, influx_server, db_name)
    cfg["api"]["sse_keepalive_s"] = 1  # a ping a second when idle; silent after 2 s
    gw = gateway_factory(cfg)
    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{gw.api}/")
        expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=WAIT_MS)
        banner = page.locator("#unreachable")
        expect(banner).to_be_hidden()
        assert gw.proc is not None
        gw.proc.send_signal(signal.SIGSTOP)
        try:
            expect(banner).to_be_visible(timeout=WAIT_MS)
            expect(banner).to_contain_text("Gateway tidak terjangkau")
            # The stream itself never failed: the page knew from the silence alone.
            expect(page.locator("#live")).to_have_attribute("data-state", "on")
        finally:
            gw.proc.send_signal(signal.SIGCONT)
        expect(banner).to_be_hidden(timeout=WAIT_MS)
    finally:
        context.close()
