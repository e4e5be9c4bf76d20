"""End to end: publisher → private Mosquitto → gateway process → private InfluxDB 1.6.7.

The failure tests each break one thing in the middle of a stream and then check, in the real
InfluxDB, that every reading arrived exactly once: ``count(seq)`` (points) equals
``count(distinct(seq))`` (readings) equals what was published.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto, StackError
from tests.conftest import GatewayProcess, Publisher, base_config, wait_for

SITE = "taman-uji"
TOPIC = f"garden/{SITE}/polder-1/telemetry"


class Stream(threading.Thread):
    """Publishes ``n`` native telemetry messages at QoS 1, paced, from its own thread.

    ``with_ts`` puts the device time in the payload (as firmware with a clock does); without
    it the gateway stamps the receive time, the hard case for redelivery.
    """

    def __init__(self, port: int, n: int, *, with_ts: bool, rate: float = 1500.0,
                 client_id: str = "stream") -> None:
        super().__init__(daemon=True)
        self.n = n
        self.with_ts = with_ts
        self.rate = rate
        self.sent = 0
        self.error: BaseException | None = None
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.max_queued_messages_set(0)
        self.acked: set[int] = set()
        # PUBACKs counted here: paho's is_published() raises for a message that was queued
        # while the broker was away, even after it is sent and acknowledged on reconnect.
        self.client.on_publish = lambda c, u, mid, rc, p: self.acked.add(mid)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.infos: list[paho.MQTTMessageInfo] = []

    def run(self) -> None:
        try:
            start = time.monotonic()
            base_ts = time.time()
            for i in range(self.n):
                payload: dict[str, Any] = {"level_cm": 100 + i / 10, "seq": i}
                if self.with_ts:
                    payload["ts"] = round(base_ts + i / 1000, 3)
                self.infos.append(self.client.publish(TOPIC, json.dumps(payload), qos=1))
                self.sent = i + 1
                ahead = start + (i + 1) / self.rate - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
        except BaseException as exc:  # noqa: BLE001 - reported by finish()
            self.error = exc

    def finish(self, timeout: float = 60) -> None:
        self.join(timeout)
        assert self.error is None, self.error
        # A message published while the broker was away is queued by paho and sent after
        # the reconnect, so wait for every PUBACK rather than trusting each publish call.
        wait_for(lambda: all(i.mid in self.acked for i in self.infos), timeout=timeout,
                 what="every PUBACK from the broker")
        self.client.disconnect()
        self.client.loop_stop()


def seq_counts(influx: PrivateInfluxDB, db: str) -> tuple[int, int]:
    try:
        rows = influx.points(db, 'SELECT count("seq") AS n, count(distinct("seq")) AS d '
                                 'FROM "polder"')
    except StackError:
        # The gateway has not created the database yet.
        return (0, 0)
    if not rows:
        return (0, 0)
    # Right after the first write InfluxDB may answer the row with null counts.
    return int(rows[0]["n"] or 0), int(rows[0]["d"] or 0)


def exactly_once(influx: PrivateInfluxDB, db: str, n: int, timeout: float = 60) -> None:
    wait_for(lambda: seq_counts(influx, db)[0] >= n, timeout=timeout,
             what=f"{n} points in InfluxDB")
    assert seq_counts(influx, db) == (n, n)


def test_readings_flow_and_status_reports_them(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess], publisher_factory: Callable[[int], Publisher],
) -> None:
    gw = gateway_factory(base_config(tmp_path, mosquitto, influx_server, db_name))
    wait_for(lambda: gw.status()["mqtt"]["connected"], what="MQTT connected")
    pub = publisher_factory(mosquitto.port)
    for i in range(50):
        pub.publish(TOPIC, {"level_cm": 150.25 + i, "seq": i, "ts": 1795850797.5 + i})
    pub.publish("vendor/weather/x", {"id": "ws-1", "temp": 29.5})
    exactly_once(influx_server, db_name, 50)
    rows = influx_server.points(db_name, 'SELECT * FROM "polder" ORDER BY time LIMIT 1')
    assert rows[0]["level_cm"] == 150.25
    assert rows[0]["time"] == 1795850797500000000
    assert (rows[0]["site"], rows[0]["gateway"], rows[0]["device"]) == (SITE, "gw-test",
                                                                        "polder-1")
    wait_for(lambda: influx_server.points(db_name, 'SELECT * FROM "sensor"'), what="weather")
    status = wait_for(lambda: (s := gw.status())["counts"]["written"] >= 51 and s)
    assert status["counts"]["received"] == 51
    assert status["counts"]["spooled"] - status["counts"]["own_points"] == 51
    assert status["counts"]["acknowledged"] == 51
    assert status["counts"]["rejected"] == 0
    assert status["influx"]["connected"] is True
    assert status["spool"]["rows"] == 0
    assert status["spool"]["oldest_unsent_age_s"] is None
    assert status["sources"]["native"]["readings"] == 50
    assert "ws-1" in status["discovered_devices"]
    assert httpx.get(f"{gw.api}/health", timeout=5).json()["status"] == "ok"
    schema = httpx.get(f"{gw.api}/openapi.json", timeout=5).json()
    assert {"/health", "/api/v1/status"} <= set(schema["paths"])
    assert "Counts" in schema["components"]["schemas"]


def test_influx_stopped_mid_stream_every_reading_arrives_once(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gw = gateway_factory(base_config(tmp_path, mosquitto, influx, db_name))
    wait_for(lambda: gw.status()["mqtt"]["connected"], what="MQTT connected")
    n = 3000
    stream = Stream(mosquitto.port, n, with_ts=False)
    stream.start()
    wait_for(lambda: stream.sent >= n // 3, what="a third of the stream")
    influx.stop()
    wait_for(lambda: stream.sent >= 2 * n // 3, what="two thirds of the stream")
    down = wait_for(lambda: (s := gw.status())["influx"]["connected"] is False and s,
                    what="gateway to notice InfluxDB is down")
    assert down["influx"]["state"] == "backoff"
    assert down["spool"]["rows"] > 0
    assert down["spool"]["oldest_unsent_age_s"] is not None
    influx.start()
    stream.finish()
    exactly_once(influx, db_name, n)
    wait_for(lambda: gw.status()["spool"]["rows"] == 0, what="spool drained")


def test_gateway_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name)
    gw = gateway_factory(cfg)
    wait_for(lambda: gw.status()["mqtt"]["connected"], what="MQTT connected")
    n = 4000
    stream = Stream(mosquitto.port, n, with_ts=False, rate=2000)
    stream.start()
    wait_for(lambda: stream.sent >= n // 2, what="half the stream")
    gw.kill()
    gw.start()
    stream.finish()
    exactly_once(influx_server, db_name, n)
    assert gw.status()["mqtt"]["session_present"] is True


def test_broker_restart_mid_stream_loses_nothing(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    gw = gateway_factory(base_config(tmp_path, mosquitto, influx_server, db_name))
    wait_for(lambda: gw.status()["mqtt"]["connected"], what="MQTT connected")
    n = 3000
    # The publisher may resend after the restart (QoS 1 is at least once): with the device
    # time in the payload a resend is the same point, as with real firmware.
    stream = Stream(mosquitto.port, n, with_ts=True)
    stream.start()
    wait_for(lambda: stream.sent >= n // 2, what="half the stream")
    mosquitto.restart()
    wait_for(lambda: gw.status()["mqtt"]["connects"] >= 2, what="gateway reconnected")
    stream.finish()
    exactly_once(influx_server, db_name, n)
    assert gw.status()["mqtt"]["disconnects"] >= 1


def test_newline_in_tag_value_is_rejected_and_injects_nothing(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess], publisher_factory: Callable[[int], Publisher],
) -> None:
    gw = gateway_factory(base_config(tmp_path, mosquitto, influx_server, db_name))
    wait_for(lambda: gw.status()["mqtt"]["connected"], what="MQTT connected")
    pub = publisher_factory(mosquitto.port)
    # The device id becomes the "device" tag: a newline would start a second point.
    pub.publish("vendor/weather/x",
                {"id": "ws-1\ninjected,site=x pwned=1i 0", "temp": 1.0})
    pub.publish("vendor/weather/x", {"id": "ws-1 ,= \"\\x é", "temp": 2.0})
    pub.publish(TOPIC, {"level_cm": 1.0, "seq": 0})
    exactly_once(influx_server, db_name, 1)
    status = wait_for(lambda: (s := gw.status())["counts"]["written"] >= 2 and s)
    assert status["counts"]["rejected"] == 1
    assert status["sources"]["weather"]["errors"] == {"bad_name": 1}
    measurements = influx_server.query("SHOW MEASUREMENTS", db=db_name)
    names = {v[0] for s in measurements for v in s["values"]}
    assert names == {"polder", "sensor", "device_status"}
    tags = influx_server.query('SHOW TAG VALUES FROM "sensor" WITH KEY = "device"', db=db_name)
    assert [v[1] for s in tags for v in s["values"]] == ["ws-1 ,= \"\\x é"]


def test_bad_input_is_counted_dead_lettered_and_survived(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess], publisher_factory: Callable[[int], Publisher],
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      ingest={"max_payload_bytes": 1000})
    gw = gateway_factory(cfg)
    wait_for(lambda: gw.status()["mqtt"]["connected"], what="MQTT connected")
    pub = publisher_factory(mosquitto.port)
    pub.publish(TOPIC, b"{not json")
    pub.publish(TOPIC, b'{"level_cm": NaN}')
    pub.publish(TOPIC, b'{"level_cm": [1, 2]}')
    pub.publish(TOPIC, b'{"level_cm": 1.0, "pad": "' + b"x" * 2000 + b'"}')
    pub.publish("telegraf/x", b"cpu,host=a usage=")
    pub.publish(TOPIC, {"level_cm": 5.5, "seq": 0})
    exactly_once(influx_server, db_name, 1)
    status = wait_for(lambda: (s := gw.status())["counts"]["rejected"] >= 5 and s)
    native = status["sources"]["native"]["errors"]
    assert native.get("oversized") == 1
    assert native.get("wrong_type") == 1
    assert sum(native.values()) == 4
    assert sum(status["sources"]["telegraf"]["errors"].values()) == 1
    assert status["spool"]["dead_letter_rows"] == 5
    assert status["counts"]["acknowledged"] == 6  # bad input is acknowledged too: it is kept
    # One log line per kind, not one per message.
    assert gw.log().count("kind=oversized") == 1


def test_unknown_device_refused_when_discovery_is_off(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess], publisher_factory: Callable[[int], Publisher],
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      ingest={"allow_discovery": False})
    gw = gateway_factory(cfg)
    wait_for(lambda: gw.status()["mqtt"]["connected"], what="MQTT connected")
    pub = publisher_factory(mosquitto.port)
    pub.publish(f"garden/{SITE}/stranger/telemetry", {"level_cm": 1.0, "seq": 1})
    pub.publish(TOPIC, {"level_cm": 2.0, "seq": 0})
    exactly_once(influx_server, db_name, 1)
    status = wait_for(lambda: (s := gw.status())["counts"]["rejected"] == 1 and s)
    assert status["sources"]["native"]["errors"] == {"unknown_device": 1}
    assert status["discovered_devices"] == []


def test_sigterm_flushes_and_exits_cleanly(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      influx={"flush_interval_s": 30})
    gw = gateway_factory(cfg)
    wait_for(lambda: gw.status()["mqtt"]["connected"], what="MQTT connected")
    stream = Stream(mosquitto.port, 500, with_ts=False, rate=5000)
    stream.start()
    stream.finish()
    wait_for(lambda: (c := gw.status()["counts"])["spooled"] - c["own_points"] == 500,
             what="500 spooled")
    # The forwarder waits 30 s to fill a batch; SIGTERM must not wait for that.
    started = time.monotonic()
    assert gw.terminate() == 0
    assert time.monotonic() - started < 10
    assert seq_counts(influx_server, db_name) == (500, 500)
    assert "gateway stopped: spool rows=0" in gw.log()


@pytest.mark.parametrize("protocol", ["3.1.1", "5"])
def test_both_protocols_keep_the_session_while_the_gateway_is_down(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess], publisher_factory: Callable[[int], Publisher],
    protocol: str,
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name, mqtt={"protocol": protocol})
    gw = gateway_factory(cfg)
    wait_for(lambda: gw.status()["mqtt"]["connected"], what="MQTT connected")
    assert gw.terminate() == 0
    pub = publisher_factory(mosquitto.port)
    for i in range(20):
        pub.publish(TOPIC, {"level_cm": float(i), "seq": i})
    gw.start()
    exactly_once(influx_server, db_name, 20)
    assert gw.status()["mqtt"]["session_present"] is True
