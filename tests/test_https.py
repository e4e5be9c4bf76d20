"""HTTPS on the gateway itself (api.tls): real TLS clients, and plain HTTP that never takes a token.

With TLS on, plain HTTP keeps only the residents' page and the public API; every operator path
there is a redirect to HTTPS and a credential sent in clear is never looked at.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import os
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from playwright.sync_api import expect, sync_playwright

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from gateway.web import tls
from gateway.web.auth import COOKIE
from tests.conftest import (
    OPERATOR,
    OPERATOR_TOKEN,
    ROOT,
    GatewayProcess,
    base_config,
    gateway_in_process,
    write_config,
)
from tests.test_api import SITE, park
from tests.test_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = pytest.mark.timeout(90)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def tls_park(tmp_path: Path, mosquitto: PrivateMosquitto, influx: PrivateInfluxDB, db: str,
             **api: Any) -> dict[str, Any]:
    cfg = park(tmp_path, mosquitto, influx, db)
    cfg["api"].update({"tls": {"self_signed": True, "port": free_port()}, **api})
    return cfg


def peer_fingerprint(port: int, cafile: Path) -> str:
    ctx = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as s:
        der = s.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).digest().hex(":").upper()


async def test_self_signed_certificate_verifies_pins_and_serves_the_operator_side(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = tls_park(tmp_path, mosquitto, influx_server, db_name)
    port = cfg["api"]["tls"]["port"]
    caplog.set_level("INFO", logger="gateway.app.gateway")
    async with gateway_in_process(tmp_path, cfg):
        cert = Path(cfg["data_dir"]) / "tls" / "gateway.crt"
        key = Path(cfg["data_dir"]) / "tls" / "gateway.key"
        assert key.stat().st_mode & 0o777 == 0o600
        fingerprint = tls.file_fingerprint(cert)
        assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", fingerprint)
        assert fingerprint in caplog.text  # logged at INFO for the technician
        # What a client sees on the wire is that very certificate (the technician's check).
        assert await asyncio.to_thread(peer_fingerprint, port, cert) == fingerprint
        verify = ssl.create_default_context(cafile=str(cert))
        for host in ("localhost", "127.0.0.1"):
            async with httpx.AsyncClient(verify=verify, timeout=5) as https:
                r = await https.get(f"https://{host}:{port}/health")
                assert r.status_code == 200
                assert r.headers["strict-transport-security"].startswith("max-age=")
        made = x509.load_pem_x509_certificate(cert.read_bytes())
        san = made.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names = san.get_values_for_type(x509.DNSName)
        assert {"localhost", socket.gethostname(), f"{socket.gethostname()}.local"} <= set(names)
        assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)

        base = f"https://localhost:{port}"
        async with httpx.AsyncClient(base_url=base, verify=verify, timeout=5) as https:
            assert (await https.get("/api/v1/status")).status_code == 401
            assert (await https.get("/api/v1/status", headers=OPERATOR)).status_code == 200
            signed = await https.post("/api/v1/session", json={"token": OPERATOR_TOKEN})
            assert signed.status_code == 204
            set_cookie = signed.headers["set-cookie"]
            assert "Secure" in set_cookie
            assert "HttpOnly" in set_cookie
            assert (await https.get("/api/v1/devices")).status_code == 200  # by the cookie

        # An unverified client (a wrong pin) is refused by the TLS layer itself.
        async with httpx.AsyncClient(verify=ssl.create_default_context(), timeout=5) as other:
            with pytest.raises(httpx.ConnectError):
                await other.get(f"{base}/health")


def operator_requests(schema: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (method, path) of the schema that is not public-only, path parameters filled."""
    found = []
    for path, item in schema["paths"].items():
        for method, op in item.items():
            if method not in ("get", "post", "put", "patch", "delete"):
                continue
            if op.get("tags") == ["public"] or path == "/api/v1/events":
                continue  # the stream is public on HTTP: checked below, it carries no more
            found.append((method.upper(), re.sub(r"\{[^}]+\}", "x", path)))
    return found


async def test_plain_http_serves_no_operator_route_with_any_credential(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = tls_park(tmp_path, mosquitto, influx_server, db_name)
    port = cfg["api"]["tls"]["port"]
    async with gateway_in_process(tmp_path, cfg) as gw:
        cert = Path(cfg["data_dir"]) / "tls" / "gateway.crt"
        verify = ssl.create_default_context(cafile=str(cert))
        https_base = f"https://localhost:{port}"
        async with httpx.AsyncClient(base_url=https_base, verify=verify, timeout=5) as https:
            schema = (await https.get("/openapi.json", headers=OPERATOR)).json()
            signed = await https.post("/api/v1/session", json={"token": OPERATOR_TOKEN})
            cookie = signed.cookies[COOKIE]
        routes = operator_requests(schema)
        assert len(routes) >= 8, routes
        http_base = str(gw.http.base_url)
        served = []
        async with httpx.AsyncClient(base_url=http_base, timeout=5) as plain:
            for method, path in routes:
                for creds in ({"Authorization": f"Bearer {OPERATOR_TOKEN}"},
                              {"Cookie": f"{COOKIE}={cookie}"}):
                    body = {"json": {"token": OPERATOR_TOKEN}} if method == "POST" else {}
                    r = await plain.request(method, path, headers=creds, **body)  # type: ignore[arg-type]
                    if r.status_code not in (307, 308):
                        served.append((method, path, r.status_code, r.text[:80]))
                        continue
                    location = r.headers["location"]
                    assert location.startswith(f"https://127.0.0.1:{port}/"), location
                    assert location.endswith(path), location
                    assert "set-cookie" not in r.headers
            # The operator page itself and the history of a series that is not public.
            for path in ("/operator", "/metrics", "/openapi.json", "/docs",
                         "/api/v1/history?device=ap-1&field=clients"):
                r = await plain.get(path, headers=OPERATOR)
                assert r.status_code == 308, (path, r.status_code)
            # Public stays public, whatever credential comes along (and it is not evaluated).
            refused_before = gw.auth.refused
            for path in ("/health", "/api/v1/resident", "/api/v1/sites",
                         f"/api/v1/sites/{SITE}", "/", "/static/common.js",
                         "/api/v1/history?device=polder-1&field=level_cm"):
                r = await plain.get(path, headers={"Authorization": "Bearer wrong-token-xyz"})
                assert r.status_code == 200, (path, r.status_code)
            assert gw.auth.refused == refused_before  # the wrong token was never compared
            # The event stream on HTTP is the public one even with the token and the cookie.
            async with plain.stream("GET", "/api/v1/events", headers={
                    **OPERATOR, "Cookie": f"{COOKIE}={cookie}"}) as stream:
                assert stream.status_code == 200
                async for _ in stream.aiter_bytes():
                    break
                stats = gw.events.statistics()
                assert stats["clients"] == 1
                assert stats["operator_clients"] == 0
        assert served == [], served


async def test_operator_over_http_serves_the_old_way_and_is_warned_about(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = tls_park(tmp_path, mosquitto, influx_server, db_name, operator_over_http=True)
    path = write_config(tmp_path / "gw.yaml", cfg)
    check = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "gateway", "check-config", "--config",
                         str(path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert check.returncode == 0, check.stderr
    assert "operator_over_http" in check.stdout + check.stderr
    async with gateway_in_process(tmp_path, cfg) as gw:
        assert (await gw.http.get("/api/v1/status")).status_code == 200
        async with httpx.AsyncClient(base_url=str(gw.http.base_url), timeout=5) as bare:
            assert (await bare.get("/api/v1/status")).status_code == 401


def test_certificate_is_reused_while_good_and_made_anew_when_names_change(
    tmp_path: Path,
) -> None:
    names = ["localhost", "taman", "taman.local"]
    addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.0.0.7")]
    first = tls.self_signed(tmp_path, names=names, addresses=addresses)
    assert first.made
    again = tls.self_signed(tmp_path, names=names, addresses=addresses)
    assert not again.made
    assert again.fingerprint == first.fingerprint
    moved = tls.self_signed(tmp_path, names=names,
                            addresses=[*addresses, ipaddress.ip_address("10.0.0.8")])
    assert moved.made
    assert moved.fingerprint != first.fingerprint
    late = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=tls.VALID_DAYS - 10)
    renewed = tls.self_signed(tmp_path, names=names,
                              addresses=[*addresses, ipaddress.ip_address("10.0.0.8")], now=late)
    assert renewed.made
    assert (tmp_path / tls.KEY_NAME).stat().st_mode & 0o777 == 0o600


def test_chromium_signs_in_on_the_operator_page_over_https(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    cfg = tls_park(tmp_path, mosquitto, influx_server, db_name)
    port = cfg["api"]["tls"]["port"]
    gw = gateway_factory(cfg)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[*CHROMIUM_ARGS, "--ignore-certificate-errors"])
        try:
            context = browser.new_context(ignore_https_errors=True, locale="id-ID")
            page = context.new_page()
            # Asked on plain HTTP, the operator page moves to HTTPS before anything is typed.
            page.goto(f"{gw.api}/operator")
            assert page.url == f"https://127.0.0.1:{port}/operator"
            page.get_by_label("Token operator").fill(OPERATOR_TOKEN)
            page.get_by_role("button", name="Masuk").click()
            expect(page.locator("#app")).to_be_visible()
            expect(page.locator('#devices tr[data-device="polder-1"]')).to_be_attached()
            cookies = [c for c in context.cookies() if c["name"] == COOKIE]
            assert cookies
            assert cookies[0]["secure"]
            assert cookies[0]["httpOnly"]
            # The same browser on plain HTTP: the residents' page, never the operator API.
            assert page.request.get(f"{gw.api}/api/v1/session",
                                    max_redirects=0).status == 308
            context.close()
        finally:
            browser.close()


def test_bare_config_keeps_plain_http_as_before(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name)
    path = write_config(tmp_path / "gw.yaml", cfg)
    check = subprocess.run([sys.executable, "-m", "gateway", "check-config", "--config",
                            str(path)], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert check.returncode == 0
    assert "operator_over_http" not in check.stdout + check.stderr


async def test_doctor_prints_the_served_fingerprint_and_warns_on_operator_over_http(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = tls_park(tmp_path, mosquitto, influx_server, db_name, operator_over_http=True)
    path = write_config(tmp_path / "gw.yaml", cfg)
    env_file = tmp_path / "secrets.env"
    env_file.write_text("", encoding="utf-8")
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GARDEN_GATEWAY_")}
    argv = [sys.executable, "-m", "gateway.ops.doctor", "--config", str(path), "--env-file",
            str(env_file), "--timeout", "2", "--skip", "influx", "--skip", "broker",
            "--skip", "systemd", "--skip", "clock", "--skip", "disk"]
    async with gateway_in_process(tmp_path, cfg):
        fingerprint = tls.file_fingerprint(Path(cfg["data_dir"]) / "tls" / "gateway.crt")
        done = await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True,
                                       timeout=60, cwd=ROOT, env=clean)
    https_line = next(line for line in done.stdout.splitlines() if "api https://" in line)
    assert https_line.startswith("OK"), done.stdout
    assert fingerprint in https_line
    config_line = next(line for line in done.stdout.splitlines() if " config" in line)
    assert config_line.startswith("WARN"), done.stdout
    assert "api.operator_over_http is true" in done.stdout


def silent_tls_client_closed_after(port: int) -> float:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        started = time.monotonic()
        assert s.recv(100) == b""  # no handshake sent: the gateway hangs up
        return time.monotonic() - started


async def test_a_tls_client_that_never_shakes_hands_is_closed_like_a_slow_head(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = tls_park(tmp_path, mosquitto, influx_server, db_name, header_timeout_s=1.0)
    async with gateway_in_process(tmp_path, cfg):
        took = await asyncio.to_thread(silent_tls_client_closed_after, cfg["api"]["tls"]["port"])
        assert 0.5 < took < 5  # asyncio's own default would be 60 s
