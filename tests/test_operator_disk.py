"""The operator page says what is wrong with the SD card: under the reserve, and a damaged file
set aside at start, listed until an operator acknowledges it. Debian's headless chromium
(Playwright) against the real gateway process; expect() waits, no sleeps."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import OPERATOR, GatewayProcess, base_config
from tests.test_browser import PHONE, browser
from tests.test_damaged_files import garble, make_files

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py


def test_the_operator_page_shows_the_card_and_the_damaged_file_until_acknowledged(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess], browser: Browser,
) -> None:
    # A reserve larger than any disk here: the card reads as "low" for the whole test.
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      spool={"commit_interval_s": 0.02, "min_free_bytes": 1 << 50})
    data_dir = Path(cfg["data_dir"])
    make_files(data_dir)
    garble(data_dir / "spool.sqlite3")
    gw = gateway_factory(cfg)
    disk = gw.status()["disk"]
    assert disk["state"] == "low"
    (notice,) = disk["notices"]

    context = browser.new_context(viewport=PHONE, locale="id-ID")
    page = context.new_page()
    try:
        page.goto(f"{gw.api}/operator")
        page.get_by_label("Token operator").fill(cfg["api"]["operator_token"])
        page.get_by_role("button", name="Masuk").click()
        section = page.locator("#disk-section")
        expect(section).to_be_visible()
        expect(page.locator("#disk-state")).to_contain_text("di bawah cadangan")
        item = page.locator("#disk-notices li")
        expect(item).to_have_count(1)
        expect(item).to_contain_text("spool")
        expect(item).to_contain_text(str(notice["set_aside_as"]))
        expect(item).to_contain_text(f"{notice['salvaged']:,}".replace(",", "."))
        item.get_by_role("button", name="Sudah dibaca").click()
        expect(item).to_have_count(0)
        expect(section).to_be_visible()  # still low: that is not acknowledged away
    finally:
        context.close()
    answer = httpx.get(f"{gw.api}/api/v1/status", headers=OPERATOR, timeout=5).json()
    assert answer["disk"]["notices"] == []
