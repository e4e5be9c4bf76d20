"""Logs cannot fill the card (issue 13, part 4): every kind of bad input, thousands of each, and
the gateway's own log stays a few lines per kind, while every bad message is still counted.

The real gateway process, a private Mosquitto and InfluxDB, a serial sensor on a pseudo-terminal.
Each kind of problem is logged at most once per ``ingest.log_interval_s`` (60 s) with the count
of the ones not logged; the test takes well under a minute, so each kind may show once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import OPERATOR, GatewayProcess, base_config, wait_for
from tests.test_serial import fake_port

SITE = "taman-uji"
EACH = 1_000

# (subscription, topic, payload): each a different kind of bad input, on subscribed topics.
BAD: dict[str, tuple[str, str, bytes]] = {
    "native malformed JSON": ("native", f"garden/{SITE}/polder-1/telemetry", b'{"level_cm": '),
    "native not an object": ("native", f"garden/{SITE}/polder-1/telemetry", b"[1, 2, 3]"),
    "native not UTF-8": ("native", f"garden/{SITE}/polder-1/telemetry", b"\xff\xfe\x00\x81"),
    "oversized": ("native", f"garden/{SITE}/polder-1/telemetry",
                  b'{"level_cm": 1, "pad": "' + b"x" * 4096 + b'"}'),
    "collectd garbage": ("ap", "collectd/ap-1/interface-wlan0/if_octets",
                         b"not a collectd value"),
    "tasmota garbage": ("tasmota", "tele/tasmota-1/SENSOR", b"{]"),
    "esphome garbage": ("esphome", "esp-1/sensor/temperature/state", b"warm"),
    "telegraf garbage": ("telegraf", "telegraf/gw", b"cpu,host= value="),
    "json garbage": ("weather", "vendor/weather/ws-1", b'{"temp": [1, 2'),
}

# Noise, an overlong line, a line with no key=value: each dropped and counted.
SERIAL_BAD = [b"\x00\x01\x02\xff\xfe\r\n", b"t=" + b"9" * 2000 + b"\r\n", b"no pairs here\r\n"]


def publish_all(port: int, messages: list[tuple[str, bytes]]) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="flood-of-bad-input")
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout=60)
    finally:
        client.disconnect()
        client.loop_stop()


def test_floods_of_every_kind_of_bad_input_write_a_few_log_lines(
        tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB,
        db_name: str, gateway_factory: Callable[..., GatewayProcess]) -> None:
    with fake_port(tmp_path / "usb-kebun") as serial:
        cfg: dict[str, Any] = base_config(
            tmp_path, mosquitto, influx_server, db_name,
            ingest={"max_payload_bytes": 1024},
            subscriptions=[
                {"name": "native", "topic": "garden/+/+/telemetry", "format": "native"},
                {"name": "ap", "topic": "collectd/#", "format": "collectd"},
                {"name": "tasmota", "topic": "tele/+/SENSOR", "format": "tasmota"},
                {"name": "esphome", "topic": "+/sensor/+/state", "format": "esphome"},
                {"name": "telegraf", "topic": "telegraf/#", "format": "influx"},
                {"name": "weather", "topic": "vendor/weather/+", "format": "json",
                 "options": {"device_topic_level": -1, "fields": {"temp": "temperature_c"}}},
            ],
            serial=[{"name": "kebun", "port": str(serial.link), "baudrate": 9600,
                     "options": {"format": "kv", "device": "kebun-2",
                                 "measurement": "garden_env"}}],
            devices=[{"id": "polder-1", "kind": "polder"}, {"id": "kebun-2", "kind": "garden"}])
        gw = gateway_factory(cfg)
        wait_for(lambda: gw.status()["serial"]["kebun"]["open"], timeout=20,
                 what="the serial port open")
        before = len(gw.log().splitlines())
        started = time.monotonic()

        messages = [(topic, payload) for _, topic, payload in BAD.values()
                    for _ in range(EACH)]
        publish_all(mosquitto.port, messages)
        for _ in range(EACH):
            for chunk in SERIAL_BAD:
                serial.write(chunk)

        def all_counted() -> bool:
            s = gw.status()
            return bool(s["counts"]["received"] >= len(messages)
                        and s["mqtt"]["unacknowledged"] == 0
                        and s["serial"]["kebun"]["lines"] + sum(
                            s["serial"]["kebun"]["errors"].values())
                        >= len(SERIAL_BAD) * EACH)
        wait_for(all_counted, timeout=60, what="every bad message read")
        # Counted, not silent: each subscription's errors, the serial source's.
        status = gw.status()
        per_source: dict[str, int] = {}
        for source, _, _ in BAD.values():
            per_source[source] = per_source.get(source, 0) + EACH
        for source, n in per_source.items():
            assert sum(status["sources"][source]["errors"].values()) >= n, source
        assert sum(status["serial"]["kebun"]["errors"].values()) >= 2 * EACH

        # After the flood the gateway is well: a good reading of each is taken.
        publish_all(mosquitto.port, [(f"garden/{SITE}/polder-1/telemetry", b'{"level_cm": 42}')])
        serial.write(b"t=27.5\r\n")

        def fresh() -> bool:
            devices = httpx.get(f"{gw.api}/api/v1/devices", headers=OPERATOR, timeout=5).json()
            latest = {d["id"]: (d.get("latest") or {}).get("fields", {}) for d in devices}
            return bool(latest.get("polder-1", {}).get("level_cm") == 42
                        and "kebun-2" in latest and latest["kebun-2"])
        wait_for(fresh, timeout=30, what="good readings after the flood")
        took = time.monotonic() - started

        new_lines = gw.log().splitlines()[before:]
        kinds = len(BAD) + len(SERIAL_BAD)
        # One line per kind (the first of each), a few more for the sources' own summaries;
        # only if the test ran past a minute may a kind show twice.
        bound = 3 * kinds if took < 60 else 6 * kinds
        assert len(new_lines) < bound, (took, len(new_lines), "\n".join(new_lines[:80]))
        assert gw.proc is not None
        assert gw.proc.poll() is None
        assert os.path.getsize(gw.log_path) < 200_000
