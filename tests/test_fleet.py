"""Many parks, one regency: the shipped Mosquitto bridge between a park's broker and a central
one (two private brokers), and 20 gateways (20 processes) sharing one broker and one InfluxDB."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

from gateway.config import validate_raw
from gateway.core.errors import StackError
from gateway.testing.clock import FakeClock
from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, free_port
from tests.conftest import (
    ROOT,
    GatewayProcess,
    Publisher,
    Watcher,
    base_config,
    gateway_in_process,
    until,
    wait_for,
)

BRIDGE_EXAMPLE = ROOT / "config" / "mosquitto-bridge.conf"
EXAMPLE_SITE = "taman-bukit-pelangi"
EXAMPLE_ADDRESS = "central.example:8883"


def test_the_fleet_example_is_a_valid_park_config_matching_the_bridge(tmp_path: Path) -> None:
    raw = yaml.safe_load((ROOT / "config" / "fleet-example.yaml").read_text(encoding="utf-8"))
    env = {"GARDEN_GATEWAY_INFLUX__PASSWORD": "park-secret",
           "GARDEN_GATEWAY_MQTT__PASSWORD": "broker-secret",
           "GARDEN_GATEWAY_API__OPERATOR_TOKEN": "0123456789abcdef0123456789abcdef"}
    loaded = validate_raw(raw, env=env, base=tmp_path)
    config = loaded.config
    assert loaded.warnings == []  # no secret written in the file
    site = config.gateway.site
    assert site == EXAMPLE_SITE  # the same park as the bridge example
    assert config.mqtt.client_id == config.gateway.id
    assert config.influx.url.startswith("https://")
    # Every MQTT subscription with a site level names this park, never "+".
    assert all(s.topic.startswith(f"garden/{site}/") for s in config.subscriptions
               if s.topic.startswith("garden/"))
    bridge = BRIDGE_EXAMPLE.read_text(encoding="utf-8")
    topics = [line.split()[1] for line in bridge.splitlines() if line.startswith("topic ")]
    assert topics == [f"garden/{site}/gateway/+/status", f"garden/{site}/+/state",
                      f"garden/{site}/summary"]
    qos = {line.split()[1]: line.split()[3] for line in bridge.splitlines()
           if line.startswith("topic ")}
    assert qos[f"garden/{site}/summary"] == "0"  # a WAN outage queues no summaries


def park_bridge_conf(site: str, central_port: int, password: str) -> str:
    """The shipped example with only what a test machine must change: the central broker's
    address, no TLS (two local brokers), the park's site and password, a quick reconnect."""
    text = BRIDGE_EXAMPLE.read_text(encoding="utf-8")
    assert text.count(EXAMPLE_ADDRESS) == 2  # the comment and the address line
    out: list[str] = []
    dropped: set[str] = set()
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        if key in ("bridge_cafile", "bridge_tls_version", "restart_timeout", "remote_password"):
            dropped.add(key)
            continue
        out.append(line)
    assert dropped == {"bridge_cafile", "bridge_tls_version", "restart_timeout",
                       "remote_password"}, "the example lost a line this test adapts"
    # Mosquitto takes each bridge option for the most recent "connection": append at the end.
    out += [f"remote_password {password}", "restart_timeout 1"]
    conf = "\n".join(out).replace(EXAMPLE_ADDRESS, f"127.0.0.1:{central_port}")
    return conf.replace(EXAMPLE_SITE, site)


class CentralWatcher(Watcher):
    """A Watcher that logs in (the central broker refuses anonymous clients) and keeps every
    message in order. ``persistent``: a session the central broker keeps across its restart,
    so this watcher sees everything that arrives while it reconnects (paho reconnects by
    itself), not only what is retained by then."""

    def __init__(self, port: int, topic: str, client_id: str, auth: tuple[str, str], *,
                 persistent: bool = False) -> None:
        self.last: dict[str, bytes] = {}
        self.retained: dict[str, bool] = {}
        self.history: list[tuple[str, bytes]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  clean_session=not persistent)
        self.client.username_pw_set(*auth)
        self.client.reconnect_delay_set(1, 2)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _on_message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.history.append((msg.topic, bytes(msg.payload)))
        super()._on_message(client, userdata, msg)

    def states(self, site: str, device: str, *, since: int = 0) -> list[str]:
        """The device's states in the order they arrived, from ``history[since]`` on."""
        topic = f"garden/{site}/{device}/state"
        return [str(json.loads(p)["state"]) for t, p in self.history[since:] if t == topic]


def device_state(watcher: Watcher, site: str, device: str) -> str | None:
    raw = watcher.last.get(f"garden/{site}/{device}/state")
    return None if raw is None else str(json.loads(raw)["state"])


async def test_the_example_bridge_carries_status_and_states_across_a_central_outage(
    tmp_path: Path, influx_server: PrivateInfluxDB, db_name: str,
) -> None:
    site, gw_id = "taman-sangatta", "gw-taman-sangatta"
    auth = (f"park-{site}", "bridge-secret-5d1c")
    status_topic = f"garden/{site}/gateway/{gw_id}/status"
    link_topic = f"garden/{site}/bridge/connection"
    central = PrivateMosquitto(tmp_path / "central", username=auth[0], password=auth[1])
    central.start()
    park = PrivateMosquitto(tmp_path / "park",
                            extra_conf=park_bridge_conf(site, central.port, auth[1]))
    watchers: list[Watcher] = []

    def central_watcher(name: str, *, persistent: bool = False) -> CentralWatcher:
        w = CentralWatcher(central.port, "garden/#", name, auth, persistent=persistent)
        watchers.append(w)
        return w

    clock = FakeClock(time.time_ns())
    cfg = base_config(
        tmp_path, park, influx_server, db_name,
        gateway={"id": gw_id, "site": site}, mqtt={"client_id": gw_id},
        devices=[{"id": "polder-1", "kind": "polder", "interval_s": 60},
                 {"id": "kebun-1", "kind": "garden_env", "interval_s": 60}],
        liveness={"missed_intervals": 3},
    )
    try:
        park.start()
        # The regency's dashboard: subscribed all along, with a session central keeps.
        central_app = central_watcher("central-app", persistent=True)
        local = Watcher(park.port, link_topic, "park-link")
        watchers.append(local)
        pub = Publisher(park.port)
        try:
            async with gateway_in_process(tmp_path, cfg, clock) as gw:
                polder, kebun = gw.liveness.devices["polder-1"], gw.liveness.devices["kebun-1"]
                await until(lambda: central_app.last.get(status_topic) == b"online", 15)
                await until(lambda: central_app.last.get(link_topic) == b"1", 15)
                pub.publish(f"garden/{site}/polder-1/telemetry", {"level_cm": 150})
                await until(lambda: device_state(central_app, site, "polder-1") == "online", 15)
                assert device_state(central_app, site, "kebun-1") == "unknown"
                # Raw readings stay off the link: they reach InfluxDB through the spool.
                assert f"garden/{site}/polder-1/telemetry" not in central_app.last

                await asyncio.to_thread(central.stop)
                await until(lambda: local.last.get(link_topic) == b"0", 15)
                seen_before = len(central_app.history)
                # While the link is down polder-1 has a whole outage (silent for three
                # intervals, then back) and kebun-1 starts reporting.
                clock.advance(181)
                await until(lambda: polder.state == "offline")
                pub.publish(f"garden/{site}/kebun-1/telemetry", {"temperature_c": 29.5})
                await until(lambda: kebun.state == "online")
                pub.publish(f"garden/{site}/polder-1/telemetry", {"level_cm": 151})
                await until(lambda: polder.state == "online")
                # The park's summary, published meanwhile (QoS 0 to the bridge: not queued).
                published = gw.summary.published
                clock.advance(5)
                await until(lambda: gw.summary.published > published, 10)

                await asyncio.to_thread(central.start)
                await until(lambda: device_state(central_app, site, "kebun-1") == "online", 20)
                await until(lambda: central_app.last.get(link_topic) == b"1", 10)
                # cleansession false: the park's broker queued every transition for the
                # bridge, and central passes them on in order, the outage included.
                # cleansession false: the park's broker queued every transition for the
                # bridge, and central passes them on in order, the outage included (with a
                # clean session only the retained latest would come, and no outage).
                def polder_since() -> list[str]:
                    return central_app.states(site, "polder-1", since=seen_before)
                await until(lambda: "offline" in polder_since()
                            and polder_since()[-1] == "online", 10)
                assert polder_since()[0] == "offline"

                # What arrived was stored, retained, for whoever subscribes later.
                late = central_watcher("central-late")
                await until(lambda: device_state(late, site, "kebun-1") == "online", 10)
                for device in ("polder-1", "kebun-1"):
                    assert late.retained[f"garden/{site}/{device}/state"] is True
                body = json.loads(late.last[f"garden/{site}/polder-1/state"])
                assert (body["site"], body["gateway"], body["kind"], body["state"]) == (
                    site, gw_id, "polder", "online")
                assert (late.last[status_topic], late.retained[status_topic]) == (
                    b"online", True)
                # The park's summary crossed at QoS 0, retained: the latest one, with kebun-1
                # (first heard during the outage) up, none of the outage's in-between ones.
                summary_topic = f"garden/{site}/summary"
                await until(lambda: summary_topic in late.last
                            and json.loads(late.last[summary_topic])["devices"]
                            .get("garden_env", {}).get("up") == 1, 20)
                assert late.retained[summary_topic] is True
            # A clean stop says "offline" itself, and that crosses the bridge too.
            await until(lambda: central_app.last.get(status_topic) == b"offline", 15)
            last = central_watcher("central-last")
            await until(lambda: last.last.get(status_topic) == b"offline", 10)
            assert last.retained[status_topic] is True
        finally:
            pub.close()
    finally:
        for w in watchers:
            w.close()
        park.stop()
        central.stop()


PARKS = 20
READINGS_PER_DEVICE = 25  # two devices: 50 readings per park, 1,000 in all


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def _counts_by_site(server: PrivateInfluxDB, db: str, measurement: str,
                    field: str) -> dict[str, int]:
    try:
        rows = server.points(db, f'SELECT count("{field}") FROM "{measurement}" GROUP BY site')
    except StackError:  # no database before the first gateway created it
        return {}
    return {str(r["site"]): int(r["count"]) for r in rows}


def test_twenty_parks_share_one_broker_and_one_influxdb(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess], publisher_factory: Any,
) -> None:
    sites = [f"taman-{n:02d}" for n in range(1, PARKS + 1)]
    ports: set[int] = set()
    while len(ports) < PARKS:
        ports.add(free_port())
    watcher = Watcher(mosquitto.port, "garden/+/gateway/+/status", "fleet-watcher")
    began = time.monotonic()
    gateways: dict[str, GatewayProcess] = {}
    try:
        for site, port in zip(sites, sorted(ports), strict=True):
            cfg = base_config(
                tmp_path / site, mosquitto, influx_server, db_name,
                gateway={"id": f"gw-{site}", "site": site},
                mqtt={"client_id": f"gw-{site}"},
                api={"port": port},
                # On a shared broker each gateway must take only its own park's topics: the
                # "site" tag comes from the topic, the device from the gateway's own list.
                subscriptions=[{"name": "native", "topic": f"garden/{site}/+/telemetry",
                                "format": "native"}],
                devices=[{"id": "polder-1", "kind": "polder", "interval_s": 60},
                         {"id": "kebun-1", "kind": "garden_env", "interval_s": 60}],
            )
            gateways[site] = gateway_factory(cfg, start=False).start(wait=False)
        for gw in gateways.values():
            wait_for(gw._healthy, timeout=45, what=f"{gw.api} /health")
        started = time.monotonic() - began
        wait_for(lambda: len([p for p in watcher.last.values() if p == b"online"]) == PARKS,
                 timeout=20, what="every park's status online")
        assert set(watcher.last) == {f"garden/{s}/gateway/gw-{s}/status" for s in sites}

        pub: Publisher = publisher_factory(mosquitto.port)
        base_ms = (time.time_ns() // 10**6) - 60_000
        published_at = time.monotonic()
        for site in sites:
            for i in range(READINGS_PER_DEVICE):
                ts = base_ms + i * 1000  # distinct times: no point overwrites another
                pub.publish(f"garden/{site}/polder-1/telemetry", {"ts": ts, "level_cm": 100 + i})
                pub.publish(f"garden/{site}/kebun-1/telemetry",
                            {"ts": ts, "temperature_c": 25 + i / 10})
        expected = dict.fromkeys(sites, READINGS_PER_DEVICE)
        wait_for(lambda: _counts_by_site(influx_server, db_name, "polder", "level_cm")
                 == expected, timeout=30, what="every park's polder readings in InfluxDB")
        wait_for(lambda: _counts_by_site(influx_server, db_name, "garden_env", "temperature_c")
                 == expected, timeout=30, what="every park's garden readings in InfluxDB")
        delivered = time.monotonic() - published_at

        for site, gw in gateways.items():
            view = httpx.get(f"{gw.api}/api/v1/sites/{site}", timeout=5).json()
            assert view["site"] == site
            assert view["sensors"] == {"up": 2, "down": 0, "unknown": 0, "unmonitored": 0,
                                       "total": 2}
            assert [(g["id"], g["state"]) for g in view["gateways"]] == [(f"gw-{site}",
                                                                          "online")]
            other = sites[(sites.index(site) + 1) % PARKS]
            assert httpx.get(f"{gw.api}/api/v1/sites/{other}", timeout=5).status_code == 404
        rss_mib = sorted(_rss_kib(gw.proc.pid) / 1024 for gw in gateways.values()
                         if gw.proc is not None)
        print(f"\nfleet: {PARKS} gateways healthy in {started:.1f} s; "
              f"{PARKS * READINGS_PER_DEVICE * 2} readings published and in InfluxDB in "
              f"{delivered:.1f} s; RSS per gateway {rss_mib[0]:.0f}-{rss_mib[-1]:.0f} MiB "
              f"(total {sum(rss_mib):.0f} MiB); wall so far {time.monotonic() - began:.1f} s")
        assert rss_mib[-1] < 250, "a gateway outgrew its memory budget on a 1 GB Pi"

        # Stopped together (SIGTERM, as systemd would), each says offline on its own topic.
        for gw in gateways.values():
            assert gw.proc is not None
            gw.proc.send_signal(signal.SIGTERM)
        for gw in gateways.values():
            assert gw.proc is not None
            assert gw.proc.wait(timeout=30) == 0, gw.log()
        wait_for(lambda: sorted(watcher.last.values()) == [b"offline"] * PARKS,
                 timeout=20, what="every park's status offline after the stop")
    finally:
        watcher.close()
