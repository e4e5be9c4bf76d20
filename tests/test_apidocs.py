"""API docs that work offline (issue 14, part 5): /docs is the gateway's own page, its files
served by the gateway under the pages' CSP (no CDN, no inline script), and it lays out every
operation of /openapi.json. Debian's headless chromium against the real gateway process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Browser, expect

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from gateway.web.api import CSP
from tests.conftest import GatewayProcess, base_config
from tests.test_browser import browser

__all__ = ["browser"]  # the module-scoped chromium fixture, shared with test_browser.py


def test_docs_render_every_operation_from_the_gateways_own_files(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess], browser: Browser,
) -> None:
    gw = gateway_factory(base_config(tmp_path, mosquitto, influx_server, db_name))
    docs = httpx.get(f"{gw.api}/docs", timeout=5)
    assert docs.status_code == 200
    assert docs.headers["content-security-policy"] == CSP
    assert "<script>" not in docs.text  # no inline script
    assert "cdn" not in docs.text.lower()
    assert httpx.get(f"{gw.api}/redoc", timeout=5).status_code == 404
    schema = httpx.get(f"{gw.api}/openapi.json", timeout=5).json()
    operations = {f"{m.upper()} {p}" for p, ops in schema["paths"].items() for m in ops}

    context = browser.new_context()
    page = context.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{gw.api}/docs")
        expect(page.locator("#api-title")).to_contain_text("Garden Gateway")
        expect(page.locator("section.op")).to_have_count(len(operations))
        shown = set(page.locator("section.op").evaluate_all(
            "nodes => nodes.map(n => n.getAttribute('data-op'))"))
        assert shown == operations
        expect(page.locator('section.op[data-op="GET /api/v1/devices"]')).to_contain_text("limit")
        expect(page.locator("#api-error")).to_be_hidden()
    finally:
        context.close()
    assert all(url.startswith(gw.api) for url in requests), requests
    assert blocked == []
