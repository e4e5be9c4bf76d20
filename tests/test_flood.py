"""A flood of 20,000 made-up device ids against the real gateway process (issue 12): memory
and log lines stay bounded, the configured device is unaffected, and a new legitimate device
is accepted once the flood stops. Real Mosquitto, real InfluxDB, ``python -m gateway run``.

The bounds are asserted with a margin (correctness); how fast the flood passes is measured by
bench/flood_bench.py."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from gateway.testing.stack import PrivateInfluxDB, PrivateMosquitto
from tests.conftest import OPERATOR, GatewayProcess, base_config, wait_for

SITE = "taman-uji"
FLOOD = 20_000
MB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def log_lines(gw: GatewayProcess) -> int:
    return len(gw.log().splitlines())


@contextmanager
def steady_device(port: int, device: str, every_s: float) -> Iterator[list[int]]:
    """``device`` publishes a reading every ``every_s`` on its own connection until the block
    ends; yields the list of values sent so far."""
    sent: list[int] = []
    stop = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"steady-{device}")
    client.connect("127.0.0.1", port)
    client.loop_start()

    def run() -> None:
        n = 0
        while not stop.wait(every_s):
            n += 1
            client.publish(f"garden/{SITE}/{device}/telemetry", f'{{"level_cm": {n}}}', qos=1)
            sent.append(n)

    thread = threading.Thread(target=run, name=f"steady {device}", daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(timeout=5)
        client.disconnect()
        client.loop_stop()


def flood(port: int, count: int) -> None:
    """``count`` made-up ids, one QoS 1 message each, as fast as the broker takes them."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="flooder")
    client.max_inflight_messages_set(200)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(f"garden/{SITE}/made-up-{i:05d}/telemetry",
                                f'{{"x": {i}}}', qos=1) for i in range(count)]
        for info in infos:
            info.wait_for_publish(timeout=60)
            assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def get(gw: GatewayProcess, path: str, **params: Any) -> httpx.Response:
    answer = httpx.get(f"{gw.api}{path}", params=params, headers=OPERATOR, timeout=10)
    answer.raise_for_status()
    return answer


def test_twenty_thousand_made_up_ids_pass_and_a_new_device_gets_in_after_them(
    tmp_path: Path, mosquitto: PrivateMosquitto, influx_server: PrivateInfluxDB, db_name: str,
    gateway_factory: Callable[..., GatewayProcess],
) -> None:
    cfg = base_config(tmp_path, mosquitto, influx_server, db_name,
                      devices=[{"id": "polder-1", "kind": "polder", "interval_s": 1}])
    gw = gateway_factory(cfg)
    assert gw.proc is not None
    pid = gw.proc.pid

    def received() -> int:
        return int(gw.status()["counts"]["received"])

    def discovered_ids() -> set[str]:
        return {d["id"] for d in get(gw, "/api/v1/devices", origin="discovered",
                                     limit=1000).json()}

    def polder() -> dict[str, Any]:
        return dict(get(gw, "/api/v1/devices", kind="polder").json()[0])

    with steady_device(mosquitto.port, "polder-1", 0.2) as sent:
        # Warm: the configured device online, the code paths of a discovery taken once.
        wait_for(lambda: polder()["state"] == "online", timeout=20, what="polder-1 online")
        flood(mosquitto.port, 300)
        wait_for(lambda: received() >= 300, timeout=20, what="the warm-up received")
        assert 60 <= len(discovered_ids()) < 100  # a minute's bucket, and a few refilled
        before_rss, before_lines, before_received = rss_bytes(pid), log_lines(gw), received()

        flood(mosquitto.port, FLOOD)
        wait_for(lambda: received() >= before_received + FLOOD, timeout=120,
                 what="the flood received")
        after_rss, after_lines = rss_bytes(pid), log_lines(gw)

        # Bounded: memory, log lines, the table; refusals counted.
        assert after_rss - before_rss < 10 * MB, (before_rss, after_rss)
        assert after_lines - before_lines < 100, gw.log().splitlines()[before_lines:][:200]
        discovered = get(gw, "/api/v1/devices", origin="discovered")
        assert int(discovered.headers["x-total-count"]) <= 300
        assert len(discovered.content) < 1 * MB
        metrics = get(gw, "/metrics").text
        refused = next(line for line in metrics.splitlines()
                       if line.startswith('garden_gateway_discovery_refused_total{reason="rate"}'))
        assert float(refused.split()[-1]) >= FLOOD - 300

        # The configured device was never touched: online, its latest value a recent one.
        flood_ended_at = len(sent)
        wait_for(lambda: (polder()["latest"] or {}).get("fields", {}).get("level_cm", 0)
                 > flood_ended_at, timeout=20, what="polder-1's readings after the flood")
        assert polder()["state"] == "online"

        # A legitimate device new to the gateway gets in once the flood stops.
        with steady_device(mosquitto.port, "kebun-baru", 0.5):
            wait_for(lambda: "kebun-baru" in discovered_ids(), timeout=30,
                     what="the new device accepted")
    assert gw.proc.poll() is None, gw.log()
