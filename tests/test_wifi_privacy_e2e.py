"""Access-point usage and the privacy rule, end to end: real Mosquitto, real InfluxDB, the
gateway on the test's loop with a FakeClock, everything it stores and says searched for MACs."""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from devices.reading import Reading
from gateway.config import validate_raw
from gateway.core.errors import StackError
from gateway.pipeline.ingest import Pipeline
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import Publisher, base_config, gateway_in_process, until

SITE = "taman-uji"
# 2026-11-20 04:00 UTC is noon in WITA: every sample below falls in one local day.
T0 = int(dt.datetime(2026, 11, 20, 4, 0, tzinfo=dt.UTC).timestamp())
S = 10**9


def collectd(t: float, *values: float) -> bytes:
    return (f"{t:.3f}:" + ":".join(str(v) for v in values)).encode() + b"\0"


def config(tmp_path: Path, mosquitto: PrivateMosquitto, influx: PrivateInfluxDB,
           db: str) -> dict[str, Any]:
    cfg = base_config(tmp_path, mosquitto, influx, db,
                      devices=[{"id": "ap-1", "kind": "wifi_ap"},
                               {"id": "ap-2", "kind": "wifi_ap"}],
                      wifi={"report_interval_s": 60},
                      liveness={"report_interval_s": 3600},
                      log_level="DEBUG")
    cfg["subscriptions"] = [
        *cfg["subscriptions"],
        # An AP whose collectd sends counters (StoreRates false), and one sending rates.
        {"name": "ap-counters", "topic": "collectd-raw/#", "format": "collectd",
         "options": {"measurement": "wifi_ap", "topic_prefix": "collectd-raw",
                     "store_rates": False}},
        {"name": "ap-rates", "topic": "collectd/#", "format": "collectd",
         "options": {"measurement": "wifi_ap"}},
    ]
    return cfg


def points(influx: PrivateInfluxDB, db: str, q: str) -> list[dict[str, Any]]:
    try:
        return influx.points(db, q)
    except StackError:  # not created yet
        return []


async def test_counters_and_rates_become_bits_per_second_and_daily_totals(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any,
) -> None:
    clock = FakeClock((T0 + 35) * S)
    cfg = config(tmp_path, mosquitto, influx_server, db_name)
    pub: Publisher = publisher_factory(mosquitto.port)
    top = 2**32
    # ap-1's rx counter, sample by sample, and what each step adds to the day:
    samples = [
        (T0 + 0, top - 1_001_100),  # first: a baseline, nothing counted
        (T0 + 10, top - 101_100),   # +900,000
        (T0 + 20, top - 100),       # +101,000
        (T0 + 25, 900),             # a 32-bit wrap: +1,000
        (T0 + 30, 3_000_000_000),   # 3 GB in 5 s is beyond 1 Gbit/s: a gap, not counted
        (T0 + 30.5, 5_000),         # down from 3e9, no wrap fits: the AP rebooted, +5,000
        (T0 + 34, 85_000),          # +80,000 in 3.5 s
    ]
    expected = 900_000 + 101_000 + 1_000 + 5_000 + 80_000
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        for t, value in samples:
            pub.publish("collectd-raw/ap-1/interface-wlan0/if_octets", collectd(t, value, 0))
        # Loopback traffic is not Wi-Fi use.
        pub.publish("collectd-raw/ap-1/interface-lo/if_octets", collectd(T0, 10**9, 10**9))
        pub.publish("collectd-raw/ap-1/interface-lo/if_octets",
                    collectd(T0 + 30, 2 * 10**9, 2 * 10**9))
        # ap-2 sends rates (bytes/s) and its associated stations per radio.
        pub.publish("collectd/ap-2/interface-wlan0/if_octets", collectd(T0 + 20, 1000, 2000))
        pub.publish("collectd/ap-2/interface-wlan0/if_octets", collectd(T0 + 30, 1500, 2500))
        pub.publish("collectd/ap-2/iwinfo-wlan0/stations", collectd(T0 + 30, 7))
        pub.publish("collectd/ap-2/iwinfo-wlan1/stations", collectd(T0 + 30, 4))
        await until(lambda: gw.status().counts.received >= 13)

        devices = {d["id"]: d for d in (await gw.http.get(
            "/api/v1/devices", params={"kind": "wifi_ap"})).json()}
        ap1, ap2 = devices["ap-1"]["wifi"], devices["ap-2"]["wifi"]
        assert ap1["rx_bytes_today"] == expected
        events = {k: v for k, v in ap1["counter_events"].items() if v}
        assert events == {"wrap32": 1, "reset": 1, "gap": 1}
        assert ap1["rx_bps"] == pytest.approx(80_000 * 8 / 3.5)
        assert ap1["day"] == "2026-11-20"
        assert ap2["rx_bps"] == 1500 * 8
        assert ap2["tx_bps"] == 2500 * 8
        assert (ap2["rx_bytes_today"], ap2["tx_bytes_today"]) == (15_000, 25_000)
        assert ap2["clients"] == 11
        site = (await gw.http.get(f"/api/v1/sites/{SITE}")).json()
        assert site["wifi"]["rx_bytes_today"] == expected + 15_000
        assert site["wifi"]["clients"] == 11
        assert site["clients_now"] == 11

        clock.advance(60)  # the usage report
        await until(lambda: len(points(influx_server, db_name,
                                       "SELECT * FROM wifi_site_usage")) >= 1, 20)
        [row] = points(influx_server, db_name, "SELECT * FROM wifi_usage WHERE device = 'ap-1'")
        assert (row["rx_bytes_today"], row["site"], row["gateway"]) == (expected, SITE, "gw-test")
        [row] = points(influx_server, db_name, "SELECT * FROM wifi_site_usage")
        assert (row["rx_bytes_today"], row["clients"], row["aps_reporting"]) == (
            expected + 15_000, 11, 2)

    # A restart the same day goes on counting from the totals it kept.
    clock.advance(30)
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        ap = (await gw.http.get("/api/v1/devices", params={"kind": "wifi_ap"})).json()
        assert {d["id"]: d["wifi"]["rx_bytes_today"] for d in ap} == {
            "ap-1": expected, "ap-2": 15_000}


MACS = ["aa:bb:cc:00:00:01", "AA-BB-CC-00-00-02", "aabb.cc00.0003", "aa:bb:cc:00:00:04",
        "aa:bb:cc:00:00:05", "aa:bb:cc:00:00:06", "aa:bb:cc:00:00:07", "aa:bb:cc:00:00:08"]


def forms(mac: str) -> list[str]:
    digits = re.sub(r"[^0-9a-fA-F]", "", mac).lower()
    pairs = [digits[i:i + 2] for i in range(0, 12, 2)]
    quads = [digits[i:i + 4] for i in range(0, 12, 4)]
    found = [":".join(pairs), "-".join(pairs), ".".join(quads), digits]
    return found + [f.upper() for f in found]


def assert_no_mac(where: str, text: str) -> None:
    for mac in MACS:
        for form in forms(mac):
            assert form not in text, f"{form} found in {where}"


async def test_no_client_mac_reaches_the_spool_the_database_the_logs_or_the_api(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    publisher_factory: Any, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    clock = FakeClock((T0 + 35) * S)
    cfg = config(tmp_path, mosquitto, influx_server, db_name)
    pub: Publisher = publisher_factory(mosquitto.port)
    async with gateway_in_process(tmp_path, cfg, clock) as gw:
        # A list of associated stations, in three spellings: counted, then gone.
        pub.publish(f"garden/{SITE}/ap-1/telemetry",
                    {"ts": T0 + 1, "clients": 3, "stations": MACS[:3]})
        # The same two again and a new one: distinct clients today 4, not 6.
        pub.publish(f"garden/{SITE}/ap-1/telemetry",
                    {"ts": T0 + 2, "stations": [MACS[0], MACS[1].lower(), MACS[3]]})
        # A MAC as a value, in a payload that is not JSON, in a topic, in a tag.
        pub.publish(f"garden/{SITE}/ap-1/telemetry", {"ts": T0 + 3, "last_client": MACS[4]})
        pub.publish(f"garden/{SITE}/ap-1/telemetry", f"roaming {MACS[5]} now".encode())
        pub.publish(f"garden/{SITE}/{MACS[6]}/telemetry", {"rssi_dbm": -60})
        pub.publish("telegraf/ap-2",
                    f"wifi_client,device=ap-2,client={MACS[7]} rssi_dbm=-61 {(T0 + 4) * S}")
        await until(lambda: gw.status().counts.received >= 6)
        await until(lambda: gw.status().counts.written >= 5, 20)
        status = gw.status()
        assert status.sources["native"].errors == {"malformed": 1}
        api = "".join([(await gw.http.get(path)).text for path in (
            "/api/v1/status", "/api/v1/devices", "/api/v1/outages", "/api/v1/sites",
            f"/api/v1/sites/{SITE}", "/api/v1/resident", "/api/v1/dead-letters",
            "/api/v1/quarantine", "/metrics",
            "/api/v1/history?device=ap-1&field=stations&range=1h")])
        ap1 = next(d for d in (await gw.http.get("/api/v1/devices")).json() if d["id"] == "ap-1")
        assert ap1["wifi"]["distinct_clients_today"] == 4
        assert ap1["latest"]["fields"]["stations"] == 3
        assert ap1["latest"]["fields"]["last_client"] == "[mac]"
        dead = await gw.spool.dead_letters()
        assert dead[0]["payload"] == "roaming [mac] now"
        clock.advance(60)  # the usage report, with the distinct count
        await until(lambda: len(points(influx_server, db_name, "SELECT * FROM wifi_usage")) >= 1,
                    20)
    [usage] = points(influx_server, db_name, "SELECT * FROM wifi_usage WHERE device = 'ap-1'")
    assert usage["distinct_clients_today"] == 4

    assert_no_mac("the API", api)
    assert_no_mac("the logs", caplog.text)
    data = Path(cfg["data_dir"])
    stored = sorted(data.glob("*.sqlite3*"))  # noqa: ASYNC240 - the gateway has stopped
    assert {p.name for p in stored} >= {"spool.sqlite3", "state.sqlite3"}
    for path in stored:
        assert_no_mac(path.name, path.read_bytes().decode("latin-1"))
    everything = []
    for series in influx_server.query("SHOW MEASUREMENTS", db=db_name):
        for (name,) in series["values"]:
            everything.append(points(influx_server, db_name, f'SELECT * FROM "{name}"'))
    everything.append(influx_server.query("SHOW TAG VALUES WITH KEY =~ /.*/", db=db_name))
    everything.append(influx_server.query("SHOW SERIES", db=db_name))
    dumped = json.dumps(everything)
    assert "mac-redacted" in dumped  # the device named by a MAC in its topic
    assert "[mac]" in dumped
    assert_no_mac("InfluxDB", dumped)


def test_serial_lines_are_scrubbed_before_they_are_decoded(tmp_path: Path) -> None:
    raw = {"data_dir": str(tmp_path), "gateway": {"id": "gw", "site": SITE}}
    pipeline = Pipeline.from_config(validate_raw(raw, env={}, base=tmp_path).config)
    seen: list[bytes] = []

    def decode(line: bytes) -> list[Reading]:
        seen.append(line)
        return [Reading.build("garden_env", {"device": "kebun-1"}, {"note": line.decode()}, 1)]

    outcome = pipeline.accept("kebun", "/dev/ttyUSB0", b"client=AA:BB:CC:00:00:01 t=29.5",
                              1, decode)
    assert seen == [b"client=[mac] t=29.5"]
    assert "AA:BB" not in outcome.lines[0]
    assert pipeline.statistics()["redacted"] == 1
