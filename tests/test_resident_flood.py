"""The residents' page during a flood (issue 16, parts 3, 4 and 7): while the water rises it says
how fast and when the next level comes, with its band; a sensor the gateway does not trust
shows "Sensor sedang bermasalah" and no number at all; the last hour's rain beside the level.
Debian's headless chromium against the real gateway process."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import GatewayProcess, Publisher
from tests.test_browser import PHONE, SHOTS, SITE, WAIT_MS, browser, park_config

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py

TOPIC = f"garden/{SITE}/polder-1/telemetry"
NS = 10**9


def test_a_rise_shows_the_time_to_the_next_level_and_a_fault_shows_no_number(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
    publisher_factory: Callable[[int], Publisher], browser: Browser,
) -> None:
    cfg = park_config(tmp_path, mosquitto, influx_server, db_name)
    cfg["polder"][0].update(max_rate_per_h=1000, sensor_max=500, rain={"device": "hujan-1"})
    gw = gateway_factory(cfg)
    pub = publisher_factory(mosquitto.port)
    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{gw.api}/")
        expect(page.locator("#live")).to_have_attribute("data-state", "on", timeout=WAIT_MS)
        now = httpx.get(f"{gw.api}/api/v1/resident", timeout=5).json()["time_ns"]
        # 27 minutes of readings, 3 minutes apart, rising 100 cm/h to 205 cm (Siaga).
        start = now - 30 * 60 * NS
        for i in range(10):              # +-3 cm of the sensor's own noise: a band to show
            pub.publish(TOPIC, {"level_cm": 160 + 5 * i + (3, 3, -3, -3)[i % 4],
                                "ts": (start + i * 180 * NS) // 10**6})
        pub.publish(f"garden/{SITE}/hujan-1/telemetry", {"rain_mm": 12.5})
        expect(page.locator("#polder-status")).to_have_attribute("data-level", "siaga",
                                                                 timeout=WAIT_MS)
        # About 45 cm to Awas at about 100 cm/h: near 27 minutes, said to the nearest 5, with
        # the band of the slopes.
        eta = page.locator("#polder-eta")
        # (Playwright hands the pattern to the browser: the dash itself, not \N{...}.)
        said = r"^Perkiraan Awas dalam ± (\d+) menit \((\d+)" + "\N{EN DASH}" + r"(\d+) menit\)$"
        expect(eta).to_have_text(re.compile(said), timeout=WAIT_MS)
        found = re.fullmatch(said, eta.inner_text().strip())
        assert found is not None
        best, low, high = map(int, found.groups())
        assert (low, best, high) == (20, 25, 30)     # 21.5, 25.2 and 30.4 minutes
        expect(page.locator("#polder-trend")).to_have_text(re.compile(r"^Naik \d+ cm per jam$"))
        expect(page.locator("#polder-rain-value")).to_have_text("12,5 mm", timeout=WAIT_MS)
        page.screenshot(path=SHOTS / "resident-eta-phone.png", full_page=True)

        # The sensor goes out of its range twice: not believed, no number, no estimate.
        for ago_s in (60, 30):
            pub.publish(TOPIC, {"level_cm": 9000, "ts": (now - ago_s * NS) // 10**6})
        status = page.locator("#polder-status")
        expect(status).to_have_attribute("data-level", "fault", timeout=WAIT_MS)
        expect(status).to_contain_text("Sensor sedang bermasalah")
        expect(page.locator("#polder-value")).to_have_text("\N{EN DASH}")
        expect(eta).to_be_hidden()
        expect(page.locator("#polder-time")).to_contain_text("sampai sensornya pulih")
        expect(page.locator("#polder-guidance")).to_be_hidden()
        page.screenshot(path=SHOTS / "resident-sensor-fault-phone.png", full_page=True)

        # Trusted again: the number comes back.
        pub.publish(TOPIC, {"level_cm": 206, "ts": now // 10**6})
        expect(page.locator("#polder-value")).to_have_text("206 cm", timeout=WAIT_MS)
    finally:
        context.close()
