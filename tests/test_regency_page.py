"""The regency's public page (issue 17, part 2): every park, the worst first, a park not up with
its polder greyed and the time it was last heard, nothing that names a device. Debian's headless
chromium against ``garden-gateway regency`` run as its own process and a real Mosquitto."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, expect

from gateway.testing.stack import PrivateMosquitto, free_port
from tests.conftest import Publisher, wait_for
from tests.test_browser import PHONE, SHOTS, WAIT_MS, browser
from tests.test_regency import summary

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py
ROOT = Path(__file__).resolve().parent.parent
OPERATOR_TOKEN = "regency-page-token-0123456789"


@pytest.fixture
def regency(tmp_path: Path, mosquitto: PrivateMosquitto) -> Iterator[str]:
    port = free_port()
    path = tmp_path / "regency.yaml"
    path.write_text(yaml.safe_dump({
        "data_dir": str(tmp_path / "regency"),
        "mqtt": {"host": "127.0.0.1", "port": mosquitto.port, "client_id": "regency-page"},
        "api": {"host": "127.0.0.1", "port": port, "operator_token": OPERATOR_TOKEN},
        "stale_after_s": 300}))
    log = (tmp_path / "regency.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "regency", "--config", str(path)],
                            stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "regency.log").read_text()
        try:
            return httpx.get(f"{url}/health", timeout=1).json()["mqtt_connected"] is True
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, timeout=20, what="the regency service")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


def test_the_regency_page_puts_the_worst_first_and_greys_what_is_old(
    regency: str, mosquitto: PrivateMosquitto, publisher_factory: Callable[[int], Publisher],
    browser: Browser,
) -> None:
    pub = publisher_factory(mosquitto.port)
    for site, online, level, word in (("taman-sangatta", True, 0.62, "normal"),
                                      ("taman-bengalon", False, 1.2, "siaga"),
                                      ("taman-rantau", True, 1.41, "awas")):
        pub.publish(f"garden/{site}/gateway/gw-{site}/status",
                    b"online" if online else b"offline", retain=True)
        pub.publish(f"garden/{site}/summary",
                    json.dumps(summary(site, level=level, alert_level=word)), retain=True)
    wait_for(lambda: len(httpx.get(f"{regency}/api/v1/parks", timeout=5).json()) == 3,
             timeout=20, what="three parks")
    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{regency}/")
        cards = page.locator("#parks li.park")
        expect(cards).to_have_count(3, timeout=WAIT_MS)
        assert [c.get_attribute("data-site") for c in cards.all()] == [
            "taman-bengalon", "taman-rantau", "taman-sangatta"]
        down = cards.nth(0)
        expect(down).to_contain_text("Gateway mati")
        # Its polder: greyed, with when it was last heard, never "Siaga" as if now.
        expect(down.locator(".polder")).to_have_attribute("data-level", "old")
        expect(down.locator(".polder")).to_contain_text("Data lama — terakhir")
        expect(down.locator(".polder")).not_to_contain_text("Siaga")
        expect(down).not_to_contain_text("perangkat menyala")  # old counts are not shown
        expect(cards.nth(1).locator(".polder")).to_have_attribute("data-level", "awas")
        expect(cards.nth(1).locator(".polder")).to_contain_text("Awas · 1,41 m")
        expect(page.locator("#summary")).to_have_text("2 dari 3 taman terpantau")
        assert "polder-1" not in page.inner_text("body")
        page.screenshot(path=SHOTS / "regency-phone.png", full_page=True)
        page.get_by_role("button", name="English").click()
        expect(down).to_contain_text("Gateway down")
        expect(page.locator("#summary")).to_have_text("2 of 3 parks monitored")
    finally:
        context.close()


def test_the_operators_page_lists_parks_outages_and_the_monthly_report(
    regency: str, mosquitto: PrivateMosquitto, publisher_factory: Callable[[int], Publisher],
    browser: Browser,
) -> None:
    pub = publisher_factory(mosquitto.port)
    for site in ("taman-sangatta", "taman-bengalon"):
        pub.publish(f"garden/{site}/gateway/gw-{site}/status", b"online", retain=True)
        pub.publish(f"garden/{site}/summary", json.dumps(summary(site, up=2, total=3)),
                    retain=True)
    wait_for(lambda: len(httpx.get(f"{regency}/api/v1/parks", timeout=5).json()) == 2,
             timeout=20, what="two parks")
    pub.publish("garden/taman-bengalon/gateway/gw-taman-bengalon/status", b"offline",
                retain=True)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{regency}/operator")
        page.get_by_label("Token operator").fill("wrong-token-0000000000")
        page.get_by_role("button", name="Masuk").click()
        expect(page.locator("#login-error")).to_have_text("Token salah. Periksa dan coba lagi.",
                                                         timeout=WAIT_MS)
        page.get_by_label("Token operator").fill(OPERATOR_TOKEN)
        page.get_by_role("button", name="Masuk").click()
        down = page.locator('#parks tr[data-site="taman-bengalon"]')
        expect(down).to_have_attribute("data-state", "down", timeout=WAIT_MS)
        expect(down).to_contain_text("Gateway mati")
        expect(down).to_contain_text("2/3 menyala · 1 mati · 0 tidak terpantau")
        expect(page.locator("#parks tbody tr").first).to_have_attribute(
            "data-site", "taman-bengalon")
        expect(page.locator('#outages li[data-site="taman-bengalon"]')).to_contain_text(
            "masih berlangsung")
        report = page.locator('#report tr[data-site="taman-sangatta"]')
        expect(report.first).to_contain_text("100 %")
        page.screenshot(path=SHOTS / "regency-operator-desktop.png", full_page=True)
        with page.expect_download() as download:
            page.get_by_role("button", name="Unduh CSV").click()
        text = Path(download.value.path()).read_text(encoding="utf-8")
        assert text.splitlines()[0] == "month,site,device,up_s,down_s,unobserved_s,uptime_pct"
        assert any(line.split(",")[1] == "taman-bengalon" for line in text.splitlines()[1:])
    finally:
        context.close()
