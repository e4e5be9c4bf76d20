"""The API's promises: who may read what, the operator token, CORS, live events, metrics and a
complete OpenAPI schema; against the real gateway, broker and InfluxDB."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.core.errors import StackError
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from gateway.web.auth import COOKIE, OperatorAuth
from tests.conftest import OPERATOR_TOKEN, Publisher, base_config, gateway_in_process, until

SITE = "taman-uji"
S = 10**9
OPERATOR_ONLY = ["/api/v1/status", "/api/v1/devices", "/api/v1/outages",
                 "/api/v1/dead-letters", "/api/v1/quarantine", "/metrics",
                 "/api/v1/history?device=polder-1&field=battery_v"]
PUBLIC = ["/health", "/api/v1/resident", "/api/v1/sites", f"/api/v1/sites/{SITE}",
          "/api/v1/history?device=polder-1&field=level_cm", "/", "/operator",
          "/static/common.js", "/openapi.json"]


def park(tmp_path: Path, mosquitto: PrivateMosquitto, influx: PrivateInfluxDB, db: str,
         **overrides: Any) -> dict[str, Any]:
    return base_config(
        tmp_path, mosquitto, influx, db,
        devices=[{"id": "ap-1", "kind": "wifi_ap", "site": SITE, "interval_s": 60},
                 {"id": "ap-2", "kind": "wifi_ap", "site": SITE, "interval_s": 60},
                 {"id": "polder-1", "kind": "polder", "site": SITE, "interval_s": 60},
                 {"id": "kebun-1", "kind": "garden_env", "site": SITE, "interval_s": 60}],
        pages={"name": "Taman Uji", "garden": {"device": "kebun-1"}},
        # These tests set levels at will: no spike check (readings a few µs apart may jump
        # 10 cm: 1e15 cm/h), no hold (tests/test_flood_watch.py).
        polder=[{"device": "polder-1", "field": "level_cm", "name": "Bukit Pelangi",
                 "thresholds": {"waspada": 150, "siaga": 200, "awas": 250},
                 "max_rate_per_h": 1e15, "min_hold_s": 0}],
        **overrides)


def bare(gw: Any) -> httpx.AsyncClient:
    """A client without the operator token (the suite's usual client carries it)."""
    return httpx.AsyncClient(base_url=str(gw.http.base_url), timeout=5)


async def test_operator_endpoints_refuse_without_the_token_and_public_ones_answer(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = park(tmp_path, mosquitto, influx_server, db_name)
    cfg["api"]["token_attempts"] = 1000  # many wrong tokens from one address: see test_auth.py
    async with gateway_in_process(tmp_path, cfg) as gw, bare(gw) as anyone:
        for path in OPERATOR_ONLY:
            refused = await anyone.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"] == "Bearer"
            assert refused.json() == {"detail": "operator token required"}
            wrong = await anyone.get(path, headers={"Authorization": "Bearer " + "x" * 30})
            assert wrong.status_code == 401, path
            assert (await gw.http.get(path)).status_code == 200, path
        for path in PUBLIC:
            assert (await anyone.get(path)).status_code == 200, path
        # Public endpoints only read: nothing public accepts a write.
        for path in ("/api/v1/resident", "/api/v1/devices", "/api/v1/status"):
            assert (await anyone.post(path, json={})).status_code == 405
        assert gw.auth.refused >= len(OPERATOR_ONLY)


async def test_the_cookie_session_signs_in_and_out_and_cannot_be_forged(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    async with gateway_in_process(tmp_path, park(tmp_path, mosquitto, influx_server, db_name)
                                  ) as gw, bare(gw) as browser:
        assert (await browser.get("/api/v1/session")).status_code == 401
        wrong = await browser.post("/api/v1/session", json={"token": OPERATOR_TOKEN + "!"})
        assert wrong.status_code == 401
        assert COOKIE not in browser.cookies
        right = await browser.post("/api/v1/session", json={"token": OPERATOR_TOKEN})
        assert right.status_code == 204
        set_cookie = right.headers["set-cookie"].lower()
        assert "httponly" in set_cookie
        assert "samesite=strict" in set_cookie
        assert OPERATOR_TOKEN not in right.headers["set-cookie"]  # never the token itself
        assert (await browser.get("/api/v1/session")).json()["operator"] is True
        assert (await browser.get("/api/v1/devices")).status_code == 200
        # A cookie made up, or one whose session id was edited, is refused.
        value = browser.cookies[COOKIE]
        session_id, _, signature = value.partition(".")
        edited = ("B" if session_id[0] == "A" else "A") + session_id[1:]
        async with bare(gw) as forger:
            for forged in (f"{edited}.{signature}", "9999999999.00", "x", ""):
                answer = await forger.get("/api/v1/devices",
                                          headers={"Cookie": f"{COOKIE}={forged}"})
                assert answer.status_code == 401, forged
            copied = await forger.get("/api/v1/devices", headers={"Cookie": f"{COOKIE}={value}"})
            assert copied.status_code == 200  # the real one works from anywhere it is copied
        out = await browser.delete("/api/v1/session")
        assert out.status_code == 204
        assert "max-age=0" in out.headers["set-cookie"].lower()
        assert COOKIE not in browser.cookies
        assert (await browser.get("/api/v1/devices")).status_code == 401


def test_sessions_end_by_themselves_and_with_a_new_token() -> None:
    clock = FakeClock(start_ns=1_800_000_000 * 10**9)
    auth = OperatorAuth("a" * 20, max_age_s=3600, clock=clock)
    cookie = auth.new_session()
    assert auth.session_ok(cookie)
    clock.advance(3599)
    assert auth.session_ok(cookie)
    clock.advance(2)
    assert not auth.session_ok(cookie)
    assert not OperatorAuth("b" * 20, max_age_s=3600, clock=clock).session_ok(
        OperatorAuth("b" * 20, max_age_s=3600).new_session()[:-1] + "0")
    other = OperatorAuth("c" * 20, max_age_s=3600, clock=clock)
    assert not other.session_ok(auth.new_session())  # the token changed: signed out
    assert not OperatorAuth(None, max_age_s=60).token_ok("")
    assert not OperatorAuth(None, max_age_s=60).session_ok(cookie)


async def test_without_a_configured_token_the_operator_side_is_closed_and_says_why(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = park(tmp_path, mosquitto, influx_server, db_name)
    del cfg["api"]["operator_token"]
    async with gateway_in_process(tmp_path, cfg) as gw:
        refused = await gw.http.get("/api/v1/status")
        assert refused.status_code == 401
        assert "api.operator_token" in refused.json()["detail"]
        session = await gw.http.post("/api/v1/session", json={"token": ""})
        assert session.status_code == 422
        assert (await gw.http.get("/api/v1/resident")).status_code == 200


async def test_cors_is_off_by_default_and_allows_only_the_configured_origins(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    origin = {"Origin": "https://dashboard.kutaitimurkab.go.id"}
    async with gateway_in_process(tmp_path, park(tmp_path, mosquitto, influx_server, db_name)
                                  ) as gw:
        answer = await gw.http.get("/api/v1/resident", headers=origin)
        assert answer.status_code == 200
        assert "access-control-allow-origin" not in answer.headers
        preflight = await gw.http.options("/api/v1/resident", headers={
            **origin, "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in preflight.headers
    cfg = park(tmp_path, mosquitto, influx_server, db_name,
               api={"cors_origins": ["https://dashboard.kutaitimurkab.go.id"]})
    async with gateway_in_process(tmp_path, cfg) as gw:
        answer = await gw.http.get("/api/v1/resident", headers=origin)
        assert answer.headers["access-control-allow-origin"] == origin["Origin"]
        other = await gw.http.get("/api/v1/resident", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


async def test_resident_view_history_and_headers(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    clock = FakeClock(time.time_ns())
    pub: Publisher = publisher_factory(mosquitto.port)
    cfg = park(tmp_path, mosquitto, influx_server, db_name, liveness={"hold_s": 0})
    cfg["subscriptions"].append({"name": "status", "topic": "garden/+/+/status",
                                 "format": "native"})
    async with gateway_in_process(tmp_path, cfg, clock) as gw, bare(gw) as anyone:
        body = (await anyone.get("/api/v1/resident")).json()
        assert body["wifi"] == {"status": "unknown", "aps_up": 0, "aps_total": 2,
                                "clients_now": None}
        assert body["polder"]["level"] == "unknown"
        assert body["polder"]["value"] is None
        t0 = clock.now_ns() / S
        for minutes_ago, level in ((30, 140.0), (20, 150.0), (10, 199.9), (0, 250.0)):
            pub.publish(f"garden/{SITE}/polder-1/telemetry",
                        {"level_cm": level, "ts": t0 - minutes_ago * 60})
        pub.publish(f"garden/{SITE}/ap-1/telemetry", {"clients": 5})
        pub.publish(f"garden/{SITE}/ap-2/telemetry", {"clients": 9})
        pub.publish(f"garden/{SITE}/kebun-1/telemetry",
                    {"temperature_c": 29.4, "humidity_pct": 78.2})
        await until(lambda: gw.resident_view().wifi.clients_now == 14)
        body = (await anyone.get("/api/v1/resident")).json()
        assert body["name"] == "Taman Uji"
        assert body["wifi"] == {"status": "normal", "aps_up": 2, "aps_total": 2,
                                "clients_now": 14}
        assert body["polder"]["value"] == 250.0
        assert body["polder"]["level"] == "awas"
        assert body["polder"]["thresholds"] == {"waspada": 150, "siaga": 200, "awas": 250}
        assert body["garden"]["temperature_c"] == 29.4
        assert set(body["charts"]) == {"clients", "polder", "temperature", "humidity"}
        assert "ap-1" not in json.dumps(body)  # residents see no device list
        # The residents' chart of the polder: one-minute rollups of the readings' own times.
        history = (await anyone.get("/api/v1/history", params={
            "device": "polder-1", "field": "level_cm", "range": "1h"})).json()
        assert history["step_s"] == 60
        assert [p[1] for p in history["points"]] == [140.0, 150.0, 199.9, 250.0]
        week = (await gw.http.get("/api/v1/history", params={
            "device": "polder-1", "field": "level_cm", "range": "7d"})).json()
        assert week["step_s"] == 900
        assert sum(1 for _ in week["points"]) in (3, 4)  # 40 minutes span 3 or 4 quarters
        bad = await anyone.get("/api/v1/history", params={
            "device": "polder-1", "field": "level_cm", "range": "1y"})
        assert bad.status_code == 422
        # An AP that says it is gone turns the Wi-Fi word into "gangguan".
        pub.publish(f"garden/{SITE}/ap-2/status", "offline")
        await until(lambda: gw.resident_view().wifi.status == "gangguan")
        assert gw.resident_view().wifi.clients_now == 5
        page = await anyone.get("/")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        assert (await anyone.get("/api/v1/resident")).headers["cache-control"] == "no-store"
        big = await anyone.get("/static/operator.js", headers={"Accept-Encoding": "gzip"})
        assert big.headers["content-encoding"] == "gzip"


Events = list[tuple[str, dict[str, Any]]]


async def events_until(client: httpx.AsyncClient, trigger: Callable[[], object],
                       done: Callable[[Events], bool]) -> Events:
    """Open the stream, then trigger, then read events until ``done`` says enough."""
    found: Events = []
    async with asyncio.timeout(10), client.stream("GET", "/api/v1/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.aiter_lines()
        # The first line comes once the gateway has subscribed this stream: trigger after it.
        assert await anext(lines) == "retry: 3000"
        trigger()
        kind = None
        async for line in lines:
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind is not None:
                found.append((kind, json.loads(line[6:])))
                if done(found):
                    return found
    raise AssertionError(f"the stream ended: {found}")


async def test_live_events_public_and_operator(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    pub: Publisher = publisher_factory(mosquitto.port)
    cfg = park(tmp_path, mosquitto, influx_server, db_name, liveness={"hold_s": 0})
    cfg["subscriptions"].append({"name": "status", "topic": "garden/+/+/status",
                                 "format": "native"})
    async with gateway_in_process(tmp_path, cfg) as gw, bare(gw) as anyone:
        # An operator's stream: readings (one event per device per burst) and state changes.
        def last_level(got: Events, device: str = "polder-1") -> Any:
            readings = [d for k, d in got if k == "reading" and d["device"] == device]
            return readings[-1]["fields"].get("level_cm") if readings else None

        def burst() -> None:
            for i in range(20):
                pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 100 + i})

        got = await events_until(gw.http, burst, lambda got: last_level(got) == 119
                                 and any(k == "state" for k, _ in got))
        assert sum(k == "reading" for k, _ in got) < 20
        states = [d for k, d in got if k == "state"]
        assert states[0]["device"] == "polder-1"
        assert states[0]["state"] == "online"
        # A resident's stream: the park's summary when it changes, never device events.
        def polder(got: Events) -> Any:
            return got[-1][1]["polder"]["level"] if got else None

        got = await events_until(anyone, lambda: pub.publish(
            f"garden/{SITE}/polder-1/telemetry", {"level_cm": 210}),
            lambda got: polder(got) == "siaga")
        got += await events_until(anyone, lambda: pub.publish(
            f"garden/{SITE}/polder-1/telemetry", {"level_cm": 260}),
            lambda got: polder(got) == "awas")
        assert {k for k, _ in got} == {"resident"}
        assert all("ap-1" not in json.dumps(d) for _, d in got)
        assert gw.events.statistics()["sent"] >= 3


async def test_a_full_house_of_live_pages_is_told_to_come_back_later(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    cfg = park(tmp_path, mosquitto, influx_server, db_name, api={"sse_max_clients": 1,
                                                                 "sse_keepalive_s": 0.2})
    async with gateway_in_process(tmp_path, cfg) as gw, gw.http.stream(
            "GET", "/api/v1/events") as first:
        lines = first.aiter_lines()
        assert await anext(lines) == "retry: 3000"
        full = await gw.http.get("/api/v1/events")
        assert full.status_code == 503
        assert full.headers["retry-after"] == "30"
        async with asyncio.timeout(5):
            while (await anext(lines)) != "event: ping":
                pass
        assert gw.events.statistics()["refused"] == 1


async def test_metrics_in_prometheus_format(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    pub: Publisher = publisher_factory(mosquitto.port)
    cfg = park(tmp_path, mosquitto, influx_server, db_name)
    async with gateway_in_process(tmp_path, cfg) as gw:
        pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": 120})
        pub.publish(f"garden/{SITE}/polder-1/telemetry", b"{not json")
        await until(lambda: gw.status().counts.written >= 1, 20)
        answer = await gw.http.get("/metrics")
        assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for family in text_string_to_metric_families(answer.text)
                   for s in family.samples}
        assert samples[("garden_gateway_written_total", ())] >= 1
        assert samples[("garden_gateway_source_errors_total",
                        (("kind", "malformed"), ("source", "native")))] == 1
        assert samples[("garden_gateway_device_up",
                        (("device", "polder-1"), ("kind", "polder"), ("site", SITE)))] == 1
    cfg = park(tmp_path, mosquitto, influx_server, db_name, api={"metrics_public": True})
    async with gateway_in_process(tmp_path, cfg) as gw, bare(gw) as anyone:
        assert (await anyone.get("/metrics")).status_code == 200
        assert (await anyone.get("/api/v1/status")).status_code == 401


async def test_openapi_describes_every_route_with_its_answers_and_who_may_call(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    async with gateway_in_process(tmp_path, park(tmp_path, mosquitto, influx_server, db_name)
                                  ) as gw:
        schema = (await gw.http.get("/openapi.json")).json()
        routes = {(m.upper(), p) for p, ops in schema["paths"].items() for m in ops}
        served = {(m, r.path) for r in gw.app.routes
                  if getattr(r, "include_in_schema", False)
                  for m in getattr(r, "methods", ())}
        assert served == routes
        for path, ops in schema["paths"].items():
            for method, op in ops.items():
                where = f"{method.upper()} {path}"
                assert op.get("summary"), where
                assert op.get("tags"), where
                ok = op["responses"].get("200") or op["responses"].get("204")
                assert ok is not None, where
                if "200" in op["responses"] and path != "/metrics":
                    content = op["responses"]["200"]["content"]
                    assert any(c.get("schema") for c in content.values()) or (
                        "text/event-stream" in content), where
                if "operator" in op["tags"] and "public" not in op["tags"]:
                    assert "401" in op["responses"], where
                    assert op.get("security"), where
        # FastAPI checks each answer against its response model: these would be 500s if not.
        for path in ("/api/v1/status", "/api/v1/devices", "/api/v1/resident"):
            assert (await gw.http.get(path)).status_code == 200


async def test_without_influxdb_readings_stay_in_the_spool_and_the_pages_work(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    pub: Publisher = publisher_factory(mosquitto.port)
    cfg = park(tmp_path, mosquitto, influx_server, db_name)
    cfg["influx"] = {**cfg["influx"], "enabled": False}
    async with gateway_in_process(tmp_path, cfg) as gw:
        for level in (120.0, 130.0, 140.0):
            pub.publish(f"garden/{SITE}/polder-1/telemetry", {"level_cm": level})
        # The gateway's own points go to the spool too: wait for the three readings themselves.
        await until(lambda: gw.pipeline.readings >= 3)
        await until(lambda: gw.spool.rows >= 3)
        status = (await gw.http.get("/api/v1/status")).json()
        assert status["influx"]["state"] == "disabled"
        assert status["counts"]["written"] == 0
        assert gw.resident_view().polder.value == 140.0
        history = (await gw.http.get("/api/v1/history", params={
            "device": "polder-1", "field": "level_cm", "range": "1h"})).json()
        assert history["points"][-1][3] == 140.0
    # Nothing reached InfluxDB: the gateway did not even create its database.
    with pytest.raises(StackError, match="database not found"):
        influx_server.query("SELECT * FROM polder", db_name)
