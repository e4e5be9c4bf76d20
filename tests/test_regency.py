"""The regency service (issue 17, part 2, the core): every park's state from the central broker,
against the real Mosquitto. Parks here are light publishers of what a park's gateway and bridge
publish (summary, gateway status, bridge connection), not whole gateways."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import datetime as dt
import io
import json
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from gateway.core.errors import ConfigError
from gateway.regency.config import RegencyConfig, load_regency_config
from gateway.regency.fleet import Fleet
from gateway.regency.service import Regency
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateMosquitto, free_port
from tests.conftest import Publisher, debian_binary, until
from tests.test_polder_e2e import Hook

TOKEN = "regency-operator-token-0123456789"
T0 = 1_800_000_000 * 10**9


def summary(site: str, *, up: int = 3, total: int = 3, level: float = 1.05,
            alert_level: str = "waspada") -> dict[str, Any]:
    return {"schema": 1, "site": site, "time_ns": time.time_ns(),
            "gateway": {"id": f"gw-{site}", "version": "0.1.0", "state": "online",
                        "uptime_s": 60.0},
            "devices": {"wifi_ap": {"up": up, "down": total - up, "unknown": 0,
                                    "unmonitored": 0, "total": total}},
            "outages": [], "outages_open": 0, "uptime_pct": {},
            "wifi": {"clients_now": 12, "distinct_today": 40},
            "polder": [{"id": "polder-1", "name": f"Polder {site}", "level": level,
                        "unit": "m", "alert_level": alert_level, "since_ns": None,
                        "trend_per_h": 0.06, "eta_next_s": 3600.0, "next_level": "siaga",
                        "quality": "ok"}],
            "spool": {"rows": 0, "oldest_unsent_age_s": None}, "clock_synced": True}


def config(tmp_path: Path, broker: PrivateMosquitto, **over: Any) -> RegencyConfig:
    raw: dict[str, Any] = {
        "data_dir": str(tmp_path / "regency"),
        "mqtt": {"host": "127.0.0.1", "port": broker.port, "client_id": "regency-1",
                 "reconnect_min_s": 0.1, "reconnect_max_s": 1},
        "api": {"host": "127.0.0.1", "port": free_port(), "operator_token": TOKEN},
        "stale_after_s": 2}
    raw.update(over)
    return RegencyConfig.model_validate(raw)


@contextlib.asynccontextmanager
async def running(cfg: RegencyConfig) -> AsyncIterator[tuple[Regency, httpx.AsyncClient]]:
    regency = Regency(cfg)
    task = asyncio.create_task(regency.run())
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{cfg.api.port}", timeout=5)

    async def up() -> bool:
        try:
            return (await client.get("/health")).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        async with asyncio.timeout(15):
            while not (regency.connected and await up()):  # noqa: ASYNC110 - polling a server
                await asyncio.sleep(0.05)
        yield regency, client
    finally:
        await client.aclose()
        task.cancel()
        await asyncio.wait([task])


def states(parks: list[dict[str, Any]]) -> dict[str, str]:
    return {p["site"]: p["state"] for p in parks}


async def test_each_park_up_down_link_down_or_stale_and_a_restart_keeps_it(
    tmp_path: Path, mosquitto: PrivateMosquitto,
    publisher_factory: Callable[[int], Publisher],
) -> None:
    pub = publisher_factory(mosquitto.port)

    def park(site: str, *, online: bool = True, link: bool = True, **kw: Any) -> None:
        pub.publish(f"garden/{site}/summary", json.dumps(summary(site, **kw)), retain=True)
        pub.publish(f"garden/{site}/gateway/gw-{site}/status",
                    b"online" if online else b"offline", retain=True)
        pub.publish(f"garden/{site}/bridge/connection", b"1" if link else b"0", retain=True)

    cfg = config(tmp_path, mosquitto, stale_after_s=30)
    park("taman-a", alert_level="normal", level=0.6)
    park("taman-b", online=False)
    park("taman-c", link=False)
    park("taman-d", alert_level="awas", level=1.4)
    async with running(cfg) as (regency, http):
        async def listed() -> list[dict[str, Any]]:
            body: list[dict[str, Any]] = (await http.get("/api/v1/parks")).json()
            return body

        got: list[dict[str, Any]] = []

        async def four() -> bool:
            got[:] = await listed()
            return len(got) == 4 and "unknown" not in states(got).values()
        async with asyncio.timeout(15):
            while not await four():  # noqa: ASYNC110 - polling the API
                await asyncio.sleep(0.05)
        assert states(got) == {"taman-a": "up", "taman-b": "down", "taman-c": "link_down",
                               "taman-d": "up"}
        # Worst first: down, link down, then the polder at Awas before the calm one.
        assert [p["site"] for p in got] == ["taman-b", "taman-c", "taman-d", "taman-a"]
        d = got[2]
        assert (d["devices_up"], d["devices_total"], d["wifi"]["clients_now"]) == (3, 3, 12)
        assert d["polder"][0]["alert_level"] == "awas"
        assert d["current"] is True
        # A park not up: its polder is shown with its time, never as current.
        assert got[1]["current"] is False
        assert got[1]["polder"][0]["eta_next_s"] is None
        assert "polder-1" not in json.dumps(got)           # nothing names a device
        assert (await http.get("/api/v1/parks/taman-d")).status_code == 401
        whole = (await http.get("/api/v1/parks/taman-d",
                                headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert whole["summary"]["polder"][0]["id"] == "polder-1"
        # taman-b's gateway comes back: its outage ends.
        pub.publish("garden/taman-b/gateway/gw-taman-b/status", b"online", retain=True)
        await until(lambda: regency.fleet.parks["taman-b"].state == "up", 10)
        outages = (await http.get("/api/v1/outages", params={"site": "taman-b"},
                                  headers={"Authorization": f"Bearer {TOKEN}"})).json()
        assert [(o["site"], o["ongoing"]) for o in outages] == [("taman-b", False)]
        metrics = (await http.get("/metrics",
                                  headers={"Authorization": f"Bearer {TOKEN}"})).text
        assert 'garden_regency_park_state{site="taman-c",state="link_down"} 1' in metrics
        lint = await asyncio.to_thread(
            subprocess.run, [debian_binary("promtool", "promtool", "prometheus"), "check",
                             "metrics"], input=metrics, capture_output=True, text=True,
            timeout=30, check=False)
        assert (lint.returncode, lint.stdout, lint.stderr) == (0, "", "")
        # The month's report, as the office downloads it (calendar month in WITA).
        month = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m")
        auth = {"Authorization": f"Bearer {TOKEN}"}
        answer = await http.get("/api/v1/report", params={"month": month, "format": "csv"},
                                headers=auth)
        assert answer.headers["content-type"].startswith("text/csv")
        table = list(csv.DictReader(io.StringIO(answer.text)))
        assert {r["site"] for r in table} == {"taman-a", "taman-b", "taman-c", "taman-d"}
        c = next(r for r in table if r["site"] == "taman-c" and not r["device"])
        assert (float(c["up_s"]), float(c["down_s"]), c["uptime_pct"]) == (0.0, 0.0, "")
        assert (await http.get("/api/v1/report", params={"month": "2026-13"},
                               headers=auth)).status_code == 422
        assert (await http.get("/api/v1/report", params={"month": month})).status_code == 401
    # The next start: the same parks and transitions, from regency.sqlite3.
    async with running(cfg) as (regency, http):
        assert regency.fleet.parks["taman-b"].state == "up"
        assert [new for _, new, _ in regency.fleet.transitions("taman-b")] == ["down", "up"]


async def test_a_park_that_falls_silent_is_stale_and_a_broken_summary_is_refused(
    tmp_path: Path, mosquitto: PrivateMosquitto,
    publisher_factory: Callable[[int], Publisher],
) -> None:
    pub = publisher_factory(mosquitto.port)
    cfg = config(tmp_path, mosquitto, stale_after_s=1.5)
    async with running(cfg) as (regency, _):
        pub.publish("garden/taman-e/gateway/gw-taman-e/status", b"online", retain=True)
        pub.publish("garden/taman-e/summary", json.dumps(summary("taman-e")), retain=True)
        await until(lambda: "taman-e" in regency.fleet.parks
                    and regency.fleet.parks["taman-e"].state == "up", 10)
        silent_at = time.monotonic()
        await until(lambda: regency.fleet.parks["taman-e"].state == "stale", 10)
        assert time.monotonic() - silent_at < 5
        pub.publish("garden/taman-e/summary", b"{not json")
        pub.publish("garden/taman-f/summary", json.dumps(summary("taman-x")))  # another site
        await until(lambda: regency.fleet.refused == 2, 10)
        assert regency.fleet.parks["taman-e"].state == "stale"
        assert "taman-f" not in regency.fleet.parks or (
            regency.fleet.parks["taman-f"].summary is None)


def test_the_config_takes_garden_regency_overrides(tmp_path: Path) -> None:
    path = tmp_path / "regency.yaml"
    path.write_text("data_dir: data\nmqtt: {host: central.example}\n")
    cfg = load_regency_config(path, {"GARDEN_REGENCY_MQTT__PORT": "8883",
                                     "GARDEN_REGENCY_API__OPERATOR_TOKEN": "t" * 20,
                                     "GARDEN_GATEWAY_MQTT__PORT": "1"})
    assert (cfg.mqtt.host, cfg.mqtt.port) == ("central.example", 8883)
    assert cfg.data_dir == tmp_path / "data"
    assert cfg.api.operator_token is not None
    path.write_text("data_dir: data\nstale_after: 5\n")
    with pytest.raises(ConfigError) as caught:
        load_regency_config(path, {})
    assert caught.value.problems == ["stale_after: Extra inputs are not permitted"]


async def test_a_park_down_and_a_polder_at_awas_are_said_once_in_bahasa_indonesia(
    tmp_path: Path, mosquitto: PrivateMosquitto,
    publisher_factory: Callable[[int], Publisher],
) -> None:
    hook = Hook()
    pub = publisher_factory(mosquitto.port)
    cfg = config(tmp_path, mosquitto, stale_after_s=60, name="Kutai Timur",
                 alerts={"down_after_s": 0, "backoff_min_s": 0.2, "backoff_max_s": 0.5,
                         "targets": [{"name": "bpbd", "url": hook.url}]})
    try:
        async with running(cfg) as (regency, _):
            pub.publish("garden/taman-g/gateway/gw-taman-g/status", b"online", retain=True)
            pub.publish("garden/taman-g/summary", json.dumps(summary("taman-g")), retain=True)
            await until(lambda: "taman-g" in regency.fleet.parks
                        and regency.fleet.parks["taman-g"].state == "up", 10)
            pub.publish("garden/taman-g/summary",
                        json.dumps(summary("taman-g", alert_level="awas", level=1.42)))
            pub.publish("garden/taman-g/summary",                  # the same level again
                        json.dumps(summary("taman-g", alert_level="awas", level=1.43)))
            pub.publish("garden/taman-g/bridge/connection", b"0", retain=True)
            await until(lambda: len(hook.bodies) >= 2, 15)
            pub.publish("garden/taman-g/bridge/connection", b"1", retain=True)
            await until(lambda: len(hook.bodies) >= 3, 15)
    finally:
        hook.close()
    level, down, recovered = hook.bodies
    assert (level["event"], level["alert_level"], level["previous_alert_level"]) == (
        "polder_level", "awas", "waspada")
    assert level["text"].startswith("🔴 AWAS: Polder taman-g (taman-g) 1,42 m")
    assert (down["event"], down["device"], down["kind"]) == ("down", "taman-g", "park")
    assert down["text"].startswith("🔴 Taman taman-g di Kutai Timur mati sejak")
    assert "koneksi taman ke pusat (bridge) terputus" in down["text"]
    assert (recovered["event"], recovered["device"]) == ("recovered", "taman-g")
    assert recovered["text"].startswith("🟢 Taman taman-g di Kutai Timur kembali menyala")


PARKS = 200


async def test_two_hundred_parks_are_held_and_one_that_stops_is_shown_in_time(
    tmp_path: Path, mosquitto: PrivateMosquitto,
    publisher_factory: Callable[[int], Publisher],
) -> None:
    pub = publisher_factory(mosquitto.port)
    sites = [f"taman-{i:03d}" for i in range(PARKS)]
    for site in sites:
        pub.publish(f"garden/{site}/gateway/gw-{site}/status", b"online", retain=True)
        pub.publish(f"garden/{site}/summary", json.dumps(summary(site)), retain=True)
    cfg = config(tmp_path, mosquitto, stale_after_s=3)
    async with running(cfg) as (regency, http):
        await until(lambda: len(regency.fleet.parks) == PARKS
                    and all(p.state == "up" for p in regency.fleet.parks.values()), 20)
        listed = (await http.get("/api/v1/parks")).json()
        assert len(listed) == PARKS
        # One gateway dies (its will); the others keep publishing summaries; one falls silent.
        stopped_at = time.monotonic()
        pub.publish("garden/taman-007/gateway/gw-taman-007/status", b"offline", retain=True)
        await until(lambda: regency.fleet.parks["taman-007"].state == "down", 5)
        assert time.monotonic() - stopped_at < 2
        for _ in range(3):
            for site in sites:
                if site not in ("taman-007", "taman-123"):
                    pub.publish(f"garden/{site}/summary", json.dumps(summary(site)), qos=0)
            await asyncio.sleep(1)
        await until(lambda: regency.fleet.parks["taman-123"].state == "stale", 5)
        listed = (await http.get("/api/v1/parks")).json()
        assert [p["site"] for p in listed[:2]] == ["taman-007", "taman-123"]
        assert states(listed)["taman-007"] == "down"
        assert sum(p["state"] == "up" for p in listed) == PARKS - 2


def test_the_monthly_report_counts_only_observed_time_as_up_or_down(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    fleet = Fleet(tmp_path / "regency.sqlite3", clock=clock, stale_after_s=10**6)
    h = 3600 * 10**9

    def at(hours: float) -> None:
        clock.set(T0 + int(hours * h))

    def state(word: str) -> bytes:
        return json.dumps({"state": word}).encode()

    fleet.gateway_status("taman-a", "gw", b"online")
    fleet.summary("taman-a", json.dumps({**summary("taman-a"), "clock_synced": False}).encode())
    fleet.device_state("taman-a", "ap-1", state("online"))        # T0: up, ap-1 online
    at(0.5)
    fleet.device_state("taman-a", "ap-1", state("offline"))       # ap-1 down 30 min
    at(1)
    fleet.device_state("taman-a", "ap-1", state("online"))
    fleet.gateway_status("taman-a", "gw", b"offline")             # the park down an hour
    at(2)
    fleet.gateway_status("taman-a", "gw", b"online")
    fleet.summary("taman-a", json.dumps({**summary("taman-a"), "clock_synced": False}).encode())
    at(3)
    fleet.link("taman-a", b"0")                                   # an hour unseen
    at(4)
    (park, ap) = fleet.report(T0, T0 + 4 * h)
    assert park == {"site": "taman-a", "device": None, "up_s": 7200.0, "down_s": 3600.0,
                    "unobserved_s": 3600.0, "uptime_pct": 66.667}
    # ap-1: up 30 min + 1 h (while the park is up), down 30 min; the park's down hour and
    # its unseen hour are not the AP's: unobserved.
    assert ap == {"site": "taman-a", "device": "ap-1", "up_s": 5400.0, "down_s": 1800.0,
                  "unobserved_s": 7200.0, "uptime_pct": 75.0}
    fleet.close()


async def test_with_tls_the_operator_side_is_served_over_https_only(
    tmp_path: Path, mosquitto: PrivateMosquitto,
) -> None:
    tls_port = free_port()
    cfg = config(tmp_path, mosquitto, api={"host": "127.0.0.1", "port": free_port(),
                                           "operator_token": TOKEN,
                                           "tls": {"self_signed": True, "port": tls_port}})
    async with running(cfg) as (_, http):
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert (await http.get("/api/v1/parks")).status_code == 200        # public on HTTP
        refused = await http.get("/api/v1/outages", headers=auth)
        assert (refused.status_code, refused.json()["detail"]) == (
            403, "operator endpoints are served over HTTPS only (api.tls)")
        assert (await http.get("/operator")).status_code == 403
        cert = tmp_path / "regency" / "tls" / "gateway.crt"
        async with httpx.AsyncClient(base_url=f"https://127.0.0.1:{tls_port}", timeout=5,
                                     verify=ssl.create_default_context(cafile=cert)) as https:
            assert (await https.get("/api/v1/outages", headers=auth)).status_code == 200
            assert (await https.get("/api/v1/outages")).status_code == 401
            assert (await https.get("/operator")).status_code == 200
